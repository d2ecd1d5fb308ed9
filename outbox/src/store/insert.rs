//! Writing events: one through [`Store`], several in one statement (or one
//! transaction of chunks) through [`Outbox::store_batch`].

use std::collections::BTreeSet;

use chrono::Utc;
use sea_orm::{ConnectionTrait, TransactionSession, TransactionTrait};
use uuid::Uuid;

use super::{Outbox, Store};
use crate::envelope::Envelope;
use crate::error::Result;
use crate::event::OutboxEvent;
use crate::key::{key_hash, lock_id, shard_of};
use crate::sql::{Dialect, EventRow};

/// How many keys one locking statement takes, within PostgreSQL's bind parameter limit.
const MAX_KEYS_PER_LOCK: usize = 30_000;

impl Outbox {
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
        let now = Utc::now();
        let (waiting, due): (Vec<Envelope>, Vec<Envelope>) = envelopes
            .into_iter()
            .partition(|envelope| envelope.waits(now));
        let shards = if waiting.is_empty() && due.len() <= dialect.max_rows_per_insert() {
            self.insert(conn, dialect, due, Locks::Take).await?
        } else {
            // Several statements (chunks, or two tables): one transaction (a savepoint
            // in the caller's), so that the batch stays atomic on a bare connection.
            let txn = conn.begin().await?;
            let stored = async {
                let shards = if due.is_empty() {
                    BTreeSet::new()
                } else {
                    self.insert_in_chunks(&txn, dialect, due).await?
                };
                if !waiting.is_empty() {
                    self.schedule(&txn, waiting).await?;
                }
                Ok::<_, crate::error::Error>(shards)
            }
            .await;
            match stored {
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
    pub(super) async fn insert_in_chunks<T: ConnectionTrait>(
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
    pub(super) async fn insert<C: ConnectionTrait>(
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
pub(super) enum Locks {
    Take,
    Held,
}
