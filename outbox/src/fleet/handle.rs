//! [`FleetHandle`]: a running fleet, its databases' health, and stopping it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lock;
use crate::error::{Error, Result};
use crate::relay::{HealthProbe, RelayStats};

/// How many of the failing databases a failed health check names.
const NAMED_PROBLEMS: usize = 5;

/// What the fleet's tasks report, and its health is read from.
#[derive(Debug)]
pub(super) struct Shared {
    min_ready: f64,
    databases: Mutex<BTreeMap<String, Slot>>,
    /// `None` until the source is first read; then why the last read failed, if it did.
    source: Mutex<Option<Option<String>>>,
    /// The live members of the fleet this one shares with, and the databases listed.
    view: Mutex<(usize, usize)>,
}

/// One database's place in the fleet.
#[derive(Debug)]
enum Slot {
    /// Not served yet: connecting, or waiting to try again after `error`.
    Connecting { error: Option<String> },
    /// Served by a relay.
    Serving(HealthProbe),
}

impl Shared {
    pub(super) fn new(min_ready: f64) -> Self {
        Shared {
            min_ready,
            databases: Mutex::new(BTreeMap::new()),
            source: Mutex::new(None),
            view: Mutex::new((1, 0)),
        }
    }

    pub(super) fn shared(&self, members: usize, listed: usize) {
        *lock(&self.view) = (members, listed);
    }

    pub(super) fn connecting(&self, name: &str, error: Option<String>) {
        lock(&self.databases).insert(name.to_owned(), Slot::Connecting { error });
    }

    pub(super) fn serving(&self, name: &str, probe: HealthProbe) {
        lock(&self.databases).insert(name.to_owned(), Slot::Serving(probe));
    }

    pub(super) fn forget(&self, name: &str) {
        lock(&self.databases).remove(name);
    }

    pub(super) fn source_read(&self, error: Option<String>) {
        *lock(&self.source) = Some(error);
    }

    fn databases(&self) -> Vec<DatabaseHealth> {
        lock(&self.databases)
            .iter()
            .map(|(name, slot)| {
                let (state, error, stats) = match slot {
                    Slot::Connecting { error } => (DatabaseState::Connecting, error.clone(), None),
                    Slot::Serving(probe) => match probe.healthcheck() {
                        Ok(()) => (DatabaseState::Healthy, None, Some(probe.stats())),
                        Err(error) => (
                            DatabaseState::Unhealthy,
                            Some(error.to_string()),
                            Some(probe.stats()),
                        ),
                    },
                };
                DatabaseHealth {
                    name: name.clone(),
                    state,
                    error,
                    stats,
                }
            })
            .collect()
    }

    /// Events published by the relays of the databases served now.
    fn published(&self) -> u64 {
        lock(&self.databases)
            .values()
            .filter_map(|slot| match slot {
                Slot::Serving(probe) => Some(probe.stats().published),
                Slot::Connecting { .. } => None,
            })
            .sum()
    }

    fn healthcheck(&self) -> Result<()> {
        let unhealthy = |reason: String| Err(Error::Unhealthy { reason });
        match &*lock(&self.source) {
            None => return unhealthy("the fleet has not read its databases yet".to_owned()),
            Some(Some(error)) if lock(&self.databases).is_empty() => {
                return unhealthy(format!("the databases cannot be read: {error}"));
            }
            Some(_) => {}
        }
        let databases = self.databases();
        let healthy = databases
            .iter()
            .filter(|d| d.state == DatabaseState::Healthy)
            .count();
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        // database counts are small; the share is rounded up to a whole database
        let needed = (self.min_ready * databases.len() as f64).ceil() as usize;
        if healthy >= needed {
            return Ok(());
        }
        let problems: Vec<String> = databases
            .iter()
            .filter(|d| d.state != DatabaseState::Healthy)
            .take(NAMED_PROBLEMS)
            .map(|d| {
                let why = d.error.as_deref().unwrap_or("connecting");
                format!("{}: {why}", d.name)
            })
            .collect();
        unhealthy(format!(
            "{healthy} of {} databases are served and healthy, {needed} needed; {}",
            databases.len(),
            problems.join("; ")
        ))
    }
}

/// How one database of a fleet is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseState {
    /// Not served yet: its relay starts once it can be reached.
    Connecting,
    /// Served, and its relay's health check passes.
    Healthy,
    /// Served, and its relay's health check fails.
    Unhealthy,
}

/// One database of a fleet: its name, how it is doing and why, and its relay's
/// figures once it is served.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DatabaseHealth {
    /// The name of its entry.
    pub name: String,
    /// How it is doing.
    pub state: DatabaseState,
    /// What is wrong, when something is.
    pub error: Option<String>,
    /// Its relay's figures, once it is served.
    pub stats: Option<RelayStats>,
}

/// A running [`Fleet`](super::Fleet). Dropping it stops the fleet without waiting;
/// [`shutdown`](Self::shutdown) waits until every database is let go.
#[derive(Debug)]
pub struct FleetHandle {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    kill: CancellationToken,
    refresh: Arc<Notify>,
    tracker: TaskTracker,
    task: Option<JoinHandle<()>>,
}

impl FleetHandle {
    pub(super) fn new(
        shared: Arc<Shared>,
        cancel: CancellationToken,
        kill: CancellationToken,
        refresh: Arc<Notify>,
        tracker: TaskTracker,
        task: JoinHandle<()>,
    ) -> Self {
        FleetHandle {
            shared,
            cancel,
            kill,
            refresh,
            tracker,
            task: Some(task),
        }
    }

    /// Every database this process serves or is connecting to, by name: its share of
    /// the list.
    pub fn databases(&self) -> Vec<DatabaseHealth> {
        self.shared.databases()
    }

    /// Events published so far by the relays of the databases this process serves
    /// now (a database let go takes its count with it).
    pub fn published(&self) -> u64 {
        self.shared.published()
    }

    /// How many processes share the list (this one among them), as last read from
    /// the coordinator, and how many databases the list has.
    pub fn sharing(&self) -> (usize, usize) {
        *lock(&self.shared.view)
    }

    /// `Ok` while at least [`FleetConfig::min_ready`](super::FleetConfig::min_ready)
    /// of the databases are served and healthy.
    ///
    /// # Errors
    /// [`Error::Unhealthy`] saying how many are, and naming those that are not.
    pub fn healthcheck(&self) -> Result<()> {
        self.shared.healthcheck()
    }

    /// The fleet's health, to hand to the operations endpoints; it does not keep the
    /// fleet running.
    pub fn probe(&self) -> FleetProbe {
        FleetProbe {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Asks the source for the databases now, without waiting for the next refresh
    /// (`outbox relay` does on SIGHUP).
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }

    /// Stops serving every database and waits until each is let go: its relay shut
    /// down (its shard leases given up) and its connections closed.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl FleetHandle {
    /// Stops every relay at once, as a crash would: batches in flight are dropped
    /// unwritten and the shard leases stay until they expire. For tests and
    /// emergencies.
    pub fn abort(self) {
        self.kill.cancel();
        self.cancel.cancel();
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The health of a running fleet, from [`FleetHandle::probe`].
#[derive(Debug, Clone)]
pub struct FleetProbe {
    shared: Arc<Shared>,
}

impl FleetProbe {
    /// As [`FleetHandle::healthcheck`].
    ///
    /// # Errors
    /// As [`FleetHandle::healthcheck`].
    pub fn healthcheck(&self) -> Result<()> {
        self.shared.healthcheck()
    }

    /// As [`FleetHandle::databases`].
    pub fn databases(&self) -> Vec<DatabaseHealth> {
        self.shared.databases()
    }
}
