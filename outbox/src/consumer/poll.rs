//! The consumer's Kafka side: one thread polls the consumer and hands each message to
//! the worker of its partition; rebalances stop the workers of revoked partitions and
//! commit what they stored before the partitions go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::health::Progress;
use super::metrics;
use crate::kafka::KafkaContext;

/// How long one poll waits for a message: also how soon a paused partition resumes and
/// a shutdown is noticed.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// The rdkafka consumer the consumer runs on.
pub(super) type KafkaConsumer = BaseConsumer<Context>;

/// A topic and partition.
pub(super) type Partition = (String, i32);

/// Starts the worker of a partition: given the partition, its message queue, its
/// buffered count and its cancellation, it returns once the worker has ended and
/// dropped the `done` sender.
pub(super) type Spawner = Box<dyn Fn(Spawn) + Send + Sync>;

/// How much of a partition may be read ahead of its worker before the partition is
/// paused.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) messages: usize,
    pub(super) bytes: usize,
}

/// What a partition's worker has been handed and not yet done with.
#[derive(Debug, Default)]
pub(super) struct Buffered {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl Buffered {
    fn add(&self, message: &OwnedMessage) -> (usize, usize) {
        let size = size(message);
        (
            self.messages.fetch_add(1, Ordering::AcqRel) + 1,
            self.bytes.fetch_add(size, Ordering::AcqRel) + size,
        )
    }

    /// `message` is done with (or was never handed over).
    pub(super) fn remove(&self, message: &OwnedMessage) {
        self.messages.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(size(message), Ordering::AcqRel);
    }

    /// At most half of both limits: a paused partition may resume.
    fn caught_up(&self, limits: Limits) -> bool {
        self.messages.load(Ordering::Acquire) <= limits.messages / 2
            && self.bytes.load(Ordering::Acquire) <= limits.bytes / 2
    }
}

/// What a message takes in memory, near enough: its key and payload.
fn size(message: &OwnedMessage) -> usize {
    message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len)
}

/// What a new worker is given.
pub(super) struct Spawn {
    pub(super) partition: Partition,
    pub(super) messages: mpsc::UnboundedReceiver<OwnedMessage>,
    pub(super) buffered: Arc<Buffered>,
    pub(super) cancel: CancellationToken,
    /// Dropped when the worker ends.
    pub(super) done: std_mpsc::Sender<()>,
}

/// The worker of one partition, as the polling thread sees it.
struct Worker {
    messages: mpsc::UnboundedSender<OwnedMessage>,
    buffered: Arc<Buffered>,
    paused: bool,
    cancel: CancellationToken,
    done: std_mpsc::Receiver<()>,
}

/// The consumer's rdkafka context: librdkafka's logs and errors go where the
/// publisher's go ([`KafkaContext`], secrets scrubbed), and a revocation stops the
/// revoked partitions' workers and commits their offsets before the partitions move.
pub(super) struct Context {
    kafka: KafkaContext,
    /// The consumer's name, for the lag gauges.
    name: String,
    workers: Mutex<HashMap<Partition, Worker>>,
    /// How long a revocation waits for the handlers in flight.
    stop_timeout: Duration,
    /// Where the partitions assigned are counted for the health probe.
    progress: Arc<Progress>,
}

impl Context {
    pub(super) fn new(
        kafka: KafkaContext,
        name: String,
        stop_timeout: Duration,
        progress: Arc<Progress>,
    ) -> Self {
        Context {
            kafka,
            name,
            workers: Mutex::new(HashMap::new()),
            stop_timeout,
            progress,
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<Partition, Worker>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.kafka.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.kafka.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, partitions) in &statistics.topics {
            for partition in partitions.partitions.values() {
                // -1: librdkafka's internal partition; a negative lag: not consumed
                // here.
                // The stored offset is unknown until the first message of an
                // assignment is applied: the committed one tells the lag meanwhile.
                let lag = if partition.consumer_lag_stored >= 0 {
                    partition.consumer_lag_stored
                } else {
                    partition.consumer_lag
                };
                if partition.partition >= 0 && lag >= 0 {
                    metrics::lag(&self.name, topic, partition.partition, lag);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, consumer: &KafkaConsumer, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map_or(0, |list| list.count());
        self.progress.assigned.store(assigned, Ordering::Relaxed);
        let kind = match rebalance {
            Rebalance::Assign(partitions) => {
                let partitions: Vec<String> = partitions
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                info!(consumer = %self.name, ?partitions, "partitions assigned");
                "assign"
            }
            Rebalance::Revoke(_) => "revoke",
            Rebalance::Error(_) => return,
        };
        metrics::rebalanced(&self.name, kind, assigned);
    }

    fn pre_rebalance(&self, consumer: &KafkaConsumer, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let stopping: Vec<(Partition, Worker)> = {
            let mut workers = self.workers();
            revoked
                .elements()
                .iter()
                .filter_map(|element| {
                    let partition = (element.topic().to_owned(), element.partition());
                    workers.remove(&partition).map(|worker| (partition, worker))
                })
                .collect()
        };
        info!(
            consumer = %self.name,
            partitions = revoked.count(),
            workers = stopping.len(),
            "partitions revoked"
        );
        for element in revoked.elements() {
            metrics::lag(&self.name, element.topic(), element.partition(), 0);
        }
        // A partition paused here must not stay paused for its next owner, nor for
        // this consumer should it come back: resume it while it is still assigned.
        for ((topic, partition), worker) in &stopping {
            if worker.paused
                && let Err(error) = pause_resume(consumer, &(topic.clone(), *partition), false)
            {
                debug!(%topic, partition, %error, "could not resume a revoked partition");
            }
        }
        let _ = stop(stopping, self.stop_timeout);
        commit(consumer, "revocation");
    }
}

/// Stops workers: each finishes the message whose transaction is open (a retry
/// waiting for its backoff is abandoned) and starts no other. Waits at most
/// `timeout` for all of them; returns how many were still running then.
fn stop(workers: Vec<(Partition, Worker)>, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut waiting = Vec::with_capacity(workers.len());
    for (partition, worker) in workers {
        worker.cancel.cancel();
        drop(worker.messages);
        waiting.push((partition, worker.done));
    }
    let mut late = 0;
    for ((topic, partition), done) in waiting {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(std_mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(left) {
            // Its offset stays where it was: the partition's next owner reads the
            // message again, and its inbox waits for this transaction's outcome.
            warn!(%topic, partition, ?timeout, "a handler did not finish in time; its message will be delivered again");
            late += 1;
        }
    }
    late
}

/// Commits the offsets the workers stored.
fn commit(consumer: &KafkaConsumer, when: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            warn!(%error, "could not commit offsets at {when}; the messages since the last commit will be delivered again, and skipped as duplicates");
        }
    }
}

/// Polls `consumer` until `cancel`, handing each message to its partition's worker
/// (started by `spawn` on first use, with a child of `cancel`); then stops every
/// worker, commits, closes the consumer (it leaves the group) and returns how many
/// handlers outlasted the shutdown timeout.
pub(super) fn poll(
    consumer: &KafkaConsumer,
    spawn: &Spawner,
    limits: Limits,
    cancel: &CancellationToken,
) -> usize {
    let mut last_error: Option<(String, Instant)> = None;
    while !cancel.is_cancelled() {
        resume_caught_up(consumer, limits);
        match consumer.poll(POLL_WAIT) {
            None => {}
            Some(Ok(message)) => dispatch(consumer, spawn, message.detach(), limits, cancel),
            Some(Err(error)) => {
                // The same error comes with every poll while it lasts: say it once a
                // minute.
                let text = error.to_string();
                let repeated = last_error.as_ref().is_some_and(|(last, at)| {
                    *last == text && at.elapsed() < Duration::from_secs(60)
                });
                if !repeated {
                    warn!(%error, "the Kafka consumer reported an error");
                    last_error = Some((text, Instant::now()));
                }
            }
        }
    }
    let workers: Vec<(Partition, Worker)> = consumer.context().workers().drain().collect();
    let late = stop(workers, consumer.context().stop_timeout);
    commit(consumer, "shutdown");
    // Close here, not when the last reference goes: a handler that outlasted the
    // timeout still holds one, and would close the consumer on a Tokio thread.
    match consumer.close_queue() {
        Ok(()) => {
            while !consumer.closed() {
                let _ = consumer.poll(POLL_WAIT);
            }
        }
        Err(error) => warn!(%error, "could not close the Kafka consumer"),
    }
    late
}

fn dispatch(
    consumer: &KafkaConsumer,
    spawn: &Spawner,
    message: OwnedMessage,
    limits: Limits,
    stop: &CancellationToken,
) {
    let partition = (message.topic().to_owned(), message.partition());
    let mut workers = consumer.context().workers();
    let worker = workers.entry(partition.clone()).or_insert_with(|| {
        let (messages, receiver) = mpsc::unbounded_channel();
        let (done, done_receiver) = std_mpsc::channel();
        let buffered = Arc::new(Buffered::default());
        let cancel = stop.child_token();
        spawn(Spawn {
            partition: partition.clone(),
            messages: receiver,
            buffered: Arc::clone(&buffered),
            cancel: cancel.clone(),
            done,
        });
        Worker {
            messages,
            buffered,
            paused: false,
            cancel,
            done: done_receiver,
        }
    });
    let (messages, bytes) = worker.buffered.add(&message);
    if let Err(mpsc::error::SendError(message)) = worker.messages.send(message) {
        // The worker ended: it was cancelled, or the consumer failed and is stopping.
        // The message is not processed and its offset not stored; it comes again
        // after a restart or a rebalance.
        worker.buffered.remove(&message);
        warn!(topic = %partition.0, partition = partition.1, offset = message.offset(), "a message went to a worker that had ended; it is delivered again after the next rebalance or restart");
        return;
    }
    if (messages >= limits.messages || bytes >= limits.bytes) && !worker.paused {
        match pause_resume(consumer, &partition, true) {
            Ok(()) => worker.paused = true,
            Err(error) => {
                warn!(topic = %partition.0, partition = partition.1, %error, "could not pause a partition")
            }
        }
    }
}

/// Resumes the paused partitions whose workers are down to half the limits.
/// librdkafka fetches a resumed partition from the last message handed out, so nothing
/// read before the pause is lost or read twice.
fn resume_caught_up(consumer: &KafkaConsumer, limits: Limits) {
    let mut workers = consumer.context().workers();
    for (partition, worker) in workers.iter_mut() {
        if worker.paused && worker.buffered.caught_up(limits) {
            match pause_resume(consumer, partition, false) {
                Ok(()) => worker.paused = false,
                Err(error) => {
                    warn!(topic = %partition.0, partition = partition.1, %error, "could not resume a partition")
                }
            }
        }
    }
}

fn pause_resume(
    consumer: &KafkaConsumer,
    (topic, partition): &Partition,
    pause: bool,
) -> KafkaResult<()> {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, *partition);
    if pause {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    }
}
