//! The real broker for the tests: topics, a consumer, and a private broker process
//! for tests that freeze it.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};

/// The broker the test script started: `KAFKA_BROKERS`, default `127.0.0.1:9092`.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Creates `topic` with `partitions` partitions on `brokers`. Panics with a clear
/// message when the broker is unreachable: a missing broker fails tests.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_with(&client_config(brokers), topic, partitions).await;
}

/// `publisher` once its producer has its producer id: it has had one message
/// acknowledged on a topic of its own. tansu 0.6 can give two producers that ask for
/// an id at the same moment the same one, and then acknowledges the second one's first
/// messages to a partition without storing them, as duplicates of the first's (seen
/// with three idempotent confluent-kafka producers created at once: 5 rounds in 30
/// lost a producer's messages). Tests that start several relays on one topic create
/// their publishers through this, one after the other.
pub async fn warmed_up(publisher: outbox::KafkaPublisher, brokers: &str) -> outbox::KafkaPublisher {
    use outbox::Publisher;
    const TOPIC: &str = "outbox-test-warm-up";
    create_topic(brokers, TOPIC, 1).await;
    let message = outbox::Message {
        seq: 0,
        id: uuid::Uuid::now_v7(),
        event_type: "test.warm_up".to_owned(),
        event_version: "v1".to_owned(),
        aggregate_id: "warm-up".to_owned(),
        topic: TOPIC.to_owned(),
        key: "warm-up".to_owned(),
        payload: "{}".to_owned(),
        extra_headers: Vec::new(),
        trace_id: None,
        user_id: None,
        created_at: chrono::Utc::now(),
        attempts: 0,
        tombstone: false,
        encoding: outbox::Encoding::native(),
    };
    for _ in 0..10 {
        if publisher.publish(std::slice::from_ref(&message)).await[0].is_ok() {
            return publisher;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the warm-up message to {brokers} was not acknowledged");
}

/// A client configuration for `brokers`, to add TLS or SASL settings to.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// As [`create_topic`], with the client settings of `config`.
pub async fn create_topic_with(config: &ClientConfig, topic: &str, partitions: i32) {
    let brokers = config
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_owned();
    outbox::KafkaConfig::from_client_config(config.clone())
        .create_topic(topic, partitions, 1)
        .await
        .unwrap_or_else(|error| {
            panic!("create topic {topic} at {brokers}: {error}; run the tests with scripts/test.sh")
        });
}

/// One consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The topic it was read from.
    pub topic: String,
    /// The message key.
    pub key: String,
    /// The payload as text (empty for a null value).
    pub payload: String,
    /// Whether the value was null: a tombstone.
    pub null_value: bool,
    /// The headers, by name.
    pub headers: HashMap<String, String>,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its timestamp, in milliseconds since the epoch: when the producer sent it
    /// (`CreateTime`), if the broker kept one.
    pub timestamp_ms: Option<i64>,
}

impl Received {
    /// The `event_id` header.
    pub fn event_id(&self) -> &str {
        self.headers.get("event_id").map_or("", String::as_str)
    }

    /// The event's id in whichever format the message is: the `event_id`, `ce_id` or
    /// `id` header, or the `id` of a structured CloudEvent; else where it was read.
    pub fn identity(&self) -> String {
        ["event_id", "ce_id", "id"]
            .into_iter()
            .find_map(|name| self.headers.get(name).cloned())
            .or_else(|| {
                let event: serde_json::Value = serde_json::from_str(&self.payload).ok()?;
                Some(event.get("id")?.as_str()?.to_owned())
            })
            .unwrap_or_else(|| format!("{}/{}", self.partition, self.offset))
    }
}

/// Reads `topic` from the beginning until `count` distinct events (by
/// [`Received::identity`])
/// arrived or `timeout` passed, and returns every message, duplicates included, in
/// arrival order (per partition, offset order).
pub async fn consume(brokers: &str, topic: &str, count: usize, timeout: Duration) -> Vec<Received> {
    consume_with(client_config(brokers), topic, count, timeout).await
}

/// As [`consume`], over several topics at once.
pub async fn consume_topics(
    brokers: &str,
    topics: &[&str],
    count: usize,
    timeout: Duration,
) -> Vec<Received> {
    consume_from(client_config(brokers), topics, count, timeout).await
}

/// As [`consume`], with the client settings of `config`.
pub async fn consume_with(
    config: ClientConfig,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Received> {
    consume_from(config, &[topic], count, timeout).await
}

async fn consume_from(
    mut config: ClientConfig,
    topics: &[&str],
    count: usize,
    timeout: Duration,
) -> Vec<Received> {
    let consumer: StreamConsumer = config
        .set(
            "group.id",
            format!("test-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    consumer.subscribe(topics).expect("subscribe");
    let mut received = Vec::new();
    let mut distinct = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while distinct.len() < count {
        let Ok(next) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            break;
        };
        let message = next.expect("consume");
        let text =
            |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), text(h.value)))
                    .collect()
            })
            .unwrap_or_default();
        let received_message = Received {
            topic: message.topic().to_owned(),
            key: text(message.key()),
            payload: text(message.payload()),
            null_value: message.payload().is_none(),
            headers,
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
        };
        distinct.insert(received_message.identity());
        received.push(received_message);
    }
    received
}

/// A free `127.0.0.1:port`.
pub(crate) fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// A broker process of the test's own, for tests that stop or freeze it. Killed on drop.
#[derive(Debug)]
pub struct PrivateBroker {
    child: Child,
    /// `host:port` to bootstrap from.
    pub address: String,
}

impl PrivateBroker {
    /// Starts `tansu` (from PATH) on a free port and waits until it listens.
    pub async fn start() -> Self {
        let address = free_address();
        Self::start_on(address.clone(), &address).await
    }

    /// Starts `tansu` behind a [`Proxy`](crate::proxy::Proxy): it tells clients to
    /// connect to the proxy, so all their traffic goes through it. Returns both.
    pub async fn start_behind_proxy() -> (Self, crate::proxy::Proxy) {
        let address = free_address();
        let proxy = crate::proxy::Proxy::start(address.clone()).await;
        let broker = Self::start_on(address, &proxy.address).await;
        (broker, proxy)
    }

    async fn start_on(address: String, advertised: &str) -> Self {
        Self::start_with(address, advertised, &[]).await
    }

    /// Starts `tansu` listening on `address`, telling clients to connect to
    /// `advertised`, with `extra` arguments (`--authentication`).
    pub(crate) async fn start_with(address: String, advertised: &str, extra: &[&str]) -> Self {
        let url = format!("tcp://{address}");
        let advertised_url = format!("tcp://{advertised}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu (scripts/broker.sh install puts it on PATH)");
        let broker = PrivateBroker { child, address };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&broker.address)
                .await
                .is_ok()
            {
                return broker;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tansu did not listen on {} within 5 s", broker.address);
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Thaws a frozen broker (SIGCONT), with everything it held.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
