//! The CloudEvents 1.0 Kafka protocol binding: writing an event in binary or
//! structured content mode, and reading it back.
//!
//! | attribute | binary mode | from |
//! |---|---|---|
//! | `specversion` | `ce_specversion` | `1.0` |
//! | `id` | `ce_id` | the event id |
//! | `source` | `ce_source` | the relay's `cloudevents_source` |
//! | `type` | `ce_type` | the event type |
//! | `time` | `ce_time` | when it was stored |
//! | `subject` | `ce_subject` | the aggregate id |
//! | `datacontenttype` | `content-type` | `application/json` |
//! | `eventversion` (extension) | `ce_eventversion` | the event version |
//! | `userid` (extension) | `ce_userid` | the user id, when set |
//! | `traceparent` (distributed tracing) | `ce_traceparent` | the W3C trace context, when the trace id is one |
//! | `tracestate` (distributed tracing) | `ce_tracestate` | the stored `tracestate`, beside a `traceparent` |
//! | `traceid` (extension) | `ce_traceid` | any other trace id |
//!
//! The Kafka key is the partition key in both modes, as in every format.
//!
//! A tombstone is an event without data: in binary mode, its attributes without
//! `datacontenttype`, and a null value. Structured mode has no null value to give (the
//! value is the event), so a tombstone is written in binary mode there too; readers
//! tell the two modes apart message by message, as the binding requires.

#[cfg(feature = "kafka")] // reading is the consumer's
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::wire::Message;
use crate::wire::headers::TRACESTATE as TRACESTATE_HEADER;
#[cfg(feature = "kafka")]
use crate::wire::headers::cloudevents::PREFIX;
use crate::wire::headers::cloudevents::{
    CONTENT_TYPE, EVENTVERSION, ID, JSON, SOURCE, SPECVERSION, STRUCTURED, SUBJECT, TIME, TRACEID,
    TRACEPARENT, TRACESTATE, TYPE, USERID,
};

/// The CloudEvents version written.
const VERSION: &str = "1.0";

/// Every attribute of `message` but its data, by attribute name.
fn attributes(message: &Message) -> Vec<(&'static str, String)> {
    let mut all = vec![
        ("specversion", VERSION.to_owned()),
        ("id", message.id.to_string()),
        ("source", message.encoding.source().to_owned()),
        ("type", message.event_type.clone()),
        ("time", message.time()),
        ("subject", message.aggregate_id.clone()),
        ("eventversion", message.event_version.clone()),
    ];
    if !message.tombstone {
        all.push(("datacontenttype", JSON.to_owned()));
    }
    if let Some(user_id) = &message.user_id {
        all.push(("userid", user_id.clone()));
    }
    match (message.traceparent(), &message.trace_id) {
        (Some(traceparent), _) => {
            all.push(("traceparent", traceparent));
            if let Some(state) = message.extra_header(TRACESTATE_HEADER) {
                all.push(("tracestate", state.to_owned()));
            }
        }
        (None, Some(trace_id)) => all.push(("traceid", trace_id.clone())),
        (None, None) => {}
    }
    all
}

/// Whether the extra header `name` travels as an attribute in these formats instead:
/// the `tracestate` stored from OpenTelemetry, beside its `traceparent`.
pub(crate) fn is_attribute(message: &Message, name: &str) -> bool {
    name == TRACESTATE_HEADER && message.traceparent().is_some()
}

/// The header an attribute travels in, in binary mode.
fn header_of(attribute: &str) -> &'static str {
    match attribute {
        "specversion" => SPECVERSION,
        "id" => ID,
        "source" => SOURCE,
        "type" => TYPE,
        "time" => TIME,
        "subject" => SUBJECT,
        "datacontenttype" => CONTENT_TYPE,
        "eventversion" => EVENTVERSION,
        "userid" => USERID,
        "traceparent" => TRACEPARENT,
        "tracestate" => TRACESTATE,
        _ => TRACEID,
    }
}

/// The headers of `message` in binary content mode.
pub(crate) fn binary_headers(message: &Message) -> Vec<(&'static str, String)> {
    attributes(message)
        .into_iter()
        .map(|(attribute, value)| (header_of(attribute), value))
        .collect()
}

/// The headers of a message in structured content mode.
pub(crate) fn structured_headers() -> Vec<(&'static str, String)> {
    vec![(CONTENT_TYPE, STRUCTURED.to_owned())]
}

/// The value of `message` in structured content mode: its attributes and, in `data`,
/// its payload as stored (spliced in, not parsed again).
pub(crate) fn structured_value(message: &Message) -> String {
    let attributes: Map<String, Value> = attributes(message)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Value::String(value)))
        .collect();
    let mut json = Value::Object(attributes).to_string();
    json.pop(); // the closing brace
    json.reserve(message.payload.len() + 9);
    json.push_str(",\"data\":");
    json.push_str(&message.payload);
    json.push('}');
    json
}

/// What a binary-mode message's `headers` say: its attributes, by attribute name.
#[cfg(feature = "kafka")]
pub(crate) fn binary_attributes(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let attribute = name.strip_prefix(PREFIX)?;
            Some((attribute.to_owned(), value.clone()))
        })
        .collect()
}

/// A structured-mode message, read.
#[cfg(feature = "kafka")]
pub(crate) struct Structured {
    /// The string-valued attributes, by name.
    pub(crate) attributes: BTreeMap<String, String>,
    /// `data`, as JSON text.
    pub(crate) data: Option<Vec<u8>>,
}

/// Reads a structured-mode message's `value`; `Err` says why it is not a CloudEvent
/// in JSON.
#[cfg(feature = "kafka")]
pub(crate) fn structured(value: Option<&[u8]>) -> Result<Structured, &'static str> {
    let value = value.ok_or("empty (a tombstone)")?;
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(value) else {
        return Err("not a JSON object");
    };
    let data = event
        .remove("data")
        .map(|data| serde_json::to_vec(&data).unwrap_or_default());
    let attributes = event
        .into_iter()
        .filter_map(|(name, value)| match value {
            Value::String(text) => Some((name, text)),
            _ => None,
        })
        .collect();
    Ok(Structured { attributes, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::format::{Encoding, MessageFormat};
    use crate::wire::message::sample as message;

    #[test]
    fn binary_mode_puts_every_attribute_in_a_ce_header_and_the_payload_in_the_value() {
        let message = message(MessageFormat::CloudEventsBinary);
        let headers: BTreeMap<&str, String> = message.headers().into_iter().collect();
        assert_eq!(headers["ce_specversion"], "1.0");
        assert_eq!(headers["ce_id"], message.id.to_string());
        assert_eq!(headers["ce_source"], "/shop");
        assert_eq!(headers["ce_type"], "order.created");
        assert_eq!(headers["ce_time"], "2026-12-05T10:00:00.000000Z");
        assert_eq!(headers["ce_subject"], "order-17");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["ce_eventversion"], "v2");
        assert_eq!(headers["ce_userid"], "u-1");
        assert!(headers["ce_traceparent"].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_eq!(headers["source-system"], "shop");
        assert_eq!(headers.len(), 11, "{headers:?}");
        assert_eq!(message.value().as_deref(), Some(r#"{"amount":4200}"#));
    }

    #[test]
    fn structured_mode_writes_one_json_event_with_the_payload_as_data() {
        let message = message(MessageFormat::CloudEventsStructured);
        let headers = message.headers();
        assert_eq!(
            headers[0],
            ("content-type", "application/cloudevents+json".to_owned())
        );
        let value = message.value().expect("a value");
        let event: Value = serde_json::from_str(&value).expect("JSON");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], message.id.to_string());
        assert_eq!(event["type"], "order.created");
        assert_eq!(event["subject"], "order-17");
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["eventversion"], "v2");
        assert_eq!(event["data"], serde_json::json!({ "amount": 4200 }));
    }

    #[test]
    fn a_stored_tracestate_is_an_attribute_not_a_header() {
        let mut message = message(MessageFormat::CloudEventsBinary);
        message
            .extra_headers
            .push(("tracestate".into(), "vendor=1".into()));
        let headers: BTreeMap<&str, String> = message.headers().into_iter().collect();
        assert_eq!(headers["ce_tracestate"], "vendor=1");
        assert!(!headers.contains_key("tracestate"));
        message.encoding = Encoding::new(MessageFormat::CloudEventsStructured, "/shop");
        let value = message.value().expect("a value");
        let event: Value = serde_json::from_str(&value).expect("JSON");
        assert_eq!(event["tracestate"], "vendor=1");
        assert!(
            message
                .headers()
                .iter()
                .all(|(name, _)| *name != "tracestate")
        );
    }

    #[test]
    fn a_trace_id_that_is_not_w3c_travels_as_traceid() {
        let mut message = message(MessageFormat::CloudEventsBinary);
        message.trace_id = Some("req-42".into());
        let headers: BTreeMap<&str, String> = message.headers().into_iter().collect();
        assert_eq!(headers["ce_traceid"], "req-42");
        assert!(!headers.contains_key("ce_traceparent"));
    }
}
