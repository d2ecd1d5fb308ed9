//! [`Inbox`]: the consumer's record of the events it processed, kept in its own
//! transactions so that each event changes its database once.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ConnectionTrait, FromQueryResult};
use uuid::Uuid;

use crate::dead_letter_filter::{DeadLetterFilter, check_consumer};
use crate::entity::inbox_dead;
use crate::error::Result;
use crate::repository::cutoff;
use crate::sql::Dialect;
use crate::tables::Tables;

/// How long an inbox remembers an event by default: 15 days. Kafka deletes a log
/// segment once its newest record is older than `retention.ms` (7 days by default),
/// and a segment rolls after `segment.ms` (also 7 days), so with the defaults a record
/// can stay readable for up to 14 days after it was written. A consumer group that
/// starts over from the earliest offset of such a topic finds every event it processed
/// still recorded. Topics kept longer need a longer window.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(15 * 24 * 60 * 60);

/// How many records one cleanup statement deletes.
const CLEANUP_BATCH: u64 = 1_000;

/// Records which events a consumer has processed, in the consumer's own transaction.
///
/// The relay publishes at least once, so a consumer may receive an event twice. When
/// the consumer records the event's id in the transaction that applies the event,
/// the record exists if and only if the changes do: a second delivery finds it and is
/// skipped, and an event whose transaction rolled back is applied when it comes
/// again. The changes happen exactly once.
///
/// The table is `_outbox_inbox` (see [`Tables::inbox`]), created by the
/// `outbox-migration` crate. With a consumer loop of your own:
///
/// ```
/// # use outbox::Inbox;
/// # use sea_orm::{Database, TransactionTrait};
/// # use sea_orm_migration::MigratorTrait;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let db = Database::connect("sqlite::memory:").await?;
/// # outbox_migration::Migrator::up(&db, None).await?;
/// # let event_id = uuid::Uuid::now_v7();
/// let inbox = Inbox::new();
/// for _delivery in 0..2 {
///     let txn = db.begin().await?;
///     if !inbox.record(&txn, "billing", event_id).await? {
///         continue; // processed before: the transaction ends without changes
///     }
///     // ... apply the event on `txn` ...
///     txn.commit().await?;
/// }
/// assert!(inbox.contains(&db, "billing", event_id).await?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    tables: Tables,
}

impl Inbox {
    /// An inbox on the default tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// An inbox on tables of other names (its table is [`Tables::inbox`]).
    pub fn with_tables(tables: Tables) -> Self {
        Inbox { tables }
    }

    /// The tables this inbox uses.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Records that `consumer` processed `event_id`, on `conn` (the transaction that
    /// applies the event). `true` the first time; `false` when the record exists,
    /// committed: the event was processed, and the caller should end its transaction
    /// without applying it again.
    ///
    /// While another transaction holds an uncommitted record of the same event (a
    /// second consumer given the event during a rebalance), this waits until that
    /// transaction ends, then answers by its outcome.
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`](crate::Error::InvalidConsumer) when `consumer` is empty, begins or ends with
    /// whitespace, is longer than 255 characters or holds a NUL character (nothing
    /// is written); the database's.
    pub async fn record<C: ConnectionTrait>(
        &self,
        conn: &C,
        consumer: &str,
        event_id: Uuid,
    ) -> Result<bool> {
        check_consumer(consumer)?;
        let dialect = Dialect::of(conn.get_database_backend())?;
        let statement =
            dialect.record_processed(self.tables.inbox(), consumer, event_id, Utc::now());
        Ok(conn.execute_raw(statement).await?.rows_affected() == 1)
    }

    /// Whether `consumer` has a committed record of `event_id` (as seen by `conn`).
    ///
    /// # Errors
    /// As [`record`](Self::record).
    pub async fn contains<C: ConnectionTrait>(
        &self,
        conn: &C,
        consumer: &str,
        event_id: Uuid,
    ) -> Result<bool> {
        check_consumer(consumer)?;
        let dialect = Dialect::of(conn.get_database_backend())?;
        let statement = dialect.processed(self.tables.inbox(), consumer, event_id);
        Ok(conn.query_one_raw(statement).await?.is_some())
    }

    /// Deletes `consumer`'s records older than `older_than`, in batches of 1,000, and
    /// returns how many. Other consumers' records stay: each keeps its own window. An event delivered again after its record is gone
    /// is applied again: keep `older_than` longer than any redelivery can come late
    /// ([`DEFAULT_DEDUP_WINDOW`] suits topics with Kafka's default retention and
    /// segment settings: at least `retention.ms` + `segment.ms`).
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`](crate::Error::InvalidConsumer) for an invalid name; [`Error::DurationOutOfRange`](crate::Error::DurationOutOfRange)
    /// when `older_than` reaches before the earliest date that can be stored; the
    /// database's.
    pub async fn cleanup<C: ConnectionTrait>(
        &self,
        conn: &C,
        consumer: &str,
        older_than: Duration,
    ) -> Result<u64> {
        check_consumer(consumer)?;
        let dialect = Dialect::of(conn.get_database_backend())?;
        let cutoff = cutoff(older_than)?;
        let mut deleted = 0;
        loop {
            let statement =
                dialect.forget_processed(self.tables.inbox(), consumer, cutoff, CLEANUP_BATCH);
            let n = conn.execute_raw(statement).await?.rows_affected();
            deleted += n;
            if n < CLEANUP_BATCH {
                return Ok(deleted);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The consumers' dead letters (see [`Consumer`](crate::Consumer)): list, replay,
/// delete.
impl Inbox {
    /// The messages `consumer` dead-lettered, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`](crate::Error::InvalidConsumer) for an invalid name; the database's.
    pub async fn dead_letters<C: ConnectionTrait>(
        &self,
        conn: &C,
        consumer: &str,
        limit: u64,
    ) -> Result<Vec<inbox_dead::Model>> {
        self.find_dead_letters(conn, &DeadLetterFilter::consumer(consumer), limit)
            .await
    }

    /// The dead letters `filter` picks, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`](crate::Error::InvalidConsumer) for an invalid consumer name; the database's.
    pub async fn find_dead_letters<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &DeadLetterFilter,
        limit: u64,
    ) -> Result<Vec<inbox_dead::Model>> {
        filter.check()?;
        let dialect = Dialect::of(conn.get_database_backend())?;
        let statement = dialect.dead_letters(self.tables.inbox_dead(), filter, limit);
        let rows = conn.query_all_raw(statement).await?;
        Ok(rows
            .iter()
            .map(|row| inbox_dead::Model::from_query_result(row, ""))
            .collect::<Result<_, _>>()?)
    }

    /// The dead letter with id `id`, if there is one.
    ///
    /// # Errors
    /// The database's.
    pub async fn dead_letter<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: i64,
    ) -> Result<Option<inbox_dead::Model>> {
        let mut found = self
            .find_dead_letters(conn, &DeadLetterFilter::id(id), 1)
            .await?;
        Ok(found.pop())
    }

    /// How many dead letters `filter` picks.
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`](crate::Error::InvalidConsumer) for an invalid consumer name; the database's.
    pub async fn count_dead_letters<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &DeadLetterFilter,
    ) -> Result<u64> {
        filter.check()?;
        let dialect = Dialect::of(conn.get_database_backend())?;
        let statement = dialect.count_dead_letters(self.tables.inbox_dead(), filter);
        let row = conn.query_one_raw(statement).await?;
        let n: i64 = match row {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Asks for the dead letters `filter` picks to be replayed, and returns how many
    /// were marked (those marked already are not counted). The running consumer of
    /// each letter's name (any instance of it) takes a marked letter within its
    /// `replay_interval`, and in one transaction deletes the letter and the event's
    /// inbox record, records the event again and hands the message to its handler.
    /// If that fails, the letter stays, with the new error, one more attempt and its
    /// mark cleared. A replayed message is applied after the messages of its key that
    /// came since it was dead-lettered.
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`](crate::Error::InvalidConsumer) for an invalid consumer name; the database's.
    pub async fn request_replay<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &DeadLetterFilter,
    ) -> Result<u64> {
        filter.check()?;
        let dialect = Dialect::of(conn.get_database_backend())?;
        let statement = dialect.request_replays(self.tables.inbox_dead(), filter, Utc::now());
        Ok(conn.execute_raw(statement).await?.rows_affected())
    }

    /// Deletes a dead letter once you have dealt with it (applied its event by hand,
    /// or decided it needs nothing); `false` when it was not there. Its event stays
    /// recorded in the inbox, so a redelivery is still skipped.
    ///
    /// # Errors
    /// The database's.
    pub async fn delete_dead_letter<C: ConnectionTrait>(
        &self,
        conn: &C,
        letter: &inbox_dead::Model,
    ) -> Result<bool> {
        Ok(self
            .delete_dead_letters(conn, &DeadLetterFilter::id(letter.id))
            .await?
            == 1)
    }

    /// Deletes the dead letters `filter` picks, and returns how many. Their events
    /// stay recorded in the inbox, so redeliveries are still skipped.
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`](crate::Error::InvalidConsumer) for an invalid consumer name; the database's.
    pub async fn delete_dead_letters<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &DeadLetterFilter,
    ) -> Result<u64> {
        filter.check()?;
        let dialect = Dialect::of(conn.get_database_backend())?;
        let statement = dialect.forget_dead_letters(self.tables.inbox_dead(), filter);
        Ok(conn.execute_raw(statement).await?.rows_affected())
    }
}
