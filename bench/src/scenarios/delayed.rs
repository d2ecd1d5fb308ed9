//! Relay throughput with events waiting for a due time next week in the scheduled
//! table, against none, in the same run.

use std::time::Duration;

use outbox::{Envelope, Outbox};
use sea_orm::ConnectionTrait;

use super::fixtures::{
    analyze, checkpoint, create_topic, drain_with, event, machine, migrated_database, preload,
    relay_config,
};
use super::probes::median;
use super::report::Report;
use super::{Failure, Size};

/// The delayed scenario alone.
pub(crate) async fn run_delayed(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = Report {
        quick: size.quick,
        machine: machine(url, brokers, size).await?,
        ..Report::default()
    };
    delayed(url, brokers, size, &mut report).await?;
    Ok(report)
}

/// `size.delayed_events` preloaded and drained by one relay, in a database without
/// scheduled events and in one with `size.scheduled` due in a week, in rounds whose
/// order alternates; the medians.
pub(super) async fn delayed(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let topic = create_topic(brokers, 8).await?;
    let publisher = outbox::KafkaPublisher::new(brokers)?;
    let rounds = if size.quick { 1 } else { 3 };
    let (mut none, mut waiting) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for with_scheduled in [round % 2 == 1, round % 2 == 0] {
            let rate = drain(url, &topic, &publisher, size, with_scheduled).await?;
            if with_scheduled {
                waiting.push(rate);
            } else {
                none.push(rate);
            }
        }
    }
    let scenario = "delayed events";
    let none = median(none);
    report.add(
        scenario,
        format!("one relay, end to end, nothing scheduled (median of {rounds})"),
        none,
        "events/s",
    );
    let waiting = median(waiting);
    report
        .add(
            scenario,
            format!(
                "the same with {} events due in a week waiting (median of {rounds})",
                size.scheduled
            ),
            waiting,
            "events/s",
        )
        .ratio(waiting / none, "of nothing scheduled")
        .target(">= 0.9x", waiting / none >= 0.9);
    Ok(())
}

/// One drain of `size.delayed_events` in a new database, with `size.scheduled` events
/// due in a week stored first when `with_scheduled`: events a second.
async fn drain(
    url: &str,
    topic: &str,
    publisher: &outbox::KafkaPublisher,
    size: &Size,
    with_scheduled: bool,
) -> Result<f64, Failure> {
    let database = migrated_database(url, 10).await?;
    let db = database.db();
    if with_scheduled {
        let outbox = Outbox::new();
        let week = Duration::from_secs(7 * 24 * 60 * 60);
        let mut n = 0;
        while n < size.scheduled {
            let chunk: Vec<Envelope> = (n..size.scheduled.min(n + 2000))
                .map(|i| Envelope::new(&event(i), topic).map(|e| e.delay(week)))
                .collect::<Result<_, _>>()?;
            n += chunk.len();
            outbox.store_batch(db, chunk).await?;
        }
        db.execute_unprepared("ANALYZE _outbox_scheduled").await?;
    }
    checkpoint(db).await;
    preload(db, topic, size.delayed_events).await?;
    analyze(db).await?;
    let rate = drain_with(
        db,
        publisher,
        1,
        size.delayed_events,
        &relay_config("bench-delayed"),
        &Outbox::new(),
    )
    .await?;
    database.try_drop().await?;
    Ok(rate)
}
