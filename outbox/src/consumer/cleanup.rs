//! The consumer's inbox cleanup: its records older than the dedup window deleted on
//! an interval.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt as _;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Error;
use crate::inbox::Inbox;

/// Deletes `consumer`'s inbox records older than `window` every `every`, until
/// cancelled.
pub(super) async fn cleanup(
    db: DatabaseConnection,
    inbox: Inbox,
    consumer: String,
    every: Duration,
    window: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // A panic here (a bug) must not end cleanup for good without a word.
        let cleaned = AssertUnwindSafe(inbox.cleanup(&db, &consumer, window))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(Error::Panicked {
                    what: "inbox cleanup",
                    message: crate::panic::message(&*panic),
                })
            });
        match cleaned {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "inbox cleanup"),
            Err(error) => warn!(%error, "inbox cleanup failed; it runs again at the next interval"),
        }
    }
}
