//! [`Received`]: an event read back from a Kafka message the relay published.

use std::collections::BTreeMap;
use std::ops::Deref;

use rdkafka::message::{Headers, Message};
use uuid::Uuid;

use crate::decode::DecodeEvent;
use crate::error::{Error, Result};
use crate::wire::format::MessageFormat;
use crate::wire::headers;
use crate::wire::said::Said;

/// An event received from Kafka, decoded into `E`, with what the message said about it.
///
/// It dereferences to the event. Build one from any rdkafka message with
/// [`Received::decode`]; the `event_id` it carries is what an
/// [`Inbox`](crate::Inbox) records.
#[derive(Debug, Clone, PartialEq)]
pub struct Received<E> {
    event: E,
    event_id: Uuid,
    event_type: String,
    event_version: String,
    format: MessageFormat,
    tombstone: bool,
    trace_id: Option<String>,
    traceparent: Option<String>,
    key: Option<String>,
    topic: String,
    partition: i32,
    offset: i64,
    headers: BTreeMap<String, String>,
}

impl<E: DecodeEvent> Received<E> {
    /// Reads `message` in whichever [`MessageFormat`] it came (told apart by its
    /// headers, see [`MessageFormat`]): its event id, type and version, and its payload
    /// decoded into `E` by type and version. Headers whose value is not UTF-8 are left
    /// out of [`headers`](Self::headers).
    ///
    /// # Errors
    /// [`Error::ReceivedHeader`] when the event id, type or version is missing or
    /// invalid (named as the message's format names it, e.g. `event_id` or `ce_id`);
    /// [`Error::UnknownEvent`] when `E` has no place for the event's type and
    /// version; [`Error::Deserialize`] when the payload does not fit;
    /// [`Error::UnexpectedTombstone`] for a tombstone (a null value) of a type `E`
    /// does not read as one ([`DecodeEvent::decode_tombstone`]).
    pub fn decode<M: Message>(message: &M) -> Result<Self> {
        let all = utf8_headers(message);
        let said = Said::read(&all, message.payload());
        Self::from_said(message, &said, all)
    }

    /// [`decode`](Self::decode) from what was read of `message` already: `said` of
    /// its UTF-8 headers `all`.
    pub(crate) fn from_said<M: Message>(
        message: &M,
        said: &Said<'_>,
        all: BTreeMap<String, String>,
    ) -> Result<Self> {
        let required = |value: &Option<String>, header: &'static str| {
            value.clone().ok_or(Error::ReceivedHeader {
                header,
                reason: "missing, or not UTF-8",
            })
        };
        let names = said.names;
        let event_id =
            Uuid::parse_str(&required(&said.event_id, names.event_id)?).map_err(|_| {
                Error::ReceivedHeader {
                    header: names.event_id,
                    reason: "not a UUID",
                }
            })?;
        let event_type = required(&said.event_type, names.event_type)?;
        let event_version = required(&said.event_version, names.event_version)?;
        let payload = match &said.payload {
            Ok(payload) => payload.as_deref(),
            Err(reason) => {
                return Err(Error::ReceivedHeader {
                    header: headers::cloudevents::CONTENT_TYPE,
                    reason,
                });
            }
        };
        let key = message
            .key()
            .and_then(|key| std::str::from_utf8(key).ok())
            .map(str::to_owned);
        let event = match payload {
            Some(payload) => E::decode(&event_type, &event_version, payload)?,
            None => {
                let aggregate_id = said.aggregate_id.as_ref().or(key.as_ref());
                let aggregate_id = required(&aggregate_id.cloned(), names.aggregate_id)?;
                let key = key.as_deref().unwrap_or(&aggregate_id);
                E::decode_tombstone(&event_type, &event_version, &aggregate_id, key)?
            }
        };
        Ok(Received {
            event,
            event_id,
            event_type,
            event_version,
            format: said.format,
            tombstone: payload.is_none(),
            trace_id: said.trace_id().map(str::to_owned),
            traceparent: said.traceparent.clone(),
            key,
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            headers: all,
        })
    }
}

/// The message's headers whose values are UTF-8, by name.
pub(crate) fn utf8_headers<M: Message>(message: &M) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            if let Some(Ok(value)) = header.value.map(std::str::from_utf8) {
                all.insert(header.key.to_owned(), value.to_owned());
            }
        }
    }
    all
}

impl<E> Received<E> {
    /// The event.
    pub fn event(&self) -> &E {
        &self.event
    }

    /// The event, owned.
    pub fn into_event(self) -> E {
        self.event
    }

    /// The event's id (the `event_id` header, or its format's equivalent): the same
    /// on every delivery.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// The event's type (the `event_type` header, or its format's equivalent).
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The payload's version (the `event_version` header, or its format's equivalent).
    pub fn event_version(&self) -> &str {
        &self.event_version
    }

    /// Whether the event is a tombstone: its message had a null value, and the event
    /// was read from its keys alone ([`DecodeEvent::decode_tombstone`]).
    pub fn is_tombstone(&self) -> bool {
        self.tombstone
    }

    /// The format the message came in.
    pub fn format(&self) -> MessageFormat {
        self.format
    }

    /// The W3C trace context the event carries (`traceparent`, `ce_traceparent`, or
    /// the structured event's `traceparent`).
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The message key (the partition key, or the aggregate id), when it is UTF-8.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The topic the message came from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition the message came from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The message's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// A header's value, e.g. [`headers::TRACEPARENT`] or one given at store time.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The trace id the event carries: its `trace_id` header (CloudEvents: `traceid`),
    /// or the trace id of its `traceparent`. Give it to the events you store while handling this one
    /// ([`Store::trace_id`](crate::Store::trace_id)) to continue the trace.
    pub fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }

    /// Every UTF-8 header of the message, by name.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }
}

impl<E> Deref for Received<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
    use serde_json::json;

    use super::*;
    use crate::EventBuilder;

    /// A decodable event for the tests: any `note.*` type, version `v1`, its payload
    /// kept as JSON.
    #[derive(Debug, Clone, PartialEq)]
    struct Note(serde_json::Value);

    impl DecodeEvent for Note {
        fn accepts(event_type: &str, event_version: &str) -> bool {
            event_type.starts_with("note.") && event_version == "v1"
        }

        fn decode(event_type: &str, event_version: &str, payload: &[u8]) -> Result<Self> {
            let accepted = Self::accepts(event_type, event_version);
            crate::decode::decode_struct(accepted, event_type, event_version, payload).map(Note)
        }
    }

    /// The message the relay would publish for `message`.
    fn published(message: &crate::Message) -> OwnedMessage {
        let mut headers = OwnedHeaders::new();
        for (key, value) in message.headers() {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        OwnedMessage::new(
            Some(message.payload.clone().into_bytes()),
            Some(message.key.clone().into_bytes()),
            message.topic.clone(),
            Timestamp::now(),
            3,
            42,
            Some(headers),
        )
    }

    fn stored(event_type: &str) -> crate::Message {
        let event = EventBuilder::new(event_type, "note-1").data(json!({ "text": "hi" }));
        let envelope = crate::Envelope::new(&event, "notes")
            .expect("envelope")
            .partition_key("tenant-7")
            .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
            .header("tenant", "acme");
        crate::Message {
            seq: 1,
            id: envelope.id(),
            event_type: event_type.to_owned(),
            event_version: "v1".to_owned(),
            aggregate_id: "note-1".to_owned(),
            topic: "notes".to_owned(),
            key: envelope.key().to_owned(),
            payload: r#"{"text": "hi"}"#.to_owned(),
            extra_headers: vec![("tenant".to_owned(), "acme".to_owned())],
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
            user_id: None,
            created_at: Utc::now(),
            attempts: 0,
            tombstone: false,
            encoding: crate::Encoding::native(),
        }
    }

    #[test]
    fn reads_what_the_relay_publishes() {
        let message = stored("note.added");
        let received = Received::<Note>::decode(&published(&message)).expect("decode");
        assert_eq!(received.event(), &Note(json!({ "text": "hi" })));
        assert_eq!(received.event_id(), message.id);
        assert_eq!(
            (received.event_type(), received.event_version()),
            ("note.added", "v1")
        );
        assert_eq!(received.key(), Some("tenant-7"));
        assert_eq!(
            (received.topic(), received.partition(), received.offset()),
            ("notes", 3, 42)
        );
        assert_eq!(received.header("tenant"), Some("acme"));
        assert!(received.header(headers::TRACEPARENT).is_some());
        assert_eq!(received.0, json!({ "text": "hi" }), "derefs to the event");
    }

    #[test]
    fn a_type_the_event_has_no_place_for_is_unknown() {
        let received = Received::<Note>::decode(&published(&stored("user.added")));
        assert!(
            matches!(&received, Err(Error::UnknownEvent { event_type, .. }) if event_type == "user.added"),
            "{received:?}"
        );
    }

    #[test]
    fn missing_or_invalid_headers_are_named() {
        let message = published(&stored("note.added"));
        let without = |skip: &str, replace: Option<&str>| {
            let mut headers = OwnedHeaders::new();
            for header in message.headers().expect("headers").iter() {
                if header.key == skip {
                    if let Some(value) = replace {
                        headers = headers.insert(Header {
                            key: header.key,
                            value: Some(value.as_bytes()),
                        });
                    }
                    continue;
                }
                headers = headers.insert(header);
            }
            message.clone().replace_headers(Some(headers))
        };
        for (header, replace, reason) in [
            (headers::EVENT_ID, None, "missing, or not UTF-8"),
            (headers::EVENT_ID, Some("17"), "not a UUID"),
            (headers::EVENT_TYPE, None, "missing, or not UTF-8"),
            (headers::EVENT_VERSION, None, "missing, or not UTF-8"),
        ] {
            match Received::<Note>::decode(&without(header, replace)) {
                Err(Error::ReceivedHeader {
                    header: h,
                    reason: r,
                }) => {
                    assert_eq!((h, r), (header, reason));
                }
                other => panic!("{header} {replace:?}: {other:?}"),
            }
        }
    }
}
