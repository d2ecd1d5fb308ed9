//! The claim behind a blocked key: flowing keys beside a pile of parked events.

use std::time::Duration;

use outbox::{EventBuilder, NoOpPublisher, Outbox, RelayConfig};
use sea_orm::ConnectionTrait;

use super::fixtures::{drain_with, machine, migrated_schema, payload, preload_keys, relay_config};
use super::report::Report;
use super::{Failure, Size};

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
pub(super) async fn blocked_key(
    url: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    for shards in [16, 1] {
        let shards = std::num::NonZeroU16::new(shards).ok_or("shards")?;
        let outbox = Outbox::new().with_shards(shards);
        let config = relay_config("bench");
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
pub(super) async fn flowing_throughput(
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
            retry_backoff: outbox::Backoff::new(
                Duration::from_secs(86_400),
                Duration::from_secs(86_400),
            ),
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
    let rate = drain_with(&schema.db, &NoOpPublisher, 1, size.flowing, config, outbox).await?;
    schema.try_drop().await?;
    Ok(rate)
}
