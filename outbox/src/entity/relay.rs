//! `_outbox_relay`: the relay instances of each service that are alive.

use sea_orm::entity::prelude::*;

/// One running relay instance. Relays count the live instances of their service to
/// share the shards fairly: each holds at most `ceil(shards / live relays)`, the
/// shards of relays on probation (one each) left aside.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "_outbox_relay")]
pub struct Model {
    /// The relay's service name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub service_name: String,
    /// The instance's id (service, process id and a random part).
    #[sea_orm(primary_key, auto_increment = false)]
    pub relay_id: String,
    /// When the instance started.
    pub started_at: DateTimeUtc,
    /// The instance's last sign of life; instances silent for a lease period are gone.
    pub heartbeat_at: DateTimeUtc,
    /// Back from a broker it could not deliver to: it holds one shard until a delivery
    /// succeeds, and the others do not count it when they share the shards.
    pub probation: bool,
}

/// The table has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
