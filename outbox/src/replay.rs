//! Replaying dead letters: [`Outbox::replay`] and its batch forms, each dead letter to
//! its key's shard under the outbox's shard count.

use std::collections::BTreeMap;

use chrono::Utc;
use sea_orm::{ConnectionTrait, FromQueryResult, TransactionSession, TransactionTrait};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::Outbox;

#[derive(Debug, FromQueryResult)]
struct DeadLetterKey {
    seq: i64,
    key: String,
}

/// How many dead letters [`Outbox::replay_all_dead`] replays per transaction.
const REPLAY_STEP: u64 = 1000;

impl Outbox {
    /// Puts a dead-lettered event back in line with its attempts reset. It is
    /// published in `seq` order with the pending events of its key (ahead of those of
    /// its key that failed or were stored while it was dead-lettered); events of its
    /// key published meanwhile stay ahead of it. It goes to its key's shard under this
    /// outbox's shard count, with the key's new events, should the count have changed
    /// since it was stored.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no dead-lettered event has this id, or the database's.
    pub async fn replay<C>(&self, conn: &C, id: Uuid) -> Result<()>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        match self.replay_dead(conn, Some(id), 1).await? {
            0 => Err(Error::NotFound(id)),
            _ => Ok(()),
        }
    }

    /// Puts every dead-lettered event back in line, as [`replay`](Self::replay) does
    /// one, in steps of 1,000 events that each commit; returns how many.
    ///
    /// # Errors
    /// The database's.
    pub async fn replay_all_dead<C>(&self, conn: &C) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let mut replayed = 0;
        loop {
            let step = self.replay_dead_batch(conn, REPLAY_STEP).await?;
            replayed += step;
            if step < REPLAY_STEP {
                return Ok(replayed);
            }
        }
    }

    /// Puts back in line up to `limit` dead-lettered events, oldest first, as
    /// [`replay`](Self::replay) does one, in one transaction, and returns how many:
    /// call it until it returns less than `limit` to replay them all in steps that
    /// each commit (what `outbox replay --all-dead` does, so that an interrupted replay
    /// loses nothing and can go on).
    ///
    /// # Errors
    /// Database errors.
    pub async fn replay_dead_batch<C>(&self, conn: &C, limit: u64) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        self.replay_dead(conn, None, limit.max(1)).await
    }

    /// Replays the dead letter `id`, or the `limit` oldest, each to its key's shard.
    async fn replay_dead<C>(&self, conn: &C, id: Option<Uuid>, limit: u64) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let dialect = self.dialect(conn)?;
        let table = self.tables().outbox();
        let txn = dialect.begin_on(conn).await?;
        let dead = DeadLetterKey::find_by_statement(dialect.dead_letter_keys(table, id, limit))
            .all(&txn)
            .await?;
        let mut by_shard: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for event in dead {
            by_shard
                .entry(self.shard_of(&event.key))
                .or_default()
                .push(event.seq);
        }
        let now = Utc::now();
        let mut replayed = 0;
        for (shard, seqs) in by_shard {
            for seqs in seqs.chunks(1000) {
                let statement = dialect.replay(table, seqs, shard, now);
                replayed += txn.execute_raw(statement).await?.rows_affected();
            }
        }
        txn.commit().await?;
        if replayed > 0 {
            self.notify();
        }
        Ok(replayed)
    }
}
