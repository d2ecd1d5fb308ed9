//! [`Setup`]: what every part of a running relay reads and none changes.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbBackend};

use super::state::State;
use crate::config::RelayConfig;
use crate::sql::{Dialect, LeaseKey};
use crate::store::Outbox;
use crate::tables::Tables;
use crate::wake::Doorbell;
use crate::wire::Encodings;

/// The relay's configuration (with the message formats per topic), its database (with the SQL dialect, decided once), the
/// outbox it publishes, its id, its figures and health, and the doorbell that stores
/// (of this process, and through `listen.rs` of others) ring.
#[derive(Debug)]
pub(super) struct Setup {
    pub(super) config: RelayConfig,
    /// How messages are written, per topic (from the configuration).
    pub(super) encodings: Encodings,
    pub(super) db: DatabaseConnection,
    pub(super) dialect: Dialect,
    pub(super) outbox: Outbox,
    pub(super) relay_id: String,
    pub(super) state: Arc<State>,
    pub(super) doorbell: Arc<Doorbell>,
    /// The name of the database it serves in a fleet, for metrics.
    pub(super) database: Option<String>,
}

impl Setup {
    /// The outbox's table names.
    pub(super) fn tables(&self) -> &Tables {
        self.outbox.tables()
    }

    /// The service name.
    pub(super) fn service(&self) -> &str {
        &self.config.service_name
    }

    /// What every metric is labelled with: the service, and in a fleet the database.
    pub(super) fn labels(&self) -> Vec<metrics::Label> {
        metric_labels(&self.config.service_name, self.database.as_deref())
    }

    /// The lease row of `shard` that this relay holds.
    pub(super) fn lease_key(&self, shard: i32) -> LeaseKey<'_> {
        LeaseKey {
            service: &self.config.service_name,
            shard,
            owner: &self.relay_id,
        }
    }

    /// Whether this relay listens for the wake-ups of writers in other processes.
    pub(super) fn listens(&self) -> bool {
        cfg!(feature = "postgres")
            && self.config.listen
            && self.db.get_database_backend() == DbBackend::Postgres
    }
}

/// The labels of a relay's metrics: `service`, and `database` in a fleet.
pub(super) fn metric_labels(service: &str, database: Option<&str>) -> Vec<metrics::Label> {
    let mut labels = vec![metrics::Label::new("service", service.to_owned())];
    if let Some(database) = database {
        labels.push(metrics::Label::new("database", database.to_owned()));
    }
    labels
}
