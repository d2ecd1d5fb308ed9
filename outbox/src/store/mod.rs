//! [`Outbox`]: storing events in the caller's transaction.

mod insert;
mod pending;
mod scheduled;

use std::num::NonZeroU16;
use std::sync::Arc;

use sea_orm::{DatabaseConnection, DatabaseTransaction};

pub use self::pending::Store;
pub use self::scheduled::ScheduledEvent;
use crate::completion::Completion;
use crate::error::Result;
use crate::key::{key_hash, shard_of};
use crate::tables::Tables;
use crate::wake::{self, Wake};

/// How many shards events are spread over unless configured otherwise.
pub const DEFAULT_SHARDS: NonZeroU16 = match NonZeroU16::new(16) {
    Some(shards) => shards,
    None => panic!("the default shard count is not zero"),
};

/// The entry point for storing events: holds the table names, the shard count and
/// the completion mode.
///
/// Cheap to clone; create one at start-up and share it.
///
/// ```no_run
/// # use outbox::{Outbox, OutboxEvent};
/// # use sea_orm::TransactionTrait;
/// # #[derive(serde::Serialize, OutboxEvent)]
/// # #[outbox(type = "user.registered", aggregate = "user_id")]
/// # struct UserRegistered { user_id: u64 }
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
/// let outbox = Outbox::on(&db);
/// let txn = db.begin().await?;
/// // ... the business change on &txn ...
/// let id = outbox
///     .store(&txn, &UserRegistered { user_id: 7 }, "user-events")
///     .user_id(7)
///     .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
///     .await?;
/// txn.commit().await?;
/// # let _ = id; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    tables: Tables,
    shards: Option<NonZeroU16>,
    completion: Completion,
    /// Wakes the relays: of this process at once, of others through PostgreSQL.
    wake: Arc<Wake>,
}

impl Outbox {
    /// The outbox of the database `db`, over the default tables with
    /// [`DEFAULT_SHARDS`] shards: what a service that stores events should use. Each
    /// store wakes the relays of this process at once and, on PostgreSQL, the relays
    /// of every other process too, by a `NOTIFY` sent through `db` after the store
    /// (see [`with_wake_connection`](Self::with_wake_connection)), so events are
    /// published milliseconds after their commit.
    pub fn on(db: &DatabaseConnection) -> Self {
        Self::new().with_wake_connection(db)
    }

    /// The outbox of the database `db` as [`Outbox::on`] makes it, with the shard count
    /// and the completion mode of the `OUTBOX_SHARDS` and `OUTBOX_COMPLETION` variables
    /// when they are set: give the writers and the relays of one outbox table the same
    /// variables.
    ///
    /// | setting | default | variable |
    /// |---|---|---|
    /// | [`with_shards`](Self::with_shards) | 16 | `OUTBOX_SHARDS` |
    /// | [`with_completion`](Self::with_completion) | mark | `OUTBOX_COMPLETION` (`mark`, `delete` or `archive`) |
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the variable and its value when a
    /// value is invalid.
    pub fn from_env(db: &DatabaseConnection) -> Result<Self> {
        Self::from_lookup(db, |name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(
        db: &DatabaseConnection,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let (shards, completion) = crate::config::outbox_settings(lookup)?;
        let outbox = Self::on(db).with_completion(completion.unwrap_or_default());
        Ok(match shards {
            Some(shards) => outbox.with_shards(shards),
            None => outbox,
        })
    }

    /// An outbox over the default tables with [`DEFAULT_SHARDS`] shards that wakes
    /// only the relays of this process. Relays in other processes find its events by
    /// polling, up to the relay's `interval` later: prefer [`Outbox::on`] wherever a
    /// connection is at hand.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `tables` instead of the default table names. Call it before the outbox
    /// is cloned or given to a relay.
    pub fn with_tables(mut self, tables: Tables) -> Self {
        self.tables = tables;
        // Wake-ups go to a channel named after the outbox table: one set up for the
        // default tables (by `Outbox::on`) must follow the new ones.
        if let Some(db) = self.wake.remote_connection() {
            self.wake = Arc::default();
            self.wake.ring_through(&db, wake::channel(&self.tables));
        }
        self
    }

    /// Spreads events over `shards` shards. Relays lease shards, so this bounds how
    /// many relay instances can share the work. Every writer and relay of one outbox
    /// table must use the same number.
    pub fn with_shards(mut self, shards: NonZeroU16) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Completes published events by `completion` (the default is
    /// [`Completion::Mark`]): what the relay does with a row once the broker has its
    /// event, and what [`mark_events_as_published`](Self::mark_events_as_published)
    /// does. Every writer, relay and tool of one outbox table should agree.
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = completion;
        self
    }

    /// What becomes of a published event's row.
    pub fn completion(&self) -> Completion {
        self.completion
    }

    /// The table names.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The shard of events with partition key `key`.
    pub(crate) fn shard_of(&self, key: &str) -> i32 {
        shard_of(key_hash(key), self.shards())
    }

    /// The number of shards.
    pub fn shards(&self) -> u16 {
        self.shards.unwrap_or(DEFAULT_SHARDS).get()
    }

    /// Commits `txn` and wakes the relays for the shards it stored to, so its events
    /// are published without waiting for the relays' next poll. Like `txn.commit()`
    /// followed by [`notify`](Self::notify), but it wakes only the relays (and
    /// shards) with new events.
    ///
    /// # Errors
    /// The database's; the events are then not stored.
    pub async fn commit(&self, txn: DatabaseTransaction) -> Result<()> {
        txn.commit().await?;
        self.wake.committed();
        Ok(())
    }

    /// Wakes the relays: this process's (one built with a clone of this outbox) and,
    /// when cross-process wake-ups are on (see
    /// [`with_wake_connection`](Self::with_wake_connection)), every relay of the
    /// table. Storing an event does this too, but before the transaction commits; the
    /// relay then polls quickly for a while, so calling this after the commit only
    /// saves milliseconds.
    pub fn notify(&self) {
        self.wake.ring_all();
    }

    /// Wakes the relays of **other processes** too when this outbox stores events,
    /// by a PostgreSQL `NOTIFY` on `db` (a pool of the writer's: a connection through
    /// PgBouncer in transaction mode is fine). The notification is sent by a task of
    /// its own, after the store and outside the caller's transaction, so it never
    /// slows the transaction down; bursts are coalesced into one notification every
    /// 2 ms at most. Relays listen for it (see `RelayConfig::listen`).
    ///
    /// A relay built with a clone of this outbox
    /// ([`Relay::with_outbox`](crate::Relay::with_outbox)) sets this up with
    /// its own connection; call it in processes that store events and run no relay.
    /// Ignored on other databases than PostgreSQL, and once set.
    pub fn with_wake_connection(self, db: &DatabaseConnection) -> Self {
        self.wake.ring_through(db, wake::channel(&self.tables));
        self
    }

    /// The wake-up signals, for the relay.
    pub(crate) fn wake(&self) -> &Wake {
        &self.wake
    }
}
