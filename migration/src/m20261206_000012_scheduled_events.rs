//! Creates `_outbox_scheduled`: events stored with a due time
//! (`Store::deliver_at`, `Store::delay`), which wait here, out of the claim's way,
//! until a relay moves them into `_outbox` when they are due. Nothing changes for
//! events stored without one.
//!
//! The event waits as the JSON of its envelope (`envelope`); `event_key`,
//! `event_type` and `destination_topic` are copies for listing it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261127_000001_create_outbox_tables::{index_name, timestamp, varchar};

crate::migration!("m20261206_000012_scheduled_events");

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let table = self.tables.scheduled();
        let stored_at_now = match backend {
            DbBackend::MySql => Expr::cust("(UTC_TIMESTAMP(6))"),
            _ => Expr::current_timestamp(),
        };
        manager
            .create_table(
                Table::create()
                    .table(table.as_str().to_owned())
                    .if_not_exists()
                    .col(
                        ColumnDef::new("seq")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("id").uuid().not_null().unique_key())
                    .col(timestamp("deliver_at", backend).not_null())
                    .col(
                        timestamp("stored_at", backend)
                            .not_null()
                            .default(stored_at_now),
                    )
                    .col(varchar("event_key").not_null())
                    .col(varchar("event_type").not_null())
                    .col(varchar("destination_topic").not_null())
                    .col(ColumnDef::new("envelope").text().not_null())
                    .to_owned(),
            )
            .await?;
        // The relays read the next due time and the due events by it.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name(index_name(table, "due"))
                    .table(table.as_str().to_owned())
                    .col("deliver_at")
                    .col("seq")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(self.tables.scheduled().as_str().to_owned())
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
