//! `_outbox_lease`: which relay instance owns which shard of a service's events.

use sea_orm::entity::prelude::*;

/// One shard's lease. A relay publishes a shard's events only while it holds an
/// unexpired lease, and writes results back only if the lease's token is still the one
/// it was granted, so a relay that stalled past its lease cannot overwrite the work of
/// the relay that took over.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "_outbox_lease")]
pub struct Model {
    /// The relay's service name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub service_name: String,
    /// The shard.
    #[sea_orm(primary_key, auto_increment = false)]
    pub shard: i32,
    /// The relay instance holding the lease.
    pub owner: String,
    /// Fencing token: grows each time the lease changes hands.
    pub token: i64,
    /// When the lease lapses unless renewed.
    pub expires_at: DateTimeUtc,
    /// When the row last changed.
    pub updated_at: DateTimeUtc,
}

/// The table has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
