//! The scenarios of `outbox-bench all`, and the report they fill.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use outbox::{
    Envelope, EventBuilder, KafkaConfig, KafkaPublisher, Message, NoOpPublisher, Outbox, Relay,
    RelayConfig,
};
use outbox_migration::Migrator;
use outbox_tests::PgSchema;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde_json::{Value, json};
use uuid::Uuid;

pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

/// How much each scenario does.
#[derive(Debug, Clone)]
pub(crate) struct Size {
    quick: bool,
    store_transactions: usize,
    relay_events: usize,
    scale_events: usize,
    retained: usize,
    blocked: usize,
    flowing: usize,
    latency: Duration,
    rate: u64,
    idle: Duration,
    sparse_events: usize,
    idle_warm: Duration,
    idle_measure: Duration,
}

impl Size {
    pub(crate) fn quick() -> Self {
        Size {
            quick: true,
            store_transactions: 200,
            relay_events: 5_000,
            scale_events: 3_000,
            retained: 10_000,
            blocked: 5_000,
            flowing: 3_000,
            latency: Duration::from_secs(2),
            rate: 1_000,
            idle: Duration::from_secs(2),
            sparse_events: 3,
            idle_warm: Duration::from_secs(3),
            idle_measure: Duration::from_secs(5),
        }
    }

    /// The full sizes, with `events` for the relay throughput scenario.
    pub(crate) fn relay_only(events: usize) -> Self {
        Size {
            relay_events: events,
            ..Self::full()
        }
    }

    /// The full sizes, with `blocked` events behind the blocked key.
    pub(crate) fn blocked_only(blocked: usize) -> Self {
        Size {
            blocked,
            ..Self::full()
        }
    }

    /// The full sizes, with `latency` for the latency scenario.
    pub(crate) fn latency_only(latency: Duration) -> Self {
        Size {
            latency,
            ..Self::full()
        }
    }

    pub(crate) fn full() -> Self {
        Size {
            quick: false,
            store_transactions: 3_000,
            relay_events: 200_000,
            scale_events: 50_000,
            retained: 1_000_000,
            blocked: 100_000,
            flowing: 20_000,
            latency: Duration::from_secs(30),
            rate: 1_000,
            idle: Duration::from_secs(10),
            sparse_events: 30,
            idle_warm: Duration::from_secs(15),
            idle_measure: Duration::from_secs(60),
        }
    }
}

const KEYS: usize = 64;
const BATCH_SIZE: usize = 500;

/// One measured figure, with its baseline ratio and target where it has them.
#[derive(Debug, Clone)]
struct Figure {
    scenario: &'static str,
    measure: String,
    value: f64,
    unit: &'static str,
    ratio: Option<(f64, &'static str)>,
    target: Option<(String, bool)>,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub(crate) struct Report {
    machine: String,
    quick: bool,
    figures: Vec<Figure>,
}

impl Report {
    fn add(
        &mut self,
        scenario: &'static str,
        measure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> &mut Figure {
        self.figures.push(Figure {
            scenario,
            measure: measure.into(),
            value,
            unit,
            ratio: None,
            target: None,
        });
        let last = self.figures.len() - 1;
        &mut self.figures[last]
    }

    pub(crate) fn table(&self) -> String {
        let mut rows = vec![[
            "scenario".to_owned(),
            "measure".to_owned(),
            "value".to_owned(),
            "ratio".to_owned(),
            "target".to_owned(),
        ]];
        for f in &self.figures {
            rows.push([
                f.scenario.to_owned(),
                f.measure.clone(),
                format!("{} {}", format_value(f.value), f.unit),
                f.ratio
                    .map_or_else(String::new, |(r, of)| format!("{r:.2}x {of}")),
                f.target.as_ref().map_or_else(String::new, |(t, met)| {
                    format!("{t} {}", if *met { "met" } else { "MISSED" })
                }),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "machine: {}{}\n",
            self.machine,
            if self.quick {
                " (quick run: sizes too small for the targets)"
            } else {
                ""
            }
        );
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "machine": self.machine,
            "quick": self.quick,
            "figures": self.figures.iter().map(|f| json!({
                "scenario": f.scenario,
                "measure": f.measure,
                "value": f.value,
                "unit": f.unit,
                "ratio": f.ratio.map(|(r, _)| r),
                "ratio_of": f.ratio.map(|(_, of)| of),
                "target": f.target.as_ref().map(|(t, _)| t),
                "target_met": f.target.as_ref().map(|(_, met)| met),
            })).collect::<Vec<_>>(),
        })
    }
}

impl Figure {
    fn ratio(&mut self, ratio: f64, of: &'static str) -> &mut Self {
        self.ratio = Some((ratio, of));
        self
    }

    fn target(&mut self, target: impl Into<String>, met: bool) -> &mut Self {
        self.target = Some((target.into(), met));
        self
    }
}

fn format_value(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// A schema of its own for one scenario, migrated.
async fn migrated_schema(url: &str, connections: u32) -> Result<PgSchema, Failure> {
    let schema = PgSchema::create(url, "bench", connections).await?;
    Migrator::up(&schema.db, None).await?;
    Ok(schema)
}

async fn connect(url: &str, schema: &str, connections: u32) -> Result<DatabaseConnection, Failure> {
    let mut options = ConnectOptions::new(url);
    options
        .set_schema_search_path(schema.to_owned())
        .max_connections(connections)
        .sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

/// A payload of about 1 KiB.
fn payload(n: usize) -> Value {
    json!({ "n": n, "filler": "x".repeat(1000) })
}

fn event(n: usize) -> EventBuilder {
    EventBuilder::new("bench.event", format!("key-{}", n % KEYS)).data(payload(n))
}

async fn preload(db: &DatabaseConnection, topic: &str, events: usize) -> Result<(), Failure> {
    let outbox = Outbox::new();
    let mut n = 0;
    while n < events {
        let chunk: Vec<Envelope> = (n..events.min(n + 2000))
            .map(|i| Envelope::new(&event(i), topic))
            .collect::<Result<_, _>>()?;
        n += chunk.len();
        outbox.store_batch(db, chunk).await?;
    }
    Ok(())
}

async fn create_topic(brokers: &str, partitions: i32) -> Result<String, Failure> {
    let topic = format!("bench-{}", Uuid::now_v7().simple());
    KafkaConfig::new(brokers)
        .create_topic(&topic, partitions, 1)
        .await?;
    Ok(topic)
}

fn relay_config(service: &str) -> RelayConfig {
    RelayConfig {
        batch_size: BATCH_SIZE,
        ..RelayConfig::new(service)
    }
}

/// Runs `relay_count` relays until `events` are published; events per second.
async fn drain<P: outbox::Publisher + Clone>(
    db: &DatabaseConnection,
    publisher: &P,
    relay_count: usize,
    events: usize,
) -> Result<f64, Failure> {
    drain_with(db, publisher, relay_count, events, &relay_config("bench")).await
}

/// [`drain`] with relays configured by `config`.
async fn drain_with<P: outbox::Publisher + Clone>(
    db: &DatabaseConnection,
    publisher: &P,
    relay_count: usize,
    events: usize,
    config: &RelayConfig,
) -> Result<f64, Failure> {
    let started = Instant::now();
    let relays = (0..relay_count)
        .map(|_| Relay::new(config.clone(), db.clone(), publisher.clone()).map(Relay::spawn))
        .collect::<Result<Vec<_>, _>>()?;
    let target = events as u64;
    while relays.iter().map(|r| r.stats().published).sum::<u64>() < target {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    for relay in relays {
        relay.shutdown().await?;
    }
    Ok(events as f64 / elapsed.as_secs_f64())
}

fn peak_rss_mib() -> f64 {
    let kib = outbox_tests::peak_rss_kib(std::process::id()) as f64;
    kib / 1024.0
}

pub(crate) async fn run_all(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = run_relay(url, brokers, size).await?;
    store_overhead(url, size, &mut report).await?;
    latency(url, brokers, size, &mut report).await?;
    idle_relay(url, brokers, size, &mut report).await?;
    scale(url, brokers, size, &mut report).await?;
    blocked_key(url, size, &mut report).await?;
    Ok(report)
}

/// Stores `events` (key, n) with `outbox`, 2,000 per statement.
async fn preload_keys(
    db: &DatabaseConnection,
    outbox: &Outbox,
    events: impl Iterator<Item = (String, usize)>,
) -> Result<(), Failure> {
    let envelopes: Vec<Envelope> = events
        .map(|(key, n)| {
            Envelope::new(
                &EventBuilder::new("bench.event", key).data(payload(n)),
                "bench",
            )
        })
        .collect::<Result<_, _>>()?;
    for chunk in envelopes.chunks(2000) {
        outbox.store_batch(db, chunk.to_vec()).await?;
    }
    Ok(())
}

pub(crate) async fn run_store(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = Report {
        quick: size.quick,
        machine: machine(url, brokers, size).await?,
        ..Report::default()
    };
    store_overhead(url, size, &mut report).await?;
    Ok(report)
}

pub(crate) async fn run_blocked(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = Report {
        quick: size.quick,
        machine: machine(url, brokers, size).await?,
        ..Report::default()
    };
    blocked_key(url, size, &mut report).await?;
    Ok(report)
}

/// (8): the relay's claim behind a blocked key. One key's first event failed and waits
/// (a day), `blocked` events of that key piled up behind it; 63 other keys flow. The
/// flowing keys' throughput against the same run with nothing blocked, broker left
/// out (no-op publisher), so the database's side is what is measured. Twice: over the
/// usual 16 shards, and over one shard, where every claim would have to pass the
/// blocked key's events.
async fn blocked_key(url: &str, size: &Size, report: &mut Report) -> Result<(), Failure> {
    for shards in [16, 1] {
        let shards = std::num::NonZeroU16::new(shards).ok_or("shards")?;
        let outbox = Outbox::new().with_shards(shards);
        let config = RelayConfig {
            shards,
            ..relay_config("bench")
        };
        let free = flowing_throughput(url, size, &outbox, &config, 0).await?;
        let blocked = flowing_throughput(url, size, &outbox, &config, size.blocked).await?;
        report.add(
            "blocked key",
            format!("{shards} shards: {} events over 63 keys", size.flowing),
            free,
            "events/s",
        );
        report
            .add(
                "blocked key",
                format!(
                    "{shards} shards: the same, {} events behind one blocked key",
                    size.blocked
                ),
                blocked,
                "events/s",
            )
            .ratio(blocked / free, "of nothing blocked")
            .target(">= 0.90x", blocked / free >= 0.9);
    }
    Ok(())
}

/// Publishes `size.flowing` events over 63 keys, with `blocked` events waiting behind
/// one key's failed event (stored while it waits, as they would arrive); events/s.
async fn flowing_throughput(
    url: &str,
    size: &Size,
    outbox: &Outbox,
    config: &RelayConfig,
    blocked: usize,
) -> Result<f64, Failure> {
    let schema = migrated_schema(url, 10).await?;
    if blocked > 0 {
        let head = outbox
            .store(
                &schema.db,
                &EventBuilder::new("bench.event", "blocked").data(payload(0)),
                "bench",
            )
            .await?;
        let waits_a_day = RelayConfig {
            retry_delay: Duration::from_secs(86_400),
            max_retry_delay: Duration::from_secs(86_400),
            ..RelayConfig::default()
        };
        outbox
            .handle_event_failure(&schema.db, head, "refused", &waits_a_day)
            .await?;
        preload_keys(
            &schema.db,
            outbox,
            (1..=blocked).map(|n| ("blocked".to_owned(), n)),
        )
        .await?;
    }
    let flowing = (0..size.flowing).map(|n| (format!("key-{}", 1 + n % 63), n));
    preload_keys(&schema.db, outbox, flowing).await?;
    schema
        .db
        .execute_unprepared("VACUUM ANALYZE _outbox")
        .await?;
    let rate = drain_with(&schema.db, &NoOpPublisher, 1, size.flowing, config).await?;
    schema.try_drop().await?;
    Ok(rate)
}

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

async fn machine(url: &str, brokers: &str, size: &Size) -> Result<String, Failure> {
    let admin = Database::connect(url).await?;
    let version = admin
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SHOW server_version",
        ))
        .await?
        .and_then(|row| row.try_get_by_index::<String>(0).ok())
        .unwrap_or_default();
    Ok(format!(
        "{} cores, PostgreSQL {version}, broker at {brokers}, {} events of 1 KiB over {KEYS} keys",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        size.relay_events
    ))
}

/// Relay throughput and memory: one relay against its two limits, and its peak memory.
async fn relay_throughput(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let events = size.relay_events;
    let topic = create_topic(brokers, 8).await?;
    let publisher = KafkaPublisher::new(brokers)?;
    // Without cross-process wake-ups (no LISTEN connection, no NOTIFY) first, then
    // with (the default), so that neither has the first run's cold start to itself
    // more than once: the first is measured again at the end and the two averaged.
    let quiet = RelayConfig {
        listen: false,
        ..relay_config("bench")
    };
    let mut without_wake = 0.0;
    let mut relay = 0.0;
    let mut peak = 0.0;
    for run in 0..3 {
        let schema = migrated_schema(url, 10).await?;
        preload(&schema.db, &topic, events).await?;
        if run == 1 {
            relay = drain(&schema.db, &publisher, 1, events).await?;
            peak = peak_rss_mib();
        } else {
            without_wake += drain_with(&schema.db, &publisher, 1, events, &quiet).await? / 2.0;
        }
        schema.try_drop().await?;
    }

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

    // Limit (b): the relay's own claim-and-mark statements, no broker.
    let schema = migrated_schema(url, 10).await?;
    preload(&schema.db, &topic, events).await?;
    let raw_database = drain(&schema.db, &NoOpPublisher, 1, events).await?;
    schema.try_drop().await?;

    let limit = raw_producer.min(raw_database);
    report.add("relay", "raw producer (limit a)", raw_producer, "events/s");
    report.add(
        "relay",
        "claim and mark, no broker (limit b)",
        raw_database,
        "events/s",
    );
    report
        .add("relay", "one relay, end to end", relay, "events/s")
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

fn sample_message(n: usize, topic: &str) -> Message {
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

/// Store overhead: a business transaction with and without storing events.
async fn store_overhead(url: &str, size: &Size, report: &mut Report) -> Result<(), Failure> {
    let schema = migrated_schema(url, 1).await?;
    schema
        .db
        .execute_unprepared("CREATE TABLE business (id UUID PRIMARY KEY, data TEXT NOT NULL)")
        .await?;
    let outbox = Outbox::new();
    let mut seconds: HashMap<usize, f64> = HashMap::new();
    for _round in 0..2 {
        for events in [0, 1, 10] {
            let started = Instant::now();
            for n in 0..size.store_transactions {
                let txn = schema.db.begin().await?;
                txn.execute_raw(Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "INSERT INTO business (id, data) VALUES ($1, $2)",
                    [Uuid::now_v7().into(), "x".repeat(200).into()],
                ))
                .await?;
                match events {
                    0 => {}
                    1 => {
                        outbox.store(&txn, &event(n), "bench").await?;
                    }
                    _ => {
                        let batch: Vec<Envelope> = (0..events)
                            .map(|i| Envelope::new(&event(n * events + i), "bench"))
                            .collect::<Result<_, _>>()?;
                        outbox.store_batch(&txn, batch).await?;
                    }
                }
                txn.commit().await?;
            }
            *seconds.entry(events).or_default() += started.elapsed().as_secs_f64();
        }
    }
    schema.try_drop().await?;
    let rate = |events: usize| 2.0 * size.store_transactions as f64 / seconds[&events];
    report.add("store", "business transaction alone", rate(0), "tx/s");
    let one = seconds[&1] / seconds[&0];
    report
        .add("store", "... plus one event (1 KiB)", rate(1), "tx/s")
        .ratio(one, "the time of the transaction alone")
        .target("< 1.5x", one < 1.5);
    let ten = seconds[&10] / seconds[&0];
    report
        .add("store", "... plus 10 events in one batch", rate(10), "tx/s")
        .ratio(ten, "the time of the transaction alone")
        .target("< 2x", ten < 2.0);
    concurrent_wake_cost(url, size, report).await
}

/// How a wake-up is sent, for [`concurrent_wake_cost`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Wakeup {
    /// No cross-process wake-up.
    None,
    /// The outbox's own: a coalesced NOTIFY after the store, outside the transaction.
    After,
    /// A NOTIFY inside the caller's transaction (what the outbox does not do).
    Inside,
}

/// Eight writers at once, one event per transaction: the cost of a NOTIFY inside the
/// transaction (PostgreSQL serialises the commits of transactions that notified)
/// against the outbox's wake-up outside it, and against none.
async fn concurrent_wake_cost(url: &str, size: &Size, report: &mut Report) -> Result<(), Failure> {
    const WRITERS: usize = 8;
    let schema = migrated_schema(url, WRITERS as u32 + 2).await?;
    let per_writer = (size.store_transactions / WRITERS).max(1);
    let mut seconds: HashMap<Wakeup, f64> = HashMap::new();
    for _round in 0..2 {
        for wakeup in [Wakeup::None, Wakeup::After, Wakeup::Inside] {
            let outbox = match wakeup {
                Wakeup::After => Outbox::new().with_wake_connection(&schema.db),
                Wakeup::None | Wakeup::Inside => Outbox::new(),
            };
            let started = Instant::now();
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (db, outbox) = (schema.db.clone(), outbox.clone());
                    tokio::spawn(async move {
                        for n in 0..per_writer {
                            let txn = db.begin().await?;
                            outbox
                                .store(&txn, &event(w * per_writer + n), "bench")
                                .await?;
                            if wakeup == Wakeup::Inside {
                                txn.execute_unprepared("SELECT pg_notify('bench_wake', '')")
                                    .await?;
                            }
                            txn.commit().await?;
                        }
                        Ok::<_, Failure>(())
                    })
                })
                .collect();
            for writer in writers {
                writer.await??;
            }
            *seconds.entry(wakeup).or_default() += started.elapsed().as_secs_f64();
        }
    }
    schema.try_drop().await?;
    let rate = |wakeup| 2.0 * (per_writer * WRITERS) as f64 / seconds[&wakeup];
    let scenario = "store, 8 writers at once";
    report.add(
        scenario,
        "one event, no wake-up",
        rate(Wakeup::None),
        "tx/s",
    );
    let after = rate(Wakeup::After) / rate(Wakeup::None);
    report
        .add(
            scenario,
            "... wake-up after the store (the default)",
            rate(Wakeup::After),
            "tx/s",
        )
        .ratio(after, "the throughput without")
        .target(">= 0.9x", after >= 0.9);
    report
        .add(
            scenario,
            "... NOTIFY inside the transaction",
            rate(Wakeup::Inside),
            "tx/s",
        )
        .ratio(
            rate(Wakeup::Inside) / rate(Wakeup::None),
            "the throughput without",
        );
    Ok(())
}

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
async fn latency(
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
        let mut outbox = Outbox::new();
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
        consumer.abort();
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

/// The latency scenarios' relays: the defaults, with the `OUTBOX_*` variables set
/// (to try settings without rebuilding), service `latency`.
fn latency_config() -> Result<RelayConfig, Failure> {
    Ok(RelayConfig {
        service_name: "latency".to_owned(),
        ..RelayConfig::from_env()?
    })
}

/// Produce-to-consume percentiles of the broker alone, in milliseconds.
struct Floor {
    p50: f64,
    p99: f64,
}

/// The broker's own latency at `size.rate`: 1 KiB messages sent straight with the
/// relay's producer settings, timed from the send to the consumer.
async fn broker_floor(brokers: &str, size: &Size) -> Result<Floor, Failure> {
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
    consumer.abort();
    let latencies = latencies(&sent, &received)?;
    Ok(Floor {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// One event stored and received, so the consumer has joined and the relays run.
async fn warm_up(
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
async fn steady_writers(
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
async fn sparse_after_idle(
    url: &str,
    brokers: &str,
    size: &Size,
    floor: &Floor,
    report: &mut Report,
) -> Result<(), Failure> {
    let schema = migrated_schema(url, 4).await?;
    let topic = create_topic(brokers, 4).await?;
    let outbox = Outbox::new().with_wake_connection(&schema.db);
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
    consumer.abort();
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
async fn slowest_relay_share(
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
fn note_skipped(report: &mut Report, scenario: &'static str, skipped: usize) {
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

/// Milliseconds from each commit (or send) to its arrival, sorted.
fn latencies(
    committed: &[(String, Instant)],
    received: &Mutex<HashMap<String, Instant>>,
) -> Result<Vec<f64>, Failure> {
    let received = received.lock().map_err(|_| "poisoned")?;
    let mut latencies: Vec<f64> = committed
        .iter()
        .filter_map(|(id, at)| {
            received
                .get(id)
                .map(|got| got.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        return Err("no latency measured".into());
    }
    Ok(latencies)
}

/// The `q` quantile of sorted `values`.
fn percentile(values: &[f64], q: f64) -> f64 {
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// Relay processes of the benchmark's; killed when dropped, so a scenario that fails
/// leaves none running (they would load the database under every later figure).
#[derive(Default)]
struct Relays(Vec<Child>);

impl Drop for Relays {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `count` relay processes (this binary's `relay-process`) on `schema`.
fn spawn_relays(url: &str, brokers: &str, schema: &str, count: usize) -> Result<Relays, Failure> {
    let mut relays = Relays::default();
    for _ in 0..count {
        let child = Command::new(std::env::current_exe()?)
            .args([
                "--database-url",
                url,
                "--brokers",
                brokers,
                "relay-process",
                "--schema",
                schema,
            ])
            .spawn()?;
        relays.0.push(child);
    }
    Ok(relays)
}

/// Stops relay processes gracefully (SIGTERM) and waits for them.
fn stop(mut relays: Relays) -> Result<(), Failure> {
    for mut child in std::mem::take(&mut relays.0) {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait()?;
    }
    Ok(())
}

/// An idle relay's queries a second: its database's transactions over
/// `size.idle_measure`, after `size.idle_warm`. The relay has a database of its own,
/// so nothing else in the server (other scenarios' leftovers, autovacuum in a busy
/// database) is counted; the counter is read from another database.
async fn idle_relay(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let admin = Database::connect(url).await?;
    let name = format!("bench_idle_{}", Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let result = idle_relay_in(&admin, &with_database(url, &name)?, &name, brokers, size).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await?;
    let rate = result?;
    report
        .add(
            "idle relay",
            format!(
                "database queries a second over {}s",
                size.idle_measure.as_secs()
            ),
            rate,
            "/s",
        )
        .target("about 1/s (<= 1.2)", rate <= 1.2);
    Ok(())
}

async fn idle_relay_in(
    admin: &DatabaseConnection,
    url: &str,
    name: &str,
    brokers: &str,
    size: &Size,
) -> Result<f64, Failure> {
    let mut options = ConnectOptions::new(url);
    options.max_connections(4).sqlx_logging(false);
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    let relay = Relay::new(
        RelayConfig::new("idle"),
        db.clone(),
        KafkaPublisher::new(brokers)?,
    )?
    .spawn();
    tokio::time::sleep(size.idle_warm).await;
    let before = transactions(admin, name).await?;
    tokio::time::sleep(size.idle_measure).await;
    let during = transactions(admin, name).await?.saturating_sub(before);
    relay.shutdown().await?;
    db.close().await?;
    #[allow(clippy::cast_precision_loss)] // a few hundred
    Ok(during as f64 / size.idle_measure.as_secs_f64())
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> Result<String, Failure> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("//"))
        .ok_or_else(|| format!("no database in the URL {url:?}"))?;
    Ok(match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    })
}

/// The committed and rolled-back transactions of `database` so far, read by `admin`
/// (connected to another database).
async fn transactions(admin: &DatabaseConnection, database: &str) -> Result<u64, Failure> {
    // The statistics of this backend's own transactions are flushed when it is idle;
    // ask for a snapshot that includes everyone's.
    admin
        .execute_unprepared("SELECT pg_stat_clear_snapshot()")
        .await?;
    let row = admin
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT (xact_commit + xact_rollback)::BIGINT AS n FROM pg_stat_database WHERE datname = $1",
            [database.into()],
        ))
        .await?
        .ok_or("no pg_stat_database row")?;
    Ok(u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0))
}

fn spawn_consumer(
    brokers: &str,
    topic: &str,
    received: Arc<Mutex<HashMap<String, Instant>>>,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{}", Uuid::now_v7().simple()))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(tokio::spawn(async move {
        while let Ok(message) = consumer.recv().await {
            let now = Instant::now();
            let id = message.headers().and_then(|hs| {
                hs.iter()
                    .find(|h| h.key == "event_id")
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            });
            if let (Some(id), Ok(mut received)) = (id, received.lock()) {
                received.entry(id).or_insert(now);
            }
        }
    }))
}

async fn wait_for(
    received: &Mutex<HashMap<String, Instant>>,
    ids: &[String],
    timeout: Duration,
) -> Result<(), Failure> {
    let missing = missing_after(received, ids, timeout).await?;
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} events did not arrive within {timeout:?} (the first: {first})",
            missing.len()
        )
        .into()),
    }
}

/// Of `ids`, those not received within `timeout`.
async fn missing_after(
    received: &Mutex<HashMap<String, Instant>>,
    ids: &[String],
    timeout: Duration,
) -> Result<Vec<String>, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<String> = {
            let received = received.lock().map_err(|_| "poisoned")?;
            ids.iter()
                .filter(|id| !received.contains_key(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() || Instant::now() > deadline {
            return Ok(missing);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for `ids` to reach the scenario's consumer; those it never sees are looked
/// for in `topic` from its beginning by a consumer of a new group. Returns how many
/// only that second look found: the test broker's consumer fetch sometimes skips a
/// record that two producers (two relay processes) appended to one partition at
/// once, though the record is in the log. Those events have no latency sample.
async fn arrived(
    brokers: &str,
    topic: &str,
    received: &Mutex<HashMap<String, Instant>>,
    ids: &[String],
) -> Result<usize, Failure> {
    let missing = missing_after(received, ids, Duration::from_secs(20)).await?;
    if missing.is_empty() {
        return Ok(0);
    }
    let in_log: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer = spawn_consumer(brokers, topic, Arc::clone(&in_log))?;
    let still = missing_after(&in_log, &missing, Duration::from_secs(60)).await;
    consumer.abort();
    let still = still?;
    match still.first() {
        None => Ok(missing.len()),
        Some(first) => Err(format!(
            "{} events are not in the topic {topic} 80s after their commit (the first: {first})",
            still.len()
        )
        .into()),
    }
}

/// Scale: 1, 2 and 4 relays of one service; and one relay with published history kept.
/// Each configuration runs `ROUNDS` times, interleaved, and reports its median: single
/// runs on a shared 2-core machine vary by 15%, more than the targets allow.
async fn scale(url: &str, brokers: &str, size: &Size, report: &mut Report) -> Result<(), Failure> {
    const ROUNDS: usize = 3;
    let events = size.scale_events;
    // The history schema is filled once; each round adds its pending events on top.
    let history = migrated_schema(url, 16).await?;
    history
        .db
        .execute_unprepared(&format!(
            "INSERT INTO _outbox (id, event_type, aggregate_id, event_data, destination_topic, partition_key, shard, published, published_at) \
             SELECT gen_random_uuid(), 'bench.old', 'key-' || (g % 64), jsonb_build_object('filler', repeat('x', 1000)), 'old', \
                    'key-' || (g % 64), g % 16, TRUE, now() FROM generate_series(1, {}) g",
            size.retained
        ))
        .await?;
    history
        .db
        .execute_unprepared("VACUUM ANALYZE _outbox")
        .await?;

    let mut rates: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for _round in 0..ROUNDS {
        for (name, relay_count) in [("1", 1), ("2", 2), ("4", 4)] {
            let schema = migrated_schema(url, 16).await?;
            let topic = create_topic(brokers, 8).await?;
            preload(&schema.db, &topic, events).await?;
            let rate = drain(
                &schema.db,
                &KafkaPublisher::new(brokers)?,
                relay_count,
                events,
            )
            .await?;
            schema.try_drop().await?;
            rates.entry(name).or_default().push(rate);
        }
        let topic = create_topic(brokers, 8).await?;
        preload(&history.db, &topic, events).await?;
        let rate = drain(&history.db, &KafkaPublisher::new(brokers)?, 1, events).await?;
        rates.entry("history").or_default().push(rate);
    }
    history.try_drop().await?;
    let median = |name: &str| {
        let mut values = rates.get(name).cloned().unwrap_or_default();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let single = median("1");
    report.add(
        "scale",
        format!("1 relay, {events} events (median of {ROUNDS})"),
        single,
        "events/s",
    );
    for (name, relay_count) in [("2", 2), ("4", 4)] {
        let rate = median(name);
        report
            .add("scale", format!("{relay_count} relays"), rate, "events/s")
            .ratio(rate / single, "of one relay")
            .target(">= 1x (0.95 allowed for noise)", rate / single >= 0.95);
    }
    let rate = median("history");
    report
        .add(
            "scale",
            format!("1 relay, {} published rows retained", size.retained),
            rate,
            "events/s",
        )
        .ratio(rate / single, "of one relay, none retained")
        .target(">= 0.9x", rate / single >= 0.9);
    Ok(())
}

/// The relay of the cross-process latency scenario: runs until SIGTERM or Ctrl-C.
pub(crate) async fn relay_process(url: &str, brokers: &str, schema: &str) -> Result<(), Failure> {
    let db = connect(url, schema, 8).await?;
    let relay = Relay::new(latency_config()?, db, KafkaPublisher::new(brokers)?)?.spawn();
    outbox::shutdown_signal().await?;
    relay.shutdown().await?;
    Ok(())
}

/// A publisher that notes, for each event, when the relay handed it over and when
/// the broker acknowledged it, to split the in-process latency into its stages.
#[derive(Debug)]
struct Timed<P> {
    inner: P,
    times: Arc<Mutex<HashMap<String, (Instant, Instant)>>>,
}

impl<P: outbox::Publisher> outbox::Publisher for Timed<P> {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), outbox::PublishError>> {
        let handed = Instant::now();
        let outcomes = self.inner.publish(batch).await;
        let acked = Instant::now();
        if let Ok(mut times) = self.times.lock() {
            for (message, outcome) in batch.iter().zip(&outcomes) {
                if outcome.is_ok() {
                    times.insert(message.id.to_string(), (handed, acked));
                }
            }
        }
        outcomes
    }

    async fn check(&self) -> Result<(), outbox::PublishError> {
        self.inner.check().await
    }
}

/// Where the in-process relay's latency goes: for the median event and on average
/// over the slowest 1%, the time from commit to the relay's hand-over to the
/// producer (wake-up, waiting for the shard's batch before, claim), from hand-over
/// to the broker's acknowledgement, and from commit to receipt.
fn stages(
    report: &mut Report,
    scenario: &'static str,
    committed: &[(String, Instant)],
    received: &Mutex<HashMap<String, Instant>>,
    times: &Mutex<HashMap<String, (Instant, Instant)>>,
) -> Result<(), Failure> {
    let received = received.lock().map_err(|_| "poisoned")?;
    let times = times.lock().map_err(|_| "poisoned")?;
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1000.0;
    // (commit to receipt, commit to hand-over, hand-over to ack)
    let mut samples: Vec<(f64, f64, f64)> = committed
        .iter()
        .filter_map(|(id, at)| {
            let (handed, acked) = times.get(id)?;
            Some((
                ms(*at, *received.get(id)?),
                ms(*at, *handed),
                ms(*handed, *acked),
            ))
        })
        .collect();
    if samples.is_empty() {
        return Err("no stage timings".into());
    }
    let median = |pick: fn(&(f64, f64, f64)) -> f64| {
        let mut values: Vec<f64> = samples.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        percentile(&values, 0.5)
    };
    report.add(
        scenario,
        "stage p50: commit to hand-over (claim)",
        median(|s| s.1),
        "ms",
    );
    report.add(
        scenario,
        "stage p50: hand-over to broker ack",
        median(|s| s.2),
        "ms",
    );
    samples.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest = &samples[..samples.len().div_ceil(100)];
    #[allow(clippy::cast_precision_loss)] // at most a few hundred
    let mean = |pick: fn(&(f64, f64, f64)) -> f64| {
        slowest.iter().map(pick).sum::<f64>() / slowest.len() as f64
    };
    report.add(
        scenario,
        "slowest 1%: commit to receipt (mean)",
        mean(|s| s.0),
        "ms",
    );
    report.add(
        scenario,
        "slowest 1%: commit to hand-over (mean)",
        mean(|s| s.1),
        "ms",
    );
    report.add(
        scenario,
        "slowest 1%: hand-over to broker ack (mean)",
        mean(|s| s.2),
        "ms",
    );
    Ok(())
}
