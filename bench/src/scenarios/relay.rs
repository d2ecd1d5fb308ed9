//! Relay throughput beside its two limits (the raw producer, claim and mark).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use outbox::{KafkaConfig, KafkaPublisher, Message, NoOpPublisher, RelayConfig};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use uuid::Uuid;

use super::fixtures::{
    create_topic, drain, drain_with, machine, migrated_schema, payload, peak_rss_mib, preload,
    relay_config,
};
use super::probes::median;
use super::report::Report;
use super::{Failure, KEYS, Size};

/// Relay throughput and its limits, with peak memory, first: peak memory is read
/// right after the relay ran.
pub(crate) async fn run_relay(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = Report {
        quick: size.quick,
        machine: machine(url, brokers, size).await?,
        ..Report::default()
    };
    relay_throughput(url, brokers, size, &mut report).await?;
    Ok(report)
}

/// Relay throughput and memory: one relay against its two limits, and its peak memory.
pub(super) async fn relay_throughput(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let events = size.relay_events;
    let topic = create_topic(brokers, 8).await?;
    let publisher = KafkaPublisher::new(brokers)?;
    // Limit (b), the relay end to end, and the relay without cross-process wake-ups
    // (no LISTEN connection, no NOTIFY) run in rounds, each on a freshly migrated
    // schema holding the same preloaded events, in an order that rotates
    // from round to round; the medians are reported. A single sample of any of them
    // moves by a quarter from run to run here, enough for a relay to "beat" a limit
    // measured once on another table state.
    let quiet = RelayConfig {
        listen: false,
        ..relay_config("bench")
    };
    let rounds = if size.quick { 1 } else { 3 };
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    let mut peak = 0.0;
    for round in 0..rounds {
        for turn in 0..3 {
            let which = (round + turn) % 3;
            let schema = migrated_schema(url, 10).await?;
            preload(&schema.db, &topic, events).await?;
            let rate = match which {
                0 => drain(&schema.db, &NoOpPublisher, 1, events).await?,
                1 => drain(&schema.db, &publisher, 1, events).await?,
                _ => drain_with(&schema.db, &publisher, 1, events, &quiet).await?,
            };
            if which == 1 {
                peak = peak_rss_mib();
            }
            samples[which].push(rate);
            schema.try_drop().await?;
        }
    }
    let [raw_database, relay, without_wake] = samples.map(median);

    // The cost of one request in flight per connection (the default, which keeps
    // per-key order on any broker) against five (order then rests on the broker's
    // sequence checks).
    let schema = migrated_schema(url, 10).await?;
    preload(&schema.db, &topic, events).await?;
    let five_in_flight = KafkaPublisher::from_config(
        KafkaConfig::new(brokers).set("max.in.flight.requests.per.connection", "5"),
    )?;
    let pipelined = drain(&schema.db, &five_in_flight, 1, events).await?;
    schema.try_drop().await?;

    // Limit (a): the same messages straight to the broker, same producer settings.
    let raw_topic = create_topic(brokers, 8).await?;
    let producer = KafkaPublisher::new(brokers)?.producer();
    let messages: Vec<Message> = (0..events).map(|n| sample_message(n, &raw_topic)).collect();
    // Connect and fetch metadata before the clock starts, as the relay's producer had.
    producer
        .send(
            FutureRecord::to(&raw_topic).key("warm-up").payload("{}"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let started = Instant::now();
    for chunk in messages.chunks(10_000) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|m| {
                let mut headers = OwnedHeaders::new();
                for (key, value) in m.headers() {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value.as_str()),
                    });
                }
                let record = FutureRecord::to(&m.topic)
                    .key(m.key.as_str())
                    .payload(m.payload.as_str())
                    .headers(headers);
                producer.send_result(record).map_err(|(e, _)| e)
            })
            .collect::<Result<_, _>>()?;
        for delivery in join_all(sends).await {
            delivery?.map_err(|(e, _)| e)?;
        }
    }
    let raw_producer = events as f64 / started.elapsed().as_secs_f64();

    let limit = raw_producer.min(raw_database);
    report.add("relay", "raw producer (limit a)", raw_producer, "events/s");
    report.add(
        "relay",
        format!("claim and mark, no broker (limit b, median of {rounds})"),
        raw_database,
        "events/s",
    );
    report
        .add(
            "relay",
            format!("one relay, end to end (median of {rounds})"),
            relay,
            "events/s",
        )
        .ratio(relay / limit, "of the smaller limit")
        .target(
            ">= 0.50x and >= 20000/s",
            relay / limit >= 0.5 && relay >= 20_000.0,
        );
    report
        .add(
            "relay",
            "one relay, wake-ups off (OUTBOX_LISTEN=false)",
            without_wake,
            "events/s",
        )
        .ratio(
            relay / without_wake,
            "with wake-ups (default) against without",
        )
        .target(">= 0.95x", relay / without_wake >= 0.95);
    report
        .add(
            "relay",
            "one relay, 5 requests in flight (order rests on the broker)",
            pipelined,
            "events/s",
        )
        .ratio(relay / pipelined, "1 in flight (default) against 5");
    report
        .add("memory", "relay process peak RSS", peak, "MiB")
        .target("< 100 MiB", peak < 100.0);
    Ok(())
}

pub(super) fn sample_message(n: usize, topic: &str) -> Message {
    Message {
        seq: n as i64,
        id: Uuid::now_v7(),
        event_type: "bench.event".into(),
        event_version: "v1".into(),
        aggregate_id: format!("key-{}", n % KEYS),
        topic: topic.to_owned(),
        key: format!("key-{}", n % KEYS),
        payload: payload(n).to_string(),
        extra_headers: Vec::new(),
        trace_id: None,
        user_id: None,
        created_at: chrono::Utc::now(),
        attempts: 0,
    }
}
