//! One batch of one shard: claim, publish, write back behind the lease's fence.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;

use chrono::Utc;
use futures_util::FutureExt as _;
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult};
use tracing::{Instrument, debug, error, info_span, warn};
use uuid::Uuid;

use super::Inner;
use super::unannounced::Lateness;
use crate::error::Result;
use crate::publisher::{PublishError, PublishErrorKind, Publisher, publish_in_key_order};
use crate::retry::failure_update;
use crate::sql::{FailureUpdate, LeaseKey, Published};
use crate::wire::{ClaimedRow, Message};

/// What one pass over the owned shards did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessReport {
    /// Events claimed.
    pub claimed: u64,
    /// Events published.
    pub published: u64,
    /// Events whose attempt failed.
    pub failed: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Of the failed, those that failed because the broker was unavailable.
    pub transient_failures: u64,
    /// Whether some shard returned a full batch (more may be waiting).
    pub full: bool,
}

impl ProcessReport {
    pub(super) fn add(&mut self, other: ProcessReport) {
        self.claimed += other.claimed;
        self.published += other.published;
        self.failed += other.failed;
        self.dead_lettered += other.dead_lettered;
        self.transient_failures += other.transient_failures;
        self.full |= other.full;
    }
}

/// Splits a batch's outcomes into the events to mark published and the failures to
/// record, keeping per-key order: after the first event of a key that did not go
/// through, no later event of that key is marked (a publisher that acknowledged one
/// broke its contract; it is logged and the event goes out again after the earlier
/// one), and only that first failure is recorded, so an event never uses up an
/// attempt for an earlier event of its key.
pub(super) fn sort_outcomes(
    messages: &[Message],
    outcomes: Vec<std::result::Result<(), PublishError>>,
) -> (Vec<&Message>, Vec<(&Message, PublishError)>) {
    let mut published = Vec::new();
    let mut failures = Vec::new();
    let mut stopped: HashSet<&str> = HashSet::new();
    for (message, outcome) in messages.iter().zip(outcomes) {
        let behind = stopped.contains(message.key.as_str());
        match outcome {
            Ok(()) if behind => error!(
                event_id = %message.id,
                key = %message.key,
                "the publisher acknowledged an event after an earlier event of its key failed; \
                 it is not marked published and goes out again after that event"
            ),
            Ok(()) => published.push(message),
            Err(_) if behind => {}
            Err(error) => {
                stopped.insert(&message.key);
                if error.kind() != PublishErrorKind::NotSent {
                    failures.push((message, error));
                }
            }
        }
    }
    (published, failures)
}

/// An event of a batch that did not go through, with what its failure does to it
/// (see `retry.rs`).
pub(super) struct Failed<'a> {
    pub(super) message: &'a Message,
    pub(super) error: &'a PublishError,
    pub(super) update: FailureUpdate<'a>,
}

impl Failed<'_> {
    /// Whether this failure used up the event's last attempt.
    pub(super) fn dead_lettered(&self) -> bool {
        self.update.dead_lettered_at.is_some()
    }
}

/// What processing one shard came to.
pub(super) enum ShardOutcome {
    /// The batch was written back.
    Done {
        report: ProcessReport,
        /// The last event published.
        last: Option<Uuid>,
        /// Its first attempts that waited long to be claimed.
        lateness: Lateness,
    },
    /// The lease was taken by another relay before the write-back; nothing written.
    LeaseLost,
    /// The shard was no longer held when its batch was to start; nothing claimed.
    NotHeld,
    /// The lease's local deadline passed during the batch (the relay was paused, or
    /// its renewals were late): what was claimed was neither published nor written
    /// back, and is claimed again once a lease round renews the shard.
    Expired,
}

impl<P: Publisher> Inner<P> {
    /// Claims, publishes and writes back one batch of `shard`.
    pub(super) async fn process_shard(
        &self,
        shard: i32,
        token: i64,
        batch_size: usize,
    ) -> Result<ShardOutcome> {
        // The lease keeper may have given the shard up (or found it lost) since the
        // pass began: claim nothing then.
        let Some(_busy) = self.leases.start_batch(shard, token) else {
            return Ok(ShardOutcome::NotHeld);
        };
        self.publish_shard(shard, token, batch_size).await
    }

    /// Events a claim met behind an earlier event of their key: while the key is
    /// failing, parks them with the rest of their key (once, so later claims pass none
    /// of them); when it is not, the earlier parked events are orphans of a race with
    /// a write-back, and the key's events are unparked to go out in order.
    /// Fenced like a write-back; returns false, writing nothing, when the lease is gone.
    pub(super) async fn settle_behind(
        &self,
        shard: i32,
        token: i64,
        behind: &[ClaimedRow],
    ) -> Result<bool> {
        let dialect = self.dialect()?;
        let table = self.outbox.tables().outbox();
        let mut first: std::collections::BTreeMap<&str, &ClaimedRow> =
            std::collections::BTreeMap::new();
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
        let txn = dialect.begin(&self.db).await?;
        if !self.fence(&txn, shard, token).await? {
            txn.rollback().await?;
            return Ok(false);
        }
        if !orphaned.is_empty() {
            txn.execute_raw(dialect.unpark(table, shard, &orphaned))
                .await?;
        }
        for row in failing {
            txn.execute_raw(dialect.park_behind(table, shard, &row.key, row.seq - 1))
                .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Whether this relay still holds `shard` with `token`, by its local deadline and
    /// then by the lease row, which stays locked until `txn` ends (see
    /// [`Dialect::fence`](crate::sql::Dialect::fence)).
    async fn fence(&self, txn: &DatabaseTransaction, shard: i32, token: i64) -> Result<bool> {
        if !self.leases.valid(shard, token) {
            return Ok(false);
        }
        let lease = LeaseKey {
            service: &self.config.service_name,
            shard,
            owner: &self.relay_id,
        };
        let fence = self.dialect()?.fence(self.outbox.tables(), &lease, token);
        Ok(txn.query_one_raw(fence).await?.is_some())
    }

    /// Claims, publishes and writes back one batch of `shard`, which is marked busy.
    pub(super) async fn publish_shard(
        &self,
        shard: i32,
        token: i64,
        batch_size: usize,
    ) -> Result<ShardOutcome> {
        let span = info_span!(
            "outbox.batch",
            service = %self.config.service_name,
            relay = %self.relay_id,
            shard,
            batch_size = tracing::field::Empty,
            attempt = tracing::field::Empty,
        );
        async {
            let dialect = self.dialect()?;
            let tables = self.outbox.tables();
            let claim = dialect.claim(tables.outbox(), shard, self.clock.now(), batch_size);
            let (behind, rows): (Vec<ClaimedRow>, Vec<ClaimedRow>) =
                ClaimedRow::find_by_statement(claim)
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .partition(ClaimedRow::behind);
            if !self.leases.valid(shard, token) {
                return Ok(ShardOutcome::Expired);
            }
            if !self.settle_behind(shard, token, &behind).await? {
                return Ok(ShardOutcome::LeaseLost);
            }
            let span = tracing::Span::current();
            span.record("batch_size", rows.len());
            if rows.is_empty() {
                let report = ProcessReport {
                    full: !behind.is_empty(),
                    ..ProcessReport::default()
                };
                return Ok(ShardOutcome::Done {
                    report,
                    last: None,
                    lateness: Lateness::default(),
                });
            }
            let retried: HashSet<i64> = rows.iter().filter(|r| r.retried).map(|r| r.seq).collect();
            let messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
            let lateness = Lateness::of(&messages, self.clock.now());
            span.record(
                "attempt",
                messages.iter().map(|m| m.attempts).max().unwrap_or(0) + 1,
            );
            // The last moment to find the lease gone before the broker has the batch:
            // a relay paused since its claim must not publish over a new owner.
            if !self.leases.valid(shard, token) {
                return Ok(ShardOutcome::Expired);
            }
            let outcomes = self.publish(&messages).await;
            let acked_at = self.clock.now();

            let (published, failures) = sort_outcomes(&messages, outcomes);
            let updates: Vec<Failed<'_>> = failures
                .iter()
                .map(|(message, error)| Failed {
                    message,
                    error,
                    update: failure_update(
                        message.attempts,
                        error,
                        acked_at,
                        self.config.retries(),
                    ),
                })
                .collect();
            let dead: Vec<&Message> = updates
                .iter()
                .filter(|failed| failed.dead_lettered())
                .map(|failed| failed.message)
                .collect();
            for Failed { message, error, .. } in &updates {
                warn!(event_id = %message.id, key = %message.key, %error, "publish failed");
            }
            self.send_to_dead_letter_topic(&updates).await;

            // Keys whose failed event is through (published or dead-lettered): their
            // parked events go back in line.
            let through: Vec<&str> = published
                .iter()
                .filter(|m| retried.contains(&m.seq))
                .map(|m| m.key.as_str())
                .chain(dead.iter().map(|m| m.key.as_str()))
                .collect();
            let unparked = !through.is_empty();
            if !self.leases.valid(shard, token) {
                return Ok(ShardOutcome::Expired);
            }
            if !self
                .write_back(shard, token, &published, &updates, &through, acked_at)
                .await?
            {
                debug!("lease lost before write-back; the new owner publishes these events again");
                return Ok(ShardOutcome::LeaseLost);
            }

            self.record_metrics(&published, &updates, dead.len(), acked_at);
            let report = ProcessReport {
                claimed: as_u64(messages.len()),
                published: as_u64(published.len()),
                failed: as_u64(updates.len()),
                dead_lettered: as_u64(dead.len()),
                transient_failures: as_u64(
                    updates
                        .iter()
                        .filter(|failed| failed.error.kind() == PublishErrorKind::Transient)
                        .count(),
                ),
                // Unparked events are ready now: go again at once, as after a full batch.
                full: messages.len() >= batch_size || unparked || !behind.is_empty(),
            };
            Ok(ShardOutcome::Done {
                report,
                last: published.last().map(|m| m.id),
                lateness,
            })
        }
        .instrument(span)
        .await
    }

    /// Hands `messages` to the publisher. A publisher that panics fails only the
    /// event it panicked on: the batch goes again one message at a time (in key order,
    /// as after a refused record batch), and a message whose own publish panics is a
    /// failed attempt of that event, dead-lettered after its attempts like any other.
    /// Messages sent before the panic may go out twice, never out of order.
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

    /// Writes a batch's outcome back, only while this relay still holds `shard` with
    /// `token` (the fence); returns whether it did. Published events are completed by
    /// the outbox's [`Completion`](crate::Completion) mode. A batch that published
    /// everything and unparks nothing, the steady state, needs one statement (two in a
    /// transaction when archiving on SQLite); any other, one transaction behind the
    /// fence.
    pub(super) async fn write_back(
        &self,
        shard: i32,
        token: i64,
        published: &[&Message],
        updates: &[Failed<'_>],
        through: &[&str],
        acked_at: chrono::DateTime<Utc>,
    ) -> Result<bool> {
        let dialect = self.dialect()?;
        let tables = self.outbox.tables();
        let lease = LeaseKey {
            service: &self.config.service_name,
            shard,
            owner: &self.relay_id,
        };
        let seqs: Vec<i64> = published.iter().map(|m| m.seq).collect();
        let completion = self.outbox.completion();
        if updates.is_empty() && through.is_empty() {
            if seqs.is_empty() {
                return Ok(true);
            }
            let completed = dialect
                .complete(
                    tables,
                    completion,
                    Published::Seqs(&seqs),
                    acked_at,
                    Some((&lease, token)),
                )
                .run(&self.db)
                .await?;
            // Nothing completed: the lease is gone, or another writer (a manual call)
            // completed these events first.
            return Ok(completed > 0
                || self
                    .db
                    .query_one_raw(dialect.fence(tables, &lease, token))
                    .await?
                    .is_some());
        }
        let txn = dialect.begin(&self.db).await?;
        if !self.fence(&txn, shard, token).await? {
            txn.rollback().await?;
            return Ok(false);
        }
        if !seqs.is_empty() {
            dialect
                .complete(tables, completion, Published::Seqs(&seqs), acked_at, None)
                .run(&txn)
                .await?;
        }
        for failed in updates {
            let message = failed.message;
            txn.execute_raw(dialect.record_failure(tables.outbox(), message.id, &failed.update))
                .await?;
            if !failed.dead_lettered() {
                // The key waits: its later events leave the claim index meanwhile.
                txn.execute_raw(dialect.park_behind(
                    tables.outbox(),
                    shard,
                    &message.key,
                    message.seq,
                ))
                .await?;
            }
        }
        if !through.is_empty() {
            txn.execute_raw(dialect.unpark(tables.outbox(), shard, through))
                .await?;
        }
        txn.commit().await?;
        Ok(true)
    }
}

/// A count of things in memory, as the relay's figures keep counts.
pub(super) fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
