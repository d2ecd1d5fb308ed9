//! Creates `_outbox_key_lock` on MySQL: the rows that stores lock to keep each key's
//! events in commit order (see [`outbox::Tables::key_lock`]). Nothing on the other
//! backends, whose locks need no table (PostgreSQL's advisory locks, SQLite's single
//! writer).
//!
//! The table holds 65,536 rows (`KEY_LOCKS`, as [`outbox::KEY_LOCKS`] was when this
//! migration was written), `id` 0 onwards, all created here: a store locks existing
//! rows only, because InnoDB's lock on a missing row is a gap lock, which two
//! transactions may hold at once.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

crate::migration!("m20261128_000004_mysql_key_locks");

/// How many rows the table holds: the library's [`outbox::KEY_LOCKS`] when this
/// migration was written, kept here so that the migration stays as it was. A store
/// locks row `lock_id % outbox::KEY_LOCKS`: the library's constant changes only with a
/// new migration that resizes the table (and the test below then compares the
/// library's constant with that migration's).
const KEY_LOCKS: i32 = 65_536;

/// How many rows one INSERT writes while the table is filled.
const ROWS_PER_INSERT: i32 = 4096;

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::MySql {
            return Ok(());
        }
        let table = self.tables.key_lock().as_str().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(table.clone())
                    .col(ColumnDef::new("id").integer().not_null().primary_key())
                    .to_owned(),
            )
            .await?;
        for first in (0..KEY_LOCKS).step_by(ROWS_PER_INSERT as usize) {
            let mut insert = Query::insert()
                .into_table(table.clone())
                .columns(["id"])
                .to_owned();
            for id in first..Ord::min(first + ROWS_PER_INSERT, KEY_LOCKS) {
                insert.values_panic([id.into()]);
            }
            manager.exec_stmt(insert).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::MySql {
            return Ok(());
        }
        manager
            .drop_table(
                Table::drop()
                    .table(self.tables.key_lock().as_str().to_owned())
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    /// The library locks row `lock_id % outbox::KEY_LOCKS`: every such row must exist,
    /// so the library's constant may not outgrow the table this migration fills. A
    /// change of the constant needs a migration that resizes the table; move this test
    /// there.
    #[test]
    fn the_table_holds_the_librarys_key_locks() {
        assert_eq!(
            super::KEY_LOCKS,
            outbox::KEY_LOCKS,
            "outbox::KEY_LOCKS changed: add a migration that resizes the key lock table"
        );
    }
}
