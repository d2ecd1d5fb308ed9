//! The SQL the library runs, one module per backend.

mod postgres;
mod sqlite;

use sea_orm::{DbBackend, Statement, Value};

use crate::error::{Error, Result};
use crate::tables::Identifier;

/// The columns an insert writes, in the order of [`EventRow`]'s values. The others
/// take their defaults (`seq` from the sequence, `published = false`, `attempts = 0`).
pub(crate) const INSERT_COLUMNS: [&str; 13] = [
    "id",
    "event_type",
    "aggregate_id",
    "event_data",
    "event_version",
    "destination_topic",
    "partition_key",
    "headers",
    "shard",
    "trace_id",
    "user_id",
    "created_at",
    "updated_at",
];

/// The values of one event to insert, in [`INSERT_COLUMNS`] order.
pub(crate) type EventRow = [Value; INSERT_COLUMNS.len()];

/// The SQL dialects the outbox speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub(crate) fn of(backend: DbBackend) -> Result<Self> {
        match backend {
            DbBackend::Postgres => Ok(Dialect::Postgres),
            DbBackend::Sqlite => Ok(Dialect::Sqlite),
            other => Err(Error::UnsupportedBackend {
                backend: format!("{other:?}"),
            }),
        }
    }

    /// How many events fit in one INSERT within the backend's bind parameter limit
    /// (PostgreSQL: 65,535; SQLite: 32,766).
    pub(crate) fn max_rows_per_insert(self) -> usize {
        match self {
            Dialect::Postgres => 4096,
            Dialect::Sqlite => 2048,
        }
    }

    /// One statement that inserts `rows` into `table`. On PostgreSQL it first takes a
    /// transaction-scoped advisory lock on each of `lock_ids` (see `postgres.rs`).
    pub(crate) fn insert_events(
        self,
        table: &Identifier,
        lock_ids: &[i32],
        rows: Vec<EventRow>,
    ) -> Statement {
        match self {
            Dialect::Postgres => postgres::insert_events(table, lock_ids, rows),
            Dialect::Sqlite => sqlite::insert_events(table, rows),
        }
    }
}

/// `"a", "b", ...` for the insert's column list.
fn column_list() -> String {
    INSERT_COLUMNS.map(|c| format!("\"{c}\"")).join(", ")
}

/// `(p1, p2, ...), (...)`: one tuple of placeholders per row, numbered by `placeholder`.
fn values_tuples(rows: usize, mut placeholder: impl FnMut() -> String) -> String {
    (0..rows)
        .map(|_| {
            let row: Vec<String> = (0..INSERT_COLUMNS.len()).map(|_| placeholder()).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
