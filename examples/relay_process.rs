//! The relay as its own process, stopped gracefully by Ctrl-C or SIGTERM: the batch in
//! flight is finished, the shard leases are given back, and other relays of the same
//! service take over at once. Run several to share the work.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test KAFKA_BROKERS=127.0.0.1:9092 \
//!     OUTBOX_SERVICE_NAME=orders cargo run --example relay_process
//! ```
//!
//! Configuration comes from the `OUTBOX_*` variables (see `outbox::ProcessorConfig`).
//! The `outbox relay` command of the `outbox-cli` crate does the same.

use std::time::Duration;

use outbox::{KafkaPublisher, Processor, ProcessorConfig};
use outbox_examples::Error;
use sea_orm::Database;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let brokers = std::env::var("KAFKA_BROKERS").map_err(|_| "set KAFKA_BROKERS")?;
    let db = Database::connect(url).await?;
    let relay = Processor::new(
        ProcessorConfig::from_env()?,
        db,
        KafkaPublisher::new(&brokers)?,
    )?
    .spawn();
    println!("relay {} started", relay.relay_id());

    let mut terminate = signal(SignalKind::terminate())?;
    let mut report = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = report.tick() => {
                let stats = relay.stats();
                let health = relay.healthcheck().map_or_else(|e| e.to_string(), |()| "healthy".to_owned());
                println!("{health}: published {}, pending {}, shards {}", stats.published, stats.pending, stats.owned_shards);
            }
        }
    }
    println!("stopping: finishing the batch in flight");
    relay.shutdown().await?;
    println!("stopped");
    Ok(())
}
