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
//! With `DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`, or
//! `mysql://root@127.0.0.1:3306/test` for MySQL and MariaDB) and
//! `KAFKA_BROKERS` (e.g. `127.0.0.1:9092`) set, it uses those instead.

use std::collections::HashSet;
use std::time::Duration;

use outbox::{EventBuilder, KafkaPublisher, Outbox, OutboxEvent, Relay, RelayConfig};
use outbox_examples::{Broker, Error, consumer, database, receive};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// The Go library's first example: a user registers.
#[derive(Serialize, OutboxEvent)]
#[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
struct UserRegistered {
    user_id: Uuid,
    email: String,
    username: String,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let db = database().await?;
    db.execute_unprepared("CREATE TABLE IF NOT EXISTS quickstart_users (id VARCHAR(36) PRIMARY KEY, email VARCHAR(255) NOT NULL)")
        .await?;
    let broker = Broker::start(&["user-events", "order-events"]).await?;

    // The relay runs in this process; it shares the outbox handle so a store wakes it.
    let outbox = Outbox::on(&db);
    let config = RelayConfig {
        interval: Duration::from_secs(1),
        ..RelayConfig::new("quickstart")
    };
    let relay = Relay::new(config, db.clone(), KafkaPublisher::new(&broker.brokers)?)?
        .with_outbox(outbox.clone())
        .spawn();

    let mut stored = HashSet::new();
    for (name, email) in [("ada", "ada@example.com"), ("grace", "grace@example.com")] {
        stored.insert(register(&db, &outbox, name, email).await?);
    }
    let phantom = register_and_roll_back(&db, &outbox).await?;
    stored.insert(order(&db, &outbox).await?);

    // Read what the relay published.
    let consumer = consumer(&broker.brokers, &["user-events", "order-events"])?;
    let arrived = receive(&consumer, &stored, Duration::from_secs(30)).await?;
    println!("consumed {} events from the broker:", arrived.len());
    for message in &arrived {
        println!("  {:<13} key={}", message.topic, message.key);
        println!("    {}", message.headers.join(", "));
    }
    // The consumer can see an event before the relay has recorded its acknowledgement.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while relay.stats().published < stored.len() as u64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = relay.stats();
    relay.shutdown().await?;
    println!(
        "relay stopped: published {}, failed {}, dead-lettered {}",
        stats.published, stats.failed, stats.dead_lettered
    );

    if arrived.len() != stored.len() || arrived.iter().any(|m| m.event_id == phantom) {
        return Err("the broker did not receive exactly the committed events".into());
    }
    Ok(())
}

/// A user registers: the user row and its event commit together. Returns the
/// event's id.
async fn register(
    db: &DatabaseConnection,
    outbox: &Outbox,
    name: &str,
    email: &str,
) -> Result<String, Error> {
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
    Ok(id.to_string())
}

/// A registration that fails after its event was stored: the rollback removes both.
/// Returns the id the event would have had.
async fn register_and_roll_back(db: &DatabaseConnection, outbox: &Outbox) -> Result<String, Error> {
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
    Ok(phantom.to_string())
}

/// The Go library's second example: an order event built at run time. Returns its id.
async fn order(db: &DatabaseConnection, outbox: &Outbox) -> Result<String, Error> {
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
    Ok(id.to_string())
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
