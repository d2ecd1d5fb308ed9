//! The scenarios of `outbox-bench all`, and the report they fill.

mod blocked;
mod consumer;
mod cpu;
mod delayed;
mod fixtures;
mod fleet;
mod formats;
mod latency;
mod probes;
mod processes;
mod relay;
mod report;
mod scale;
mod store;

pub(crate) use self::blocked::run_blocked;
pub(crate) use self::consumer::run_consumer;
pub(crate) use self::delayed::run_delayed;
pub(crate) use self::fleet::run_fleet;
pub(crate) use self::formats::run_formats;
pub(crate) use self::latency::run_latency;
pub(crate) use self::processes::relay_process;
pub(crate) use self::relay::run_relay;
pub(crate) use self::store::run_store;

use std::time::Duration;

use self::blocked::blocked_key;
use self::delayed::delayed;
use self::fleet::fleet;
use self::formats::formats;
use self::latency::latency;
use self::processes::idle_relay;
use self::report::Report;
use self::scale::scale;
use self::store::store_overhead;

pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

/// How much each scenario does.
#[derive(Debug, Clone)]
pub(crate) struct Size {
    quick: bool,
    store_transactions: usize,
    relay_events: usize,
    /// Events per run of the formats scenario.
    format_events: usize,
    /// Events per run of the fleet scenario (in one database, then over eight).
    fleet_events: usize,
    /// Idle databases beside the active one in the fleet's latency rows.
    fleet_idle: usize,
    /// Events the active database stores (20 a second) in each of the fleet's
    /// latency runs.
    fleet_latency_events: usize,
    /// Events the delayed scenario drains.
    delayed_events: usize,
    /// Events waiting for a due time in the delayed scenario.
    scheduled: usize,
    completions: Vec<outbox::Completion>,
    /// Shards one relay processes at once in the relay scenario.
    concurrency: usize,
    scale_events: usize,
    retained: usize,
    blocked: usize,
    flowing: usize,
    latency: Duration,
    rate: u64,
    idle: Duration,
    sparse_events: usize,
    idle_warm: Duration,
    idle_measure: Duration,
}

impl Size {
    pub(crate) fn quick() -> Self {
        Size {
            quick: true,
            store_transactions: 200,
            relay_events: 5_000,
            format_events: 3_000,
            fleet_events: 4_000,
            fleet_idle: 9,
            fleet_latency_events: 40,
            delayed_events: 3_000,
            scheduled: 20_000,
            completions: ALL_COMPLETIONS.to_vec(),
            concurrency: outbox::RelayConfig::default().concurrency,
            scale_events: 3_000,
            retained: 10_000,
            blocked: 5_000,
            flowing: 3_000,
            latency: Duration::from_secs(2),
            rate: 1_000,
            idle: Duration::from_secs(2),
            sparse_events: 3,
            idle_warm: Duration::from_secs(3),
            idle_measure: Duration::from_secs(5),
        }
    }

    /// The full sizes, with `events` for the relay throughput scenario in the
    /// completion modes `completions` (every mode when empty).
    pub(crate) fn relay_only(
        events: usize,
        completions: Vec<outbox::Completion>,
        concurrency: Option<usize>,
    ) -> Self {
        let completions = if completions.is_empty() {
            ALL_COMPLETIONS.to_vec()
        } else {
            completions
        };
        let full = Self::full();
        Size {
            relay_events: events,
            completions,
            concurrency: concurrency.unwrap_or(full.concurrency),
            ..full
        }
    }

    /// The full sizes, with `events` for the formats scenario (and in the report's
    /// heading).
    pub(crate) fn formats_only(events: usize) -> Self {
        Size {
            format_events: events,
            relay_events: events,
            ..Self::full()
        }
    }

    /// The full sizes, with `events` for the fleet scenario.
    pub(crate) fn fleet_only(events: usize) -> Self {
        Size {
            fleet_events: events,
            ..Self::full()
        }
    }

    /// The full sizes, with `events` drained beside `scheduled` waiting ones.
    pub(crate) fn delayed_only(events: usize, scheduled: usize) -> Self {
        Size {
            delayed_events: events,
            scheduled,
            ..Self::full()
        }
    }

    /// The full sizes, with `blocked` events behind the blocked key.
    pub(crate) fn blocked_only(blocked: usize) -> Self {
        Size {
            blocked,
            ..Self::full()
        }
    }

    /// The full sizes, with `latency` for the latency scenario.
    pub(crate) fn latency_only(latency: Duration) -> Self {
        Size {
            latency,
            ..Self::full()
        }
    }

    pub(crate) fn full() -> Self {
        Size {
            quick: false,
            store_transactions: 3_000,
            relay_events: 200_000,
            format_events: 50_000,
            fleet_events: 80_000,
            fleet_idle: 49,
            fleet_latency_events: 600,
            delayed_events: 50_000,
            scheduled: 1_000_000,
            completions: ALL_COMPLETIONS.to_vec(),
            concurrency: outbox::RelayConfig::default().concurrency,
            scale_events: 50_000,
            retained: 1_000_000,
            blocked: 100_000,
            flowing: 20_000,
            latency: Duration::from_secs(30),
            rate: 1_000,
            idle: Duration::from_secs(10),
            sparse_events: 30,
            idle_warm: Duration::from_secs(15),
            idle_measure: Duration::from_secs(60),
        }
    }
}

const KEYS: usize = 64;

/// The completion modes the relay scenario measures unless told otherwise.
const ALL_COMPLETIONS: [outbox::Completion; 3] = [
    outbox::Completion::Mark,
    outbox::Completion::Delete,
    outbox::Completion::Archive,
];

const BATCH_SIZE: usize = 500;

pub(crate) async fn run_all(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = run_relay(url, brokers, size).await?;
    formats(url, brokers, size, &mut report).await?;
    fleet(url, brokers, size, &mut report).await?;
    store_overhead(url, size, &mut report).await?;
    latency(url, brokers, size, &mut report).await?;
    idle_relay(url, brokers, size, &mut report).await?;
    scale(url, brokers, size, &mut report).await?;
    blocked_key(url, size, &mut report).await?;
    delayed(url, brokers, size, &mut report).await?;
    Ok(report)
}
