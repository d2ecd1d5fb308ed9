//! Relay throughput over many databases (one fleet process) against one database of
//! the same events, in the same run.

use std::time::{Duration, Instant};

use outbox::fleet::{DatabaseEntry, Fleet, FleetConfig};
use outbox::{KafkaPublisher, Outbox};

use super::fixtures::{
    analyze, checkpoint, create_topic, drain_with, machine, migrated_database, preload,
    relay_config,
};
use super::probes::median;
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
    Ok(())
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
        let database = migrated_database(url, 2).await?;
        preload(database.db(), topic, events / DATABASES).await?;
        analyze(database.db()).await?;
        databases.push(database);
    }
    if let Some(first) = databases.first() {
        checkpoint(first.db()).await;
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
