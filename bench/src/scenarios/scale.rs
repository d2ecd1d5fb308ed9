//! Scale: several relays, and retained history.

use std::collections::HashMap;

use outbox::{Completion, KafkaPublisher, Outbox};
use sea_orm::ConnectionTrait;

use super::fixtures::{create_topic, drain, drain_with, migrated_schema, preload, relay_config};
use super::probes::median;
use super::report::Report;
use super::{Failure, Size};

/// Scale: 1, 2 and 4 relays of one service; and one relay with published history kept
/// (marking) or a full archive (archiving), against the same mode with none.
/// Each configuration runs `ROUNDS` times, interleaved, and reports its median: single
/// runs on a shared 2-core machine vary by 15%, more than the targets allow.
pub(super) async fn scale(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
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
    // The same rows in the archive, for the relay that archives.
    for statement in [
        "INSERT INTO _outbox_published SELECT * FROM _outbox",
        "VACUUM ANALYZE _outbox",
        "VACUUM ANALYZE _outbox_published",
    ] {
        history.db.execute_unprepared(statement).await?;
    }

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
        // One relay per completion mode with nothing retained, and the same on the
        // schema with the history (marking) or the archive (archiving) full.
        for (name, completion, retained) in [
            ("mark", Completion::Mark, false),
            ("archive", Completion::Archive, false),
            ("history", Completion::Mark, true),
            ("archived", Completion::Archive, true),
        ] {
            let fresh = if retained {
                None
            } else {
                Some(migrated_schema(url, 16).await?)
            };
            let db = fresh.as_ref().map_or(&history.db, |schema| &schema.db);
            let topic = create_topic(brokers, 8).await?;
            preload(db, &topic, events).await?;
            let config = relay_config("bench");
            let outbox = Outbox::new().with_completion(completion);
            let publisher = KafkaPublisher::new(brokers)?;
            let rate = drain_with(db, &publisher, 1, events, &config, &outbox).await?;
            rates.entry(name).or_default().push(rate);
            if let Some(schema) = fresh {
                schema.try_drop().await?;
            }
        }
    }
    history.try_drop().await?;
    let median = |name: &str| median(rates.get(name).into_iter().flatten().copied());
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
    for (name, none, what) in [
        ("history", "mark", "published rows retained"),
        ("archived", "archive", "rows in the archive"),
    ] {
        let (rate, without) = (median(name), median(none));
        report
            .add(
                "scale",
                format!("{none}: 1 relay, {} {what}", size.retained),
                rate,
                "events/s",
            )
            .ratio(rate / without, "of the same mode, none retained")
            .target(">= 0.9x", rate / without >= 0.9);
    }
    Ok(())
}
