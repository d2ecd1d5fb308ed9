//! `outbox-bench`: measures the outbox against PostgreSQL and a Kafka-protocol broker.
//!
//! ```text
//! cargo run --release -p outbox-bench -- relay --events 20000
//! ```
//!
//! Every figure is measured in the same run as its baseline and quoted as a ratio.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use outbox::{
    Envelope, EventBuilder, KafkaConfig, KafkaPublisher, Outbox, Processor, ProcessorConfig,
};
use outbox_migration::Migrator;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the outbox")]
struct Cli {
    /// PostgreSQL to measure against.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Relay throughput: preload events, time one processor publishing them all.
    Relay {
        /// Events to preload.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Distinct keys.
        #[arg(long, default_value_t = 64)]
        keys: usize,
        /// Events per shard per batch.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Shards processed at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        Command::Relay {
            events,
            keys,
            batch_size,
            concurrency,
        } => {
            let schema = BenchSchema::create(&cli.database_url).await?;
            let outbox = Outbox::new();
            let topic = format!("bench-{}", uuid::Uuid::now_v7().simple());
            create_topic(&cli.brokers, &topic, 8).await?;
            let started = Instant::now();
            preload(&schema.db, &outbox, &topic, events, keys).await?;
            println!(
                "preloaded {events} events of 1 KiB over {keys} keys in {:.1?}",
                started.elapsed()
            );
            let config = ProcessorConfig {
                batch_size,
                concurrency,
                ..ProcessorConfig::new("bench")
            };
            let publisher = KafkaPublisher::from_config(KafkaConfig::new(&cli.brokers))?;
            let started = Instant::now();
            let relay = Processor::new(config, schema.db.clone(), publisher)
                .with_outbox(outbox.clone())
                .spawn();
            while relay.stats().published < events as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let elapsed = started.elapsed();
            relay.shutdown().await?;
            println!(
                "relay: {events} events in {:.2?} = {:.0} events/s (batch {batch_size}, concurrency {concurrency})",
                elapsed,
                events as f64 / elapsed.as_secs_f64()
            );
            schema.drop().await?;
        }
    }
    Ok(())
}

/// A schema of its own for one measurement.
struct BenchSchema {
    db: DatabaseConnection,
    admin: DatabaseConnection,
    name: String,
}

impl BenchSchema {
    async fn create(url: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let admin = Database::connect(url).await?;
        let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute_unprepared(&format!("CREATE SCHEMA {name}"))
            .await?;
        let mut options = ConnectOptions::new(url);
        options
            .set_schema_search_path(name.clone())
            .max_connections(10)
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        Migrator::up(&db, None).await?;
        Ok(BenchSchema { db, admin, name })
    }

    async fn drop(self) -> Result<(), Box<dyn std::error::Error>> {
        self.db.close().await?;
        self.admin
            .execute_unprepared(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await?;
        Ok(())
    }
}

/// A JSON payload of about 1 KiB.
fn payload(n: usize) -> serde_json::Value {
    json!({ "n": n, "filler": "x".repeat(1000) })
}

async fn preload(
    db: &DatabaseConnection,
    outbox: &Outbox,
    topic: &str,
    events: usize,
    keys: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut n = 0;
    while n < events {
        let chunk: Vec<Envelope> = (n..events.min(n + 2000))
            .map(|i| {
                Envelope::new(
                    &EventBuilder::new("bench.event", format!("key-{}", i % keys)).data(payload(i)),
                    topic,
                )
            })
            .collect::<Result<_, _>>()?;
        n += chunk.len();
        outbox.store_batch(db, chunk).await?;
    }
    Ok(())
}

async fn create_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), Box<dyn std::error::Error>> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    for result in admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?
    {
        result.map_err(|(topic, error)| format!("create topic {topic}: {error}"))?;
    }
    Ok(())
}
