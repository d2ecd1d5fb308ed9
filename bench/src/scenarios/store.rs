//! Store overhead: a business transaction with and without storing events.

use std::collections::HashMap;
use std::time::Instant;

use outbox::{Envelope, Outbox};
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use uuid::Uuid;

use super::fixtures::{event, machine, migrated_schema};
use super::report::Report;
use super::{Failure, Size};

pub(crate) async fn run_store(url: &str, brokers: &str, size: &Size) -> Result<Report, Failure> {
    let mut report = Report {
        quick: size.quick,
        machine: machine(url, brokers, size).await?,
        ..Report::default()
    };
    store_overhead(url, size, &mut report).await?;
    Ok(report)
}

/// Store overhead: a business transaction with and without storing events.
pub(super) async fn store_overhead(
    url: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
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
pub(super) enum Wakeup {
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
pub(super) async fn concurrent_wake_cost(
    url: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
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
