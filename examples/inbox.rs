//! The consumer's side: events read back by type, each applied exactly once with the
//! inbox, and a follow-up event stored in the consumer's own transaction.
//!
//! The relay publishes at least once; here every message is handled twice, as a
//! redelivery after a crash would be, and the second time changes nothing.
//!
//! ```text
//! cargo run --example inbox
//! ```
//!
//! Runs with no server (in-memory SQLite, librdkafka's mock broker), or against
//! `DATABASE_URL` and `KAFKA_BROKERS` when they are set.

use std::collections::HashSet;
use std::time::Duration;

use outbox::{
    EventBuilder, Inbox, KafkaPublisher, Outbox, OutboxEvent, Received, Relay, RelayConfig,
};
use outbox_examples::{Broker, Error, database};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
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

/// The billing service's name: its consumer group, and its name in the inbox.
const CONSUMER: &str = "billing";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let db = database().await?;
    db.execute_unprepared("CREATE TABLE IF NOT EXISTS billing_accounts (user_id VARCHAR(36) PRIMARY KEY, status VARCHAR(16) NOT NULL)")
        .await?;
    let broker = Broker::start(&["user-events", "billing-events"]).await?;
    let outbox = Outbox::new();
    let relay = Relay::new(
        RelayConfig::new("inbox-example"),
        db.clone(),
        KafkaPublisher::new(&broker.brokers)?,
    )?
    .with_outbox(outbox.clone())
    .spawn();

    // The user service stores two events.
    let user_id = Uuid::now_v7();
    let events = [
        UserEvent::Registered {
            user_id,
            email: "ada@example.com".into(),
        },
        UserEvent::Deleted { user_id },
    ];
    let mut expected = HashSet::new();
    for event in &events {
        expected.insert(outbox.store(&db, event, "user-events").await?);
    }

    // The billing service consumes them; each message is handled twice.
    let inbox = Inbox::new();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .set(
            "group.id",
            format!("{CONSUMER}-{}", Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        // The offset is stored below, once the message's transaction is over; by
        // default librdkafka stores it when it hands the message out.
        .set("enable.auto.offset.store", "false")
        .create()?;
    consumer.subscribe(&["user-events"])?;
    let mut handled = HashSet::new();
    while handled.len() < expected.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| "timed out waiting for events")??;
        let received = Received::<UserEvent>::decode(&message)?;
        let id = received.event_id();
        if !expected.contains(&id) {
            consumer.store_offset_from_message(&message)?;
            continue; // an earlier run's event, on a broker of your own
        }
        for delivery in ["delivered", "delivered again"] {
            if handle(&db, &outbox, &inbox, &received).await? {
                println!("{delivery:<15}  event {id}: applied");
            } else {
                println!("{delivery:<15}  event {id}: duplicate skipped");
            }
        }
        consumer.store_offset_from_message(&message)?;
        handled.insert(id);
    }

    let status = account_status(&db, user_id).await?;
    println!("billing account of {user_id}: {status}");
    // The follow-up events stored by the handler go out through the relay too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while relay.stats().published < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = relay.stats();
    relay.shutdown().await?;
    println!(
        "relay stopped: published {} (2 user events, 2 billing follow-ups)",
        stats.published
    );
    if status != "closed" || stats.published < 4 {
        return Err("each event was not applied exactly once".into());
    }
    Ok(())
}

/// Applies one received event in one transaction, with its inbox record; `false`
/// when the inbox knew it already (nothing changes).
async fn handle(
    db: &DatabaseConnection,
    outbox: &Outbox,
    inbox: &Inbox,
    received: &Received<UserEvent>,
) -> Result<bool, Error> {
    let txn = db.begin().await?;
    if !inbox.record(&txn, CONSUMER, received.event_id()).await? {
        return Ok(false); // the transaction rolls back when dropped
    }
    let (sql, follow_up) = match received.event() {
        UserEvent::Registered { user_id, .. } => (
            "INSERT INTO billing_accounts (user_id, status) VALUES ($1, 'open')",
            EventBuilder::new("billing.account_opened", user_id),
        ),
        UserEvent::Deleted { user_id } => (
            "UPDATE billing_accounts SET status = 'closed' WHERE user_id = $1",
            EventBuilder::new("billing.account_closed", user_id),
        ),
    };
    let user_id = received.aggregate_id();
    txn.execute_raw(statement(&txn, sql, &user_id)).await?;
    let follow_up = follow_up.data(json!({ "cause": received.event_id() }));
    outbox.store(&txn, &follow_up, "billing-events").await?;
    outbox.commit(txn).await?;
    Ok(true)
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
