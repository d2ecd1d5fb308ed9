//! [`Processor`]: the relay that publishes stored events.
//!
//! Each relay instance leases shards of the service's events (see `lease.rs`) and,
//! per shard, claims the oldest publishable events, publishes them, and writes the
//! outcome back fenced by its lease (one statement when everything was published, one
//! transaction otherwise). No cursor is kept: a
//! transaction that commits late is simply found pending later (G3), and within a
//! shard events go out in `seq` order, which for one key is commit order (G4).
//! A shard has at most one batch in flight; `run.rs` starts a batch for each shard
//! that has work as soon as one of the `concurrency` slots is free (`schedule.rs`).

mod clock;
mod lease;
#[cfg(feature = "postgres")]
mod listen;
mod run;
mod schedule;
mod state;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, TransactionTrait};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

pub use state::Stats;

use self::clock::Clock;
use self::lease::Leases;
use self::state::{Concern, State};
use crate::config::ProcessorConfig;
use crate::error::{Error, Result};
use crate::message::{ClaimedRow, Message};
use crate::publisher::{PublishError, PublishErrorKind, Publisher};
use crate::repository::failure_update;
use crate::sql::{Dialect, LeaseKey};
use crate::store::Outbox;
use crate::wake::Doorbell;

/// Metric names (through the `metrics` facade), each labelled with `service`.
pub mod metric_names {
    /// Counter: events published.
    pub const PUBLISHED: &str = "outbox_published_total";
    /// Counter: failed publish attempts (label `kind`: `transient` or `permanent`).
    pub const FAILED: &str = "outbox_publish_failures_total";
    /// Counter: events dead-lettered.
    pub const DEAD_LETTERED: &str = "outbox_dead_lettered_total";
    /// Gauge: events pending.
    pub const PENDING: &str = "outbox_pending";
    /// Gauge: events dead-lettered and not replayed.
    pub const DEAD_LETTERS: &str = "outbox_dead_letters";
    /// Gauge: age of the oldest pending event, in seconds.
    pub const OLDEST_PENDING_AGE: &str = "outbox_oldest_pending_age_seconds";
    /// Gauge: pending events in shards this relay's shard count does not cover (a
    /// writer with more shards than the relays); anything above zero is a
    /// misconfiguration.
    pub const PENDING_OUTSIDE_SHARDS: &str = "outbox_pending_outside_shards";
    /// Histogram: time from store to broker acknowledgement, in seconds.
    pub const PUBLISH_LATENCY: &str = "outbox_publish_latency_seconds";
    /// Gauge: 1 while this relay's health check passes, 0 while it fails (updated at
    /// every probe of the broker and the database).
    pub const HEALTHY: &str = "outbox_relay_healthy";

    /// Gives every metric its help text and unit in the installed `metrics` recorder
    /// (Prometheus shows them as `# HELP`). `outbox::http::install_prometheus` calls
    /// it; call it after installing a recorder of your own.
    pub fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(PUBLISHED, Unit::Count, "Events published to the broker.");
        describe_counter!(
            FAILED,
            Unit::Count,
            "Failed publish attempts, by kind (transient or permanent)."
        );
        describe_counter!(DEAD_LETTERED, Unit::Count, "Events dead-lettered.");
        describe_gauge!(PENDING, Unit::Count, "Events waiting to be published.");
        describe_gauge!(
            DEAD_LETTERS,
            Unit::Count,
            "Dead-lettered events not replayed."
        );
        describe_gauge!(
            OLDEST_PENDING_AGE,
            Unit::Seconds,
            "Age of the oldest pending event."
        );
        describe_gauge!(
            PENDING_OUTSIDE_SHARDS,
            Unit::Count,
            "Pending events in shards the relay's shard count does not cover (a misconfiguration)."
        );
        describe_histogram!(
            PUBLISH_LATENCY,
            Unit::Seconds,
            "Time from store to broker acknowledgement."
        );
        describe_gauge!(
            HEALTHY,
            "1 while the relay's health check passes, 0 while it fails."
        );
    }
}

/// The header a dead-lettered event carries on the dead-letter topic.
pub const DEAD_LETTER_ERROR_HEADER: &str = "dead_letter_error";

/// Rows deleted per cleanup statement.
const CLEANUP_BATCH: u64 = 1000;

/// The relay: publishes the events of one service's outbox.
///
/// ```no_run
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), outbox::Error> {
/// use outbox::{KafkaPublisher, Outbox, Processor, ProcessorConfig};
///
/// let outbox = Outbox::new(); // the same one the application stores with
/// let relay = Processor::new(ProcessorConfig::from_env()?, db, KafkaPublisher::new("127.0.0.1:9092")?)?
///     .with_outbox(outbox.clone())
///     .spawn();
/// relay.healthcheck()?;
/// // ...
/// relay.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Processor<P> {
    inner: Inner<P>,
}

#[derive(Debug)]
struct Inner<P> {
    config: ProcessorConfig,
    db: DatabaseConnection,
    publisher: P,
    outbox: Outbox,
    relay_id: String,
    state: Arc<State>,
    leases: Leases,
    /// Asks the lease keeper for a round now.
    renew_now: Notify,
    /// Tells the main loop that a lease round took shards.
    leased: Notify,
    /// Tells the main loop which shards events were stored to, by this process or
    /// (through `listen.rs`) another.
    doorbell: Arc<Doorbell>,
    clock: Clock,
    /// Since when every batch has failed as an outage with nothing delivered.
    stalled_since: std::sync::Mutex<Option<Instant>>,
}

/// What one pass over the owned shards did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessReport {
    /// Events claimed.
    pub claimed: usize,
    /// Events published.
    pub published: usize,
    /// Events whose attempt failed.
    pub failed: usize,
    /// Events dead-lettered.
    pub dead_lettered: usize,
    /// Of the failed, those that failed because the broker was unavailable.
    pub transient_failures: usize,
    /// Whether some shard returned a full batch (more may be waiting).
    pub full: bool,
}

impl ProcessReport {
    fn add(&mut self, other: ProcessReport) {
        self.claimed += other.claimed;
        self.published += other.published;
        self.failed += other.failed;
        self.dead_lettered += other.dead_lettered;
        self.transient_failures += other.transient_failures;
        self.full |= other.full;
    }
}

impl<P: Publisher> Processor<P> {
    /// A relay over `db` that publishes through `publisher`.
    ///
    /// # Errors
    /// [`Error::Config`] when `config` is invalid (see [`ProcessorConfig::validate`]),
    /// [`Error::UnsupportedBackend`] when `db` is neither PostgreSQL nor SQLite.
    pub fn new(config: ProcessorConfig, db: DatabaseConnection, publisher: P) -> Result<Self> {
        config.validate()?;
        Dialect::of(db.get_database_backend())?;
        let relay_id = relay_id(&config.service_name);
        let outbox = Outbox::new().with_shards(config.shards);
        Ok(Self::build(
            config,
            db,
            publisher,
            outbox,
            relay_id,
            chrono::Duration::zero(),
        ))
    }

    fn build(
        config: ProcessorConfig,
        db: DatabaseConnection,
        publisher: P,
        outbox: Outbox,
        relay_id: String,
        skew: chrono::Duration,
    ) -> Self {
        let leases = Leases::new(
            &config.service_name,
            &relay_id,
            outbox.shards(),
            config.lease_ttl,
        );
        let doorbell = outbox.wake().subscribe();
        let state = Arc::new(State::new(
            relay_id.clone(),
            config.health_timeout,
            config.enabled,
        ));
        Processor {
            inner: Inner {
                config,
                db,
                publisher,
                outbox,
                relay_id,
                state,
                leases,
                renew_now: Notify::new(),
                leased: Notify::new(),
                doorbell,
                clock: Clock::new(skew),
                stalled_since: std::sync::Mutex::new(None),
            },
        }
    }

    /// Uses `outbox`'s tables and shard count (instead of the configuration's), and
    /// wakes when it stores an event. Pass a clone of the outbox the application
    /// stores with.
    pub fn with_outbox(self, outbox: Outbox) -> Self {
        let inner = self.inner;
        if outbox.shards() != inner.config.shards.get() {
            warn!(
                configured = inner.config.shards.get(),
                outbox = outbox.shards(),
                "the relay uses the outbox's shard count, not the configuration's"
            );
        }
        let skew = inner.clock.skew();
        let outbox = if inner.config.listen {
            outbox.with_wake_connection(&inner.db)
        } else {
            outbox
        };
        Self::build(
            inner.config,
            inner.db,
            inner.publisher,
            outbox,
            inner.relay_id,
            skew,
        )
    }

    /// Runs this relay as if its host's clock were `skew` ahead (or behind, when
    /// negative). For tests of clock skew only: the relay goes by the database's clock
    /// whatever its host's says.
    #[doc(hidden)]
    pub fn with_clock_skew(self, skew: chrono::Duration) -> Self {
        let inner = self.inner;
        Self::build(
            inner.config,
            inner.db,
            inner.publisher,
            inner.outbox,
            inner.relay_id,
            skew,
        )
    }

    /// This instance's id, as stored in the lease and relay tables.
    pub fn relay_id(&self) -> &str {
        &self.inner.relay_id
    }

    /// One pass by hand (the seed's `ProcessEvents`): takes or renews this relay's
    /// shard leases, then publishes up to `batch_size` events per owned shard.
    ///
    /// # Errors
    /// The database's. Publish failures are recorded on the events, not returned.
    pub async fn process_events(&self, batch_size: usize) -> Result<ProcessReport> {
        self.inner.lease_round().await?;
        self.inner.outbox.unpark_orphans(&self.inner.db).await?;
        self.inner.process_owned(batch_size.max(1)).await
    }

    /// Starts the relay in the background. With `enabled = false` it starts nothing.
    pub fn spawn(self) -> RelayHandle {
        let inner = Arc::new(self.inner);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut tasks = Vec::new();
        if inner.config.enabled {
            // Counters exist from the start, so that `rate()` sees their first events.
            let service = inner.config.service_name.clone();
            metrics::counter!(metric_names::PUBLISHED, "service" => service.clone()).increment(0);
            metrics::counter!(metric_names::DEAD_LETTERED, "service" => service).increment(0);
            tasks.push(tracker.spawn(Arc::clone(&inner).keep_leases(cancel.clone())));
            tasks.push(tracker.spawn(Arc::clone(&inner).run(cancel.clone())));
            tasks.push(tracker.spawn(Arc::clone(&inner).probe(cancel.clone())));
            tasks.push(tracker.spawn(Arc::clone(&inner).housekeeping(cancel.clone())));
            #[cfg(feature = "postgres")]
            if inner.config.listen && inner.db.get_database_backend() == DbBackend::Postgres {
                tasks.push(tracker.spawn(Arc::clone(&inner).listen(cancel.clone())));
            }
            if inner.config.cleanup_enabled {
                tasks.push(tracker.spawn(Arc::clone(&inner).cleanup(cancel.clone())));
            }
        }
        tracker.close();
        RelayHandle {
            state: Arc::clone(&inner.state),
            relay_id: inner.relay_id.clone(),
            shutdown_timeout: inner.config.shutdown_timeout,
            cancel,
            tracker,
            tasks,
        }
    }
}

impl<P: Publisher> Inner<P> {
    fn dialect(&self) -> Result<Dialect> {
        Dialect::of(self.db.get_database_backend())
    }

    /// One lease round; returns whether it took shards.
    async fn lease_round(&self) -> Result<bool> {
        let dialect = self.dialect()?;
        self.clock.sync(&self.db, dialect).await?;
        let round = self
            .leases
            .round(&self.db, dialect, self.outbox.tables(), self.clock.now())
            .await?;
        self.state.owned_shards(round.owned);
        self.state.concern(Concern::OtherService, round.yielded_to.map(|other| {
            format!(
                "relays of service {other:?} publish this outbox table too and started first; \
                 this relay (service {:?}) publishes nothing while they run: give each service its own tables",
                self.config.service_name
            )
        }));
        Ok(round.took)
    }

    /// Renews the leases and the heartbeat every third of the lease time, on a
    /// schedule of its own: however long a batch takes (a slow broker), the shards
    /// stay this relay's while it lives and reaches the database.
    async fn keep_leases(self: Arc<Self>, cancel: CancellationToken) {
        let every = self.config.lease_ttl / 3;
        while !cancel.is_cancelled() {
            let round = if self.stalled() {
                self.stand_aside_or_rejoin().await
            } else {
                self.lease_round().await
            };
            match round {
                Ok(true) => self.leased.notify_one(),
                Ok(false) => {}
                Err(error) => {
                    warn!(relay = %self.relay_id, %error, "lease round failed; retrying");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.renew_now.notified() => {}
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    fn stalled_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.stalled_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether nothing has been delivered for the stall timeout.
    fn stalled(&self) -> bool {
        self.stalled_since()
            .is_some_and(|since| since.elapsed() >= self.config.stall_timeout)
    }

    /// For a stalled relay: rejoins (a normal lease round) when the broker answers
    /// again; otherwise gives up its shards and its heartbeat, so relays that can
    /// deliver take its keys.
    async fn stand_aside_or_rejoin(&self) -> Result<bool> {
        if self.publisher.check().await.is_ok() {
            info!(relay = %self.relay_id, "the broker answers again; rejoining");
            *self.stalled_since() = None;
            self.state.concern(Concern::Stalled, None);
            return self.lease_round().await;
        }
        let dialect = self.dialect()?;
        self.clock.sync(&self.db, dialect).await?;
        if self.leases.count() > 0 {
            warn!(
                relay = %self.relay_id,
                "nothing delivered to the broker for {}; giving up this relay's shards until it answers again",
                humantime::format_duration(self.config.stall_timeout)
            );
        }
        let owned = self
            .leases
            .stand_aside(&self.db, dialect, self.outbox.tables(), self.clock.now())
            .await?;
        self.state.owned_shards(owned);
        self.state.concern(
            Concern::Stalled,
            Some(format!(
                "nothing delivered to the broker for over {}: shards given up until it answers again",
                humantime::format_duration(self.config.stall_timeout)
            )),
        );
        Ok(false)
    }

    /// The loop has ended: the relay says so and gives its shards up.
    async fn stop(&self) {
        self.state.stopped();
        if let Ok(dialect) = self.dialect() {
            let released = self
                .leases
                .release_all(&self.db, dialect, self.outbox.tables(), self.clock.now())
                .await;
            if let Err(error) = released {
                warn!(relay = %self.relay_id, %error, "could not release leases; they expire on their own");
            }
        }
    }

    /// One batch of every owned shard, `concurrency` shards at a time (for
    /// [`Processor::process_events`]).
    async fn process_owned(&self, batch_size: usize) -> Result<ProcessReport> {
        let owned = self.leases.owned();
        let results: Vec<(i32, Result<ShardOutcome>)> = futures_util::stream::iter(owned)
            .map(|(shard, token)| async move {
                (shard, self.process_shard(shard, token, batch_size).await)
            })
            .buffer_unordered(self.config.concurrency)
            .collect()
            .await;
        let mut report = ProcessReport::default();
        let mut first_error = None;
        let mut last_published = None;
        for (shard, result) in results {
            match result {
                Ok(ShardOutcome::Done(shard_report, last)) => {
                    report.add(shard_report);
                    last_published = last.or(last_published);
                }
                Ok(ShardOutcome::LeaseLost) => self.leases.lost(shard),
                Ok(ShardOutcome::NotHeld) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(event) = last_published {
            self.write_offset(event).await?;
        }
        match first_error {
            Some(error) if report.claimed == 0 => Err(error),
            Some(error) => {
                warn!(relay = %self.relay_id, %error, "a shard failed; the others were processed");
                Ok(report)
            }
            None => Ok(report),
        }
    }

    /// Records `event` as the last one the service published (`_outbox_offset`).
    async fn write_offset(&self, event: Uuid) -> Result<()> {
        let statement = self.dialect()?.upsert_offset(
            self.outbox.tables().offset(),
            &self.config.service_name,
            event,
            self.clock.now(),
        );
        self.db.execute_raw(statement).await?;
        Ok(())
    }

    /// Of `owned`, the shards the claim index says have work: one query.
    async fn shards_with_work(&self, owned: &[i32]) -> Result<Vec<i32>> {
        let statement = self.dialect()?.shards_with_work(
            self.outbox.tables().outbox(),
            owned,
            self.clock.now(),
        );
        let rows = self.db.query_all_raw(statement).await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<i32>("", "shard"))
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Claims, publishes and writes back one batch of `shard`.
    async fn process_shard(
        &self,
        shard: i32,
        token: i64,
        batch_size: usize,
    ) -> Result<ShardOutcome> {
        // The lease keeper may have given the shard up (or found it lost) since the
        // pass began: claim nothing then.
        if !self.leases.start_batch(shard, token) {
            return Ok(ShardOutcome::NotHeld);
        }
        let outcome = self.publish_shard(shard, token, batch_size).await;
        self.leases.end_batch(shard);
        outcome
    }

    /// Events a claim met behind an earlier event of their key: while the key is
    /// failing, parks them with the rest of their key (once, so later claims pass none
    /// of them); when it is not, the earlier parked events are orphans of a race with
    /// a write-back, and the key's events are unparked to go out in order.
    async fn settle_behind(&self, shard: i32, behind: &[ClaimedRow]) -> Result<()> {
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
        if !orphaned.is_empty() {
            self.db
                .execute_raw(dialect.unpark(table, shard, &orphaned))
                .await?;
        }
        for row in first.values().filter(|row| row.failing) {
            self.db
                .execute_raw(dialect.park_behind(table, shard, &row.key, row.seq - 1))
                .await?;
        }
        Ok(())
    }

    /// Claims, publishes and writes back one batch of `shard`, which is marked busy.
    async fn publish_shard(
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
            self.settle_behind(shard, &behind).await?;
            let span = tracing::Span::current();
            span.record("batch_size", rows.len());
            if rows.is_empty() {
                let report = ProcessReport {
                    full: !behind.is_empty(),
                    ..ProcessReport::default()
                };
                return Ok(ShardOutcome::Done(report, None));
            }
            let retried: HashSet<i64> = rows.iter().filter(|r| r.retried).map(|r| r.seq).collect();
            let messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
            span.record(
                "attempt",
                messages.iter().map(|m| m.attempts).max().unwrap_or(0) + 1,
            );
            let outcomes = self.publisher.publish(&messages).await;
            let acked_at = self.clock.now();

            let (published, failures) = sort_outcomes(&messages, outcomes);
            let updates: Vec<_> = failures
                .iter()
                .map(|(message, error)| {
                    (
                        *message,
                        error,
                        failure_update(message.attempts, error, acked_at, &self.config),
                    )
                })
                .collect();
            let dead: Vec<&Message> = updates
                .iter()
                .filter(|(_, _, update)| update.dead_lettered_at.is_some())
                .map(|(message, _, _)| *message)
                .collect();
            for (message, error, _) in &updates {
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
            if !self
                .write_back(shard, token, &published, &updates, &through, acked_at)
                .await?
            {
                debug!("lease lost before write-back; the new owner publishes these events again");
                return Ok(ShardOutcome::LeaseLost);
            }

            self.record_metrics(&published, &updates, dead.len(), acked_at);
            let report = ProcessReport {
                claimed: messages.len(),
                published: published.len(),
                failed: updates.len(),
                dead_lettered: dead.len(),
                transient_failures: updates
                    .iter()
                    .filter(|(_, error, _)| error.kind() == PublishErrorKind::Transient)
                    .count(),
                // Unparked events are ready now: go again at once, as after a full batch.
                full: messages.len() >= batch_size || unparked || !behind.is_empty(),
            };
            Ok(ShardOutcome::Done(report, published.last().map(|m| m.id)))
        }
        .instrument(span)
        .await
    }

    /// Writes a batch's outcome back, only while this relay still holds `shard` with
    /// `token` (the fence); returns whether it did. A batch that published everything
    /// and unparks nothing, the steady state, needs one statement; any other, one
    /// transaction behind the fence.
    async fn write_back(
        &self,
        shard: i32,
        token: i64,
        published: &[&Message],
        updates: &[(&Message, &PublishError, crate::sql::FailureUpdate<'_>)],
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
        if updates.is_empty() && through.is_empty() {
            if seqs.is_empty() {
                return Ok(true);
            }
            let marked = self
                .db
                .execute_raw(dialect.mark_published_fenced(tables, &lease, token, &seqs, acked_at))
                .await?
                .rows_affected();
            // Nothing marked: the lease is gone, or another writer (a manual call)
            // marked these events first.
            return Ok(marked > 0
                || self
                    .db
                    .query_one_raw(dialect.fence(tables, &lease, token))
                    .await?
                    .is_some());
        }
        let txn = self.db.begin().await?;
        if txn
            .query_one_raw(dialect.fence(tables, &lease, token))
            .await?
            .is_none()
        {
            txn.rollback().await?;
            return Ok(false);
        }
        if !seqs.is_empty() {
            txn.execute_raw(dialect.mark_published(tables.outbox(), "seq", &seqs, acked_at))
                .await?;
        }
        for (message, _, update) in updates {
            txn.execute_raw(dialect.record_failure(tables.outbox(), message.id, update))
                .await?;
            if update.dead_lettered_at.is_none() {
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

    async fn send_to_dead_letter_topic(
        &self,
        updates: &[(&Message, &PublishError, crate::sql::FailureUpdate<'_>)],
    ) {
        let Some(topic) = &self.config.dead_letter_topic else {
            return;
        };
        let dead: Vec<Message> = updates
            .iter()
            .filter(|(_, _, update)| update.dead_lettered_at.is_some())
            .map(|(message, error, _)| {
                let mut copy = (*message).clone();
                copy.topic = topic.clone();
                copy.extra_headers.push((
                    DEAD_LETTER_ERROR_HEADER.to_owned(),
                    error.message().to_owned(),
                ));
                copy
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        for (message, outcome) in dead.iter().zip(self.publisher.publish(&dead).await) {
            if let Err(error) = outcome {
                error!(event_id = %message.id, %topic, %error, "could not send a dead letter to the dead-letter topic; it stays in the table");
            }
        }
    }

    fn record_metrics(
        &self,
        published: &[&Message],
        updates: &[(&Message, &PublishError, crate::sql::FailureUpdate<'_>)],
        dead: usize,
        acked_at: chrono::DateTime<Utc>,
    ) {
        let service = self.config.service_name.clone();
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        metrics::counter!(metric_names::PUBLISHED, "service" => service.clone())
            .increment(as_u64(published.len()));
        let latency =
            metrics::histogram!(metric_names::PUBLISH_LATENCY, "service" => service.clone());
        for message in published {
            latency.record(
                (acked_at - message.created_at)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
        for (_, error, _) in updates {
            let kind = if error.kind() == PublishErrorKind::Permanent {
                "permanent"
            } else {
                "transient"
            };
            metrics::counter!(metric_names::FAILED, "service" => service.clone(), "kind" => kind)
                .increment(1);
        }
        metrics::counter!(metric_names::DEAD_LETTERED, "service" => service)
            .increment(as_u64(dead));
        self.state
            .count(as_u64(published.len()), as_u64(updates.len()), as_u64(dead));
    }

    async fn refresh_backlog(&self) -> Result<()> {
        let backlog = self.outbox.backlog(&self.db).await?;
        let service = self.config.service_name.clone();
        #[allow(clippy::cast_precision_loss)]
        // gauges are f64; counts this large are not exact anyway
        {
            metrics::gauge!(metric_names::PENDING, "service" => service.clone())
                .set(backlog.pending as f64);
            metrics::gauge!(metric_names::DEAD_LETTERS, "service" => service.clone())
                .set(backlog.dead_lettered as f64);
        }
        let age = backlog
            .oldest_pending_age(self.clock.now())
            .unwrap_or_default();
        metrics::gauge!(metric_names::OLDEST_PENDING_AGE, "service" => service.clone())
            .set(age.as_secs_f64());
        self.state.backlog(backlog);

        // Events a writer put in shards no relay of this count leases would wait forever.
        let outside = self.outbox.pending_outside_shards(&self.db).await?;
        #[allow(clippy::cast_precision_loss)] // as above
        metrics::gauge!(metric_names::PENDING_OUTSIDE_SHARDS, "service" => service)
            .set(outside as f64);
        let problem = (outside > 0).then(|| {
            format!(
                "{outside} pending events are in shards at or above this relay's shard count ({}): \
                 their writers use more shards; give writers and relays the same count (OUTBOX_SHARDS)",
                self.outbox.shards()
            )
        });
        if let Some(problem) = &problem {
            error!(relay = %self.relay_id, "{problem}");
        }
        self.state.concern(Concern::OutsideShards, problem);
        Ok(())
    }

    /// Checks the broker and the database on a timer, for `healthcheck`.
    async fn probe(self: Arc<Self>, cancel: CancellationToken) {
        let every = (self.config.health_timeout / 4)
            .clamp(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            let broker = self
                .publisher
                .check()
                .await
                .map_err(|e| e.message().to_owned());
            let database = self.db.ping().await.map_err(|e| e.to_string());
            self.state.probes(broker, database);
            let healthy = self.state.healthcheck().is_ok();
            metrics::gauge!(metric_names::HEALTHY, "service" => self.config.service_name.clone())
                .set(if healthy { 1.0 } else { 0.0 });
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Deletes published events past their retention, on the configured interval.
    async fn cleanup(self: Arc<Self>, cancel: CancellationToken) {
        let retention =
            Duration::from_secs(u64::from(self.config.cleanup_after_days) * 24 * 60 * 60);
        loop {
            match self
                .outbox
                .cleanup(&self.db, retention, CLEANUP_BATCH)
                .await
            {
                Ok(0) => {}
                Ok(deleted) => debug!(deleted, "cleanup removed published events"),
                Err(error) => warn!(%error, "cleanup failed; it runs again at the next interval"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.config.cleanup_interval) => {}
            }
        }
    }
}

/// Splits a batch's outcomes into the events to mark published and the failures to
/// record, keeping per-key order: after the first event of a key that did not go
/// through, no later event of that key is marked (a publisher that acknowledged one
/// broke its contract; it is logged and the event goes out again after the earlier
/// one), and only that first failure is recorded, so an event never uses up an
/// attempt for an earlier event of its key.
fn sort_outcomes(
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

/// A relay instance's id: the service name (its first 200 characters, so the id fits
/// its 255-character columns), the process id and a random suffix.
fn relay_id(service: &str) -> String {
    let service: String = service.chars().take(200).collect();
    format!(
        "{service}-{}-{}",
        std::process::id(),
        &Uuid::now_v7().simple().to_string()[20..]
    )
}

/// What processing one shard came to.
enum ShardOutcome {
    /// The batch was written back; the id is the last event published.
    Done(ProcessReport, Option<Uuid>),
    /// The lease was taken by another relay before the write-back; nothing written.
    LeaseLost,
    /// The shard was no longer held when its batch was to start; nothing claimed.
    NotHeld,
}

/// A running relay: check it, read its figures, stop it.
///
/// Dropping the handle stops the relay as [`shutdown`](Self::shutdown) does, without
/// waiting for it: keep it for as long as the relay should run.
#[must_use = "dropping the handle stops the relay"]
#[derive(Debug)]
pub struct RelayHandle {
    state: Arc<State>,
    relay_id: String,
    shutdown_timeout: Duration,
    cancel: CancellationToken,
    tracker: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
}

impl RelayHandle {
    /// `Ok` while the relay runs, a cycle succeeded within `health_timeout`, and the
    /// broker and the database answered the last probes.
    ///
    /// # Errors
    /// [`Error::Unhealthy`] saying what is wrong.
    pub fn healthcheck(&self) -> Result<()> {
        self.state.healthcheck()
    }

    /// The relay's figures.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// A cheap, cloneable view of the relay's health and figures, for probes that
    /// outlive a borrow of the handle (an HTTP readiness endpoint, a supervisor).
    pub fn probe(&self) -> HealthProbe {
        HealthProbe {
            state: Arc::clone(&self.state),
        }
    }

    /// This instance's id.
    pub fn relay_id(&self) -> &str {
        &self.relay_id
    }

    /// Stops the relay: no new batch starts, the batch in flight is published and
    /// written back, the shard leases are given up. Returns within `shutdown_timeout`;
    /// past it the batch in flight is abandoned, which loses nothing: its events stay
    /// pending and are published again.
    ///
    /// # Errors
    /// [`Error::ShutdownTimeout`] when the deadline passed.
    pub async fn shutdown(mut self) -> Result<()> {
        self.cancel.cancel();
        if tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_ok()
        {
            return Ok(());
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.state.stopped();
        Err(Error::ShutdownTimeout(self.shutdown_timeout))
    }

    /// Stops the relay at once, as a crash would: the batch in flight is dropped
    /// unwritten and the leases stay until they expire. For tests and emergencies.
    pub fn abort(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.state.stopped();
    }
}

/// The health and figures of a running relay, from [`RelayHandle::probe`]. It does not
/// keep the relay running: once the handle is shut down or dropped, the check reports
/// that the relay is not running.
#[derive(Clone, Debug)]
pub struct HealthProbe {
    state: Arc<State>,
}

impl HealthProbe {
    /// As [`RelayHandle::healthcheck`].
    ///
    /// # Errors
    /// [`Error::Unhealthy`] saying what is wrong.
    pub fn healthcheck(&self) -> Result<()> {
        self.state.healthcheck()
    }

    /// As [`RelayHandle::stats`].
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
