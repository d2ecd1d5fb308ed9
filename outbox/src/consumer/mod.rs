//! [`Consumer`]: reads the events a relay published and applies each exactly once,
//! with the [`Inbox`](crate::Inbox) in the handler's transaction.

mod attempt;
mod cleanup;
mod config;
mod consumer_handle;
mod context;
mod dead_letter;
mod decoded;
mod failure;
mod halt;
mod handler;
mod health;
mod letter;
mod metrics;
mod poll;
mod proof;
mod replay;
mod span;
mod with_handler;
mod worker;

use std::marker::PhantomData;

use sea_orm::{DatabaseConnection, DatabaseTransaction};

pub use self::config::ConsumerConfig;
pub use self::consumer_handle::ConsumerHandle;
pub use self::handler::{Handler, HandlerError, HandlerFuture};
pub use self::health::ConsumerProbe;
pub use self::metrics::{ConsumerStats, consumer_metric_names};

pub use self::with_handler::ConsumerWithHandler;
use crate::decode::DecodeEvent;
use crate::error::Result;
use crate::sql::Dialect;
use crate::wire::Received;

/// A Kafka consumer that applies each event exactly once in effect: for every message
/// it opens a transaction, records the event in the [`Inbox`](crate::Inbox) (a
/// duplicate ends there, without calling the handler), calls your handler with the
/// transaction, commits, and only then stores the message's offset.
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
///   unknown types. List them with [`Inbox::dead_letters`](crate::Inbox::dead_letters).
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
///   ([`Inbox::request_replay`](crate::Inbox::request_replay), `outbox inbox
///   replay`) are taken by a consumer of their name every `replay_interval` and
///   handed to the handler in a transaction that deletes the letter and renews the
///   event's inbox record; one that fails again stays, with its new error and its
///   mark cleared. A replayed message is applied after the messages of its key that
///   came since.
/// - **Cleanup**: the consumer's inbox records older than `dedup_window` are deleted
///   every `cleanup_interval` (other consumers' records are theirs to delete).
/// - **Failure**: a bug outside any message's attempt (on the polling thread, or in a
///   worker) stops the consumer: [`ConsumerHandle::failure`] says why and
///   [`ConsumerHandle::shutdown`] returns
///   [`Error::ConsumerFailed`](crate::Error::ConsumerFailed). Its messages not done
///   with are delivered again when it is started anew; none is skipped.
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
    /// [`Error::InvalidConsumer`](crate::Error::InvalidConsumer) or
    /// [`Error::Config`](crate::Error::Config) for an invalid `config`;
    /// [`Error::UnsupportedBackend`](crate::Error::UnsupportedBackend) for a database
    /// the inbox does not support.
    pub fn new(config: ConsumerConfig, db: DatabaseConnection) -> Result<Self> {
        config.validate()?;
        Dialect::of(db.get_database_backend())?;
        Ok(Consumer { config, db })
    }

    /// Applies events with a closure of SeaORM's `transaction` shape: it gets the
    /// transaction and the event, and returns a boxed future that may borrow the
    /// transaction (`Box::pin(async move { .. })`). The event type `E` is the type of
    /// the closure's second argument.
    pub fn handle<E, F>(self, handler: F) -> ConsumerWithHandler<E, F>
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
    pub fn handler<E, H>(self, handler: H) -> ConsumerWithHandler<E, H>
    where
        E: DecodeEvent + Send + 'static,
        H: Handler<E>,
    {
        ConsumerWithHandler {
            consumer: self,
            handler,
            event: PhantomData,
        }
    }
}
