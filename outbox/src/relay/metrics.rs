//! The relay's metrics: their names, and what each batch and backlog reading records.

use chrono::{DateTime, Utc};
use tracing::error;

use super::outcome::{Failure, as_u64};
use super::setup::Setup;
use super::state::Concern;
use crate::backlog::Backlog;
use crate::publisher::PublishErrorKind;
use crate::wire::Message;

/// Metric names (through the `metrics` facade), each labelled with `service`, and
/// with `database` in a [`Fleet`](crate::fleet::Fleet).
#[doc(alias = "metric_names")]
pub mod relay_metric_names {
    /// Counter: events published.
    pub const PUBLISHED: &str = "outbox_published_total";
    /// Counter: failed publish attempts (label `kind`: `transient` or `permanent`).
    pub const FAILED: &str = "outbox_publish_failures_total";
    /// Counter: events dead-lettered.
    pub const DEAD_LETTERED: &str = "outbox_dead_lettered_total";
    /// Gauge: events pending.
    pub const PENDING: &str = "outbox_pending";
    /// Gauge: events dead-lettered and not replayed.
    pub const DEAD_LETTERS: &str = "outbox_dead_letters";
    /// Gauge: age of the oldest pending event, in seconds.
    pub const OLDEST_PENDING_AGE: &str = "outbox_oldest_pending_age_seconds";
    /// Gauge: pending events in shards this relay's shard count does not cover (a
    /// writer with more shards than the relays); anything above zero is a
    /// misconfiguration.
    pub const PENDING_OUTSIDE_SHARDS: &str = "outbox_pending_outside_shards";
    /// Histogram: time from store to broker acknowledgement, in seconds.
    pub const PUBLISH_LATENCY: &str = "outbox_publish_latency_seconds";
    /// Counter: events a poll found more than a second after their store, in shards
    /// no wake-up named: their writers do not wake the relays (build the writers'
    /// outbox with [`Outbox::on`](crate::Outbox::on)). The relay also logs it once.
    pub const FOUND_BY_POLL: &str = "outbox_relay_found_by_poll_total";
    /// Counter: listening connections (PostgreSQL) that did not hear the relay's own
    /// notification within 5 seconds: behind a pooler in transaction mode, set
    /// `OUTBOX_LISTEN_URL` to a direct connection. The relay also logs it.
    pub const LISTEN_UNHEARD: &str = "outbox_relay_listen_unheard_total";
    /// Gauge: 1 while this relay's health check passes, 0 while it fails (updated at
    /// every probe of the broker and the database).
    pub const HEALTHY: &str = "outbox_relay_healthy";

    /// Gives every metric its help text and unit in the installed `metrics` recorder
    /// (Prometheus shows them as `# HELP`). `outbox::http::install_prometheus` calls
    /// it; call it after installing a recorder of your own.
    pub fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(PUBLISHED, Unit::Count, "Events published to the broker.");
        describe_counter!(
            FAILED,
            Unit::Count,
            "Failure publish attempts, by kind (transient or permanent)."
        );
        describe_counter!(DEAD_LETTERED, Unit::Count, "Events dead-lettered.");
        describe_gauge!(PENDING, Unit::Count, "Events waiting to be published.");
        describe_gauge!(
            DEAD_LETTERS,
            Unit::Count,
            "Dead-lettered events not replayed."
        );
        describe_gauge!(
            OLDEST_PENDING_AGE,
            Unit::Seconds,
            "Age of the oldest pending event."
        );
        describe_gauge!(
            PENDING_OUTSIDE_SHARDS,
            Unit::Count,
            "Pending events in shards the relay's shard count does not cover (a misconfiguration)."
        );
        describe_histogram!(
            PUBLISH_LATENCY,
            Unit::Seconds,
            "Time from store to broker acknowledgement."
        );
        describe_counter!(
            FOUND_BY_POLL,
            Unit::Count,
            "Events found by polling more than a second after their store: writers that do not wake the relays."
        );
        describe_counter!(
            LISTEN_UNHEARD,
            Unit::Count,
            "Listening connections that did not hear the relay's own notification: LISTEN through a pooler in transaction mode."
        );
        describe_gauge!(
            HEALTHY,
            "1 while the relay's health check passes, 0 while it fails."
        );
    }
}

/// Records what a batch published and what failed, in the metrics and the relay's
/// figures.
pub(super) fn record_batch(
    setup: &Setup,
    published: &[&Message],
    failed: &[Failure<'_>],
    acked_at: DateTime<Utc>,
) {
    let labels = setup.labels();
    metrics::counter!(relay_metric_names::PUBLISHED, labels.clone())
        .increment(as_u64(published.len()));
    let latency = metrics::histogram!(relay_metric_names::PUBLISH_LATENCY, labels.clone());
    for message in published {
        latency.record(
            (acked_at - message.created_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }
    for Failure { error, .. } in failed {
        let kind = if error.kind() == PublishErrorKind::Permanent {
            "permanent"
        } else {
            "transient"
        };
        let mut labels = labels.clone();
        labels.push(metrics::Label::new("kind", kind));
        metrics::counter!(relay_metric_names::FAILED, labels).increment(1);
    }
    let dead = as_u64(failed.iter().filter(|f| f.dead_lettered()).count());
    metrics::counter!(relay_metric_names::DEAD_LETTERED, labels).increment(dead);
    setup
        .state
        .count(as_u64(published.len()), as_u64(failed.len()), dead);
}

/// Records a backlog reading: pending events, dead letters, the oldest pending age
/// (by the database's clock, `now`), and pending events outside the relay's shards,
/// which is a misconfiguration the health check reports.
pub(super) fn record_backlog(setup: &Setup, backlog: Backlog, outside: u64, now: DateTime<Utc>) {
    let labels = setup.labels();
    #[allow(clippy::cast_precision_loss)]
    // gauges are f64; counts this large are not exact anyway
    {
        metrics::gauge!(relay_metric_names::PENDING, labels.clone()).set(backlog.pending as f64);
        metrics::gauge!(relay_metric_names::DEAD_LETTERS, labels.clone())
            .set(backlog.dead_lettered as f64);
        metrics::gauge!(relay_metric_names::PENDING_OUTSIDE_SHARDS, labels.clone())
            .set(outside as f64);
    }
    let age = backlog.oldest_pending_age(now).unwrap_or_default();
    metrics::gauge!(relay_metric_names::OLDEST_PENDING_AGE, labels).set(age.as_secs_f64());
    setup.state.backlog(backlog);
    // Events a writer put in shards no relay of this count leases would wait forever.
    let problem = (outside > 0).then(|| {
        format!(
            "{outside} pending events are in shards at or above this relay's shard count ({}): \
             their writers use more shards; give writers and relays the same count (OUTBOX_SHARDS)",
            setup.outbox.shards()
        )
    });
    if let Some(problem) = &problem {
        error!(relay = %setup.relay_id, "{problem}");
    }
    setup.state.concern(Concern::OutsideShards, problem);
}
