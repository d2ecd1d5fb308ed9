//! [`Relay`]: the relay that publishes stored events.
//!
//! Each relay instance leases shards of the service's events (see `lease.rs`) and,
//! per shard, claims the oldest publishable events, publishes them, and writes the
//! outcome back fenced by its lease (one statement when everything was published, one
//! transaction otherwise). No cursor is kept: a
//! transaction that commits late is simply found pending later (no skip on late commit), and within a
//! shard events go out in `seq` order, which for one key is commit order (per-key order).
//! A shard has at most one batch in flight; `run.rs` starts a batch for each shard
//! that has work as soon as one of the `concurrency` slots is free (`schedule.rs`).
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Relay`]: building, spawning, one manual pass (`process_events`) |
//! | `run.rs` | the main loop: batches as tasks, polls, wake-ups, the offset |
//! | `schedule.rs` | the loop's wait policy, pure: which shard next, when to poll |
//! | `batch.rs` | one batch of one shard: claim, publish, fenced write-back |
//! | `dead_letter.rs` | the dead-letter topic |
//! | `keeper.rs` | the lease keeper task: rounds on a timer, standing aside when stalled |
//! | `lease.rs` | the shard leases themselves: fair share, renew, take, release |
//! | `membership.rs` | heartbeats: which relays of which services are alive |
//! | `listen.rs` | `LISTEN` for wake-ups from other processes (PostgreSQL) |
//! | `housekeeping.rs` | backlog figures, orphan sweep, health probe, cleanup |
//! | `metrics.rs` | metric names and what batches and backlog readings record |
//! | `state.rs` | health and figures, for `healthcheck` and `stats` |
//! | `clock.rs` | the database's clock, as the relay reads it |
//! | `unannounced.rs` | events a poll found long after their store: writers that wake no relay |
//! | `handle.rs` | [`RelayHandle`] and [`HealthProbe`] |

mod batch;
mod clock;
mod dead_letter;
mod handle;
mod housekeeping;
mod keeper;
mod lease;
#[cfg(feature = "postgres")]
mod listen;
mod membership;
mod metrics;
mod run;
mod schedule;
mod stall;
mod state;
mod unannounced;

use std::sync::Arc;

use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;
use uuid::Uuid;

pub use batch::ProcessReport;
pub use handle::{HealthProbe, RelayHandle};
pub use metrics::metric_names;
pub use state::Stats;

use self::batch::ShardOutcome;

use self::clock::Clock;
use self::lease::Leases;
use self::stall::Stall;
use self::state::State;
use crate::config::{MAX_SERVICE_NAME_LEN, RelayConfig};
use crate::error::Result;
use crate::publisher::Publisher;
use crate::sql::Dialect;
use crate::store::Outbox;
use crate::wake::Doorbell;

/// The relay: publishes the events of one service's outbox.
///
/// ```no_run
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), outbox::Error> {
/// use outbox::{KafkaPublisher, Outbox, Relay, RelayConfig};
///
/// let outbox = Outbox::on(&db); // the same one the application stores with
/// let relay = Relay::new(RelayConfig::from_env()?, db, KafkaPublisher::new("127.0.0.1:9092")?)?
///     .with_outbox(outbox.clone())
///     .spawn();
/// relay.healthcheck()?;
/// // ...
/// relay.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[doc(alias = "Processor")]
pub struct Relay<P> {
    inner: Inner<P>,
}

#[derive(Debug)]
struct Inner<P> {
    config: RelayConfig,
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
    /// The breaker for a broker the relay cannot deliver to.
    stall: Stall,
}

impl<P: Publisher> Relay<P> {
    /// A relay over `db` that publishes through `publisher`.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) when `config` is invalid (see [`RelayConfig::validate`]),
    /// [`Error::UnsupportedBackend`](crate::Error::UnsupportedBackend) when `db` is neither PostgreSQL nor SQLite.
    #[doc(alias = "NewProcessor")]
    pub fn new(config: RelayConfig, db: DatabaseConnection, publisher: P) -> Result<Self> {
        config.validate()?;
        Dialect::of(db.get_database_backend())?;
        let relay_id = relay_id(&config.service_name);
        let outbox = Outbox::new()
            .with_shards(config.shards)
            .with_completion(config.completion);
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
        config: RelayConfig,
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
        let stall = Stall::new(config.stall_timeout);
        let state = Arc::new(State::new(
            relay_id.clone(),
            config.health_timeout,
            config.enabled,
        ));
        Relay {
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
                stall,
            },
        }
    }

    /// Uses `outbox`'s tables, shard count and completion mode (instead of the
    /// configuration's), and
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
        if outbox.completion() != inner.config.completion {
            warn!(
                configured = %inner.config.completion,
                outbox = %outbox.completion(),
                "the relay uses the outbox's completion mode, not the configuration's"
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

    /// One pass by hand (the Go library's `ProcessEvents`): takes or renews this relay's
    /// shard leases, then publishes up to `batch_size` events per owned shard.
    ///
    /// # Errors
    /// The database's. Publish failures are recorded on the events, not returned.
    pub async fn process_events(&self, batch_size: usize) -> Result<ProcessReport> {
        self.inner.lease_round().await?;
        self.inner.sweep_orphans().await?;
        self.inner.process_owned(batch_size.max(1)).await
    }

    /// Starts the relay in the background. With `enabled = false` it starts nothing.
    #[doc(alias = "Start")]
    pub fn spawn(self) -> RelayHandle {
        let inner = Arc::new(self.inner);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut tasks = Vec::new();
        if inner.config.enabled {
            // Counters exist from the start, so that `rate()` sees their first events.
            let service = inner.config.service_name.clone();
            ::metrics::counter!(metric_names::PUBLISHED, "service" => service.clone()).increment(0);
            ::metrics::counter!(metric_names::DEAD_LETTERED, "service" => service.clone())
                .increment(0);
            ::metrics::counter!(metric_names::FOUND_BY_POLL, "service" => service).increment(0);
            tasks.push(tracker.spawn(Arc::clone(&inner).keep_leases(cancel.clone())));
            tasks.push(tracker.spawn(Arc::clone(&inner).run_or_stop(cancel.clone())));
            tasks.push(tracker.spawn(Arc::clone(&inner).probe(cancel.clone())));
            tasks.push(tracker.spawn(Arc::clone(&inner).housekeeping(cancel.clone())));
            #[cfg(feature = "postgres")]
            if inner.listens() {
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

    /// Whether this relay listens for the wake-ups of writers in other processes.
    fn listens(&self) -> bool {
        cfg!(feature = "postgres")
            && self.config.listen
            && self.db.get_database_backend() == DbBackend::Postgres
    }

    /// The loop has ended: the relay says so and gives its shards up.
    async fn stop(&self) {
        self.state.stopped();
        if let Ok(dialect) = self.dialect() {
            let released = self
                .leases
                .release_all(&self.db, dialect, self.outbox.tables(), self.clock.now())
                .await;
            match released {
                Ok(true) => self.announce_release().await,
                Ok(false) => {}
                Err(error) => {
                    warn!(relay = %self.relay_id, %error, "could not release leases; they expire on their own");
                }
            }
        }
    }

    /// One batch of every owned shard, `concurrency` shards at a time (for
    /// [`Relay::process_events`]).
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
                Ok(ShardOutcome::Done {
                    report: shard_report,
                    last,
                    ..
                }) => {
                    report.add(shard_report);
                    last_published = last.or(last_published);
                }
                Ok(ShardOutcome::LeaseLost) => self.leases.lost(shard),
                Ok(ShardOutcome::NotHeld | ShardOutcome::Expired) => {}
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
}

/// A relay instance's id: the service name (its first 200 characters, so the id fits
/// its 255-character columns), the process id and a random suffix.
fn relay_id(service: &str) -> String {
    /// The id's other parts (pid, suffix, two dashes) take at most 10 + 12 + 2
    /// characters; the columns hold [`MAX_SERVICE_NAME_LEN`].
    const SERVICE_PART: usize = 200;
    const _: () = assert!(SERVICE_PART + 24 <= MAX_SERVICE_NAME_LEN);
    let service: String = service.chars().take(SERVICE_PART).collect();
    format!(
        "{service}-{}-{}",
        std::process::id(),
        &Uuid::now_v7().simple().to_string()[20..]
    )
}
