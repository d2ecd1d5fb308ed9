//! Housekeeping beside the relay loop: the backlog figures, the orphan sweep, the
//! health probe and the cleanup of published events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Inner, metric_names};
use crate::publisher::Publisher;

/// How often the backlog (pending count, oldest age) is measured. With the lease
/// round (every third of the lease time) and the idle poll (one query for every
/// owned shard), an idle relay makes about one query a second.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often parked events whose failed event went through by other means than the
/// relay's write-back (a manual call; a relay that lost its lease while parking) are
/// looked for: one pass over the parked index, then a probe per parked key.
const ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Rows deleted per cleanup statement.
const CLEANUP_BATCH: u64 = 1000;

impl<P: Publisher> Inner<P> {
    /// Measures the backlog and sweeps for orphaned parked events, each on its own
    /// timer; failures are reported and tried again at the next turn.
    pub(super) async fn housekeeping(self: Arc<Self>, cancel: CancellationToken) {
        // At once, then on the interval: a key left parked by an earlier version goes
        // back in line when the relay starts.
        let mut next_sweep = Instant::now();
        loop {
            if let Err(error) = self.refresh_backlog().await {
                warn!(relay = %self.relay_id, %error, "could not measure the backlog");
                self.state.cycle(Err(error.to_string()));
            }
            if Instant::now() >= next_sweep {
                if let Err(error) = self.sweep_orphans().await {
                    warn!(relay = %self.relay_id, %error, "could not sweep for orphaned parked events");
                }
                next_sweep = Instant::now() + ORPHAN_SWEEP_INTERVAL;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(BACKLOG_INTERVAL) => {}
            }
        }
    }

    /// Checks the broker and the database on a timer, for `healthcheck`.
    pub(super) async fn probe(self: Arc<Self>, cancel: CancellationToken) {
        let every = (self.config.health_timeout / 4)
            .clamp(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            let broker = self
                .publisher
                .check()
                .await
                .map_err(|e| e.message().to_owned());
            let database = self.db.ping().await.map_err(|e| e.to_string());
            self.state.probes(broker, database);
            let healthy = self.state.healthcheck().is_ok();
            metrics::gauge!(metric_names::HEALTHY, "service" => self.config.service_name.clone())
                .set(if healthy { 1.0 } else { 0.0 });
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Unparks the events whose key has no failed pending event any more, in one
    /// transaction of the relay's (see [`Dialect::begin`](crate::sql::Dialect::begin)).
    pub(super) async fn sweep_orphans(&self) -> crate::error::Result<u64> {
        let txn = self.dialect()?.begin(&self.db).await?;
        let unparked = self.outbox.unpark_orphans(&txn).await?;
        txn.commit().await?;
        Ok(unparked)
    }

    /// Deletes published events past their retention, on the configured interval.
    pub(super) async fn cleanup(self: Arc<Self>, cancel: CancellationToken) {
        let retention =
            Duration::from_secs(u64::from(self.config.cleanup_after_days) * 24 * 60 * 60);
        loop {
            match self
                .outbox
                .cleanup(&self.db, retention, CLEANUP_BATCH)
                .await
            {
                Ok(0) => {}
                Ok(deleted) => debug!(deleted, "cleanup removed published events"),
                Err(error) => warn!(%error, "cleanup failed; it runs again at the next interval"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.config.cleanup_interval) => {}
            }
        }
    }
}
