//! Housekeeping beside the relay loop, each a task of its own: the backlog figures
//! and the orphan sweep, the health probe, and the cleanup of published events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::batch::Batcher;
use super::keeper::Keeper;
use super::metrics;
use super::metrics::relay_metric_names;
use super::setup::Setup;
use crate::error::Result;
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

/// Measures the backlog and sweeps for orphaned parked events, each on its own timer;
/// failures are reported and tried again at the next turn.
pub(super) async fn backlog_and_sweep(
    setup: Arc<Setup>,
    keeper: Arc<Keeper>,
    cancel: CancellationToken,
) {
    // At once, then on the interval: a key left parked while no relay ran goes back
    // in line when the relay starts.
    let mut next_sweep = Instant::now();
    loop {
        if let Err(error) = refresh_backlog(&setup, &keeper).await {
            warn!(relay = %setup.relay_id, %error, "could not measure the backlog");
            setup.state.cycle(Err(error.to_string()));
        }
        if Instant::now() >= next_sweep {
            if let Err(error) = sweep_orphans(&setup).await {
                warn!(relay = %setup.relay_id, %error, "could not sweep for orphaned parked events");
            }
            next_sweep = Instant::now() + ORPHAN_SWEEP_INTERVAL;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(BACKLOG_INTERVAL) => {}
        }
    }
}

async fn refresh_backlog(setup: &Setup, keeper: &Keeper) -> Result<()> {
    let backlog = setup.outbox.backlog(&setup.db).await?;
    let outside = setup.outbox.pending_outside_shards(&setup.db).await?;
    metrics::record_backlog(setup, backlog, outside, keeper.clock.now());
    Ok(())
}

/// Unparks the events whose key has no failed pending event any more, in one
/// transaction of the relay's (see [`Dialect::begin`](crate::sql::Dialect::begin)).
pub(super) async fn sweep_orphans(setup: &Setup) -> Result<u64> {
    let txn = setup.dialect.begin(&setup.db).await?;
    let unparked = setup.outbox.unpark_orphans(&txn).await?;
    txn.commit().await?;
    Ok(unparked)
}

/// Checks the broker and the database on a timer, for `healthcheck`.
pub(super) async fn probe<P: Publisher>(
    setup: Arc<Setup>,
    batcher: Arc<Batcher<P>>,
    cancel: CancellationToken,
) {
    let every = (setup.config.health_timeout / 4)
        .clamp(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let broker = batcher
            .publisher()
            .check()
            .await
            .map_err(|e| e.message().to_owned());
        let database = setup.db.ping().await.map_err(|e| e.to_string());
        setup.state.probes(broker, database);
        let healthy = setup.state.healthcheck().is_ok();
        ::metrics::gauge!(relay_metric_names::HEALTHY, setup.labels()).set(if healthy {
            1.0
        } else {
            0.0
        });
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Deletes published events past their retention, on the configured interval.
pub(super) async fn cleanup(setup: Arc<Setup>, cancel: CancellationToken) {
    let retention = Duration::from_secs(u64::from(setup.config.cleanup_after_days) * 24 * 60 * 60);
    loop {
        match setup
            .outbox
            .cleanup(&setup.db, retention, CLEANUP_BATCH)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => debug!(deleted, "cleanup removed published events"),
            Err(error) => warn!(%error, "cleanup failed; it runs again at the next interval"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(setup.config.cleanup_interval) => {}
        }
    }
}
