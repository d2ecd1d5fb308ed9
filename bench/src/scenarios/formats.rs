//! Relay throughput per message format, against `native` in the same run.

use std::collections::HashMap;

use outbox::{KafkaPublisher, MessageFormat, Outbox, RelayConfig};

use super::fixtures::{
    analyze, checkpoint, create_topic, drain_with, machine, migrated_database, preload,
    relay_config,
};
use super::probes::median;
use super::report::Report;
use super::{Failure, Size};

/// The formats scenario alone.
pub(crate) async fn run_formats(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = Report {
        quick: size.quick,
        machine: machine(url, brokers, size).await?,
        ..Report::default()
    };
    formats(url, brokers, size, &mut report).await?;
    Ok(report)
}

/// One relay end to end on the same preloaded events in each format, in rounds whose
/// order rotates; the medians, each against `native`'s.
pub(super) async fn formats(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let events = size.format_events;
    let topic = create_topic(brokers, 8).await?;
    let publisher = KafkaPublisher::new(brokers)?;
    let rounds = if size.quick { 1 } else { 3 };
    let formats = MessageFormat::ALL;
    let mut samples: HashMap<MessageFormat, Vec<f64>> = HashMap::new();
    for round in 0..rounds {
        for turn in 0..formats.len() {
            let format = formats[(round + turn) % formats.len()];
            let database = migrated_database(url, 10).await?;
            let db = database.db();
            checkpoint(db).await;
            preload(db, &topic, events).await?;
            analyze(db).await?;
            let config = RelayConfig {
                format,
                concurrency: size.concurrency,
                ..relay_config("bench")
            };
            let rate = drain_with(db, &publisher, 1, events, &config, &Outbox::new()).await?;
            samples.entry(format).or_default().push(rate);
            database.try_drop().await?;
        }
    }
    let median_of = |format| median(samples.get(&format).into_iter().flatten().copied());
    let native = median_of(MessageFormat::Native);
    for format in formats {
        let rate = median_of(format);
        let row = report.add(
            "formats",
            format!("{format}: one relay, end to end (median of {rounds})"),
            rate,
            "events/s",
        );
        if format != MessageFormat::Native {
            row.ratio(rate / native, "of native")
                .target(">= 0.95x", rate / native >= 0.95);
        }
    }
    Ok(())
}
