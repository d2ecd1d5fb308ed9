//! Operations on stored events outside the relay loop: the Go library's repository and
//! service calls, dead-letter replay and cleanup.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, EntityTrait, FromQueryResult, TransactionSession, TransactionTrait,
};
use uuid::Uuid;

use crate::backlog::CountRow;
use crate::config::RelayConfig;
use crate::entity::outbox as row;
use crate::error::{Error, Result};
use crate::publisher::PublishError;
use crate::retry::failure_update;
use crate::sql::{Dialect, Published, Unpublished};
use crate::store::Outbox;

/// What became of an event after a recorded failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// It will be tried again, not before `next_attempt_at`.
    Retry {
        /// Failed attempts so far.
        attempts: i32,
        /// The earliest next attempt.
        next_attempt_at: DateTime<Utc>,
    },
    /// It used up its attempts and is dead-lettered.
    DeadLettered {
        /// Failed attempts.
        attempts: i32,
    },
    /// It was already published or dead-lettered; nothing changed.
    Unchanged,
}

#[derive(Debug, FromQueryResult)]
struct ParkedKey {
    shard: i32,
    key: String,
}

#[derive(Debug, FromQueryResult)]
struct FailureStateRow {
    attempts: i32,
    published: bool,
    dead: bool,
}

/// The time `older_than` ago.
fn cutoff(older_than: Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or(Error::DurationOutOfRange {
            what: "age",
            value: older_than,
        })
}

impl Outbox {
    /// The SQL dialect of `conn`'s backend.
    pub(crate) fn dialect(&self, conn: &impl ConnectionTrait) -> Result<Dialect> {
        Dialect::of(conn.get_database_backend())
    }

    /// Pending events, oldest first (the Go library's `GetUnpublished`).
    ///
    /// # Errors
    /// The database's.
    #[doc(alias = "GetUnpublished")]
    #[doc(alias = "get_unpublished")]
    pub async fn pending<C: ConnectionTrait>(
        &self,
        conn: &C,
        limit: u64,
    ) -> Result<Vec<row::Model>> {
        self.events(conn, Unpublished::Pending, limit).await
    }

    /// Dead-lettered events, oldest first.
    ///
    /// # Errors
    /// The database's.
    pub async fn dead_letters<C: ConnectionTrait>(
        &self,
        conn: &C,
        limit: u64,
    ) -> Result<Vec<row::Model>> {
        self.events(conn, Unpublished::DeadLettered, limit).await
    }

    async fn events<C: ConnectionTrait>(
        &self,
        conn: &C,
        state: Unpublished,
        limit: u64,
    ) -> Result<Vec<row::Model>> {
        let statement = self
            .dialect(conn)?
            .events(self.tables().outbox(), state, limit);
        Ok(row::Entity::find()
            .from_raw_sql(statement)
            .all(conn)
            .await?)
    }

    /// Marks events published by id, for custom processing (the Go library's
    /// `MarkEventsAsPublished`). Returns how many were pending.
    ///
    /// # Errors
    /// The database's.
    pub async fn mark_events_as_published<C: ConnectionTrait>(
        &self,
        conn: &C,
        ids: &[Uuid],
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let dialect = self.dialect(conn)?;
        let mut marked = 0;
        for chunk in ids.chunks(1000) {
            let published = Published::Ids(chunk);
            let statement = dialect.mark_published(self.tables().outbox(), published, Utc::now());
            marked += conn.execute_raw(statement).await?.rows_affected();
        }
        if marked > 0 {
            // A published event may have held later events of its key parked.
            self.unpark_orphans(conn).await?;
        }
        Ok(marked)
    }

    /// Records a failed attempt to publish event `id` (the Go library's
    /// `HandleEventFailure`): the attempt counts, the event waits
    /// `config.backoff(attempts)`, and after `1 + config.retry_attempts` failures it is
    /// dead-lettered.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id, or the database's.
    pub async fn handle_event_failure<C>(
        &self,
        conn: &C,
        id: Uuid,
        error: &str,
        config: &RelayConfig,
    ) -> Result<FailureOutcome>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let dialect = self.dialect(conn)?;
        let table = self.tables().outbox();
        let txn = conn.begin().await?;
        let state = FailureStateRow::find_by_statement(dialect.failure_state(table, id))
            .one(&txn)
            .await?
            .ok_or(Error::NotFound(id))?;
        if state.published || state.dead {
            return Ok(FailureOutcome::Unchanged);
        }
        let error = PublishError::permanent(error);
        let update = failure_update(state.attempts, &error, Utc::now(), config);
        txn.execute_raw(dialect.record_failure(table, id, &update))
            .await?;
        txn.commit().await?;
        Ok(match update.next_attempt_at {
            Some(next_attempt_at) => FailureOutcome::Retry {
                attempts: update.attempts,
                next_attempt_at,
            },
            None => FailureOutcome::DeadLettered {
                attempts: update.attempts,
            },
        })
    }

    /// Puts a dead-lettered event back in line with its attempts reset. It is
    /// published in `seq` order with the pending events of its key; events of its key
    /// published while it was dead-lettered stay ahead of it.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no dead-lettered event has this id, or the database's.
    pub async fn replay<C: ConnectionTrait>(&self, conn: &C, id: Uuid) -> Result<()> {
        let statement = self
            .dialect(conn)?
            .replay(self.tables().outbox(), Some(id), Utc::now());
        match conn.execute_raw(statement).await?.rows_affected() {
            0 => Err(Error::NotFound(id)),
            _ => {
                self.notify();
                Ok(())
            }
        }
    }

    /// Puts every dead-lettered event back in line; returns how many.
    ///
    /// # Errors
    /// The database's.
    pub async fn replay_all_dead<C: ConnectionTrait>(&self, conn: &C) -> Result<u64> {
        let statement = self
            .dialect(conn)?
            .replay(self.tables().outbox(), None, Utc::now());
        let replayed = conn.execute_raw(statement).await?.rows_affected();
        if replayed > 0 {
            self.notify();
        }
        Ok(replayed)
    }

    /// Puts back in line up to `limit` dead-lettered events, oldest first, in one
    /// statement, and returns how many: call it until it returns less than `limit` to
    /// replay them all in steps that each commit (what `outbox replay --all-dead`
    /// does, so that an interrupted replay loses nothing and can go on).
    ///
    /// # Errors
    /// Database errors.
    pub async fn replay_dead_batch<C: ConnectionTrait>(&self, conn: &C, limit: u64) -> Result<u64> {
        let statement =
            self.dialect(conn)?
                .replay_oldest(self.tables().outbox(), limit.max(1), Utc::now());
        let replayed = conn.execute_raw(statement).await?.rows_affected();
        if replayed > 0 {
            self.notify();
        }
        Ok(replayed)
    }

    /// Deletes events published more than `older_than` ago, `batch` rows per
    /// statement so no statement holds many locks or runs long. Pending and
    /// dead-lettered events are never deleted. Returns how many were deleted.
    ///
    /// # Errors
    /// [`Error::DurationOutOfRange`] when `older_than` reaches before the earliest
    /// date there is, or the database's.
    pub async fn cleanup<C: ConnectionTrait>(
        &self,
        conn: &C,
        older_than: Duration,
        batch: u64,
    ) -> Result<u64> {
        let dialect = self.dialect(conn)?;
        let cutoff = cutoff(older_than)?;
        let batch = batch.max(1);
        let mut deleted = 0;
        loop {
            let statement = dialect.cleanup(self.tables().outbox(), cutoff, batch);
            let n = conn.execute_raw(statement).await?.rows_affected();
            deleted += n;
            if n < batch {
                return Ok(deleted);
            }
            tokio::task::yield_now().await;
        }
    }

    /// One step of [`cleanup`](Self::cleanup): deletes up to `limit` events published
    /// more than `older_than` ago, oldest first, in one statement, and returns how
    /// many (what `outbox purge` does, step by step).
    ///
    /// # Errors
    /// As [`cleanup`](Self::cleanup).
    pub async fn cleanup_batch<C: ConnectionTrait>(
        &self,
        conn: &C,
        older_than: Duration,
        limit: u64,
    ) -> Result<u64> {
        let statement =
            self.dialect(conn)?
                .cleanup(self.tables().outbox(), cutoff(older_than)?, limit.max(1));
        Ok(conn.execute_raw(statement).await?.rows_affected())
    }

    /// One event by id.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id, or the database's.
    pub async fn event<C: ConnectionTrait>(&self, conn: &C, id: Uuid) -> Result<row::Model> {
        let statement = self.dialect(conn)?.event(self.tables().outbox(), id);
        row::Entity::find()
            .from_raw_sql(statement)
            .one(conn)
            .await?
            .ok_or(Error::NotFound(id))
    }

    /// How many published events are older than `older_than` (what
    /// [`cleanup`](Self::cleanup) would delete).
    ///
    /// # Errors
    /// [`Error::DurationOutOfRange`] when `older_than` reaches before the earliest
    /// date there is, or the database's.
    pub async fn count_published_older_than<C: ConnectionTrait>(
        &self,
        conn: &C,
        older_than: Duration,
    ) -> Result<u64> {
        let cutoff = cutoff(older_than)?;
        let statement = self
            .dialect(conn)?
            .count_published_before(self.tables().outbox(), cutoff);
        Ok(CountRow::of(
            CountRow::find_by_statement(statement).one(conn).await?,
        ))
    }

    /// Unparks the events whose key no longer has a failed pending event (after a
    /// manual `mark_events_as_published`, `replay` or the like), so no event stays
    /// parked for good. The relay runs it every few seconds.
    ///
    /// # Errors
    /// The database's.
    pub(crate) async fn unpark_orphans<C: ConnectionTrait>(&self, conn: &C) -> Result<u64> {
        let dialect = self.dialect(conn)?;
        let table = self.tables().outbox();
        let orphans = ParkedKey::find_by_statement(dialect.orphaned_parked_keys(table))
            .all(conn)
            .await?;
        let mut unparked = 0;
        for orphan in orphans {
            let statement = dialect.unpark(table, orphan.shard, &[orphan.key.as_str()]);
            unparked += conn.execute_raw(statement).await?.rows_affected();
        }
        Ok(unparked)
    }
}
