//! Relay throughput over many databases (one fleet process) against one database of
//! the same events, in the same run; and the commit-to-consume latency of one database
//! at a low rate among idle ones, against one relay on one database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox::fleet::{DatabaseEntry, Fleet, FleetConfig};
use outbox::{KafkaPublisher, Outbox, Relay};
use outbox_migration::Migrator;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

use super::fixtures::{
    analyze, checkpoint, create_topic, drain_with, event, machine, migrated_database, preload,
    relay_config,
};
use super::latency::warm_up;
use super::probes::{arrived, latencies, median, percentile, spawn_consumer};
use super::report::Report;
use super::{Failure, Size};

/// The databases the fleet serves.
const DATABASES: usize = 8;

/// The fleet scenario alone.
pub(crate) async fn run_fleet(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = Report {
        quick: size.quick,
        machine: machine(url, brokers, size).await?,
        ..Report::default()
    };
    fleet(url, brokers, size, &mut report).await?;
    Ok(report)
}

/// The same events, preloaded once in one database and once spread over
/// [`DATABASES`], each drained end to end (one relay; one fleet process), in rounds
/// whose order alternates; the medians, the fleet's against one database's.
pub(super) async fn fleet(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let events = size.fleet_events - size.fleet_events % DATABASES;
    let topic = create_topic(brokers, 8).await?;
    let publisher = KafkaPublisher::new(brokers)?;
    let rounds = if size.quick { 1 } else { 3 };
    let variants = variants();
    let mut one = Vec::new();
    let mut many: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for fleet_first in [round % 2 == 1, round % 2 == 0] {
            if fleet_first {
                for (samples, (_, concurrency, connections)) in many.iter_mut().zip(&variants) {
                    let rate = spread(url, &topic, &publisher, events, *concurrency, *connections);
                    samples.push(rate.await?);
                }
            } else {
                one.push(single(url, &topic, &publisher, events).await?);
            }
        }
    }
    let one = median(one);
    report.add(
        "fleet",
        format!("one database, one relay, end to end (median of {rounds})"),
        one,
        "events/s",
    );
    for (samples, (name, _, _)) in many.into_iter().zip(variants) {
        let many = median(samples);
        let ratio = many / one;
        let row = report
            .add(
                "fleet",
                format!("{DATABASES} databases, one fleet process, {name} (median of {rounds})"),
                many,
                "events/s",
            )
            .ratio(ratio, "of one database");
        if name == "defaults" {
            row.target(">= 0.9x", ratio >= 0.9);
        }
    }
    low_rate_latency(url, brokers, size, report).await
}

/// Events a second the active database stores in the latency rows.
const FLEET_RATE: u64 = 20;

/// The commit-to-consume latency of events stored at [`FLEET_RATE`] a second, each in
/// a transaction of its own by a writer that wakes the relays through PostgreSQL (as
/// one in another process does): first in one database served by one relay, then in
/// one database of a fleet process serving `size.fleet_idle` idle ones beside it
/// (fewer when the server cannot hold their connections: the row says how many).
/// PostgreSQL only: the databases are databases of their own on the server of `url`.
async fn low_rate_latency(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let scenario = "fleet latency (one database at 20 events/s)";
    if !url.starts_with("postgres") {
        return Ok(());
    }
    let publisher = KafkaPublisher::new(brokers)?;
    let config = relay_config("bench-fleet-latency");

    let single = TenantDatabase::create(url, 4).await?;
    let relay = Relay::new(config.clone(), single.db.clone(), publisher.clone())?.spawn();
    let alone = at_low_rate(&single.db, brokers, size).await?;
    relay.shutdown().await?;
    single.drop(url).await?;

    let idle = idle_databases_that_fit(url, size.fleet_idle).await?;
    let mut tenants = Vec::new();
    for n in 0..=idle {
        // Only the active database keeps a pool here; the idle ones are the fleet's.
        let tenant = TenantDatabase::create(url, if n == 0 { 4 } else { 1 }).await?;
        if n > 0 {
            tenant.db.clone().close().await?;
        }
        tenants.push(tenant);
    }
    let entries = tenants
        .iter()
        .enumerate()
        .map(|(n, tenant)| DatabaseEntry::new(format!("t{n:02}"), tenant.url.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let fleet = Fleet::new(config, entries, publisher)?.spawn();
    let served = Instant::now() + Duration::from_secs(60);
    while fleet.databases().len() <= idle || fleet.healthcheck().is_err() {
        if Instant::now() > served {
            return Err(format!(
                "the fleet did not serve its {} databases within 60 s",
                idle + 1
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let among_idle = at_low_rate(&tenants[0].db, brokers, size).await?;
    fleet.shutdown().await;
    for tenant in tenants {
        tenant.drop(url).await?;
    }

    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let one = percentile(&alone, p);
        let many = percentile(&among_idle, p);
        report.add(
            scenario,
            format!("{name}, one relay on one database"),
            one,
            "ms",
        );
        let row = report
            .add(
                scenario,
                format!("{name}, in a fleet process beside {idle} idle databases"),
                many,
                "ms",
            )
            .ratio(many / one, "of one database");
        if name == "p99" {
            row.target("<= 2x", many <= 2.0 * one);
        }
    }
    Ok(())
}

/// Stores `size.fleet_latency_events` at [`FLEET_RATE`] a second in `db` and returns
/// each one's milliseconds from commit to consume, sorted.
async fn at_low_rate(
    db: &DatabaseConnection,
    brokers: &str,
    size: &Size,
) -> Result<Vec<f64>, Failure> {
    let topic = create_topic(brokers, 4).await?;
    let outbox = Outbox::new().with_wake_connection(db);
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer = spawn_consumer(brokers, &topic, Arc::clone(&received))?;
    warm_up(db, &outbox, &topic, &received).await?;
    let every = Duration::from_millis(1000 / FLEET_RATE);
    let mut next = Instant::now();
    let mut committed = Vec::with_capacity(size.fleet_latency_events);
    for n in 0..size.fleet_latency_events {
        next += every;
        tokio::time::sleep_until(next.into()).await;
        let txn = db.begin().await?;
        let id = outbox.store(&txn, &event(n), &topic).await?;
        txn.commit().await?;
        committed.push((id.to_string(), Instant::now()));
    }
    let ids: Vec<String> = committed.iter().map(|(id, _)| id.clone()).collect();
    arrived(brokers, &topic, &received, &ids).await?;
    consumer.stop();
    latencies(&committed, &received)
}

/// How many idle databases of `wanted` the server can serve beside the active one:
/// each takes a pool and a listening connection of the fleet's, and the server keeps
/// some connections for the rest of the machine.
async fn idle_databases_that_fit(url: &str, wanted: usize) -> Result<usize, Failure> {
    let admin = Database::connect(url).await?;
    let row = admin
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_setting('max_connections')::int - (SELECT count(*) FROM pg_stat_activity)::int AS free",
        ))
        .await?
        .ok_or("no row")?;
    admin.close().await?;
    let free = usize::try_from(row.try_get::<i32>("", "free")?).unwrap_or(0);
    let per_database = FleetConfig::default().connections as usize + 1;
    // The active database's pools (the fleet's and the writer's) and room to spare.
    let fit = free.saturating_sub(30) / per_database;
    Ok(wanted.min(fit.saturating_sub(1)))
}

/// A PostgreSQL database of its own on the server of a URL, migrated.
struct TenantDatabase {
    name: String,
    url: String,
    db: DatabaseConnection,
}

impl TenantDatabase {
    async fn create(server: &str, connections: u32) -> Result<Self, Failure> {
        let name = format!("bench_{}", Uuid::now_v7().simple());
        let admin = Database::connect(server).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        admin.close().await?;
        let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
        let url = format!("{base}/{name}");
        let mut options = ConnectOptions::new(url.clone());
        options.max_connections(connections).sqlx_logging(false);
        let db = Database::connect(options).await?;
        Migrator::up(&db, None).await?;
        Ok(TenantDatabase { name, url, db })
    }

    async fn drop(self, server: &str) -> Result<(), Failure> {
        self.db.close().await?;
        let admin = Database::connect(server).await?;
        admin
            .execute_unprepared(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await?;
        admin.close().await?;
        Ok(())
    }
}

/// The fleet settings measured: a name, each relay's concurrency and each pool's
/// connections (`None`: the defaults).
fn variants() -> Vec<(&'static str, Option<usize>, Option<u32>)> {
    vec![
        ("defaults", None, None),
        ("1 batch at a time per database", Some(1), None),
        ("pools of 10", None, Some(10)),
    ]
}

/// `events` in one database, drained by one relay: events a second.
async fn single(
    url: &str,
    topic: &str,
    publisher: &KafkaPublisher,
    events: usize,
) -> Result<f64, Failure> {
    let database = migrated_database(url, 10).await?;
    let db = database.db();
    checkpoint(db).await;
    preload(db, topic, events).await?;
    analyze(db).await?;
    let rate = drain_with(
        db,
        publisher,
        1,
        events,
        &relay_config("bench"),
        &Outbox::new(),
    )
    .await?;
    database.try_drop().await?;
    Ok(rate)
}

/// `events` spread over [`DATABASES`] databases, drained by one fleet process with
/// its default settings: events a second.
async fn spread(
    url: &str,
    topic: &str,
    publisher: &KafkaPublisher,
    events: usize,
    concurrency: Option<usize>,
    connections: Option<u32>,
) -> Result<f64, Failure> {
    let mut databases = Vec::new();
    for _ in 0..DATABASES {
        databases.push(migrated_database(url, 2).await?);
    }
    // Before the preload, as for one database: after it, the drain would write a full
    // page image at its first change to every page, which the one database's drain
    // does not (see `checkpoint`).
    if let Some(first) = databases.first() {
        checkpoint(first.db()).await;
    }
    for database in &databases {
        preload(database.db(), topic, events / DATABASES).await?;
        analyze(database.db()).await?;
    }
    let entries = databases
        .iter()
        .enumerate()
        .map(|(n, database)| DatabaseEntry::new(format!("db{n}"), database.url()))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let mut config = relay_config("bench-fleet");
    if let Some(concurrency) = concurrency {
        config.concurrency = concurrency;
    }
    let mut settings = FleetConfig::default();
    if let Some(connections) = connections {
        settings.connections = connections;
    }
    let fleet = Fleet::new(config, entries, publisher.clone())?
        .with_config(settings)
        .spawn();
    let target = events as u64;
    while fleet.published() < target {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    fleet.shutdown().await;
    for database in databases {
        database.try_drop().await?;
    }
    Ok(events as f64 / elapsed.as_secs_f64())
}
