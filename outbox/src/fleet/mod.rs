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
//! Several processes of one fleet (one service name, one list) share the databases:
//! each shows it is alive in the coordinator database's `_outbox_fleet` table
//! ([`FleetConfig::coordinator`], by default the first database of the list by name)
//! at every refresh, reads who else is, and serves its fair share of the list (at
//! most `ceil(databases / processes)`, see `share.rs`); every process computes the same
//! split from the same members. A process that stops leaves at once; one that dies is
//! gone after half a lease (`RelayConfig::lease_ttl`), and the others serve its
//! databases before its shard leases run out. Per-key order, fencing and no loss hold
//! as for relays of one database: while two processes disagree for a refresh, the
//! shard leases in each database decide which relay publishes. When the coordinator
//! cannot be read, a process keeps its last view for half a lease, then serves every
//! database (safe, by the leases, at the cost of connections) until it can.
//!
//! A process holds connections only to the databases it serves: for each, a pool of
//! at most [`FleetConfig::connections`] (one for SQLite) and, on PostgreSQL, one
//! listening connection; plus one connection to the coordinator.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Fleet`], [`FleetConfig`]: building a fleet and spawning it |
//! | `source.rs` | [`DatabaseSource`], [`FileSource`], [`DatabaseEntry`]: which databases |
//! | `reconcile.rs` | the reconciler: a member task per database of this process's share |
//! | `membership.rs` | this process's heartbeat in the coordinator, and the live members |
//! | `share.rs` | which databases each member serves, pure |
//! | `member.rs` | serving one database: connecting, its relay, letting it go |
//! | `handle.rs` | [`FleetHandle`], [`FleetProbe`], [`DatabaseHealth`]: the running fleet |

mod handle;
mod member;
mod membership;
mod reconcile;
mod share;
mod source;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use handle::{DatabaseHealth, DatabaseState, FleetHandle, FleetProbe};
pub use source::{
    DatabaseEntry, DatabaseSource, FileSource, MAX_DATABASE_NAME_LEN, parse_databases,
};

use self::handle::Shared;
use self::member::Member;
use self::membership::Membership;
use self::reconcile::Reconciler;
use crate::config::RelayConfig;
use crate::error::{Error, Result};
use crate::publisher::Publisher;
use crate::store::Outbox;

/// How a fleet looks after its databases.
///
/// | field | default | variable |
/// |---|---|---|
/// | `refresh` | 2 s | `OUTBOX_FLEET_REFRESH` |
/// | `connections` | 3 | `OUTBOX_FLEET_CONNECTIONS` |
/// | `connect_timeout` | 10 s | `OUTBOX_FLEET_CONNECT_TIMEOUT` |
/// | `min_ready` | 0.5 | `OUTBOX_FLEET_MIN_READY` |
/// | `coordinator` | the first database by name | `OUTBOX_FLEET_COORDINATOR` |
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FleetConfig {
    /// How often the source is asked for the databases.
    pub refresh: Duration,
    /// The most connections each database's pool opens (its listening connection
    /// aside; SQLite's pool has one). A database's relay runs its lease rounds, its
    /// backlog and health readings and its batches on them; an idle database keeps
    /// about one open. Raise it for tenants that publish thousands of events a second.
    pub connections: u32,
    /// How long to try to connect to a database before trying again later.
    pub connect_timeout: Duration,
    /// The share of the databases (0 to 1) that must be served and healthy for the
    /// fleet to be ready.
    pub min_ready: f64,
    /// The name of the database (an entry of the list) whose `_outbox_fleet` table
    /// holds the fleet's members; `None`: the first database of the list by name.
    /// Every process of a fleet must use the same one.
    pub coordinator: Option<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            refresh: Duration::from_secs(2),
            connections: 3,
            connect_timeout: Duration::from_secs(10),
            min_ready: 0.5,
            coordinator: None,
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
            config.connections = parsed.ok_or_else(|| {
                invalid(
                    "OUTBOX_FLEET_CONNECTIONS",
                    value,
                    "expected a whole number of at least 2",
                )
            })?;
        }
        if let Some(name) = lookup("OUTBOX_FLEET_COORDINATOR") {
            config.coordinator = Some(name.trim().to_owned()).filter(|name| !name.is_empty());
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
        // A member silent for half a lease is gone: the others serve its databases
        // before its relays' leases run out.
        let ttl = (member.relay.lease_ttl / 2).max(self.config.refresh * 3);
        let membership = Membership::new(
            &member.relay.service_name,
            member_id(&member.relay.service_name),
            ttl,
            self.config.connect_timeout,
        );
        let reconciler = Reconciler {
            source: self.source,
            member,
            membership,
            coordinator: self.config.coordinator,
            view: None,
            ttl,
            said_alone: false,
            every: self.config.refresh,
            refresh: Arc::clone(&refresh),
            tracker: tracker.clone(),
            running: BTreeMap::new(),
        };
        let task = tracker.spawn(reconciler.run(cancel.clone()));
        FleetHandle::new(shared, cancel, kill, refresh, tracker, task)
    }
}

/// Whether the fleet's lock was poisoned by a panic elsewhere: the figures it guards
/// are still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fleet member's id: the service name (its first 200 characters), the process id
/// and a random suffix, as a relay's.
fn member_id(service: &str) -> String {
    let service: String = service.chars().take(200).collect();
    format!(
        "{service}-{}-{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}
