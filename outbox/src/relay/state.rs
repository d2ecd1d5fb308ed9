//! What a running relay knows about itself: counters, health, backlog.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::backlog::Backlog;
use crate::error::{Error, Result};

/// A snapshot of a relay's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[doc(alias = "Stats")]
pub struct RelayStats {
    /// This relay instance's id.
    pub relay_id: String,
    /// Whether the relay runs (false when disabled by configuration or stopped).
    pub running: bool,
    /// Events this relay published since it started.
    pub published: u64,
    /// Failed publish attempts since it started.
    pub failed: u64,
    /// Events this relay dead-lettered since it started.
    pub dead_lettered: u64,
    /// What waits in the table, as of the last backlog check.
    pub backlog: Backlog,
    /// Shards this relay holds.
    pub owned_shards: usize,
    /// Time since the last cycle that completed without error.
    pub since_last_success: Option<Duration>,
    /// The last error, if the last cycle or check failed.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Health {
    started: Instant,
    running: bool,
    last_success: Option<Instant>,
    last_error: Option<String>,
    broker_error: Option<String>,
    database_error: Option<String>,
    backlog: Backlog,
    backlog_at: chrono::DateTime<Utc>,
    owned_shards: usize,
    /// Problems found at run time that make the relay unhealthy, by kind.
    concerns: BTreeMap<Concern, String>,
}

/// A kind of problem the relay finds while it runs, each set and cleared on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Concern {
    /// Pending events in shards the relay's shard count does not cover.
    OutsideShards,
    /// Another service's relays publish the same table.
    OtherService,
    /// Nothing delivered to the broker for longer than the stall timeout.
    Stalled,
    /// Archive mode without an archive table.
    ArchiveMissing,
}

/// Shared between the relay's tasks and its handle.
#[derive(Debug)]
pub(crate) struct State {
    relay_id: String,
    health_timeout: Duration,
    published: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    health: Mutex<Health>,
}

impl State {
    pub(crate) fn new(relay_id: String, health_timeout: Duration, running: bool) -> Self {
        State {
            relay_id,
            health_timeout,
            published: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            health: Mutex::new(Health {
                started: Instant::now(),
                running,
                last_success: None,
                last_error: None,
                broker_error: None,
                database_error: None,
                backlog: Backlog::default(),
                backlog_at: Utc::now(),
                owned_shards: 0,
                concerns: BTreeMap::new(),
            }),
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn count(&self, published: u64, failed: u64, dead_lettered: u64) {
        self.published.fetch_add(published, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
        self.dead_lettered
            .fetch_add(dead_lettered, Ordering::Relaxed);
    }

    /// A cycle ended: `Ok` when it claimed, published and wrote back without error.
    pub(crate) fn cycle(&self, outcome: std::result::Result<usize, String>) {
        let mut health = self.health();
        match outcome {
            Ok(owned_shards) => {
                health.last_success = Some(Instant::now());
                health.last_error = None;
                health.owned_shards = owned_shards;
            }
            Err(error) => health.last_error = Some(error),
        }
    }

    pub(crate) fn owned_shards(&self, owned: usize) {
        self.health().owned_shards = owned;
    }

    pub(crate) fn backlog(&self, backlog: Backlog) {
        let mut health = self.health();
        health.backlog = backlog;
        health.backlog_at = Utc::now();
    }

    /// Records a problem of kind `concern` found at run time, or that there is none.
    pub(crate) fn concern(&self, concern: Concern, problem: Option<String>) {
        let mut health = self.health();
        match problem {
            Some(problem) => health.concerns.insert(concern, problem),
            None => health.concerns.remove(&concern),
        };
    }

    pub(crate) fn probes(
        &self,
        broker: std::result::Result<(), String>,
        database: std::result::Result<(), String>,
    ) {
        let mut health = self.health();
        health.broker_error = broker.err();
        health.database_error = database.err();
    }

    pub(crate) fn stopped(&self) {
        let mut health = self.health();
        health.running = false;
        health.owned_shards = 0;
    }

    pub(crate) fn stats(&self) -> RelayStats {
        let health = self.health();
        RelayStats {
            relay_id: self.relay_id.clone(),
            running: health.running,
            published: self.published.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            backlog: health.backlog,
            owned_shards: health.owned_shards,
            since_last_success: health.last_success.map(|at| at.elapsed()),
            last_error: health.last_error.clone(),
        }
    }

    /// Healthy when running, no problem was found at run time (pending events in
    /// shards the relay's shard count does not cover, another service on the table,
    /// nothing delivered for the stall timeout), a cycle succeeded within the
    /// health timeout, and the last probes reached the broker and the database.
    pub(crate) fn healthcheck(&self) -> Result<()> {
        let health = self.health();
        let unhealthy = |reason: String| Err(Error::Unhealthy { reason });
        if !health.running {
            return unhealthy("the relay is not running".to_owned());
        }
        // Every problem found, so that a relay standing aside says why it cannot
        // deliver (a certificate, a password) and not only that it stood aside.
        let problems: Vec<String> = health
            .concerns
            .values()
            .cloned()
            .chain(
                health
                    .broker_error
                    .as_ref()
                    .map(|error| format!("broker unreachable: {error}")),
            )
            .chain(
                health
                    .database_error
                    .as_ref()
                    .map(|error| format!("database unreachable: {error}")),
            )
            .collect();
        if !problems.is_empty() {
            return unhealthy(problems.join("; "));
        }
        let since = health.last_success.unwrap_or(health.started).elapsed();
        if since > self.health_timeout {
            let last = health.last_error.as_deref().unwrap_or("none recorded");
            return unhealthy(format!(
                "no successful cycle for {}s (limit {}s); last error: {last}",
                since.as_secs(),
                self.health_timeout.as_secs()
            ));
        }
        Ok(())
    }
}
