//! Operations on stored events outside the relay loop: listing, marking, recording
//! failures and cleanup (dead-letter replay: `replay.rs`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, EntityTrait, FromQueryResult, TransactionSession, TransactionTrait,
};
use uuid::Uuid;

use crate::backlog::CountRow;
use crate::completion::Completion;
use crate::config::RelayConfig;
use crate::entity::outbox as row;
use crate::error::{Error, Result};
use crate::publisher::PublishError;
use crate::retry::failure_update;
use crate::sql::{Dialect, Published, Unpublished};
use crate::store::Outbox;
use crate::tables::Identifier;

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
pub(crate) fn cutoff(older_than: Duration) -> Result<DateTime<Utc>> {
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

    /// Pending events, oldest first.
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

    /// Marks events published by id, for custom processing: completes them by the
    /// outbox's
    /// [`Completion`](crate::Completion) mode, so in `Delete` mode they are deleted and
    /// in `Archive` mode moved to the archive. Returns how many were pending.
    ///
    /// # Errors
    /// The database's.
    #[doc(alias = "MarkEventsAsPublished")]
    pub async fn mark_events_as_published<C>(&self, conn: &C, ids: &[Uuid]) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        if ids.is_empty() {
            return Ok(0);
        }
        let dialect = self.dialect(conn)?;
        let mut marked = 0;
        for chunk in ids.chunks(1000) {
            marked += dialect
                .complete(
                    self.tables(),
                    self.completion(),
                    Published::Ids(chunk),
                    Utc::now(),
                    None,
                )
                .run(conn)
                .await?;
        }
        if marked > 0 {
            // A published event may have held later events of its key parked.
            self.unpark_orphans(conn).await?;
        }
        Ok(marked)
    }

    /// Records a failed attempt to publish event `id`: the attempt counts, the event
    /// waits
    /// `config.retry_backoff.after(attempts)`, and after `1 + config.retry_attempts` failures it is
    /// dead-lettered.
    ///
    /// An event already published is left as it is ([`FailureOutcome::Unchanged`]);
    /// in [`Completion::Delete`](crate::Completion::Delete) mode its row is gone, so
    /// it is not found.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id, or the database's.
    #[doc(alias = "HandleEventFailure")]
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
        let txn = dialect.begin_on(conn).await?;
        let Some(state) = FailureStateRow::find_by_statement(dialect.failure_state(table, id))
            .one(&txn)
            .await?
        else {
            // Published and archived: already through, like a marked event.
            return match self.archived_event(&txn, id).await? {
                Some(_) => Ok(FailureOutcome::Unchanged),
                None => Err(Error::NotFound(id)),
            };
        };
        if state.published || state.dead {
            return Ok(FailureOutcome::Unchanged);
        }
        let error = PublishError::permanent(error);
        let update = failure_update(state.attempts, &error, Utc::now(), config.retries());
        txn.execute_raw(dialect.record_failure(table, id, &update))
            .await?;
        if update.dead_lettered_at.is_some() {
            // Events of its key parked behind it go back in line.
            self.unpark_orphans(&txn).await?;
        }
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

    /// Deletes events published more than `older_than` ago, `batch` rows per
    /// statement so no statement holds many locks or runs long: those kept in the
    /// outbox table and those in the archive (in
    /// [`Completion::Archive`](crate::Completion::Archive) mode, and after a switch from
    /// it to another mode while the archive table exists). Pending and dead-lettered events are never deleted.
    /// Returns how many were deleted.
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
        for table in self.published_tables(conn).await? {
            loop {
                let statement = dialect.cleanup(table, cutoff, batch);
                let n = conn.execute_raw(statement).await?.rows_affected();
                deleted += n;
                if n < batch {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(deleted)
    }

    /// One step of [`cleanup`](Self::cleanup): deletes up to `limit` events published
    /// more than `older_than` ago, oldest first (the outbox table's, then the
    /// archive's), and returns how many (what `outbox purge` does, step by step).
    /// Fewer than `limit` means nothing is left to delete.
    ///
    /// # Errors
    /// As [`cleanup`](Self::cleanup).
    pub async fn cleanup_batch<C: ConnectionTrait>(
        &self,
        conn: &C,
        older_than: Duration,
        limit: u64,
    ) -> Result<u64> {
        let dialect = self.dialect(conn)?;
        let cutoff = cutoff(older_than)?;
        let limit = limit.max(1);
        let mut deleted = 0;
        for table in self.published_tables(conn).await? {
            let statement = dialect.cleanup(table, cutoff, limit - deleted);
            deleted += conn.execute_raw(statement).await?.rows_affected();
            if deleted == limit {
                break;
            }
        }
        Ok(deleted)
    }

    /// The tables that hold published events: the outbox table in every mode (rows
    /// marked before a switch of mode included), and the archive when it is in use.
    async fn published_tables<C: ConnectionTrait>(&self, conn: &C) -> Result<Vec<&Identifier>> {
        let tables = self.tables();
        Ok(if self.archive_in_use(conn).await? {
            vec![tables.outbox(), tables.archive()]
        } else {
            vec![tables.outbox()]
        })
    }

    /// Whether published events may be in the archive: always when archiving (a
    /// missing archive is then an error of the statements that read it), and after a
    /// switch from archiving to another mode while the archive exists, so that its
    /// events are still found and purged.
    async fn archive_in_use<C: ConnectionTrait>(&self, conn: &C) -> Result<bool> {
        match self.completion() {
            Completion::Archive => Ok(true),
            Completion::Mark | Completion::Delete => {
                self.has_table(conn, self.tables().archive()).await
            }
        }
    }

    /// Whether `table` exists, read from the catalog (safe inside a transaction).
    pub(crate) async fn has_table<C: ConnectionTrait>(
        &self,
        conn: &C,
        table: &Identifier,
    ) -> Result<bool> {
        let statement = self.dialect(conn)?.table_exists(table);
        Ok(CountRow::of(CountRow::find_by_statement(statement).one(conn).await?) > 0)
    }

    /// One event by id: from the outbox table or the archive (in [`Completion::Archive`](crate::Completion::Archive) mode, or after a
    /// switch from it).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id (or one published and deleted), or the
    /// database's.
    pub async fn event<C: ConnectionTrait>(&self, conn: &C, id: Uuid) -> Result<row::Model> {
        match self.event_in(conn, self.tables().outbox(), id).await? {
            Some(event) => Ok(event),
            None => self
                .archived_event(conn, id)
                .await?
                .ok_or(Error::NotFound(id)),
        }
    }

    /// Event `id` from the archive, when this outbox archives.
    async fn archived_event<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
    ) -> Result<Option<row::Model>> {
        if self.archive_in_use(conn).await? {
            self.event_in(conn, self.tables().archive(), id).await
        } else {
            Ok(None)
        }
    }

    /// Event `id` from `table` (the outbox table or the archive, which share columns).
    async fn event_in<C: ConnectionTrait>(
        &self,
        conn: &C,
        table: &Identifier,
        id: Uuid,
    ) -> Result<Option<row::Model>> {
        let statement = self.dialect(conn)?.event(table, id);
        Ok(row::Entity::find()
            .from_raw_sql(statement)
            .one(conn)
            .await?)
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
        let dialect = self.dialect(conn)?;
        let cutoff = cutoff(older_than)?;
        let mut count = 0;
        for table in self.published_tables(conn).await? {
            let statement = dialect.count_published_before(table, cutoff);
            count += CountRow::of(CountRow::find_by_statement(statement).one(conn).await?);
        }
        Ok(count)
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
