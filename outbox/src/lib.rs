#![doc = include_str!("lib.md")]

mod backlog;
mod backoff;
mod completion;
mod config;
#[cfg(feature = "kafka")]
mod consumer;
#[cfg(feature = "contract")]
pub mod contract;
mod database_url;
#[cfg(feature = "kafka")]
mod db_error;
mod dead_letter_filter;
mod decode;
pub mod entity;
mod envelope;
mod error;
mod event;
pub mod fleet;
#[cfg(feature = "http")]
pub mod http;
mod inbox;
#[cfg(feature = "kafka")]
mod kafka;
mod key;
#[cfg(all(feature = "opentelemetry", feature = "kafka"))]
mod otel;
mod panic;
mod publisher;
mod relay;
mod replay;
mod repository;
mod retry;
pub mod schema;
mod secrets;
mod signal;
mod sql;
mod store;
mod tables;
mod wake;
mod wire;

pub use backlog::{Backlog, RelayInfo, TopicBacklog};
pub use backoff::Backoff;
pub use completion::{Completion, UnknownCompletion};
pub use config::{MAX_BATCH_SIZE, RelayConfig};
#[cfg(feature = "kafka")]
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerHandle, ConsumerProbe, ConsumerStats, ConsumerWithHandler,
    Handler, HandlerError, HandlerFuture, consumer_metric_names,
};
pub use database_url::DatabaseUrl;
#[cfg(feature = "kafka")]
pub use kafka::{KafkaConfig, KafkaContext};
#[cfg(feature = "kafka")]
pub use publisher::KafkaPublisher;
pub use publisher::{
    MemoryPublisher, NoOpPublisher, PublishError, PublishErrorKind, Publisher, publish_in_key_order,
};
pub use relay::{HealthProbe, ProcessReport, Relay, RelayHandle, RelayStats, relay_metric_names};
pub use repository::FailureOutcome;

pub use dead_letter_filter::DeadLetterFilter;
pub use decode::DecodeEvent;
pub use envelope::{Envelope, MAX_DELAY};
pub use error::{Error, EventField, Result};
pub use event::{DEFAULT_EVENT_VERSION, DeclaredEvent, EventBuilder, OutboxEvent};
pub use inbox::{DEFAULT_DEDUP_WINDOW, Inbox};
pub use secrets::Secrets;
pub use signal::shutdown_signal;
pub use store::{DEFAULT_SHARDS, Outbox, ScheduledEvent, Store};
pub use tables::{Identifier, KEY_LOCKS, MAX_BASE_NAME_LEN, Tables};
#[cfg(feature = "kafka")]
pub use wire::Received;
pub use wire::{Encoding, Message, MessageFormat, UnknownFormat, debezium_topic, headers};

/// Derives [`OutboxEvent`](trait@OutboxEvent), and [`DecodeEvent`] when the type
/// also implements `Deserialize`, for a struct with named fields, a newtype or an
/// enum of such variants; see the
/// [crate documentation](crate#defining-events) for the attributes.
pub use outbox_derive::OutboxEvent;

/// What the derive's expansion refers to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::decode::{
        decode_struct, decode_variant, tombstone_field, unexpected_tombstone, unknown_event,
        variant_payload,
    };
    pub use serde;
    pub use serde_json;
}
