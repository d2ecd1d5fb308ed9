//! [`MessageFormat`]: how an event is written as a Kafka message, and [`Encoding`],
//! a format with what it needs (the CloudEvents `source`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// How the relay writes an event as a Kafka message. Every format keeps the key (the
/// partition key, or the aggregate id) and so the per-key order; the consumer of this
/// crate reads them all, telling them apart message by message, so a topic can move
/// from one to another during a rolling deploy.
///
/// | format | value | event id | type | version |
/// |---|---|---|---|---|
/// | `native` | the payload | `event_id` | `event_type` | `event_version` |
/// | `cloudevents-binary` | the payload | `ce_id` | `ce_type` | `ce_eventversion` |
/// | `cloudevents-structured` | a CloudEvents JSON object, the payload in `data` | `id` | `type` | `eventversion` |
/// | `debezium` | the payload | `id` | `eventType` | `eventVersion` |
///
/// `docs/formats.md` in the repository maps every field, and shows consumers in other
/// languages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageFormat {
    /// This crate's own headers ([`headers`](crate::headers)).
    #[default]
    Native,
    /// The CloudEvents 1.0 Kafka protocol binding, binary content mode: the attributes
    /// in `ce_` headers, the payload as the value.
    CloudEventsBinary,
    /// The CloudEvents 1.0 Kafka protocol binding, structured content mode: the event
    /// as one JSON value (`content-type: application/cloudevents+json`).
    CloudEventsStructured,
    /// What Debezium's outbox event router emits: the event id in the `id` header, the
    /// payload as the value.
    Debezium,
}

impl MessageFormat {
    /// Every format, in the order of the table above.
    pub const ALL: [MessageFormat; 4] = [
        MessageFormat::Native,
        MessageFormat::CloudEventsBinary,
        MessageFormat::CloudEventsStructured,
        MessageFormat::Debezium,
    ];

    /// Its name in settings: `native`, `cloudevents-binary`, `cloudevents-structured`
    /// or `debezium`.
    pub fn name(self) -> &'static str {
        match self {
            MessageFormat::Native => "native",
            MessageFormat::CloudEventsBinary => "cloudevents-binary",
            MessageFormat::CloudEventsStructured => "cloudevents-structured",
            MessageFormat::Debezium => "debezium",
        }
    }
}

impl fmt::Display for MessageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`MessageFormat`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown message format {0:?}: expected native, cloudevents-binary, cloudevents-structured or debezium"
)]
pub struct UnknownFormat(pub String);

impl FromStr for MessageFormat {
    type Err = UnknownFormat;

    fn from_str(name: &str) -> Result<Self, UnknownFormat> {
        MessageFormat::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownFormat(name.to_owned()))
    }
}

/// A format with what it needs: the relay gives one to every message it claims
/// ([`Message::encoding`](crate::Message::encoding)), and publishers write the message
/// in it ([`Message::headers`](crate::Message::headers),
/// [`Message::value`](crate::Message::value)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    format: MessageFormat,
    source: Arc<str>,
}

impl Encoding {
    /// `format`, with `source` as the CloudEvents `source` attribute (a URI-reference,
    /// e.g. `/billing` or `https://example.com/billing`; unused by other formats).
    pub fn new(format: MessageFormat, source: impl Into<Arc<str>>) -> Self {
        Encoding {
            format,
            source: source.into(),
        }
    }

    /// The native format.
    pub fn native() -> Self {
        Encoding::new(MessageFormat::Native, "/outbox")
    }

    /// The format.
    pub fn format(&self) -> MessageFormat {
        self.format
    }

    /// The CloudEvents `source`.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding::native()
    }
}

/// The encodings of a relay: one for every topic, but those named otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Encodings {
    default: Encoding,
    by_topic: BTreeMap<String, Encoding>,
}

impl Encodings {
    /// `format` for every topic but those in `by_topic`, with CloudEvents `source`.
    pub(crate) fn new(
        format: MessageFormat,
        by_topic: &BTreeMap<String, MessageFormat>,
        source: &str,
    ) -> Self {
        let source: Arc<str> = source.into();
        let encoding = |format| Encoding::new(format, Arc::clone(&source));
        Encodings {
            default: encoding(format),
            by_topic: by_topic
                .iter()
                .map(|(topic, &format)| (topic.clone(), encoding(format)))
                .collect(),
        }
    }

    /// The encoding of messages to `topic`.
    pub(crate) fn of(&self, topic: &str) -> &Encoding {
        self.by_topic.get(topic).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_named_in_settings_and_unknown_names_are_refused() {
        for format in MessageFormat::ALL {
            assert_eq!(format.name().parse::<MessageFormat>(), Ok(format));
        }
        assert_eq!(
            " CloudEvents-Binary".parse::<MessageFormat>(),
            Ok(MessageFormat::CloudEventsBinary)
        );
        let error = "avro".parse::<MessageFormat>().expect_err("not a format");
        assert!(error.to_string().contains("\"avro\""), "{error}");
    }

    #[test]
    fn a_topic_named_otherwise_gets_its_own_format() {
        let by_topic = BTreeMap::from([("orders".to_owned(), MessageFormat::Debezium)]);
        let encodings = Encodings::new(MessageFormat::CloudEventsBinary, &by_topic, "/shop");
        assert_eq!(encodings.of("orders").format(), MessageFormat::Debezium);
        assert_eq!(
            encodings.of("users").format(),
            MessageFormat::CloudEventsBinary
        );
        assert_eq!(encodings.of("users").source(), "/shop");
    }
}
