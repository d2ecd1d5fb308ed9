//! Events with a due time: stored in the scheduled table (`_outbox_scheduled`), out
//! of the claim's way, and moved into the outbox by a relay when due.
//!
//! The rule for a key's order: a waiting event holds back none of its key's events.
//! When due, a relay moves it (with every other event due by then, in due-time order,
//! ties in store order) into the outbox, taking its keys' locks as a store does, so it
//! takes its place behind the events of its key stored before the move, and before
//! those stored after. Its `created_at` there is the moment it was moved: the age of
//! the oldest pending event never counts the wait for a due time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, LockType, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::error;
use uuid::Uuid;

use super::Outbox;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::sql::Dialect;

/// What the scheduled table keeps of an envelope (its `envelope` column, as JSON):
/// everything but its id and due time, which have columns of their own.
#[derive(Debug, Serialize, Deserialize)]
struct Waiting {
    event_type: String,
    event_version: String,
    aggregate_id: String,
    payload: Value,
    topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tombstone: bool,
}

impl Waiting {
    fn of(envelope: &Envelope) -> Self {
        Waiting {
            event_type: envelope.event_type.clone(),
            event_version: envelope.event_version.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            payload: envelope.payload.clone(),
            topic: envelope.topic.clone(),
            partition_key: envelope.partition_key.clone(),
            user_id: envelope.user_id.clone(),
            trace_id: envelope.trace_id.clone(),
            headers: envelope.headers.clone(),
            tombstone: envelope.tombstone,
        }
    }

    fn into_envelope(self, id: Uuid) -> Envelope {
        Envelope {
            id,
            event_type: self.event_type,
            event_version: self.event_version,
            aggregate_id: self.aggregate_id,
            payload: self.payload,
            topic: self.topic,
            partition_key: self.partition_key,
            user_id: self.user_id,
            trace_id: self.trace_id,
            headers: self.headers,
            tombstone: self.tombstone,
            deliver_at: None,
        }
    }
}

/// A due event read for the move.
#[derive(Debug, FromQueryResult)]
struct DueRow {
    seq: i64,
    id: Uuid,
    envelope: String,
}

#[derive(Debug, FromQueryResult)]
struct NextDue {
    next: Option<DateTime<Utc>>,
}

/// An event waiting for its due time, as [`Outbox::scheduled`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromQueryResult)]
pub struct ScheduledEvent {
    /// The event's id ([`Outbox::cancel`] takes it).
    pub id: Uuid,
    /// When it is due.
    pub deliver_at: DateTime<Utc>,
    /// When it was stored.
    pub stored_at: DateTime<Utc>,
    /// The key that orders it (its partition key, else its aggregate id).
    pub event_key: String,
    /// Its type.
    pub event_type: String,
    /// The topic it goes to.
    pub destination_topic: String,
}

/// What one move did: how many events it moved, and to which shards.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    pub(crate) events: usize,
    pub(crate) shards: BTreeSet<i32>,
}

impl Outbox {
    /// The scheduled table, for sea-query.
    fn scheduled_table(&self) -> Alias {
        Alias::new(self.tables().scheduled().as_str())
    }

    /// Writes `envelopes` (valid, each with a due time ahead) to the scheduled table.
    pub(super) async fn schedule<C: ConnectionTrait>(
        &self,
        conn: &C,
        envelopes: Vec<Envelope>,
    ) -> Result<()> {
        let dialect = Dialect::of(conn.get_database_backend())?;
        let table = self.scheduled_table();
        for chunk in envelopes.chunks(dialect.max_rows_per_insert()) {
            let mut insert = Query::insert();
            insert.into_table(table.clone()).columns([
                Alias::new("id"),
                Alias::new("deliver_at"),
                Alias::new("event_key"),
                Alias::new("event_type"),
                Alias::new("destination_topic"),
                Alias::new("envelope"),
            ]);
            for envelope in chunk {
                // Never without one here; none would mean now, at the next move.
                let deliver_at = envelope.deliver_at.unwrap_or_else(Utc::now);
                let waiting = serde_json::to_string(&Waiting::of(envelope)).map_err(|source| {
                    Error::Serialize {
                        event_type: envelope.event_type.clone(),
                        source,
                    }
                })?;
                insert.values_panic([
                    envelope.id.into(),
                    deliver_at.into(),
                    envelope.key().to_owned().into(),
                    envelope.event_type.clone().into(),
                    envelope.topic.clone().into(),
                    waiting.into(),
                ]);
            }
            conn.execute(&insert).await?;
        }
        self.wake().scheduled();
        Ok(())
    }

    /// Cancels the event `id` if it still waits for its due time: it is never
    /// published. Returns whether it did; `false` for an event that is due (a relay
    /// moved it into the outbox, to be published), published, or unknown. Run it in
    /// the transaction that decides it, as a store.
    ///
    /// # Errors
    /// The database's.
    pub async fn cancel<C: ConnectionTrait>(&self, conn: &C, id: Uuid) -> Result<bool> {
        let mut delete = Query::delete();
        delete
            .from_table(self.scheduled_table())
            .and_where(Expr::col(Alias::new("id")).eq(id));
        Ok(conn.execute(&delete).await?.rows_affected() > 0)
    }

    /// How many events wait for their due time.
    ///
    /// # Errors
    /// The database's.
    pub async fn scheduled_count<C: ConnectionTrait>(&self, conn: &C) -> Result<u64> {
        let count = Query::select()
            .expr_as(Func::count(Expr::col(Alias::new("seq"))), Alias::new("n"))
            .from(self.scheduled_table())
            .to_owned();
        let row = conn.query_one(&count).await?;
        let n: i64 = row.map_or(Ok(0), |row| row.try_get("", "n"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Up to `limit` of the events that wait for their due time, the soonest due
    /// first.
    ///
    /// # Errors
    /// The database's.
    pub async fn scheduled<C: ConnectionTrait>(
        &self,
        conn: &C,
        limit: u64,
    ) -> Result<Vec<ScheduledEvent>> {
        let list = Query::select()
            .columns([
                Alias::new("id"),
                Alias::new("deliver_at"),
                Alias::new("stored_at"),
                Alias::new("event_key"),
                Alias::new("event_type"),
                Alias::new("destination_topic"),
            ])
            .from(self.scheduled_table())
            .order_by(Alias::new("deliver_at"), Order::Asc)
            .order_by(Alias::new("seq"), Order::Asc)
            .limit(limit)
            .to_owned();
        let statement = conn.get_database_backend().build(&list);
        Ok(ScheduledEvent::find_by_statement(statement)
            .all(conn)
            .await?)
    }

    /// The earliest due time of the events that wait, if any.
    pub(crate) async fn next_due(&self, db: &DatabaseConnection) -> Result<Option<DateTime<Utc>>> {
        let next = Query::select()
            .expr_as(
                Func::min(Expr::col(Alias::new("deliver_at"))),
                Alias::new("next"),
            )
            .from(self.scheduled_table())
            .to_owned();
        let statement = db.get_database_backend().build(&next);
        Ok(NextDue::find_by_statement(statement)
            .one(db)
            .await?
            .and_then(|row| row.next))
    }

    /// Moves up to `limit` events due now into the outbox, in due-time order (ties in
    /// store order), in one transaction that takes their keys' locks as a store does;
    /// returns what it moved. The rows are locked as they are read (`FOR UPDATE`, in
    /// that same order), so relays moving at once move each event once and one key's
    /// events in order.
    ///
    /// "Now" is the database's clock (the host's on SQLite), read by the statement
    /// itself: a relay's own estimate of it is off by its host's error until its first
    /// lease round measures the offset, and would move events early by as much. It is
    /// the moment the statement started ([`Dialect::statement_time`]), not a clock
    /// read row by row: the statement sees every event committed by then, so it
    /// leaves behind no event due sooner than one it takes and committed before that
    /// one was due, even when it waited for another transaction's locks.
    pub(crate) async fn move_due(&self, db: &DatabaseConnection, limit: usize) -> Result<Moved> {
        let dialect = Dialect::of(db.get_database_backend())?;
        let table = self.scheduled_table();
        let now = dialect
            .statement_time()
            .unwrap_or_else(|| Expr::value(Utc::now()));
        let mut select = Query::select();
        select
            .columns([Alias::new("seq"), Alias::new("id"), Alias::new("envelope")])
            .from(table.clone())
            .and_where(Expr::col(Alias::new("deliver_at")).lte(now))
            .order_by(Alias::new("deliver_at"), Order::Asc)
            .order_by(Alias::new("seq"), Order::Asc)
            .limit(u64::try_from(limit).unwrap_or(u64::MAX));
        if dialect != Dialect::Sqlite {
            select.lock(LockType::Update);
        }
        let txn = dialect.begin(db).await?;
        let statement = db.get_database_backend().build(&select);
        let rows = DueRow::find_by_statement(statement).all(&txn).await?;
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(Moved::default());
        }
        // A row this code did not write (edited by hand) stays where it is, said
        // each time; the others move on.
        let mut seqs = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_str::<Waiting>(&row.envelope) {
                Ok(waiting) => {
                    seqs.push(row.seq);
                    envelopes.push(waiting.into_envelope(row.id));
                }
                Err(reason) => {
                    error!(event_id = %row.id, %reason, "a scheduled event cannot be read; it stays in the scheduled table");
                }
            }
        }
        if envelopes.is_empty() {
            txn.commit().await?;
            return Ok(Moved::default());
        }
        let events = envelopes.len();
        let shards = self.insert_in_chunks(&txn, dialect, envelopes).await?;
        let mut delete = Query::delete();
        delete
            .from_table(table)
            .and_where(Expr::col(Alias::new("seq")).is_in(seqs));
        txn.execute(&delete).await?;
        txn.commit().await?;
        Ok(Moved { events, shards })
    }
}
