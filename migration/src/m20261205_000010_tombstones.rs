//! Adds `tombstone` to `_outbox` and its archive `_outbox_published`: an event the
//! relay publishes with a null value (see `OutboxEvent::is_tombstone`). `false` for
//! every event already there.
//!
//! Deploy relays of this version before writers store tombstones: an older relay
//! would publish a tombstone's `null` payload as a value.
//!
//! A table that has the column already is left as it is, so the migration also
//! completes an archive table created again (by the archive's migration) after it ran.

use sea_orm_migration::prelude::*;

crate::migration!("m20261205_000010_tombstones");

impl Migration {
    fn tables(&self) -> [String; 2] {
        [
            self.tables.outbox().as_str().to_owned(),
            self.tables.archive().as_str().to_owned(),
        ]
    }
}

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables() {
            if manager.has_column(&table, "tombstone").await? {
                continue;
            }
            let tombstone = ColumnDef::new("tombstone")
                .boolean()
                .not_null()
                .default(false)
                .to_owned();
            manager
                .alter_table(Table::alter().table(table).add_column(tombstone).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables() {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .drop_column("tombstone")
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
