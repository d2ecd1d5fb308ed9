//! Relay throughput beside its two limits (the raw producer; claim and complete), per
//! completion mode, on PostgreSQL or MySQL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use outbox::{
    Completion, KafkaConfig, KafkaPublisher, Message, NoOpPublisher, Outbox, RelayConfig,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use uuid::Uuid;

use super::cpu::{CpuShares, CpuWindow};
use super::fixtures::{
    analyze, checkpoint, create_topic, drain_with, machine, migrated_database, payload,
    peak_rss_mib, preload, relay_config,
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

/// What one turn of the throughput rounds measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Run {
    /// Limit (b): claim and complete with a publisher that sends nothing.
    Limit,
    /// The relay with the broker.
    EndToEnd,
    /// The relay with the broker, without cross-process wake-ups.
    WithoutWake,
}

/// Relay throughput and memory: one relay per completion mode against its two limits,
/// and its peak memory.
pub(super) async fn relay_throughput(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let events = size.relay_events;
    let topic = create_topic(brokers, 8).await?;
    let publisher = KafkaPublisher::new(brokers)?;
    // For each completion mode, limit (b) and the relay end to end; in the first mode
    // (mark by default) also the relay without cross-process wake-ups (no LISTEN
    // connection, no NOTIFY).
    // They run in rounds, each on a freshly migrated schema holding the same
    // preloaded events, in an order that rotates from round to round; the medians are
    // reported. A single sample of any of them moves by a quarter from run to run
    // here, enough for a relay to "beat" a limit measured once on another table state.
    let base = size.completions.first().copied().unwrap_or_default();
    let mut turns: Vec<(Completion, Run)> = vec![(base, Run::WithoutWake)];
    for &mode in &size.completions {
        turns.extend([(mode, Run::Limit), (mode, Run::EndToEnd)]);
    }
    let rounds = if size.quick { 1 } else { 3 };
    let mut samples: HashMap<(Completion, Run), Vec<f64>> = HashMap::new();
    let mut cpu: HashMap<(Completion, Run), Vec<CpuShares>> = HashMap::new();
    let mut peak = 0.0;
    for round in 0..rounds {
        for turn in 0..turns.len() {
            let (mode, run) = turns[(round + turn) % turns.len()];
            let database = migrated_database(url, 10).await?;
            let db = database.db();
            checkpoint(db).await;
            preload(db, &topic, events).await?;
            let outbox = Outbox::new().with_completion(mode);
            let config = RelayConfig {
                listen: run != Run::WithoutWake,
                concurrency: size.concurrency,
                ..relay_config("bench")
            };
            // As autovacuum would have by then in production; left to chance, its
            // ANALYZE lands in some runs and not others, and the claim's plan with it.
            analyze(db).await?;
            let cpu_window = CpuWindow::open();
            let rate = match run {
                Run::Limit => drain_with(db, &NoOpPublisher, 1, events, &config, &outbox).await?,
                Run::EndToEnd | Run::WithoutWake => {
                    drain_with(db, &publisher, 1, events, &config, &outbox).await?
                }
            };
            if run == Run::EndToEnd && mode == base {
                peak = peak_rss_mib();
            }
            samples.entry((mode, run)).or_default().push(rate);
            cpu.entry((mode, run))
                .or_default()
                .extend(cpu_window.close());
            database.try_drop().await?;
        }
    }
    let median_of = |mode, run| median(samples.get(&(mode, run)).into_iter().flatten().copied());
    let cpu_of = |mode, run| CpuShares::mean(cpu.get(&(mode, run)).map_or(&[], Vec::as_slice));

    // The cost of one request in flight per connection (the default, which keeps
    // per-key order on any broker) against five (order then rests on the broker's
    // sequence checks).
    let database = migrated_database(url, 10).await?;
    checkpoint(database.db()).await;
    preload(database.db(), &topic, events).await?;
    let five_in_flight = KafkaPublisher::from_config(
        KafkaConfig::new(brokers).set("max.in.flight.requests.per.connection", "5"),
    )?;
    let config = RelayConfig {
        concurrency: size.concurrency,
        ..relay_config("bench")
    };
    let outbox = Outbox::new().with_completion(base);
    let pipelined = drain_with(database.db(), &five_in_flight, 1, events, &config, &outbox).await?;
    database.try_drop().await?;

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

    report.add("relay", "raw producer (limit a)", raw_producer, "events/s");
    let mark_limit = median_of(Completion::Mark, Run::Limit);
    for &mode in &size.completions {
        let raw_database = median_of(mode, Run::Limit);
        let relay = median_of(mode, Run::EndToEnd);
        let limit = raw_producer.min(raw_database);
        let row = report.add(
            "relay",
            format!("{mode}: claim and complete, no broker (limit b, median of {rounds})"),
            raw_database,
            "events/s",
        );
        let against_mark = raw_database / mark_limit;
        match mode {
            _ if !samples.contains_key(&(Completion::Mark, Run::Limit)) => {}
            Completion::Mark => {}
            Completion::Delete => {
                row.ratio(against_mark, "of limit b in mark mode")
                    .target(">= 1.8x", against_mark >= 1.8);
            }
            Completion::Archive => {
                row.ratio(against_mark, "of limit b in mark mode")
                    .target(">= 1.3x", against_mark >= 1.3);
            }
        }
        let row = report
            .add(
                "relay",
                format!("{mode}: one relay, end to end (median of {rounds})"),
                relay,
                "events/s",
            )
            .ratio(relay / limit, "of the smaller limit");
        if mode == Completion::Delete {
            row.target(
                ">= 0.80x and >= 50000/s",
                relay / limit >= 0.8 && relay >= 50_000.0,
            );
        } else {
            row.target(">= 0.80x", relay / limit >= 0.8);
        }
        // What bounds the two: PostgreSQL's share of the machine in each.
        if let (Some(alone), Some(relayed)) =
            (cpu_of(mode, Run::Limit), cpu_of(mode, Run::EndToEnd))
        {
            report.add(
                "relay",
                format!(
                    "{mode}: PostgreSQL's CPU share in limit b, mean ({})",
                    alone.others()
                ),
                alone.postgres * 100.0,
                "% of the machine",
            );
            report
                .add(
                    "relay",
                    format!(
                        "{mode}: PostgreSQL's CPU share end to end, mean ({})",
                        relayed.others()
                    ),
                    relayed.postgres * 100.0,
                    "% of the machine",
                )
                .ratio(relayed.postgres / alone.postgres, "of its share in limit b");
        }
    }
    let relay = median_of(base, Run::EndToEnd);
    let without_wake = median_of(base, Run::WithoutWake);
    report
        .add(
            "relay",
            format!("{base}: one relay, wake-ups off (OUTBOX_LISTEN=false)"),
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
            format!("{base}: one relay, 5 requests in flight (order rests on the broker)"),
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
        tombstone: false,
        encoding: outbox::Encoding::native(),
    }
}
