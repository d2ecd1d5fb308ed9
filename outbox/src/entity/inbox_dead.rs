//! `_outbox_inbox_dead`: the messages a consumer gave up on.
//!
//! A [`Consumer`](crate::Consumer) writes a row when its handler failed every attempt,
//! or when a message could not be read as an event of the consumer's type (a missing
//! header, a payload that does not fit). The row keeps the message as it came (key,
//! payload, headers) with the last error, and consumption goes on. A message the
//! database refuses to store whole (a value over its limits) keeps a minimal letter:
//! where it is, its key when short, and the errors. When the event's id
//! is known, the same transaction records it in the inbox, so a redelivery is skipped.

use sea_orm::entity::prelude::*;

/// One message one consumer gave up on.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "_outbox_inbox_dead")]
pub struct Model {
    /// The dead letter's id, in the order they were written.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The consumer's name.
    pub consumer: String,
    /// The topic the message came from.
    pub topic: String,
    /// Its partition.
    pub kafka_partition: i32,
    /// Its offset in the partition. A topic deleted and created again reuses offsets:
    /// its messages get dead letters of their own.
    pub kafka_offset: i64,
    /// The `event_id` header, when the message had a valid one.
    pub event_id: Option<Uuid>,
    /// The `event_type` header, when the message had one.
    pub event_type: Option<String>,
    /// The message key, as it came.
    pub message_key: Option<Vec<u8>>,
    /// The payload, as it came.
    pub payload: Option<Vec<u8>>,
    /// The message's UTF-8 headers, as a JSON object.
    #[sea_orm(column_type = "Text")]
    pub headers: String,
    /// Why the consumer gave up: the last error.
    #[sea_orm(column_type = "Text")]
    pub error: String,
    /// How many times the handler ran (0 for a message that could not be read).
    pub attempts: i32,
    /// When it was given up on.
    pub dead_lettered_at: DateTimeUtc,
    /// When an operator asked for it to be replayed
    /// ([`Inbox::request_replay`](crate::Inbox::request_replay)); the consumer of
    /// that name hands it to its handler again, and clears this if that fails.
    pub replay_requested_at: Option<DateTimeUtc>,
}

/// The table has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
