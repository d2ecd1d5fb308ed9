//! The SQL the library runs. Statements are written once; what differs between the
//! backends (placeholders, key locks, row locks, JSON as text) comes from
//! [`Dialect`], whose backend-specific parts live in `postgres.rs` and `sqlite.rs`.
//! Table names are checked [`Identifier`]s; every value is a bound parameter.

mod postgres;
mod sqlite;

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, Statement, Value};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::tables::{Identifier, Tables};

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

/// Bound parameters of one statement, with placeholders in the dialect's syntax.
pub(crate) struct Params {
    dialect: Dialect,
    values: Vec<Value>,
}

impl Params {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Params {
            dialect,
            values: Vec::new(),
        }
    }

    /// Binds `value` and returns its placeholder.
    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        match self.dialect {
            Dialect::Postgres => format!("${}", self.values.len()),
            Dialect::Sqlite => format!("?{}", self.values.len()),
        }
    }

    /// Binds each value and returns the placeholders as a comma-separated list.
    pub(crate) fn bind_all<V: Into<Value>>(
        &mut self,
        values: impl IntoIterator<Item = V>,
    ) -> String {
        values
            .into_iter()
            .map(|v| self.bind(v))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The SQL of `statement`, and its parameters to bind more after them (to extend
    /// the statement).
    fn extend(dialect: Dialect, statement: Statement) -> (String, Self) {
        let values = statement.values.map(|values| values.0).unwrap_or_default();
        (statement.sql, Params { dialect, values })
    }

    pub(crate) fn into_statement(self, sql: String) -> Statement {
        Statement::from_sql_and_values(self.dialect.backend(), sql, self.values)
    }
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

    fn backend(self) -> DbBackend {
        match self {
            Dialect::Postgres => DbBackend::Postgres,
            Dialect::Sqlite => DbBackend::Sqlite,
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

    /// Locks the keys `lock_ids` until the transaction ends, where the backend has key
    /// locks (PostgreSQL); `None` on SQLite, whose single writer needs none.
    pub(crate) fn lock_keys(self, lock_ids: &[i32]) -> Option<Statement> {
        match self {
            Dialect::Postgres => Some(postgres::lock_keys(lock_ids)),
            Dialect::Sqlite => None,
        }
    }

    /// Reads the database's clock, where relays on several hosts may share it
    /// (PostgreSQL); `None` on SQLite, which lives in one process.
    pub(crate) fn database_now(self) -> Option<Statement> {
        match self {
            Dialect::Postgres => Some(Statement::from_string(
                DbBackend::Postgres,
                "SELECT clock_timestamp() AS \"now\"",
            )),
            Dialect::Sqlite => None,
        }
    }

    /// A JSON column read as text, so payloads reach the publisher as the bytes stored.
    fn json_text(self, column: &str) -> String {
        match self {
            Dialect::Postgres => postgres::json_text(column),
            Dialect::Sqlite => sqlite::json_text(column),
        }
    }

    /// The clause that locks the rows a SELECT reads until the transaction ends.
    fn lock_rows(self) -> &'static str {
        match self {
            Dialect::Postgres => postgres::LOCK_ROWS,
            Dialect::Sqlite => sqlite::LOCK_ROWS,
        }
    }

    /// The next events of `shard` that may be published now, oldest first: pending,
    /// not dead-lettered, not parked, not waiting for a retry. Each comes with three
    /// flags about its key: `waiting` (an event of it waits for a retry), `failing`
    /// (an event of it failed and is pending, due or not) and `after_parked` (an
    /// earlier event of it is parked). An event after a parked one must not go out: an
    /// event stored after its key's failure would otherwise overtake the parked ones
    /// once the failed event is due again. The relay parks such events while their
    /// key is failing, and unparks the key's events when it is not (they stayed parked
    /// by a race with the write-back that published the failed event).
    ///
    /// The keys waiting for a retry are found first, once, in a materialized CTE (a
    /// handful of rows, from the tiny `retry` index), so the anti-join runs against
    /// that list whatever the planner believes about the table: a correlated
    /// `NOT EXISTS` over the table itself can turn quadratic on stale statistics.
    ///
    /// The next `limit` ready events of the shard are found second, in their own
    /// materialized CTE that the claim index answers alone (it holds `seq` and
    /// `next_attempt_at`): asked for whole rows in `seq` order, the planner may walk
    /// the primary key instead and filter, reading past every parked or published
    /// event it meets. Events behind a waiting key are parked (out of the claim index),
    /// so the claim's cost does not grow with them.
    pub(crate) fn claim(
        self,
        table: &Identifier,
        shard: i32,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Statement {
        let mut p = Params::new(self);
        let t = table.quoted();
        let shard = p.bind(shard);
        let now = p.bind(now);
        let limit = p.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let sql = format!(
            "WITH \"waiting\" AS MATERIALIZED (\
                SELECT DISTINCT {waiting_key} AS \"key\" FROM {t} b \
                WHERE b.\"shard\" = {shard} AND b.\"next_attempt_at\" > {now} \
                  AND NOT b.\"published\" AND b.\"dead_lettered_at\" IS NULL), \
             \"failing\" AS MATERIALIZED (\
                SELECT DISTINCT {waiting_key} AS \"key\" FROM {t} b \
                WHERE b.\"shard\" = {shard} AND b.\"next_attempt_at\" IS NOT NULL \
                  AND NOT b.\"published\" AND b.\"dead_lettered_at\" IS NULL), \
             \"next\" AS MATERIALIZED (\
                SELECT c.\"seq\" FROM {t} c \
                WHERE c.\"shard\" = {shard} AND NOT c.\"published\" AND c.\"dead_lettered_at\" IS NULL AND NOT c.\"parked\" \
                  AND (c.\"next_attempt_at\" IS NULL OR c.\"next_attempt_at\" <= {now}) \
                ORDER BY c.\"seq\" LIMIT {limit}) \
             SELECT o.\"seq\", o.\"id\", o.\"event_type\", o.\"event_version\", o.\"aggregate_id\", \
                    o.\"destination_topic\", {key} AS \"key\", \
                    {payload} AS \"payload\", {headers} AS \"headers\", o.\"trace_id\", o.\"user_id\", \
                    o.\"created_at\", o.\"attempts\", o.\"next_attempt_at\" IS NOT NULL AS \"retried\", \
                    EXISTS (SELECT 1 FROM \"waiting\" w WHERE w.\"key\" = {key}) AS \"waiting\", \
                    EXISTS (SELECT 1 FROM \"failing\" f WHERE f.\"key\" = {key}) AS \"failing\", \
                    EXISTS (SELECT 1 FROM {t} p WHERE p.\"parked\" AND p.\"shard\" = o.\"shard\" \
                        AND {parked_key} = {key} AND p.\"seq\" < o.\"seq\") AS \"after_parked\" \
             FROM \"next\" n JOIN {t} o ON o.\"seq\" = n.\"seq\" \
             ORDER BY o.\"seq\"",
            key = event_key("o"),
            parked_key = event_key("p"),
            waiting_key = event_key("b"),
            payload = self.json_text("o.\"event_data\""),
            headers = self.json_text("o.\"headers\""),
        );
        p.into_statement(sql)
    }

    /// Of `shards`, those with an event the claim would take now: one statement on
    /// the claim index for every shard, so an idle relay polls with one query instead
    /// of a claim per shard.
    pub(crate) fn shards_with_work(
        self,
        table: &Identifier,
        shards: &[i32],
        now: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let t = table.quoted();
        let now = p.bind(now);
        let shard_list = shards
            .iter()
            .map(|shard| format!("({shard})"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH \"shards\" (\"shard\") AS (VALUES {shard_list}) \
             SELECT s.\"shard\" FROM \"shards\" s WHERE EXISTS (\
                SELECT 1 FROM {t} c \
                WHERE c.\"shard\" = s.\"shard\" AND NOT c.\"published\" AND c.\"dead_lettered_at\" IS NULL AND NOT c.\"parked\" \
                  AND (c.\"next_attempt_at\" IS NULL OR c.\"next_attempt_at\" <= {now}))"
        );
        p.into_statement(sql)
    }

    /// Locks the lease row if `owner` still holds `shard` with `token`; returns a row
    /// only then. Run first in the write-back transaction: a relay that lost its lease
    /// writes nothing, and on PostgreSQL the row lock keeps a new owner from taking
    /// the lease until the write-back is done.
    pub(crate) fn fence(self, tables: &Tables, lease: &LeaseKey<'_>, token: i64) -> Statement {
        let mut p = Params::new(self);
        let sql = self.held_lease(&mut p, tables, lease, token, "\"token\"");
        p.into_statement(sql)
    }

    /// `SELECT {columns}` of the lease row if `owner` still holds `shard` with
    /// `token`, locking it: the fence, alone or inside a write-back statement.
    fn held_lease(
        self,
        p: &mut Params,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        token: i64,
        columns: &str,
    ) -> String {
        format!(
            "SELECT {columns} FROM {} WHERE \"service_name\" = {} AND \"shard\" = {} AND \"owner\" = {} AND \"token\" = {}{}",
            tables.lease().quoted(),
            p.bind(lease.service),
            p.bind(lease.shard),
            p.bind(lease.owner),
            p.bind(token),
            self.lock_rows(),
        )
    }

    /// Marks the pending events whose `key_column` (`seq` or `id`) is in `keys` as
    /// published. The statement ends with its WHERE clause:
    /// [`mark_published_fenced`](Self::mark_published_fenced) appends the fence to it.
    pub(crate) fn mark_published<V: Into<Value> + Copy>(
        self,
        table: &Identifier,
        key_column: &'static str,
        keys: &[V],
        now: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let now = p.bind(now);
        let sql = format!(
            "UPDATE {} SET \"published\" = TRUE, \"published_at\" = {now}, \"updated_at\" = {now}, \"parked\" = FALSE \
             WHERE \"{key_column}\" IN ({}) AND NOT \"published\"",
            table.quoted(),
            p.bind_all(keys.iter().copied()),
        );
        p.into_statement(sql)
    }

    /// Marks the pending events of `seqs` as published if `lease` is still held with
    /// `token`: the fence and the write-back in one statement, for a batch with
    /// nothing else to write. The lease row stays locked until the statement ends, as
    /// behind [`fence`](Self::fence) in a transaction.
    pub(crate) fn mark_published_fenced(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        token: i64,
        seqs: &[i64],
        now: DateTime<Utc>,
    ) -> Statement {
        let (mark, mut p) =
            Params::extend(self, self.mark_published(tables.outbox(), "seq", seqs, now));
        let fence = self.held_lease(&mut p, tables, lease, token, "1");
        p.into_statement(format!("{mark} AND EXISTS ({fence})"))
    }

    /// Records a failed attempt of one event, identified by `id`.
    pub(crate) fn record_failure(
        self,
        table: &Identifier,
        id: Uuid,
        failure: &FailureUpdate<'_>,
    ) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "UPDATE {} SET \"attempts\" = {}, \"last_attempt_at\" = {now}, \"updated_at\" = {now}, \
                \"error_message\" = {}, \"next_attempt_at\" = {}, \"dead_lettered_at\" = {}, \"parked\" = FALSE \
             WHERE \"id\" = {} AND NOT \"published\"",
            table.quoted(),
            p.bind(failure.attempts),
            p.bind(failure.error),
            p.bind(failure.next_attempt_at),
            p.bind(failure.dead_lettered_at),
            p.bind(id),
            now = p.bind(failure.now),
        );
        p.into_statement(sql)
    }

    /// Reads one event's attempts and state, locking the row.
    pub(crate) fn failure_state(self, table: &Identifier, id: Uuid) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "SELECT \"attempts\", \"published\", \"dead_lettered_at\" IS NOT NULL AS \"dead\" FROM {} WHERE \"id\" = {}{}",
            table.quoted(),
            p.bind(id),
            self.lock_rows(),
        );
        p.into_statement(sql)
    }

    /// Parks the pending events of `key` in `shard` stored after `seq` (the event that
    /// failed): a range scan of the claim index over the shard's unparked events.
    pub(crate) fn park_behind(
        self,
        table: &Identifier,
        shard: i32,
        key: &str,
        seq: i64,
    ) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "UPDATE {} SET \"parked\" = TRUE WHERE \"shard\" = {} AND {PENDING} AND NOT \"parked\" \
               AND {} = {} AND \"seq\" > {}",
            table.quoted(),
            p.bind(shard),
            event_key(table.quoted().as_str()),
            p.bind(key),
            p.bind(seq),
        );
        p.into_statement(sql)
    }

    /// Unparks the events of `keys` in `shard` (their failed event was published or
    /// dead-lettered), through the `parked` index.
    pub(crate) fn unpark(self, table: &Identifier, shard: i32, keys: &[&str]) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "UPDATE {} SET \"parked\" = FALSE WHERE \"parked\" AND \"shard\" = {} AND {} IN ({})",
            table.quoted(),
            p.bind(shard),
            event_key(table.quoted().as_str()),
            p.bind_all(keys.iter().map(|key| (*key).to_owned())),
        );
        p.into_statement(sql)
    }

    /// The shards and keys of parked events whose key has no failed pending event any
    /// more (its failed event was published, dead-lettered or replayed by other means
    /// than the relay's write-back). The distinct keys are found first, then each is
    /// checked once, on the small `retry` index.
    pub(crate) fn orphaned_parked_keys(self, table: &Identifier) -> Statement {
        let t = table.quoted();
        let sql = format!(
            "SELECT p.\"shard\", p.\"key\" FROM (\
                SELECT DISTINCT \"shard\", {row_key} AS \"key\" FROM {t} WHERE \"parked\") AS p \
             WHERE NOT EXISTS (SELECT 1 FROM {t} b WHERE b.\"shard\" = p.\"shard\" \
                AND b.\"next_attempt_at\" IS NOT NULL AND NOT b.\"published\" AND b.\"dead_lettered_at\" IS NULL \
                AND {b_key} = p.\"key\")",
            row_key = event_key(&t),
            b_key = event_key("b"),
        );
        Params::new(self).into_statement(sql)
    }

    /// Records what a service published last (the Go library's offset table).
    pub(crate) fn upsert_offset(
        self,
        table: &Identifier,
        service: &str,
        event: Uuid,
        now: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "INSERT INTO {} (\"service_name\", \"last_event_id\", \"last_processed\", \"created_at\", \"updated_at\") \
             VALUES ({s}, {e}, {now}, {now}, {now}) \
             ON CONFLICT (\"service_name\") DO UPDATE SET \"last_event_id\" = excluded.\"last_event_id\", \
                \"last_processed\" = excluded.\"last_processed\", \"updated_at\" = excluded.\"updated_at\"",
            table.quoted(),
            s = p.bind(service),
            e = p.bind(event),
            now = p.bind(now),
        );
        p.into_statement(sql)
    }

    /// Takes or renews a shard's lease for `owner`: succeeds (returns the token) when
    /// the shard is free, expired, or already `owner`'s. The token grows whenever the
    /// lease changes hands.
    pub(crate) fn acquire_lease(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let t = tables.lease().quoted();
        let sql = format!(
            "INSERT INTO {t} AS l (\"service_name\", \"shard\", \"owner\", \"token\", \"expires_at\", \"updated_at\") \
             VALUES ({s}, {shard}, {owner}, 1, {expires}, {now}) \
             ON CONFLICT (\"service_name\", \"shard\") DO UPDATE SET \
                \"token\" = CASE WHEN l.\"owner\" = excluded.\"owner\" THEN l.\"token\" ELSE l.\"token\" + 1 END, \
                \"owner\" = excluded.\"owner\", \"expires_at\" = excluded.\"expires_at\", \"updated_at\" = excluded.\"updated_at\" \
             WHERE l.\"owner\" = excluded.\"owner\" OR l.\"expires_at\" <= {now} \
             RETURNING \"token\"",
            s = p.bind(lease.service),
            shard = p.bind(lease.shard),
            owner = p.bind(lease.owner),
            expires = p.bind(expires_at),
            now = p.bind(now),
        );
        p.into_statement(sql)
    }

    /// Extends the leases `owner` still holds among `shards`, in one statement; returns
    /// the shards (with their tokens) that were still `owner`'s. A lease that expired
    /// but that nobody took is still `owner`'s: nobody else published its shard.
    pub(crate) fn renew_leases(
        self,
        tables: &Tables,
        service: &str,
        owner: &str,
        shards: &[i32],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "UPDATE {} SET \"expires_at\" = {}, \"updated_at\" = {} \
             WHERE \"service_name\" = {} AND \"owner\" = {} AND \"shard\" IN ({}) \
             RETURNING \"shard\", \"token\"",
            tables.lease().quoted(),
            p.bind(expires_at),
            p.bind(now),
            p.bind(service),
            p.bind(owner),
            p.bind_all(shards.iter().copied()),
        );
        p.into_statement(sql)
    }

    /// Gives up a lease at once, so another relay can take it without waiting.
    pub(crate) fn release_lease(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        now: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "UPDATE {} SET \"expires_at\" = {now}, \"updated_at\" = {now} \
             WHERE \"service_name\" = {} AND \"shard\" = {} AND \"owner\" = {}",
            tables.lease().quoted(),
            p.bind(lease.service),
            p.bind(lease.shard),
            p.bind(lease.owner),
            now = p.bind(now),
        );
        p.into_statement(sql)
    }

    /// The unexpired leases of a service: shard and owner.
    pub(crate) fn live_leases(
        self,
        tables: &Tables,
        service: &str,
        now: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "SELECT \"shard\", \"owner\" FROM {} WHERE \"service_name\" = {} AND \"expires_at\" > {} ORDER BY \"shard\"",
            tables.lease().quoted(),
            p.bind(service),
            p.bind(now),
        );
        p.into_statement(sql)
    }

    /// Records that a relay is alive.
    pub(crate) fn heartbeat(
        self,
        tables: &Tables,
        service: &str,
        relay: &str,
        now: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "INSERT INTO {} (\"service_name\", \"relay_id\", \"started_at\", \"heartbeat_at\") VALUES ({}, {}, {now}, {now}) \
             ON CONFLICT (\"service_name\", \"relay_id\") DO UPDATE SET \"heartbeat_at\" = excluded.\"heartbeat_at\"",
            tables.relay().quoted(),
            p.bind(service),
            p.bind(relay),
            now = p.bind(now),
        );
        p.into_statement(sql)
    }

    /// Per service, how many of its relays showed life since `since` and the
    /// earliest start among them.
    pub(crate) fn live_services(self, tables: &Tables, since: DateTime<Utc>) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "SELECT \"service_name\", MIN(\"started_at\") AS \"since\", COUNT(*) AS \"relays\" FROM {} \
             WHERE \"heartbeat_at\" > {} GROUP BY \"service_name\"",
            tables.relay().quoted(),
            p.bind(since),
        );
        p.into_statement(sql)
    }

    /// Removes the membership of relays silent since `stale_before`, and of `relay`
    /// (one shutting down).
    pub(crate) fn leave(
        self,
        tables: &Tables,
        service: &str,
        relay: Option<&str>,
        stale_before: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let this_one = match relay {
            Some(relay) => format!(" OR \"relay_id\" = {}", p.bind(relay)),
            None => String::new(),
        };
        let sql = format!(
            "DELETE FROM {} WHERE \"service_name\" = {} AND (\"heartbeat_at\" < {}{this_one})",
            tables.relay().quoted(),
            p.bind(service),
            p.bind(stale_before),
        );
        p.into_statement(sql)
    }

    /// Unpublished events in `state`, oldest first.
    pub(crate) fn events(self, table: &Identifier, state: Unpublished, limit: u64) -> Statement {
        let mut p = Params::new(self);
        let state = match state {
            Unpublished::Pending => "\"dead_lettered_at\" IS NULL",
            Unpublished::DeadLettered => "\"dead_lettered_at\" IS NOT NULL",
        };
        let sql = format!(
            "SELECT * FROM {} WHERE NOT \"published\" AND {state} ORDER BY \"seq\" LIMIT {}",
            table.quoted(),
            p.bind(i64::try_from(limit).unwrap_or(i64::MAX)),
        );
        p.into_statement(sql)
    }

    /// Puts dead-lettered events back in line: one by id, or all with `None`.
    pub(crate) fn replay(
        self,
        table: &Identifier,
        id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let now = p.bind(now);
        let only = match id {
            Some(id) => format!(" AND \"id\" = {}", p.bind(id)),
            None => String::new(),
        };
        let sql = format!(
            "UPDATE {} SET \"dead_lettered_at\" = NULL, \"attempts\" = 0, \"next_attempt_at\" = NULL, \"updated_at\" = {now} \
             WHERE \"dead_lettered_at\" IS NOT NULL AND NOT \"published\"{only}",
            table.quoted(),
        );
        p.into_statement(sql)
    }

    /// Puts the `limit` oldest dead letters back in line.
    pub(crate) fn replay_oldest(
        self,
        table: &Identifier,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let t = table.quoted();
        let sql = format!(
            "UPDATE {t} SET \"dead_lettered_at\" = NULL, \"attempts\" = 0, \"next_attempt_at\" = NULL, \"updated_at\" = {} \
             WHERE \"seq\" IN (SELECT \"seq\" FROM {t} \
                WHERE \"dead_lettered_at\" IS NOT NULL AND NOT \"published\" ORDER BY \"seq\" LIMIT {})",
            p.bind(now),
            p.bind(i64::try_from(limit).unwrap_or(i64::MAX)),
        );
        p.into_statement(sql)
    }

    /// Deletes up to `limit` events published before `cutoff`.
    pub(crate) fn cleanup(
        self,
        table: &Identifier,
        cutoff: DateTime<Utc>,
        limit: u64,
    ) -> Statement {
        let mut p = Params::new(self);
        let t = table.quoted();
        let sql = format!(
            "DELETE FROM {t} WHERE \"seq\" IN (SELECT \"seq\" FROM {t} \
                WHERE \"published\" AND \"published_at\" < {} ORDER BY \"published_at\" LIMIT {})",
            p.bind(cutoff),
            p.bind(i64::try_from(limit).unwrap_or(i64::MAX)),
        );
        p.into_statement(sql)
    }

    /// Counts of pending and dead-lettered events, and the oldest pending event's time,
    /// read from the partial indexes only (claim, parked, dead), never from published
    /// history. The oldest pending event is the first of some shard's claim index (a
    /// parked event always has an older, unparked one of its key before it).
    pub(crate) fn backlog(self, table: &Identifier, shards: u16) -> Statement {
        let t = table.quoted();
        let shard_list = (0..shards)
            .map(|shard| format!("({shard})"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH \"shards\" (\"shard\") AS (VALUES {shard_list}) \
             SELECT \
                (SELECT COUNT(*) FROM {t} WHERE {PENDING} AND NOT \"parked\") \
                  + (SELECT COUNT(*) FROM {t} WHERE \"parked\" AND {PENDING}) AS \"pending\", \
                (SELECT MIN((SELECT o.\"created_at\" FROM {t} o WHERE o.\"shard\" = s.\"shard\" \
                    AND NOT o.\"published\" AND o.\"dead_lettered_at\" IS NULL AND NOT o.\"parked\" \
                    ORDER BY o.\"seq\" LIMIT 1)) FROM \"shards\" s) AS \"oldest\", \
                (SELECT COUNT(*) FROM {t} WHERE \"dead_lettered_at\" IS NOT NULL AND NOT \"published\") AS \"dead\""
        );
        Params::new(self).into_statement(sql)
    }
}

impl Dialect {
    /// Per topic: pending and dead-lettered events, and the oldest pending one, read
    /// through the partial indexes of pending, parked and dead-lettered events.
    pub(crate) fn topic_backlog(self, table: &Identifier) -> Statement {
        let t = table.quoted();
        let sql = format!(
            "SELECT \"topic\", SUM(\"pending\") AS \"pending\", SUM(\"dead\") AS \"dead\", MIN(\"oldest\") AS \"oldest\" \
             FROM (\
                SELECT \"destination_topic\" AS \"topic\", 1 AS \"pending\", 0 AS \"dead\", \"created_at\" AS \"oldest\" \
                  FROM {t} WHERE {PENDING} AND NOT \"parked\" \
                UNION ALL SELECT \"destination_topic\", 1, 0, \"created_at\" FROM {t} WHERE \"parked\" AND {PENDING} \
                UNION ALL SELECT \"destination_topic\", 0, 1, NULL FROM {t} \
                  WHERE \"dead_lettered_at\" IS NOT NULL AND NOT \"published\"\
             ) AS \"backlog\" GROUP BY \"topic\" ORDER BY \"topic\""
        );
        Params::new(self).into_statement(sql)
    }

    /// The relays of every service with their unexpired leases.
    pub(crate) fn relays(self, tables: &Tables, now: DateTime<Utc>) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "SELECT r.\"service_name\", r.\"relay_id\", r.\"started_at\", r.\"heartbeat_at\", \
                (SELECT COUNT(*) FROM {lease} l WHERE l.\"service_name\" = r.\"service_name\" \
                    AND l.\"owner\" = r.\"relay_id\" AND l.\"expires_at\" > {now}) AS \"shards\" \
             FROM {relay} r ORDER BY r.\"service_name\", r.\"relay_id\"",
            lease = tables.lease().quoted(),
            relay = tables.relay().quoted(),
            now = p.bind(now),
        );
        p.into_statement(sql)
    }

    /// One event by id.
    pub(crate) fn event(self, table: &Identifier, id: Uuid) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "SELECT * FROM {} WHERE \"id\" = {}",
            table.quoted(),
            p.bind(id)
        );
        p.into_statement(sql)
    }

    /// How many pending events are in shard `first` or above (a range scan of the claim
    /// index).
    pub(crate) fn count_pending_from_shard(self, table: &Identifier, first: i32) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "SELECT COUNT(*) AS \"n\" FROM {} WHERE \"shard\" >= {} AND {PENDING} AND NOT \"parked\"",
            table.quoted(),
            p.bind(first)
        );
        p.into_statement(sql)
    }

    /// How many events were published before `cutoff`.
    pub(crate) fn count_published_before(
        self,
        table: &Identifier,
        cutoff: DateTime<Utc>,
    ) -> Statement {
        let mut p = Params::new(self);
        let sql = format!(
            "SELECT COUNT(*) AS \"n\" FROM {} WHERE \"published\" AND \"published_at\" < {}",
            table.quoted(),
            p.bind(cutoff)
        );
        p.into_statement(sql)
    }
}

/// Identifies a shard lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseKey<'a> {
    pub(crate) service: &'a str,
    pub(crate) shard: i32,
    pub(crate) owner: &'a str,
}

/// Which unpublished events a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unpublished {
    /// Waiting to be published (parked and waiting for a retry included).
    Pending,
    /// Dead-lettered and not replayed.
    DeadLettered,
}

/// The new state of an event after a failed attempt.
#[derive(Debug)]
pub(crate) struct FailureUpdate<'a> {
    pub(crate) attempts: i32,
    pub(crate) error: &'a str,
    pub(crate) now: DateTime<Utc>,
    pub(crate) next_attempt_at: Option<DateTime<Utc>>,
    pub(crate) dead_lettered_at: Option<DateTime<Utc>>,
}

/// The key that orders an event (and becomes its Kafka key), for the row aliased
/// `alias`: its partition key, or its aggregate id when that is NULL. Every statement
/// that compares keys uses this one expression.
fn event_key(alias: &str) -> String {
    format!("COALESCE({alias}.\"partition_key\", {alias}.\"aggregate_id\")")
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

/// The predicate of pending events, as the claim index states it.
const PENDING: &str = "NOT \"published\" AND \"dead_lettered_at\" IS NULL";

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
