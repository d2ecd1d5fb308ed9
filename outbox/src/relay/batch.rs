//! [`Batcher`]: one batch of one shard, in four steps: claim, publish, judge, write
//! back, each behind the shard's lease (its local deadline, and in the database its
//! fencing token).

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult};
use tracing::{Instrument, debug, error, info_span, warn};

use super::dead_letter;
use super::keeper::Keeper;
use super::metrics;
use super::outcome::{Judged, ProcessReport, ShardOutcome};
use super::setup::Setup;
use super::unannounced::Lateness;
use crate::error::Result;
use crate::publisher::{PublishError, Publisher, publish_in_key_order};
use crate::sql::Published;
use crate::wire::{ClaimedRow, Message};

/// A shard held by a lease token: what every step of a batch is fenced by.
#[derive(Debug, Clone, Copy)]
struct Lease {
    shard: i32,
    token: i64,
}

/// What a claim found.
enum Claim {
    /// Events to publish, in `seq` order.
    Events {
        messages: Vec<Message>,
        /// Those claimed as retries of a failed attempt (by `seq`).
        retried: HashSet<i64>,
        /// Whether events were met behind an earlier event of their key.
        behind: bool,
    },
    /// The batch ends here.
    Ended(ShardOutcome),
}

/// Claims, publishes and writes back batches: the publisher, and what it needs of the
/// relay's setup and lease keeper.
#[derive(Debug)]
pub(super) struct Batcher<P> {
    setup: Arc<Setup>,
    keeper: Arc<Keeper>,
    publisher: P,
}

impl<P: Publisher> Batcher<P> {
    pub(super) fn new(setup: Arc<Setup>, keeper: Arc<Keeper>, publisher: P) -> Self {
        Batcher {
            setup,
            keeper,
            publisher,
        }
    }

    /// The publisher, for health checks.
    pub(super) fn publisher(&self) -> &P {
        &self.publisher
    }

    /// Gives the publisher back (the relay is rebuilt before it runs).
    pub(super) fn into_publisher(self) -> P {
        self.publisher
    }

    /// Claims, publishes, judges and writes back one batch of `shard`, held with
    /// `token`.
    pub(super) async fn process_shard(
        &self,
        shard: i32,
        token: i64,
        batch_size: usize,
    ) -> Result<ShardOutcome> {
        // The lease keeper may have given the shard up (or found it lost) since the
        // pass began: claim nothing then.
        let Some(_busy) = self.keeper.leases.start_batch(shard, token) else {
            return Ok(ShardOutcome::NotHeld);
        };
        let span = info_span!(
            "outbox.batch",
            service = %self.setup.service(),
            relay = %self.setup.relay_id,
            shard,
            batch_size = tracing::field::Empty,
            attempt = tracing::field::Empty,
        );
        self.batch(Lease { shard, token }, batch_size)
            .instrument(span)
            .await
    }

    async fn batch(&self, lease: Lease, batch_size: usize) -> Result<ShardOutcome> {
        let (messages, retried, behind) = match self.claim(lease, batch_size).await? {
            Claim::Events {
                messages,
                retried,
                behind,
            } => (messages, retried, behind),
            Claim::Ended(outcome) => return Ok(outcome),
        };
        let lateness = Lateness::of(&messages, self.keeper.clock.now());
        // The last moment to find the lease gone before the broker has the batch:
        // a relay paused since its claim must not publish over a new owner.
        if !self.holds(lease) {
            return Ok(ShardOutcome::Expired);
        }
        let outcomes = self.publish(&messages).await;
        let acked_at = self.keeper.clock.now();
        let judged = Judged::of(
            &messages,
            &outcomes,
            &retried,
            acked_at,
            self.setup.config.retries(),
        );
        for failure in &judged.failed {
            warn!(event_id = %failure.message.id, key = %failure.message.key, error = %failure.error, "publish failed");
        }
        if let Some(topic) = &self.setup.config.dead_letter_topic {
            dead_letter::send(&self.publisher, topic, &judged.failed).await;
        }
        if !self.holds(lease) {
            return Ok(ShardOutcome::Expired);
        }
        if !self.write_back(lease, &judged, acked_at).await? {
            debug!("lease lost before write-back; the new owner publishes these events again");
            return Ok(ShardOutcome::LeaseLost);
        }
        metrics::record_batch(&self.setup, &judged.published, &judged.failed, acked_at);
        Ok(ShardOutcome::Done {
            report: judged.report(messages.len(), batch_size, behind),
            last: judged.published.last().map(|m| m.id),
            lateness,
        })
    }

    /// Whether this relay still holds `lease` by its local deadline.
    fn holds(&self, lease: Lease) -> bool {
        self.keeper.leases.valid(lease.shard, lease.token)
    }

    /// Step 1: claims up to `batch_size` events of the shard, and settles the events
    /// met behind an earlier event of their key.
    async fn claim(&self, lease: Lease, batch_size: usize) -> Result<Claim> {
        let setup = &*self.setup;
        let claim = setup.dialect.claim(
            setup.tables().outbox(),
            lease.shard,
            self.keeper.clock.now(),
            batch_size,
        );
        let (behind, rows): (Vec<ClaimedRow>, Vec<ClaimedRow>) =
            ClaimedRow::find_by_statement(claim)
                .all(&setup.db)
                .await?
                .into_iter()
                .partition(ClaimedRow::behind);
        if !self.holds(lease) {
            return Ok(Claim::Ended(ShardOutcome::Expired));
        }
        if !self.settle_behind(lease, &behind).await? {
            return Ok(Claim::Ended(ShardOutcome::LeaseLost));
        }
        let span = tracing::Span::current();
        span.record("batch_size", rows.len());
        if rows.is_empty() {
            let report = ProcessReport {
                full: !behind.is_empty(),
                ..ProcessReport::default()
            };
            return Ok(Claim::Ended(ShardOutcome::Done {
                report,
                last: None,
                lateness: Lateness::default(),
            }));
        }
        let retried: HashSet<i64> = rows.iter().filter(|r| r.retried).map(|r| r.seq).collect();
        let encodings = &self.setup.encodings;
        let messages: Vec<Message> = rows
            .into_iter()
            .map(|row| {
                let mut message = Message::from(row);
                message.encoding = encodings.of(&message.topic).clone();
                message
            })
            .collect();
        span.record(
            "attempt",
            messages.iter().map(|m| m.attempts).max().unwrap_or(0) + 1,
        );
        Ok(Claim::Events {
            messages,
            retried,
            behind: !behind.is_empty(),
        })
    }

    /// Events a claim met behind an earlier event of their key: while the key is
    /// failing, parks them with the rest of their key (once, so later claims pass none
    /// of them); when it is not, the earlier parked events are orphans of a race with
    /// a write-back, and the key's events are unparked to go out in order.
    /// Fenced like a write-back; returns false, writing nothing, when the lease is gone.
    async fn settle_behind(&self, lease: Lease, behind: &[ClaimedRow]) -> Result<bool> {
        let setup = &*self.setup;
        let table = setup.tables().outbox();
        let mut first: BTreeMap<&str, &ClaimedRow> = BTreeMap::new();
        for row in behind {
            first.entry(row.key.as_str()).or_insert(row);
        }
        let orphaned: Vec<&str> = first
            .values()
            .filter(|row| !row.failing)
            .map(|row| row.key.as_str())
            .collect();
        let failing: Vec<&&ClaimedRow> = first.values().filter(|row| row.failing).collect();
        if orphaned.is_empty() && failing.is_empty() {
            return Ok(true);
        }
        let txn = setup.dialect.begin(&setup.db).await?;
        if !self.fence(&txn, lease).await? {
            txn.rollback().await?;
            return Ok(false);
        }
        if !orphaned.is_empty() {
            txn.execute_raw(setup.dialect.unpark(table, lease.shard, &orphaned))
                .await?;
        }
        for row in failing {
            txn.execute_raw(
                setup
                    .dialect
                    .park_behind(table, lease.shard, &row.key, row.seq - 1),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Whether this relay still holds `lease`, by its local deadline and then by the
    /// lease row, which stays locked until `txn` ends (see
    /// [`Dialect::fence`](crate::sql::Dialect::fence)).
    async fn fence(&self, txn: &DatabaseTransaction, lease: Lease) -> Result<bool> {
        if !self.holds(lease) {
            return Ok(false);
        }
        let setup = &*self.setup;
        let fence = setup
            .dialect
            .fence(setup.tables(), &setup.lease_key(lease.shard), lease.token);
        Ok(txn.query_one_raw(fence).await?.is_some())
    }

    /// Step 2: hands `messages` to the publisher. A publisher that panics fails only
    /// the event it panicked on: the batch goes again one message at a time (in key
    /// order, as after a refused record batch), and a message whose own publish panics
    /// is a failed attempt of that event, dead-lettered after its attempts like any
    /// other. Messages sent before the panic may go out twice, never out of order.
    async fn publish(&self, messages: &[Message]) -> Vec<std::result::Result<(), PublishError>> {
        let panicked = |panic: Box<dyn std::any::Any + Send>| {
            PublishError::permanent(format!(
                "the publisher panicked: {}",
                crate::panic::message(&*panic)
            ))
        };
        let panic = match AssertUnwindSafe(self.publisher.publish(messages))
            .catch_unwind()
            .await
        {
            Ok(outcomes) => return outcomes,
            Err(panic) => panic,
        };
        if let [message] = messages {
            error!(event_id = %message.id, key = %message.key, "the publisher panicked on this event");
            return vec![Err(panicked(panic))];
        }
        error!(
            panic = %crate::panic::message(&*panic),
            "the publisher panicked on a batch; sending its events one at a time"
        );
        publish_in_key_order(messages, |message| async move {
            match AssertUnwindSafe(self.publisher.publish(std::slice::from_ref(message)))
                .catch_unwind()
                .await
            {
                Ok(mut outcome) => outcome.pop().unwrap_or_else(|| Err(PublishError::not_sent())),
                Err(panic) => {
                    error!(event_id = %message.id, key = %message.key, "the publisher panicked on this event");
                    Err(panicked(panic))
                }
            }
        })
        .await
    }

    /// Step 4: writes a batch's outcome back, only while this relay still holds
    /// `lease` (the fence); returns whether it did. Published events are completed by
    /// the outbox's [`Completion`](crate::Completion) mode; a failed event's key waits
    /// (its later events leave the claim index), and keys whose failed event is through
    /// go back in line. A batch that published everything and unparks nothing, the
    /// steady state, needs one statement (two in a transaction when archiving on
    /// SQLite); any other, one transaction behind the fence.
    async fn write_back(
        &self,
        lease: Lease,
        judged: &Judged<'_>,
        acked_at: DateTime<Utc>,
    ) -> Result<bool> {
        let setup = &*self.setup;
        let (dialect, tables) = (setup.dialect, setup.tables());
        let seqs: Vec<i64> = judged.published.iter().map(|m| m.seq).collect();
        let completion = setup.outbox.completion();
        let (failed, through) = (&judged.failed, &judged.through);
        if failed.is_empty() && through.is_empty() {
            if seqs.is_empty() {
                return Ok(true);
            }
            let key = setup.lease_key(lease.shard);
            let completed = dialect
                .complete(
                    tables,
                    completion,
                    Published::Seqs(&seqs),
                    acked_at,
                    Some((&key, lease.token)),
                )
                .run(&setup.db)
                .await?;
            // Nothing completed: the lease is gone, or another writer (a manual call)
            // completed these events first.
            return Ok(completed > 0
                || setup
                    .db
                    .query_one_raw(dialect.fence(tables, &key, lease.token))
                    .await?
                    .is_some());
        }
        let txn = dialect.begin(&setup.db).await?;
        if !self.fence(&txn, lease).await? {
            txn.rollback().await?;
            return Ok(false);
        }
        if !seqs.is_empty() {
            dialect
                .complete(tables, completion, Published::Seqs(&seqs), acked_at, None)
                .run(&txn)
                .await?;
        }
        for failure in failed {
            let message = failure.message;
            txn.execute_raw(dialect.record_failure(tables.outbox(), message.id, &failure.update))
                .await?;
            if !failure.dead_lettered() {
                txn.execute_raw(dialect.park_behind(
                    tables.outbox(),
                    lease.shard,
                    &message.key,
                    message.seq,
                ))
                .await?;
            }
        }
        if !through.is_empty() {
            txn.execute_raw(dialect.unpark(tables.outbox(), lease.shard, through))
                .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Of `owned`, the shards the claim index says have work: one query.
    pub(super) async fn shards_with_work(&self, owned: &[i32]) -> Result<Vec<i32>> {
        let setup = &*self.setup;
        let statement =
            setup
                .dialect
                .shards_with_work(setup.tables().outbox(), owned, self.keeper.clock.now());
        let rows = setup.db.query_all_raw(statement).await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<i32>("", "shard"))
            .collect::<std::result::Result<_, _>>()?)
    }
}
