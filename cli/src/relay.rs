//! `outbox relay`: the relay as a process of its own, until SIGTERM or Ctrl-C.

use outbox::{KafkaConfig, KafkaPublisher, Outbox, Relay, RelayConfig};
use sea_orm::DatabaseConnection;

use crate::{Failure, RelayOptions};

pub(crate) async fn relay(
    db: DatabaseConnection,
    outbox: Outbox,
    options: RelayOptions,
) -> Result<(), Failure> {
    let mut config = RelayConfig::from_env()?;
    if let Some(format) = options.message_format {
        config.format = format;
    }
    let mut kafka = KafkaConfig::new("");
    if let Some(path) = &options.kafka_config {
        kafka = kafka.with_properties_file(path)?;
    }
    kafka = kafka.with_env();
    if let Some(brokers) = &options.brokers {
        kafka = kafka.set("bootstrap.servers", brokers.as_str());
    }
    let kafka = kafka.require_brokers().map_err(|_| {
        "no Kafka broker given: pass --brokers, or set KAFKA_BROKERS, \
         OUTBOX_KAFKA_BOOTSTRAP_SERVERS or bootstrap.servers in --kafka-config"
    })?;
    let publisher = KafkaPublisher::from_config(kafka)?;
    // The recorder first: what the relay records before it exists is lost.
    let http = options
        .http_addr
        .map(|addr| outbox::http::install_prometheus().map(|metrics| (addr, metrics)))
        .transpose()?;
    let relay = Relay::new(config, db, publisher)?
        .with_outbox(outbox)
        .spawn();
    let endpoints = match http {
        Some((addr, metrics)) => {
            let server = outbox::http::Endpoints::new(relay.probe())
                .with_prometheus(metrics)
                .bind(addr)
                .await
                .map_err(|error| format!("cannot serve --http-addr {addr}: {error}"))?;
            tracing::info!(addr = %server.local_addr(), "serving /metrics, /healthz and /readyz");
            Some(server)
        }
        None => None,
    };
    tracing::info!(
        relay_id = relay.relay_id(),
        "relay running; Ctrl-C or SIGTERM stops it"
    );
    outbox::shutdown_signal().await?;
    let stats = relay.stats();
    relay.shutdown().await?;
    if let Some(server) = endpoints {
        server.shutdown().await;
    }
    tracing::info!(published = stats.published, "relay stopped");
    Ok(())
}
