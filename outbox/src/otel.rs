//! With the `opentelemetry` feature: one trace from the code that stores an event to
//! the handler that consumes it.
//!
//! 1. **Store.** An envelope made inside a span with an OpenTelemetry context (the
//!    subscriber has a `tracing-opentelemetry` layer) and no trace id of its own keeps
//!    that context: its W3C `traceparent` (trace id, the storing span's id, the sampled
//!    flag) as the event's trace id, and its `tracestate`, when there is one, as the
//!    `tracestate` header.
//! 2. **Publish.** The relay's `outbox.publish` span (level debug, in a trace of its own:
//!    it publishes events of many traces in one batch) is linked to the stored context,
//!    and the message carries the stored `traceparent` (see
//!    [`Message::headers`](crate::Message::headers)).
//! 3. **Consume.** The consumer's `outbox.consume` span takes that context as its
//!    parent, as OpenTelemetry's messaging conventions allow for a span that processes
//!    one message, so the handler's spans and the spans of the events it stores belong
//!    to the writer's trace. (A link would leave the consumer in a trace of its own.) A
//!    producer in another language may send `tracestate` too.
//!
//! Without an OpenTelemetry layer every step leaves things as they are.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::debug;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::wire::Said;

/// The W3C trace context of the current span: its `traceparent` and its `tracestate`
/// (when not empty); `None` outside a span with an OpenTelemetry context.
pub(crate) fn current() -> Option<(String, Option<String>)> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut fields);
    let traceparent = fields.remove("traceparent")?;
    let tracestate = fields
        .remove("tracestate")
        .filter(|state| !state.is_empty());
    Some((traceparent, tracestate))
}

/// Links `span` to the trace context of `traceparent` (and `tracestate`), when valid.
pub(crate) fn link(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    let mut fields = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    if let Some(state) = tracestate {
        fields.insert("tracestate".to_owned(), state.to_owned());
    }
    let context = TraceContextPropagator::new().extract(&fields);
    let stored = context.span().span_context().clone();
    if stored.is_valid() {
        span.add_link(stored);
    }
}

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
