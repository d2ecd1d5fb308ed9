//! What the examples share: a database and a broker that need no server unless you
//! point them at one, and a consumer.

use std::collections::HashSet;
use std::time::Duration;

use outbox::KafkaConfig;
use outbox_migration::Migrator;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

/// The examples' error type.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `DATABASE_URL`, or an in-memory SQLite database; migrated either way.
pub async fn database() -> Result<DatabaseConnection, Error> {
    let db = match std::env::var("DATABASE_URL") {
        Ok(url) => Database::connect(url).await?,
        Err(_) => {
            // One connection: every connection to `sqlite::memory:` is a new database.
            let mut options = ConnectOptions::new("sqlite::memory:");
            options.max_connections(1).sqlx_logging(false);
            Database::connect(options).await?
        }
    };
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// A broker to publish to: `KAFKA_BROKERS`, or librdkafka's in-process mock broker,
/// which lives as long as this value.
pub struct Broker {
    /// Bootstrap servers.
    pub brokers: String,
    _mock: Option<MockCluster<'static, DefaultProducerContext>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("brokers", &self.brokers)
            .field("mock", &self._mock.is_some())
            .finish()
    }
}

impl Broker {
    /// Connects (or starts the mock) and makes sure `topics` exist.
    pub async fn start(topics: &[&str]) -> Result<Self, Error> {
        if let Ok(brokers) = std::env::var("KAFKA_BROKERS") {
            let kafka = KafkaConfig::new(&brokers);
            for topic in topics {
                kafka.create_topic(topic, 1, 1).await?;
            }
            return Ok(Broker {
                brokers,
                _mock: None,
            });
        }
        let mock = MockCluster::new(1)?;
        for topic in topics {
            mock.create_topic(topic, 1, 1)?;
        }
        Ok(Broker {
            brokers: mock.bootstrap_servers(),
            _mock: Some(mock),
        })
    }
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The topic.
    pub topic: String,
    /// The message key.
    pub key: String,
    /// The `event_id` header.
    pub event_id: String,
    /// Every header as `name=value`.
    pub headers: Vec<String>,
    /// The payload.
    pub payload: String,
}

/// A consumer of `topics` from the beginning, in a group of its own.
pub fn consumer(brokers: &str, topics: &[&str]) -> Result<StreamConsumer, Error> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("example-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(topics)?;
    Ok(consumer)
}

/// Reads until every event in `expected` arrived (others are skipped), at most `timeout`.
pub async fn receive(
    consumer: &StreamConsumer,
    expected: &HashSet<String>,
    timeout: Duration,
) -> Result<Vec<Delivered>, Error> {
    let mut arrived = Vec::new();
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while seen.len() < expected.len() {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| "timed out waiting for events")??;
        let delivered = delivered(&message);
        if expected.contains(&delivered.event_id) && seen.insert(delivered.event_id.clone()) {
            arrived.push(delivered);
        }
    }
    Ok(arrived)
}

/// The parts of a Kafka message the examples print.
pub fn delivered(message: &impl Message) -> Delivered {
    let text =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    let headers: Vec<String> = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| format!("{}={}", h.key, text(h.value)))
                .collect()
        })
        .unwrap_or_default();
    let event_id = headers
        .iter()
        .find_map(|h| h.strip_prefix("event_id="))
        .unwrap_or_default()
        .to_owned();
    Delivered {
        topic: message.topic().to_owned(),
        key: text(message.key()),
        event_id,
        headers,
        payload: text(message.payload()),
    }
}
