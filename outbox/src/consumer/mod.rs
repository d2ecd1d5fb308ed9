//! [`Consumer`]: reads the events a relay published and applies each exactly once,
//! with the [`Inbox`] in the handler's transaction.

mod config;
mod handler;
mod metrics;
mod poll;
mod worker;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::config::ConsumerConfig;
pub use self::handler::{Handler, HandlerError, HandlerFuture};
pub use self::metrics::{ConsumerStats, consumer_metric_names};

use self::metrics::Counters;
use self::poll::{Context, KafkaConsumer, Spawner};
use self::worker::Shared;
use crate::decode::DecodeEvent;
use crate::error::{Error, Result};
use crate::inbox::Inbox;
use crate::publisher::KafkaContext;
use crate::received::Received;
use crate::sql::Dialect;

/// A Kafka consumer that applies each event exactly once in effect: for every message
/// it opens a transaction, records the event in the [`Inbox`] (a duplicate ends there,
/// without calling the handler), calls your handler with the transaction, commits,
/// and only then stores the message's offset.
///
/// ```no_run
/// use outbox::{Consumer, ConsumerConfig, KafkaConfig, Outbox, OutboxEvent, Received};
/// use sea_orm::ConnectionTrait;
/// # use serde::{Deserialize, Serialize};
/// # use uuid::Uuid;
///
/// #[derive(Deserialize, Serialize, OutboxEvent)]
/// enum UserEvent {
///     #[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
///     Registered { user_id: Uuid, email: String },
///     #[outbox(type = "user.deleted", aggregate = "user_id")]
///     Deleted { user_id: Uuid },
/// }
///
/// # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
/// let config = ConsumerConfig::new(KafkaConfig::from_env()?, "billing", ["user-events"]);
/// let outbox = Outbox::new();
/// let consumer = Consumer::new(config, db)?
///     .handle(move |txn, event: Received<UserEvent>| {
///         let outbox = outbox.clone();
///         Box::pin(async move {
///             if let UserEvent::Deleted { user_id } = *event {
///                 txn.execute_unprepared("UPDATE accounts SET closed = true").await?;
///                 // a follow-up event, published once the transaction commits
///                 let closed = outbox::EventBuilder::new("billing.account_closed", user_id);
///                 outbox.store(txn, &closed, "billing-events").await?;
///             }
///             Ok(())
///         })
///     })
///     .spawn()?;
/// outbox::shutdown_signal().await?;
/// consumer.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// - **Order**: a partition's messages are applied one at a time, in offset order, so
///   a key's events are applied in the order the relay published them (their commit
///   order). Partitions are applied concurrently, each by a task of its own. A
///   dead-lettered message is passed over: its key's later events are applied after
///   it, as the relay publishes a key's later events after a dead-lettered one.
/// - **Failures**: a handler error rolls the transaction back. The message is tried
///   again after `retry_delay`, doubling up to `max_retry_delay`; after
///   `retry_attempts` retries (or at once for [`HandlerError::permanent`]) it is
///   dead-lettered and its partition goes on. While the database cannot be reached,
///   failures use no attempt: an outage dead-letters nothing; nor do failures of the
///   consumer's own statements (begin, the inbox record, commit). A panic in the
///   handler is a failed attempt. A retry holds up its partition; other partitions
///   go on. On PostgreSQL a handler that swallowed a database error (its transaction
///   aborted) fails too, instead of committing nothing.
/// - **Dead letters**: the table `_outbox_inbox_dead` ([`Tables::inbox_dead`](crate::Tables::inbox_dead))
///   keeps the message as it came (key, payload, headers) with the last error, and the
///   same transaction records the event in the inbox, so a redelivery is skipped. A
///   message that cannot be read as an `E` (a missing header, a payload that does not
///   fit, an event type `E` has no variant for) is dead-lettered at once, unless
///   [`ConsumerConfig::skip_unknown_events`] skips unknown types. List them with
///   [`Inbox::dead_letters`].
/// - **Offsets**: stored after the commit, committed every `auto.commit.interval.ms`,
///   when partitions are revoked (after their handlers in flight finish) and at
///   shutdown. A crash in between means redeliveries, which the inbox skips.
/// - **Rebalances**: a revoked partition's worker finishes the transaction it has open
///   (a retry waiting for its backoff is abandoned), then its offsets are committed,
///   before the partition moves. Should a handler outlast `shutdown_timeout`, the new
///   owner's inbox insert waits for its transaction and follows its outcome.
/// - **Tracing**: each attempt runs in the span `outbox.consume` with the event's id,
///   type, topic, partition and offset, and the `trace_id` and `traceparent` the event
///   carries; store follow-up events with
///   [`Envelope::trace_id`](crate::Envelope::trace_id) /
///   `.trace_id(event.trace_id())` to continue the trace.
/// - **Metrics**: see [`consumer_metric_names`].
/// - **Cleanup**: inbox records older than `dedup_window` are deleted every
///   `cleanup_interval`.
#[derive(Debug)]
pub struct Consumer {
    config: ConsumerConfig,
    db: DatabaseConnection,
}

impl Consumer {
    /// A consumer with `config`, on `db`; give it a handler with
    /// [`handle`](Self::handle) or [`handler`](Self::handler).
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`] or [`Error::Config`] for an invalid `config`;
    /// [`Error::UnsupportedBackend`] for a database the inbox does not support.
    pub fn new(config: ConsumerConfig, db: DatabaseConnection) -> Result<Self> {
        config.validate()?;
        Dialect::of(db.get_database_backend())?;
        Ok(Consumer { config, db })
    }

    /// Applies events with a closure of SeaORM's `transaction` shape: it gets the
    /// transaction and the event, and returns a boxed future that may borrow the
    /// transaction (`Box::pin(async move { .. })`). The event type `E` is the type of
    /// the closure's second argument.
    pub fn handle<E, F>(self, handler: F) -> Running<E, F>
    where
        E: DecodeEvent + Send + 'static,
        F: for<'a> Fn(&'a DatabaseTransaction, Received<E>) -> HandlerFuture<'a>
            + Send
            + Sync
            + 'static,
    {
        self.handler(handler)
    }

    /// Applies events with a [`Handler`].
    pub fn handler<E, H>(self, handler: H) -> Running<E, H>
    where
        E: DecodeEvent + Send + 'static,
        H: Handler<E>,
    {
        Running {
            consumer: self,
            handler,
            event: PhantomData,
        }
    }
}

/// A [`Consumer`] with its handler, ready to [`spawn`](Self::spawn).
#[derive(Debug)]
pub struct Running<E, H> {
    consumer: Consumer,
    handler: H,
    event: PhantomData<fn() -> E>,
}

impl<E, H> Running<E, H>
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
        let Running {
            consumer: Consumer { config, db },
            handler,
            ..
        } = self;
        let client = config.client_config();
        let context = Context::new(
            KafkaContext::for_config(&config.kafka),
            config.name.clone(),
            config.shutdown_timeout,
        );
        let kafka: KafkaConsumer = client
            .create_with_context(context)
            .map_err(|error| config.kafka.redact(error))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        kafka.subscribe(&topics)?;
        let kafka = Arc::new(kafka);

        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let inbox = Inbox::with_tables(config.tables.clone());
        let cleanup = config.cleanup_interval.map(|every| {
            tokio::spawn(cleanup(
                db.clone(),
                inbox.clone(),
                every,
                config.dedup_window,
                cancel.clone(),
            ))
        });
        let (max_buffered, shutdown_timeout, name) = (
            config.max_buffered,
            config.shutdown_timeout,
            config.name.clone(),
        );
        let shared = Arc::new(Shared {
            config,
            db,
            inbox,
            handler,
            counters: Arc::clone(&counters),
            event: PhantomData,
        });
        let runtime = tokio::runtime::Handle::current();
        let spawn: Spawner = {
            let kafka = Arc::clone(&kafka);
            Box::new(move |work| {
                runtime.spawn(Arc::clone(&shared).work(Arc::clone(&kafka), work));
            })
        };
        let (stopped, stopped_receiver) = oneshot::channel();
        let thread_cancel = cancel.clone();
        std::thread::Builder::new()
            .name(format!("outbox-consumer-{name}"))
            .spawn(move || {
                let late = poll::poll(&kafka, &spawn, max_buffered, &thread_cancel);
                let _ = stopped.send(late);
            })
            .map_err(Error::Thread)?;
        info!(consumer = %name, "consumer started");
        Ok(ConsumerHandle {
            name,
            cancel,
            counters,
            stopped: Some(stopped_receiver),
            cleanup,
            shutdown_timeout,
        })
    }
}

/// Deletes inbox records older than `window` every `every`, until cancelled.
async fn cleanup(
    db: DatabaseConnection,
    inbox: Inbox,
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
        match inbox.cleanup(&db, window).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "inbox cleanup"),
            Err(error) => warn!(%error, "inbox cleanup failed; it runs again at the next interval"),
        }
    }
}

/// A running [`Consumer`]: read its figures, stop it.
///
/// Dropping the handle stops the consumer as [`shutdown`](Self::shutdown) does,
/// without waiting.
#[must_use = "dropping the handle stops the consumer"]
#[derive(Debug)]
pub struct ConsumerHandle {
    name: String,
    cancel: CancellationToken,
    counters: Arc<Counters>,
    stopped: Option<oneshot::Receiver<usize>>,
    cleanup: Option<tokio::task::JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl ConsumerHandle {
    /// The consumer's figures since it started.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the consumer: no new message starts, the handlers in flight finish (a
    /// retry waiting for its backoff is abandoned: its message comes again), the
    /// stored offsets are committed, and the consumer leaves its group.
    ///
    /// # Errors
    /// [`Error::ConsumerShutdownTimeout`] when a handler was still running after
    /// `shutdown_timeout` (its message is delivered again, and the inbox decides by its
    /// transaction's outcome), or leaving the group took 10 s more.
    pub async fn shutdown(mut self) -> Result<()> {
        self.cancel.cancel();
        if let Some(cleanup) = self.cleanup.take() {
            let _ = cleanup.await;
        }
        let Some(stopped) = self.stopped.take() else {
            return Ok(());
        };
        let limit = self.shutdown_timeout + Duration::from_secs(10);
        match tokio::time::timeout(limit, stopped).await {
            Ok(Ok(0) | Err(_)) => {
                info!(consumer = %self.name, "consumer stopped");
                Ok(())
            }
            Ok(Ok(_late)) => Err(Error::ConsumerShutdownTimeout(self.shutdown_timeout)),
            Err(_) => Err(Error::ConsumerShutdownTimeout(limit)),
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
