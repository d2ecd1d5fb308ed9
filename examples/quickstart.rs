//! Quick start: store events in the same transaction as a business change.
//!
//! Runs on an in-memory SQLite database with no server:
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With `DATABASE_URL` set (e.g. `postgres://postgres@127.0.0.1:5432/test`) it runs
//! against that database instead.

use outbox::entity::outbox as stored;
use outbox::{EventBuilder, Outbox, OutboxEvent};
use outbox_migration::Migrator;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, Statement, TransactionTrait,
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = connect().await?;
    Migrator::up(&db, None).await?;
    db.execute_unprepared("CREATE TABLE IF NOT EXISTS quickstart_users (id VARCHAR(36) PRIMARY KEY, email VARCHAR(255) NOT NULL)")
        .await?;
    let outbox = Outbox::new();
    let run_started = chrono::Utc::now();

    // Two users register: each user row and its event commit together.
    for (name, email) in [("ada", "ada@example.com"), ("grace", "grace@example.com")] {
        let user = UserRegistered {
            user_id: Uuid::now_v7(),
            email: email.into(),
            username: name.into(),
        };
        let txn = db.begin().await?;
        insert_user(&txn, user.user_id, email).await?;
        outbox
            .store(&txn, &user, "user-events")
            .user_id(user.user_id)
            .header("source", "quickstart")
            .await?;
        txn.commit().await?;
    }

    // This registration fails after the event was stored: the rollback removes both.
    let rejected = UserRegistered {
        user_id: Uuid::now_v7(),
        email: "mallory@example.com".into(),
        username: "mallory".into(),
    };
    let txn = db.begin().await?;
    insert_user(&txn, rejected.user_id, &rejected.email).await?;
    outbox.store(&txn, &rejected, "user-events").await?;
    txn.rollback().await?;

    // The seed's second example: an order event built at run time.
    let order = EventBuilder::new("order.created", "order-17")
        .version("v2")
        .user_id("customer-4")
        .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
        .data(json!({ "order_id": "order-17", "customer_id": "customer-4", "amount": 4200, "currency": "EUR" }));
    let txn = db.begin().await?;
    outbox
        .store(&txn, &order, "order-events")
        .partition_key("customer-4")
        .await?;
    txn.commit().await?;

    let events = stored::Entity::find()
        .filter(stored::Column::CreatedAt.gte(run_started))
        .order_by_asc(stored::Column::Seq)
        .all(&db)
        .await?;
    println!(
        "stored {} events (the rolled-back registration is not among them):",
        events.len()
    );
    println!(
        "{:<36}  {:<15}  {:<7}  {:<12}  {:<36}  payload",
        "id", "type", "version", "topic", "key"
    );
    for event in &events {
        println!(
            "{:<36}  {:<15}  {:<7}  {:<12}  {:<36}  {}",
            event.id,
            event.event_type,
            event.event_version,
            event.destination_topic,
            event
                .partition_key
                .as_deref()
                .unwrap_or(&event.aggregate_id),
            event.event_data
        );
    }
    let phantom = events
        .iter()
        .any(|e| e.aggregate_id == rejected.user_id.to_string());
    if phantom || events.len() != 3 {
        return Err("the outbox does not hold exactly the three committed events".into());
    }
    println!(
        "rolled back: {} ({}) -> not stored",
        rejected.username, rejected.user_id
    );
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

async fn insert_user(
    conn: &impl ConnectionTrait,
    id: Uuid,
    email: &str,
) -> Result<(), sea_orm::DbErr> {
    let backend = conn.get_database_backend();
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        match backend {
            sea_orm::DbBackend::Postgres => {
                "INSERT INTO quickstart_users (id, email) VALUES ($1, $2)"
            }
            _ => "INSERT INTO quickstart_users (id, email) VALUES (?, ?)",
        },
        [id.to_string().into(), email.into()],
    ))
    .await?;
    Ok(())
}
