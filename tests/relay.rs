//! The relay with an in-process publisher, against PostgreSQL and SQLite: order,
//! retries, dead letters, replay, cleanup, leases, crashes, shutdown, health.
//! (The same relay against the real broker is in `kafka.rs`.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outbox::entity::outbox as row;
use outbox::{
    Completion, Envelope, EventBuilder, FailureOutcome, MemoryPublisher, Message, Outbox,
    PublishError, Publisher, Relay, RelayConfig,
};
use outbox_tests::crash::Doomed;
use outbox_tests::{
    PgSchema, dead_and_retrying, eventually, migrated_sqlite, retry_due, retry_waits,
    store_counters, until_holding,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    Statement, TransactionTrait,
};
use serde_json::json;
use uuid::Uuid;

fn fast_config(service: &str) -> RelayConfig {
    RelayConfig {
        interval: Duration::from_millis(100),
        min_poll_interval: Duration::from_millis(5),
        retry_backoff: outbox::Backoff::new(Duration::from_millis(200), Duration::from_secs(2)),
        lease_ttl: Duration::from_secs(2),
        health_timeout: Duration::from_secs(3),
        shutdown_timeout: Duration::from_secs(5),
        batch_size: 50,
        ..RelayConfig::new(service)
    }
}

fn counter(key: &str, n: usize) -> EventBuilder {
    EventBuilder::new("counter.incremented", key).data(json!({ "n": n }))
}

/// Stores `per_key` events for each of `keys` keys, one transaction per event,
/// interleaving the keys.
async fn store_interleaved(db: &DatabaseConnection, outbox: &Outbox, keys: usize, per_key: usize) {
    for n in 0..per_key {
        for k in 0..keys {
            let txn = db.begin().await.expect("begin");
            outbox
                .store(&txn, &counter(&format!("key-{k}"), n), "counters")
                .await
                .expect("store");
            txn.commit().await.expect("commit");
        }
    }
}

/// For each key, the `n` of its messages in the order published (duplicates removed).
fn per_key_order(messages: &[Message]) -> HashMap<String, Vec<u64>> {
    outbox_tests::per_key_order(
        messages
            .iter()
            .map(|m| (m.id.to_string(), m.key.as_str(), m.payload.as_str())),
    )
}

fn assert_complete_and_ordered(messages: &[Message], keys: usize, per_key: usize) {
    let order = per_key_order(messages);
    assert_eq!(order.len(), keys, "every key published");
    let expected: Vec<u64> = (0..u64::try_from(per_key).expect("small")).collect();
    for (key, ns) in &order {
        assert_eq!(ns, &expected, "key {key} out of order or incomplete");
    }
}

async fn publishes_committed_events_in_key_order(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(fast_config("orders"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();

    store_interleaved(&db, &outbox, 5, 20).await;
    let txn = db.begin().await.expect("begin");
    outbox
        .store(&txn, &counter("rolled-back", 0), "counters")
        .await
        .expect("store");
    txn.rollback().await.expect("rollback");

    eventually(
        "all 100 events published",
        Duration::from_secs(20),
        || async { publisher.messages().len() >= 100 },
    )
    .await;
    relay.shutdown().await.expect("shutdown");

    let messages = publisher.messages();
    assert_complete_and_ordered(&messages, 5, 20);
    assert!(
        messages.iter().all(|m| m.key != "rolled-back"),
        "a rolled-back event was published"
    );
    let pending = outbox.pending(&db, 10).await.expect("unpublished");
    assert!(pending.is_empty(), "nothing left pending: {pending:?}");
    let rows = row::Entity::find().all(&db).await.expect("rows");
    assert!(rows.iter().all(|r| r.published && r.published_at.is_some()));
}

/// A publisher that refuses the events in `poisoned`, as a broker refuses a message
/// that is too large, until cured.
#[derive(Debug, Clone, Default)]
struct Refusing {
    inner: MemoryPublisher,
    poisoned: Arc<std::sync::Mutex<Vec<Uuid>>>,
}

impl Refusing {
    fn poison(&self, id: Uuid) {
        self.poisoned.lock().expect("lock").push(id);
    }

    fn cure(&self) {
        self.poisoned.lock().expect("lock").clear();
    }
}

impl Publisher for Refusing {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        let poisoned = self.poisoned.lock().expect("lock").clone();
        let poisoned = &poisoned;
        outbox::publish_in_key_order(batch, |message| async move {
            if poisoned.contains(&message.id) {
                return Err(PublishError::permanent("message too large"));
            }
            let mut outcome = self.inner.publish(std::slice::from_ref(message)).await;
            outcome
                .pop()
                .unwrap_or_else(|| Err(PublishError::not_sent()))
        })
        .await
    }
}

async fn poison_is_dead_lettered_others_flow_and_replay_republishes(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = Refusing::default();
    let first = outbox
        .store(&db, &counter("poison", 0), "counters")
        .await
        .expect("store poison");
    publisher.poison(first);
    for n in 1..4 {
        outbox
            .store(&db, &counter("poison", n), "counters")
            .await
            .expect("store later poison-key event");
    }
    let config = RelayConfig {
        retry_attempts: 2,
        ..fast_config("poison")
    };
    let relay = Relay::new(config, db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    store_interleaved(&db, &outbox, 3, 5).await;

    eventually(
        "the poison event is dead-lettered",
        Duration::from_secs(20),
        || async {
            outbox
                .dead_letters(&db, 10)
                .await
                .expect("dead letters")
                .len()
                == 1
        },
    )
    .await;
    let dead = outbox
        .dead_letters(&db, 10)
        .await
        .expect("dead letters")
        .remove(0);
    assert_eq!(dead.id, first);
    assert_eq!(dead.attempts, 3, "1 attempt + 2 retries");
    assert_eq!(dead.error_message.as_deref(), Some("message too large"));
    let dead_at = dead.dead_lettered_at.expect("dead-lettered");

    eventually(
        "everything else is published",
        Duration::from_secs(20),
        || async {
            outbox
                .pending(&db, 10)
                .await
                .expect("unpublished")
                .is_empty()
        },
    )
    .await;
    let order = per_key_order(&publisher.inner.messages());
    for k in 0..3 {
        assert_eq!(
            order[&format!("key-{k}")],
            [0, 1, 2, 3, 4],
            "other keys flowed"
        );
    }
    assert_eq!(
        order["poison"],
        [1, 2, 3],
        "the key went on, in order, after the dead letter"
    );
    let later = row::Entity::find()
        .filter(row::Column::PartitionKey.eq("poison"))
        .filter(row::Column::Id.ne(first))
        .all(&db)
        .await
        .expect("rows");
    assert!(
        later
            .iter()
            .all(|r| r.published_at.is_some_and(|at| at >= dead_at)),
        "later events of the key waited for the dead letter"
    );

    // The operator fixes the cause and replays.
    publisher.cure();
    outbox.replay(&db, first).await.expect("replay");
    eventually(
        "the replayed event is published",
        Duration::from_secs(20),
        || async { publisher.inner.messages().iter().any(|m| m.id == first) },
    )
    .await;
    assert!(
        outbox
            .dead_letters(&db, 10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    relay.shutdown().await.expect("shutdown");
    assert!(matches!(
        outbox.replay(&db, Uuid::now_v7()).await,
        Err(outbox::Error::NotFound(_))
    ));
}

async fn retries_back_off_and_then_publish(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let id = outbox
        .store(&db, &counter("flaky", 0), "counters")
        .await
        .expect("store");
    outbox
        .store(&db, &counter("flaky", 1), "counters")
        .await
        .expect("store");
    publisher.fail_next(
        id,
        [
            PublishError::permanent("refused once"),
            PublishError::permanent("refused twice"),
        ],
    );
    let relay = Relay::new(fast_config("retry"), db.clone(), publisher.clone())
        .expect("valid relay config");

    let attempts_seen = retry_waits(&relay, &db, id).await;
    assert_eq!(
        attempts_seen,
        [(1, 200), (2, 400)],
        "delays double from the retry delay"
    );
    // The later event was parked behind the retried one; it goes out in the next pass.
    relay.process_events(10).await.expect("process");
    let order: Vec<u64> = per_key_order(&publisher.messages())
        .remove("flaky")
        .unwrap_or_default();
    assert_eq!(order, [0, 1], "the later event waited for the retried one");
}

async fn transient_failures_use_no_attempts(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let id = outbox
        .store(&db, &counter("k", 0), "counters")
        .await
        .expect("store");
    publisher.fail_next(id, (0..5).map(|_| PublishError::transient("broker away")));
    let relay = Relay::new(
        RelayConfig {
            retry_attempts: 1,
            ..fast_config("transient")
        },
        db.clone(),
        publisher.clone(),
    )
    .expect("valid relay config");
    for _ in 0..200 {
        relay.process_events(10).await.expect("process");
        if !publisher.messages().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = row::Entity::find()
        .one(&db)
        .await
        .expect("read")
        .expect("row");
    assert!(event.published, "published after the broker came back");
    assert_eq!(event.attempts, 0, "outages use up no attempts");
    assert_eq!(event.dead_lettered_at, None);
    assert_eq!(
        event.error_message.as_deref(),
        Some("broker away"),
        "the last error is kept"
    );
}

async fn cleanup_removes_only_expired_published_events(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let ids = outbox
        .store_batch(
            &db,
            (0..25).map(|n| Envelope::new(&counter("k", n), "counters").expect("envelope")),
        )
        .await
        .expect("store");
    // 12 published long ago, 5 published now, 1 dead-lettered, 7 pending.
    outbox
        .mark_events_as_published(&db, &ids[..17])
        .await
        .expect("mark");
    let backend = db.get_database_backend();
    let old = chrono::Utc::now() - chrono::Duration::days(8);
    let placeholders: Vec<String> = (0..12)
        .map(|i| {
            if backend == sea_orm::DbBackend::Postgres {
                format!("${}", i + 2)
            } else {
                "?".into()
            }
        })
        .collect();
    let first = if backend == sea_orm::DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let mut values: Vec<sea_orm::Value> = vec![old.into()];
    values.extend(ids[..12].iter().map(|id| sea_orm::Value::from(*id)));
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "UPDATE _outbox SET published_at = {first} WHERE id IN ({})",
            placeholders.join(", ")
        ),
        values,
    ))
    .await
    .expect("age rows");
    let config = RelayConfig {
        retry_attempts: 0,
        ..fast_config("cleanup")
    };
    let outcome = outbox
        .handle_event_failure(&db, ids[17], "refused", &config)
        .await
        .expect("fail");
    assert_eq!(outcome, FailureOutcome::DeadLettered { attempts: 1 });

    let deleted = outbox
        .cleanup(&db, Duration::from_secs(7 * 24 * 3600), 5)
        .await
        .expect("cleanup");
    assert_eq!(deleted, 12, "in batches of 5: 5 + 5 + 2");
    let left: Vec<Uuid> = row::Entity::find()
        .order_by_asc(row::Column::Seq)
        .all(&db)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        left,
        ids[12..],
        "recent published, dead-lettered and pending events stay"
    );
    let backlog = outbox.backlog(&db).await.expect("backlog");
    assert_eq!((backlog.pending, backlog.dead_lettered), (7, 1));
}

async fn manual_api_records_failures_like_the_go_library(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let id = outbox
        .store(&db, &counter("k", 0), "counters")
        .await
        .expect("store");
    let config = RelayConfig {
        retry_attempts: 1,
        retry_backoff: outbox::Backoff::new(Duration::from_secs(10), Duration::from_secs(60)),
        ..fast_config("manual")
    };
    let retry = outbox
        .handle_event_failure(&db, id, "network timeout", &config)
        .await
        .expect("first failure");
    let FailureOutcome::Retry {
        attempts: 1,
        next_attempt_at,
    } = retry
    else {
        panic!("expected a retry: {retry:?}")
    };
    let wait = (next_attempt_at - chrono::Utc::now()).num_seconds();
    assert!((8..=10).contains(&wait), "waits the retry delay, {wait}s");
    let dead = outbox
        .handle_event_failure(&db, id, "network timeout", &config)
        .await
        .expect("second failure");
    assert_eq!(dead, FailureOutcome::DeadLettered { attempts: 2 });
    assert_eq!(
        outbox
            .handle_event_failure(&db, id, "again", &config)
            .await
            .expect("third"),
        FailureOutcome::Unchanged
    );
    assert!(matches!(
        outbox
            .handle_event_failure(&db, Uuid::now_v7(), "x", &config)
            .await,
        Err(outbox::Error::NotFound(_))
    ));
    assert_eq!(outbox.replay_all_dead(&db).await.expect("replay"), 1);
    assert_eq!(outbox.pending(&db, 10).await.expect("unpublished").len(), 1);
    assert_eq!(
        outbox
            .mark_events_as_published(&db, &[id])
            .await
            .expect("mark"),
        1
    );
    assert_eq!(
        outbox
            .mark_events_as_published(&db, &[id])
            .await
            .expect("mark again"),
        0
    );
    assert!(
        outbox
            .pending(&db, 10)
            .await
            .expect("unpublished")
            .is_empty()
    );
}

/// A row without a partition key is keyed by its aggregate id everywhere: a failed
/// one holds back the later events of its aggregate.
async fn null_partition_key_holds_back_its_aggregate(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let first = outbox
        .store(&db, &counter("agg-1", 0), "counters")
        .await
        .expect("store");
    outbox
        .store(&db, &counter("agg-1", 1), "counters")
        .await
        .expect("store");
    // Rows written by other writers (or by older versions) may have no partition key.
    row::Entity::update_many()
        .col_expr(
            row::Column::PartitionKey,
            Expr::value(sea_orm::Value::String(None)),
        )
        .exec(&db)
        .await
        .expect("clear partition keys");
    row::Entity::update_many()
        .col_expr(row::Column::Attempts, Expr::value(1))
        .col_expr(
            row::Column::NextAttemptAt,
            Expr::value(chrono::Utc::now() + chrono::Duration::hours(1)),
        )
        .filter(row::Column::Id.eq(first))
        .exec(&db)
        .await
        .expect("fail the first");
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(fast_config("null-key"), db.clone(), publisher.clone())
        .expect("valid relay config");
    relay.process_events(10).await.expect("process");
    assert!(
        publisher.messages().is_empty(),
        "the later event of the aggregate waits for the failed one: {:?}",
        publisher.messages()
    );
}

/// Settings that would hang, spin or overflow are refused, naming the setting.
#[tokio::test]
async fn invalid_relay_configs_are_refused_with_the_setting_named() {
    let db = migrated_sqlite().await;
    let cases = [
        (
            RelayConfig {
                concurrency: 0,
                ..fast_config("v")
            },
            "OUTBOX_CONCURRENCY",
        ),
        (
            RelayConfig {
                batch_size: 0,
                ..fast_config("v")
            },
            "OUTBOX_BATCH_SIZE",
        ),
        (
            RelayConfig {
                batch_size: 100_000,
                ..fast_config("v")
            },
            "OUTBOX_BATCH_SIZE",
        ),
        (
            RelayConfig {
                min_poll_interval: Duration::ZERO,
                ..fast_config("v")
            },
            "OUTBOX_MIN_POLL_INTERVAL",
        ),
        (
            RelayConfig {
                lease_ttl: Duration::from_secs(300_000 * 365 * 86_400),
                ..fast_config("v")
            },
            "OUTBOX_LEASE_TTL",
        ),
        (
            RelayConfig {
                cleanup_after_days: u32::MAX,
                ..fast_config("v")
            },
            "OUTBOX_CLEANUP_AFTER_DAYS",
        ),
        (
            RelayConfig {
                retry_backoff: outbox::Backoff::new(
                    Duration::from_secs(10),
                    Duration::from_secs(300_000 * 365 * 86_400),
                ),
                ..fast_config("v")
            },
            "OUTBOX_MAX_RETRY_DELAY",
        ),
        (
            RelayConfig {
                service_name: "s".repeat(256),
                ..fast_config("v")
            },
            "OUTBOX_SERVICE_NAME",
        ),
    ];
    for (config, expected) in cases {
        match Relay::new(config, db.clone(), MemoryPublisher::new()) {
            Err(outbox::Error::Config { variable, .. }) => assert_eq!(variable, expected),
            other => panic!("{expected}: expected a configuration error, got {other:?}"),
        }
    }
}

/// The longest service name still gives relay ids that fit their columns.
async fn the_longest_service_name_fits_the_relay_tables(db: DatabaseConnection) {
    let outbox = Outbox::new();
    outbox
        .store(&db, &counter("k", 0), "counters")
        .await
        .expect("store");
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(
        RelayConfig {
            service_name: "s".repeat(255),
            ..fast_config("unused")
        },
        db.clone(),
        publisher.clone(),
    )
    .expect("valid relay config");
    let report = relay.process_events(10).await.expect("process");
    assert_eq!(report.published, 1);
}

/// Ages too large for a date are an error, not a panic.
#[tokio::test]
async fn ages_past_every_date_are_refused() {
    let db = migrated_sqlite().await;
    let outbox = Outbox::new();
    let ages = Duration::from_secs(300_000 * 365 * 86_400);
    for result in [
        outbox.count_published_older_than(&db, ages).await,
        outbox.cleanup(&db, ages, 100).await,
    ] {
        assert!(
            matches!(result, Err(outbox::Error::DurationOutOfRange { .. })),
            "{result:?}"
        );
    }
}

async fn parked_flags(db: &DatabaseConnection, key: &str) -> Vec<bool> {
    row::Entity::find()
        .filter(row::Column::PartitionKey.eq(key))
        .order_by_asc(row::Column::Seq)
        .all(db)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.parked)
        .collect()
}

/// The events behind a key's failed event are parked (out of the claim index), those
/// stored while it waits too; when it is published they go out, in order. Parked
/// events whose failed event went through by other means are unparked by the relay.
async fn events_behind_a_failed_one_are_parked_and_follow_it(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = Refusing::default();
    let head = outbox
        .store(&db, &counter("blocked", 0), "counters")
        .await
        .expect("store");
    outbox
        .store(&db, &counter("blocked", 1), "counters")
        .await
        .expect("store");
    publisher.poison(head);
    let relay = Relay::new(
        RelayConfig {
            retry_backoff: outbox::Backoff::new(
                Duration::from_secs(3600),
                Duration::from_secs(3600),
            ),
            ..fast_config("parked")
        },
        db.clone(),
        publisher.clone(),
    )
    .expect("valid relay config")
    .with_outbox(outbox.clone());
    relay.process_events(10).await.expect("process");
    for n in 2..5 {
        outbox
            .store(&db, &counter("blocked", n), "counters")
            .await
            .expect("store while blocked");
    }
    // MySQL stores them unparked (a read of the outbox inside the caller's insert
    // would take locks there); the claim parks them, as below.
    let at_store = db.get_database_backend() != sea_orm::DbBackend::MySql;
    assert_eq!(
        parked_flags(&db, "blocked").await,
        [false, true, at_store, at_store, at_store],
        "parked by the relay when the first event failed, then at store time"
    );
    assert_eq!(outbox.backlog(&db).await.expect("backlog").pending, 5);

    // However they came to be unparked, events behind the failed one are parked by
    // the claim that meets them, never published ahead of it.
    row::Entity::update_many()
        .col_expr(row::Column::Parked, Expr::value(false))
        .exec(&db)
        .await
        .expect("unpark by hand");
    relay.process_events(10).await.expect("process");
    assert!(publisher.inner.messages().is_empty());
    assert_eq!(
        parked_flags(&db, "blocked").await,
        [false, true, true, true, true],
        "parked again by the claim"
    );

    // The failed event goes through by hand: the relay unparks the rest.
    outbox
        .mark_events_as_published(&db, &[head])
        .await
        .expect("mark");
    relay.process_events(10).await.expect("process");
    relay.process_events(10).await.expect("process");
    let order = per_key_order(&publisher.inner.messages())
        .remove("blocked")
        .unwrap_or_default();
    assert_eq!(order, [1, 2, 3, 4]);
    assert_eq!(
        parked_flags(&db, "blocked").await,
        [false; 5],
        "nothing stays parked"
    );
}

/// An event stored after its key's failure must not overtake the events parked by
/// that failure when the failed event is due again (found by the torture suite).
async fn an_event_stored_after_a_failure_does_not_overtake_the_parked_ones(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let head = outbox
        .store(&db, &counter("k", 0), "counters")
        .await
        .expect("store");
    for n in 1..3 {
        outbox
            .store(&db, &counter("k", n), "counters")
            .await
            .expect("store");
    }
    publisher.fail_next(head, [PublishError::permanent("refused once")]);
    let relay = Relay::new(fast_config("overtake"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone());
    relay
        .process_events(10)
        .await
        .expect("the first event fails");
    outbox
        .store(&db, &counter("k", 3), "counters")
        .await
        .expect("store after the failure");
    tokio::time::sleep(Duration::from_millis(300)).await; // past the retry delay
    for _ in 0..3 {
        relay.process_events(10).await.expect("process");
    }
    let order = per_key_order(&publisher.messages())
        .remove("k")
        .unwrap_or_default();
    assert_eq!(order, [0, 1, 2, 3]);
}

/// Events left parked when their key's failed event went through without unparking
/// them (a store whose transaction was open while the relay wrote the failed event
/// back) are unparked as soon as a later event of the key is claimed, in order,
/// without waiting for the relay's periodic sweep.
async fn orphaned_parked_events_go_out_in_order_with_the_next_event(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let head = outbox
        .store(&db, &counter("k", 0), "counters")
        .await
        .expect("store");
    publisher.fail_next(head, [PublishError::permanent("refused")]);
    let relay = Relay::new(
        RelayConfig {
            retry_backoff: outbox::Backoff::new(
                Duration::from_secs(3600),
                Duration::from_secs(3600),
            ),
            ..fast_config("orphans")
        },
        db.clone(),
        publisher.clone(),
    )
    .expect("valid relay config")
    .with_outbox(outbox.clone())
    .spawn();
    eventually(
        "the first event failed",
        Duration::from_secs(10),
        || async { outbox.pending(&db, 1).await.expect("pending")[0].attempts == 1 },
    )
    .await;
    for n in 1..3 {
        outbox
            .store(&db, &counter("k", n), "counters")
            .await
            .expect("store while blocked");
    }
    // Parked at store time, or on MySQL by the relay's next claim.
    eventually(
        "the events behind the failed one are parked",
        Duration::from_secs(5),
        || async { parked_flags(&db, "k").await == [false, true, true] },
    )
    .await;
    // The failed event goes out by other means, leaving the others parked.
    row::Entity::update_many()
        .col_expr(row::Column::Published, Expr::value(true))
        .filter(row::Column::Id.eq(head))
        .exec(&db)
        .await
        .expect("publish by hand");
    outbox
        .store(&db, &counter("k", 3), "counters")
        .await
        .expect("store after");
    eventually(
        "the parked events and the new one are published, before any sweep",
        Duration::from_secs(5),
        || async { publisher.messages().len() == 3 },
    )
    .await;
    relay.shutdown().await.expect("shutdown");
    let order = per_key_order(&publisher.messages())
        .remove("k")
        .unwrap_or_default();
    assert_eq!(order, [1, 2, 3]);
}

/// A key's first event is dead-lettered, the second waits for a retry, the third is
/// parked behind it; the operator replays the first (by id, all dead letters, or a
/// batch). The replayed event goes out at once, ahead of the retrying one, and the
/// rest follows in order when the retry falls due. (The claim used to see the later
/// event's retry as holding back the replayed one and parked the whole key, for
/// good.)
async fn a_replay_never_parks_its_key_for_good(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(fast_config("replays"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone());
    for how in ["one", "all", "batch"] {
        let key = format!("key-{how}");
        let ids = store_counters(&db, &outbox, &key, 3).await;
        dead_and_retrying(&db, &outbox, &ids).await;
        relay.process_events(10).await.expect("process");
        assert_eq!(parked_flags(&db, &key).await, [false, false, true]);

        let replayed = match how {
            "one" => outbox.replay(&db, ids[0]).await.map(|()| 1),
            "all" => outbox.replay_all_dead(&db).await,
            _ => outbox.replay_dead_batch(&db, 10).await,
        };
        assert_eq!(replayed.expect("replay"), 1, "{how}");
        relay.process_events(10).await.expect("process");
        let published = |key: String| {
            let publisher = publisher.clone();
            move || {
                per_key_order(&publisher.messages())
                    .remove(&key)
                    .unwrap_or_default()
            }
        };
        assert_eq!(
            published(key.clone())(),
            [0],
            "the replayed event goes out ({how})"
        );
        assert_eq!(
            parked_flags(&db, &key).await,
            [false, false, true],
            "only the event behind the retrying one stays parked ({how})"
        );

        // The retry falls due: the rest follows, in order.
        retry_due(&db, ids[1]).await;
        relay.process_events(10).await.expect("process");
        relay.process_events(10).await.expect("process");
        assert_eq!(published(key.clone())(), [0, 1, 2], "{how}");
        assert_eq!(parked_flags(&db, &key).await, [false; 3], "{how}");
    }
    let backlog = outbox.backlog(&db).await.expect("backlog");
    assert_eq!((backlog.pending, backlog.dead_lettered), (0, 0));
}

/// A key left all parked (as the replay above used to leave it, in databases written
/// before the fix) is freed by the relay's sweep, its events published in order; and
/// while it is stuck, the backlog's oldest pending event counts it.
async fn a_key_stuck_parked_is_freed_and_counted(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(fast_config("stuck"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone());
    let ids = store_counters(&db, &outbox, "k", 3).await;
    // The second event failed once and is due again; every event of the key is parked.
    row::Entity::update_many()
        .col_expr(row::Column::Attempts, Expr::value(1))
        .filter(row::Column::Id.eq(ids[1]))
        .exec(&db)
        .await
        .expect("a failed attempt");
    retry_due(&db, ids[1]).await;
    row::Entity::update_many()
        .col_expr(row::Column::Parked, Expr::value(true))
        .exec(&db)
        .await
        .expect("park the key");
    let backlog = outbox.backlog(&db).await.expect("backlog");
    assert_eq!(backlog.pending, 3);
    assert!(
        backlog.oldest_pending_at.is_some(),
        "a key stuck parked shows in the oldest pending event's age"
    );

    relay.process_events(10).await.expect("process");
    relay.process_events(10).await.expect("process");
    let order = per_key_order(&publisher.messages())
        .remove("k")
        .unwrap_or_default();
    assert_eq!(order, [0, 1, 2]);
}

/// A dead letter replayed after the shard count changed goes to its key's shard under
/// the new count, beside its key's new events, and is published ahead of them.
/// (Replay used to keep the old shard: there it raced the key's new events, or sat
/// in a shard no relay leases any more.)
async fn a_replay_after_a_shard_count_change_follows_the_new_count(db: DatabaseConnection) {
    let shards = |n| std::num::NonZeroU16::new(n).expect("non-zero");
    let before = Outbox::new().with_shards(shards(16));
    let after = Outbox::new().with_shards(shards(3));
    let shard_of = |id: Uuid| {
        let db = db.clone();
        async move {
            row::Entity::find()
                .filter(row::Column::Id.eq(id))
                .one(&db)
                .await
                .expect("read")
                .expect("the event")
                .shard
        }
    };
    let dead_now = RelayConfig {
        retry_attempts: 0,
        ..fast_config("reshard")
    };
    let old = before
        .store(&db, &counter("k", 0), "counters")
        .await
        .expect("store");
    before
        .handle_event_failure(&db, old, "unknown topic", &dead_now)
        .await
        .expect("dead-letter");
    let new = after
        .store(&db, &counter("k", 1), "counters")
        .await
        .expect("store after the change");
    assert_ne!(
        shard_of(old).await,
        shard_of(new).await,
        "pick a key whose shard changes"
    );

    after.replay(&db, old).await.expect("replay");
    assert_eq!(shard_of(old).await, shard_of(new).await);
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(fast_config("reshard"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(after.clone());
    relay.process_events(10).await.expect("process");
    let order = per_key_order(&publisher.messages())
        .remove("k")
        .unwrap_or_default();
    assert_eq!(order, [0, 1]);
}

/// A publisher that panics whenever a batch holds one poisoned event.
#[derive(Debug, Clone)]
struct Panicking {
    inner: MemoryPublisher,
    poison: Uuid,
}

impl Publisher for Panicking {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        assert!(
            batch.iter().all(|m| m.id != self.poison),
            "a publisher bug met its poison"
        );
        self.inner.publish(batch).await
    }
}

/// A publisher that panics on one event fails only that event: the batch's other
/// events go out, the poisoned one is dead-lettered after its attempts, the event of
/// its key behind it follows, and the relay stays healthy. (The panic used to end the
/// relay's loop while its lease keeper went on renewing: nothing was published again
/// until the process restarted.)
async fn a_publisher_panic_fails_only_its_event(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let poison = store_counters(&db, &outbox, "poisoned", 2).await[0];
    store_interleaved(&db, &outbox, 3, 3).await;
    let publisher = Panicking {
        inner: MemoryPublisher::new(),
        poison,
    };
    let relay = Relay::new(
        RelayConfig {
            retry_attempts: 1,
            ..fast_config("panics")
        },
        db.clone(),
        publisher.clone(),
    )
    .expect("valid relay config")
    .with_outbox(outbox.clone())
    .spawn();
    eventually(
        "the other events, and the one behind the poisoned event, are published",
        Duration::from_secs(20),
        || async { publisher.inner.messages().len() >= 10 },
    )
    .await;
    let more = outbox
        .store(&db, &counter("later", 0), "counters")
        .await
        .expect("store after");
    eventually(
        "the relay goes on publishing",
        Duration::from_secs(10),
        || async { publisher.inner.messages().iter().any(|m| m.id == more) },
    )
    .await;
    assert!(relay.healthcheck().is_ok(), "{:?}", relay.healthcheck());
    relay.shutdown().await.expect("shutdown");
    let dead = outbox.dead_letters(&db, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, poison);
    assert_eq!(dead[0].attempts, 2);
    assert!(
        dead[0]
            .error_message
            .as_deref()
            .is_some_and(|e| e.contains("the publisher panicked: a publisher bug met its poison")),
        "{:?}",
        dead[0].error_message
    );
    let order = per_key_order(&publisher.inner.messages());
    assert_eq!(order["poisoned"], [1]);
    for k in 0..3 {
        assert_eq!(order[&format!("key-{k}")], [0, 1, 2]);
    }
}

/// Keys that differ only in case, accents or a trailing space are different keys on
/// every backend, in one shard too: a failure of one holds back none of the others.
/// (Under MySQL's default collation they compared equal, so one key's failure held
/// back and parked the others.)
async fn keys_that_only_look_alike_are_different_keys(db: DatabaseConnection) {
    let one = std::num::NonZeroU16::new(1).expect("non-zero");
    let outbox = Outbox::new().with_shards(one);
    let publisher = MemoryPublisher::new();
    // Each failing key's first event fails, its second waits behind it; the free keys,
    // stored after the failures, look like some failing key but for case, accent or
    // trailing space.
    let failing = ["ABC", "abc ", "Zoé"];
    let free = ["abc", "zoe"];
    for key in failing {
        let first = store_counters(&db, &outbox, key, 2).await[0];
        publisher.fail_next(first, [PublishError::permanent("refused")]);
    }
    let relay = Relay::new(
        RelayConfig {
            retry_backoff: outbox::Backoff::new(
                Duration::from_secs(3600),
                Duration::from_secs(3600),
            ),
            ..fast_config("alike")
        },
        db.clone(),
        publisher.clone(),
    )
    .expect("valid relay config")
    .with_outbox(outbox.clone());
    relay
        .process_events(10)
        .await
        .expect("the failing keys fail");
    assert!(publisher.messages().is_empty());
    for key in free {
        outbox
            .store(&db, &counter(key, 0), "counters")
            .await
            .expect("store");
    }
    relay.process_events(10).await.expect("process");
    relay.process_events(10).await.expect("process");
    let order = per_key_order(&publisher.messages());
    let mut published: Vec<&str> = order.keys().map(String::as_str).collect();
    published.sort_unstable();
    assert_eq!(
        published,
        ["abc", "zoe"],
        "the free keys flow, and only they"
    );
    let rows = row::Entity::find()
        .order_by_asc(row::Column::Seq)
        .all(&db)
        .await
        .expect("rows");
    let parked: Vec<(&str, bool, bool)> = rows
        .iter()
        .map(|r| {
            let key = r.partition_key.as_deref().unwrap_or_default();
            (key, r.published, r.parked)
        })
        .collect();
    assert_eq!(
        parked,
        [
            ("ABC", false, false),
            ("ABC", false, true),
            ("abc ", false, false),
            ("abc ", false, true),
            ("Zoé", false, false),
            ("Zoé", false, true),
            ("abc", true, false),
            ("zoe", true, false),
        ],
        "each failing key parks its own events only"
    );
}

/// Fencing: a relay whose lease was taken while its batch was at the broker writes
/// nothing back (the new owner publishes the events again), both when everything in
/// the batch was published (one fenced statement) and when an event failed (the
/// fenced transaction), in every completion mode.
async fn a_write_back_after_the_lease_was_taken_changes_nothing(db: DatabaseConnection) {
    use outbox::entity::lease;
    use sea_orm::sea_query::ExprTrait;
    let modes = [Completion::Mark, Completion::Delete, Completion::Archive];
    for (completion, failing) in modes.into_iter().flat_map(|m| [(m, false), (m, true)]) {
        let outbox = Outbox::new();
        let id = outbox
            .store(&db, &counter("k", 1), "counters")
            .await
            .expect("store");
        let publisher = MemoryPublisher::new();
        if failing {
            publisher.fail_next(id, [PublishError::permanent("refused")]);
        }
        let slow = Slow {
            inner: publisher.clone(),
            delay: Duration::from_millis(800),
            started: Arc::default(),
        };
        let relay = Relay::new(fast_config("fenced"), db.clone(), slow.clone())
            .expect("valid relay config")
            .with_outbox(Outbox::new().with_completion(completion))
            .spawn();
        eventually(
            "the batch is at the broker",
            Duration::from_secs(10),
            || async { slow.started.load(Ordering::SeqCst) },
        )
        .await;
        // Another relay takes every lease (as after an expiry) and keeps it.
        lease::Entity::update_many()
            .col_expr(lease::Column::Owner, Expr::value("another relay"))
            .col_expr(lease::Column::Token, Expr::col(lease::Column::Token).add(1))
            .col_expr(
                lease::Column::ExpiresAt,
                Expr::value(chrono::Utc::now() + chrono::Duration::hours(1)),
            )
            .exec(&db)
            .await
            .expect("take the leases");
        // Shutting down lets the batch in flight end and write back.
        relay.shutdown().await.expect("shutdown");
        let event = row::Entity::find()
            .filter(row::Column::Id.eq(id))
            .one(&db)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("a fenced-out relay deleted its batch ({completion})"));
        assert!(
            !event.published,
            "a fenced-out relay marked its batch published (failing: {failing}, {completion})"
        );
        assert_eq!(
            event.attempts, 0,
            "a fenced-out relay recorded a failure (failing: {failing}, {completion})"
        );
        let archived = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM _outbox_published",
            ))
            .await
            .expect("count the archive")
            .expect("a count")
            .try_get::<i64>("", "n")
            .expect("n");
        assert_eq!(archived, 0, "a fenced-out relay archived its batch");
        lease::Entity::delete_many()
            .exec(&db)
            .await
            .expect("clear the leases");
        row::Entity::delete_many()
            .exec(&db)
            .await
            .expect("clear the outbox");
    }
}

outbox_tests::on_every_backend!(
    publishes_committed_events_in_key_order,
    poison_is_dead_lettered_others_flow_and_replay_republishes,
    retries_back_off_and_then_publish,
    transient_failures_use_no_attempts,
    cleanup_removes_only_expired_published_events,
    manual_api_records_failures_like_the_go_library,
    null_partition_key_holds_back_its_aggregate,
    events_behind_a_failed_one_are_parked_and_follow_it,
    an_event_stored_after_a_failure_does_not_overtake_the_parked_ones,
    orphaned_parked_events_go_out_in_order_with_the_next_event,
    a_replay_never_parks_its_key_for_good,
    a_key_stuck_parked_is_freed_and_counted,
    a_replay_after_a_shard_count_change_follows_the_new_count,
    a_publisher_panic_fails_only_its_event,
    keys_that_only_look_alike_are_different_keys,
    a_write_back_after_the_lease_was_taken_changes_nothing,
);

/// Three relays of one service share the shards and keep each key in order.
async fn three_relays_share_the_work_in_key_order(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let relays: Vec<_> = (0..3)
        .map(|_| {
            Relay::new(fast_config("shared"), db.clone(), publisher.clone())
                .expect("valid relay config")
                .spawn()
        })
        .collect();
    store_interleaved(&db, &outbox, 20, 15).await;
    eventually(
        "all 300 events published",
        Duration::from_secs(30),
        || async {
            per_key_order(&publisher.messages())
                .values()
                .map(Vec::len)
                .sum::<usize>()
                == 300
        },
    )
    .await;
    eventually(
        "every relay holds shards",
        Duration::from_secs(10),
        || async { relays.iter().all(|r| r.stats().owned_shards > 0) },
    )
    .await;
    let owned: usize = relays.iter().map(|r| r.stats().owned_shards).sum();
    assert!(owned <= 16, "no shard is held twice: {owned}");
    for relay in relays {
        relay.shutdown().await.expect("shutdown");
    }
    assert_complete_and_ordered(&publisher.messages(), 20, 15);
}

/// A publisher that takes its time, to catch the relay mid-batch.
#[derive(Debug, Clone)]
struct Slow {
    inner: MemoryPublisher,
    delay: Duration,
    started: Arc<AtomicBool>,
}

impl Publisher for Slow {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        self.started.store(true, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.publish(batch).await
    }
}

/// A relay killed mid-batch loses nothing: another takes over when the lease expires.
/// The killed relay runs on a runtime and a pool of its own, which die with it, as a
/// killed process's do (see `support/crash.rs`).
async fn crashed_relay_is_replaced_after_its_lease_expires(db: DatabaseConnection) {
    let outbox = Outbox::new();
    store_interleaved(&db, &outbox, 4, 25).await;
    let slow = Slow {
        inner: MemoryPublisher::new(),
        delay: Duration::from_secs(30),
        started: Arc::default(),
    };
    let doomed = Doomed::new();
    let doomed_db = doomed.connect_like(&db).await;
    let doomed_relay = {
        let slow = slow.clone();
        doomed
            .run(async move {
                Relay::new(fast_config("crash"), doomed_db, slow)
                    .expect("valid relay config")
                    .spawn()
            })
            .await
    };
    eventually(
        "the first relay is mid-batch",
        Duration::from_secs(10),
        || async { slow.started.load(Ordering::SeqCst) },
    )
    .await;
    doomed.crash();
    doomed_relay.abort();

    let survivor_publisher = MemoryPublisher::new();
    let survivor = Relay::new(fast_config("crash"), db.clone(), survivor_publisher.clone())
        .expect("valid relay config")
        .spawn();
    eventually(
        "the survivor publishes everything",
        Duration::from_secs(30),
        || async { survivor_publisher.messages().len() >= 100 },
    )
    .await;
    survivor.shutdown().await.expect("shutdown");
    assert_complete_and_ordered(&survivor_publisher.messages(), 4, 25);
}

/// Shutdown during a slow batch returns within its deadline; nothing is lost or
/// half-marked.
async fn shutdown_during_a_busy_batch_keeps_its_deadline(db: DatabaseConnection) {
    let outbox = Outbox::new();
    store_interleaved(&db, &outbox, 4, 25).await;

    // The batch finishes within the deadline: it is written back.
    let slow = Slow {
        inner: MemoryPublisher::new(),
        delay: Duration::from_millis(500),
        started: Arc::default(),
    };
    let small_batches = RelayConfig {
        batch_size: 5,
        ..fast_config("stop")
    };
    let relay = Relay::new(small_batches.clone(), db.clone(), slow.clone())
        .expect("valid relay config")
        .spawn();
    eventually("mid-batch", Duration::from_secs(10), || async {
        slow.started.load(Ordering::SeqCst)
    })
    .await;
    let started = std::time::Instant::now();
    relay.shutdown().await.expect("graceful shutdown");
    assert!(started.elapsed() < Duration::from_secs(5));
    let published = slow.inner.messages().len();
    let marked = row::Entity::find()
        .filter(row::Column::Published.eq(true))
        .all(&db)
        .await
        .expect("rows")
        .len();
    assert_eq!(
        marked, published,
        "what was acknowledged is marked, nothing else"
    );

    // The batch outlives the deadline: shutdown returns on time, the batch stays pending.
    let stuck = Slow {
        inner: MemoryPublisher::new(),
        delay: Duration::from_secs(60),
        started: Arc::default(),
    };
    let config = RelayConfig {
        shutdown_timeout: Duration::from_millis(500),
        ..small_batches
    };
    let relay = Relay::new(config, db.clone(), stuck.clone())
        .expect("valid relay config")
        .spawn();
    eventually("mid-batch", Duration::from_secs(10), || async {
        stuck.started.load(Ordering::SeqCst)
    })
    .await;
    let started = std::time::Instant::now();
    let result = relay.shutdown().await;
    assert!(
        matches!(result, Err(outbox::Error::ShutdownTimeout(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let marked_after = row::Entity::find()
        .filter(row::Column::Published.eq(true))
        .all(&db)
        .await
        .expect("rows")
        .len();
    assert_eq!(marked_after, marked, "the abandoned batch was not marked");

    // A new relay publishes the rest, once the abandoned leases expire.
    let finisher = MemoryPublisher::new();
    let relay = Relay::new(fast_config("stop"), db.clone(), finisher.clone())
        .expect("valid relay config")
        .spawn();
    eventually("the rest is published", Duration::from_secs(30), || async {
        outbox
            .pending(&db, 1)
            .await
            .expect("unpublished")
            .is_empty()
    })
    .await;
    relay.shutdown().await.expect("shutdown");
    let mut all = slow.inner.messages();
    all.extend(finisher.messages());
    assert_complete_and_ordered(&all, 4, 25);
}

async fn health_and_stats_report_the_relay(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(fast_config("health"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    store_interleaved(&db, &outbox, 2, 5).await;
    eventually(
        "healthy, published, a cycle completed and every shard taken",
        Duration::from_secs(10),
        || async {
            let stats = relay.stats();
            relay.healthcheck().is_ok()
                && stats.published == 10
                && stats.since_last_success.is_some()
                && stats.owned_shards == 16
        },
    )
    .await;
    let stats = relay.stats();
    assert!(stats.running);
    assert_eq!((stats.failed, stats.dead_lettered), (0, 0));
    assert!(
        stats
            .since_last_success
            .is_some_and(|age| age < Duration::from_secs(3))
    );

    let disabled = Relay::new(
        RelayConfig {
            enabled: false,
            ..fast_config("off")
        },
        db.clone(),
        publisher.clone(),
    )
    .expect("valid relay config")
    .spawn();
    assert!(!disabled.stats().running);
    assert!(disabled.healthcheck().is_err());
    disabled.shutdown().await.expect("disabled shutdown");

    relay.shutdown().await.expect("shutdown");
}

/// No skip on late commit: a transaction that stored early and commits late is still published; meanwhile
/// other keys keep flowing for many relay cycles; and a second transaction of the same
/// key, which has to wait for the first, is published after it.
async fn late_commit_is_published_in_commit_order_while_other_keys_flow(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(fast_config("late"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();

    // A takes its id and `seq` first and holds its transaction open.
    let a = db.begin().await.expect("begin A");
    let a_id = outbox
        .store(&a, &counter("k", 1), "counters")
        .await
        .expect("store A");

    // B stores the same key: it waits for A.
    let (pool, ob) = (db.clone(), outbox.clone());
    let b = tokio::spawn(async move {
        let txn = pool.begin().await.expect("begin B");
        let id = ob
            .store(&txn, &counter("k", 2), "counters")
            .await
            .expect("store B");
        txn.commit().await.expect("commit B");
        id
    });

    // Other keys, stored and committed after A took its id, flow for many cycles.
    for n in 0..10 {
        outbox
            .store(&db, &counter("other", n), "counters")
            .await
            .expect("store other");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(
        "the other key is published while A is open",
        Duration::from_secs(10),
        || async {
            per_key_order(&publisher.messages())
                .get("other")
                .map(Vec::len)
                == Some(10)
        },
    )
    .await;
    assert!(!b.is_finished(), "B waits for A's key");
    assert!(
        publisher.messages().iter().all(|m| m.key != "k"),
        "nothing of `k` is visible yet"
    );

    outbox.commit(a).await.expect("commit A");
    let b_id = b.await.expect("B");
    eventually("A and B are published", Duration::from_secs(10), || async {
        per_key_order(&publisher.messages()).get("k").map(Vec::len) == Some(2)
    })
    .await;
    relay.shutdown().await.expect("shutdown");
    let k: Vec<Uuid> = publisher
        .messages()
        .iter()
        .filter(|m| m.key == "k")
        .map(|m| m.id)
        .collect();
    assert_eq!(k, [a_id, b_id], "published in commit order");
}

/// Leases are renewed on a schedule of their own: three relays whose every batch takes
/// longer than the lease keep their shards, and publish nothing twice.
async fn passes_slower_than_the_lease_keep_their_shards(db: DatabaseConnection) {
    let outbox = Outbox::new();
    store_interleaved(&db, &outbox, 16, 3).await;
    let publisher = MemoryPublisher::new();
    let slow = Slow {
        inner: publisher.clone(),
        delay: Duration::from_millis(1500),
        started: Arc::new(AtomicBool::new(false)),
    };
    let config = RelayConfig {
        lease_ttl: Duration::from_secs(1),
        batch_size: 1,
        ..fast_config("slow-broker")
    };
    let relays: Vec<_> = (0..3)
        .map(|_| {
            Relay::new(config.clone(), db.clone(), slow.clone())
                .expect("valid relay config")
                .spawn()
        })
        .collect();
    eventually(
        "all 48 events published",
        Duration::from_secs(90),
        || async { outbox.backlog(&db).await.expect("backlog").pending == 0 },
    )
    .await;
    for relay in relays {
        relay.shutdown().await.expect("shutdown");
    }
    let messages = publisher.messages();
    let distinct: std::collections::HashSet<Uuid> = messages.iter().map(|m| m.id).collect();
    assert_eq!(distinct.len(), 48);
    assert_eq!(messages.len(), 48, "no batch was published twice");
    assert_complete_and_ordered(&messages, 16, 3);
}

/// Writers with more shards than the relays: the relay says so (health check, metric)
/// instead of leaving those events pending in silence; given the writers' count
/// (`OUTBOX_SHARDS`), it publishes them.
async fn events_outside_the_relays_shards_fail_the_health_check(db: DatabaseConnection) {
    let wide = Outbox::new().with_shards(std::num::NonZeroU16::new(64).expect("non-zero"));
    store_interleaved(&db, &wide, 40, 1).await;
    let publisher = MemoryPublisher::new();
    let narrow = Relay::new(fast_config("shards"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .spawn();
    eventually(
        "the relay reports the misconfiguration",
        Duration::from_secs(10),
        || async {
            narrow
                .healthcheck()
                .is_err_and(|error| error.to_string().contains("OUTBOX_SHARDS"))
        },
    )
    .await;
    narrow.shutdown().await.expect("shutdown");

    // The writers' OUTBOX_SHARDS, read into the outbox the relay publishes.
    let outbox = Outbox::from_lookup(&db, |name| {
        (name == "OUTBOX_SHARDS").then(|| "64".to_owned())
    })
    .expect("valid shards");
    let matching = Relay::new(fast_config("shards"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox)
        .spawn();
    eventually("everything published", Duration::from_secs(20), || async {
        outbox_pending(&db).await == 0
    })
    .await;
    assert!(
        matching.healthcheck().is_ok(),
        "{:?}",
        matching.healthcheck()
    );
    matching.shutdown().await.expect("shutdown");
}

async fn outbox_pending(db: &DatabaseConnection) -> u64 {
    Outbox::new().backlog(db).await.expect("backlog").pending
}

/// Samples `relay`'s held shards every 100 ms for `period` and returns the fewest seen.
async fn fewest_shards_held(relay: &outbox::RelayHandle, period: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + period;
    let mut fewest = usize::MAX;
    while tokio::time::Instant::now() < deadline {
        fewest = fewest.min(relay.stats().owned_shards);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fewest
}

/// A relay whose host clock runs an hour ahead (or behind) goes by the database's
/// clock: it takes no lease from the live relay, and the two share the shards.
async fn a_skewed_clock_takes_no_lease_from_a_live_relay(db: DatabaseConnection) {
    for skew in [chrono::Duration::hours(1), chrono::Duration::hours(-1)] {
        let honest = Relay::new(fast_config("clocks"), db.clone(), MemoryPublisher::new())
            .expect("valid relay config")
            .spawn();
        until_holding(&honest, 16, "the first relay", Duration::from_secs(10)).await;
        let skewed = Relay::new(fast_config("clocks"), db.clone(), MemoryPublisher::new())
            .expect("valid relay config")
            .with_clock_skew(skew)
            .spawn();
        let fewest = fewest_shards_held(&honest, Duration::from_secs(4)).await;
        assert_eq!(fewest, 8, "skew {skew}: the live relay kept its fair share");
        assert_eq!(
            skewed.stats().owned_shards,
            8,
            "skew {skew}: and the other took the rest"
        );
        skewed.shutdown().await.expect("shutdown");
        honest.shutdown().await.expect("shutdown");
    }
}

/// Two services on one outbox table: the relays of the one that started later publish
/// nothing and say why; when the first service's relays stop, they take over.
async fn a_second_service_on_one_table_publishes_nothing_while_the_first_runs(
    db: DatabaseConnection,
) {
    let outbox = Outbox::new();
    let first_publisher = MemoryPublisher::new();
    let first = Relay::new(fast_config("first"), db.clone(), first_publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    until_holding(&first, 16, "the first service", Duration::from_secs(10)).await;
    let second_publisher = MemoryPublisher::new();
    let second = Relay::new(fast_config("second"), db.clone(), second_publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    eventually(
        "the second service says why it waits",
        Duration::from_secs(10),
        || async {
            second
                .healthcheck()
                .is_err_and(|error| error.to_string().contains("\"first\""))
        },
    )
    .await;
    store_interleaved(&db, &outbox, 5, 4).await;
    eventually(
        "the first service published everything",
        Duration::from_secs(10),
        || async { outbox_pending(&db).await == 0 },
    )
    .await;
    assert_eq!(first_publisher.messages().len(), 20);
    assert!(
        second_publisher.messages().is_empty(),
        "published once, by one service"
    );

    first.shutdown().await.expect("shutdown");
    store_interleaved(&db, &outbox, 5, 1).await;
    eventually(
        "the second service took over",
        Duration::from_secs(15),
        || async { second_publisher.messages().len() == 5 },
    )
    .await;
    second.shutdown().await.expect("shutdown");
}

/// The status figures read pending and dead-lettered events through their indexes,
/// never the published history: with 3,000 published events and 12 others, they touch
/// a few dozen rows at most.
#[tokio::test]
async fn postgres_status_figures_do_not_read_the_published_history() {
    let pg = PgSchema::migrated().await;
    pg.db
        .execute_unprepared(
            "INSERT INTO _outbox (id, event_type, aggregate_id, event_data, destination_topic, partition_key, shard, published, published_at) \
             SELECT gen_random_uuid(), 'old', 'k' || (g % 64), '{}'::jsonb, 'history', 'k' || (g % 64), g % 16, TRUE, now() \
             FROM generate_series(1, 3000) g",
        )
        .await
        .expect("history");
    let outbox = Outbox::new();
    store_interleaved(&pg.db, &outbox, 4, 3).await;
    pg.db
        .execute_unprepared("ANALYZE _outbox")
        .await
        .expect("analyze");

    let txn = pg.db.begin().await.expect("begin");
    txn.execute_unprepared("SET LOCAL enable_seqscan = off")
        .await
        .expect("no sequential scans where an index serves");
    let before = rows_read(&txn, &pg.schema).await;
    let backlog = outbox.backlog(&txn).await.expect("backlog");
    let topics = outbox.topic_backlog(&txn).await.expect("topics");
    let read = rows_read(&txn, &pg.schema).await - before;
    txn.commit().await.expect("commit");
    assert_eq!(backlog.pending, 12);
    assert!(backlog.oldest_pending_at.is_some());
    assert_eq!(topics.len(), 1, "{topics:?}");
    assert!(read < 100, "the status figures read {read} rows");
    pg.drop().await;
}

/// A backlog of 1 KiB events analysed while it was all pending, then mostly published (no vacuum since,
/// as while a relay drains it): the claim still reads through the claim index. Walking
/// the primary key in `seq` order instead, as PostgreSQL chose for `shard = $1 ORDER BY
/// seq` with such statistics, reads every row of every shard published meanwhile.
#[tokio::test]
async fn postgres_the_claim_reads_its_index_when_statistics_say_everything_is_pending() {
    let pg = PgSchema::migrated().await;
    pg.db
        .execute_unprepared(
            "INSERT INTO _outbox (id, event_type, aggregate_id, event_data, destination_topic, partition_key, shard) \
             SELECT gen_random_uuid(), 'backlog', 'k' || (g % 64), jsonb_build_object('filler', repeat('x', 1000)), \
                    'backlog', 'k' || (g % 64), g % 16 \
             FROM generate_series(1, 20000) g",
        )
        .await
        .expect("backlog");
    pg.db
        .execute_unprepared("ANALYZE _outbox")
        .await
        .expect("analyze");
    pg.db
        .execute_unprepared(
            "UPDATE _outbox SET published = TRUE, published_at = now() WHERE seq <= 15000",
        )
        .await
        .expect("publish most");
    // The claim as the relay sends it (`claim.sql`, comments off, the table named).
    let claim: String = include_str!("../outbox/src/sql/claim.sql")
        .lines()
        .filter(|line| !line.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{outbox}", "\"_outbox\"");

    let txn = pg.db.begin().await.expect("begin");
    let before = rows_read(&txn, &pg.schema).await;
    let claimed = txn
        .query_all_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            claim,
            [3_i32.into(), chrono::Utc::now().into(), 500_i64.into()],
        ))
        .await
        .expect("claim");
    let read = rows_read(&txn, &pg.schema).await - before;
    txn.commit().await.expect("commit");
    assert_eq!(claimed.len(), 312, "the pending events of shard 3");
    assert!(
        read < 3000,
        "the claim read {read} rows for {} events",
        claimed.len()
    );
    pg.drop().await;
}

/// Rows of `_outbox` read so far in this transaction, by sequential and index scans.
async fn rows_read(txn: &sea_orm::DatabaseTransaction, schema: &str) -> i64 {
    let statement = Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT (COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0))::int8 AS n \
         FROM pg_stat_xact_user_tables WHERE schemaname = $1 AND relname = '_outbox'",
        [schema.into()],
    );
    txn.query_one_raw(statement)
        .await
        .expect("stats")
        .map_or(0, |row| row.try_get::<i64>("", "n").expect("n"))
}

/// A lease round waiting on the database (here: its heartbeat, behind a lock another
/// session holds) does not hold up the batches: an event stored meanwhile is
/// published at once, not after the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lease_round_stuck_on_the_database_holds_up_no_batch() {
    let pg = PgSchema::migrated().await;
    let outbox = Outbox::new();
    let publisher = MemoryPublisher::new();
    let config = RelayConfig {
        // A round every 2 s; the leases last well past the stuck round.
        lease_ttl: Duration::from_secs(6),
        ..fast_config("stuck-round")
    };
    let relay = Relay::new(config, pg.db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    eventually(
        "the relay holds every shard",
        Duration::from_secs(10),
        || async { relay.stats().owned_shards == usize::from(outbox.shards()) },
    )
    .await;

    // Heartbeats (a round's first statement) wait until this transaction ends.
    let lock = pg.db.begin().await.expect("begin");
    lock.execute_unprepared("LOCK TABLE \"_outbox_relay\" IN SHARE MODE")
        .await
        .expect("lock the relay table");
    // Longer than the round interval: a round is stuck now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let txn = pg.db.begin().await.expect("begin");
    outbox
        .store(&txn, &counter("k", 1), "counters")
        .await
        .expect("store");
    outbox.commit(txn).await.expect("commit");
    eventually(
        "the event is published while the round waits",
        Duration::from_millis(1500),
        || async { publisher.messages().len() == 1 },
    )
    .await;
    lock.rollback().await.expect("rollback");
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}

/// A relay paused between its claim and the broker for longer than its lease
/// publishes nothing of that claim when it resumes: by then another relay may own the
/// shard and have published later events of the same keys. The pause here is a row
/// lock that the batch's parking waits on (a SIGSTOP or a frozen VM does the same);
/// the relay used to resume and publish what it had claimed.
async fn a_relay_paused_past_its_lease_publishes_nothing_it_claimed_before(db: DatabaseConnection) {
    use sea_orm::QuerySelect;
    let one = std::num::NonZeroU16::new(1).expect("non-zero");
    let outbox = Outbox::new().with_shards(one);
    let config = RelayConfig {
        retry_backoff: outbox::Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)),
        ..fast_config("paused")
    };
    let [blocker, behind] = store_counters(&db, &outbox, "blocked", 2).await[..] else {
        unreachable!("two events stored")
    };
    outbox
        .handle_event_failure(&db, blocker, "unknown topic", &config)
        .await
        .expect("the first event waits for a retry");
    let publisher = MemoryPublisher::new();
    let relay = Arc::new(
        Relay::new(config.clone(), db.clone(), publisher.clone())
            .expect("valid relay config")
            .with_outbox(outbox.clone()),
    );
    relay.process_events(10).await.expect("take the shard");
    // The event behind the retrying one back in the claim, where the batch parks it,
    // and an event of another key for the batch to publish.
    row::Entity::update_many()
        .col_expr(row::Column::Parked, Expr::value(false))
        .exec(&db)
        .await
        .expect("unpark");
    let free = outbox
        .store(&db, &counter("free", 0), "counters")
        .await
        .expect("store");

    let pause = db.begin().await.expect("begin");
    row::Entity::find()
        .filter(row::Column::Id.eq(behind))
        .lock_exclusive()
        .one(&pause)
        .await
        .expect("lock the row the batch parks");
    let paused = tokio::spawn({
        let relay = Arc::clone(&relay);
        async move { relay.process_events(10).await }
    });
    tokio::time::sleep(config.lease_ttl + Duration::from_millis(500)).await;
    pause.commit().await.expect("resume");
    let report = paused.await.expect("the paused pass").expect("no error");
    assert_eq!(report.published, 0, "{report:?}");
    assert!(
        publisher.messages().is_empty(),
        "published on a lease that ran out while paused"
    );

    // The next pass renews the lease first, and publishes.
    relay.process_events(10).await.expect("process");
    let ids: Vec<Uuid> = publisher.messages().iter().map(|m| m.id).collect();
    assert_eq!(ids, [free]);
}

/// A publisher whose check succeeds and whose deliveries all fail as outages: a relay
/// that reaches the bootstrap broker but not the partitions' leaders.
#[derive(Debug, Clone, Copy)]
struct LeadersUnreachable;

impl Publisher for LeadersUnreachable {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        batch
            .iter()
            .map(|_| {
                Err(PublishError::transient(
                    "no route to the partition's leader",
                ))
            })
            .collect()
    }
}

/// A relay that answers the broker's check but delivers nothing stands aside and stays
/// aside but for a one-shard probation now and then: once its stall timeout and a
/// lease round are over, a working relay publishes every event within a lease round
/// of its store. (It used to rejoin with its whole share of shards whenever the check
/// succeeded, and hold their events for another stall timeout, again and again.)
async fn a_relay_cut_off_from_the_leaders_leaves_the_work_to_a_working_one(db: DatabaseConnection) {
    let config = RelayConfig {
        stall_timeout: Duration::from_secs(2),
        lease_ttl: Duration::from_secs(2),
        ..fast_config("half-cut")
    };
    let outbox = Outbox::new();
    let cut = Relay::new(config.clone(), db.clone(), LeadersUnreachable)
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    until_holding(&cut, 16, "the cut-off relay", Duration::from_secs(10)).await;
    let publisher = MemoryPublisher::new();
    let working = Relay::new(config.clone(), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    let settled = std::time::Instant::now() + config.stall_timeout + config.lease_ttl;
    let within = config.lease_ttl;
    let mut stored: Vec<(std::time::Instant, Uuid)> = Vec::new();
    let mut late = Vec::new();
    for n in 0..120 {
        let id = outbox
            .store(&db, &counter(&format!("key-{n}"), 0), "counters")
            .await
            .expect("store");
        stored.push((std::time::Instant::now(), id));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let published: std::collections::HashSet<Uuid> =
            publisher.messages().iter().map(|m| m.id).collect();
        for &(at, id) in &stored {
            if at > settled
                && at.elapsed() > within
                && !published.contains(&id)
                && !late.contains(&id)
            {
                late.push(id);
            }
        }
    }
    eventually(
        "everything is published by the working relay",
        Duration::from_secs(20),
        || async { publisher.messages().len() >= 120 },
    )
    .await;
    assert!(
        late.is_empty(),
        "{} events stored after the stall waited longer than {within:?}",
        late.len()
    );
    assert!(
        cut.healthcheck().is_err(),
        "the cut-off relay says it delivers nothing"
    );
    working.shutdown().await.expect("shutdown");
    cut.shutdown().await.expect("shutdown");
}

/// A publisher whose broker can be taken away and given back: away, every delivery
/// fails as an outage and the check fails too.
#[derive(Debug, Clone, Default)]
struct Switchable {
    inner: MemoryPublisher,
    down: Arc<AtomicBool>,
}

impl Publisher for Switchable {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        if self.down.load(Ordering::SeqCst) {
            return batch
                .iter()
                .map(|_| Err(PublishError::transient("broker unreachable")))
                .collect();
        }
        self.inner.publish(batch).await
    }

    async fn check(&self) -> Result<(), PublishError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(PublishError::transient("broker unreachable")),
            false => Ok(()),
        }
    }
}

/// A relay alone that stood aside while its broker was away takes every shard back
/// when it returns: on probation it would hold one shard, and with no other relay to
/// take the rest, their events would wait until one was stored to that shard.
async fn a_lone_relay_back_from_an_outage_takes_every_shard(db: DatabaseConnection) {
    let config = RelayConfig {
        stall_timeout: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(2),
        ..fast_config("lone")
    };
    let outbox = Outbox::new();
    let publisher = Switchable::default();
    publisher.down.store(true, Ordering::SeqCst);
    let relay = Relay::new(config, db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    until_holding(&relay, 16, "the relay", Duration::from_secs(10)).await;
    let failing = store_counters(&db, &outbox, "first", 1).await;
    // It stands aside.
    until_holding(&relay, 0, "the relay", Duration::from_secs(20)).await;
    // Nothing pending when the broker returns.
    outbox
        .mark_events_as_published(&db, &failing)
        .await
        .expect("mark");
    publisher.down.store(false, Ordering::SeqCst);
    until_holding(&relay, 16, "the relay, back,", Duration::from_secs(10)).await;
    let later = store_counters(&db, &outbox, "later", 1).await;
    eventually(
        "a new event is published",
        Duration::from_secs(10),
        || async { publisher.inner.messages().iter().any(|m| m.id == later[0]) },
    )
    .await;
    relay.shutdown().await.expect("shutdown");
}

outbox_tests::on_server_backends!(
    a_lone_relay_back_from_an_outage_takes_every_shard,
    a_relay_paused_past_its_lease_publishes_nothing_it_claimed_before,
    a_relay_cut_off_from_the_leaders_leaves_the_work_to_a_working_one,
    the_longest_service_name_fits_the_relay_tables,
    three_relays_share_the_work_in_key_order,
    crashed_relay_is_replaced_after_its_lease_expires,
    shutdown_during_a_busy_batch_keeps_its_deadline,
    health_and_stats_report_the_relay,
    late_commit_is_published_in_commit_order_while_other_keys_flow,
    passes_slower_than_the_lease_keep_their_shards,
    events_outside_the_relays_shards_fail_the_health_check,
    a_skewed_clock_takes_no_lease_from_a_live_relay,
    a_second_service_on_one_table_publishes_nothing_while_the_first_runs,
);
