//! The tracing span a message's attempts run in.

use rdkafka::message::{Message as _, OwnedMessage};
use tracing::{field, info_span};

use crate::wire::Said;

/// The span of a message's attempts, with what the message `said` of its event.
pub(super) fn consume_span(
    consumer: &str,
    message: &OwnedMessage,
    said: &Said<'_>,
) -> tracing::Span {
    let span = info_span!(
        "outbox.consume",
        consumer = %consumer,
        event_id = said.event_id.as_deref(),
        event_type = said.event_type.as_deref(),
        format = %said.format,
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        trace_id = field::Empty,
        traceparent = said.traceparent.as_deref(),
    );
    if let Some(trace_id) = said.trace_id() {
        span.record("trace_id", trace_id);
    }
    #[cfg(feature = "opentelemetry")]
    crate::otel::continue_trace(&span, said);
    span
}
