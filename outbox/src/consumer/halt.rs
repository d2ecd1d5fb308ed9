//! [`Halt`]: the latch that stops a consumer on its own, and keeps why.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;
use tracing::error;

/// Why a consumer stopped on its own: the first reason given; giving one stops the
/// consumer (its polling thread and every worker).
#[derive(Debug, Clone)]
pub(super) struct Halt {
    reason: Arc<OnceLock<String>>,
    /// The consumer's token: cancelling it stops the polling thread and the workers.
    consumer: CancellationToken,
}

impl Halt {
    /// A latch not yet given a reason, that stops the consumer through `consumer`.
    pub(super) fn new(consumer: CancellationToken) -> Self {
        Halt {
            reason: Arc::new(OnceLock::new()),
            consumer,
        }
    }

    /// Stops the consumer for `reason`.
    pub(super) fn stop(&self, reason: String) {
        error!(%reason, "the consumer failed and stops; its messages not done with are delivered again after a restart");
        let _ = self.reason.set(reason);
        self.consumer.cancel();
    }

    /// Why the consumer stopped on its own, if it did.
    pub(super) fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}
