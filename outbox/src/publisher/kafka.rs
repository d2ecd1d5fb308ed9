//! [`KafkaPublisher`]: publishes through rdkafka's idempotent `FutureProducer`.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tracing::{debug_span, warn};

use super::{PublishError, Publisher};
use crate::error::Result;
use crate::message::Message;

/// Settings of the Kafka producer: typed setters for the common ones, and the raw
/// rdkafka [`ClientConfig`] for everything else (TLS, SASL, tuning).
///
/// Always set: `enable.idempotence=true`, which implies `acks=all`, at most five
/// requests in flight and unlimited retries within `message.timeout.ms`: messages keep
/// their order within a partition, and a retry never writes a message twice.
///
/// ```
/// use std::time::Duration;
///
/// let config = outbox::KafkaConfig::new("127.0.0.1:9092")
///     .message_timeout(Duration::from_secs(10))
///     .linger(Duration::from_millis(2))
///     .set("security.protocol", "plaintext");
/// assert_eq!(config.client_config().get("enable.idempotence"), Some("true"));
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    client: ClientConfig,
}

impl KafkaConfig {
    /// A producer for `brokers` (comma-separated `host:port`), with a 10 s message
    /// timeout (below the relay's default 30 s lease) and 1 ms linger: the relay
    /// enqueues a whole batch at once, so waiting to fill requests only adds latency.
    pub fn new(brokers: &str) -> Self {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "1");
        KafkaConfig { client }
    }

    /// Starts from an rdkafka configuration of your own; idempotence is switched on.
    pub fn from_client_config(mut client: ClientConfig) -> Self {
        client.set("enable.idempotence", "true");
        KafkaConfig { client }
    }

    /// How long a message may wait for its acknowledgement before it fails (and is
    /// retried by the relay). Keep it below the relay's lease time.
    pub fn message_timeout(self, timeout: Duration) -> Self {
        self.set("message.timeout.ms", timeout.as_millis().to_string())
    }

    /// How long the producer waits to fill a request.
    pub fn linger(self, linger: Duration) -> Self {
        self.set("linger.ms", linger.as_millis().to_string())
    }

    /// The client id the broker sees.
    pub fn client_id(self, id: &str) -> Self {
        self.set("client.id", id)
    }

    /// Sets any librdkafka property.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.client.set(key, value);
        self
    }

    /// The underlying rdkafka configuration.
    pub fn client_config(&self) -> &ClientConfig {
        &self.client
    }

    /// The underlying rdkafka configuration, to change.
    pub fn client_config_mut(&mut self) -> &mut ClientConfig {
        &mut self.client
    }
}

impl fmt::Debug for KafkaConfig {
    /// Shows the keys only: values may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.client.config_map();
        let mut keys: Vec<&&str> = map.keys().collect();
        keys.sort();
        f.debug_struct("KafkaConfig").field("keys", &keys).finish()
    }
}

/// Publishes to Kafka.
///
/// A batch is enqueued whole, then its delivery reports are awaited together, so many
/// messages are in flight at once. The message key is the event's key, and every
/// event header (see [`Message::headers`]) travels as a Kafka header.
///
/// A producer that hits a fatal error (librdkafka's idempotence state can be fenced,
/// for example after messages timed out while the broker was away) is replaced by a
/// new one from the same configuration; the failed messages are retried.
#[derive(Clone)]
pub struct KafkaPublisher {
    config: KafkaConfig,
    producer: Arc<RwLock<FutureProducer>>,
}

impl KafkaPublisher {
    /// A publisher for `brokers` with the defaults of [`KafkaConfig::new`].
    ///
    /// # Errors
    /// [`Error::Kafka`](crate::Error::Kafka) when the producer cannot be created.
    pub fn new(brokers: &str) -> Result<Self> {
        Self::from_config(KafkaConfig::new(brokers))
    }

    /// A publisher with `config`.
    ///
    /// # Errors
    /// [`Error::Kafka`](crate::Error::Kafka) when the configuration is invalid.
    pub fn from_config(config: KafkaConfig) -> Result<Self> {
        let producer = config.client.create()?;
        Ok(KafkaPublisher {
            config,
            producer: Arc::new(RwLock::new(producer)),
        })
    }

    /// The rdkafka producer in use.
    pub fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces `failed` with a new producer, unless another batch did already.
    fn replace_broken(&self, failed: &FutureProducer, reason: &str) {
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return; // another batch replaced it already
        }
        match self.config.client.create() {
            Ok(fresh) => {
                warn!(%reason, "Kafka producer failed fatally; replaced it with a new one");
                *current = fresh;
            }
            Err(error) => {
                warn!(%reason, %error, "Kafka producer failed fatally and could not be recreated")
            }
        }
    }

    fn enqueue(
        &self,
        producer: &FutureProducer,
        message: &Message,
    ) -> Result<DeliveryFuture, PublishError> {
        let _span = debug_span!("outbox.publish", event_id = %message.id, event_type = %message.event_type, key = %message.key)
            .entered();
        let headers = message.headers();
        let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len());
        for (key, value) in &headers {
            kafka_headers = kafka_headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        let record = FutureRecord::to(&message.topic)
            .key(message.key.as_str())
            .payload(message.payload.as_str())
            .headers(kafka_headers);
        producer
            .send_result(record)
            .map_err(|(error, _)| classify(&error))
    }
}

impl fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        // Enqueue everything first: the producer batches and pipelines the requests.
        let producer = self.producer();
        let mut failed_keys: HashSet<&str> = HashSet::new();
        let pending: Vec<Result<DeliveryFuture, PublishError>> = batch
            .iter()
            .map(|message| {
                if failed_keys.contains(message.key.as_str()) {
                    return Err(PublishError::not_sent());
                }
                let enqueued = self.enqueue(&producer, message);
                if enqueued.is_err() {
                    failed_keys.insert(&message.key);
                }
                enqueued
            })
            .collect();
        let broken = std::sync::atomic::AtomicBool::new(false);
        let outcomes = join_all(pending.into_iter().map(|enqueued| {
            let broken = &broken;
            async move {
                match enqueued?.await {
                    Ok(Ok(_delivery)) => Ok(()),
                    Ok(Err((error, _message))) => {
                        if breaks_the_producer(&error) {
                            broken.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(classify(&error))
                    }
                    Err(_canceled) => Err(PublishError::transient("the producer was shut down")),
                }
            }
        }))
        .await;
        warn_on_reordering(batch, &outcomes);
        if let Some((code, reason)) = producer.client().fatal_error() {
            self.replace_broken(&producer, &format!("{code:?}: {reason}"));
        } else if broken.into_inner() {
            self.replace_broken(
                &producer,
                "the broker fenced the producer's idempotence state",
            );
        }
        outcomes
    }

    async fn check(&self) -> Result<(), PublishError> {
        let producer = self.producer();
        let probe = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(3))
                .map(|_| ())
        });
        match probe.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(PublishError::transient(format!(
                "broker unreachable: {error}"
            ))),
            Err(error) => Err(PublishError::transient(format!(
                "broker check failed: {error}"
            ))),
        }
    }
}

/// An acknowledged message after a failed one with the same key means the broker has
/// them out of order. The idempotent producer prevents this for every failure except
/// a message the broker refuses on its own while accepting the next (for example a
/// broker-side size limit below the producer's); it cannot be undone, so say so.
fn warn_on_reordering(batch: &[Message], outcomes: &[Result<(), PublishError>]) {
    let mut failed: HashSet<&str> = HashSet::new();
    for (message, outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Err(error) if error.kind() != super::PublishErrorKind::NotSent => {
                failed.insert(&message.key);
            }
            Ok(()) if failed.contains(message.key.as_str()) => warn!(
                event_id = %message.id,
                key = %message.key,
                "event reached Kafka after an earlier event of its key failed: per-key order is broken for this key"
            ),
            _ => {}
        }
    }
}

/// Errors after which the producer's idempotence state is unusable: every later
/// message would fail the same way until a new producer starts a new state.
fn breaks_the_producer(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    )
}

/// Errors of the message itself are permanent; everything else (the broker being
/// away, slow or misconfigured) is transient and never dead-letters an event.
fn classify(error: &KafkaError) -> PublishError {
    let permanent = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    if permanent {
        PublishError::permanent(error.to_string())
    } else {
        PublishError::transient(error.to_string())
    }
}
