//! Names of the Kafka headers the relay sets on every message.
//!
//! Extra headers given at store time may not use these names.

/// The event's id (a UUID v7). Consumers drop duplicates by it.
pub const EVENT_ID: &str = "event_id";
/// The event's type, e.g. `user.registered`.
pub const EVENT_TYPE: &str = "event_type";
/// The event's schema version, e.g. `v2`.
pub const EVENT_VERSION: &str = "event_version";
/// The id of the aggregate the event belongs to.
pub const AGGREGATE_ID: &str = "aggregate_id";
/// The trace id stored with the event.
pub const TRACE_ID: &str = "trace_id";
/// The W3C trace context derived from the trace id.
pub const TRACEPARENT: &str = "traceparent";
/// The user on whose behalf the event happened.
pub const USER_ID: &str = "user_id";
/// When the event was stored (RFC 3339).
pub const CREATED_AT: &str = "created_at";

/// On the dead-letter topic only: why the event was dead-lettered (its last error).
pub const DEAD_LETTER_ERROR: &str = "dead_letter_error";

/// Every header name the relay sets itself on the event's own topic.
pub const RESERVED: [&str; 8] = [
    EVENT_ID,
    EVENT_TYPE,
    EVENT_VERSION,
    AGGREGATE_ID,
    TRACE_ID,
    TRACEPARENT,
    USER_ID,
    CREATED_AT,
];
