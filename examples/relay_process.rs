//! The relay as its own process, as an operator deploys it: Kafka settings (TLS, SASL,
//! anything librdkafka takes) from the environment, Prometheus metrics and health
//! probes over HTTP, and a graceful stop on Ctrl-C or SIGTERM (the batch in flight is
//! finished, the shard leases are given back, and other relays of the same service
//! take over at once). Run several to share the work.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     OUTBOX_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \
//!     OUTBOX_HTTP_ADDR=127.0.0.1:9464 \
//!     OUTBOX_SERVICE_NAME=orders cargo run --example relay_process
//! curl -s 127.0.0.1:9464/metrics; curl -s 127.0.0.1:9464/readyz
//! ```
//!
//! Configuration comes from the `OUTBOX_*` variables (see `outbox::RelayConfig`)
//! and `OUTBOX_KAFKA_<PROPERTY>` (see `outbox::KafkaConfig::with_env`). The
//! `outbox relay` command of the `outbox-cli` crate does the same, with a properties
//! file and JSON logs besides.

use std::time::Duration;

use outbox::http::Endpoints;
use outbox::{KafkaConfig, KafkaPublisher, Outbox, Relay, RelayConfig};
use outbox_examples::Error;
use sea_orm::Database;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let db = Database::connect(url).await?;
    let kafka = KafkaConfig::from_env()?; // OUTBOX_KAFKA_BOOTSTRAP_SERVERS, ..._SECURITY_PROTOCOL, ...
    // The Prometheus recorder before the relay starts: what it records earlier is lost.
    let http = std::env::var("OUTBOX_HTTP_ADDR")
        .ok()
        .map(|addr| outbox::http::install_prometheus().map(|metrics| (addr, metrics)))
        .transpose()?;
    // OUTBOX_SHARDS and OUTBOX_COMPLETION: the writers of this table read the same.
    let outbox = Outbox::from_env(&db)?;
    let relay = Relay::new(
        RelayConfig::from_env()?,
        db,
        KafkaPublisher::from_config(kafka)?,
    )?
    .with_outbox(outbox)
    .spawn();
    println!("relay {} started", relay.relay_id());

    // /metrics, /healthz and /readyz, for Prometheus and Kubernetes.
    let endpoints = match http {
        Some((addr, metrics)) => {
            let server = Endpoints::new(relay.probe())
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
                let stats = relay.stats();
                let health = relay.healthcheck().map_or_else(|e| e.to_string(), |()| "healthy".to_owned());
                println!("{health}: published {}, pending {}, shards {}", stats.published, stats.backlog.pending, stats.owned_shards);
            }
        }
    }
    println!("stopping: finishing the batch in flight");
    relay.shutdown().await?;
    if let Some(server) = endpoints {
        server.shutdown().await;
    }
    println!("stopped");
    Ok(())
}
