//! The consumer's figures: counters behind [`ConsumerStats`], and the metrics it
//! records through the `metrics` facade.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Metric names of the consumer (through the `metrics` facade), each labelled with
/// `consumer`.
pub mod consumer_metric_names {
    /// Counter: messages done with, by `outcome`: `processed` (the handler's
    /// transaction committed), `duplicate` (found in the inbox), `dead_lettered`,
    /// `skipped` (an event type the consumer has no place for, with
    /// `skip_unknown_events`).
    pub const MESSAGES: &str = "outbox_consumer_messages_total";
    /// Counter: failed handler attempts (each rolled back).
    pub const HANDLER_FAILURES: &str = "outbox_consumer_handler_failures_total";
    /// Counter: dead letters replayed and applied (see
    /// [`Inbox::request_replay`](crate::Inbox::request_replay)).
    pub const REPLAYED: &str = "outbox_consumer_replayed_total";
    /// Histogram: time to apply one event (transaction, inbox record, handler,
    /// commit), in seconds.
    pub const HANDLE_TIME: &str = "outbox_consumer_handle_seconds";
    /// Gauge: messages of a partition not yet applied (labels `topic`, `partition`):
    /// librdkafka's `consumer_lag_stored` (high watermark minus the offset stored
    /// after the last applied message), read from its statistics every
    /// `statistics.interval.ms` (10 s unless set); 0 once the partition is revoked.
    pub const LAG: &str = "outbox_consumer_lag";
    /// Gauge: partitions whose worker is on a message that failed at least once
    /// (retrying, or waiting for the database): each holds up its partition.
    pub const RETRYING_PARTITIONS: &str = "outbox_consumer_retrying_partitions";
    /// Gauge: partitions assigned to this consumer.
    pub const ASSIGNED_PARTITIONS: &str = "outbox_consumer_assigned_partitions";
    /// Counter: rebalances this consumer took part in, by `kind`: `assign`, `revoke`.
    pub const REBALANCES: &str = "outbox_consumer_rebalances_total";

    /// Gives every consumer metric its help text and unit in the installed `metrics`
    /// recorder.
    pub fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            MESSAGES,
            Unit::Count,
            "Messages the consumer is done with, by outcome."
        );
        describe_counter!(HANDLER_FAILURES, Unit::Count, "Failed handler attempts.");
        describe_counter!(REPLAYED, Unit::Count, "Dead letters replayed and applied.");
        describe_histogram!(HANDLE_TIME, Unit::Seconds, "Time to apply one event.");
        describe_gauge!(LAG, Unit::Count, "Messages of a partition not yet applied.");
        describe_gauge!(
            RETRYING_PARTITIONS,
            Unit::Count,
            "Partitions held up by a message that failed at least once."
        );
        describe_gauge!(ASSIGNED_PARTITIONS, Unit::Count, "Partitions assigned.");
        describe_counter!(REBALANCES, Unit::Count, "Rebalances, by kind.");
    }
}

use consumer_metric_names::{
    ASSIGNED_PARTITIONS, HANDLE_TIME, HANDLER_FAILURES, LAG, MESSAGES, REBALANCES, REPLAYED,
    RETRYING_PARTITIONS,
};

/// Sets the gauge of partitions held up by a failing message.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
pub(super) fn retrying(consumer: &str, partitions: usize) {
    metrics::gauge!(RETRYING_PARTITIONS, "consumer" => consumer.to_owned()).set(partitions as f64);
}

/// Counts a rebalance and sets the assigned partitions' gauge.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
pub(super) fn rebalanced(consumer: &str, kind: &'static str, assigned: usize) {
    metrics::counter!(REBALANCES, "consumer" => consumer.to_owned(), "kind" => kind).increment(1);
    metrics::gauge!(ASSIGNED_PARTITIONS, "consumer" => consumer.to_owned()).set(assigned as f64);
}

/// Sets the lag gauge of one partition.
pub(super) fn lag(consumer: &str, topic: &str, partition: i32, lag: i64) {
    #[allow(clippy::cast_precision_loss)] // a lag is far below 2^52
    let lag = lag.max(0) as f64;
    metrics::gauge!(
        LAG,
        "consumer" => consumer.to_owned(),
        "topic" => topic.to_owned(),
        "partition" => partition.to_string()
    )
    .set(lag);
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Processed,
    Duplicate,
    DeadLettered,
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Skipped => "skipped",
        }
    }
}

/// A snapshot of a consumer's figures since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Events applied: the handler's transaction committed.
    pub processed: u64,
    /// Deliveries found in the inbox and skipped.
    pub duplicates: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Messages skipped as events the consumer has no type for.
    pub skipped: u64,
    /// Failed handler attempts.
    pub handler_failures: u64,
    /// Dead letters replayed and applied (also counted in `processed`).
    pub replayed: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    processed: AtomicU64,
    duplicates: AtomicU64,
    dead_lettered: AtomicU64,
    skipped: AtomicU64,
    handler_failures: AtomicU64,
    replayed: AtomicU64,
}

impl Counters {
    pub(super) fn record(&self, consumer: &str, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Processed => &self.processed,
            Outcome::Duplicate => &self.duplicates,
            Outcome::DeadLettered => &self.dead_lettered,
            Outcome::Skipped => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(MESSAGES, "consumer" => consumer.to_owned(), "outcome" => outcome.label())
            .increment(1);
    }

    pub(super) fn handled(&self, consumer: &str, took: Duration) {
        metrics::histogram!(HANDLE_TIME, "consumer" => consumer.to_owned())
            .record(took.as_secs_f64());
    }

    pub(super) fn failed(&self, consumer: &str) {
        self.handler_failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(HANDLER_FAILURES, "consumer" => consumer.to_owned()).increment(1);
    }

    pub(super) fn replayed(&self, consumer: &str) {
        self.replayed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(REPLAYED, "consumer" => consumer.to_owned()).increment(1);
    }

    pub(super) fn snapshot(&self) -> ConsumerStats {
        ConsumerStats {
            processed: self.processed.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            handler_failures: self.handler_failures.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
        }
    }
}
