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
/// The trace id stored with the event (of a stored `traceparent`, its trace id).
pub const TRACE_ID: &str = "trace_id";
/// The W3C trace context: the one stored, or one derived from the trace id.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` of the span that stored the event (feature `opentelemetry`),
/// when it had one: an extra header the store sets, in every format.
pub const TRACESTATE: &str = "tracestate";
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

/// Whether `name` is a header that some [`MessageFormat`](crate::MessageFormat) sets
/// itself: one of [`RESERVED`], [`cloudevents`]'s (any `ce_` header and
/// `content-type`) or [`debezium`]'s. Extra headers given at store time may not use
/// them, so that an event reads the same in every format.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
        || name.starts_with(cloudevents::PREFIX)
        || name.eq_ignore_ascii_case(cloudevents::CONTENT_TYPE)
        || debezium::RESERVED.contains(&name)
}

/// The headers of the CloudEvents 1.0 Kafka protocol binding, binary content mode,
/// as the relay writes them (`cloudevents-binary`): each attribute in a `ce_` header.
pub mod cloudevents {
    /// The prefix of every attribute's header.
    pub const PREFIX: &str = "ce_";
    /// Always `1.0`.
    pub const SPECVERSION: &str = "ce_specversion";
    /// The event's id.
    pub const ID: &str = "ce_id";
    /// The relay's `cloudevents_source` (default `/<service name>`).
    pub const SOURCE: &str = "ce_source";
    /// The event's type.
    pub const TYPE: &str = "ce_type";
    /// When the event was stored (RFC 3339).
    pub const TIME: &str = "ce_time";
    /// The aggregate id.
    pub const SUBJECT: &str = "ce_subject";
    /// Extension: the payload's schema version.
    pub const EVENTVERSION: &str = "ce_eventversion";
    /// Extension: the user on whose behalf the event happened.
    pub const USERID: &str = "ce_userid";
    /// The distributed tracing extension: the W3C trace context.
    pub const TRACEPARENT: &str = "ce_traceparent";
    /// The distributed tracing extension: the W3C `tracestate`, when stored.
    pub const TRACESTATE: &str = "ce_tracestate";
    /// Extension: a trace id that is not a W3C trace id (a W3C one travels in
    /// [`TRACEPARENT`]).
    pub const TRACEID: &str = "ce_traceid";
    /// `application/json` in binary mode (the `datacontenttype` attribute);
    /// `application/cloudevents+json` in structured mode.
    pub const CONTENT_TYPE: &str = "content-type";
    /// The content type of a structured-mode message.
    pub const STRUCTURED: &str = "application/cloudevents+json";
    /// The content type of the payload.
    pub const JSON: &str = "application/json";
}

/// The headers Debezium's outbox event router sets (`debezium`), and the ones this
/// crate adds for its own consumers (a Debezium consumer ignores them).
pub mod debezium {
    /// The event's id: Debezium's default.
    pub const ID: &str = "id";
    /// The event's type, where Debezium's `table.fields.additional.placement =
    /// type:header:eventType` puts it.
    pub const EVENT_TYPE: &str = "eventType";
    /// The payload's schema version.
    pub const EVENT_VERSION: &str = "eventVersion";
    /// The W3C trace context, as Debezium's tracing writes it.
    pub const TRACEPARENT: &str = "traceparent";
    /// The headers of this format.
    pub const RESERVED: [&str; 4] = [ID, EVENT_TYPE, EVENT_VERSION, TRACEPARENT];
}
