//! [`ConsumerConfig`]: what a [`Consumer`](super::Consumer) reads, and how it retries.

use std::time::Duration;

use crate::backoff::Backoff;

use rdkafka::ClientConfig;

use crate::dead_letter_filter::check_consumer;
use crate::error::{Error, Result};
use crate::inbox::DEFAULT_DEDUP_WINDOW;
use crate::kafka::KafkaConfig;
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
/// | `group` | `None`: the Kafka group is `name`; set it for a group of another name |
/// | `topics` | required: the topics it reads |
/// | `retry_attempts` | 3: retries of a failing handler; then the message is dead-lettered |
/// | `retry_backoff` | 1 s, doubling with each failure up to 30 s (also the longest wait while the database is away) |
/// | `dedup_window` | [`DEFAULT_DEDUP_WINDOW`] (15 days): how long the inbox remembers an event |
/// | `cleanup_interval` | 1 h: how often inbox records older than the window are deleted; `None` turns cleanup off |
/// | `max_buffered` | 1,000 messages per partition read ahead of its handler; past it the partition is paused |
/// | `max_buffered_bytes` | 16 MiB of keys and payloads per partition read ahead of its handler; past it the partition is paused |
/// | `handler_timeout` | 60 s: an attempt that takes longer fails (its transaction rolls back) |
/// | `stuck_after` | 5 min: a partition on one message longer than this makes the health probe fail |
/// | `replay_interval` | 5 s: how often the consumer looks for dead letters an operator marked for replay; `None`: never |
/// | `skip_unknown_events` | false: an event type the consumer has no place for is dead-lettered |
/// | `shutdown_timeout` | 30 s |
/// | `tables` | the default table names |
///
/// The Kafka connection (brokers, TLS, SASL, `OUTBOX_KAFKA_*` variables, a
/// properties file) comes from a [`KafkaConfig`], the relay's, so one configuration
/// serves both sides; its producer-only properties are left out. The consumer sets:
///
/// - `group.id` = `name`, or `group` when set; a `group.id` in the [`KafkaConfig`]
///   (`OUTBOX_KAFKA_GROUP_ID`, a properties file) that differs is refused: the inbox
///   deduplicates by the consumer's name, so two names in one group each miss half
///   the events, and one name per instance applies every event once per instance;
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
    /// consumer group unless `group` is set.
    pub name: String,
    /// The Kafka consumer group, when it must differ from `name`: for example a new
    /// group that reads the topics again from the start while the inbox, under the
    /// same name, skips what was applied. `None`: the group is `name`.
    pub group: Option<String>,
    /// The topics to read.
    pub topics: Vec<String>,
    /// Retries of a handler that fails; after `1 + retry_attempts` failed attempts the
    /// message is dead-lettered. Failures while the database is away do not count.
    pub retry_attempts: u32,
    /// The wait after a failed attempt: `retry_backoff.first` after the first,
    /// doubling with each further failure, at most `retry_backoff.max` (also the
    /// longest wait while the database is away).
    pub retry_backoff: Backoff,
    /// How long the inbox keeps a record: keep it above the topics' `retention.ms` +
    /// `segment.ms` (see [`DEFAULT_DEDUP_WINDOW`]).
    pub dedup_window: Duration,
    /// How often records older than `dedup_window` are deleted; `None`: never (run
    /// [`Inbox::cleanup`](crate::Inbox::cleanup) yourself).
    pub cleanup_interval: Option<Duration>,
    /// Messages of one partition read ahead of its handler; past it the partition is
    /// paused until its handler catches up.
    pub max_buffered: usize,
    /// Bytes (keys and payloads) of one partition read ahead of its handler; past it
    /// the partition is paused until its handler catches up. With large messages this
    /// bounds the memory a database outage can fill.
    pub max_buffered_bytes: usize,
    /// How long the handler may take on one attempt; a longer one fails (its
    /// transaction rolls back) and counts as a failed attempt, so a hung handler shows in the logs and the
    /// failure metric instead of stalling its partition in silence.
    pub handler_timeout: Duration,
    /// How often the consumer takes the dead letters of its name marked for replay
    /// ([`Inbox::request_replay`](crate::Inbox::request_replay), `outbox inbox
    /// replay`) and hands them to its handler; `None`: never.
    pub replay_interval: Option<Duration>,
    /// How long a partition may be on one message (retrying it, or waiting for the
    /// database) before [`ConsumerProbe::healthcheck`](super::ConsumerProbe::healthcheck)
    /// fails.
    pub stuck_after: Duration,
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
            group: None,
            topics: topics.into_iter().map(Into::into).collect(),
            retry_attempts: 3,
            retry_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            dedup_window: DEFAULT_DEDUP_WINDOW,
            cleanup_interval: Some(Duration::from_secs(60 * 60)),
            max_buffered: 1_000,
            max_buffered_bytes: 16 * 1024 * 1024,
            handler_timeout: Duration::from_secs(60),
            replay_interval: Some(Duration::from_secs(5)),
            stuck_after: Duration::from_secs(5 * 60),
            skip_unknown_events: false,
            shutdown_timeout: Duration::from_secs(30),
            tables: Tables::default(),
            kafka,
        }
    }

    /// `Ok` when the configuration can run.
    ///
    /// # Errors
    /// [`Error::InvalidConsumer`] for a name the inbox cannot store; [`Error::Config`]
    /// for no topics, a zero limit, delay, window or interval, a `shutdown_timeout`
    /// not below `max.poll.interval.ms`, a `group.id` other than the name, or no
    /// broker.
    pub fn validate(&self) -> Result<()> {
        check_consumer(&self.name)?;
        self.check_topics_and_limits()?;
        self.check_durations()?;
        self.check_kafka()
    }

    /// At least one topic, none empty; read-ahead limits of at least 1.
    fn check_topics_and_limits(&self) -> Result<()> {
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
        if self.max_buffered_bytes == 0 {
            return invalid("max_buffered_bytes", "0".to_owned(), "must be at least 1");
        }
        Ok(())
    }

    /// Delays, windows, timeouts and intervals above zero; a backoff that does not
    /// shrink.
    fn check_durations(&self) -> Result<()> {
        let zero = Duration::ZERO;
        for (variable, value, reason) in [
            (
                "retry_backoff.first",
                self.retry_backoff.first,
                "must be above zero: a zero delay retries in a hot loop while the database is away",
            ),
            (
                "retry_backoff.max",
                self.retry_backoff.max,
                "must be above zero",
            ),
            (
                "dedup_window",
                self.dedup_window,
                "must be above zero: the inbox would forget each event at once",
            ),
            (
                "handler_timeout",
                self.handler_timeout,
                "must be above zero",
            ),
            (
                "shutdown_timeout",
                self.shutdown_timeout,
                "must be above zero",
            ),
            ("stuck_after", self.stuck_after, "must be above zero"),
        ] {
            if value == zero {
                return invalid(variable, "0s".to_owned(), reason);
            }
        }
        if self.cleanup_interval == Some(zero) {
            return invalid(
                "cleanup_interval",
                "0s".to_owned(),
                "must be above zero; None turns cleanup off",
            );
        }
        if self.replay_interval == Some(zero) {
            return invalid(
                "replay_interval",
                "0s".to_owned(),
                "must be above zero; None turns replays off",
            );
        }
        if self.retry_backoff.max < self.retry_backoff.first {
            return invalid(
                "retry_backoff.max",
                format!("{:?}", self.retry_backoff.max),
                "must not be below retry_backoff.first",
            );
        }
        Ok(())
    }

    /// The Kafka side: no `group.id` other than the consumer's, a `shutdown_timeout`
    /// below `max.poll.interval.ms`, a broker.
    fn check_kafka(&self) -> Result<()> {
        let client = self.kafka.client_config();
        if let Some(group) = client.get("group.id")
            && group != self.group_id()
        {
            return invalid(
                "group.id",
                group.to_owned(),
                "must equal the consumer's name, or be left unset (set ConsumerConfig::group for a group of another name): the inbox deduplicates by the name, so two names in one group, or one name per instance, miss events or apply them twice",
            );
        }
        // A revocation waits up to `shutdown_timeout` for the handlers in flight,
        // inside the poll; past `max.poll.interval.ms` the group throws the member out.
        let max_poll = client
            .get("max.poll.interval.ms")
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(300), Duration::from_millis);
        if self.shutdown_timeout >= max_poll {
            return invalid(
                "shutdown_timeout",
                format!("{:?}", self.shutdown_timeout),
                "must be below max.poll.interval.ms (300 s unless set): a rebalance waits this long for the handlers in flight",
            );
        }
        self.kafka.clone().require_brokers().map(|_| ())
    }

    /// The Kafka consumer group: `group`, else `name`.
    pub fn group_id(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }

    /// The rdkafka configuration the consumer is created from.
    pub(super) fn client_config(&self) -> ClientConfig {
        let mut client = self.kafka.client_config().clone();
        for property in PRODUCER_ONLY {
            client.remove(property);
        }
        client.set("group.id", self.group_id());
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

/// The [`Error::Config`] refusing `variable`'s `value` for `reason`.
fn invalid(variable: &'static str, value: String, reason: &'static str) -> Result<()> {
    Err(Error::Config {
        variable,
        value,
        reason,
    })
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

    fn refused(config: &ConsumerConfig) -> &'static str {
        match config.validate() {
            Err(Error::Config { variable, .. }) => variable,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn zero_delays_windows_and_limits_are_refused() {
        let valid = ConsumerConfig::new(KafkaConfig::new("k:9092"), "billing", ["t"]);
        valid.validate().expect("valid");
        let mut config = valid.clone();
        config.cleanup_interval = Some(Duration::ZERO);
        assert_eq!(refused(&config), "cleanup_interval");
        let mut config = valid.clone();
        config.retry_backoff.first = Duration::ZERO;
        assert_eq!(refused(&config), "retry_backoff.first");
        let mut config = valid.clone();
        config.dedup_window = Duration::ZERO;
        assert_eq!(refused(&config), "dedup_window");
        let mut config = valid.clone();
        config.handler_timeout = Duration::ZERO;
        assert_eq!(refused(&config), "handler_timeout");
        let mut config = valid.clone();
        config.max_buffered_bytes = 0;
        assert_eq!(refused(&config), "max_buffered_bytes");
        let mut config = valid.clone();
        config.shutdown_timeout = Duration::from_secs(300);
        assert_eq!(refused(&config), "shutdown_timeout");
        let mut config = valid;
        config.kafka = config.kafka.set("max.poll.interval.ms", "60000");
        config.shutdown_timeout = Duration::from_secs(61);
        assert_eq!(refused(&config), "shutdown_timeout");
    }

    #[test]
    fn a_group_id_other_than_the_name_is_refused() {
        // `OUTBOX_KAFKA_GROUP_ID`, or a properties file shared by two consumers.
        let kafka = KafkaConfig::new("k:9092").set("group.id", "shared");
        let config = ConsumerConfig::new(kafka.clone(), "billing", ["t"]);
        assert_eq!(refused(&config), "group.id");
        let named = ConsumerConfig::new(kafka.clone(), "shared", ["t"]);
        named.validate().expect("the group is the name");
        assert_eq!(named.client_config().get("group.id"), Some("shared"));
        // A group of another name is said in code, where the inbox's name is.
        let mut regrouped = ConsumerConfig::new(kafka, "billing", ["t"]);
        regrouped.group = Some("shared".to_owned());
        regrouped.validate().expect("the group is explicit");
        assert_eq!(regrouped.client_config().get("group.id"), Some("shared"));
    }
}
