//! With the `opentelemetry` feature, one trace from the writer to the handler's own
//! spans: the store keeps the writer's span context, the relay's publish span links to
//! it, and the consumer's span continues it.

use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use outbox::{Consumer, Outbox, Received, Relay, RelayConfig};
use outbox_tests::eventually;
use sea_orm::TransactionTrait;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

use super::{AccountEvent, apply_credit, consumer_config, credit, done_with, publish, scene};

/// Installs this test process's subscriber: an OpenTelemetry layer exporting every span
/// (at every level) to memory. Each test runs in a process of its own (nextest).
fn exporting() -> (InMemorySpanExporter, SdkTracerProvider) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("outbox-tests")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    (exporter, provider)
}

/// A consumer of `topic` whose handler applies credits in a span of its own.
fn traced_consumer(db: &sea_orm::DatabaseConnection, topic: &str) -> outbox::ConsumerHandle {
    Consumer::new(
        consumer_config(&super::unique_name("traced"), topic),
        db.clone(),
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
    .expect("consumer starts")
}

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
    let (exporter, provider) = exporting();

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

    let consumer = traced_consumer(&pg.db, &topic);
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

/// The span that stores an event, the relay's publish span and the consumer's spans:
/// the consumer continues the storing span's trace (a child of the storing span), and
/// the publish span, in a trace of its own, links to the storing span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_store_through_the_relay_to_the_handler() {
    let (exporter, provider) = exporting();
    let (pg, topic, publisher) = scene(1).await;
    let outbox = Outbox::on(&pg.db);
    let storing = tracing::info_span!("register account");
    async {
        let txn = pg.db.begin().await.expect("begin");
        let event = AccountEvent::Credited {
            account: "account-t".to_owned(),
            n: 1,
        };
        outbox
            .store(&txn, &event, topic.as_str())
            .await
            .expect("store");
        outbox.commit(txn).await.expect("commit");
    }
    .instrument(storing.clone())
    .await;
    drop(storing);

    let config = RelayConfig {
        interval: Duration::from_millis(200),
        ..RelayConfig::new(super::unique_name("traced-relay"))
    };
    let relay = Relay::new(config, pg.db.clone(), publisher)
        .expect("valid relay config")
        .with_outbox(outbox)
        .spawn();
    eventually("published", Duration::from_secs(20), || async {
        relay.stats().published == 1
    })
    .await;
    let consumer = traced_consumer(&pg.db, &topic);
    done_with(&consumer, 1).await;
    consumer.shutdown().await.expect("consumer shutdown");
    relay.shutdown().await.expect("relay shutdown");
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("finished spans");
    let store = span(&spans, "register account").span_context.clone();
    let consume = span(&spans, "outbox.consume");
    assert_eq!(
        consume.span_context.trace_id(),
        store.trace_id(),
        "one trace"
    );
    assert_eq!(
        consume.parent_span_id,
        store.span_id(),
        "the consumer's span is a child of the span that stored the event"
    );
    assert!(consume.parent_span_is_remote);
    let apply = span(&spans, "apply credit");
    assert_eq!(apply.span_context.trace_id(), store.trace_id());
    // The publisher's warm-up message has a publish span too, linked to nothing.
    let linked: Vec<&SpanData> = spans
        .iter()
        .filter(|span| span.name == "outbox.publish")
        .filter(|span| {
            span.links.iter().any(|link| {
                link.span_context.trace_id() == store.trace_id()
                    && link.span_context.span_id() == store.span_id()
            })
        })
        .collect();
    assert_eq!(
        linked.len(),
        1,
        "the publish span links to the storing span"
    );
    assert_ne!(
        linked[0].span_context.trace_id(),
        store.trace_id(),
        "in a trace of its own"
    );
    assert!(store.is_sampled(), "the sampled flag travels with it");
    assert!(consume.span_context.is_sampled());
    pg.drop().await;
}
