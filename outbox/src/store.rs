//! [`Outbox`]: storing events in the caller's transaction.

use std::collections::BTreeSet;
use std::future::{Future, IntoFuture};
use std::num::NonZeroU16;
use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionSession, TransactionTrait,
};
use uuid::Uuid;

use crate::completion::Completion;
use crate::envelope::Envelope;
use crate::error::Result;
use crate::event::OutboxEvent;
use crate::key::{key_hash, lock_id, shard_of};
use crate::sql::{Dialect, EventRow};
use crate::tables::Tables;
use crate::wake::{self, Wake};

/// How many keys one locking statement takes, within PostgreSQL's bind parameter limit.
const MAX_KEYS_PER_LOCK: usize = 30_000;

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

    /// Stores `event` for `topic` on `conn`: normally the caller's own
    /// `DatabaseTransaction`, so the event exists if and only if the transaction
    /// commits. Options are set on the returned [`Store`]; `.await` it to write.
    /// It resolves to the event's id.
    #[doc(alias = "StoreEvent")]
    pub fn store<'a, C, E>(
        &'a self,
        conn: &'a C,
        event: &E,
        topic: impl Into<String>,
    ) -> Store<'a, C>
    where
        C: ConnectionTrait,
        E: OutboxEvent + ?Sized,
    {
        Store {
            outbox: self,
            conn,
            envelope: Envelope::new(event, topic),
        }
    }

    /// Stores several events in one INSERT statement. Every envelope is checked
    /// first: if one is invalid, nothing is written. Returns the ids in the order
    /// given.
    ///
    /// Beyond the backend's limit on bind parameters (4,096 events on PostgreSQL,
    /// 2,048 on SQLite) the batch takes several statements, run in a transaction of
    /// their own (a savepoint when `conn` is a transaction), so it stays atomic on a
    /// bare connection; on PostgreSQL all its keys are locked first, in one global
    /// order, so two large batches never deadlock.
    ///
    /// # Errors
    /// The first invalid envelope's error, or the database's. When a statement of a
    /// multi-statement batch fails, the batch is rolled back (to its savepoint inside
    /// the caller's transaction, which stays usable).
    pub async fn store_batch<C>(
        &self,
        conn: &C,
        envelopes: impl IntoIterator<Item = Envelope>,
    ) -> Result<Vec<Uuid>>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let envelopes: Vec<Envelope> = envelopes.into_iter().collect();
        for envelope in &envelopes {
            envelope.validate()?;
        }
        let dialect = Dialect::of(conn.get_database_backend())?;
        let ids = envelopes.iter().map(Envelope::id).collect();
        let shards = if envelopes.len() <= dialect.max_rows_per_insert() {
            self.insert(conn, dialect, envelopes, Locks::Take).await?
        } else {
            let txn = conn.begin().await?;
            match self.insert_in_chunks(&txn, dialect, envelopes).await {
                Ok(shards) => {
                    txn.commit().await?;
                    shards
                }
                Err(error) => {
                    txn.rollback().await?;
                    return Err(error);
                }
            }
        };
        self.wake.stored(shards);
        Ok(ids)
    }

    /// Locks every key of `envelopes` in one order, then inserts them chunk by chunk;
    /// returns the shards written to.
    async fn insert_in_chunks<T: ConnectionTrait>(
        &self,
        txn: &T,
        dialect: Dialect,
        envelopes: Vec<Envelope>,
    ) -> Result<BTreeSet<i32>> {
        let lock_ids: Vec<i32> = envelopes
            .iter()
            .map(|envelope| lock_id(key_hash(envelope.key())))
            .collect::<BTreeSet<i32>>()
            .into_iter()
            .collect();
        for keys in lock_ids.chunks(MAX_KEYS_PER_LOCK) {
            if let Some(statement) = dialect.lock_keys(&self.tables, keys) {
                txn.execute_raw(statement).await?;
            }
        }
        let mut envelopes = envelopes.into_iter().peekable();
        let mut shards = BTreeSet::new();
        while envelopes.peek().is_some() {
            let chunk: Vec<Envelope> = envelopes
                .by_ref()
                .take(dialect.max_rows_per_insert())
                .collect();
            shards.extend(self.insert(txn, dialect, chunk, Locks::Held).await?);
        }
        Ok(shards)
    }

    /// Inserts `envelopes` in one statement; returns the shards written to.
    async fn insert<C: ConnectionTrait>(
        &self,
        conn: &C,
        dialect: Dialect,
        envelopes: Vec<Envelope>,
        locks: Locks,
    ) -> Result<BTreeSet<i32>> {
        let now = Utc::now();
        let mut lock_ids = BTreeSet::new();
        let mut shards = BTreeSet::new();
        let rows: Vec<EventRow> = envelopes
            .into_iter()
            .map(|envelope| {
                let hash = key_hash(envelope.key());
                lock_ids.insert(lock_id(hash));
                let shard = shard_of(hash, self.shards());
                shards.insert(shard);
                EventRow::new(envelope, shard, now)
            })
            .collect();
        let lock_ids: Vec<i32> = match locks {
            Locks::Take => lock_ids.into_iter().collect(),
            Locks::Held => Vec::new(),
        };
        if let Some(statement) = dialect.insert_events(&self.tables, &lock_ids, rows) {
            conn.execute_raw(statement).await?;
        }
        Ok(shards)
    }
}

/// Whether an insert takes its keys' locks itself or runs where they are held already.
#[derive(Debug, Clone, Copy)]
enum Locks {
    Take,
    Held,
}

/// A pending store of one event: set options, then `.await` it.
///
/// Created by [`Outbox::store`]. Nothing is written until it is awaited, and nothing
/// at all when the event is invalid.
#[must_use = "a Store writes nothing until it is awaited"]
#[derive(Debug)]
pub struct Store<'a, C> {
    outbox: &'a Outbox,
    conn: &'a C,
    envelope: Result<Envelope>,
}

impl<C> Store<'_, C> {
    /// Orders and partitions the event by `key` instead of its aggregate id.
    pub fn partition_key(mut self, key: impl ToString) -> Self {
        self.envelope = self.envelope.map(|e| e.partition_key(key));
        self
    }

    /// Records the user on whose behalf the event happened.
    pub fn user_id(mut self, user_id: impl ToString) -> Self {
        self.envelope = self.envelope.map(|e| e.user_id(user_id));
        self
    }

    /// Records the trace the event belongs to.
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.envelope = self.envelope.map(|e| e.trace_id(trace_id));
        self
    }

    /// Adds a Kafka header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.envelope = self.envelope.map(|e| e.header(name, value));
        self
    }
}

impl<'a, C: ConnectionTrait> IntoFuture for Store<'a, C> {
    type Output = Result<Uuid>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Uuid>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let envelope = self.envelope?;
            let id = envelope.id;
            envelope.validate()?;
            let dialect = Dialect::of(self.conn.get_database_backend())?;
            let shards = self
                .outbox
                .insert(self.conn, dialect, vec![envelope], Locks::Take)
                .await?;
            self.outbox.wake.stored(shards);
            Ok(id)
        })
    }
}
