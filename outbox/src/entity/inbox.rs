//! `_outbox_inbox`: which events each consumer has processed.
//!
//! A consumer inserts its row in the same transaction as the changes the event caused,
//! so the row exists if and only if the changes do: a redelivered event finds it and
//! changes nothing (see [`Inbox`](crate::Inbox)). Rows older than the deduplication
//! window are deleted by [`Inbox::cleanup`](crate::Inbox::cleanup).

use sea_orm::entity::prelude::*;

/// One event processed by one consumer.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "_outbox_inbox")]
pub struct Model {
    /// The consumer's name (usually its Kafka consumer group).
    #[sea_orm(primary_key, auto_increment = false)]
    pub consumer: String,
    /// The event's id, from its `event_id` header.
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: Uuid,
    /// When the consumer's transaction recorded it.
    pub processed_at: DateTimeUtc,
}

/// The table has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
