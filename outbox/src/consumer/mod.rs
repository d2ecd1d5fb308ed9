//! [`Consumer`]: reads the events a relay published and applies each exactly once,
//! with the [`Inbox`] in the handler's transaction.

mod config;
mod handler;
mod health;
mod metrics;
mod poll;
mod proof;
mod replay;
mod worker;

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::FutureExt as _;
use rdkafka::consumer::Consumer as _;
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use tokio::sync::{OnceCell, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use self::config::ConsumerConfig;
pub use self::handler::{Handler, HandlerError, HandlerFuture};
pub use self::health::ConsumerProbe;
pub use self::metrics::{ConsumerStats, consumer_metric_names};

use self::metrics::Counters;
use self::poll::{Context, KafkaConsumer, Spawner};
use self::worker::Shared;
use crate::decode::DecodeEvent;
use crate::error::{Error, Result};
use crate::inbox::Inbox;
use crate::kafka::KafkaContext;
use crate::sql::Dialect;
use crate::wire::Received;

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
/// let outbox = Outbox::on(&db);
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
///   again after `retry_backoff.first`, doubling up to `retry_backoff.max`; after
///   `retry_attempts` retries (or at once for [`HandlerError::permanent`]) it is
///   dead-lettered and its partition goes on. What counts as an attempt: the
///   handler's error, its panic (in the closure's body, its future, or the event's
///   decoding), an attempt over `handler_timeout`, and a COMMIT the database refuses
///   (a deferred constraint, a constraint trigger). What does not: while the database
///   cannot be reached (a lost connection, a server shutting down: read from the
///   error's SQLSTATE, then checked with a ping), failures use no attempt, so an
///   outage dead-letters nothing; nor do failures of the consumer's own statements
///   (begin, the inbox record); a deadlock or serialization failure is tried again
///   without using an attempt, up to 10 times in a row. A retry holds up its
///   partition; other partitions go on.
/// - **One transaction, proven**: before committing, the consumer checks that the
///   transaction still holds the event's inbox record: on PostgreSQL the record was
///   written by the running transaction (an aborted one fails the check); on MariaDB
///   a transaction is open (`@@in_transaction`) and sees it; on MySQL and SQLite it
///   is seen. A handler that swallowed an error (a deadlock rolls a MySQL transaction
///   back and runs later statements outside any transaction) or ended the transaction
///   (COMMIT, ROLLBACK, a DDL statement) fails its attempt instead of committing half
///   an event and losing its record. What such a handler already wrote outside the
///   transaction cannot be undone: return database errors, and keep DDL out of
///   handlers.
/// - **Dead letters**: the table `_outbox_inbox_dead` ([`Tables::inbox_dead`](crate::Tables::inbox_dead))
///   keeps the message as it came (key, payload, UTF-8 headers as JSON) with the last
///   error, and the same transaction records the event in the inbox, so a redelivery
///   is skipped. NUL characters in the event type and the error are written `\0`;
///   the error is cut at 16 KiB. A letter the database refuses three times while it
///   is reachable (a value over `max_allowed_packet`, say) is written minimal: topic,
///   partition, offset, key (up to 4 KiB), event id and type, and both errors; read
///   the message from the topic. A message that cannot be read as an `E` (a missing
///   header, a payload that does not fit, an event type `E` has no variant for) is
///   dead-lettered at once, unless [`ConsumerConfig::skip_unknown_events`] skips
///   unknown types. List them with [`Inbox::dead_letters`].
/// - **Offsets**: stored after the commit, committed every `auto.commit.interval.ms`,
///   when partitions are revoked (after their handlers in flight finish) and at
///   shutdown. A crash in between means redeliveries, which the inbox skips.
/// - **Rebalances**: a revoked partition's worker finishes the transaction it has open
///   (a retry waiting for its backoff is abandoned), then its offsets are committed,
///   before the partition moves. Should a handler outlast `shutdown_timeout`, the new
///   owner's inbox insert waits for its transaction and follows its outcome.
/// - **Tracing**: each attempt runs in the span `outbox.consume` with the event's id,
///   type, topic, partition and offset, and the `trace_id` and `traceparent` the event
///   carries. With the `opentelemetry` feature and an OpenTelemetry layer in the
///   subscriber, that span is a child of the event's `traceparent` (parent rather than
///   link: one span per message, and the handler's spans join the writer's trace);
///   store follow-up events with
///   [`Envelope::trace_id`](crate::Envelope::trace_id) /
///   `.trace_id(event.trace_id())` to continue the trace.
/// - **Metrics**: see [`consumer_metric_names`].
/// - **Replays**: dead letters an operator marks for replay
///   ([`Inbox::request_replay`], `outbox inbox replay`) are taken by a consumer of
///   their name every `replay_interval` and handed to the handler in a transaction
///   that deletes the letter and renews the event's inbox record; one that fails
///   again stays, with its new error and its mark cleared. A replayed message is
///   applied after the messages of its key that came since.
/// - **Cleanup**: the consumer's inbox records older than `dedup_window` are deleted
///   every `cleanup_interval` (other consumers' records are theirs to delete).
/// - **Failure**: a bug outside any message's attempt (on the polling thread, or in a
///   worker) stops the consumer: [`ConsumerHandle::failure`] says why and
///   [`ConsumerHandle::shutdown`] returns [`Error::ConsumerFailed`]. Its messages not
///   done with are delivered again when it is started anew; none is skipped.
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
        let progress = Arc::new(health::Progress::default());
        let context = Context::new(
            KafkaContext::for_config(&config.kafka),
            config.name.clone(),
            config.shutdown_timeout,
            Arc::clone(&progress),
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
                config.name.clone(),
                every,
                config.dedup_window,
                cancel.clone(),
            ))
        });
        let probe = ConsumerProbe {
            progress: Arc::clone(&progress),
            failed: Failed {
                reason: Arc::new(OnceLock::new()),
                stop: cancel.clone(),
            },
            stopped: cancel.clone(),
            stuck_after: config.stuck_after,
        };
        let failed = probe.failed.clone();
        let (limits, shutdown_timeout, name) = (
            poll::Limits {
                messages: config.max_buffered,
                bytes: config.max_buffered_bytes,
            },
            config.shutdown_timeout,
            config.name.clone(),
        );
        let shared = Arc::new(Shared {
            config,
            db,
            inbox,
            handler,
            counters: Arc::clone(&counters),
            progress,
            failed: failed.clone(),
            proof: OnceCell::new(),
            event: PhantomData,
        });
        let replays = shared
            .config
            .replay_interval
            .map(|every| tokio::spawn(Arc::clone(&shared).replays(every, cancel.clone())));
        let runtime = tokio::runtime::Handle::current();
        let spawn: Spawner = {
            let kafka = Arc::clone(&kafka);
            Box::new(move |work| {
                let (shared, kafka) = (Arc::clone(&shared), Arc::clone(&kafka));
                runtime.spawn(async move {
                    // A panic outside any message's attempt (a bug, or a metrics
                    // recorder's) ends the worker: the consumer stops, loudly, rather
                    // than drop the partition's later messages.
                    let (topic, partition) = work.partition.clone();
                    let failed = shared.failed.clone();
                    if let Err(panic) = std::panic::AssertUnwindSafe(shared.work(kafka, work))
                        .catch_unwind()
                        .await
                    {
                        failed.fail(format!(
                            "the worker of {topic}/{partition} panicked: {}",
                            crate::panic::message(&*panic)
                        ));
                    }
                });
            })
        };
        let (stopped, stopped_receiver) = oneshot::channel();
        let thread_cancel = cancel.clone();
        let thread_failed = failed.clone();
        std::thread::Builder::new()
            .name(format!("outbox-consumer-{name}"))
            .spawn(move || {
                let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    poll::poll(&kafka, &spawn, limits, &thread_cancel)
                }));
                match polled {
                    Ok(late) => {
                        let _ = stopped.send(late);
                    }
                    // The workers stop (the consumer's token is theirs too); the
                    // offsets stored since the last commit are not committed, so
                    // their messages come again and the inbox skips them.
                    Err(panic) => thread_failed.fail(format!(
                        "the polling thread panicked: {}",
                        crate::panic::message(&*panic)
                    )),
                }
            })
            .map_err(Error::Thread)?;
        info!(consumer = %name, "consumer started");
        Ok(ConsumerHandle {
            name,
            cancel,
            counters,
            failed,
            probe,
            stopped: Some(stopped_receiver),
            cleanup,
            replays,
            shutdown_timeout,
        })
    }
}

/// Deletes `consumer`'s inbox records older than `window` every `every`, until
/// cancelled.
async fn cleanup(
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
        let cleaned = std::panic::AssertUnwindSafe(inbox.cleanup(&db, &consumer, window))
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

/// Why a consumer stopped on its own: the first reason given; giving one stops the
/// consumer (its polling thread and every worker).
#[derive(Debug, Clone)]
pub(super) struct Failed {
    reason: Arc<OnceLock<String>>,
    stop: CancellationToken,
}

impl Failed {
    /// Stops the consumer for `reason`.
    pub(super) fn fail(&self, reason: String) {
        error!(%reason, "the consumer failed and stops; its messages not done with are delivered again after a restart");
        let _ = self.reason.set(reason);
        self.stop.cancel();
    }

    pub(super) fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
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
    failed: Failed,
    probe: ConsumerProbe,
    stopped: Option<oneshot::Receiver<usize>>,
    cleanup: Option<tokio::task::JoinHandle<()>>,
    replays: Option<tokio::task::JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl ConsumerHandle {
    /// The consumer's figures since it started.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// A cheap, cloneable view of the consumer's health, for a readiness endpoint
    /// (`outbox::http::Endpoints::new` takes it, with the `http` feature) or a supervisor.
    pub fn probe(&self) -> ConsumerProbe {
        self.probe.clone()
    }

    /// Why the consumer stopped on its own, if it did: a bug on its polling thread or
    /// in a worker outside any message's attempt. It consumes nothing more; its
    /// messages not done with are delivered again when it is started anew. Report it
    /// in your health check.
    pub fn failure(&self) -> Option<String> {
        self.failed.reason().map(str::to_owned)
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
    /// transaction's outcome), or leaving the group took 10 s more;
    /// [`Error::ConsumerFailed`] when it had stopped on its own (see
    /// [`failure`](Self::failure)).
    pub async fn shutdown(mut self) -> Result<()> {
        self.cancel.cancel();
        for task in [self.cleanup.take(), self.replays.take()]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        let Some(stopped) = self.stopped.take() else {
            return Ok(());
        };
        let limit = self.shutdown_timeout + Duration::from_secs(10);
        let stopped = tokio::time::timeout(limit, stopped).await;
        if let Some(reason) = self.failed.reason() {
            return Err(Error::ConsumerFailed(reason.to_owned()));
        }
        match stopped {
            Ok(Ok(0)) => {
                info!(consumer = %self.name, "consumer stopped");
                Ok(())
            }
            Ok(Ok(_late)) => Err(Error::ConsumerShutdownTimeout(self.shutdown_timeout)),
            Ok(Err(_)) => Err(Error::ConsumerFailed(
                "the polling thread ended without a word".to_owned(),
            )),
            Err(_) => Err(Error::ConsumerShutdownTimeout(limit)),
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
