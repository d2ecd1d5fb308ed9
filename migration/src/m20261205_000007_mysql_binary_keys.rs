//! On MySQL and MariaDB: the columns that hold keys and names compare as bytes, with
//! trailing spaces significant, as they do on PostgreSQL and SQLite and as the
//! relay's shards, key locks and Kafka keys do. Under the tables' default collation
//! InnoDB found `'ABC' = 'abc' = 'abc '` and `'Zoé' = 'zoe'`: a failure of one key
//! held back the other, and the relay's parking could follow the wrong key. The
//! collation is the server's binary one without padding: `utf8mb4_0900_bin` on MySQL
//! 8, `utf8mb4_nopad_bin` on MariaDB (`utf8mb4_bin` pads, so `'abc' = 'abc '` there);
//! `utf8mb4_bin` only on a server with neither. Nothing on the other backends.
//!
//! The columns: the outbox's and the archive's `aggregate_id` and `partition_key`
//! (which make the event key), and the relay tables' `service_name`, `owner` and
//! `relay_id`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

crate::migration!("m20261205_000007_mysql_binary_keys");

/// The server's binary collation of `utf8mb4` without padding (see the module's
/// docs).
async fn binary_collation(manager: &SchemaManager<'_>) -> Result<String, DbErr> {
    let row = manager
        .get_connection()
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
             WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin') \
             ORDER BY COLLATION_NAME LIMIT 1",
        ))
        .await?;
    match row {
        Some(row) => row.try_get_by_index(0),
        None => Ok("utf8mb4_bin".to_owned()),
    }
}

/// A column of 255 characters compared as bytes under `binary` (`up`), or under the
/// table's default collation again (`down`, `None`).
fn key_column(name: &'static str, null: bool, binary: Option<&str>) -> ColumnDef {
    let mut column = ColumnDef::new(name);
    match binary {
        Some(collation) => {
            column.custom(format!(
                "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {collation}"
            ));
        }
        None => {
            column.string_len(255);
        }
    }
    if null {
        column.null();
    } else {
        column.not_null();
    }
    column
}

impl Migration {
    /// Each table with the key columns it has: `(name, nullable)`.
    fn columns(&self) -> Vec<(String, Vec<(&'static str, bool)>)> {
        let t = &self.tables;
        let event = vec![("aggregate_id", false), ("partition_key", true)];
        vec![
            (t.outbox().as_str().to_owned(), event.clone()),
            (t.archive().as_str().to_owned(), event),
            (
                t.offset().as_str().to_owned(),
                vec![("service_name", false)],
            ),
            (
                t.lease().as_str().to_owned(),
                vec![("service_name", false), ("owner", false)],
            ),
            (
                t.relay().as_str().to_owned(),
                vec![("service_name", false), ("relay_id", false)],
            ),
        ]
    }

    async fn alter(&self, manager: &SchemaManager<'_>, binary: bool) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::MySql {
            return Ok(());
        }
        let collation = match binary {
            true => Some(binary_collation(manager).await?),
            false => None,
        };
        for (table, columns) in self.columns() {
            let mut alter = Table::alter();
            alter.table(table);
            for (name, null) in columns {
                alter.modify_column(key_column(name, null, collation.as_deref()));
            }
            manager.alter_table(alter).await?;
        }
        Ok(())
    }
}

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.alter(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.alter(manager, false).await
    }
}
