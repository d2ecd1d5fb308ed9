//! PostgreSQL statements.

use sea_orm::{DbBackend, Statement, Value};

use super::{EventRow, column_list, parked_on_insert, values_tuples};
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
    let mut values =
        Vec::with_capacity(1 + lock_ids.len() + rows.len() * super::INSERT_COLUMNS.len());
    let sql = if lock_ids.is_empty() {
        format!(
            "INSERT INTO {table} ({columns}, \"parked\") \
             SELECT v.*, {parked} FROM (VALUES {values}) AS v ({columns})",
            table = table.quoted(),
            columns = column_list(),
            parked = parked_on_insert(table),
            values = values_tuples(rows.len(), &mut next),
        )
    } else {
        values.push(Value::Int(Some(LOCK_CLASS)));
        values.extend(lock_ids.iter().map(|&id| Value::Int(Some(id))));
        format!(
            "WITH key_locks AS MATERIALIZED ({locks}) \
             INSERT INTO {table} ({columns}, \"parked\") \
             SELECT v.*, {parked} FROM key_locks, (VALUES {values}) AS v ({columns})",
            locks = lock_query(lock_ids.len(), &mut next),
            table = table.quoted(),
            columns = column_list(),
            parked = parked_on_insert(table),
            values = values_tuples(rows.len(), &mut next),
        )
    };
    values.extend(rows.into_iter().flatten());
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Locks the keys `lock_ids` (sorted) until the transaction ends, for a batch that
/// takes several insert statements: all its keys are locked first, in one order, so
/// two large batches never wait for each other in a cycle.
pub(super) fn lock_keys(lock_ids: &[i32]) -> Statement {
    let mut n = 0;
    let sql = lock_query(lock_ids.len(), || {
        n += 1;
        format!("${n}")
    });
    let mut values = Vec::with_capacity(1 + lock_ids.len());
    values.push(Value::Int(Some(LOCK_CLASS)));
    values.extend(lock_ids.iter().map(|&id| Value::Int(Some(id))));
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `SELECT count(pg_advisory_xact_lock(class, k)) ...` over `keys` placeholders,
/// after the class's; the keys are locked in the order given.
fn lock_query(keys: usize, mut next: impl FnMut() -> String) -> String {
    let class = next();
    let keys: Vec<String> = (0..keys).map(|_| format!("({}::int4)", next())).collect();
    format!(
        "SELECT count(pg_advisory_xact_lock({class}::int4, k)) AS locked \
         FROM (VALUES {}) AS keys (k)",
        keys.join(", ")
    )
}

/// Locks the rows a SELECT returns until the transaction ends.
pub(super) const LOCK_ROWS: &str = " FOR UPDATE";

/// JSONB as its text form.
pub(super) fn json_text(column: &str) -> String {
    format!("{column}::text")
}
