//! [`Said`]: what a received message says about its event, in whichever
//! [`MessageFormat`] it came. The format is told apart message by message:
//!
//! 1. `content-type: application/cloudevents+json`: CloudEvents, structured mode;
//! 2. a `ce_specversion` header: CloudEvents, binary mode;
//! 3. an `event_id` header: native;
//! 4. an `id` header: Debezium;
//!
//! and anything else is read as native, which then lacks `event_id`.
//!
//! A message with a null value is a tombstone in every format but structured
//! CloudEvents (where the value is the event; the relay writes tombstones in binary
//! mode there).

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::wire::cloudevents;
use crate::wire::format::MessageFormat;
use crate::wire::headers::{self, debezium};

/// What a message says about its event. Fields it does not carry are `None`; the
/// names say where each was to be found, for errors.
#[derive(Debug)]
pub(crate) struct Said<'m> {
    pub(crate) format: MessageFormat,
    pub(crate) event_id: Option<String>,
    pub(crate) event_type: Option<String>,
    pub(crate) event_version: Option<String>,
    /// A trace id given as such (native `trace_id`, CloudEvents `traceid`).
    pub(crate) trace_id: Option<String>,
    pub(crate) traceparent: Option<String>,
    /// Read by the OpenTelemetry propagation only.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) tracestate: Option<String>,
    /// The aggregate id, where the format carries it apart from the key (native
    /// `aggregate_id`, CloudEvents `subject`).
    pub(crate) aggregate_id: Option<String>,
    /// The payload (`None`: a tombstone, published with a null value), or why there is
    /// none to read.
    pub(crate) payload: Result<Option<Cow<'m, [u8]>>, &'static str>,
    pub(crate) names: Names,
}

/// Where a format keeps the event's id, type and version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names {
    pub(crate) event_id: &'static str,
    pub(crate) event_type: &'static str,
    pub(crate) event_version: &'static str,
    pub(crate) aggregate_id: &'static str,
}

impl<'m> Said<'m> {
    /// Reads a message with UTF-8 `headers` and `value`.
    pub(crate) fn read(headers: &BTreeMap<String, String>, value: Option<&'m [u8]>) -> Self {
        let mut said = Self::read_format(headers, value);
        // Stored from OpenTelemetry as an extra header, in every format.
        if said.tracestate.is_none() {
            said.tracestate = headers.get(headers::TRACESTATE).cloned();
        }
        said
    }

    fn read_format(headers: &BTreeMap<String, String>, value: Option<&'m [u8]>) -> Self {
        let content_type = headers.get(headers::cloudevents::CONTENT_TYPE);
        if content_type.is_some_and(|ct| ct.starts_with(headers::cloudevents::STRUCTURED)) {
            return Self::structured(value);
        }
        if headers.contains_key(headers::cloudevents::SPECVERSION) {
            return Self::cloudevents(
                MessageFormat::CloudEventsBinary,
                cloudevents::binary_attributes(headers),
                Ok(value.map(Cow::Borrowed)),
                names::BINARY,
            );
        }
        if !headers.contains_key(headers::EVENT_ID) && headers.contains_key(debezium::ID) {
            return Self::debezium(headers, value);
        }
        Self::native(headers, value)
    }

    fn native(headers: &BTreeMap<String, String>, value: Option<&'m [u8]>) -> Self {
        let get = |name: &str| headers.get(name).cloned();
        Said {
            format: MessageFormat::Native,
            event_id: get(headers::EVENT_ID),
            event_type: get(headers::EVENT_TYPE),
            event_version: get(headers::EVENT_VERSION),
            trace_id: get(headers::TRACE_ID),
            traceparent: get(headers::TRACEPARENT),
            tracestate: None,
            aggregate_id: get(headers::AGGREGATE_ID),
            payload: Ok(value.map(Cow::Borrowed)),
            names: names::NATIVE,
        }
    }

    fn debezium(headers: &BTreeMap<String, String>, value: Option<&'m [u8]>) -> Self {
        let get = |name: &str| headers.get(name).cloned();
        Said {
            format: MessageFormat::Debezium,
            event_id: get(debezium::ID),
            event_type: get(debezium::EVENT_TYPE),
            event_version: get(debezium::EVENT_VERSION),
            trace_id: None,
            traceparent: get(debezium::TRACEPARENT),
            tracestate: None,
            aggregate_id: None,
            payload: Ok(value.map(Cow::Borrowed)),
            names: names::DEBEZIUM,
        }
    }

    fn structured(value: Option<&'m [u8]>) -> Self {
        match cloudevents::structured(value) {
            Ok(event) => Self::cloudevents(
                MessageFormat::CloudEventsStructured,
                event.attributes,
                Ok(Some(Cow::Owned(event.data.unwrap_or_default()))),
                names::STRUCTURED,
            ),
            Err(reason) => Self::cloudevents(
                MessageFormat::CloudEventsStructured,
                BTreeMap::new(),
                Err(reason),
                names::STRUCTURED,
            ),
        }
    }

    fn cloudevents(
        format: MessageFormat,
        mut attributes: BTreeMap<String, String>,
        payload: Result<Option<Cow<'m, [u8]>>, &'static str>,
        names: Names,
    ) -> Self {
        let mut take = |name: &str| attributes.remove(name);
        Said {
            format,
            event_id: take("id"),
            event_type: take("type"),
            event_version: take("eventversion"),
            trace_id: take("traceid"),
            traceparent: take("traceparent"),
            tracestate: take("tracestate"),
            aggregate_id: take("subject"),
            payload,
            names,
        }
    }

    /// The trace id: the one given as such, else the one in the `traceparent`.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref().or_else(|| {
            self.traceparent
                .as_deref()
                .and_then(|traceparent| traceparent.split('-').nth(1))
                .filter(|id| id.len() == 32)
        })
    }
}

/// Each format's [`Names`].
mod names {
    use super::Names;
    use crate::wire::headers::{self, cloudevents, debezium};

    pub(super) const NATIVE: Names = Names {
        event_id: headers::EVENT_ID,
        event_type: headers::EVENT_TYPE,
        event_version: headers::EVENT_VERSION,
        aggregate_id: headers::AGGREGATE_ID,
    };
    pub(super) const BINARY: Names = Names {
        event_id: cloudevents::ID,
        event_type: cloudevents::TYPE,
        event_version: cloudevents::EVENTVERSION,
        aggregate_id: cloudevents::SUBJECT,
    };
    pub(super) const STRUCTURED: Names = Names {
        event_id: "id",
        event_type: "type",
        event_version: "eventversion",
        aggregate_id: "subject",
    };
    pub(super) const DEBEZIUM: Names = Names {
        event_id: debezium::ID,
        event_type: debezium::EVENT_TYPE,
        event_version: debezium::EVENT_VERSION,
        aggregate_id: "key",
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::sample as message;

    #[test]
    fn every_format_reads_back_as_written() {
        for format in MessageFormat::ALL {
            let message = message(format);
            let headers: BTreeMap<String, String> = message
                .headers()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            let value = message.value().expect("a value");
            let said = Said::read(&headers, Some(value.as_bytes()));
            assert_eq!(said.format, format);
            assert_eq!(said.event_id, Some(message.id.to_string()), "{format}");
            assert_eq!(
                said.event_type.as_deref(),
                Some("order.created"),
                "{format}"
            );
            assert_eq!(said.event_version.as_deref(), Some("v2"), "{format}");
            assert_eq!(
                said.trace_id(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
                "{format}"
            );
            let payload = said.payload.expect("a payload").expect("not a tombstone");
            let payload: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
            assert_eq!(payload, serde_json::json!({ "amount": 4200 }), "{format}");
        }
    }

    #[test]
    fn a_tombstone_reads_back_in_every_format_with_its_aggregate() {
        for format in MessageFormat::ALL {
            let mut message = message(format);
            message.tombstone = true;
            message.payload = "null".to_owned();
            assert_eq!(message.value(), None, "{format}: a null value");
            let headers: BTreeMap<String, String> = message
                .headers()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            let said = Said::read(&headers, None);
            let written = match format {
                MessageFormat::CloudEventsStructured => MessageFormat::CloudEventsBinary,
                other => other,
            };
            assert_eq!(said.format, written);
            assert_eq!(said.event_id, Some(message.id.to_string()), "{format}");
            assert_eq!(said.event_type.as_deref(), Some("order.created"));
            assert!(matches!(said.payload, Ok(None)), "{format}: a tombstone");
            let aggregate = (format != MessageFormat::Debezium).then_some("order-17");
            assert_eq!(said.aggregate_id.as_deref(), aggregate, "{format}");
            assert!(
                !headers.contains_key("content-type"),
                "{format}: no data, no content type"
            );
        }
    }

    #[test]
    fn a_structured_value_that_is_not_a_json_object_says_why() {
        let headers = BTreeMap::from([(
            "content-type".to_owned(),
            "application/cloudevents+json; charset=utf-8".to_owned(),
        )]);
        let said = Said::read(&headers, Some(b"[1, 2]"));
        assert_eq!(said.format, MessageFormat::CloudEventsStructured);
        assert_eq!(said.payload.expect_err("no payload"), "not a JSON object");
        assert_eq!(said.event_id, None);
    }
}
