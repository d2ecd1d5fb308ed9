//! SQLite statements.

use sea_orm::{DbBackend, Statement};

use super::{EventRow, column_list, parked_on_insert, values_tuples};
use crate::tables::Identifier;

/// Inserts the rows. SQLite runs one writing transaction at a time and `seq` is
/// assigned at insert, so `seq` order is commit order without any lock.
pub(super) fn insert_events(table: &Identifier, rows: Vec<EventRow>) -> Statement {
    let sql = format!(
        "WITH v ({columns}) AS (VALUES {values}) \
         INSERT INTO {table} ({columns}, \"parked\") SELECT v.*, {parked} FROM v",
        table = table.quoted(),
        columns = column_list(),
        parked = parked_on_insert(table),
        values = values_tuples(rows.len(), || "?".to_owned()),
    );
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, rows.into_iter().flatten())
}

/// SQLite has no row locks: one transaction writes at a time, so a write transaction
/// already excludes every other writer.
pub(super) const LOCK_ROWS: &str = "";

/// JSON columns are stored as text.
pub(super) fn json_text(column: &str) -> String {
    column.to_owned()
}
