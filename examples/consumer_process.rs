//! The consumer as its own process, as an operator deploys it: the billing service
//! applies the user service's events exactly once, with Kafka settings from the
//! environment, Prometheus metrics and a readiness probe over HTTP, and a graceful
//! stop on Ctrl-C or SIGTERM. Run several to share the partitions.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     OUTBOX_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \
//!     OUTBOX_HTTP_ADDR=127.0.0.1:9465 cargo run --example consumer_process
//! curl -s 127.0.0.1:9465/readyz
//! outbox inbox list --consumer billing     # what it dead-lettered
//! outbox inbox replay 1 --yes              # hand one to it again
//! ```
//!
//! A `user.deleted` event for a user whose `user.registered` has not been applied
//! fails (no billing account yet) and, after its retries, is dead-lettered; once the
//! account exists, `outbox inbox replay` applies it.

use std::time::Duration;

use outbox::http::Endpoints;
use outbox::{Consumer, ConsumerConfig, HandlerError, KafkaConfig, OutboxEvent, Received};
use outbox_examples::Error;
use sea_orm::{ConnectionTrait, Database, DatabaseTransaction, DbBackend, Statement};
use serde::{Deserialize, Serialize};
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
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let db = Database::connect(url).await?;
    db.execute_unprepared("CREATE TABLE IF NOT EXISTS billing_accounts (user_id VARCHAR(36) PRIMARY KEY, status VARCHAR(16) NOT NULL)")
        .await?;
    // The Prometheus recorder before the consumer starts: what it records earlier is lost.
    let http = std::env::var("OUTBOX_HTTP_ADDR")
        .ok()
        .map(|addr| outbox::http::install_prometheus().map(|metrics| (addr, metrics)))
        .transpose()?;
    let topics = std::env::var("BILLING_TOPICS").unwrap_or_else(|_| "user-events".to_owned());
    let config = ConsumerConfig::new(KafkaConfig::from_env()?, "billing", topics.split(','));
    let consumer = Consumer::new(config, db)?
        .handle(|txn, event: Received<UserEvent>| Box::pin(apply(txn, event)))
        .spawn()?;
    println!("consumer {} started", consumer.name());

    // /metrics, /healthz and /readyz, for Prometheus and Kubernetes.
    let endpoints = match http {
        Some((addr, metrics)) => {
            let server = Endpoints::new(consumer.probe())
                .with_prometheus(metrics)
                .bind(addr)
                .await?;
            println!(
                "serving /metrics, /healthz and /readyz on {}",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };

    let stop = outbox::shutdown_signal();
    tokio::pin!(stop);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            stopped = &mut stop => break stopped?,
            _ = report.tick() => {
                let stats = consumer.stats();
                let health = consumer.probe().healthcheck().map_or_else(|e| e.to_string(), |()| "healthy".to_owned());
                println!("{health}: processed {}, duplicates {}, dead-lettered {}, replayed {}", stats.processed, stats.duplicates, stats.dead_lettered, stats.replayed);
            }
        }
    }
    println!("stopping: finishing the messages in flight");
    consumer.shutdown().await?;
    if let Some(server) = endpoints {
        server.shutdown().await;
    }
    println!("stopped");
    Ok(())
}

/// Applies one event on the consumer's transaction.
async fn apply(txn: &DatabaseTransaction, event: Received<UserEvent>) -> Result<(), HandlerError> {
    let (sql, user_id) = match event.event() {
        UserEvent::Registered { user_id, .. } => (
            "INSERT INTO billing_accounts (user_id, status) VALUES ($1, 'open')",
            user_id,
        ),
        UserEvent::Deleted { user_id } => (
            "UPDATE billing_accounts SET status = 'closed' WHERE user_id = $1",
            user_id,
        ),
    };
    let backend = txn.get_database_backend();
    let sql = if backend == DbBackend::MySql {
        sql.replace("$1", "?")
    } else {
        sql.to_owned()
    };
    let changed = txn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [user_id.to_string().into()],
        ))
        .await?
        .rows_affected();
    if changed == 0 {
        // Retried, then dead-lettered: replay it once the account exists.
        return Err(format!("no billing account for user {user_id} yet").into());
    }
    println!(
        "event {} ({}): applied",
        event.event_id(),
        event.event_type()
    );
    Ok(())
}
