//! [`ConsumerHandle`]: a running consumer's figures, health and shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::halt::Halt;
use super::metrics::Counters;
use super::{ConsumerProbe, ConsumerStats};
use crate::error::{Error, Result};

/// A running [`Consumer`](super::Consumer): read its figures, stop it.
///
/// Dropping the handle stops the consumer as [`shutdown`](Self::shutdown) does,
/// without waiting.
#[must_use = "dropping the handle stops the consumer"]
#[derive(Debug)]
pub struct ConsumerHandle {
    pub(super) name: String,
    pub(super) cancel: CancellationToken,
    pub(super) counters: Arc<Counters>,
    pub(super) halt: Halt,
    pub(super) probe: ConsumerProbe,
    /// Sent by the polling thread once it has stopped: how many handlers outlasted
    /// the shutdown timeout.
    pub(super) stopped: Option<oneshot::Receiver<usize>>,
    pub(super) cleanup: Option<tokio::task::JoinHandle<()>>,
    pub(super) replays: Option<tokio::task::JoinHandle<()>>,
    pub(super) shutdown_timeout: Duration,
}

impl ConsumerHandle {
    /// The consumer's figures since it started.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// A cheap, cloneable view of the consumer's health, for a readiness endpoint
    /// (`outbox::http::Endpoints::new` takes it, with the `http` feature) or a supervisor.
    pub fn probe(&self) -> ConsumerProbe {
        self.probe.clone()
    }

    /// Why the consumer stopped on its own, if it did: a bug on its polling thread or
    /// in a worker outside any message's attempt. It consumes nothing more; its
    /// messages not done with are delivered again when it is started anew. Report it
    /// in your health check.
    pub fn failure(&self) -> Option<String> {
        self.halt.reason().map(str::to_owned)
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the consumer: no new message starts, the handlers in flight finish (a
    /// retry waiting for its backoff is abandoned: its message comes again), the
    /// stored offsets are committed, and the consumer leaves its group.
    ///
    /// # Errors
    /// [`Error::ConsumerShutdownTimeout`] when a handler was still running after
    /// `shutdown_timeout` (its message is delivered again, and the inbox decides by its
    /// transaction's outcome), or leaving the group took 10 s more;
    /// [`Error::ConsumerFailed`] when it had stopped on its own (see
    /// [`failure`](Self::failure)).
    pub async fn shutdown(mut self) -> Result<()> {
        self.cancel.cancel();
        for task in [self.cleanup.take(), self.replays.take()]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        let Some(stopped) = self.stopped.take() else {
            return Ok(());
        };
        let limit = self.shutdown_timeout + Duration::from_secs(10);
        let stopped = tokio::time::timeout(limit, stopped).await;
        if let Some(reason) = self.halt.reason() {
            return Err(Error::ConsumerFailed(reason.to_owned()));
        }
        match stopped {
            Ok(Ok(0)) => {
                info!(consumer = %self.name, "consumer stopped");
                Ok(())
            }
            Ok(Ok(_late)) => Err(Error::ConsumerShutdownTimeout(self.shutdown_timeout)),
            Ok(Err(_)) => Err(Error::ConsumerFailed(
                "the polling thread ended without a word".to_owned(),
            )),
            Err(_) => Err(Error::ConsumerShutdownTimeout(limit)),
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
