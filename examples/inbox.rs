//! The consumer's side: a [`Consumer`] reads the user service's events by type and
//! applies each exactly once, with the inbox in its transaction, storing a follow-up
//! event in that same transaction.
//!
//! The relay publishes at least once. Here both events are sent a second time, as a
//! relay that crashed between the broker's acknowledgement and its write-back would,
//! and the second deliveries change nothing.
//!
//! ```text
//! cargo run --example inbox
//! ```
//!
//! Runs with no server (in-memory SQLite, librdkafka's mock broker), or against
//! `DATABASE_URL` and `KAFKA_BROKERS` when they are set.

use std::time::Duration;

use outbox::{
    Consumer, ConsumerConfig, ConsumerHandle, EventBuilder, KafkaConfig, KafkaPublisher, Outbox,
    OutboxEvent, Publisher, Received, Relay, RelayConfig,
};
use outbox_examples::{Broker, Error, database};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// The user service's events, as the billing service reads them.
#[derive(Debug, Serialize, Deserialize, OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
    Registered { user_id: Uuid, email: String },
    #[outbox(type = "user.deleted", aggregate = "user_id")]
    Deleted { user_id: Uuid },
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let db = database().await?;
    db.execute_unprepared("CREATE TABLE IF NOT EXISTS billing_accounts (user_id VARCHAR(36) PRIMARY KEY, status VARCHAR(16) NOT NULL)")
        .await?;
    let broker = Broker::start(&["user-events", "billing-events"]).await?;
    let outbox = Outbox::on(&db);
    let relay = Relay::new(
        RelayConfig::new("inbox-example"),
        db.clone(),
        KafkaPublisher::new(&broker.brokers)?,
    )?
    .with_outbox(outbox.clone())
    .spawn();

    // The user service stores two events; the relay publishes them.
    let user_id = Uuid::now_v7();
    let events = [
        UserEvent::Registered {
            user_id,
            email: "ada@example.com".into(),
        },
        UserEvent::Deleted { user_id },
    ];
    let mut sent = Vec::new();
    for event in &events {
        let id = outbox.store(&db, event, "user-events").await?;
        sent.push(as_published(id, event)?);
    }
    wait_until("the relay published the events", || {
        relay.stats().published >= 2
    })
    .await?;
    // A relay that crashed before its write-back publishes them again.
    for outcome in KafkaPublisher::new(&broker.brokers)?.publish(&sent).await {
        outcome?;
    }

    let consumer = billing_consumer(&broker.brokers, &db, &outbox)?;
    wait_until("the consumer is done with the four deliveries", || {
        let stats = consumer.stats();
        stats.processed >= 2 && stats.duplicates >= 2
    })
    .await?;
    let stats = consumer.stats();
    consumer.shutdown().await?;
    println!("{} redeliveries skipped as duplicates", stats.duplicates);

    let status = account_status(&db, user_id).await?;
    println!("billing account of {user_id}: {status}");
    wait_until("the relay published the follow-ups", || {
        relay.stats().published >= 4
    })
    .await?;
    let published = relay.stats().published;
    relay.shutdown().await?;
    println!("relay stopped: published {published} (2 user events, 2 billing follow-ups)");
    if status != "closed" {
        return Err("each event was not applied exactly once".into());
    }
    Ok(())
}

/// The billing service: a consumer named "billing" (its consumer group too) that opens
/// and closes billing accounts, and stores a follow-up event in the same transaction.
fn billing_consumer(
    brokers: &str,
    db: &DatabaseConnection,
    outbox: &Outbox,
) -> Result<ConsumerHandle, Error> {
    let config = ConsumerConfig::new(
        KafkaConfig::new(brokers).set("fetch.wait.max.ms", "10"),
        "billing",
        ["user-events"],
    );
    let handler_outbox = outbox.clone();
    let consumer = Consumer::new(config, db.clone())?
        .handle(move |txn, event: Received<UserEvent>| {
            let outbox = handler_outbox.clone();
            Box::pin(async move {
                let (sql, follow_up) = match event.event() {
                    UserEvent::Registered { user_id, .. } => (
                        "INSERT INTO billing_accounts (user_id, status) VALUES ($1, 'open')",
                        EventBuilder::new("billing.account_opened", user_id),
                    ),
                    UserEvent::Deleted { user_id } => (
                        "UPDATE billing_accounts SET status = 'closed' WHERE user_id = $1",
                        EventBuilder::new("billing.account_closed", user_id),
                    ),
                };
                txn.execute_raw(statement(txn, sql, &event.aggregate_id()))
                    .await?;
                // Published by the relay once this transaction commits.
                let follow_up = follow_up.data(json!({ "cause": event.event_id() }));
                outbox.store(txn, &follow_up, "billing-events").await?;
                println!(
                    "event {} ({}): applied",
                    event.event_id(),
                    event.event_type()
                );
                Ok(())
            })
        })
        .spawn()?;
    Ok(consumer)
}

/// The message the relay publishes for `event`, stored as `id`.
fn as_published(id: Uuid, event: &UserEvent) -> Result<outbox::Message, Error> {
    Ok(outbox::Message {
        seq: 0,
        id,
        event_type: event.event_type().to_owned(),
        event_version: event.event_version().to_owned(),
        aggregate_id: event.aggregate_id(),
        topic: "user-events".to_owned(),
        key: event.aggregate_id(),
        payload: event.payload()?.to_string(),
        extra_headers: Vec::new(),
        trace_id: None,
        user_id: None,
        created_at: chrono::Utc::now(),
        attempts: 0,
        tombstone: false,
        encoding: outbox::Encoding::native(),
    })
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn account_status(db: &DatabaseConnection, user_id: Uuid) -> Result<String, Error> {
    let sql = "SELECT status FROM billing_accounts WHERE user_id = $1";
    let row = db
        .query_one_raw(statement(db, sql, &user_id.to_string()))
        .await?
        .ok_or("no billing account")?;
    Ok(row.try_get_by_index(0)?)
}

/// `sql` with one parameter, `$1`, spelled for the connection's backend.
fn statement(conn: &impl ConnectionTrait, sql: &str, value: &str) -> Statement {
    let backend = conn.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => sql.to_owned(),
        _ => sql.replace("$1", "?"),
    };
    Statement::from_sql_and_values(backend, sql, [value.into()])
}
