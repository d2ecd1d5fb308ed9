//! Quick start: store events in the same transaction as a business change, and let the
//! relay publish them to Kafka.
//!
//! Runs with no server: an in-memory SQLite database and librdkafka's in-process mock
//! broker.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With `DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`) and
//! `KAFKA_BROKERS` (e.g. `127.0.0.1:9092`) set, it uses those instead.

use std::collections::HashSet;
use std::time::Duration;

use outbox::{EventBuilder, KafkaPublisher, Outbox, OutboxEvent, Processor, ProcessorConfig};
use outbox_migration::Migrator;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// The seed's first example: a user registers.
#[derive(Serialize, OutboxEvent)]
#[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
struct UserRegistered {
    user_id: Uuid,
    email: String,
    username: String,
}

const TOPICS: [&str; 2] = ["user-events", "order-events"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = connect().await?;
    Migrator::up(&db, None).await?;
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS quickstart_users (id VARCHAR(36) PRIMARY KEY, email VARCHAR(255) NOT NULL)",
    )
    .await?;
    let (brokers, _mock) = broker().await?;

    // The relay runs in this process; it shares the outbox handle so a store wakes it.
    let outbox = Outbox::new();
    let config = ProcessorConfig {
        interval: Duration::from_secs(1),
        ..ProcessorConfig::new("quickstart")
    };
    let relay = Processor::new(config, db.clone(), KafkaPublisher::new(&brokers)?)
        .with_outbox(outbox.clone())
        .spawn();

    // Two users register: each user row and its event commit together.
    let mut stored = HashSet::new();
    for (name, email) in [("ada", "ada@example.com"), ("grace", "grace@example.com")] {
        let user = UserRegistered {
            user_id: Uuid::now_v7(),
            email: email.into(),
            username: name.into(),
        };
        let txn = db.begin().await?;
        insert_user(&txn, user.user_id, email).await?;
        let id = outbox
            .store(&txn, &user, "user-events")
            .user_id(user.user_id)
            .header("source", "quickstart")
            .await?;
        outbox.commit(txn).await?;
        println!("stored      user.registered  {name:<8} event {id}");
        stored.insert(id.to_string());
    }

    // This registration fails after the event was stored: the rollback removes both.
    let mallory = UserRegistered {
        user_id: Uuid::now_v7(),
        email: "mallory@example.com".into(),
        username: "mallory".into(),
    };
    let txn = db.begin().await?;
    insert_user(&txn, mallory.user_id, &mallory.email).await?;
    let phantom = outbox.store(&txn, &mallory, "user-events").await?;
    txn.rollback().await?;
    println!("rolled back: mallory -> event {phantom} is not stored and never published");

    // The seed's second example: an order event built at run time.
    let order = EventBuilder::new("order.created", "order-17")
        .version("v2")
        .user_id("customer-4")
        .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
        .data(json!({ "order_id": "order-17", "customer_id": "customer-4", "amount": 4200, "currency": "EUR" }));
    let txn = db.begin().await?;
    let id = outbox
        .store(&txn, &order, "order-events")
        .partition_key("customer-4")
        .await?;
    outbox.commit(txn).await?;
    println!("stored      order.created    order-17 event {id}");
    stored.insert(id.to_string());

    // Read what the relay published.
    let arrived = consume(&brokers, &stored, Duration::from_secs(30)).await?;
    println!("consumed {} events from the broker:", arrived.len());
    for (topic, key, headers) in &arrived {
        println!("  {topic:<13} key={key}");
        println!("    {headers}");
    }
    let stats = relay.stats();
    relay.shutdown().await?;
    println!(
        "relay stopped: published {}, failed {}, dead-lettered {}",
        stats.published, stats.failed, stats.dead_lettered
    );

    if arrived.len() != stored.len()
        || arrived
            .iter()
            .any(|(_, _, h)| h.contains(&phantom.to_string()))
    {
        return Err("the broker did not receive exactly the committed events".into());
    }
    Ok(())
}

async fn connect() -> Result<DatabaseConnection, sea_orm::DbErr> {
    match std::env::var("DATABASE_URL") {
        Ok(url) => Database::connect(url).await,
        Err(_) => {
            // One connection: every connection to `sqlite::memory:` is a new database.
            let mut options = ConnectOptions::new("sqlite::memory:");
            options.max_connections(1).sqlx_logging(false);
            Database::connect(options).await
        }
    }
}

/// `KAFKA_BROKERS`, or librdkafka's in-process mock broker (kept alive by the caller).
async fn broker() -> Result<
    (String, Option<MockCluster<'static, DefaultProducerContext>>),
    Box<dyn std::error::Error>,
> {
    if let Ok(brokers) = std::env::var("KAFKA_BROKERS") {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()?;
        let topics: Vec<NewTopic<'_>> = TOPICS
            .iter()
            .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
            .collect();
        // "Already exists" is fine on a second run.
        let _ = admin.create_topics(&topics, &AdminOptions::new()).await?;
        return Ok((brokers, None));
    }
    let cluster = MockCluster::new(1)?;
    for topic in TOPICS {
        cluster.create_topic(topic, 1, 1)?;
    }
    Ok((cluster.bootstrap_servers(), Some(cluster)))
}

/// Reads both topics until every event in `expected` arrived; returns topic, key and
/// headers of each.
async fn consume(
    brokers: &str,
    expected: &HashSet<String>,
    timeout: Duration,
) -> Result<Vec<(String, String, String)>, Box<dyn std::error::Error>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("quickstart-{}", Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&TOPICS)?;
    let mut arrived = Vec::new();
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while seen.len() < expected.len() {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| "timed out waiting for events")??;
        let headers: Vec<String> = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        format!(
                            "{}={}",
                            h.key,
                            String::from_utf8_lossy(h.value.unwrap_or_default())
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let event_id = headers
            .iter()
            .find_map(|h| h.strip_prefix("event_id="))
            .unwrap_or_default()
            .to_owned();
        if expected.contains(&event_id) && seen.insert(event_id) {
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            arrived.push((message.topic().to_owned(), key, headers.join(", ")));
        }
    }
    Ok(arrived)
}

async fn insert_user(
    conn: &impl ConnectionTrait,
    id: Uuid,
    email: &str,
) -> Result<(), sea_orm::DbErr> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "INSERT INTO quickstart_users (id, email) VALUES ($1, $2)",
        _ => "INSERT INTO quickstart_users (id, email) VALUES (?, ?)",
    };
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [id.to_string().into(), email.into()],
    ))
    .await?;
    Ok(())
}
