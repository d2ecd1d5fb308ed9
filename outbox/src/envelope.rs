//! [`Envelope`]: an event made ready for the outbox table, with its routing metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, EventField, Result};
use crate::event::OutboxEvent;
use crate::wire::headers;

/// Column limits, in characters, matching the migration.
pub(crate) const MAX_NAME_LEN: usize = 255;
pub(crate) const MAX_VERSION_LEN: usize = 50;
/// How far ahead an event's due time may be: 366 days. A later one is refused
/// ([`Error::DueTooLate`]): most likely a unit mistake, and an event that waits for a
/// year waits in a table that nobody watches.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 60 * 60);
/// Kafka's own limit on topic names.
pub(crate) const MAX_TOPIC_LEN: usize = 249;
const TOPIC_TOO_LONG: &str = "Kafka allows at most 249 characters";
const _: () = assert!(MAX_TOPIC_LEN == 249, "update TOPIC_TOO_LONG");

/// One event with its destination and metadata, ready to be stored.
///
/// [`Outbox::store`](crate::Outbox::store) builds one for you; build them yourself to
/// store several events in one statement with
/// [`Outbox::store_batch`](crate::Outbox::store_batch):
///
/// ```
/// use outbox::{Envelope, EventBuilder};
///
/// let event = EventBuilder::new("order.created", "order-17");
/// let envelope = Envelope::new(&event, "order-events")?
///     .partition_key("customer-4")
///     .user_id("customer-4")
///     .header("tenant", "acme");
/// assert_eq!(envelope.key(), "customer-4");
/// # Ok::<(), outbox::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub(crate) id: Uuid,
    pub(crate) event_type: String,
    pub(crate) event_version: String,
    pub(crate) aggregate_id: String,
    pub(crate) payload: Value,
    pub(crate) topic: String,
    pub(crate) partition_key: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) trace_id: Option<String>,
    pub(crate) headers: BTreeMap<String, String>,
    /// Published with a null value ([`OutboxEvent::is_tombstone`]).
    pub(crate) tombstone: bool,
    /// When it is due, if not at once (see [`Envelope::deliver_at`]).
    pub(crate) deliver_at: Option<DateTime<Utc>>,
}

impl Envelope {
    /// Serializes `event` for `topic`, with a new time-ordered id (UUID v7).
    ///
    /// # Errors
    /// [`Error::Serialize`] when the event's payload cannot be serialized;
    /// [`Error::TombstoneWithData`] when a tombstone has a payload other than `null`. Other
    /// problems (an empty topic, an over-long field) are reported when the envelope is
    /// stored, before anything is written.
    pub fn new<E: OutboxEvent + ?Sized>(event: &E, topic: impl Into<String>) -> Result<Self> {
        let payload = event.payload().map_err(|source| Error::Serialize {
            event_type: event.event_type().to_owned(),
            source,
        })?;
        let tombstone = event.is_tombstone();
        if tombstone && !payload.is_null() {
            return Err(Error::TombstoneWithData {
                event_type: event.event_type().to_owned(),
            });
        }
        let envelope = Envelope {
            id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            event_version: event.event_version().to_owned(),
            aggregate_id: event.aggregate_id(),
            payload,
            topic: topic.into(),
            partition_key: event.partition_key(),
            user_id: event.user_id(),
            trace_id: event.trace_id(),
            headers: BTreeMap::new(),
            tombstone,
            deliver_at: None,
        };
        #[cfg(feature = "opentelemetry")]
        let envelope = envelope.in_current_trace();
        Ok(envelope)
    }

    /// Without a trace id of its own: the current span's OpenTelemetry context, when
    /// there is one (see the `opentelemetry` feature).
    #[cfg(feature = "opentelemetry")]
    fn in_current_trace(mut self) -> Self {
        if self.trace_id.is_none()
            && let Some((traceparent, tracestate)) = crate::otel::current()
        {
            self.trace_id = Some(traceparent);
            if let Some(state) = tracestate {
                self.headers.insert(headers::TRACESTATE.to_owned(), state);
            }
        }
        self
    }

    /// Orders and partitions the event by `key` instead of the event's own partition
    /// key or aggregate id.
    pub fn partition_key(mut self, key: impl ToString) -> Self {
        self.partition_key = Some(key.to_string());
        self
    }

    /// Records the user on whose behalf the event happened.
    pub fn user_id(mut self, user_id: impl ToString) -> Self {
        self.user_id = Some(user_id.to_string());
        self
    }

    /// Records the trace the event belongs to: a trace id, or a whole W3C
    /// `traceparent` (kept as it is, its parent span id and sampled flag with it).
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// Adds a Kafka header. Names the relay sets itself in any message format
    /// ([`headers::is_reserved`]) are rejected when the envelope is stored.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Publishes the event no earlier than `at`: until then it waits in the
    /// scheduled table ([`Tables::scheduled`](crate::Tables::scheduled)), holds back
    /// none of its key's other events, and can be cancelled
    /// ([`Outbox::cancel`](crate::Outbox::cancel)). When due, a relay moves it into
    /// the outbox, where it takes its place behind the events of its key stored
    /// before that moment. A time already past means now; one more than
    /// [`MAX_DELAY`] ahead is refused when the envelope is stored.
    ///
    /// Due times are read on the database's clock by the relays; `at` comes from
    /// this process's.
    pub fn deliver_at(mut self, at: DateTime<Utc>) -> Self {
        self.deliver_at = Some(at);
        self
    }

    /// Publishes the event no earlier than `delay` from now, as
    /// [`deliver_at`](Self::deliver_at).
    pub fn delay(self, delay: Duration) -> Self {
        let at = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|delay| Utc::now().checked_add_signed(delay))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.deliver_at(at)
    }

    /// When the event is due, if it was given a due time.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        self.deliver_at
    }

    /// Whether it waits for a due time later than `now`.
    pub(crate) fn waits(&self, now: DateTime<Utc>) -> bool {
        self.deliver_at.is_some_and(|at| at > now)
    }

    /// Whether the event is a tombstone, published with a null value.
    pub fn is_tombstone(&self) -> bool {
        self.tombstone
    }

    /// The event's id, which travels in the `event_id` header.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The key that orders the event and becomes the Kafka message key: the partition
    /// key when one is set, otherwise the aggregate id.
    pub fn key(&self) -> &str {
        self.partition_key.as_deref().unwrap_or(&self.aggregate_id)
    }

    /// Checks every field against the table's limits and Kafka's rules.
    pub(crate) fn validate(&self) -> Result<()> {
        non_empty(EventField::EventType, &self.event_type)?;
        max_len(EventField::EventType, &self.event_type, MAX_NAME_LEN)?;
        non_empty(EventField::EventVersion, &self.event_version)?;
        max_len(
            EventField::EventVersion,
            &self.event_version,
            MAX_VERSION_LEN,
        )?;
        non_empty(EventField::AggregateId, &self.aggregate_id)?;
        max_len(EventField::AggregateId, &self.aggregate_id, MAX_NAME_LEN)?;
        validate_topic(&self.topic)?;
        if let Some(key) = &self.partition_key {
            non_empty(EventField::PartitionKey, key)?;
            max_len(EventField::PartitionKey, key, MAX_NAME_LEN)?;
        }
        if let Some(user_id) = &self.user_id {
            max_len(EventField::UserId, user_id, MAX_NAME_LEN)?;
        }
        if let Some(trace_id) = &self.trace_id {
            max_len(EventField::TraceId, trace_id, MAX_NAME_LEN)?;
        }
        for name in self.headers.keys() {
            validate_header_name(name)?;
        }
        if let Some(deliver_at) = self.deliver_at {
            let latest = chrono::Duration::from_std(MAX_DELAY)
                .ok()
                .and_then(|max| Utc::now().checked_add_signed(max));
            if latest.is_none_or(|latest| deliver_at > latest) {
                return Err(Error::DueTooLate {
                    id: self.id,
                    deliver_at,
                    max: MAX_DELAY,
                });
            }
        }
        self.refuse_nul()
    }

    /// PostgreSQL stores no NUL character in text or JSONB; refusing it here keeps the
    /// caller's transaction usable.
    fn refuse_nul(&self) -> Result<()> {
        let fields = [
            (EventField::EventType, Some(&self.event_type)),
            (EventField::EventVersion, Some(&self.event_version)),
            (EventField::AggregateId, Some(&self.aggregate_id)),
            (EventField::Topic, Some(&self.topic)),
            (EventField::PartitionKey, self.partition_key.as_ref()),
            (EventField::UserId, self.user_id.as_ref()),
            (EventField::TraceId, self.trace_id.as_ref()),
        ];
        for (field, value) in fields {
            if value.is_some_and(|v| v.contains('\0')) {
                return Err(Error::NulCharacter { field });
            }
        }
        if self
            .headers
            .iter()
            .any(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            return Err(Error::NulCharacter {
                field: EventField::Headers,
            });
        }
        if json_has_nul(&self.payload) {
            return Err(Error::NulCharacter {
                field: EventField::Payload,
            });
        }
        Ok(())
    }
}

fn json_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || json_has_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn non_empty(field: EventField, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::EmptyField { field });
    }
    Ok(())
}

fn max_len(field: EventField, value: &str, max: usize) -> Result<()> {
    // Cheap bound first: a string of at most `max` bytes has at most `max` characters.
    if value.len() > max {
        let len = value.chars().count();
        if len > max {
            return Err(Error::FieldTooLong { field, len, max });
        }
    }
    Ok(())
}

fn validate_topic(topic: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        })
    };
    if topic.is_empty() {
        return invalid("it is empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return invalid(TOPIC_TOO_LONG);
    }
    if topic == "." || topic == ".." {
        return invalid("Kafka does not allow `.` or `..` as a topic name");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("Kafka allows only ASCII letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

fn validate_header_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidHeader {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if headers::is_reserved(name) {
        return invalid("the relay sets this header itself (in one of its message formats)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventBuilder;

    fn envelope() -> Envelope {
        Envelope::new(&EventBuilder::new("order.created", "o-1"), "orders").expect("serializable")
    }

    #[test]
    fn a_complete_envelope_is_valid() {
        let envelope = envelope()
            .partition_key("c-1")
            .user_id("u")
            .trace_id("t")
            .header("tenant", "acme");
        assert!(envelope.validate().is_ok());
        assert_eq!(envelope.key(), "c-1");
    }

    #[test]
    fn topics_follow_kafka_rules() {
        for (topic, ok) in [
            ("orders", true),
            ("orders.v2_eu-west", true),
            ("", false),
            (".", false),
            ("..", false),
            ("orders events", false),
            ("orders/events", false),
            ("ordérs", false),
        ] {
            let result = Envelope {
                topic: topic.to_owned(),
                ..envelope()
            }
            .validate();
            assert_eq!(result.is_ok(), ok, "{topic:?}: {result:?}");
        }
        let long = "t".repeat(MAX_TOPIC_LEN + 1);
        assert!(
            Envelope {
                topic: long,
                ..envelope()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        let fits = "é".repeat(MAX_NAME_LEN);
        assert!(envelope().partition_key(&fits).validate().is_ok());
        let too_long = "é".repeat(MAX_NAME_LEN + 1);
        match envelope().partition_key(&too_long).validate() {
            Err(Error::FieldTooLong { field, len, max }) => {
                assert_eq!((field, len, max), (EventField::PartitionKey, 256, 255));
            }
            other => panic!("expected FieldTooLong, got {other:?}"),
        }
    }

    #[test]
    fn nul_characters_are_refused_wherever_they_hide() {
        let cases = [
            (envelope().partition_key("a\0b"), EventField::PartitionKey),
            (envelope().user_id("\0"), EventField::UserId),
            (envelope().trace_id("t\0"), EventField::TraceId),
            (envelope().header("tenant", "ac\0me"), EventField::Headers),
            (envelope().header("ten\0ant", "acme"), EventField::Headers),
            (
                Envelope {
                    payload: serde_json::json!({ "deep": [{ "text": "x\u{0}y" }] }),
                    ..envelope()
                },
                EventField::Payload,
            ),
            (
                Envelope {
                    payload: serde_json::json!({ "k\u{0}": 1 }),
                    ..envelope()
                },
                EventField::Payload,
            ),
        ];
        for (envelope, expected) in cases {
            match envelope.validate() {
                Err(Error::NulCharacter { field }) => assert_eq!(field, expected),
                other => panic!("expected a NUL error for {expected}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_tombstone_is_stored_without_data_and_refused_with_some() {
        let forgotten = crate::EventBuilder::new("customer.forgotten", "customer-4").tombstone();
        let envelope = Envelope::new(&forgotten, "customers").expect("a tombstone");
        assert!(envelope.is_tombstone());
        assert_eq!(envelope.payload, serde_json::Value::Null);
        assert!(
            !Envelope::new(&crate::EventBuilder::new("a", "b"), "t")
                .expect("an event")
                .is_tombstone()
        );

        let with_data = forgotten.data(serde_json::json!({ "email": "ada@example.com" }));
        match Envelope::new(&with_data, "customers") {
            Err(Error::TombstoneWithData { event_type }) => {
                assert_eq!(event_type, "customer.forgotten");
            }
            other => panic!("expected TombstoneWithData, got {other:?}"),
        }
    }

    #[test]
    fn reserved_header_names_are_rejected() {
        let result = envelope().header(headers::EVENT_ID, "forged").validate();
        assert!(matches!(result, Err(Error::InvalidHeader { name, .. }) if name == "event_id"));
    }
}
