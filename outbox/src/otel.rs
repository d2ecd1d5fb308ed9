//! With the `opentelemetry` feature: a consumer's span continues the trace of the
//! event it handles.
//!
//! The relay publishes each event with a W3C `traceparent` header (see
//! [`Message::headers`](crate::Message::headers)); a producer in another language may
//! add `tracestate` too. The consumer's `outbox.consume` span takes that context as its
//! parent, as OpenTelemetry's messaging conventions allow for a span that processes
//! one message, so the handler's spans and the spans of the events it stores belong to
//! the writer's trace. (A link would leave the consumer in a trace of its own.)

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::debug;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A message's headers, as the propagator reads them.
struct Headers<'a>(&'a BTreeMap<String, String>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Makes the trace context in `headers` the parent of `span`, which must not have been
/// entered yet. Headers without a valid `traceparent` leave it alone, and so does a
/// subscriber without an OpenTelemetry layer.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    if !context.span().span_context().is_valid() {
        return;
    }
    if let Err(error) = span.set_parent(context) {
        debug!(%error, "the consumer's span does not continue the event's trace");
    }
}
