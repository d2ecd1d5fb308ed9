//! [`ConsumerConfig`]: what a [`Consumer`](super::Consumer) reads, and how it retries.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::error::{Error, Result};
use crate::inbox::{DEFAULT_DEDUP_WINDOW, check_consumer};
use crate::publisher::KafkaConfig;
use crate::tables::Tables;

/// Producer properties a [`KafkaConfig`] carries that a consumer has no use for
/// (librdkafka would warn about each).
const PRODUCER_ONLY: [&str; 4] = [
    "enable.idempotence",
    "enable.gapless.guarantee",
    "message.timeout.ms",
    "linger.ms",
];

/// Settings of a [`Consumer`](super::Consumer).
///
/// | field | default |
/// |---|---|
/// | `name` | required: the consumer's name in the inbox, and its Kafka `group.id` |
/// | `topics` | required: the topics it reads |
/// | `retry_attempts` | 3: retries of a failing handler; then the message is dead-lettered |
/// | `retry_delay` | 1 s, doubling with each failure |
/// | `max_retry_delay` | 30 s: also the longest wait while the database is away |
/// | `dedup_window` | [`DEFAULT_DEDUP_WINDOW`] (15 days): how long the inbox remembers an event |
/// | `cleanup_interval` | 1 h: how often inbox records older than the window are deleted; `None` turns cleanup off |
/// | `max_buffered` | 1,000 messages per partition read ahead of its handler; past it the partition is paused |
/// | `skip_unknown_events` | false: an event type the consumer has no place for is dead-lettered |
/// | `shutdown_timeout` | 30 s |
/// | `tables` | the default table names |
///
/// The Kafka connection (brokers, TLS, SASL, `OUTBOX_KAFKA_*` variables, a
/// properties file) comes from a [`KafkaConfig`], the relay's, so one configuration
/// serves both sides; its producer-only properties are left out. The consumer sets:
///
/// - `group.id` = `name`, unless set;
/// - `auto.offset.reset=earliest`, unless set: a new group reads the topics from the
///   start rather than missing what was published before it joined;
/// - `statistics.interval.ms=10000`, unless set: the lag gauges are read from
///   librdkafka's statistics;
/// - `enable.auto.offset.store=false`, always: an offset is stored only once its
///   message's transaction committed (or the message was dead-lettered), so a crash
///   never skips a message;
/// - `enable.auto.commit=true`, always: stored offsets are committed every
///   `auto.commit.interval.ms` (5 s), when partitions are revoked, and at shutdown.
///   The inbox, not the offsets, makes effects happen once: an offset committed late
///   only means a redelivery, which the inbox skips.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The consumer's name: the inbox records events under it, and it is the Kafka
    /// consumer group unless `group.id` is set.
    pub name: String,
    /// The topics to read.
    pub topics: Vec<String>,
    /// Retries of a handler that fails; after `1 + retry_attempts` failed attempts the
    /// message is dead-lettered. Failures while the database is away do not count.
    pub retry_attempts: u32,
    /// The wait after the first failure; it doubles with each further failure.
    pub retry_delay: Duration,
    /// The longest wait between attempts.
    pub max_retry_delay: Duration,
    /// How long the inbox keeps a record: keep it above the topics' `retention.ms` +
    /// `segment.ms` (see [`DEFAULT_DEDUP_WINDOW`]).
    pub dedup_window: Duration,
    /// How often records older than `dedup_window` are deleted; `None`: never (run
    /// [`Inbox::cleanup`](crate::Inbox::cleanup) yourself).
    pub cleanup_interval: Option<Duration>,
    /// Messages of one partition read ahead of its handler; past it the partition is
    /// paused until its handler catches up.
    pub max_buffered: usize,
    /// Whether a message of an event type the consumer's event type does not know
    /// ([`DecodeEvent::knows_type`](crate::DecodeEvent::knows_type)) is skipped (its
    /// offset stored, nothing written) instead of dead-lettered. Turn it on for a topic
    /// that carries event types this consumer does not care about. A version the
    /// consumer does not know of a type it knows (a producer that upgraded first) is
    /// dead-lettered either way, so it is kept, not lost.
    pub skip_unknown_events: bool,
    /// How long [`ConsumerHandle::shutdown`](super::ConsumerHandle::shutdown) waits for
    /// the handlers in flight.
    pub shutdown_timeout: Duration,
    /// The tables of the inbox and its dead letters.
    pub tables: Tables,
    /// The Kafka connection.
    pub kafka: KafkaConfig,
}

impl ConsumerConfig {
    /// A consumer named `name` reading `topics` over `kafka`, with the defaults above.
    pub fn new<T: Into<String>>(
        kafka: KafkaConfig,
        name: &str,
        topics: impl IntoIterator<Item = T>,
    ) -> Self {
        ConsumerConfig {
            name: name.to_owned(),
            topics: topics.into_iter().map(Into::into).collect(),
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(30),
            dedup_window: DEFAULT_DEDUP_WINDOW,
            cleanup_interval: Some(Duration::from_secs(60 * 60)),
            max_buffered: 1_000,
            skip_unknown_events: false,
            shutdown_timeout: Duration::from_secs(30),
            tables: Tables::default(),
            kafka,
        }
    }

    /// `retry_delay * 2^(failures - 1)`, at most `max_retry_delay`.
    pub fn backoff(&self, failures: u32) -> Duration {
        crate::retry::doubling(self.retry_delay, self.max_retry_delay, failures)
    }

    /// `Ok` when the configuration can run.
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`] for a name the inbox cannot store; [`Error::Config`]
    /// for no topics, a zero `max_buffered`, or no broker.
    pub fn validate(&self) -> Result<()> {
        check_consumer(&self.name)?;
        let invalid = |variable, value: String, reason| {
            Err(Error::Config {
                variable,
                value,
                reason,
            })
        };
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return invalid(
                "topics",
                format!("{:?}", self.topics),
                "name at least one topic, none empty",
            );
        }
        if self.max_buffered == 0 {
            return invalid("max_buffered", "0".to_owned(), "must be at least 1");
        }
        self.kafka.clone().require_brokers().map(|_| ())
    }

    /// The rdkafka configuration the consumer is created from.
    pub(super) fn client_config(&self) -> ClientConfig {
        let mut client = self.kafka.client_config().clone();
        for property in PRODUCER_ONLY {
            client.remove(property);
        }
        if client.get("group.id").is_none() {
            client.set("group.id", &self.name);
        }
        if client.get("auto.offset.reset").is_none() {
            client.set("auto.offset.reset", "earliest");
        }
        if client.get("statistics.interval.ms").is_none() {
            client.set("statistics.interval.ms", "10000"); // the lag gauges
        }
        client
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true");
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_stores_offsets_itself_and_drops_producer_properties() {
        let kafka = KafkaConfig::new("kafka:9092").set("enable.auto.offset.store", "true");
        let config = ConsumerConfig::new(kafka, "billing", ["user-events"]);
        let client = config.client_config();
        assert_eq!(client.get("group.id"), Some("billing"));
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(client.get("enable.idempotence"), None);
        assert_eq!(client.get("bootstrap.servers"), Some("kafka:9092"));
        config.validate().expect("valid");
    }

    #[test]
    fn invalid_settings_are_named() {
        let kafka = KafkaConfig::new("kafka:9092");
        let no_topics = ConsumerConfig::new(kafka.clone(), "billing", Vec::<String>::new());
        assert!(matches!(
            no_topics.validate(),
            Err(Error::Config {
                variable: "topics",
                ..
            })
        ));
        let unnamed = ConsumerConfig::new(kafka, " ", ["t"]);
        assert!(matches!(
            unnamed.validate(),
            Err(Error::InvalidConsumer { .. })
        ));
        let no_broker = ConsumerConfig::new(KafkaConfig::new(""), "billing", ["t"]);
        assert!(matches!(no_broker.validate(), Err(Error::Config { .. })));
    }

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let config = ConsumerConfig::new(KafkaConfig::new("k:9092"), "c", ["t"]);
        assert_eq!(config.backoff(1), Duration::from_secs(1));
        assert_eq!(config.backoff(3), Duration::from_secs(4));
        assert_eq!(config.backoff(40), Duration::from_secs(30));
    }
}
