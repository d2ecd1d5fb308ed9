//! `_outbox_offset`: what each service's relay published last.
//!
//! The relay keeps no cursor (a cursor on a sequence or timestamp would skip rows of
//! transactions that commit late); this table records progress for health checks and
//! operators: the last event published and when.

use sea_orm::entity::prelude::*;

/// Progress of one service's relay.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "_outbox_offset")]
pub struct Model {
    /// The relay's service name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub service_name: String,
    /// The last event the service published.
    pub last_event_id: Uuid,
    /// When it was published.
    pub last_processed: DateTimeUtc,
    /// When the row was created.
    pub created_at: DateTimeUtc,
    /// When the row last changed.
    pub updated_at: DateTimeUtc,
}

/// The table has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
