//! Adds `probation` to `_outbox_relay`: a relay back from a broker it could not
//! deliver to holds one shard until a delivery succeeds, and the service's other
//! relays leave that one shard to it instead of half their share (see the relay's
//! `stall.rs`). `false` for every relay already there.

use sea_orm_migration::prelude::*;

crate::migration!("m20261205_000008_relay_probation");

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let probation = ColumnDef::new("probation")
            .boolean()
            .not_null()
            .default(false)
            .to_owned();
        manager
            .alter_table(
                Table::alter()
                    .table(self.tables.relay().as_str().to_owned())
                    .add_column(probation)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(self.tables.relay().as_str().to_owned())
                    .drop_column("probation")
                    .to_owned(),
            )
            .await
    }
}
