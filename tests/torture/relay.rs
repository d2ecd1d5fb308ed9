//! A relay as its own OS process, for the torture suite: configured by `DATABASE_URL`,
//! `OUTBOX_TORTURE_SCHEMA` (PostgreSQL's schema; MySQL's database is in the URL),
//! `KAFKA_BROKERS` and the `OUTBOX_*` variables, plus
//! `OUTBOX_TORTURE_CLOCK_SKEW` (seconds its clock runs ahead, negative for behind) and
//! `OUTBOX_TORTURE_MAX_MESSAGE_BYTES` (the largest message it may send) and
//! `OUTBOX_TORTURE_BATCH_MESSAGES` (at most so many messages per record batch); logs
//! warnings and errors to stderr; stops gracefully on SIGTERM or Ctrl-C. The suite
//! kills it with SIGKILL at random.
//!
//! With `OUTBOX_DATABASES_FILE` set it is a fleet process instead, as
//! `outbox relay --databases FILE` runs one (`OUTBOX_FLEET_*` configure it), and
//! `DATABASE_URL` is not read.

use std::time::Duration;

use outbox::fleet::{FileSource, Fleet, FleetConfig};
use outbox::{KafkaConfig, KafkaPublisher, Outbox, Relay, RelayConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Warnings and errors to stderr: the suite's output shows them when it fails.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let brokers = std::env::var("KAFKA_BROKERS")?;
    if let Ok(file) = std::env::var("OUTBOX_DATABASES_FILE") {
        let kafka = KafkaConfig::new(&brokers).message_timeout(Duration::from_secs(3));
        let fleet = Fleet::new(
            RelayConfig::from_env()?,
            FileSource::new(file),
            KafkaPublisher::from_config(kafka)?,
        )?
        .with_config(FleetConfig::from_env()?)
        .spawn();
        outbox::shutdown_signal().await?;
        fleet.shutdown().await;
        return Ok(());
    }
    let db = outbox_tests::torture_database().await?;
    let mut kafka = KafkaConfig::new(&brokers).message_timeout(Duration::from_secs(3));
    if let Ok(bytes) = std::env::var("OUTBOX_TORTURE_MAX_MESSAGE_BYTES") {
        kafka = kafka.set("message.max.bytes", bytes);
    }
    if let Ok(messages) = std::env::var("OUTBOX_TORTURE_BATCH_MESSAGES")
        && !messages.is_empty()
    {
        kafka = kafka.set("batch.num.messages", messages);
    }
    let skew: i64 = std::env::var("OUTBOX_TORTURE_CLOCK_SKEW").map_or(Ok(0), |s| s.parse())?;
    // OUTBOX_COMPLETION (and OUTBOX_SHARDS) come with the outbox, as the writers'.
    let outbox = Outbox::from_env(&db)?;
    let relay = Relay::new(
        RelayConfig::from_env()?,
        db,
        KafkaPublisher::from_config(kafka)?,
    )?
    .with_outbox(outbox)
    .with_clock_skew(chrono::Duration::seconds(skew))
    .spawn();
    outbox::shutdown_signal().await?;
    relay.shutdown().await?;
    Ok(())
}
