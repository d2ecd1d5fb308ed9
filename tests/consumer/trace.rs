//! With the `opentelemetry` feature, the consumer's span continues the trace of the
//! event it handles: one trace from the writer to the handler's own spans.

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use outbox::{Consumer, Received};
use tracing_subscriber::layer::SubscriberExt as _;

use super::{AccountEvent, apply_credit, consumer_config, credit, done_with, publish, scene};

/// The finished span named `name`.
fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name} among {:?}", names(spans)))
}

fn names(spans: &[SpanData]) -> Vec<&str> {
    spans.iter().map(|span| span.name.as_ref()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumers_span_is_a_child_of_the_events_traceparent() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("outbox-tests")));
    // Each test runs in a process of its own (nextest): the default is this test's.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let (pg, topic, publisher) = scene(1).await;
    let message = credit(&topic, "account-t", 1);
    let traceparent = message
        .headers()
        .into_iter()
        .find(|(name, _)| *name == outbox::headers::TRACEPARENT)
        .map(|(_, value)| value)
        .expect("the relay's message carries a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    let (trace_id, parent_id) = (
        TraceId::from_hex(parts[1]).expect("trace id"),
        SpanId::from_hex(parts[2]).expect("span id"),
    );
    publish(&publisher, std::slice::from_ref(&message)).await;

    let consumer = Consumer::new(
        consumer_config(&super::unique_name("traced"), &topic),
        pg.db.clone(),
    )
    .expect("valid consumer")
    .handle(|txn, event: Received<AccountEvent>| {
        Box::pin(async move {
            let applying = tracing::info_span!("apply credit");
            let _entered = applying.enter();
            Ok(apply_credit(txn, &event).await?)
        })
    })
    .spawn()
    .expect("consumer starts");
    done_with(&consumer, 1).await;
    consumer.shutdown().await.expect("shutdown");
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("finished spans");
    let consume = span(&spans, "outbox.consume");
    assert_eq!(
        consume.span_context.trace_id(),
        trace_id,
        "the consumer's span is in the event's trace"
    );
    assert_eq!(
        consume.parent_span_id, parent_id,
        "and a child of its traceparent"
    );
    assert!(consume.parent_span_is_remote, "a remote parent");
    let apply = span(&spans, "apply credit");
    assert_eq!(apply.span_context.trace_id(), trace_id);
    assert_eq!(apply.parent_span_id, consume.span_context.span_id());
    pg.drop().await;
}
