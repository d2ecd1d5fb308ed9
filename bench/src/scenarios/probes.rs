//! Measuring what arrives: a consumer, waits, percentiles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox::Message;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use uuid::Uuid;

use super::Failure;
use super::report::Report;

/// Milliseconds from each commit (or send) to its arrival, sorted.
pub(super) fn latencies(
    committed: &[(String, Instant)],
    received: &Mutex<HashMap<String, Instant>>,
) -> Result<Vec<f64>, Failure> {
    let received = received.lock().map_err(|_| "poisoned")?;
    let mut latencies: Vec<f64> = committed
        .iter()
        .filter_map(|(id, at)| {
            received
                .get(id)
                .map(|got| got.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        return Err("no latency measured".into());
    }
    Ok(latencies)
}

/// The `q` quantile of sorted `values`.
/// The median of `values` (0 when there are none).
pub(super) fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

pub(super) fn percentile(values: &[f64], q: f64) -> f64 {
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// Starts a consumer of `topic` (a group of its own, from the earliest offset) that
/// notes when each event arrives, by its `event_id` header, in `received`.
///
/// It polls on an OS thread of its own and reads the clock as the poll returns, as a
/// consumer in another service's process would: on the scenario's Tokio runtime its
/// wake-ups queued behind the relay's and the writers' tasks, a wait the broker
/// floor's consumer, alone on its runtime, did not have.
pub(super) fn spawn_consumer(
    brokers: &str,
    topic: &str,
    received: Arc<Mutex<HashMap<String, Instant>>>,
) -> Result<ArrivalLog, Failure> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{}", Uuid::now_v7().simple()))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    consumer.subscribe(&[topic])?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("bench-consumer".to_owned())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let message = match consumer.poll(Duration::from_millis(50)) {
                    None => continue,
                    Some(Ok(message)) => message,
                    Some(Err(_)) => {
                        // The broker away for a moment: the events come later (the
                        // scenario waits for them), without spinning meanwhile.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let now = Instant::now();
                let id = message.headers().and_then(|hs| {
                    hs.iter()
                        .find(|h| h.key == "event_id")
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                });
                if let (Some(id), Ok(mut received)) = (id, received.lock()) {
                    received.entry(id).or_insert(now);
                }
            }
        })?;
    Ok(ArrivalLog {
        stop,
        thread: Some(thread),
    })
}

/// The consumer thread of [`spawn_consumer`]; stopped when dropped.
pub(super) struct ArrivalLog {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArrivalLog {
    /// Stops the consumer and waits for its thread (at most one poll, 50 ms).
    pub(super) fn stop(self) {
        drop(self);
    }
}

impl Drop for ArrivalLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(super) async fn wait_for(
    received: &Mutex<HashMap<String, Instant>>,
    ids: &[String],
    timeout: Duration,
) -> Result<(), Failure> {
    let missing = missing_after(received, ids, timeout).await?;
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} events did not arrive within {timeout:?} (the first: {first})",
            missing.len()
        )
        .into()),
    }
}

/// Of `ids`, those not received within `timeout`.
pub(super) async fn missing_after(
    received: &Mutex<HashMap<String, Instant>>,
    ids: &[String],
    timeout: Duration,
) -> Result<Vec<String>, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<String> = {
            let received = received.lock().map_err(|_| "poisoned")?;
            ids.iter()
                .filter(|id| !received.contains_key(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() || Instant::now() > deadline {
            return Ok(missing);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for `ids` to reach the scenario's consumer; those it never sees are looked
/// for in `topic` from its beginning by a consumer of a new group. Returns how many
/// only that second look found: the test broker's consumer fetch sometimes skips a
/// record that two producers (two relay processes) appended to one partition at
/// once, though the record is in the log. Those events have no latency sample.
pub(super) async fn arrived(
    brokers: &str,
    topic: &str,
    received: &Mutex<HashMap<String, Instant>>,
    ids: &[String],
) -> Result<usize, Failure> {
    let missing = missing_after(received, ids, Duration::from_secs(20)).await?;
    if missing.is_empty() {
        return Ok(0);
    }
    let in_log: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer = spawn_consumer(brokers, topic, Arc::clone(&in_log))?;
    let still = missing_after(&in_log, &missing, Duration::from_secs(60)).await;
    consumer.stop();
    let still = still?;
    match still.first() {
        None => Ok(missing.len()),
        Some(first) => Err(format!(
            "{} events are not in the topic {topic} 80s after their commit (the first: {first})",
            still.len()
        )
        .into()),
    }
}

/// A publisher that notes, for each event, when the relay handed it over and when
/// the broker acknowledged it, to split the in-process latency into its stages.
#[derive(Debug)]
pub(super) struct Timed<P> {
    pub(super) inner: P,
    pub(super) times: Arc<Mutex<HashMap<String, (Instant, Instant)>>>,
}

impl<P: outbox::Publisher> outbox::Publisher for Timed<P> {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), outbox::PublishError>> {
        let handed = Instant::now();
        let outcomes = self.inner.publish(batch).await;
        let acked = Instant::now();
        if let Ok(mut times) = self.times.lock() {
            for (message, outcome) in batch.iter().zip(&outcomes) {
                if outcome.is_ok() {
                    times.insert(message.id.to_string(), (handed, acked));
                }
            }
        }
        outcomes
    }

    async fn check(&self) -> Result<(), outbox::PublishError> {
        self.inner.check().await
    }
}

/// Where the in-process relay's latency goes: for the median event and on average
/// over the slowest 1%, the time from commit to the relay's hand-over to the
/// producer (wake-up, waiting for the shard's batch before, claim), from hand-over
/// to the broker's acknowledgement, and from commit to receipt.
pub(super) fn stages(
    report: &mut Report,
    scenario: &'static str,
    committed: &[(String, Instant)],
    received: &Mutex<HashMap<String, Instant>>,
    times: &Mutex<HashMap<String, (Instant, Instant)>>,
) -> Result<(), Failure> {
    let received = received.lock().map_err(|_| "poisoned")?;
    let times = times.lock().map_err(|_| "poisoned")?;
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1000.0;
    // (commit to receipt, commit to hand-over, hand-over to ack)
    let mut samples: Vec<(f64, f64, f64)> = committed
        .iter()
        .filter_map(|(id, at)| {
            let (handed, acked) = times.get(id)?;
            Some((
                ms(*at, *received.get(id)?),
                ms(*at, *handed),
                ms(*handed, *acked),
            ))
        })
        .collect();
    if samples.is_empty() {
        return Err("no stage timings".into());
    }
    report.add(
        scenario,
        "stage p50: commit to hand-over (claim)",
        median(samples.iter().map(|s| s.1)),
        "ms",
    );
    report.add(
        scenario,
        "stage p50: hand-over to broker ack",
        median(samples.iter().map(|s| s.2)),
        "ms",
    );
    samples.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest = &samples[..samples.len().div_ceil(100)];
    #[allow(clippy::cast_precision_loss)] // at most a few hundred
    let mean = |pick: fn(&(f64, f64, f64)) -> f64| {
        slowest.iter().map(pick).sum::<f64>() / slowest.len() as f64
    };
    report.add(
        scenario,
        "slowest 1%: commit to receipt (mean)",
        mean(|s| s.0),
        "ms",
    );
    report.add(
        scenario,
        "slowest 1%: commit to hand-over (mean)",
        mean(|s| s.1),
        "ms",
    );
    report.add(
        scenario,
        "slowest 1%: hand-over to broker ack (mean)",
        mean(|s| s.2),
        "ms",
    );
    Ok(())
}
