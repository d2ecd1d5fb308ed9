//! A consumer as its own OS process, for the torture suite: an `outbox::Consumer` named
//! `torture` in the consumer group `TORTURE_GROUP`, reading `TORTURE_TOPIC` from
//! `KAFKA_BROKERS`, on `DATABASE_URL` (with
//! `OUTBOX_TORTURE_SCHEMA`, PostgreSQL's schema). Each event it applies adds a row to
//! `torture_applied` (the order of application, by `id`) and one to its key's counter
//! in `torture_consumed`, in the consumer's transaction. Stops gracefully on SIGTERM;
//! the suite kills it with SIGKILL at random.
//!
//! Hostile, as handlers in life are: decoding panics on a payload that says `panic`;
//! an event the suite refuses ([`refused`]) fails (at COMMIT on PostgreSQL, through a
//! deferred foreign key) until the suite mends it and replays its dead letter; and the
//! first attempt in this process of one event in 37 ends its transaction itself
//! (`ROLLBACK`, the state a swallowed deadlock leaves on MySQL) and returns `Ok`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outbox::{
    Consumer, ConsumerConfig, DecodeEvent, HandlerError, KafkaConfig, OutboxEvent, Received,
};
use outbox_tests::torture::{ends_its_transaction, refused};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde::{Deserialize, Serialize};

/// What the torture writers store (the oversized ones' filler is never published).
#[derive(Debug, Serialize, Deserialize, OutboxEvent)]
#[outbox(type = "torture.event", aggregate = "key")]
struct TortureEvent {
    key: String,
}

/// A [`TortureEvent`] whose decoding panics when its payload says `"panic"`.
struct Fragile(TortureEvent);

impl DecodeEvent for Fragile {
    fn accepts(event_type: &str, event_version: &str) -> bool {
        TortureEvent::accepts(event_type, event_version)
    }

    fn knows_type(event_type: &str) -> bool {
        TortureEvent::knows_type(event_type)
    }

    fn decode(event_type: &str, event_version: &str, payload: &[u8]) -> outbox::Result<Self> {
        assert!(
            !payload.windows(7).any(|w| w == b"\"panic\""),
            "a payload that makes decoding panic"
        );
        TortureEvent::decode(event_type, event_version, payload).map(Fragile)
    }
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
    config.retry_backoff = outbox::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    config.shutdown_timeout = Duration::from_secs(10);
    let ended: Arc<Mutex<HashSet<uuid::Uuid>>> = Arc::default();
    let consumer = Consumer::new(config, db)?
        .handle(move |txn, event: Received<Fragile>| {
            let ended = Arc::clone(&ended);
            Box::pin(async move {
                let backend = txn.get_database_backend();
                let key = event.0.key.clone();
                let id = event.event_id();
                txn.execute_raw(statement(
                    backend,
                    "INSERT INTO torture_applied (event_id, key_name) VALUES ($1, $2)",
                    vec![id.to_string().into(), key.clone().into()],
                ))
                .await?;
                txn.execute_raw(statement(
                    backend,
                    "UPDATE torture_consumed SET applied = applied + 1 WHERE name = $1",
                    vec![key.into()],
                ))
                .await?;
                if refused(id) {
                    if backend == DbBackend::Postgres {
                        // Checked at COMMIT: fails until the suite mends the event.
                        txn.execute_raw(statement(
                            backend,
                            "INSERT INTO torture_refusals (event_id) VALUES ($1)",
                            vec![id.to_string().into()],
                        ))
                        .await?;
                    } else {
                        let mended = txn
                            .query_one_raw(statement(
                                backend,
                                "SELECT 1 FROM torture_mended WHERE event_id = $1",
                                vec![id.to_string().into()],
                            ))
                            .await?;
                        if mended.is_none() {
                            return Err(HandlerError::permanent("refused until mended"));
                        }
                    }
                }
                if ends_its_transaction(id) && ended.lock().expect("lock").insert(id) {
                    // As a handler that swallowed a deadlock: the transaction is gone,
                    // and the handler says all is well.
                    let _ = txn.execute_unprepared("ROLLBACK").await;
                }
                Ok(())
            })
        })
        .spawn()?;
    outbox::shutdown_signal().await?;
    consumer.shutdown().await?;
    Ok(())
}
