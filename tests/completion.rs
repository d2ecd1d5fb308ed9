//! The completion modes (mark, delete, archive) against PostgreSQL and SQLite: what
//! becomes of published rows, and that retries, dead letters, replay, the manual calls
//! and cleanup behave in each. (Fencing in every mode is in `relay.rs`.)

use std::collections::HashMap;
use std::time::Duration;

use outbox::entity::outbox as row;
use outbox::{
    Completion, Envelope, EventBuilder, FailureOutcome, MemoryPublisher, Outbox, PublishError,
    Relay, RelayConfig,
};
use outbox_tests::eventually;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder, Statement};
use serde_json::json;
use uuid::Uuid;

const MODES: [Completion; 3] = [Completion::Mark, Completion::Delete, Completion::Archive];

fn config(service: &str) -> RelayConfig {
    RelayConfig {
        interval: Duration::from_millis(100),
        min_poll_interval: Duration::from_millis(5),
        retry_backoff: outbox::Backoff::new(Duration::from_millis(100), Duration::from_millis(400)),
        lease_ttl: Duration::from_secs(2),
        retry_attempts: 1,
        batch_size: 20,
        ..RelayConfig::new(service)
    }
}

fn counter(key: &str, n: usize) -> Envelope {
    Envelope::new(
        &EventBuilder::new("counter.incremented", key).data(json!({ "n": n })),
        "counters",
    )
    .expect("a valid envelope")
}

/// The rows of the outbox table, in store order.
async fn outbox_rows(db: &DatabaseConnection) -> Vec<row::Model> {
    row::Entity::find()
        .order_by_asc(row::Column::Seq)
        .all(db)
        .await
        .expect("outbox rows")
}

/// The rows of the archive, in store order.
async fn archived_rows(db: &DatabaseConnection) -> Vec<row::Model> {
    let sql = "SELECT * FROM _outbox_published ORDER BY seq";
    row::Entity::find()
        .from_raw_sql(Statement::from_string(db.get_database_backend(), sql))
        .all(db)
        .await
        .expect("archived rows")
}

async fn clear(db: &DatabaseConnection) {
    for table in [
        "_outbox",
        "_outbox_published",
        "_outbox_lease",
        "_outbox_relay",
    ] {
        let sql = format!("DELETE FROM {table}");
        db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .expect("clear a table");
    }
}

/// For each mode: events of three keys, one of which fails once and is retried, and
/// one of which fails for good and is dead-lettered, then replayed. Every event is
/// published once, each key in order; the published rows end as the mode says, and
/// the failed events stay in the outbox table, with their state, until published.
async fn each_mode_completes_published_events_and_only_those(db: DatabaseConnection) {
    for mode in MODES {
        let outbox = Outbox::new().with_completion(mode);
        let envelopes: Vec<Envelope> = (0..4)
            .flat_map(|n| ["a", "retried", "dead"].map(|key| counter(key, n)))
            .collect();
        let ids = outbox.store_batch(&db, envelopes).await.expect("store");
        let key_of: HashMap<Uuid, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i % 3)).collect();
        let (retried, dead) = (ids[1], ids[2]);
        let publisher = MemoryPublisher::new();
        publisher.fail_next(retried, [PublishError::permanent("refused once")]);
        publisher.fail_next(
            dead,
            [
                PublishError::permanent("poison"),
                PublishError::permanent("poison"),
            ],
        );
        let relay = Relay::new(config("completion"), db.clone(), publisher.clone())
            .expect("valid config")
            .with_outbox(outbox.clone())
            .spawn();
        eventually(
            &format!("{mode}: all but the dead letter published"),
            Duration::from_secs(20),
            || async {
                outbox.pending(&db, 20).await.expect("pending").is_empty()
                    && outbox.dead_letters(&db, 20).await.expect("dead").len() == 1
            },
        )
        .await;

        let rows = outbox_rows(&db).await;
        let archived = archived_rows(&db).await;
        let published: Vec<Uuid> = ids.iter().copied().filter(|id| *id != dead).collect();
        match mode {
            Completion::Mark => {
                assert_eq!(rows.len(), ids.len(), "{mode}: every row stays");
                for row in rows.iter().filter(|row| row.id != dead) {
                    assert!(
                        row.published && row.published_at.is_some(),
                        "{mode}: marked"
                    );
                }
                assert!(archived.is_empty(), "{mode}: nothing archived");
            }
            Completion::Delete | Completion::Archive => {
                let left: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
                assert_eq!(left, [dead], "{mode}: only the dead letter stays");
            }
        }
        if mode == Completion::Archive {
            let moved: Vec<Uuid> = archived.iter().map(|row| row.id).collect();
            assert_eq!(
                moved, published,
                "{mode}: the published rows, in store order"
            );
            for row in &archived {
                assert!(row.published && row.published_at.is_some() && !row.parked);
                assert_eq!(
                    row.event_data["n"],
                    json!(ids.iter().position(|id| *id == row.id).expect("stored") / 3)
                );
            }
            let retried_row = archived
                .iter()
                .find(|row| row.id == retried)
                .expect("archived");
            assert_eq!(
                (retried_row.attempts, retried_row.error_message.as_deref()),
                (1, Some("refused once")),
                "{mode}: its history goes with it"
            );
        }
        let dead_row = &outbox.dead_letters(&db, 1).await.expect("dead")[0];
        assert_eq!((dead_row.id, dead_row.attempts), (dead, 2), "{mode}");

        // The operator replays the dead letter; it is published and completed too.
        outbox.replay(&db, dead).await.expect("replay");
        eventually(
            &format!("{mode}: the replayed event is published"),
            Duration::from_secs(20),
            || async {
                outbox.backlog(&db).await.expect("backlog").pending == 0
                    && outbox.dead_letters(&db, 1).await.expect("dead").is_empty()
            },
        )
        .await;
        relay.shutdown().await.expect("shutdown");

        let mut order: HashMap<usize, Vec<Uuid>> = HashMap::new();
        for message in publisher.messages() {
            let ids = order.entry(key_of[&message.id]).or_default();
            if !ids.contains(&message.id) {
                ids.push(message.id);
            }
        }
        for key in 0..3 {
            let expected: Vec<Uuid> = ids.iter().copied().skip(key).step_by(3).collect();
            if key == 2 {
                // The dead letter went out last, after the rest of its key.
                let mut after = expected[1..].to_vec();
                after.push(dead);
                assert_eq!(
                    order[&key], after,
                    "{mode}: the dead key after its dead letter"
                );
            } else {
                assert_eq!(order[&key], expected, "{mode}: key {key} in store order");
            }
        }
        let (rows, archived) = (outbox_rows(&db).await, archived_rows(&db).await);
        let expected_rows = if mode == Completion::Mark {
            ids.len()
        } else {
            0
        };
        assert_eq!(rows.len(), expected_rows, "{mode}: after the replay");
        let expected_archive = if mode == Completion::Archive {
            ids.len()
        } else {
            0
        };
        assert_eq!(archived.len(), expected_archive, "{mode}: after the replay");
        clear(&db).await;
    }
}

/// The manual calls in each mode: marking completes by the mode, `event` finds an
/// archived event, a failure reported for an archived event changes nothing.
async fn the_manual_calls_complete_by_the_mode(db: DatabaseConnection) {
    for mode in MODES {
        let outbox = Outbox::new().with_completion(mode);
        let ids = outbox
            .store_batch(&db, (0..3).map(|n| counter("k", n)))
            .await
            .expect("store");
        assert_eq!(
            outbox
                .mark_events_as_published(&db, &ids[..2])
                .await
                .expect("mark"),
            2,
            "{mode}"
        );
        assert_eq!(
            outbox
                .mark_events_as_published(&db, &ids[..2])
                .await
                .expect("mark again"),
            0,
            "{mode}: completed once"
        );
        let pending: Vec<Uuid> = outbox
            .pending(&db, 10)
            .await
            .expect("pending")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(pending, ids[2..], "{mode}");
        let found = outbox.event(&db, ids[0]).await;
        let failure = outbox
            .handle_event_failure(&db, ids[0], "late failure", &config("manual"))
            .await;
        match mode {
            Completion::Mark | Completion::Archive => {
                let event = found.expect("found");
                assert!(event.published, "{mode}");
                assert_eq!(
                    failure.expect("handled"),
                    FailureOutcome::Unchanged,
                    "{mode}"
                );
            }
            Completion::Delete => {
                assert!(matches!(found, Err(outbox::Error::NotFound(_))), "{mode}");
                assert!(matches!(failure, Err(outbox::Error::NotFound(_))), "{mode}");
            }
        }
        clear(&db).await;
    }
}

/// Cleanup in archive mode empties the archive of expired events, and still deletes
/// expired rows marked in the outbox table before the switch to archiving.
async fn cleanup_deletes_expired_archived_events(db: DatabaseConnection) {
    let marking = Outbox::new();
    let archiving = Outbox::new().with_completion(Completion::Archive);
    let ids = marking
        .store_batch(&db, (0..7).map(|n| counter("k", n)))
        .await
        .expect("store");
    marking
        .mark_events_as_published(&db, &ids[..2])
        .await
        .expect("mark");
    archiving
        .mark_events_as_published(&db, &ids[2..6])
        .await
        .expect("archive");
    assert_eq!(
        (outbox_rows(&db).await.len(), archived_rows(&db).await.len()),
        (3, 4)
    );

    // Nothing is older than a day; everything published is older than nothing.
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(
        archiving
            .count_published_older_than(&db, day)
            .await
            .expect("count"),
        0
    );
    assert_eq!(archiving.cleanup(&db, day, 2).await.expect("cleanup"), 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = Duration::ZERO;
    assert_eq!(
        archiving
            .count_published_older_than(&db, now)
            .await
            .expect("count"),
        6
    );
    assert_eq!(
        marking
            .count_published_older_than(&db, now)
            .await
            .expect("count"),
        6,
        "after a switch from archiving, the archive still counts"
    );
    // Step by step, as `outbox purge` does: a step short of its limit is the last.
    assert_eq!(archiving.cleanup_batch(&db, now, 4).await.expect("step"), 4);
    assert_eq!(archiving.cleanup_batch(&db, now, 4).await.expect("step"), 2);
    assert_eq!(archiving.cleanup_batch(&db, now, 4).await.expect("step"), 0);
    let left: Vec<Uuid> = outbox_rows(&db).await.iter().map(|r| r.id).collect();
    assert_eq!(left, ids[6..], "the pending event stays");
    assert!(archived_rows(&db).await.is_empty());

    archiving
        .mark_events_as_published(&db, &ids[6..])
        .await
        .expect("archive");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(archiving.cleanup(&db, now, 10).await.expect("cleanup"), 1);
    assert!(archived_rows(&db).await.is_empty());

    // After a switch from archiving to marking, cleanup still purges the archive.
    let more = marking
        .store_batch(&db, (0..2).map(|n| counter("k", n)))
        .await
        .expect("store");
    archiving
        .mark_events_as_published(&db, &more)
        .await
        .expect("archive");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(marking.cleanup(&db, now, 10).await.expect("cleanup"), 2);
    assert!(archived_rows(&db).await.is_empty());
}

/// An event the archive holds already (a copy left by hand, a restore) is completed
/// when published: the write-back skips the copy. (It failed on the archive's key,
/// and the event was published again and again.)
async fn an_event_already_archived_is_completed_once(db: DatabaseConnection) {
    let outbox = Outbox::new().with_completion(Completion::Archive);
    let ids = outbox
        .store_batch(&db, (0..2).map(|n| counter("k", n)))
        .await
        .expect("store");
    let copy = "INSERT INTO _outbox_published SELECT * FROM _outbox";
    db.execute_raw(Statement::from_string(db.get_database_backend(), copy))
        .await
        .expect("copy the events to the archive");
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(config("archived"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone());
    let report = relay.process_events(10).await.expect("a pass");
    assert_eq!(report.published, 2);
    assert!(outbox_rows(&db).await.is_empty(), "completed");
    let archived: Vec<Uuid> = archived_rows(&db).await.iter().map(|r| r.id).collect();
    assert_eq!(archived, ids);
    assert_eq!(publisher.messages().len(), 2, "published once");
}

/// A relay in archive mode without an archive table publishes nothing (every
/// write-back would fail, and every batch go out again and again) and its health
/// check says why; once the table exists, it publishes.
async fn archive_mode_waits_for_its_archive_table(db: DatabaseConnection) {
    use sea_orm_migration::{MigrationTrait, SchemaManager};
    let archive_migration =
        outbox_migration::m20261128_000003_archive_published_events::Migration::default();
    archive_migration
        .down(&SchemaManager::new(&db))
        .await
        .expect("drop the archive");
    let outbox = Outbox::new().with_completion(Completion::Archive);
    outbox
        .store(&db, &EventBuilder::new("thing.happened", "k"), "things")
        .await
        .expect("store");
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(config("no-archive"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    eventually(
        "the health check names the missing archive",
        Duration::from_secs(10),
        || async {
            relay.healthcheck().is_err_and(|e| {
                e.to_string()
                    .contains("archive table _outbox_published does not exist")
            })
        },
    )
    .await;
    assert!(publisher.messages().is_empty());
    archive_migration
        .up(&SchemaManager::new(&db))
        .await
        .expect("create the archive");
    outbox_migration::m20261205_000010_tombstones::Migration::default()
        .up(&SchemaManager::new(&db))
        .await
        .expect("the archive's later columns");
    eventually(
        "published once the archive exists",
        Duration::from_secs(10),
        || async { publisher.messages().len() == 1 && outbox_rows(&db).await.is_empty() },
    )
    .await;
    relay.shutdown().await.expect("shutdown");
    assert_eq!(archived_rows(&db).await.len(), 1);
}

outbox_tests::on_every_backend!(
    each_mode_completes_published_events_and_only_those,
    the_manual_calls_complete_by_the_mode,
    cleanup_deletes_expired_archived_events,
    an_event_already_archived_is_completed_once,
    archive_mode_waits_for_its_archive_table,
);

/// Writers and relays read the mode from `OUTBOX_COMPLETION` through the outbox they
/// share; the relay's configuration has none of its own to disagree with.
#[tokio::test]
async fn the_mode_comes_from_outbox_completion() {
    let db = sea_orm::Database::connect("sqlite::memory:")
        .await
        .expect("sqlite");
    let outbox = Outbox::from_lookup(&db, |name| {
        (name == "OUTBOX_COMPLETION").then(|| "Archive".to_owned())
    })
    .expect("a valid mode");
    assert_eq!(outbox.completion(), Completion::Archive);
    let error = Outbox::from_lookup(&db, |name| {
        (name == "OUTBOX_COMPLETION").then(|| "purge".to_owned())
    })
    .expect_err("not a mode");
    assert_eq!(
        error.to_string(),
        outbox::Error::Config {
            variable: "OUTBOX_COMPLETION",
            value: "purge".to_owned(),
            reason: "expected mark, delete or archive",
        }
        .to_string()
    );
    assert_eq!(Outbox::new().completion(), Completion::Mark);
}
