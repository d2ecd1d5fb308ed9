//! What waits in the outbox: the backlog, per topic, and the relays on record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde::Serialize;

use crate::error::Result;
use crate::store::Outbox;

/// Pending work in the outbox table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Backlog {
    /// Events waiting to be published.
    pub pending: u64,
    /// Dead-lettered events.
    pub dead_lettered: u64,
    /// When the oldest pending event was stored.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

impl Backlog {
    /// How long the oldest pending event has waited, as of `now`.
    pub fn oldest_pending_age(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.oldest_pending_at
            .map(|at| (now - at).to_std().unwrap_or_default())
    }
}

/// Pending work of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicBacklog {
    /// The topic.
    pub topic: String,
    /// Events waiting to be published.
    pub pending: u64,
    /// Dead-lettered events.
    pub dead_lettered: u64,
    /// When the oldest pending event was stored.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// A relay instance as recorded in the relay table, with the shards it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayInfo {
    /// The relay's service.
    pub service_name: String,
    /// The instance's id.
    pub relay_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last sign of life.
    pub heartbeat_at: DateTime<Utc>,
    /// Shards it holds unexpired leases on.
    pub shards: u64,
}

/// A `COUNT(*) AS n`.
#[derive(Debug, FromQueryResult)]
pub(crate) struct CountRow {
    n: i64,
}

impl CountRow {
    pub(crate) fn of(row: Option<Self>) -> u64 {
        row.map_or(0, |c| count(c.n))
    }
}

#[derive(Debug, FromQueryResult)]
struct BacklogRow {
    pending: i64,
    oldest: Option<DateTime<Utc>>,
    dead: i64,
}

#[derive(Debug, FromQueryResult)]
struct TopicRow {
    topic: String,
    pending: i64,
    dead: i64,
    oldest: Option<DateTime<Utc>>,
}

#[derive(Debug, FromQueryResult)]
struct RelayRow {
    service_name: String,
    relay_id: String,
    started_at: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
    shards: i64,
}

/// A count as the database returns it (a signed integer, never negative).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Outbox {
    /// How many events are pending and dead-lettered, and the oldest pending one.
    ///
    /// # Errors
    /// The database's.
    pub async fn backlog<C: ConnectionTrait>(&self, conn: &C) -> Result<Backlog> {
        let statement = self
            .dialect(conn)?
            .backlog(self.tables().outbox(), self.shards());
        let row = BacklogRow::find_by_statement(statement).one(conn).await?;
        Ok(row.map_or_else(Backlog::default, |row| Backlog {
            pending: count(row.pending),
            dead_lettered: count(row.dead),
            oldest_pending_at: row.oldest,
        }))
    }

    /// Pending and dead-lettered events per topic.
    ///
    /// # Errors
    /// The database's.
    pub async fn topic_backlog<C: ConnectionTrait>(&self, conn: &C) -> Result<Vec<TopicBacklog>> {
        let statement = self.dialect(conn)?.topic_backlog(self.tables().outbox());
        let rows = TopicRow::find_by_statement(statement).all(conn).await?;
        Ok(rows
            .into_iter()
            .map(|row| TopicBacklog {
                topic: row.topic,
                pending: count(row.pending),
                dead_lettered: count(row.dead),
                oldest_pending_at: row.oldest,
            })
            .collect())
    }

    /// The relay instances on record (live and recently gone) with the shards each holds.
    ///
    /// # Errors
    /// The database's.
    pub async fn relays<C: ConnectionTrait>(&self, conn: &C) -> Result<Vec<RelayInfo>> {
        let statement = self.dialect(conn)?.relays(self.tables(), Utc::now());
        let rows = RelayRow::find_by_statement(statement).all(conn).await?;
        Ok(rows
            .into_iter()
            .map(|row| RelayInfo {
                service_name: row.service_name,
                relay_id: row.relay_id,
                started_at: row.started_at,
                heartbeat_at: row.heartbeat_at,
                shards: count(row.shards),
            })
            .collect())
    }

    /// How many pending events sit in shards at or above this outbox's shard count:
    /// stored by a writer configured with more shards, they are leased by no relay of
    /// this count and would wait forever. Anything above zero is a misconfiguration.
    ///
    /// # Errors
    /// The database's.
    pub async fn pending_outside_shards<C: ConnectionTrait>(&self, conn: &C) -> Result<u64> {
        let statement = self
            .dialect(conn)?
            .count_pending_from_shard(self.tables().outbox(), i32::from(self.shards()));
        Ok(CountRow::of(
            CountRow::find_by_statement(statement).one(conn).await?,
        ))
    }
}
