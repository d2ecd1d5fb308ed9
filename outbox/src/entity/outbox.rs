//! `_outbox`: one row per stored event.

use sea_orm::entity::prelude::*;

/// A stored event.
///
/// Beside the event's own columns, the relay's:
/// `seq` (commit order per key), `shard` (lease ownership), `headers` (extra Kafka
/// headers), `next_attempt_at` (retry backoff) and `dead_lettered_at` (dead letters).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "_outbox")]
pub struct Model {
    /// Store order. Taken while the event's key is locked, so for one key it follows
    /// the order in which the storing transactions committed. The relay publishes each
    /// key's events in `seq` order. Also the primary key: a compact B-tree, and SQLite's
    /// `AUTOINCREMENT` needs an integer primary key.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The event id (UUID v7, generated in Rust), sent in the `event_id` header.
    #[sea_orm(unique)]
    pub id: Uuid,
    /// What happened, e.g. `user.registered`.
    pub event_type: String,
    /// The aggregate the event belongs to.
    pub aggregate_id: String,
    /// The payload.
    #[sea_orm(column_type = "JsonBinary")]
    pub event_data: Json,
    /// The payload's schema version.
    pub event_version: String,
    /// Whether the event is a tombstone: published with a null value (its payload is
    /// `null`).
    pub tombstone: bool,
    /// The Kafka topic.
    pub destination_topic: String,
    /// The Kafka message key and the unit of ordering. The library always fills it
    /// (with the aggregate id when no key was given); rows written by other tools may
    /// leave it empty, which means the aggregate id.
    pub partition_key: Option<String>,
    /// Extra Kafka headers given at store time, as a JSON object of strings.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub headers: Option<Json>,
    /// Hash shard of the partition key. A relay publishes a shard only while it holds
    /// the shard's lease, so one key is never published by two relays at once.
    pub shard: i32,
    /// Whether the event reached Kafka.
    pub published: bool,
    /// When the event reached Kafka.
    pub published_at: Option<DateTimeUtc>,
    /// Failed publish attempts so far.
    pub attempts: i32,
    /// When the last attempt failed.
    pub last_attempt_at: Option<DateTimeUtc>,
    /// When the next attempt may happen (exponential backoff after a failure). Until
    /// then the event, and the later events of its key, wait.
    pub next_attempt_at: Option<DateTimeUtc>,
    /// The last publish error.
    pub error_message: Option<String>,
    /// When the event was dead-lettered after its last allowed attempt. A
    /// dead-lettered event is kept with its error until it is replayed.
    pub dead_lettered_at: Option<DateTimeUtc>,
    /// Whether the event waits behind an earlier event of its key that failed (kept
    /// out of the claim index until that event is published or dead-lettered).
    pub parked: bool,
    /// The trace the event belongs to.
    pub trace_id: Option<String>,
    /// The user on whose behalf the event happened.
    pub user_id: Option<String>,
    /// When the event was stored.
    pub created_at: DateTimeUtc,
    /// When the row last changed.
    pub updated_at: DateTimeUtc,
}

/// The table has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
