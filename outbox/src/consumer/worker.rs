//! A partition's worker: it applies the partition's messages one at a time, in
//! offset order, each in a transaction of its own with its inbox record, retrying a
//! failing handler with backoff and dead-lettering what cannot be applied.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt as _;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, field, info_span, warn};
use uuid::Uuid;

use super::ConsumerConfig;
use super::handler::{Handler, HandlerError, error_chain};
use super::metrics::{Counters, Outcome};
use super::poll::{KafkaConsumer, Spawn};
use crate::decode::DecodeEvent;
use crate::error::Error;
use crate::headers;
use crate::inbox::Inbox;
use crate::received::{Received, utf8_headers};
use crate::sql::{DeadLetterRow, Dialect};

/// What every worker of one consumer shares.
pub(super) struct Shared<E, H> {
    pub(super) config: ConsumerConfig,
    pub(super) db: DatabaseConnection,
    pub(super) inbox: Inbox,
    pub(super) handler: H,
    pub(super) counters: Arc<Counters>,
    pub(super) event: PhantomData<fn() -> E>,
}

/// A failed attempt, and whether it uses up one of the message's attempts: the
/// handler's errors do; the consumer's own statements (begin, the inbox record,
/// commit) failing do not, as they say nothing about the message (a database that
/// turned read-only under a failover, a pool out of connections).
struct Failure {
    error: HandlerError,
    counts: bool,
}

impl Failure {
    fn handler(error: HandlerError) -> Self {
        Failure {
            error,
            counts: true,
        }
    }

    fn ours(error: impl Into<HandlerError>) -> Self {
        Failure {
            error: error.into(),
            counts: false,
        }
    }
}

/// Why a message is given up on.
struct GiveUp {
    error: String,
    attempts: i32,
}

impl<E, H> Shared<E, H>
where
    E: DecodeEvent + Send + 'static,
    H: Handler<E>,
{
    /// Runs a partition's worker until its queue closes or it is cancelled.
    pub(super) async fn work(self: Arc<Self>, consumer: Arc<KafkaConsumer>, spawn: Spawn) {
        let Spawn {
            partition: (topic, partition),
            mut messages,
            buffered,
            cancel,
            done,
        } = spawn;
        loop {
            let message = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                message = messages.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            let outcome = self.process(&message, &cancel).await;
            buffered.fetch_sub(1, Ordering::AcqRel);
            let Some(outcome) = outcome else {
                break; // cancelled: the offset stays, the message comes again
            };
            self.counters.record(&self.config.name, outcome);
            if let Err(error) = store_offset(&consumer, &topic, partition, message.offset()) {
                // The partition was revoked meanwhile: its next owner reads the
                // message again and finds it in the inbox.
                warn!(%topic, partition, offset = message.offset(), %error, "could not store an offset");
            }
        }
        // The consumer first: the polling thread, seeing `done` go, drops what it
        // holds of the consumer last, and closes it there.
        drop(consumer);
        drop(done);
    }

    /// Applies one message: `None` when cancelled before it was done with.
    async fn process(&self, message: &OwnedMessage, cancel: &CancellationToken) -> Option<Outcome> {
        let first = match Received::<E>::decode(message) {
            Ok(received) => received,
            Err(Error::UnknownEvent { event_type, .. })
                if self.config.skip_unknown_events && !E::knows_type(&event_type) =>
            {
                return Some(Outcome::Skipped);
            }
            Err(error) => {
                let give_up = GiveUp {
                    error: error_chain(&error),
                    attempts: 0,
                };
                return self.dead_letter(message, give_up, cancel).await;
            }
        };
        let span = info_span!(
            "outbox.consume",
            consumer = %self.config.name,
            event_id = %first.event_id(),
            event_type = first.event_type(),
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            trace_id = field::Empty,
            traceparent = field::Empty,
        );
        if let Some(traceparent) = first.header(headers::TRACEPARENT) {
            span.record("traceparent", traceparent);
        }
        if let Some(trace_id) = first.trace_id() {
            span.record("trace_id", trace_id);
        }
        self.attempts(message, first, cancel).instrument(span).await
    }

    /// Calls the handler until it succeeds, the message is dead-lettered, or the
    /// worker is cancelled.
    async fn attempts(
        &self,
        message: &OwnedMessage,
        first: Received<E>,
        cancel: &CancellationToken,
    ) -> Option<Outcome> {
        let mut next = Some(first);
        let (mut failures, mut outages) = (0u32, 0u32);
        loop {
            let received = match next.take() {
                Some(received) => received,
                // Decoded once already: this cannot fail unless decoding is not
                // deterministic.
                None => match Received::<E>::decode(message) {
                    Ok(received) => received,
                    Err(error) => {
                        let give_up = GiveUp {
                            error: error_chain(&error),
                            attempts: as_i32(failures),
                        };
                        return self.dead_letter(message, give_up, cancel).await;
                    }
                },
            };
            let started = Instant::now();
            let Failure {
                error: failure,
                counts,
            } = match self.apply(received).await {
                Ok(outcome) => {
                    if outcome == Outcome::Processed {
                        self.counters.handled(&self.config.name, started.elapsed());
                    }
                    return Some(outcome);
                }
                Err(failure) => failure,
            };
            self.counters.failed(&self.config.name);
            let wait = if !counts {
                outages = outages.saturating_add(1);
                warn!(error = %failure, "the consumer's own statements failed (begin, inbox record or commit); the attempt does not count");
                self.config.backoff(outages)
            } else if self.db.ping().await.is_err() {
                outages = outages.saturating_add(1);
                warn!(error = %failure, "handler failed while the database is unreachable; the attempt does not count");
                self.config.backoff(outages)
            } else {
                outages = 0;
                failures = failures.saturating_add(1);
                if failure.is_permanent() || failures > self.config.retry_attempts {
                    error!(error = %failure, attempts = failures, "handler failed; the message is dead-lettered");
                    let give_up = GiveUp {
                        error: failure.to_string(),
                        attempts: as_i32(failures),
                    };
                    return self.dead_letter(message, give_up, cancel).await;
                }
                warn!(error = %failure, attempt = failures, "handler failed; the message will be tried again");
                self.config.backoff(failures)
            };
            if !sleep(wait, cancel).await {
                return None;
            }
        }
    }

    /// One attempt: a transaction with the inbox record and the handler's changes.
    async fn apply(&self, received: Received<E>) -> Result<Outcome, Failure> {
        let txn = self.db.begin().await.map_err(Failure::ours)?;
        let recorded = self
            .inbox
            .record(&txn, &self.config.name, received.event_id())
            .await
            .map_err(Failure::ours)?;
        if !recorded {
            txn.rollback().await.map_err(Failure::ours)?;
            return Ok(Outcome::Duplicate);
        }
        match AssertUnwindSafe(self.handler.handle(&txn, received))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(Failure::handler(error)),
            // The transaction rolls back when dropped; the panic is a failed attempt.
            Err(panic) => {
                return Err(Failure::handler(HandlerError::from(format!(
                    "the handler panicked: {}",
                    crate::panic::message(&*panic)
                ))));
            }
        }
        // PostgreSQL answers COMMIT in a transaction that an error aborted with a
        // rollback, not an error: a handler that swallowed a database error would
        // otherwise lose the inbox record and its changes, and the offset would move
        // on. A statement in an aborted transaction fails (25P02).
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared("SELECT 1").await.map_err(|error| {
                Failure::handler(HandlerError::from(format!(
                    "the transaction was aborted by an error the handler did not return: {error}"
                )))
            })?;
        }
        txn.commit().await.map_err(Failure::ours)?;
        Ok(Outcome::Processed)
    }

    /// Writes the message's dead letter (with its inbox record when its event id is
    /// known, so a redelivery is skipped), retrying while the database fails.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        give_up: GiveUp,
        cancel: &CancellationToken,
    ) -> Option<Outcome> {
        let mut failures = 0;
        loop {
            match self.write_dead_letter(message, &give_up).await {
                Ok(outcome) => return Some(outcome),
                Err(error) => {
                    failures += 1;
                    warn!(%error, topic = message.topic(), partition = message.partition(), offset = message.offset(), "could not write a dead letter; trying again");
                    if !sleep(self.config.backoff(failures), cancel).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn write_dead_letter(
        &self,
        message: &OwnedMessage,
        give_up: &GiveUp,
    ) -> crate::Result<Outcome> {
        let headers = utf8_headers(message);
        let event_id = headers
            .get(headers::EVENT_ID)
            .and_then(|id| Uuid::parse_str(id).ok());
        let event_type = headers
            .get(headers::EVENT_TYPE)
            .map(|t| truncate(t, crate::envelope::MAX_NAME_LEN));
        let headers_json = serde_json::to_string(&headers).unwrap_or_else(|_| "{}".to_owned());
        let txn = self.db.begin().await?;
        if let Some(event_id) = event_id
            && !self.inbox.record(&txn, &self.config.name, event_id).await?
        {
            txn.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        let dialect = Dialect::of(txn.get_database_backend())?;
        let row = DeadLetterRow {
            consumer: &self.config.name,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            event_id,
            event_type,
            key: message.key(),
            payload: message.payload(),
            headers: &headers_json,
            error: &give_up.error,
            attempts: give_up.attempts,
            now: Utc::now(),
        };
        txn.execute_raw(dialect.record_dead_letter(self.config.tables.inbox_dead(), &row))
            .await?;
        txn.commit().await?;
        Ok(Outcome::DeadLettered)
    }
}

/// Stores the offset after `offset`'s message: where the group resumes the partition.
/// (Not `Consumer::store_offset`: librdkafka's `rd_kafka_offset_store` under it adds one
/// itself.)
fn store_offset(
    consumer: &KafkaConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> KafkaResult<()> {
    let mut next = TopicPartitionList::new();
    next.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
    consumer.store_offsets(&next)
}

/// Waits `wait`; `false` when cancelled first.
async fn sleep(wait: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// At most `max` characters of `text`.
fn truncate(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(at, _)| &text[..at])
}

fn as_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
