//! The handle of a running relay, and the health probe it hands out.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::{RelayStats, State};
use crate::error::{Error, Result};

/// A running relay: check it, read its figures, stop it.
///
/// Dropping the handle stops the relay as [`shutdown`](Self::shutdown) does, without
/// waiting for it: keep it for as long as the relay should run.
#[must_use = "dropping the handle stops the relay"]
#[derive(Debug)]
pub struct RelayHandle {
    pub(super) state: Arc<State>,
    pub(super) relay_id: String,
    pub(super) shutdown_timeout: Duration,
    pub(super) cancel: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) tasks: Vec<JoinHandle<()>>,
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
    pub fn stats(&self) -> RelayStats {
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
    ///
    /// Unlike a crash, it leaves the process's connections open: the queries it cuts
    /// short hand theirs back to the pool as they were. A test that crashes a relay
    /// beside others is faithful only when the crashed one has a pool (and a runtime)
    /// of its own, which die with it.
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
    pub fn stats(&self) -> RelayStats {
        self.state.stats()
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
