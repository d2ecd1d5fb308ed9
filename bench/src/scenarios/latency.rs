//! Commit-to-consume latency: the broker floor, steady writers, sparse events after idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use outbox::{KafkaPublisher, Outbox, Relay};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use uuid::Uuid;

use super::fixtures::{create_topic, event, machine, migrated_schema, payload};
use super::probes::{Timed, arrived, latencies, percentile, spawn_consumer, stages, wait_for};
use super::processes::{Relays, idle_relay, latency_config, spawn_relays, stop};
use super::report::Report;
use super::{Failure, KEYS, Size};

/// The latency scenario alone.
pub(crate) async fn run_latency(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = Report {
        quick: size.quick,
        machine: machine(url, brokers, size).await?,
        ..Report::default()
    };
    latency(url, brokers, size, &mut report).await?;
    idle_relay(url, brokers, size, &mut report).await?;
    Ok(report)
}

/// Latency: commit-to-receive latency, beside the broker's own produce-to-consume
/// latency at the same rate (the floor): at a steady rate with the relay in this
/// process and with two relays in processes of their own; and one event every 1-2 s
/// after an idle spell, stored here for two relay processes (cross-process wake-ups).
pub(super) async fn latency(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let floor = broker_floor(brokers, size).await?;
    let scenario = "latency floor (broker alone)";
    report.add(
        scenario,
        format!("p50 at {}/s, produce to consume", size.rate),
        floor.p50,
        "ms",
    );
    report.add(scenario, "p99", floor.p99, "ms");

    for own_processes in [false, true] {
        let schema = migrated_schema(url, 8).await?;
        let topic = create_topic(brokers, 4).await?;
        let mut outbox = latency_outbox(&schema.db)?;
        let mut children = Relays::default();
        let mut relay = None;
        let times: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
        if own_processes {
            // A process that stores and runs no relay wakes the others through
            // PostgreSQL.
            outbox = outbox.with_wake_connection(&schema.db);
            children = spawn_relays(url, brokers, &schema.schema, 2)?;
        } else {
            relay = Some(
                Relay::new(
                    latency_config()?,
                    schema.db.clone(),
                    Timed {
                        inner: KafkaPublisher::new(brokers)?,
                        times: Arc::clone(&times),
                    },
                )?
                .with_outbox(outbox.clone())
                .spawn(),
            );
        }
        let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let consumer = spawn_consumer(brokers, &topic, Arc::clone(&received))?;
        warm_up(&schema.db, &outbox, &topic, &received).await?;
        let committed = steady_writers(&schema.db, &outbox, &topic, size).await?;
        let ids: Vec<String> = committed.iter().map(|(id, _)| id.clone()).collect();
        let skipped = arrived(brokers, &topic, &received, &ids).await?;
        consumer.stop();
        if let Some(relay) = relay {
            relay.shutdown().await?;
        }
        stop(children)?;
        let latencies = latencies(&committed, &received)?;
        let (scenario, limit) = if own_processes {
            ("latency (two relays in their own processes)", 50.0)
        } else {
            ("latency (in-process relay)", 25.0)
        };
        let p50 = percentile(&latencies, 0.5);
        let line = report.add(scenario, format!("p50 at {}/s", size.rate), p50, "ms");
        line.ratio(p50 / floor.p50, "the broker's p50");
        if !own_processes {
            line.target("<= 2x the floor", p50 <= 2.0 * floor.p50);
        }
        report.add(scenario, "p95", percentile(&latencies, 0.95), "ms");
        let p99 = percentile(&latencies, 0.99);
        report
            .add(scenario, "p99", p99, "ms")
            .ratio(p99 / floor.p99, "the broker's p99")
            .target(format!("< {limit} ms"), p99 < limit);
        report.add(scenario, "max", percentile(&latencies, 1.0), "ms");
        note_skipped(report, scenario, skipped);
        if !own_processes {
            stages(report, scenario, &committed, &received, &times)?;
        }
        schema.try_drop().await?;
    }
    sparse_after_idle(url, brokers, size, &floor, report).await
}

/// The latency scenarios' writers, on `db`: the `OUTBOX_SHARDS` and
/// `OUTBOX_COMPLETION` their relays read too.
fn latency_outbox(db: &DatabaseConnection) -> Result<Outbox, Failure> {
    Ok(Outbox::from_env(db)?)
}

/// Produce-to-consume percentiles of the broker alone, in milliseconds.
pub(super) struct Floor {
    pub(super) p50: f64,
    pub(super) p99: f64,
}

/// The broker's own latency at `size.rate`: 1 KiB messages sent straight with the
/// relay's producer settings, timed from the send to the consumer.
pub(super) async fn broker_floor(brokers: &str, size: &Size) -> Result<Floor, Failure> {
    let topic = create_topic(brokers, 4).await?;
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer = spawn_consumer(brokers, &topic, Arc::clone(&received))?;
    let producer = KafkaPublisher::new(brokers)?.producer();
    let send = |id: &str, n: usize| {
        let headers = OwnedHeaders::new().insert(Header {
            key: "event_id",
            value: Some(id),
        });
        let payload = payload(n).to_string();
        let key = format!("key-{}", n % KEYS);
        producer
            .send_result(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers),
            )
            .map_err(|(error, _)| error)
    };
    let warm = Uuid::now_v7().to_string();
    send(&warm, 0)?.await?.map_err(|(error, _)| error)?;
    wait_for(
        &received,
        std::slice::from_ref(&warm),
        Duration::from_secs(60),
    )
    .await?;
    let count = usize::try_from(size.rate * size.latency.as_secs()).unwrap_or(usize::MAX);
    let period = Duration::from_secs_f64(1.0 / size.rate as f64);
    let start = Instant::now();
    let mut sent = Vec::with_capacity(count);
    let mut deliveries = Vec::with_capacity(count);
    for n in 0..count {
        tokio::time::sleep_until((start + period * u32::try_from(n).unwrap_or(u32::MAX)).into())
            .await;
        let id = Uuid::now_v7().to_string();
        sent.push((id.clone(), Instant::now()));
        deliveries.push(send(&id, n)?);
    }
    for delivery in join_all(deliveries).await {
        delivery?.map_err(|(error, _)| error)?;
    }
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    wait_for(&received, &ids, Duration::from_secs(60)).await?;
    consumer.stop();
    let latencies = latencies(&sent, &received)?;
    Ok(Floor {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// One event stored and received, so the consumer has joined and the relays run.
pub(super) async fn warm_up(
    db: &DatabaseConnection,
    outbox: &Outbox,
    topic: &str,
    received: &Mutex<HashMap<String, Instant>>,
) -> Result<(), Failure> {
    let warm = outbox.store(db, &event(0), topic).await?.to_string();
    wait_for(
        received,
        std::slice::from_ref(&warm),
        Duration::from_secs(60),
    )
    .await
}

/// Four writers storing `size.rate` events a second for `size.latency`, each in a
/// transaction of its own; the ids with their commit times.
pub(super) async fn steady_writers(
    db: &DatabaseConnection,
    outbox: &Outbox,
    topic: &str,
    size: &Size,
) -> Result<Vec<(String, Instant)>, Failure> {
    let committed: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let writers = 4u64;
    let per_writer = size.rate * size.latency.as_secs() / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (db, outbox, topic, committed) = (
                db.clone(),
                outbox.clone(),
                topic.to_owned(),
                Arc::clone(&committed),
            );
            let period = Duration::from_secs_f64(writers as f64 / size.rate as f64);
            tokio::spawn(async move {
                let start = Instant::now() + Duration::from_micros(w * 250);
                for i in 0..per_writer {
                    tokio::time::sleep_until(
                        (start + period * u32::try_from(i).unwrap_or(u32::MAX)).into(),
                    )
                    .await;
                    let txn = db.begin().await?;
                    let id = outbox.store(&txn, &event(i as usize), &topic).await?;
                    outbox.commit(txn).await?;
                    committed
                        .lock()
                        .map_err(|_| "poisoned")?
                        .push((id.to_string(), Instant::now()));
                }
                Ok::<_, Failure>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let committed = std::mem::take(&mut *committed.lock().map_err(|_| "poisoned")?);
    Ok(committed)
}

/// Two relay processes of one service, idle for `size.idle`, then one event every
/// 1-2 s stored (and committed plainly, no extra wake-up) in this process.
pub(super) async fn sparse_after_idle(
    url: &str,
    brokers: &str,
    size: &Size,
    floor: &Floor,
    report: &mut Report,
) -> Result<(), Failure> {
    let schema = migrated_schema(url, 4).await?;
    let topic = create_topic(brokers, 4).await?;
    let outbox = latency_outbox(&schema.db)?;
    let children = spawn_relays(url, brokers, &schema.schema, 2)?;
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer = spawn_consumer(brokers, &topic, Arc::clone(&received))?;
    warm_up(&schema.db, &outbox, &topic, &received).await?;
    tokio::time::sleep(size.idle).await;
    let mut committed = Vec::with_capacity(size.sparse_events);
    for n in 0..size.sparse_events {
        // 1 s, 1.5 s, 2 s, 1 s, ...
        let pause = 1000 + 500 * (n % 3) as u64;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let txn = schema.db.begin().await?;
        let id = outbox.store(&txn, &event(n), &topic).await?;
        txn.commit().await?;
        committed.push((id.to_string(), Instant::now()));
    }
    let ids: Vec<String> = committed.iter().map(|(id, _)| id.clone()).collect();
    let skipped = arrived(brokers, &topic, &received, &ids).await?;
    consumer.stop();
    stop(children)?;
    let slowest = slowest_relay_share(&schema.db, &committed, &received).await?;
    schema.try_drop().await?;
    let latencies = latencies(&committed, &received)?;
    let scenario =
        "latency (one event every 1-2 s after idle, two relay processes, writer in a third)";
    if let Some((total, relay)) = slowest {
        report
            .add(
                scenario,
                "slowest event: stored to marked published",
                relay,
                "ms",
            )
            .ratio(relay / total, "of its commit to receive");
    }
    let p50 = percentile(&latencies, 0.5);
    report
        .add(
            scenario,
            format!(
                "p50 of {} events after {}s idle",
                size.sparse_events,
                size.idle.as_secs()
            ),
            p50,
            "ms",
        )
        .ratio(p50 / floor.p50, "the broker's p50")
        .target("< 20 ms", p50 < 20.0);
    let p99 = percentile(&latencies, 0.99);
    report
        .add(scenario, "p99", p99, "ms")
        .ratio(p99 / floor.p99, "the broker's p99")
        .target("< 50 ms", p99 < 50.0);
    note_skipped(report, scenario, skipped);
    Ok(())
}

/// For the event received last after its commit: that latency and the relay's
/// part of it (from its insert to its publication being written, by the database's
/// clock), in milliseconds. Says whether a slow event waited in the outbox or in
/// the broker.
pub(super) async fn slowest_relay_share(
    db: &DatabaseConnection,
    committed: &[(String, Instant)],
    received: &Mutex<HashMap<String, Instant>>,
) -> Result<Option<(f64, f64)>, Failure> {
    let slowest = {
        let received = received.lock().map_err(|_| "poisoned")?;
        committed
            .iter()
            .filter_map(|(id, at)| {
                Some((id.clone(), received.get(id)?.saturating_duration_since(*at)))
            })
            .max_by_key(|(_, latency)| *latency)
    };
    let Some((id, latency)) = slowest else {
        return Ok(None);
    };
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT (EXTRACT(EPOCH FROM (published_at - created_at)) * 1000)::float8 AS ms \
             FROM _outbox WHERE id = $1",
            [Uuid::parse_str(&id)?.into()],
        ))
        .await?
        .ok_or("the slowest event is not in the outbox")?;
    let relay: f64 = row.try_get("", "ms")?;
    Ok(Some((latency.as_secs_f64() * 1000.0, relay)))
}

/// A line for the events the scenario's consumer skipped (see [`arrived`]), if any.
pub(super) fn note_skipped(report: &mut Report, scenario: &'static str, skipped: usize) {
    if skipped > 0 {
        #[allow(clippy::cast_precision_loss)] // a handful
        report.add(
            scenario,
            "skipped by the consumer, found in the topic after (no sample)",
            skipped as f64,
            "events",
        );
    }
}
