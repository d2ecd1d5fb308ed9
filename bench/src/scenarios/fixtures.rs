//! What the scenarios share: schemas, connections, events, topics, draining relays.

use std::time::{Duration, Instant};

use outbox::{Envelope, EventBuilder, KafkaConfig, Outbox, Relay, RelayConfig};
use outbox_migration::Migrator;
use outbox_tests::{PgSchema, ServerDatabase};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use sea_orm_migration::MigratorTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{BATCH_SIZE, Failure, KEYS, Size};

/// A schema of its own for one scenario, migrated.
pub(super) async fn migrated_schema(url: &str, connections: u32) -> Result<PgSchema, Failure> {
    let schema = PgSchema::create(url, "bench", connections).await?;
    Migrator::up(&schema.db, None).await?;
    Ok(schema)
}

/// A database of its own for one scenario on the server of `url`, PostgreSQL or MySQL,
/// migrated.
pub(super) async fn migrated_database(
    url: &str,
    connections: u32,
) -> Result<ServerDatabase, Failure> {
    let database = ServerDatabase::create(url, "bench", connections).await?;
    Migrator::up(database.db(), None).await?;
    Ok(database)
}

/// Updates the outbox table's statistics, as autovacuum (PostgreSQL) or InnoDB's
/// automatic recalculation would have by the time a backlog is drained.
pub(super) async fn analyze(db: &DatabaseConnection) -> Result<(), Failure> {
    let sql = match db.get_database_backend() {
        DbBackend::MySql => "ANALYZE TABLE _outbox",
        _ => "ANALYZE _outbox",
    };
    db.execute_unprepared(sql).await?;
    Ok(())
}

/// On PostgreSQL, writes every dirty buffer out now (`CHECKPOINT`), before a preload:
/// each run's checkpoints then start from the same point, and the drain after the
/// preload falls in the preload's checkpoint cycle unless its WAL fills one, as an
/// event and its publication mostly do in production. Left to chance, a checkpoint
/// lands in some drains and not others, and the first change to each page after it
/// writes a full page image. Without the right to (a superuser or `pg_checkpoint`),
/// says so once and goes on.
pub(super) async fn checkpoint(db: &DatabaseConnection) {
    static REFUSED: std::sync::Once = std::sync::Once::new();
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    if let Err(error) = db.execute_unprepared("CHECKPOINT").await {
        REFUSED.call_once(|| {
            eprintln!("no CHECKPOINT before the measurements ({error}): expect more spread");
        });
    }
}

pub(super) async fn connect(
    url: &str,
    schema: &str,
    connections: u32,
) -> Result<DatabaseConnection, Failure> {
    let mut options = ConnectOptions::new(url);
    options
        .set_schema_search_path(schema.to_owned())
        .max_connections(connections)
        .sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

/// A payload of about 1 KiB.
pub(super) fn payload(n: usize) -> Value {
    json!({ "n": n, "filler": "x".repeat(1000) })
}

pub(super) fn event(n: usize) -> EventBuilder {
    EventBuilder::new("bench.event", format!("key-{}", n % KEYS)).data(payload(n))
}

pub(super) async fn preload(
    db: &DatabaseConnection,
    topic: &str,
    events: usize,
) -> Result<(), Failure> {
    let outbox = Outbox::new();
    let mut n = 0;
    while n < events {
        let chunk: Vec<Envelope> = (n..events.min(n + 2000))
            .map(|i| Envelope::new(&event(i), topic))
            .collect::<Result<_, _>>()?;
        n += chunk.len();
        outbox.store_batch(db, chunk).await?;
    }
    Ok(())
}

pub(super) async fn create_topic(brokers: &str, partitions: i32) -> Result<String, Failure> {
    let topic = format!("bench-{}", Uuid::now_v7().simple());
    KafkaConfig::new(brokers)
        .create_topic(&topic, partitions, 1)
        .await?;
    Ok(topic)
}

pub(super) fn relay_config(service: &str) -> RelayConfig {
    RelayConfig {
        batch_size: BATCH_SIZE,
        ..RelayConfig::new(service)
    }
}

/// Runs `relay_count` relays until `events` are published; events per second.
pub(super) async fn drain<P: outbox::Publisher + Clone>(
    db: &DatabaseConnection,
    publisher: &P,
    relay_count: usize,
    events: usize,
) -> Result<f64, Failure> {
    let config = relay_config("bench");
    drain_with(db, publisher, relay_count, events, &config, &Outbox::new()).await
}

/// [`drain`] with relays configured by `config`, publishing `outbox`.
pub(super) async fn drain_with<P: outbox::Publisher + Clone>(
    db: &DatabaseConnection,
    publisher: &P,
    relay_count: usize,
    events: usize,
    config: &RelayConfig,
    outbox: &Outbox,
) -> Result<f64, Failure> {
    let started = Instant::now();
    let relays = (0..relay_count)
        .map(|_| {
            Relay::new(config.clone(), db.clone(), publisher.clone())
                .map(|relay| relay.with_outbox(outbox.clone()).spawn())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let target = events as u64;
    while relays.iter().map(|r| r.stats().published).sum::<u64>() < target {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    for relay in relays {
        relay.shutdown().await?;
    }
    Ok(events as f64 / elapsed.as_secs_f64())
}

pub(super) fn peak_rss_mib() -> f64 {
    let kib = outbox_tests::peak_rss_kib(std::process::id()) as f64;
    kib / 1024.0
}

/// Stores `events` (key, n) with `outbox`, 2,000 per statement.
pub(super) async fn preload_keys(
    db: &DatabaseConnection,
    outbox: &Outbox,
    events: impl Iterator<Item = (String, usize)>,
) -> Result<(), Failure> {
    let envelopes: Vec<Envelope> = events
        .map(|(key, n)| {
            Envelope::new(
                &EventBuilder::new("bench.event", key).data(payload(n)),
                "bench",
            )
        })
        .collect::<Result<_, _>>()?;
    for chunk in envelopes.chunks(2000) {
        outbox.store_batch(db, chunk.to_vec()).await?;
    }
    Ok(())
}

pub(super) async fn machine(url: &str, brokers: &str, size: &Size) -> Result<String, Failure> {
    let admin = Database::connect(url).await?;
    let backend = admin.get_database_backend();
    let sql = match backend {
        DbBackend::MySql => "SELECT VERSION()",
        _ => "SHOW server_version",
    };
    let version = admin
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .and_then(|row| row.try_get_by_index::<String>(0).ok())
        .unwrap_or_default();
    let server = match backend {
        DbBackend::MySql if version.contains("MariaDB") => "MariaDB",
        DbBackend::MySql => "MySQL",
        _ => "PostgreSQL",
    };
    Ok(format!(
        "{} cores, {server} {version}, broker at {brokers}, {} events of 1 KiB over {KEYS} keys",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        size.relay_events
    ))
}
