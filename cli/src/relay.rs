//! `outbox relay`: the relay as a process of its own, until SIGTERM or Ctrl-C; with
//! `--databases`, one process for every database of a file (a fleet).

use std::path::PathBuf;

use outbox::fleet::{FileSource, Fleet, FleetConfig};
use outbox::http::{Endpoints, Readiness, Server};
use outbox::{KafkaConfig, KafkaPublisher, Outbox, Relay, RelayConfig};
use sea_orm::DatabaseConnection;

use crate::{Failure, RelayOptions};

pub(crate) async fn relay(
    db: DatabaseConnection,
    outbox: Outbox,
    options: RelayOptions,
) -> Result<(), Failure> {
    let (config, publisher) = settings(&options)?;
    // The recorder first: what the relay records before it exists is lost.
    let http = recorder(&options)?;
    let relay = Relay::new(config, db, publisher)?
        .with_outbox(outbox)
        .spawn();
    let endpoints = serve(http, relay.probe()).await?;
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

/// `outbox relay --databases FILE`: a relay for each database of `file`.
pub(crate) async fn fleet(
    file: PathBuf,
    outbox: Outbox,
    options: &RelayOptions,
) -> Result<(), Failure> {
    let (config, publisher) = settings(options)?;
    let http = recorder(options)?;
    let source = FileSource::new(&file);
    let fleet = Fleet::new(config, source, publisher)?
        .with_config(FleetConfig::from_env()?)
        .with_outbox(outbox)
        .spawn();
    let endpoints = serve(http, fleet.probe()).await?;
    tracing::info!(
        databases = %file.display(),
        "relay fleet running; SIGHUP reads the file again, Ctrl-C or SIGTERM stops it"
    );
    let stop = outbox::shutdown_signal();
    tokio::pin!(stop);
    #[cfg(unix)]
    {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|error| format!("cannot listen for SIGHUP: {error}"))?;
        loop {
            tokio::select! {
                stopped = &mut stop => break stopped?,
                _ = hangups.recv() => {
                    tracing::info!("SIGHUP: reading the databases again");
                    fleet.refresh();
                }
            }
        }
    }
    #[cfg(not(unix))]
    stop.await?;
    let published = fleet.published();
    fleet.shutdown().await;
    if let Some(server) = endpoints {
        server.shutdown().await;
    }
    tracing::info!(published, "relay fleet stopped");
    Ok(())
}

/// The relay's settings (`OUTBOX_*`, `--message-format`) and its Kafka publisher
/// (`--kafka-config`, `OUTBOX_KAFKA_*`, `--brokers`).
fn settings(options: &RelayOptions) -> Result<(RelayConfig, KafkaPublisher), Failure> {
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
    Ok((config, KafkaPublisher::from_config(kafka)?))
}

/// The Prometheus recorder, installed when `--http-addr` is given.
fn recorder(
    options: &RelayOptions,
) -> Result<Option<(std::net::SocketAddr, outbox::http::PrometheusHandle)>, Failure> {
    Ok(options
        .http_addr
        .map(|addr| outbox::http::install_prometheus().map(|metrics| (addr, metrics)))
        .transpose()?)
}

/// Serves /metrics, /healthz and /readyz from `probe` when `--http-addr` is given.
async fn serve(
    http: Option<(std::net::SocketAddr, outbox::http::PrometheusHandle)>,
    probe: impl Readiness,
) -> Result<Option<Server>, Failure> {
    let Some((addr, metrics)) = http else {
        return Ok(None);
    };
    let server = Endpoints::new(probe)
        .with_prometheus(metrics)
        .bind(addr)
        .await
        .map_err(|error| format!("cannot serve --http-addr {addr}: {error}"))?;
    tracing::info!(addr = %server.local_addr(), "serving /metrics, /healthz and /readyz");
    Ok(Some(server))
}
