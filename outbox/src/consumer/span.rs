//! The tracing span a message's attempts run in.

use std::collections::BTreeMap;

use rdkafka::message::{Message as _, OwnedMessage};
use tracing::{field, info_span};

use crate::wire::{headers, trace_id};

/// The span of a message's attempts, with what its `headers` say of the event.
pub(super) fn consume_span(
    consumer: &str,
    message: &OwnedMessage,
    headers: &BTreeMap<String, String>,
) -> tracing::Span {
    let span = info_span!(
        "outbox.consume",
        consumer = %consumer,
        event_id = field::Empty,
        event_type = headers.get(headers::EVENT_TYPE).map(String::as_str),
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        trace_id = field::Empty,
        traceparent = field::Empty,
    );
    if let Some(event_id) = headers.get(headers::EVENT_ID) {
        span.record("event_id", event_id.as_str());
    }
    if let Some(traceparent) = headers.get(headers::TRACEPARENT) {
        span.record("traceparent", traceparent.as_str());
    }
    if let Some(trace_id) = trace_id(headers) {
        span.record("trace_id", trace_id);
    }
    #[cfg(feature = "opentelemetry")]
    crate::otel::continue_trace(&span, headers);
    span
}
