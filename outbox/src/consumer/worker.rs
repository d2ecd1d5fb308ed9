//! A partition's worker: it applies the partition's messages one at a time, in
//! offset order, each in a transaction of its own with its inbox record, retrying a
//! failing handler with backoff and dead-lettering what cannot be applied.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, field, info_span, warn};
use uuid::Uuid;

use super::handler::{Handler, HandlerError, error_chain};
use super::health::Progress;
use super::metrics::{Counters, Outcome};
use super::poll::{KafkaConsumer, Spawn};
use super::proof::Proof;
use super::{ConsumerConfig, Failed};
use crate::db_error::{Cause, cause, cause_of};
use crate::decode::DecodeEvent;
use crate::error::Error;
use crate::inbox::Inbox;
use crate::sql::{DeadLetterRow, Dialect};
use crate::wire::headers;
use crate::wire::{Received, trace_id, utf8_headers};

/// What every worker of one consumer shares.
pub(super) struct Shared<E, H> {
    pub(super) config: ConsumerConfig,
    pub(super) db: DatabaseConnection,
    pub(super) inbox: Inbox,
    pub(super) handler: H,
    pub(super) counters: Arc<Counters>,
    /// Which message each partition's worker is on, for the health probe.
    pub(super) progress: Arc<Progress>,
    /// Stops the whole consumer when a worker fails in a way it cannot go on from.
    pub(super) failed: Failed,
    /// How a transaction proves, before its commit, that it still holds its inbox
    /// record; learned from the database on first use.
    pub(super) proof: OnceCell<Proof>,
    pub(super) event: PhantomData<fn() -> E>,
}

/// How many times in a row a deadlock or serialization failure is tried again without
/// using one of the message's attempts.
const TRANSIENT_RETRIES: u32 = 10;

/// How many times writing a whole dead letter may be refused by a reachable database
/// before only a minimal one (no payload, no headers) is written.
const WHOLE_DEAD_LETTER_WRITES: u32 = 3;

/// The longest error text a dead letter keeps, in bytes.
pub(super) const MAX_ERROR_LEN: usize = 16 * 1024;

/// The longest headers (as JSON) a dead letter keeps, in bytes.
const MAX_HEADERS_LEN: usize = 1024 * 1024;

/// The longest key a minimal dead letter keeps, in bytes.
const MAX_MINIMAL_KEY_LEN: usize = 4 * 1024;

/// What a failed attempt says, and whether it uses up one of the message's attempts.
pub(super) struct Failure {
    pub(super) error: HandlerError,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The message's own failure (the handler's error or panic, its transaction
    /// refused at commit, its decoding panicked): it uses an attempt, unless the
    /// database turns out to be unreachable.
    Message,
    /// A deadlock or serialization failure: tried again without using an attempt, up
    /// to [`TRANSIENT_RETRIES`] times in a row.
    Transient,
    /// The database away, or the consumer's own statements (begin, the inbox record)
    /// failing: nothing about the message; no attempt is used.
    Outage,
}

impl Failure {
    /// A failure of the message, or of the database, as `error` tells.
    fn classified(error: HandlerError) -> Self {
        let kind = match cause_of(error.error()) {
            Cause::Unreachable => Kind::Outage,
            Cause::Transient => Kind::Transient,
            Cause::Refused => Kind::Message,
        };
        Failure { error, kind }
    }

    fn message(error: impl Into<HandlerError>) -> Self {
        Failure {
            error: error.into(),
            kind: Kind::Message,
        }
    }

    fn ours(error: impl Into<HandlerError>) -> Self {
        Failure {
            error: error.into(),
            kind: Kind::Outage,
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
    /// Runs a partition's worker until its queue closes or it is cancelled. A panic
    /// on a message's path is a failed attempt of that message; one anywhere else (a
    /// bug) stops the consumer, its message not done with, so nothing is skipped.
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
            self.progress.begin(&topic, partition, message.offset());
            let outcome = AssertUnwindSafe(self.process(&message, &cancel))
                .catch_unwind()
                .await;
            self.progress.end(&self.config.name, &topic, partition);
            buffered.remove(&message);
            let outcome = match outcome {
                Ok(Some(outcome)) => outcome,
                Ok(None) => break, // cancelled: the offset stays, the message comes again
                Err(panic) => {
                    self.failed.fail(format!(
                        "the worker of {topic}/{partition} panicked at offset {}: {}",
                        message.offset(),
                        crate::panic::message(&*panic)
                    ));
                    break;
                }
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
        let first = match decode::<E>(message) {
            Ok(received) => Some(received),
            Err(Decoded::Failed(Error::UnknownEvent { event_type, .. }))
                if self.config.skip_unknown_events && !E::knows_type(&event_type) =>
            {
                return Some(Outcome::Skipped);
            }
            Err(Decoded::Failed(error)) => {
                let give_up = GiveUp {
                    error: error_chain(&error),
                    attempts: 0,
                };
                return self.dead_letter(message, give_up, cancel).await;
            }
            // A user's `Deserialize` or `From` impl panicked: a failed attempt.
            Err(Decoded::Panicked(_)) => None,
        };
        // The decoded event's headers; read again only when decoding panicked.
        let span = match &first {
            Some(received) => consume_span(&self.config.name, message, received.headers()),
            None => consume_span(&self.config.name, message, &utf8_headers(message)),
        };
        self.attempts(message, first, cancel).instrument(span).await
    }

    /// Calls the handler until it succeeds, the message is dead-lettered, or the
    /// worker is cancelled.
    async fn attempts(
        &self,
        message: &OwnedMessage,
        first: Option<Received<E>>,
        cancel: &CancellationToken,
    ) -> Option<Outcome> {
        let mut next = first;
        let (mut failures, mut outages, mut transients) = (0u32, 0u32, 0u32);
        loop {
            let started = Instant::now();
            let attempt = match next.take().map_or_else(|| decode::<E>(message), Ok) {
                Ok(received) => self.apply(received).await,
                // Decoded once already: this fails only when decoding is not
                // deterministic.
                Err(Decoded::Failed(error)) => {
                    let give_up = GiveUp {
                        error: error_chain(&error),
                        attempts: as_i32(failures),
                    };
                    return self.dead_letter(message, give_up, cancel).await;
                }
                Err(Decoded::Panicked(panic)) => Err(Failure::message(format!(
                    "decoding the message panicked: {panic}"
                ))),
            };
            let Failure { error, mut kind } = match attempt {
                Ok(outcome) => {
                    if outcome == Outcome::Processed {
                        self.counters.handled(&self.config.name, started.elapsed());
                    }
                    return Some(outcome);
                }
                Err(failure) => failure,
            };
            self.counters.failed(&self.config.name);
            self.progress.failed(
                &self.config.name,
                message.topic(),
                message.partition(),
                &error.to_string(),
            );
            if kind == Kind::Transient {
                transients = transients.saturating_add(1);
                if transients > TRANSIENT_RETRIES {
                    kind = Kind::Message;
                }
            } else {
                transients = 0;
            }
            if kind == Kind::Message && self.db.ping().await.is_err() {
                kind = Kind::Outage;
            }
            let wait = match kind {
                Kind::Outage => {
                    outages = outages.saturating_add(1);
                    warn!(%error, "the attempt failed while the database is unreachable, or in the consumer's own statements (begin, inbox record); it does not count");
                    self.config.retry_backoff.after(outages)
                }
                Kind::Transient => {
                    warn!(%error, retry = transients, "a deadlock or serialization failure; tried again without using an attempt");
                    self.config.retry_backoff.after(transients)
                }
                Kind::Message => {
                    outages = 0;
                    failures = failures.saturating_add(1);
                    if error.is_permanent() || failures > self.config.retry_attempts {
                        error!(%error, attempts = failures, "handler failed; the message is dead-lettered");
                        let give_up = GiveUp {
                            error: error.to_string(),
                            attempts: as_i32(failures),
                        };
                        return self.dead_letter(message, give_up, cancel).await;
                    }
                    warn!(%error, attempt = failures, "handler failed; the message will be tried again");
                    self.config.retry_backoff.after(failures)
                }
            };
            if !sleep(wait, cancel).await {
                return None;
            }
        }
    }

    /// One attempt: a transaction with the inbox record and the handler's changes.
    async fn apply(&self, received: Received<E>) -> Result<Outcome, Failure> {
        let txn = self.db.begin().await.map_err(Failure::ours)?;
        self.apply_on(txn, received).await
    }

    /// One attempt on `txn`: the inbox record, the handler's changes, the proof that
    /// `txn` still holds the record, the commit.
    pub(super) async fn apply_on(
        &self,
        txn: DatabaseTransaction,
        received: Received<E>,
    ) -> Result<Outcome, Failure> {
        let event_id = received.event_id();
        let recorded = self
            .inbox
            .record(&txn, &self.config.name, event_id)
            .await
            .map_err(Failure::ours)?;
        if !recorded {
            txn.rollback().await.map_err(Failure::ours)?;
            return Ok(Outcome::Duplicate);
        }
        self.handle(&txn, received).await?;
        self.prove(&txn, event_id).await?;
        // A failure at COMMIT (a deferred constraint, a constraint trigger) is the
        // message's, unless the database is away or it was a deadlock.
        txn.commit()
            .await
            .map_err(|error| Failure::classified(HandlerError::from(error)))?;
        Ok(Outcome::Processed)
    }

    /// Runs the handler on `txn`: its error, its panic (in the call or the future it
    /// returns) and its overrunning `handler_timeout` are failed attempts. The
    /// transaction rolls back when dropped.
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        received: Received<E>,
    ) -> Result<(), Failure> {
        let panicked = |panic: Box<dyn std::any::Any + Send>| {
            Failure::message(format!(
                "the handler panicked: {}",
                crate::panic::message(&*panic)
            ))
        };
        let future =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.handler.handle(txn, received)))
                .map_err(panicked)?;
        let timeout = self.config.handler_timeout;
        match tokio::time::timeout(timeout, AssertUnwindSafe(future).catch_unwind()).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(Failure::classified(error)),
            Ok(Err(panic)) => Err(panicked(panic)),
            Err(_) => Err(Failure::message(format!(
                "the handler did not finish within the handler timeout ({timeout:?})"
            ))),
        }
    }

    /// Checks, before the commit, that `txn` is still the transaction that holds the
    /// event's inbox record. A handler that swallowed an error can leave it otherwise:
    /// PostgreSQL aborts the transaction (its COMMIT would roll back); MySQL and
    /// MariaDB roll a deadlocked one back and run the handler's later statements
    /// outside any transaction; a DDL statement commits it early. Committing then
    /// would lose the inbox record, or keep half the changes, while the offset moves
    /// on; the attempt fails instead.
    async fn prove(&self, txn: &DatabaseTransaction, event_id: Uuid) -> Result<(), Failure> {
        let proof = *self
            .proof
            .get_or_try_init(|| Proof::learn(&self.db))
            .await
            .map_err(Failure::ours)?;
        let dialect = Dialect::of(txn.get_database_backend()).map_err(Failure::ours)?;
        let statement = proof.statement(
            dialect,
            self.config.tables.inbox(),
            &self.config.name,
            event_id,
        );
        let lost = |why: String| {
            Failure::message(format!(
                "the transaction no longer holds the event's inbox record ({why}): the handler went on after a database error it did not return (a deadlock, an aborted transaction) or ended the transaction (COMMIT, ROLLBACK, DDL)"
            ))
        };
        match txn.query_one_raw(statement).await {
            Ok(Some(row)) if row.try_get_by_index::<i64>(0).is_ok_and(|held| held == 1) => Ok(()),
            Ok(_) => Err(lost("not found in this transaction".to_owned())),
            Err(error) => match cause(&error) {
                Cause::Unreachable => Err(Failure::ours(error)),
                _ => Err(lost(error.to_string())),
            },
        }
    }

    /// Writes the message's dead letter (with its inbox record when its event id is
    /// known, so a redelivery is skipped), retrying while the database fails. A
    /// database that keeps refusing the whole letter (a value it cannot store, a
    /// packet over its limit) gets a minimal one, so the partition goes on.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        give_up: GiveUp,
        cancel: &CancellationToken,
    ) -> Option<Outcome> {
        let (mut refused, mut outages) = (0u32, 0u32);
        let mut refusal: Option<String> = None;
        loop {
            let letter = match &refusal {
                Some(refusal) if refused >= WHOLE_DEAD_LETTER_WRITES => {
                    Letter::minimal(message, &give_up, refusal)
                }
                _ => Letter::whole(message, &give_up),
            };
            let error = match self.write_dead_letter(message, &letter).await {
                Ok(outcome) => return Some(outcome),
                Err(error) => error,
            };
            let wait = if cause_of(&error) == Cause::Unreachable || self.db.ping().await.is_err() {
                outages = outages.saturating_add(1);
                warn!(%error, topic = message.topic(), partition = message.partition(), offset = message.offset(), "could not write a dead letter while the database is unreachable; trying again");
                self.config.retry_backoff.after(outages)
            } else {
                refused = refused.saturating_add(1);
                if refused >= WHOLE_DEAD_LETTER_WRITES {
                    error!(%error, topic = message.topic(), partition = message.partition(), offset = message.offset(), "the database refused the dead letter; a minimal one (topic, partition, offset, key, error) is written instead");
                } else {
                    warn!(%error, topic = message.topic(), partition = message.partition(), offset = message.offset(), "the database refused the dead letter; trying again");
                }
                refusal = Some(error.to_string());
                self.config.retry_backoff.after(refused)
            };
            if !sleep(wait, cancel).await {
                return None;
            }
        }
    }

    async fn write_dead_letter(
        &self,
        message: &OwnedMessage,
        letter: &Letter<'_>,
    ) -> crate::Result<Outcome> {
        let txn = self.db.begin().await?;
        if let Some(event_id) = letter.event_id
            && !self.inbox.record(&txn, &self.config.name, event_id).await?
        {
            txn.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        let dialect = Dialect::of(txn.get_database_backend())?;
        let table = self.config.tables.inbox_dead();
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let row = DeadLetterRow {
            consumer: &self.config.name,
            topic,
            partition,
            offset,
            event_id: letter.event_id,
            event_type: letter.event_type.as_deref(),
            key: letter.key,
            payload: letter.payload,
            headers: &letter.headers,
            error: &letter.error,
            attempts: letter.attempts,
            now: Utc::now(),
        };
        // A message delivered again after its dead letter was written (a crash before
        // its offset was committed) has it already; a topic deleted and created again
        // reuses offsets, and its message gets a letter of its own.
        let there = txn
            .query_all_raw(dialect.dead_letters_at(table, &row))
            .await?;
        let same = there.iter().any(|found| {
            found
                .try_get_by_index::<Option<Vec<u8>>>(0)
                .ok()
                .flatten()
                .as_deref()
                == row.key
                && found
                    .try_get_by_index::<Option<Vec<u8>>>(1)
                    .ok()
                    .flatten()
                    .as_deref()
                    == row.payload
                && found.try_get_by_index::<String>(2).ok().as_deref() == Some(row.headers)
        });
        if same {
            txn.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        txn.execute_raw(dialect.record_dead_letter(table, &row))
            .await?;
        txn.commit().await?;
        Ok(Outcome::DeadLettered)
    }
}

/// The span of a message's attempts, with what its `headers` say of the event.
fn consume_span(
    consumer: &str,
    message: &OwnedMessage,
    headers: &BTreeMap<String, String>,
) -> tracing::Span {
    let span = info_span!(
        "outbox.consume",
        consumer = %consumer,
        event_id = field::Empty,
        event_type = headers.get(headers::EVENT_TYPE).map(String::as_str),
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        trace_id = field::Empty,
        traceparent = field::Empty,
    );
    if let Some(event_id) = headers.get(headers::EVENT_ID) {
        span.record("event_id", event_id.as_str());
    }
    if let Some(traceparent) = headers.get(headers::TRACEPARENT) {
        span.record("traceparent", traceparent.as_str());
    }
    if let Some(trace_id) = trace_id(headers) {
        span.record("trace_id", trace_id);
    }
    #[cfg(feature = "opentelemetry")]
    crate::otel::continue_trace(&span, headers);
    span
}

/// A dead letter's values, made storable: NUL characters escaped, texts bounded.
struct Letter<'a> {
    event_id: Option<Uuid>,
    event_type: Option<String>,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: String,
    error: String,
    attempts: i32,
}

impl<'a> Letter<'a> {
    /// The message as it came: key, payload and UTF-8 headers.
    fn whole(message: &'a OwnedMessage, give_up: &GiveUp) -> Self {
        let headers = utf8_headers(message);
        // serde_json escapes NUL and other control characters in JSON strings.
        let mut headers_json = serde_json::to_string(&headers).unwrap_or_else(|_| "{}".to_owned());
        if headers_json.len() > MAX_HEADERS_LEN {
            headers_json = serde_json::json!({
                "outbox.headers_not_kept": format!("{} bytes of headers, over the {MAX_HEADERS_LEN}-byte limit", headers_json.len())
            })
            .to_string();
        }
        Letter {
            event_id: event_id(&headers),
            event_type: headers
                .get(headers::EVENT_TYPE)
                .map(|t| storable(t, crate::envelope::MAX_NAME_LEN)),
            key: message.key(),
            payload: message.payload(),
            headers: headers_json,
            error: storable(&give_up.error, MAX_ERROR_LEN),
            attempts: give_up.attempts,
        }
    }

    /// What is left when the database refused the whole letter: where the message
    /// is (topic, partition, offset: it can be read there until the topic's retention
    /// deletes it), its key when short, its event id and type, and the errors.
    fn minimal(message: &'a OwnedMessage, give_up: &GiveUp, refusal: &str) -> Self {
        let whole = Letter::whole(message, give_up);
        let key = message.key().filter(|key| key.len() <= MAX_MINIMAL_KEY_LEN);
        let error = format!(
            "{}; the database refused to store this dead letter whole ({refusal}): its payload and headers{} are not kept; read the message from the topic at this offset",
            give_up.error,
            if key.is_none() && message.key().is_some() {
                " and key"
            } else {
                ""
            }
        );
        Letter {
            key,
            payload: None,
            headers: "{}".to_owned(),
            error: storable(&error, MAX_ERROR_LEN),
            ..whole
        }
    }
}

/// The `event_id` header, when it is a UUID.
fn event_id(headers: &BTreeMap<String, String>) -> Option<Uuid> {
    headers
        .get(headers::EVENT_ID)
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// `text` with NUL characters written `\0` (PostgreSQL stores none in text) and cut
/// to at most `max` characters.
pub(super) fn storable(text: &str, max: usize) -> String {
    let escaped = if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\\0"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    truncate(&escaped, max).to_owned()
}

/// A decoding that failed, or panicked (with the panic's message).
pub(super) enum Decoded {
    Failed(Error),
    Panicked(String),
}

/// Decodes `message` as an `E`, catching a panic in a user's `Deserialize` or `From`
/// impl.
pub(super) fn decode<E: DecodeEvent>(message: &OwnedMessage) -> Result<Received<E>, Decoded> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| Received::<E>::decode(message))) {
        Ok(decoded) => decoded.map_err(Decoded::Failed),
        Err(panic) => Err(Decoded::Panicked(crate::panic::message(&*panic))),
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
