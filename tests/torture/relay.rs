//! A relay as its own OS process, for the torture suite: configured by `DATABASE_URL`,
//! `OUTBOX_TORTURE_SCHEMA`, `KAFKA_BROKERS` and the `OUTBOX_*` variables; stops
//! gracefully on SIGTERM or Ctrl-C. The suite kills it with SIGKILL at random.

use std::time::Duration;

use outbox::{KafkaConfig, KafkaPublisher, Processor, ProcessorConfig};
use sea_orm::{ConnectOptions, Database};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let schema = std::env::var("OUTBOX_TORTURE_SCHEMA")?;
    let brokers = std::env::var("KAFKA_BROKERS")?;
    let mut options = ConnectOptions::new(url);
    options
        .set_schema_search_path(schema)
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    let publisher = KafkaPublisher::from_config(
        KafkaConfig::new(&brokers).message_timeout(Duration::from_secs(3)),
    )?;
    let relay = Processor::new(ProcessorConfig::from_env()?, db, publisher)?.spawn();
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    relay.shutdown().await?;
    Ok(())
}
