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
//! | `mod.rs` | [`Relay`]: building it from its parts, spawning their tasks, one manual pass |
//! | `setup.rs` | `Setup`: what every part reads (configuration, database, outbox, id) |
//! | `run.rs` | `Runner`, the main loop: batches as tasks, polls, wake-ups, the offset |
//! | `schedule.rs` | the loop's wait policy, pure: which shard next, when to poll |
//! | `offset.rs` | the service's offset: its last published event, written now and then |
//! | `batch.rs` | `Batcher`: one batch of one shard: claim, publish, judge, fenced write-back |
//! | `outcome.rs` | judging a batch's outcomes, pure; [`ProcessReport`] |
//! | `dead_letter.rs` | the dead-letter topic |
//! | `delayed.rs` | events with a due time: moved into the outbox when due |
//! | `keeper.rs` | `Keeper`, the lease keeper: leases, clock, stall; rounds on a timer |
//! | `lease.rs` | `Leases`, the shard leases themselves: renew, take, release |
//! | `held.rs` | what a relay holds between rounds: each lease, and the shards busy with a batch |
//! | `share.rs` | the fair share of shards per relay, pure |
//! | `round.rs` | what a lease round works on and ends with, and the rows it reads |
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
mod delayed;
mod handle;
mod held;
mod housekeeping;
mod keeper;
mod lease;
#[cfg(feature = "postgres")]
mod listen;
mod membership;
mod metrics;
mod offset;
mod outcome;
mod round;
mod run;
mod schedule;
mod setup;
mod share;
mod stall;
mod state;
mod unannounced;

use std::sync::Arc;

use futures_util::StreamExt as _;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;
use uuid::Uuid;

pub use handle::{HealthProbe, RelayHandle};
pub use metrics::relay_metric_names;
pub use outcome::ProcessReport;
pub use state::RelayStats;

use self::batch::Batcher;
use self::keeper::Keeper;
use self::outcome::ShardOutcome;
use self::run::Runner;
use self::setup::Setup;
use self::state::State;
use crate::config::{MAX_SERVICE_NAME_LEN, RelayConfig};
use crate::error::Result;
use crate::publisher::Publisher;
use crate::sql::Dialect;
use crate::store::Outbox;

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
    setup: Arc<Setup>,
    keeper: Arc<Keeper>,
    batcher: Batcher<P>,
    /// Whether [`with_outbox`](Relay::with_outbox) gave it its outbox.
    given_outbox: bool,
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
        let dialect = Dialect::of(db.get_database_backend())?;
        let identity = Identity {
            relay_id: relay_id(&config.service_name),
            skew: chrono::Duration::zero(),
            database: None,
        };
        Ok(Self::build(
            config,
            db,
            dialect,
            publisher,
            Outbox::new(),
            identity,
        ))
    }

    fn build(
        config: RelayConfig,
        db: DatabaseConnection,
        dialect: Dialect,
        publisher: P,
        outbox: Outbox,
        identity: Identity,
    ) -> Self {
        let Identity {
            relay_id,
            skew,
            database,
        } = identity;
        let state = Arc::new(State::new(
            relay_id.clone(),
            config.health_timeout,
            config.enabled,
        ));
        let doorbell = outbox.wake().subscribe();
        let encodings = config.encodings();
        let setup = Arc::new(Setup {
            config,
            encodings,
            db,
            dialect,
            outbox,
            relay_id,
            state,
            doorbell,
            database,
        });
        let keeper = Arc::new(Keeper::new(Arc::clone(&setup), skew));
        let batcher = Batcher::new(Arc::clone(&setup), Arc::clone(&keeper), publisher);
        Relay {
            setup,
            keeper,
            batcher,
            given_outbox: false,
        }
    }

    /// Takes the relay apart, to build it again.
    fn rebuild(
        self,
        outbox: Option<Outbox>,
        skew: Option<chrono::Duration>,
        database: Option<String>,
    ) -> Self {
        let given_outbox = self.given_outbox;
        let skew = skew.unwrap_or_else(|| self.keeper.clock.skew());
        let setup = &*self.setup;
        let (config, db, dialect) = (setup.config.clone(), setup.db.clone(), setup.dialect);
        let outbox = outbox.unwrap_or_else(|| setup.outbox.clone());
        // A relay labelled with its database names it in its id too, so that its log
        // lines (which carry the id) say which database they are about.
        let relay_id = match &database {
            Some(database) => relay_id(&format!("{}@{database}", setup.config.service_name)),
            None => setup.relay_id.clone(),
        };
        let identity = Identity {
            relay_id,
            skew,
            database: database.or_else(|| setup.database.clone()),
        };
        let publisher = self.batcher.into_publisher();
        Relay {
            given_outbox,
            ..Self::build(config, db, dialect, publisher, outbox, identity)
        }
    }

    /// Publishes `outbox`: its tables, shard count and completion mode (the relay has
    /// no others: without this call, the defaults of [`Outbox::new`]), and wakes when
    /// it stores an event. Pass a clone of the outbox the application stores with, or
    /// in a process of its own an outbox built the same way (for example
    /// [`Outbox::from_env`] on both sides).
    pub fn with_outbox(self, outbox: Outbox) -> Self {
        let config = &self.setup.config;
        let outbox = if config.listen {
            outbox.with_wake_connection(&self.setup.db)
        } else {
            outbox
        };
        Relay {
            given_outbox: true,
            ..self.rebuild(Some(outbox), None, None)
        }
    }

    /// Runs this relay as if its host's clock were `skew` ahead (or behind, when
    /// negative). For tests of clock skew only: the relay goes by the database's clock
    /// whatever its host's says.
    #[doc(hidden)]
    pub fn with_clock_skew(self, skew: chrono::Duration) -> Self {
        self.rebuild(None, Some(skew), None)
    }

    /// Labels every metric of this relay with `database` (as `database`), beside the
    /// service, and puts it in the relay's id (`<service>@<database>-<pid>-<suffix>`,
    /// which its log lines carry): the name of the database it serves, when one
    /// process relays for several ([`Fleet`](crate::fleet::Fleet) does). Never pass a
    /// URL: labels are shown as they are.
    pub fn with_database_label(self, database: impl Into<String>) -> Self {
        self.rebuild(None, None, Some(database.into()))
    }

    /// This instance's id, as stored in the lease and relay tables.
    pub fn relay_id(&self) -> &str {
        &self.setup.relay_id
    }

    /// One pass by hand: takes or renews this relay's shard leases, moves the events
    /// that became due into the outbox, then publishes up to `batch_size` events per
    /// owned shard.
    ///
    /// # Errors
    /// The database's. Publish failures are recorded on the events, not returned.
    #[doc(alias = "ProcessEvents")]
    pub async fn process_events(&self, batch_size: usize) -> Result<ProcessReport> {
        self.keeper.lease_round().await?;
        housekeeping::sweep_orphans(&self.setup).await?;
        self.setup.outbox.move_due(&self.setup.db, 10_000).await?;
        self.process_owned(batch_size.max(1)).await
    }

    /// One batch of every owned shard, `concurrency` shards at a time: a pass by hand
    /// ([`Relay::process_events`]).
    async fn process_owned(&self, batch_size: usize) -> Result<ProcessReport> {
        let (setup, keeper, batcher) = (&*self.setup, &*self.keeper, &self.batcher);
        let owned = keeper.leases.owned();
        let results: Vec<(i32, Result<ShardOutcome>)> = futures_util::stream::iter(owned)
            .map(|(shard, token)| async move {
                (shard, batcher.process_shard(shard, token, batch_size).await)
            })
            .buffer_unordered(setup.config.concurrency)
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
                Ok(ShardOutcome::LeaseLost) => keeper.leases.lost(shard),
                Ok(ShardOutcome::NotHeld | ShardOutcome::Expired) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(event) = last_published {
            offset::write(setup, keeper, event).await?;
        }
        match first_error {
            Some(error) if report.claimed == 0 => Err(error),
            Some(error) => {
                warn!(relay = %setup.relay_id, %error, "a shard failed; the others were processed");
                Ok(report)
            }
            None => Ok(report),
        }
    }

    /// Starts the relay in the background. With `enabled = false` it starts nothing.
    #[doc(alias = "Start")]
    pub fn spawn(self) -> RelayHandle {
        let Relay {
            setup,
            keeper,
            batcher,
            given_outbox,
        } = self;
        if !given_outbox {
            warn_of_unused_outbox_variables();
        }
        let batcher = Arc::new(batcher);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut tasks = Vec::new();
        let config = &setup.config;
        if config.enabled {
            // Counters exist from the start, so that `rate()` sees their first events.
            for counter in [
                relay_metric_names::PUBLISHED,
                relay_metric_names::DEAD_LETTERED,
                relay_metric_names::FOUND_BY_POLL,
                relay_metric_names::LISTEN_UNHEARD,
            ] {
                ::metrics::counter!(counter, setup.labels()).increment(0);
            }
            let check = {
                let batcher = Arc::clone(&batcher);
                move || {
                    let batcher = Arc::clone(&batcher);
                    async move { batcher.publisher().check().await.is_ok() }
                }
            };
            tasks.push(tracker.spawn(Arc::clone(&keeper).keep_leases(check, cancel.clone())));
            let runner = Runner::new(
                Arc::clone(&setup),
                Arc::clone(&keeper),
                Arc::clone(&batcher),
            );
            tasks.push(tracker.spawn(runner.run_or_stop(cancel.clone())));
            tasks.push(tracker.spawn(housekeeping::probe(
                Arc::clone(&setup),
                Arc::clone(&batcher),
                cancel.clone(),
            )));
            tasks.push(tracker.spawn(housekeeping::backlog_and_sweep(
                Arc::clone(&setup),
                Arc::clone(&keeper),
                cancel.clone(),
            )));
            tasks.push(tracker.spawn(delayed::deliver_due(
                Arc::clone(&setup),
                Arc::clone(&keeper),
                cancel.clone(),
            )));
            #[cfg(feature = "postgres")]
            if setup.listens() {
                tasks.push(tracker.spawn(listen::listen(Arc::clone(&setup), cancel.clone())));
            }
            if config.cleanup_enabled {
                tasks
                    .push(tracker.spawn(housekeeping::cleanup(Arc::clone(&setup), cancel.clone())));
            }
        }
        tracker.close();
        RelayHandle {
            state: Arc::clone(&setup.state),
            relay_id: setup.relay_id.clone(),
            shutdown_timeout: config.shutdown_timeout,
            cancel,
            tracker,
            tasks,
        }
    }
}

/// Who a relay is: its id, how far its host's clock is off (tests), and the name of
/// the database it serves in a fleet.
struct Identity {
    relay_id: String,
    skew: chrono::Duration,
    database: Option<String>,
}

/// `OUTBOX_SHARDS` and `OUTBOX_COMPLETION` belong to the outbox
/// ([`Outbox::from_env`]): a relay given no outbox publishes the defaults whatever
/// they say, which is worth a warning when they are set.
fn warn_of_unused_outbox_variables() {
    for variable in ["OUTBOX_SHARDS", "OUTBOX_COMPLETION"] {
        if let Ok(value) = std::env::var(variable) {
            warn!(
                %variable, %value,
                "the relay publishes the default outbox: {variable} is read by Outbox::from_env, \
                 so give the relay that outbox with Relay::with_outbox, as its writers use"
            );
        }
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
