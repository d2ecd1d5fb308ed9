//! A consumer's health: which message each partition's worker is on and since when,
//! how many partitions are assigned, and whether the consumer failed; read by
//! [`ConsumerProbe`] (and `/readyz` through [`Endpoints`](crate::http::Endpoints)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::halt::Halt;
use super::metrics;
use crate::error::{Error, Result};

/// The message a partition's worker is on.
#[derive(Debug, Clone)]
struct Working {
    offset: i64,
    since: Instant,
    failures: u32,
    last_error: Option<String>,
}

/// What every worker reports, and the probe reads.
#[derive(Debug, Default)]
pub(super) struct Progress {
    working: Mutex<HashMap<(String, i32), Working>>,
    /// Partitions assigned to this consumer now.
    pub(super) assigned: AtomicUsize,
}

impl Progress {
    fn working(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Working>> {
        self.working.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker of `topic`/`partition` starts on the message at `offset`.
    pub(super) fn begin(&self, topic: &str, partition: i32, offset: i64) {
        self.working().insert(
            (topic.to_owned(), partition),
            Working {
                offset,
                since: Instant::now(),
                failures: 0,
                last_error: None,
            },
        );
    }

    /// An attempt of the message of `topic`/`partition` failed with `error`.
    pub(super) fn failed(&self, consumer: &str, topic: &str, partition: i32, error: &str) {
        let mut working = self.working();
        if let Some(work) = working.get_mut(&(topic.to_owned(), partition)) {
            work.failures = work.failures.saturating_add(1);
            work.last_error = Some(error.chars().take(500).collect());
        }
        metrics::retrying(
            consumer,
            working.values().filter(|w| w.failures > 0).count(),
        );
    }

    /// The worker of `topic`/`partition` is done with its message (or stops). The
    /// gauge changes only when the message had failed: most messages leave it be.
    pub(super) fn end(&self, consumer: &str, topic: &str, partition: i32) {
        let mut working = self.working();
        let removed = working.remove(&(topic.to_owned(), partition));
        if removed.is_some_and(|work| work.failures > 0) {
            metrics::retrying(
                consumer,
                working.values().filter(|w| w.failures > 0).count(),
            );
        }
    }
}

/// A cheap, cloneable view of a running consumer's health, from
/// [`ConsumerHandle::probe`](super::ConsumerHandle::probe), for probes that outlive
/// a borrow of the handle (an HTTP readiness endpoint, a supervisor).
#[derive(Debug, Clone)]
pub struct ConsumerProbe {
    pub(super) progress: Arc<Progress>,
    pub(super) halt: Halt,
    pub(super) stopped: CancellationToken,
    pub(super) stuck_after: Duration,
}

impl ConsumerProbe {
    /// `Ok` while the consumer runs and no partition has been on one message longer
    /// than `stuck_after` (a handler that keeps failing, a database away): then
    /// [`Error::Unhealthy`] names the partition, the offset, for how long, and the
    /// last error. Also unhealthy once the consumer failed or was stopped.
    ///
    /// # Errors
    /// [`Error::Unhealthy`] saying what is wrong.
    pub fn healthcheck(&self) -> Result<()> {
        let unhealthy = |reason: String| Err(Error::Unhealthy { reason });
        if let Some(reason) = self.halt.reason() {
            return unhealthy(format!("the consumer failed: {reason}"));
        }
        if self.stopped.is_cancelled() {
            return unhealthy("the consumer is not running".to_owned());
        }
        let working = self.progress.working();
        let stuck = working
            .iter()
            .filter(|(_, work)| work.since.elapsed() > self.stuck_after)
            .max_by_key(|(_, work)| work.since.elapsed());
        if let Some(((topic, partition), work)) = stuck {
            return unhealthy(format!(
                "{topic}/{partition} has been on offset {} for {}s ({} failed attempts; last error: {})",
                work.offset,
                work.since.elapsed().as_secs(),
                work.failures,
                work.last_error.as_deref().unwrap_or("-"),
            ));
        }
        Ok(())
    }

    /// How many partitions are assigned to this consumer now.
    pub fn assigned_partitions(&self) -> usize {
        self.progress.assigned.load(Ordering::Relaxed)
    }

    /// How many partitions are on a message that failed at least once.
    pub fn retrying_partitions(&self) -> usize {
        self.progress
            .working()
            .values()
            .filter(|work| work.failures > 0)
            .count()
    }
}
