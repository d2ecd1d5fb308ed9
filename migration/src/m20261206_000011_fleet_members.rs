//! Creates `_outbox_fleet`: the live members of each relay fleet (`outbox::fleet`), so
//! that the processes of a fleet share its databases instead of each connecting to
//! all. Only the fleet's coordinator database uses it; it is created everywhere so
//! that any database can be the coordinator.

use sea_orm_migration::prelude::*;

use crate::m20261127_000001_create_outbox_tables::{timestamp, varchar};

crate::migration!("m20261206_000011_fleet_members");

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(self.tables.fleet().as_str().to_owned())
                    .if_not_exists()
                    .col(varchar("service_name").not_null())
                    .col(varchar("member_id").not_null())
                    .col(timestamp("started_at", backend).not_null())
                    .col(timestamp("heartbeat_at", backend).not_null())
                    .primary_key(Index::create().col("service_name").col("member_id"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(self.tables.fleet().as_str().to_owned())
                    .to_owned(),
            )
            .await
    }
}
