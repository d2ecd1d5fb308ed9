//! With the `opentelemetry` feature: a consumer's span continues the trace of the
//! event it handles.
//!
//! The relay publishes each event with a W3C `traceparent` header (see
//! [`Message::headers`](crate::Message::headers)); a producer in another language may
//! add `tracestate` too. The consumer's `outbox.consume` span takes that context as its
//! parent, as OpenTelemetry's messaging conventions allow for a span that processes
//! one message, so the handler's spans and the spans of the events it stores belong to
//! the writer's trace. (A link would leave the consumer in a trace of its own.)

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::debug;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::wire::Said;

/// A message's trace context, in whichever format it came, as the propagator reads it.
struct Context<'a>(&'a Said<'a>);

impl Extractor for Context<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent.as_deref(),
            "tracestate" => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Makes the trace context the message `said` it carries the parent of `span`, which
/// must not have been entered yet. A message without a valid `traceparent` leaves it
/// alone, and so does a subscriber without an OpenTelemetry layer.
pub(crate) fn continue_trace(span: &tracing::Span, said: &Said<'_>) {
    let context = TraceContextPropagator::new().extract(&Context(said));
    if !context.span().span_context().is_valid() {
        return;
    }
    if let Err(error) = span.set_parent(context) {
        debug!(%error, "the consumer's span does not continue the event's trace");
    }
}
