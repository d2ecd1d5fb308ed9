//! Storing events: the insert that takes its keys' locks, and the rows it writes.
//!
//! Written by hand, because sea-query cannot say either part: on PostgreSQL, a
//! materialized CTE that takes transaction-scoped advisory locks before the rows are
//! inserted (so the locks come first within the one statement), and an
//! `INSERT .. SELECT` from a `VALUES` list with named columns, whose rows are stored
//! parked when their key waits for a retry (PostgreSQL, SQLite).
//!
//! MySQL has no transaction-scoped advisory lock (`GET_LOCK` belongs to the session,
//! which outlives the transaction on a pooled connection): the keys' locks are row
//! locks on a table of [`KEY_LOCKS`] rows that the migrations fill, taken by a
//! `FOR UPDATE` read inside the insert (InnoDB holds them until the transaction
//! ends). Rows are stored unparked there (a read of the outbox inside the caller's
//! insert would take shared locks that the relay's write-back must wait for); the
//! relay's claim parks them when it meets them behind a failed event.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Iden;
use sea_orm::{DbBackend, Statement, Value};

use super::Dialect;
use crate::entity::outbox::Column;
use crate::envelope::Envelope;
use crate::tables::{Identifier, KEY_LOCKS, Tables};

/// The first key of the two-key advisory locks the outbox takes (ASCII `obox`), so
/// its locks stay apart from the application's one-key locks.
const LOCK_CLASS: i32 = 0x6f62_6f78;

/// How many columns an insert writes. The others take their defaults (`seq` from the
/// sequence, `published = false`, `attempts = 0`); `parked` is computed.
const WRITTEN: usize = 14;

/// One event to insert: each column written, with its value.
pub(crate) struct EventRow([(Column, Value); WRITTEN]);

impl EventRow {
    pub(crate) fn new(envelope: Envelope, shard: i32, now: DateTime<Utc>) -> Self {
        let key = envelope.key().to_owned();
        let headers = (!envelope.headers.is_empty()).then(|| {
            let map = envelope
                .headers
                .into_iter()
                .map(|(name, value)| (name, value.into()))
                .collect();
            Box::new(serde_json::Value::Object(map))
        });
        EventRow([
            (Column::Id, Value::Uuid(Some(envelope.id))),
            (Column::EventType, Value::String(Some(envelope.event_type))),
            (
                Column::AggregateId,
                Value::String(Some(envelope.aggregate_id)),
            ),
            (
                Column::EventData,
                Value::Json(Some(Box::new(envelope.payload))),
            ),
            (
                Column::EventVersion,
                Value::String(Some(envelope.event_version)),
            ),
            (
                Column::DestinationTopic,
                Value::String(Some(envelope.topic)),
            ),
            (Column::PartitionKey, Value::String(Some(key))),
            (Column::Headers, Value::Json(headers)),
            (Column::Tombstone, Value::Bool(Some(envelope.tombstone))),
            (Column::Shard, Value::Int(Some(shard))),
            (Column::TraceId, Value::String(envelope.trace_id)),
            (Column::UserId, Value::String(envelope.user_id)),
            (Column::CreatedAt, Value::ChronoDateTimeUtc(Some(now))),
            (Column::UpdatedAt, Value::ChronoDateTimeUtc(Some(now))),
        ])
    }

    /// The written columns' names, quoted, in the order of the row's values.
    fn column_list(&self) -> String {
        self.names()
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The written columns' names, in the order of the row's values.
    fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(column, _)| column.to_string())
            .collect()
    }

    fn values(self) -> impl Iterator<Item = Value> {
        self.0.into_iter().map(|(_, value)| value)
    }
}

impl Dialect {
    /// How many events fit in one INSERT within the backend's bind parameter limit
    /// (PostgreSQL, MySQL: 65,535; SQLite: 32,766), and on MySQL within its packet
    /// limit (`max_allowed_packet`, 16 MiB by default on MariaDB: 1,024 events of
    /// 16 KiB).
    pub(crate) fn max_rows_per_insert(self) -> usize {
        match self {
            Dialect::Postgres => 4096,
            Dialect::Sqlite => 2048,
            Dialect::MySql => 1024,
        }
    }

    /// One statement that inserts `rows` into `table`; `None` when there are none.
    ///
    /// On PostgreSQL it first locks each of `lock_ids` (sorted) until the transaction
    /// ends, so a second transaction storing the same key waits and takes its `seq`
    /// after the first has committed: for one key, `seq` order is commit order, and
    /// the relay never sees a later event of a key before an earlier one has become
    /// visible. Sorted ids mean two batches lock shared keys in the same order. Being
    /// one statement, it is atomic even on a connection outside a transaction.
    ///
    /// SQLite runs one writing transaction at a time and assigns `seq` at insert, so
    /// `seq` order is commit order without any lock.
    ///
    /// On MySQL it locks the keys' rows of the key lock table (see the module's docs)
    /// in a subquery that computes the first row's first value, so the locks come
    /// first within the statement, and InnoDB gives `seq` when a row is inserted,
    /// after them.
    pub(crate) fn insert_events(
        self,
        tables: &Tables,
        lock_ids: &[i32],
        rows: Vec<EventRow>,
    ) -> Option<Statement> {
        let columns = rows.first()?.column_list();
        if self == Dialect::MySql {
            return Some(mysql_insert(tables, lock_ids, rows, &columns));
        }
        let parked = parked_on_insert(tables.outbox());
        let table = tables.outbox().quoted();
        let mut placeholders = Placeholders::default();
        let mut values = Vec::with_capacity(1 + lock_ids.len() + rows.len() * WRITTEN);
        let sql = match self {
            Dialect::Postgres if !lock_ids.is_empty() => {
                values.push(Value::Int(Some(LOCK_CLASS)));
                values.extend(lock_ids.iter().map(|&id| Value::Int(Some(id))));
                let locks = lock_query(lock_ids.len(), &mut placeholders);
                let tuples = placeholders.tuples(rows.len(), WRITTEN);
                format!(
                    "WITH \"key_locks\" AS MATERIALIZED ({locks}) \
                     INSERT INTO {table} ({columns}, \"parked\") \
                     SELECT v.*, {parked} FROM \"key_locks\", (VALUES {tuples}) AS v ({columns})"
                )
            }
            Dialect::Postgres => {
                let tuples = placeholders.tuples(rows.len(), WRITTEN);
                format!(
                    "INSERT INTO {table} ({columns}, \"parked\") \
                     SELECT v.*, {parked} FROM (VALUES {tuples}) AS v ({columns})"
                )
            }
            // SQLite names a VALUES list's columns only in a CTE. (MySQL returned above.)
            Dialect::Sqlite | Dialect::MySql => {
                let tuples = placeholders.tuples(rows.len(), WRITTEN);
                format!(
                    "WITH v ({columns}) AS (VALUES {tuples}) \
                     INSERT INTO {table} ({columns}, \"parked\") SELECT v.*, {parked} FROM v"
                )
            }
        };
        values.extend(rows.into_iter().flat_map(EventRow::values));
        Some(Statement::from_sql_and_values(self.backend(), sql, values))
    }

    /// Locks the keys `lock_ids` (sorted) until the transaction ends, for a batch that
    /// takes several insert statements: all its keys are locked first, in one order, so
    /// two large batches never wait for each other in a cycle. `None` on SQLite, whose
    /// single writer needs no lock.
    pub(crate) fn lock_keys(self, tables: &Tables, lock_ids: &[i32]) -> Option<Statement> {
        match self {
            Dialect::Postgres => {
                let sql = lock_query(lock_ids.len(), &mut Placeholders::default());
                let mut values = Vec::with_capacity(1 + lock_ids.len());
                values.push(Value::Int(Some(LOCK_CLASS)));
                values.extend(lock_ids.iter().map(|&id| Value::Int(Some(id))));
                Some(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    sql,
                    values,
                ))
            }
            Dialect::MySql => {
                let rows = key_lock_rows(lock_ids);
                let sql = format!(
                    "SELECT \"id\" FROM {} WHERE \"id\" IN ({}) FOR UPDATE",
                    tables.key_lock().quoted(),
                    Placeholders::default().list(rows.len())
                );
                Some(self.hand_written(sql, rows))
            }
            Dialect::Sqlite => None,
        }
    }
}

/// The MySQL insert (see [`Dialect::insert_events`]): a multi-row `VALUES` insert.
/// When there are keys to lock, the first row's first value is computed by a subquery
/// that locks them (`FOR UPDATE`), so the locks come first within the statement, and
/// InnoDB gives each row its `seq` as it inserts it, after its values are computed.
///
/// Not a derived table of the rows joined to the locks: MariaDB (10.11) fails one
/// whose values differ much in length (a 40 KB payload among small ones) with error
/// 127, "Table file is corrupted", for its temporary table.
fn mysql_insert(
    tables: &Tables,
    lock_ids: &[i32],
    rows: Vec<EventRow>,
    columns: &str,
) -> Statement {
    let mut placeholders = Placeholders::default();
    let mut values = key_lock_rows(lock_ids);
    let locks = (!values.is_empty()).then(|| {
        format!(
            "FROM (SELECT COUNT(*) AS \"locked\" FROM (SELECT \"id\" FROM {} WHERE \"id\" IN ({}) FOR UPDATE) AS \"l\") AS \"key_locks\"",
            tables.key_lock().quoted(),
            placeholders.list(values.len())
        )
    });
    let tuples: Vec<String> = (0..rows.len())
        .map(|row| {
            let fields: Vec<String> = (0..WRITTEN)
                .map(|column| {
                    let value = placeholders.next();
                    match &locks {
                        Some(locks) if row == 0 && column == 0 => {
                            format!("(SELECT {value} {locks})")
                        }
                        _ => value,
                    }
                })
                .collect();
            format!("({})", fields.join(", "))
        })
        .collect();
    values.extend(rows.into_iter().flat_map(EventRow::values));
    let sql = format!(
        "INSERT INTO {} ({columns}) VALUES {}",
        tables.outbox().quoted(),
        tuples.join(", ")
    );
    Dialect::MySql.hand_written(sql, values)
}

/// The rows of MySQL's key lock table that lock `lock_ids`, sorted and distinct.
fn key_lock_rows(lock_ids: &[i32]) -> Vec<Value> {
    let rows: std::collections::BTreeSet<i32> =
        lock_ids.iter().map(|id| id.rem_euclid(KEY_LOCKS)).collect();
    rows.into_iter().map(|row| Value::Int(Some(row))).collect()
}

/// Numbered placeholders, `$1` onwards (PostgreSQL and SQLite read them; MySQL gets them respelled).
#[derive(Default)]
struct Placeholders(usize);

impl Placeholders {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("${}", self.0)
    }

    /// `$n, $n+1, ...`: `n` placeholders.
    fn list(&mut self, n: usize) -> String {
        (0..n).map(|_| self.next()).collect::<Vec<_>>().join(", ")
    }

    /// `($n, $n+1, ...), (...)`: `rows` tuples of `width` placeholders.
    fn tuples(&mut self, rows: usize, width: usize) -> String {
        (0..rows)
            .map(|_| {
                let row: Vec<String> = (0..width).map(|_| self.next()).collect();
                format!("({})", row.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `SELECT count(pg_advisory_xact_lock(class, k)) ...` over `keys` placeholders,
/// after the class's; the keys are locked in the order given.
fn lock_query(keys: usize, placeholders: &mut Placeholders) -> String {
    let class = placeholders.next();
    let keys: Vec<String> = (0..keys)
        .map(|_| format!("({}::int4)", placeholders.next()))
        .collect();
    format!(
        "SELECT count(pg_advisory_xact_lock({class}::int4, k)) AS locked \
         FROM (VALUES {}) AS keys (k)",
        keys.join(", ")
    )
}

/// Whether a row `v` being inserted waits behind an earlier event of its key that
/// failed: then it is stored parked, out of the claim index, at no extra write. (A
/// probe of the small `retry` index, whose columns and predicate these are.) A row
/// whose key's failed event is published while the row's transaction is still open
/// stays parked after the relay unparked the key: the relay's claim unparks it when it
/// meets a later event of that key, or its periodic sweep does.
fn parked_on_insert(table: &Identifier) -> String {
    format!(
        "EXISTS (SELECT 1 FROM {} b WHERE b.\"shard\" = v.\"shard\" AND b.\"partition_key\" = v.\"partition_key\" \
           AND b.\"next_attempt_at\" IS NOT NULL AND NOT b.\"published\" AND b.\"dead_lettered_at\" IS NULL)",
        table.quoted()
    )
}
