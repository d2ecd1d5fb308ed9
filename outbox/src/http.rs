//! The operations endpoints of a relay or a consumer process, for Prometheus and
//! Kubernetes (feature `http`).
//!
//! - `GET /metrics`: every metric of [`relay_metric_names`] and
//!   [`consumer_metric_names`](crate::consumer_metric_names) (and any other the
//!   process records through the `metrics` facade) in Prometheus text;
//! - `GET /healthz`: `200 ok` while the process serves requests (liveness);
//! - `GET /readyz`: `200 ready` when every probe's health check passes (a relay's
//!   [`HealthProbe`], a consumer's [`ConsumerProbe`](crate::ConsumerProbe)),
//!   otherwise `503` with the reason as text (readiness).
//!
//! ```no_run
//! # async fn run(db: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
//! use outbox::{KafkaConfig, KafkaPublisher, Relay, RelayConfig};
//!
//! let metrics = outbox::http::install_prometheus()?; // before the relay starts
//! let publisher = KafkaPublisher::from_config(KafkaConfig::from_env()?)?;
//! let relay = Relay::new(RelayConfig::from_env()?, db, publisher)?.spawn();
//! let endpoints = outbox::http::Endpoints::new(relay.probe())
//!     .with_prometheus(metrics)
//!     .bind("0.0.0.0:9464")
//!     .await?;
//! // ... until the service stops:
//! endpoints.shutdown().await;
//! relay.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! A service that has an HTTP server already can serve the same answers from its own
//! routes: [`Endpoints::readiness`] and [`Endpoints::metrics`] give the status and
//! body of each.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
/// The installed Prometheus recorder's handle, from [`install_prometheus`].
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::relay::{HealthProbe, relay_metric_names};

/// How often the Prometheus recorder's histograms are maintained.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Buckets of [`relay_metric_names::PUBLISH_LATENCY`], in seconds: from a few milliseconds
/// (a relay woken at once) to a minute (a backlog after an outage).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs a Prometheus recorder as the process's `metrics` recorder, with the
/// relay's and the consumer's metrics described (`# HELP`), and publish latency and
/// handling time as histograms with buckets from 5 ms to 60 s. Install it before the relay starts: what is recorded before a
/// recorder exists is lost.
///
/// # Errors
/// [`Error::Metrics`] when the process has a `metrics` recorder already: pass its
/// handle to [`Endpoints::with_prometheus`] instead (and call
/// [`relay_metric_names::describe`] after installing it).
pub fn install_prometheus() -> Result<PrometheusHandle> {
    let failed = |error: metrics_exporter_prometheus::BuildError| Error::Metrics(error.to_string());
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(relay_metric_names::PUBLISH_LATENCY.to_owned()),
            LATENCY_BUCKETS,
        )
        .map_err(failed)?;
    #[cfg(feature = "kafka")]
    let builder = builder
        .set_buckets_for_metric(
            Matcher::Full(crate::consumer_metric_names::HANDLE_TIME.to_owned()),
            LATENCY_BUCKETS,
        )
        .map_err(failed)?;
    let handle = builder.install_recorder().map_err(failed)?;
    relay_metric_names::describe();
    #[cfg(feature = "kafka")]
    crate::consumer_metric_names::describe();
    Ok(handle)
}

/// What `/readyz` asks: a relay's [`HealthProbe`], a fleet's
/// [`FleetProbe`](crate::fleet::FleetProbe) or a consumer's
/// [`ConsumerProbe`](crate::ConsumerProbe).
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready.
    ///
    /// # Errors
    /// [`Error::Unhealthy`] saying what is wrong.
    fn healthcheck(&self) -> Result<()>;
}

impl Readiness for HealthProbe {
    fn healthcheck(&self) -> Result<()> {
        HealthProbe::healthcheck(self)
    }
}

impl Readiness for crate::fleet::FleetProbe {
    fn healthcheck(&self) -> Result<()> {
        crate::fleet::FleetProbe::healthcheck(self)
    }
}

#[cfg(feature = "kafka")]
impl Readiness for crate::ConsumerProbe {
    fn healthcheck(&self) -> Result<()> {
        crate::ConsumerProbe::healthcheck(self)
    }
}

/// What the endpoints answer from: the probes' health and, once
/// [`with_prometheus`](Self::with_prometheus) is called, the metrics.
#[derive(Clone)]
pub struct Endpoints {
    probes: Vec<Arc<dyn Readiness>>,
    prometheus: Option<PrometheusHandle>,
}

impl Endpoints {
    /// Endpoints for the relay or consumer of `probe`
    /// ([`RelayHandle::probe`](crate::RelayHandle::probe),
    /// [`ConsumerHandle::probe`](crate::ConsumerHandle::probe)). Without
    /// [`with_prometheus`](Self::with_prometheus), `/metrics` answers 404.
    pub fn new(probe: impl Readiness) -> Self {
        Endpoints {
            probes: vec![Arc::new(probe)],
            prometheus: None,
        }
    }

    /// Also asks `probe` for readiness: a process that runs a relay and a consumer
    /// is ready when both are.
    #[must_use]
    pub fn and(mut self, probe: impl Readiness) -> Self {
        self.probes.push(Arc::new(probe));
        self
    }

    /// Serves the Prometheus recorder of `handle` at `/metrics`: the one
    /// [`install_prometheus`] returns, or one the process installed itself.
    pub fn with_prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// `/readyz`'s answer: `200` and `ready`, or `503` and why a probe is not.
    pub fn readiness(&self) -> (StatusCode, String) {
        match self.probes.iter().try_for_each(|probe| probe.healthcheck()) {
            Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
            Err(Error::Unhealthy { reason }) => (StatusCode::SERVICE_UNAVAILABLE, reason + "\n"),
            Err(other) => (StatusCode::SERVICE_UNAVAILABLE, format!("{other}\n")),
        }
    }

    /// `/metrics`'s body, when a Prometheus recorder is set.
    pub fn metrics(&self) -> Option<String> {
        self.prometheus.as_ref().map(PrometheusHandle::render)
    }

    /// Listens on `addr` and serves the endpoints in a task of their own, until
    /// [`Server::shutdown`] or the server is dropped.
    ///
    /// # Errors
    /// The I/O error when `addr` cannot be bound.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(self.serve(listener, cancel.clone()));
        Ok(Server {
            local_addr,
            cancel,
            task: Some(task),
        })
    }

    /// Serves the endpoints on `listener` until `shutdown` is cancelled; connections
    /// open then are closed once their request in progress is answered.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let endpoints = Arc::new(self);
        let connections = TaskTracker::new();
        if let Some(handle) = endpoints.prometheus.clone() {
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
                while shutdown.run_until_cancelled(upkeep.tick()).await.is_some() {
                    handle.run_upkeep();
                }
            });
        }
        while let Some(accepted) = shutdown.run_until_cancelled(listener.accept()).await {
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    warn!(%error, "the operations endpoint cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let endpoints = Arc::clone(&endpoints);
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let endpoints = Arc::clone(&endpoints);
                    async move { Ok::<_, Infallible>(endpoints.answer(&request)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            debug!(%peer, %error, "operations endpoint connection failed");
                        }
                    }
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
        }
        connections.close();
        connections.wait().await;
    }

    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
            "/readyz" => {
                let (status, body) = self.readiness();
                text(status, body)
            }
            "/metrics" => match self.metrics() {
                Some(body) => {
                    let mut response = text(StatusCode::OK, body);
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    response
                }
                None => text(StatusCode::NOT_FOUND, "no metrics recorder\n".to_owned()),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz and /readyz are served\n".to_owned(),
            ),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("probes", &self.probes.len())
            .field("prometheus", &self.prometheus.is_some())
            .finish()
    }
}

/// The endpoints being served, from [`Endpoints::bind`]. Dropping it stops them.
#[derive(Debug)]
#[must_use = "dropping the server stops it"]
pub struct Server {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// The address served (the port chosen when port 0 was bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for those open to finish their request.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
