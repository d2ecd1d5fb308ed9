//! The relay's side of cross-process wake-ups (PostgreSQL, feature `postgres`): a
//! connection that `LISTEN`s on the outbox table's channel and wakes the main loop
//! when a writer in any process stored events for a shard this relay owns, and the
//! lease keeper when another relay gave shards up. The connection is the relay's own,
//! beside its pool, never one of the pool's.
//!
//! Lost notifications cost latency, never events: the relay polls anyway. After the
//! listening connection is (re-)established, the relay polls once, for what was
//! stored while nobody listened.
//!
//! A connection can listen and never hear: through a pooler in transaction mode
//! (PgBouncer, RDS Proxy), `LISTEN` succeeds on whichever server connection the
//! pooler lent for it, and the notifications go to that connection, not to the
//! relay. So the relay sends itself a notification once it listens, and says, with
//! the fix, when it does not hear it (counted in
//! [`LISTEN_UNHEARD`](super::relay_metric_names::LISTEN_UNHEARD)).

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
use sea_orm::{DatabaseConnection, DatabaseConnectionType};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::relay_metric_names;
use super::setup::Setup;
use crate::wake;

/// The longest wait before trying to listen again.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// How long the listening connection has to hear the relay's own notification. A
/// notification reaches a listener within milliseconds, even on a busy server.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// Listens until `cancel`, reconnecting with backoff.
pub(super) async fn listen(setup: Arc<Setup>, cancel: CancellationToken) {
    Ear { setup }.listen(cancel).await;
}

/// The relay's listening side.
struct Ear {
    setup: Arc<Setup>,
}

impl Ear {
    async fn listen(&self, cancel: CancellationToken) {
        let channel = wake::channel(self.setup.tables());
        let mut wait = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            match self.listener(&channel).await {
                Ok(mut listener) => {
                    info!(relay = %self.setup.relay_id, %channel, "listening for stored events");
                    wait = Duration::from_millis(100);
                    // Events stored while nobody listened: poll once. Shards given up
                    // meanwhile (a relay that just started listens only after its
                    // first round, which the others may have answered): a round.
                    self.wake_for(None);
                    self.setup.doorbell.hear_release();
                    let probe = wake::probe_payload(&self.setup.relay_id);
                    wake::send_notify(&self.setup.db, &channel, probe).await;
                    let outcome = cancel
                        .run_until_cancelled(self.receive(&mut listener))
                        .await;
                    match outcome {
                        None => return,
                        Some(error) => {
                            warn!(relay = %self.setup.relay_id, %error, "the listening connection failed; listening again");
                        }
                    }
                }
                Err(error) => {
                    warn!(relay = %self.setup.relay_id, %error, "cannot listen for stored events; polling until it can");
                }
            }
            if cancel
                .run_until_cancelled(tokio::time::sleep(wait))
                .await
                .is_none()
            {
                return;
            }
            wait = (wait * 2).min(MAX_RECONNECT_WAIT);
        }
    }

    /// A listening connection of its own: to `listen_url`, else with the pool's
    /// connection options, but outside the pool. (A listener taken from the pool keeps
    /// its connection for good: with a pool of one, the relay had none left for its
    /// claims.)
    async fn listener(&self, channel: &str) -> Result<PgListener, String> {
        let mut listener = match &self.setup.config.listen_url {
            Some(url) => PgListener::connect(url.as_str()).await,
            None => match pool_of(&self.setup.db) {
                Some(pool) => {
                    let own = PgPoolOptions::new()
                        .max_connections(1)
                        .connect_lazy_with(pool.connect_options().as_ref().clone());
                    PgListener::connect_with(&own).await
                }
                None => return Err("the connection is not a PostgreSQL pool".to_owned()),
            },
        }
        .map_err(|error| error.to_string())?;
        // A failed connection is replaced by this task, not behind its back.
        listener.eager_reconnect(false);
        // Named in pg_stat_activity, for operators (and the tests that cut it).
        sea_orm::sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(format!("outbox listen {}", self.setup.relay_id))
            .execute(&mut listener)
            .await
            .map_err(|error| error.to_string())?;
        listener
            .listen(channel)
            .await
            .map_err(|error| error.to_string())?;
        Ok(listener)
    }

    /// Wakes the main loop for each notification until the connection fails; returns
    /// why it failed. Says so when the relay's own probe is not heard in time.
    async fn receive(&self, listener: &mut PgListener) -> String {
        let mut probe = Probe::sent();
        loop {
            let received = match probe.deadline() {
                // `try_recv` is cancel-safe: a notification half read stays buffered.
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, listener.try_recv()).await {
                        Ok(received) => received,
                        Err(_) => {
                            probe.unheard(self.setup.labels(), &self.setup.relay_id);
                            continue;
                        }
                    }
                }
                None => listener.try_recv().await,
            };
            match received {
                Ok(Some(notification)) => self.hear(notification.payload(), &mut probe),
                Ok(None) => return "the connection was closed".to_owned(),
                Err(error) => return error.to_string(),
            }
        }
    }

    /// Acts on one notification's `payload`.
    fn hear(&self, payload: &str, probe: &mut Probe) {
        let own = |relay: &str| relay == self.setup.relay_id;
        if let Some(relay) = wake::probed_by(payload) {
            if own(relay) {
                probe.heard(&self.setup.relay_id);
            }
        } else if let Some(relay) = wake::released_by(payload) {
            if !own(relay) {
                self.setup.doorbell.hear_release();
            }
        } else if wake::is_scheduled(payload) {
            self.setup.outbox.wake().scheduled_heard();
        } else {
            self.wake_for(wake::shards_of(payload));
        }
    }

    /// Rings the main loop's doorbell for `shards` (all when `None`); the loop claims
    /// those this relay owns.
    fn wake_for(&self, shards: Option<Vec<i32>>) {
        match shards {
            None => self.setup.doorbell.ring_all(),
            Some(shards) => self.setup.doorbell.ring(shards),
        }
    }
}

/// Whether a listening connection heard the relay's own notification.
#[derive(Debug)]
enum Probe {
    /// Sent; not heard yet.
    Sent { deadline: Instant },
    /// Not heard in time; the relay said so.
    Unheard,
    /// Heard: this connection hears notifications.
    Heard,
}

impl Probe {
    fn sent() -> Self {
        Probe::Sent {
            deadline: Instant::now() + PROBE_WAIT,
        }
    }

    /// When to give up waiting for it, while waiting.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Probe::Sent { deadline } => Some(*deadline),
            Probe::Unheard | Probe::Heard => None,
        }
    }

    /// Not heard by its deadline: says so, with the fix, and counts it.
    fn unheard(&mut self, labels: Vec<metrics::Label>, relay: &str) {
        *self = Probe::Unheard;
        warn!(
            relay,
            waited = ?PROBE_WAIT,
            "the relay's listening connection did not hear the relay's own notification: \
             LISTEN does not work through a connection pooler in transaction mode (PgBouncer, \
             RDS Proxy). Set OUTBOX_LISTEN_URL (`RelayConfig::listen_url`) to a direct \
             connection to PostgreSQL; until then this relay finds the events of other \
             processes by polling"
        );
        ::metrics::counter!(relay_metric_names::LISTEN_UNHEARD, labels).increment(1);
    }

    /// Heard.
    fn heard(&mut self, relay: &str) {
        if matches!(self, Probe::Unheard) {
            info!(
                relay,
                "the relay's listening connection heard its notification late: it hears"
            );
        }
        *self = Probe::Heard;
    }
}

/// The sqlx pool under `db`, when it is a PostgreSQL pool.
fn pool_of(db: &DatabaseConnection) -> Option<&sea_orm::sqlx::PgPool> {
    match &db.inner {
        DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            Some(db.get_postgres_connection_pool())
        }
        #[allow(unreachable_patterns)] // only one variant with just `sqlx-postgres`
        _ => None,
    }
}
