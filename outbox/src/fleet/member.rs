//! Serving one database of a fleet: connecting (again and again while it cannot be
//! reached), running its relay, and letting it go.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::handle::Shared;
use super::source::DatabaseEntry;
use crate::config::RelayConfig;
use crate::publisher::Publisher;
use crate::relay::Relay;
use crate::secrets::Secrets;
use crate::store::Outbox;

/// The longest wait between two attempts to connect to a database.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// How long a pooled connection may stay idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What every database of a fleet is served with.
#[derive(Debug)]
pub(super) struct Member<P> {
    pub(super) relay: RelayConfig,
    pub(super) outbox: Outbox,
    pub(super) connections: u32,
    pub(super) connect_timeout: Duration,
    pub(super) publisher: P,
    pub(super) shared: Arc<Shared>,
    /// Cancelled to stop every relay as a crash would ([`FleetHandle::abort`]).
    ///
    /// [`FleetHandle::abort`]: super::FleetHandle::abort
    pub(super) kill: CancellationToken,
}

impl<P: Publisher + Clone> Member<P> {
    /// Serves `entry` until `cancel`: then shuts its relay down (giving up its shard
    /// leases) and closes its connections.
    pub(super) async fn serve(self: Arc<Self>, entry: DatabaseEntry, cancel: CancellationToken) {
        let name = entry.name();
        let Some(db) = self.connect(&entry, &cancel).await else {
            return;
        };
        let relay = match Relay::new(self.relay.clone(), db.clone(), self.publisher.clone()) {
            Ok(relay) => relay,
            Err(error) => {
                self.shared.connecting(name, Some(error.to_string()));
                cancel.cancelled().await;
                close(name, db).await;
                return;
            }
        };
        let outbox = self.outbox.clone().with_tables(entry.tables().clone());
        let relay = relay.with_outbox(outbox).with_database_label(name).spawn();
        self.shared.serving(name, relay.probe());
        tokio::select! {
            () = self.kill.cancelled() => {
                relay.abort();
                return;
            }
            () = cancel.cancelled() => {}
        }
        if let Err(error) = relay.shutdown().await {
            warn!(database = %name, %error, "the database's relay did not stop cleanly");
        }
        close(name, db).await;
    }

    /// A pool on `entry`'s database, tried with a growing delay until it connects;
    /// `None` once `cancel` is.
    async fn connect(
        &self,
        entry: &DatabaseEntry,
        cancel: &CancellationToken,
    ) -> Option<DatabaseConnection> {
        let url = entry.url().as_str();
        let connections = if url.starts_with("sqlite:") {
            // One writer at a time: SQLite's own rule, kept by the pool.
            1
        } else {
            self.connections
        };
        let mut delay = Duration::from_secs(1);
        self.shared.connecting(entry.name(), None);
        loop {
            let mut options = ConnectOptions::new(url);
            options
                .max_connections(connections)
                .min_connections(0)
                .connect_timeout(self.connect_timeout)
                .acquire_timeout(self.connect_timeout)
                .idle_timeout(IDLE_TIMEOUT)
                .sqlx_logging(false);
            let attempt = tokio::select! {
                () = cancel.cancelled() => return None,
                attempt = Database::connect(options) => attempt,
            };
            let error = match attempt {
                Ok(db) => return Some(db),
                Err(error) => Secrets::of_url(url).scrub(&error.to_string()),
            };
            warn!(database = %entry.name(), %error, retry_in = ?delay, "cannot connect to the database");
            self.shared
                .connecting(entry.name(), Some(format!("cannot connect: {error}")));
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
}

/// Closes the pool of the database `name`.
async fn close(name: &str, db: DatabaseConnection) {
    if let Err(error) = db.close().await {
        warn!(database = %name, %error, "closing the database's connections failed");
    }
}
