//! [`ConsumerWithHandler`]: a [`Consumer`] given its handler, and how it starts: the
//! Kafka consumer subscribed, the background tasks spawned, the workers' spawner
//! built, the polling thread started.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use rdkafka::consumer::Consumer as _;
use tokio::sync::{OnceCell, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::cleanup::cleanup;
use super::context::WorkerContext;
use super::halt::Halt;
use super::handler::Handler;
use super::health::Progress;
use super::metrics::Counters;
use super::poll::{self, Context, KafkaConsumer, Limits, Spawner};
use super::replay::Replays;
use super::worker::Worker;
use super::{Consumer, ConsumerConfig, ConsumerHandle, ConsumerProbe};
use crate::decode::DecodeEvent;
use crate::error::{Error, Result};
use crate::inbox::Inbox;
use crate::kafka::KafkaContext;

/// A [`Consumer`] with its handler, ready to [`spawn`](Self::spawn).
#[doc(alias = "Running")]
#[derive(Debug)]
pub struct ConsumerWithHandler<E, H> {
    pub(super) consumer: Consumer,
    pub(super) handler: H,
    pub(super) event: PhantomData<fn() -> E>,
}

impl<E, H> ConsumerWithHandler<E, H>
where
    E: DecodeEvent + Send + 'static,
    H: Handler<E>,
{
    /// Joins the consumer group and starts consuming, on a thread of its own for
    /// Kafka and tasks of the current Tokio runtime for the handlers.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the consumer cannot be created or subscribed.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn(self) -> Result<ConsumerHandle> {
        let ConsumerWithHandler {
            consumer: Consumer { config, db },
            handler,
            ..
        } = self;
        let progress = Arc::new(Progress::default());
        let kafka = Arc::new(subscribe(&config, Arc::clone(&progress))?);
        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let inbox = Inbox::with_tables(config.tables.clone());
        let cleanup = config.cleanup_interval.map(|every| {
            tokio::spawn(cleanup(
                db.clone(),
                inbox.clone(),
                config.name.clone(),
                every,
                config.dedup_window,
                cancel.clone(),
            ))
        });
        let halt = Halt::new(cancel.clone());
        let probe = ConsumerProbe {
            progress: Arc::clone(&progress),
            halt: halt.clone(),
            stopped: cancel.clone(),
            stuck_after: config.stuck_after,
        };
        let limits = Limits {
            messages: config.max_buffered,
            bytes: config.max_buffered_bytes,
        };
        let (shutdown_timeout, name) = (config.shutdown_timeout, config.name.clone());
        let context = Arc::new(WorkerContext {
            config,
            db,
            inbox,
            handler,
            counters: Arc::clone(&counters),
            progress,
            halt: halt.clone(),
            proof: OnceCell::new(),
            event: PhantomData,
        });
        let replays = context.config.replay_interval.map(|every| {
            tokio::spawn(Replays(Arc::clone(&context)).replays(every, cancel.clone()))
        });
        let spawner = spawner(context, Arc::clone(&kafka));
        let stopped = start_polling(&name, kafka, spawner, limits, &cancel, halt.clone())?;
        info!(consumer = %name, "consumer started");
        Ok(ConsumerHandle {
            name,
            cancel,
            counters,
            halt,
            probe,
            stopped: Some(stopped),
            cleanup,
            replays,
            shutdown_timeout,
        })
    }
}

/// The Kafka consumer `config` describes, subscribed to its topics; it counts the
/// partitions assigned in `progress`.
fn subscribe(config: &ConsumerConfig, progress: Arc<Progress>) -> Result<KafkaConsumer> {
    let context = Context::new(
        KafkaContext::for_config(&config.kafka),
        config.name.clone(),
        config.shutdown_timeout,
        progress,
    );
    let kafka: KafkaConsumer = config
        .client_config()
        .create_with_context(context)
        .map_err(|error| config.kafka.redact(error))?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    kafka.subscribe(&topics)?;
    Ok(kafka)
}

/// Starts each partition's worker as a task of the current Tokio runtime.
///
/// # Panics
/// Outside a Tokio runtime.
fn spawner<E, H>(context: Arc<WorkerContext<E, H>>, kafka: Arc<KafkaConsumer>) -> Spawner
where
    E: DecodeEvent + Send + 'static,
    H: Handler<E>,
{
    let runtime = tokio::runtime::Handle::current();
    Box::new(move |work| {
        let (context, kafka) = (Arc::clone(&context), Arc::clone(&kafka));
        runtime.spawn(async move {
            // A panic outside any message's attempt (a bug, or a metrics recorder's)
            // ends the worker: the consumer stops, loudly, rather than drop the
            // partition's later messages.
            let (topic, partition) = work.partition.clone();
            let halt = context.halt.clone();
            if let Err(panic) = AssertUnwindSafe(Worker(context).work(kafka, work))
                .catch_unwind()
                .await
            {
                halt.stop(format!(
                    "the worker of {topic}/{partition} panicked: {}",
                    crate::panic::message(&*panic)
                ));
            }
        });
    })
}

/// Starts the consumer's polling thread (`outbox-consumer-{name}`), which polls
/// `kafka` until `cancel`; the receiver returned gets how many handlers outlasted the
/// shutdown timeout. A panic on the thread stops the consumer through `halt`.
fn start_polling(
    name: &str,
    kafka: Arc<KafkaConsumer>,
    spawner: Spawner,
    limits: Limits,
    cancel: &CancellationToken,
    halt: Halt,
) -> Result<oneshot::Receiver<usize>> {
    let (stopped, stopped_receiver) = oneshot::channel();
    let cancel = cancel.clone();
    std::thread::Builder::new()
        .name(format!("outbox-consumer-{name}"))
        .spawn(move || {
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                poll::poll(&kafka, &spawner, limits, &cancel)
            }));
            match polled {
                Ok(late) => {
                    let _ = stopped.send(late);
                }
                // The workers stop (the consumer's token is theirs too); the
                // offsets stored since the last commit are not committed, so
                // their messages come again and the inbox skips them.
                Err(panic) => halt.stop(format!(
                    "the polling thread panicked: {}",
                    crate::panic::message(&*panic)
                )),
            }
        })
        .map_err(Error::Thread)?;
    Ok(stopped_receiver)
}
