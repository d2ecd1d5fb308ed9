//! A consumer as its own OS process, for the torture suite: an `outbox::Consumer` named
//! `torture` in the consumer group `TORTURE_GROUP`, reading `TORTURE_TOPIC` from
//! `KAFKA_BROKERS`, on `DATABASE_URL` (with
//! `OUTBOX_TORTURE_SCHEMA`, PostgreSQL's schema). Each event it applies adds a row to
//! `torture_applied` (the order of application, by `id`) and one to its key's counter
//! in `torture_consumed`, in the consumer's transaction. Stops gracefully on SIGTERM;
//! the suite kills it with SIGKILL at random.

use std::time::Duration;

use outbox::{Consumer, ConsumerConfig, KafkaConfig, OutboxEvent, Received};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde::{Deserialize, Serialize};

/// What the torture writers store (the oversized ones' filler is never published).
#[derive(Debug, Serialize, Deserialize, OutboxEvent)]
#[outbox(type = "torture.event", aggregate = "key")]
struct TortureEvent {
    key: String,
}

/// `sql` with `$n` parameters, spelled for `backend`.
fn statement(backend: DbBackend, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    let sql = match backend {
        DbBackend::MySql => sql.replace("$1", "?").replace("$2", "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let brokers = std::env::var("KAFKA_BROKERS")?;
    let topic = std::env::var("TORTURE_TOPIC")?;
    let db = outbox_tests::torture_database().await?;
    // The consumer is `torture` in the inbox whatever its Kafka group
    // (`TORTURE_GROUP`): the suite moves to a new group at the end (see
    // `Consumers::regroup`).
    let group = std::env::var("TORTURE_GROUP")?;
    let mut config = ConsumerConfig::new(
        // A killed consumer does not leave the group: the group waits
        // `session.timeout.ms` for it before its partitions move.
        KafkaConfig::new(&brokers)
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500"),
        "torture",
        [topic],
    );
    config.group = Some(group);
    config.retry_delay = Duration::from_millis(100);
    config.max_retry_delay = Duration::from_secs(1);
    config.shutdown_timeout = Duration::from_secs(10);
    let consumer = Consumer::new(config, db)?
        .handle(|txn, event: Received<TortureEvent>| {
            Box::pin(async move {
                let backend = txn.get_database_backend();
                let key = event.key.clone();
                txn.execute_raw(statement(
                    backend,
                    "INSERT INTO torture_applied (event_id, key_name) VALUES ($1, $2)",
                    vec![event.event_id().to_string().into(), key.clone().into()],
                ))
                .await?;
                txn.execute_raw(statement(
                    backend,
                    "UPDATE torture_consumed SET applied = applied + 1 WHERE name = $1",
                    vec![key.into()],
                ))
                .await?;
                Ok(())
            })
        })
        .spawn()?;
    outbox::shutdown_signal().await?;
    consumer.shutdown().await?;
    Ok(())
}
