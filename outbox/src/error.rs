//! The error type of the outbox crate.

use std::fmt;

use sea_orm::DbErr;

/// The result type of the outbox crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when storing, relaying or consuming events.
///
/// Errors about the event itself ([`Error::EmptyField`], [`Error::FieldTooLong`],
/// [`Error::NulCharacter`], [`Error::InvalidTopic`], [`Error::InvalidHeader`],
/// [`Error::Serialize`]) are found
/// before anything is written, so the caller's transaction is untouched and still
/// theirs to commit or roll back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database rejected a statement or could not be reached. A missing table
    /// says how to create the outbox's tables.
    #[error("database error: {0}{hint}", hint = missing_table_hint(.0))]
    Db(#[from] DbErr),

    /// The event's payload could not be serialized to JSON.
    #[error("could not serialize the payload of event type {event_type:?} to JSON")]
    Serialize {
        /// The type of the event whose payload failed.
        event_type: String,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A received event has a type and version the Rust type it is decoded into has no
    /// place for (see [`DecodeEvent`](crate::DecodeEvent)).
    #[error("{target} has no event type {event_type:?} version {event_version:?}")]
    UnknownEvent {
        /// The received event's type.
        event_type: String,
        /// The received event's version.
        event_version: String,
        /// The Rust type it was to be decoded into.
        target: &'static str,
    },

    /// A received event's payload does not fit the Rust type of its type and version.
    #[error("could not decode the payload of event type {event_type:?} version {event_version:?}")]
    Deserialize {
        /// The received event's type.
        event_type: String,
        /// The received event's version.
        event_version: String,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A received event is a tombstone (a message with no value), and the Rust type it
    /// is decoded into does not declare its type and version a tombstone (see
    /// [`DecodeEvent::decode_tombstone`](crate::DecodeEvent::decode_tombstone)).
    #[error(
        "event type {event_type:?} version {event_version:?} arrived as a tombstone (no value), which {target} does not read as one"
    )]
    UnexpectedTombstone {
        /// The received event's type.
        event_type: String,
        /// The received event's version.
        event_version: String,
        /// The Rust type it was to be decoded into.
        target: &'static str,
    },

    /// An event that is a tombstone ([`OutboxEvent::is_tombstone`](crate::OutboxEvent::is_tombstone))
    /// has a payload: a tombstone is published with a null value, so its data would
    /// never reach anyone. Nothing was stored.
    #[error(
        "event type {event_type:?} is a tombstone, which carries no data, but its payload is not null"
    )]
    TombstoneWithData {
        /// The event's type.
        event_type: String,
    },

    /// An event's due time ([`Store::deliver_at`](crate::Store::deliver_at),
    /// [`Store::delay`](crate::Store::delay)) lies further ahead than the outbox
    /// allows ([`MAX_DELAY`](crate::MAX_DELAY)). Nothing was stored.
    #[error(
        "event {id} is due at {deliver_at}, more than {} days ahead, which is the most allowed",
        .max.as_secs() / 86_400
    )]
    DueTooLate {
        /// The event's id.
        id: uuid::Uuid,
        /// The due time asked for.
        deliver_at: chrono::DateTime<chrono::Utc>,
        /// How far ahead a due time may be.
        max: std::time::Duration,
    },

    /// A received message lacks a header the relay sets, or its value is invalid.
    #[error("received message: header {header:?} is {reason}")]
    ReceivedHeader {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A required field of the event is empty.
    #[error("{field} must not be empty")]
    EmptyField {
        /// Which field.
        field: EventField,
    },

    /// A field of the event is longer than its column allows.
    #[error("{field} is {len} characters long; at most {max} are allowed")]
    FieldTooLong {
        /// Which field.
        field: EventField,
        /// Its length in characters.
        len: usize,
        /// The limit, in characters.
        max: usize,
    },

    /// A field, a header or a string in the JSON payload holds a NUL character
    /// (`\0`), which PostgreSQL cannot store (it would abort the caller's transaction).
    #[error("{field} contains a NUL character (\\0), which PostgreSQL cannot store")]
    NulCharacter {
        /// Which field.
        field: EventField,
    },

    /// The destination topic is not a valid Kafka topic name.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An extra header has an invalid name.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The database is neither PostgreSQL, MySQL nor SQLite.
    #[error("the outbox supports PostgreSQL, MySQL and SQLite, not {backend}")]
    UnsupportedBackend {
        /// The backend that was given.
        backend: String,
    },

    /// The databases of a [`Fleet`](crate::fleet::Fleet) could not be read: a line of
    /// the databases file, or an entry, that is not valid.
    #[error("{origin}{}: {reason}", line.map(|line| format!(" line {line}")).unwrap_or_default())]
    Databases {
        /// Where they were read from: the file, or `entry`.
        origin: String,
        /// The line, in a file.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },

    /// A configuration value is invalid.
    #[error("invalid {variable}={value:?}: {reason}")]
    Config {
        /// The variable (or, for values set in code, the variable of that field).
        variable: &'static str,
        /// The value as given.
        value: String,
        /// What was expected.
        reason: &'static str,
    },

    /// A Kafka properties file could not be read or has a line that is not
    /// `key=value` (see [`KafkaConfig::with_properties_file`](crate::KafkaConfig::with_properties_file)).
    #[cfg(feature = "kafka")]
    #[error("Kafka properties file {}: {reason}", path.display())]
    KafkaProperties {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, with the line number; never the line itself.
        reason: String,
    },

    /// The Prometheus recorder could not be installed (another `metrics` recorder is
    /// installed already, or a bucket setting is invalid).
    #[cfg(feature = "http")]
    #[error("cannot install the Prometheus recorder: {0}")]
    Metrics(String),

    /// A duration too long to compute a date from (for example an age of 300,000 years).
    #[error("{what} of {} reaches past the dates that can be stored", humantime::format_duration(*.value))]
    DurationOutOfRange {
        /// What the duration was for.
        what: &'static str,
        /// The duration as given.
        value: std::time::Duration,
    },

    /// The Kafka client reported an error.
    #[cfg(feature = "kafka")]
    #[error("Kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    /// The broker refused to create a topic.
    #[cfg(feature = "kafka")]
    #[error("cannot create topic {topic:?}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's reason.
        reason: String,
    },

    /// The relay is not healthy.
    #[error("relay unhealthy: {reason}")]
    Unhealthy {
        /// What is wrong.
        reason: String,
    },

    /// The relay did not stop within its shutdown timeout; its batch in flight was
    /// abandoned (its events stay pending and are published again later).
    #[error("the relay did not stop within {0:?}; its batch in flight was abandoned")]
    ShutdownTimeout(std::time::Duration),

    /// The consumer did not stop within its shutdown timeout (plus 10 s to leave its
    /// group); messages whose handlers had not finished are delivered again.
    #[error(
        "the consumer did not stop within {0:?}; messages whose handlers had not finished will be delivered again"
    )]
    ConsumerShutdownTimeout(std::time::Duration),

    /// The consumer stopped on its own (a bug on its polling thread, or in a worker
    /// outside any message's attempt); its messages not done with are delivered again
    /// when it is started anew.
    #[error("the consumer failed: {0}")]
    ConsumerFailed(String),

    /// The consumer's thread could not be started.
    #[error("cannot start the consumer's thread")]
    Thread(#[source] std::io::Error),

    /// A part of the relay panicked (a bug, or a publisher's); the relay went on
    /// without it.
    #[error("{what} panicked: {message}")]
    Panicked {
        /// What panicked.
        what: &'static str,
        /// The panic's message.
        message: String,
    },

    /// No event has this id.
    #[error("no event with id {0}")]
    NotFound(uuid::Uuid),

    /// A consumer name cannot be stored in the inbox.
    #[error("invalid consumer name {name:?}: {reason}")]
    InvalidConsumer {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A table name is not a safe SQL identifier.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidIdentifier {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A field of a stored event, as named in [`Error::EmptyField`] and [`Error::FieldTooLong`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventField {
    /// The event type (`event_type` column).
    EventType,
    /// The event version (`event_version` column).
    EventVersion,
    /// The aggregate id (`aggregate_id` column).
    AggregateId,
    /// The destination topic (`destination_topic` column).
    Topic,
    /// The partition key (`partition_key` column).
    PartitionKey,
    /// The trace id (`trace_id` column).
    TraceId,
    /// The user id (`user_id` column).
    UserId,
    /// The JSON payload (`event_data` column).
    Payload,
    /// The extra headers (`headers` column).
    Headers,
}

impl EventField {
    /// The column that stores this field.
    pub fn column(self) -> &'static str {
        match self {
            EventField::EventType => "event_type",
            EventField::EventVersion => "event_version",
            EventField::AggregateId => "aggregate_id",
            EventField::Topic => "destination_topic",
            EventField::PartitionKey => "partition_key",
            EventField::TraceId => "trace_id",
            EventField::UserId => "user_id",
            EventField::Payload => "event_data",
            EventField::Headers => "headers",
        }
    }
}

impl fmt::Display for EventField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            EventField::EventType => "event type",
            EventField::EventVersion => "event version",
            EventField::AggregateId => "aggregate id",
            EventField::Topic => "topic",
            EventField::PartitionKey => "partition key",
            EventField::TraceId => "trace id",
            EventField::UserId => "user id",
            EventField::Payload => "payload",
            EventField::Headers => "headers",
        };
        write!(f, "{name} ({})", self.column())
    }
}

/// What to do when `error` says a table does not exist (PostgreSQL, MySQL and
/// MariaDB, SQLite each word it their own way): the outbox's migrations may not have
/// run.
fn missing_table_hint(error: &DbErr) -> &'static str {
    let message = error.to_string();
    let missing = (message.contains("relation") && message.contains("does not exist"))
        || (message.contains("Table") && message.contains("doesn't exist"))
        || message.contains("no such table");
    if missing {
        "; if it is one of the outbox's tables, run the outbox's migrations \
         (`outbox-migration up`, or outbox_migration::migrations() in your Migrator)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Database;

    use crate::{EventBuilder, Outbox};

    #[tokio::test]
    async fn a_store_without_the_tables_says_to_run_the_migrations() {
        let db = Database::connect("sqlite::memory:").await.expect("sqlite");
        let error = Outbox::new()
            .store(&db, &EventBuilder::new("thing.happened", "k"), "topic")
            .await
            .expect_err("no tables")
            .to_string();
        assert!(
            error.contains("no such table") && error.contains("run the outbox's migrations"),
            "{error}"
        );
    }
}
