//! [`Fleet`]: one relay process for many databases (database-per-tenant, shards).
//!
//! A fleet reads its databases from a [`DatabaseSource`] (the databases file,
//! [`FileSource`], or one of your own) and runs a [`Relay`](crate::Relay) for each, with the same
//! [`RelayConfig`] and one publisher (one Kafka producer) for them all. It asks the
//! source again every [`FleetConfig::refresh`] (and at once on
//! [`FleetHandle::refresh`]): a database added is served within one refresh, one
//! removed is released (its relay shut down, which gives up its shard leases, and its
//! connections closed), one whose URL or tables changed is served again from the
//! new ones.
//!
//! Each database is served on its own: one that cannot be reached is tried again with
//! a growing delay (up to 30 s) while the others run, and one that goes away while
//! served is retried by its own relay, as a single relay does. Readiness
//! ([`FleetHandle::healthcheck`]) holds while at least [`FleetConfig::min_ready`] of
//! the databases are served and healthy; [`FleetHandle::databases`] says which are
//! not, and why. Every relay metric carries the entry's name as a `database` label
//! (never its URL).
//!
//! Several fleet processes may serve the same databases: in each database they share
//! the shards by the relays' own leases, with the same order and fencing as relays
//! of one database. Each process then holds connections to every database it serves:
//! at most [`FleetConfig::connections`] in its pool, plus one listening connection
//! per PostgreSQL database.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Fleet`], [`FleetConfig`]: building a fleet and spawning it |
//! | `source.rs` | [`DatabaseSource`], [`FileSource`], [`DatabaseEntry`]: which databases |
//! | `member.rs` | serving one database: connecting, its relay, letting it go |
//! | `handle.rs` | [`FleetHandle`], [`FleetProbe`], [`DatabaseHealth`]: the running fleet |

mod handle;
mod member;
mod source;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use handle::{DatabaseHealth, DatabaseState, FleetHandle, FleetProbe};
pub use source::{
    DatabaseEntry, DatabaseSource, FileSource, MAX_DATABASE_NAME_LEN, parse_databases,
};

use self::handle::Shared;
use self::member::Member;
use crate::config::RelayConfig;
use crate::error::{Error, Result};
use crate::publisher::Publisher;
use crate::store::Outbox;

/// How a fleet looks after its databases.
///
/// | field | default | variable |
/// |---|---|---|
/// | `refresh` | 2 s | `OUTBOX_FLEET_REFRESH` |
/// | `connections` | `concurrency` + 3 | `OUTBOX_FLEET_CONNECTIONS` |
/// | `connect_timeout` | 10 s | `OUTBOX_FLEET_CONNECT_TIMEOUT` |
/// | `min_ready` | 0.5 | `OUTBOX_FLEET_MIN_READY` |
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FleetConfig {
    /// How often the source is asked for the databases.
    pub refresh: Duration,
    /// The most connections each database's pool opens (its listening connection
    /// aside); `None`: the relay's `concurrency` + 3 (its batches, its lease keeper,
    /// its backlog and health readings).
    pub connections: Option<u32>,
    /// How long to try to connect to a database before trying again later.
    pub connect_timeout: Duration,
    /// The share of the databases (0 to 1) that must be served and healthy for the
    /// fleet to be ready.
    pub min_ready: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            refresh: Duration::from_secs(2),
            connections: None,
            connect_timeout: Duration::from_secs(10),
            min_ready: 0.5,
        }
    }
}

impl FleetConfig {
    /// The defaults, overridden by the `OUTBOX_FLEET_*` variables that are set.
    ///
    /// # Errors
    /// [`Error::Config`] naming a variable whose value is not valid.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = FleetConfig::default();
        let invalid = |variable: &'static str, value: String, reason: &'static str| Error::Config {
            variable,
            value,
            reason,
        };
        let duration = |variable: &'static str| -> Result<Option<Duration>> {
            lookup(variable)
                .map(|value| {
                    humantime::parse_duration(value.trim())
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| invalid(variable, value, "expected a duration, e.g. 2s"))
                })
                .transpose()
        };
        if let Some(refresh) = duration("OUTBOX_FLEET_REFRESH")? {
            config.refresh = refresh;
        }
        if let Some(timeout) = duration("OUTBOX_FLEET_CONNECT_TIMEOUT")? {
            config.connect_timeout = timeout;
        }
        if let Some(value) = lookup("OUTBOX_FLEET_CONNECTIONS") {
            let parsed = value.trim().parse().ok().filter(|&n: &u32| n >= 2);
            config.connections = Some(parsed.ok_or_else(|| {
                invalid(
                    "OUTBOX_FLEET_CONNECTIONS",
                    value,
                    "expected a whole number of at least 2",
                )
            })?);
        }
        if let Some(value) = lookup("OUTBOX_FLEET_MIN_READY") {
            let parsed = value
                .trim()
                .parse()
                .ok()
                .filter(|f: &f64| (0.0..=1.0).contains(f));
            config.min_ready = parsed.ok_or_else(|| {
                invalid(
                    "OUTBOX_FLEET_MIN_READY",
                    value,
                    "expected a share from 0 to 1, e.g. 0.5",
                )
            })?;
        }
        Ok(config)
    }
}

/// One relay process for the databases of a [`DatabaseSource`]; see the
/// [module documentation](self).
///
/// ```no_run
/// # async fn run() -> Result<(), outbox::Error> {
/// use outbox::fleet::{FileSource, Fleet, FleetConfig};
/// use outbox::{KafkaPublisher, Outbox, RelayConfig};
///
/// let fleet = Fleet::new(
///     RelayConfig::from_env()?,
///     FileSource::new("/etc/outbox/databases"),
///     KafkaPublisher::new("127.0.0.1:9092")?,
/// )?
/// .with_config(FleetConfig::from_env()?)
/// .with_outbox(Outbox::new()) // shards and completion, as the writers use them
/// .spawn();
/// // ...
/// fleet.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Fleet<S, P> {
    relay: RelayConfig,
    config: FleetConfig,
    outbox: Outbox,
    source: S,
    publisher: P,
}

impl<S: DatabaseSource, P: Publisher + Clone> Fleet<S, P> {
    /// A fleet serving the databases of `source` with relays configured by `relay`,
    /// publishing through `publisher`.
    ///
    /// # Errors
    /// [`Error::Config`] when `relay` is invalid (see [`RelayConfig::validate`]).
    pub fn new(relay: RelayConfig, source: S, publisher: P) -> Result<Self> {
        relay.validate()?;
        Ok(Fleet {
            relay,
            config: FleetConfig::default(),
            outbox: Outbox::new(),
            source,
            publisher,
        })
    }

    /// How the fleet looks after its databases.
    pub fn with_config(mut self, config: FleetConfig) -> Self {
        self.config = config;
        self
    }

    /// The outbox the writers use (its shard count and completion mode); each
    /// database's tables are its entry's.
    pub fn with_outbox(mut self, outbox: Outbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// Starts serving in the background.
    pub fn spawn(self) -> FleetHandle {
        let shared = Arc::new(Shared::new(self.config.min_ready));
        let cancel = CancellationToken::new();
        let kill = CancellationToken::new();
        let refresh = Arc::new(Notify::new());
        let tracker = TaskTracker::new();
        let member = Arc::new(Member {
            relay: self.relay,
            outbox: self.outbox,
            connections: self.config.connections,
            connect_timeout: self.config.connect_timeout,
            publisher: self.publisher,
            shared: Arc::clone(&shared),
            kill: kill.clone(),
        });
        let reconciler = Reconciler {
            source: self.source,
            member,
            every: self.config.refresh,
            refresh: Arc::clone(&refresh),
            tracker: tracker.clone(),
            running: BTreeMap::new(),
        };
        let task = tracker.spawn(reconciler.run(cancel.clone()));
        FleetHandle::new(shared, cancel, kill, refresh, tracker, task)
    }
}

/// Keeps one member task per database the source lists.
struct Reconciler<S, P> {
    source: S,
    member: Arc<Member<P>>,
    every: Duration,
    refresh: Arc<Notify>,
    tracker: TaskTracker,
    running: BTreeMap<String, Running>,
}

/// A database being served: what it was started from, and how to stop it.
struct Running {
    entry: DatabaseEntry,
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl<S: DatabaseSource, P: Publisher + Clone> Reconciler<S, P> {
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            match self.source.databases().await {
                Ok(entries) => {
                    self.member.shared.source_read(None);
                    self.apply(entries).await;
                }
                Err(error) => {
                    warn!(%error, "cannot read the databases; serving the last list read");
                    self.member.shared.source_read(Some(error.to_string()));
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(self.every) => {}
                () = self.refresh.notified() => {}
            }
        }
        stop(std::mem::take(&mut self.running).into_values().collect()).await;
    }

    /// Starts the databases that are new or changed, stops those gone or changed.
    async fn apply(&mut self, entries: Vec<DatabaseEntry>) {
        let wanted: BTreeMap<String, DatabaseEntry> = entries
            .into_iter()
            .map(|entry| (entry.name().to_owned(), entry))
            .collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| wanted.get(*name) != Some(&running.entry))
            .map(|(name, _)| name.clone())
            .collect();
        let stopping = stale
            .iter()
            .filter_map(|name| self.running.remove(name))
            .collect();
        stop(stopping).await;
        for name in stale.iter().filter(|name| !wanted.contains_key(*name)) {
            self.member.shared.forget(name);
            info!(database = %name, "database released");
        }
        for (name, entry) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            info!(database = %name, "serving database");
            let cancel = CancellationToken::new();
            let member = Arc::clone(&self.member);
            let done = self
                .tracker
                .spawn(member.serve(entry.clone(), cancel.clone()));
            self.running.insert(
                name,
                Running {
                    entry,
                    cancel,
                    done,
                },
            );
        }
    }
}

/// Stops serving `databases`, all at once, and waits until each is let go (its relay
/// shut down within its shutdown timeout, its connections closed).
async fn stop(databases: Vec<Running>) {
    for running in &databases {
        running.cancel.cancel();
    }
    for running in databases {
        if let Err(error) = running.done.await {
            warn!(database = %running.entry.name(), %error, "serving the database ended in a panic");
        }
    }
}

/// Whether the fleet's lock was poisoned by a panic elsewhere: the figures it guards
/// are still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
