//! The claim and the idle poll: the two hand-written statements the relay's loop runs.

use chrono::{DateTime, Utc};
use sea_orm::{Statement, Value};

use super::{Dialect, HandWritten};
use crate::tables::Identifier;

/// See [`Dialect::claim`].
const CLAIM: HandWritten = HandWritten(include_str!("claim.sql"));

/// The claim on MySQL and MariaDB, whose indexes are not partial.
const CLAIM_MYSQL: HandWritten = HandWritten(include_str!("claim_mysql.sql"));

/// See [`Dialect::shards_with_work`].
const READY_SHARDS: HandWritten = HandWritten(include_str!("ready_shards.sql"));

impl Dialect {
    /// The next events of `shard` that may be published now, oldest first: pending,
    /// not dead-lettered, not parked, not waiting for a retry. Each comes with three
    /// flags about the events of its key stored before it (only those may hold it
    /// back): `waiting` (one waits for a retry), `failing` (one failed and is pending,
    /// due or not) and `after_parked` (one is parked). A later event's failure never
    /// holds back an earlier one: a replayed dead letter goes out ahead of the events
    /// of its key that failed while it was dead-lettered. An event after a parked one must not go out: an
    /// event stored after its key's failure would otherwise overtake the parked ones
    /// once the failed event is due again. The relay parks such events while their
    /// key is failing, and unparks the key's events when it is not (they stayed parked
    /// by a race with the write-back that published the failed event).
    ///
    /// The keys waiting for a retry are found first, once, with their first such
    /// event, in a materialized CTE (a handful of rows, from the tiny `retry` index), so the anti-join runs against
    /// that list whatever the planner believes about the table: a correlated
    /// `NOT EXISTS` over the table itself can turn quadratic on stale statistics.
    ///
    /// The next `limit` ready events of the shard are found second, in their own
    /// materialized CTE that the claim index answers alone (it holds `seq` and
    /// `next_attempt_at`). Events behind a waiting key are parked (out of the claim
    /// index), so the claim's cost does not grow with them. The CTE asks for
    /// `shard BETWEEN $1 AND $1` in `(shard, seq)` order, which only the claim index
    /// delivers: with `shard = $1` in `seq` order the primary key delivers it too, and
    /// PostgreSQL walks it (filtering every row) whenever its statistics say most rows
    /// are pending, as after a backlog was analysed: draining such a backlog, the walk
    /// reads past every event published since, and each claim slows down with the
    /// backlog drained.
    ///
    /// Payload and headers are read as the database's text of the stored JSON, with no
    /// decoding on the relay's side. That is the same JSON value as stored, not always
    /// the same bytes: PostgreSQL's `jsonb` and MySQL's `JSON` keep a parsed form,
    /// so whitespace is dropped, object keys are reordered and duplicate keys keep one
    /// value (the last); SQLite keeps the text as written. The SQL is `claim.sql`; on MySQL `claim_mysql.sql`, the same rows read
    /// through its full indexes.
    pub(crate) fn claim(
        self,
        table: &Identifier,
        shard: i32,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Statement {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let claim = match self {
            Dialect::Postgres | Dialect::Sqlite => CLAIM,
            Dialect::MySql => CLAIM_MYSQL,
        };
        self.hand_written(
            claim.on(table),
            [Value::from(shard), Value::from(now), Value::from(limit)],
        )
    }

    /// Of `shards`, those with an event the claim would take now: one statement on
    /// the claim index for every shard, so an idle relay polls with one query instead
    /// of a claim per shard. The SQL is `ready_shards.sql`.
    pub(crate) fn shards_with_work(
        self,
        table: &Identifier,
        shards: &[i32],
        now: DateTime<Utc>,
    ) -> Statement {
        self.hand_written(
            READY_SHARDS.on_shards(self, table, shards.iter().copied()),
            [Value::from(now)],
        )
    }
}
