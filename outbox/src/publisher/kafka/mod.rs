//! [`KafkaPublisher`]: publishes through rdkafka's idempotent `FutureProducer`.
//!
//! How failures are judged, so that per-key order holds and only a message at fault
//! uses up its attempts:
//! - The producer keeps a partition's messages in order. With one request in flight
//!   per broker connection (the default here) and the gapless guarantee, nothing after
//!   a refused record batch is even sent; a batch not acknowledged within the delivery
//!   timeout is purged and the producer replaced. So what the broker holds of a
//!   partition is always a prefix of what was sent, whatever the broker's own
//!   idempotence checks.
//! - A failure counts as an attempt unless the broker is unreachable as a whole
//!   (nothing in the batch was acknowledged and the cluster's metadata cannot be
//!   read). An undelivered message whose topic exists and is healthy is an outage of
//!   that broker, not the message's fault; one whose topic is missing or broken counts.
//! - When the broker refuses a record batch, every message in it fails alike. When
//!   several messages of one partition were refused together, each is sent again
//!   alone: the ones refused alone count an attempt, the others go through.
//! - Messages that failed only because another one did (the producer stopped behind a
//!   refused batch) are reported as not sent: they use no attempt.

mod failure;
mod judge;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use tokio::time::Instant;
use tracing::{debug_span, warn};

use self::failure::{Cause, breaks_the_producer};
use super::{PublishError, Publisher};
use crate::error::Result;
use crate::kafka::{KafkaConfig, KafkaContext, LastError};
use crate::wire::Message;

/// How long a metadata request of the health check or of a failure's diagnosis may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long purged messages may take to report back.
const PURGE_GRACE: Duration = Duration::from_secs(5);

/// Publishes to Kafka.
///
/// A batch is enqueued whole, then its delivery reports are awaited together, so many
/// messages travel in each request. The message key is the event's key, and every
/// event header (see [`Message::headers`]) travels as a Kafka header.
///
/// A producer that hits a fatal error (the gapless guarantee stops it after a refused
/// record batch; librdkafka's idempotence state can be fenced after an outage) or
/// whose batch timed out is replaced by a new one from the same configuration; the
/// failed messages are retried.
#[derive(Clone)]
pub struct KafkaPublisher {
    config: KafkaConfig,
    delivery_timeout: Duration,
    producer: Arc<RwLock<FutureProducer<KafkaContext>>>,
    last_error: Arc<LastError>,
}

/// What became of one message of a batch.
#[derive(Debug)]
enum Delivery {
    /// The broker acknowledged it.
    Acked,
    /// Not sent: an earlier message of its key could not be enqueued.
    Held,
    /// It failed.
    Failed {
        cause: Cause,
        error: String,
        /// The partition it was assigned to, when it got that far.
        partition: Option<i32>,
    },
}

impl Delivery {
    /// `result` is a delivery future's: `Err` when the producer went away first.
    fn of<Canceled>(result: std::result::Result<OwnedDeliveryResult, Canceled>) -> Self {
        match result {
            Ok(Ok(_)) => Delivery::Acked,
            Ok(Err((error, message))) => Delivery::Failed {
                cause: Cause::of(&error),
                error: error.to_string(),
                partition: Some(message.partition()),
            },
            Err(_canceled) => Delivery::Failed {
                cause: Cause::Undelivered,
                error: "the producer was shut down".to_owned(),
                partition: None,
            },
        }
    }
}

impl KafkaPublisher {
    /// A publisher for `brokers` with the defaults of [`KafkaConfig::new`].
    ///
    /// # Errors
    /// [`Error::Kafka`](crate::Error::Kafka) when the producer cannot be created.
    #[doc(alias = "NewKafkaPublisher")]
    pub fn new(brokers: &str) -> Result<Self> {
        Self::from_config(KafkaConfig::new(brokers))
    }

    /// A publisher with `config`.
    ///
    /// # Errors
    /// [`Error::Kafka`](crate::Error::Kafka) when the configuration is invalid.
    pub fn from_config(config: KafkaConfig) -> Result<Self> {
        let last_error = Arc::new(LastError::default());
        let producer = create(&config, &last_error)?;
        Ok(KafkaPublisher {
            delivery_timeout: config.delivery_timeout(),
            config,
            producer: Arc::new(RwLock::new(producer)),
            last_error,
        })
    }

    /// The rdkafka producer in use.
    pub fn producer(&self) -> FutureProducer<KafkaContext> {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces `failed` with a new producer, unless another batch did already.
    fn replace(&self, failed: &FutureProducer<KafkaContext>, reason: &str) {
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return; // another batch replaced it already
        }
        match create(&self.config, &self.last_error) {
            Ok(fresh) => {
                warn!(%reason, "replaced the Kafka producer with a new one");
                *current = fresh;
            }
            Err(error) => {
                warn!(%reason, %error, "the Kafka producer must be replaced but could not be recreated")
            }
        }
    }

    fn enqueue(
        &self,
        producer: &FutureProducer<KafkaContext>,
        message: &Message,
    ) -> std::result::Result<DeliveryFuture, KafkaError> {
        let span = debug_span!("outbox.publish", event_id = %message.id, event_type = %message.event_type, key = %message.key);
        #[cfg(feature = "opentelemetry")]
        if let Some(traceparent) = message.traceparent() {
            let tracestate = message.extra_header(crate::wire::headers::TRACESTATE);
            crate::otel::link(&span, &traceparent, tracestate);
        }
        let _span = span.entered();
        let headers = message.headers();
        let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len());
        for (key, value) in &headers {
            kafka_headers = kafka_headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        let value = message.value();
        let mut record = FutureRecord::to(&message.topic)
            .key(message.key.as_str())
            .headers(kafka_headers);
        if let Some(value) = &value {
            record = record.payload(value.as_ref());
        }
        producer.send_result(record).map_err(|(error, _)| error)
    }

    /// Sends `batch` on the current producer and waits for every acknowledgement, at
    /// most the delivery timeout. Past it, purges what the producer still holds and
    /// replaces it, so nothing of this batch can reach the broker later.
    async fn deliver(&self, batch: &[&Message]) -> Vec<Delivery> {
        let producer = self.producer();
        let mut deliveries: Vec<Option<Delivery>> = batch.iter().map(|_| None).collect();
        let mut failed_keys: HashSet<&str> = HashSet::new();
        let mut in_flight = FuturesUnordered::new();
        for (index, message) in batch.iter().enumerate() {
            if failed_keys.contains(message.key.as_str()) {
                deliveries[index] = Some(Delivery::Held);
                continue;
            }
            match self.enqueue(&producer, message) {
                Ok(future) => in_flight.push(async move { (index, future.await) }),
                Err(error) => {
                    failed_keys.insert(&message.key);
                    deliveries[index] = Some(Delivery::Failed {
                        cause: Cause::of(&error),
                        error: error.to_string(),
                        partition: None,
                    });
                }
            }
        }
        let mut deadline = Instant::now() + self.delivery_timeout;
        let mut purged = false;
        let mut broken = false;
        loop {
            match tokio::time::timeout_at(deadline, in_flight.next()).await {
                Ok(Some((index, result))) => {
                    if let Ok(Err((error, _))) = &result {
                        broken |= breaks_the_producer(error);
                    }
                    deliveries[index] = Some(Delivery::of(result));
                }
                Ok(None) => break,
                Err(_elapsed) if !purged => {
                    producer.purge(PurgeConfig::default().queue().inflight());
                    purged = true;
                    deadline = Instant::now() + PURGE_GRACE;
                }
                Err(_elapsed) => break,
            }
        }
        drop(in_flight);
        if let Some((code, reason)) = producer.client().fatal_error() {
            self.replace(&producer, &format!("fatal error {code:?}: {reason}"));
        } else if broken {
            self.replace(&producer, "the producer's idempotence state is unusable");
        } else if purged {
            self.replace(
                &producer,
                &format!(
                    "a batch was not acknowledged within {}",
                    humantime::format_duration(self.delivery_timeout)
                ),
            );
        }
        let timeout = humantime::format_duration(self.delivery_timeout).to_string();
        deliveries
            .into_iter()
            .map(|delivery| {
                delivery.unwrap_or_else(|| Delivery::Failed {
                    cause: Cause::Undelivered,
                    error: format!("no acknowledgement within {timeout}"),
                    partition: None,
                })
            })
            .collect()
    }
}

/// A producer of `config`'s, reporting to `last_error`.
fn create(
    config: &KafkaConfig,
    last_error: &Arc<LastError>,
) -> Result<FutureProducer<KafkaContext>> {
    let context = KafkaContext::new(Arc::new(config.secrets()), Arc::clone(last_error));
    config
        .producer_config()
        .create_with_context(context)
        .map_err(|error| config.redact(error).into())
}

impl fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("config", &self.config)
            .field("delivery_timeout", &self.delivery_timeout)
            .finish_non_exhaustive()
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, batch: &[Message]) -> Vec<std::result::Result<(), PublishError>> {
        let messages: Vec<&Message> = batch.iter().collect();
        let deliveries = self.deliver(&messages).await;
        self.judge(batch, deliveries).await
    }

    async fn check(&self) -> std::result::Result<(), PublishError> {
        self.topics()
            .await
            .map(|_| ())
            .map_err(PublishError::transient)
    }
}
