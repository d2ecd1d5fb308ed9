//! PostgreSQL statements.

use sea_orm::{DbBackend, Statement, Value};

use super::{EventRow, column_list, values_tuples};
use crate::tables::Identifier;

/// The first key of the two-key advisory locks the outbox takes (ASCII `obox`), so
/// its locks stay apart from the application's one-key locks.
const LOCK_CLASS: i32 = 0x6f62_6f78;

/// Inserts the rows after locking their keys, in one statement.
///
/// Each key's lock is held until the storing transaction ends, so a second
/// transaction storing the same key waits and takes its `seq` after the first has
/// committed: for one key, `seq` order is commit order, and the relay never sees a
/// later event of a key before an earlier one has become visible. The ids come
/// sorted, so two batches lock shared keys in the same order. Being one statement, it
/// is atomic even on a connection outside a transaction.
pub(super) fn insert_events(
    table: &Identifier,
    lock_ids: &[i32],
    rows: Vec<EventRow>,
) -> Statement {
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let class = next();
    let keys: Vec<String> = lock_ids
        .iter()
        .map(|_| format!("({}::int4)", next()))
        .collect();
    let sql = format!(
        "WITH key_locks AS MATERIALIZED (\
            SELECT count(pg_advisory_xact_lock({class}::int4, k)) AS locked \
            FROM (VALUES {keys}) AS keys (k)) \
         INSERT INTO {table} ({columns}) \
         SELECT v.* FROM key_locks, (VALUES {values}) AS v",
        keys = keys.join(", "),
        table = table.quoted(),
        columns = column_list(),
        values = values_tuples(rows.len(), &mut next),
    );
    let mut values =
        Vec::with_capacity(1 + lock_ids.len() + rows.len() * super::INSERT_COLUMNS.len());
    values.push(Value::Int(Some(LOCK_CLASS)));
    values.extend(lock_ids.iter().map(|&id| Value::Int(Some(id))));
    values.extend(rows.into_iter().flatten());
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Locks the rows a SELECT returns until the transaction ends.
pub(super) const LOCK_ROWS: &str = " FOR UPDATE";

/// JSONB as its text form.
pub(super) fn json_text(column: &str) -> String {
    format!("{column}::text")
}
