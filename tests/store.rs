//! Storing events: atomic with the caller's transaction, every field as given,
//! batches in one statement, invalid input rejected before anything is written, and
//! per-key commit order on PostgreSQL and MySQL.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use outbox::entity::outbox as outbox_row;
use outbox::{Envelope, Error, EventBuilder, EventField, Outbox, OutboxEvent, Tables};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryOrder, Statement,
    TransactionTrait,
};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

#[derive(Serialize, OutboxEvent)]
#[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
struct UserRegistered {
    user_id: Uuid,
    email: String,
}

fn registered() -> UserRegistered {
    UserRegistered {
        user_id: Uuid::now_v7(),
        email: "ada@example.com".to_owned(),
    }
}

async fn rows(db: &DatabaseConnection) -> Vec<outbox_row::Model> {
    outbox_row::Entity::find()
        .order_by_asc(outbox_row::Column::Seq)
        .all(db)
        .await
        .expect("read outbox")
}

async fn commit_makes_the_row_visible_with_every_field(db: DatabaseConnection) {
    let db = &db;
    let outbox = Outbox::new();
    let event = registered();
    let before = chrono::Utc::now();
    let txn = db.begin().await.expect("begin");
    let id = outbox
        .store(&txn, &event, "user-events")
        .partition_key("tenant-7")
        .user_id(42)
        .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
        .header("tenant", "acme")
        .header("source", "signup-form")
        .await
        .expect("store");
    txn.commit().await.expect("commit");

    let rows = rows(db).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.id, id);
    assert_eq!(id.get_version_num(), 7, "event ids are UUID v7");
    assert_eq!(row.event_type, "user.registered");
    assert_eq!(row.event_version, "v2");
    assert_eq!(row.aggregate_id, event.user_id.to_string());
    assert_eq!(
        row.event_data,
        json!({ "user_id": event.user_id, "email": "ada@example.com" })
    );
    assert_eq!(row.destination_topic, "user-events");
    assert_eq!(row.partition_key.as_deref(), Some("tenant-7"));
    assert_eq!(row.user_id.as_deref(), Some("42"));
    assert_eq!(
        row.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(
        row.headers,
        Some(json!({ "tenant": "acme", "source": "signup-form" }))
    );
    assert!((0..i32::from(outbox::DEFAULT_SHARDS.get())).contains(&row.shard));
    assert!(!row.published);
    assert_eq!(row.published_at, None);
    assert_eq!(row.attempts, 0);
    assert_eq!(
        (
            row.last_attempt_at,
            row.next_attempt_at,
            row.dead_lettered_at
        ),
        (None, None, None)
    );
    assert_eq!(row.error_message, None);
    assert!(
        row.created_at >= before - chrono::Duration::milliseconds(1),
        "created_at {}",
        row.created_at
    );
    assert_eq!(row.updated_at, row.created_at);
}

async fn rollback_leaves_nothing(db: DatabaseConnection) {
    let db = &db;
    let txn = db.begin().await.expect("begin");
    Outbox::new()
        .store(&txn, &registered(), "user-events")
        .await
        .expect("store");
    txn.rollback().await.expect("rollback");
    assert!(rows(db).await.is_empty());
}

async fn defaults_key_to_aggregate_and_builder_fields(db: DatabaseConnection) {
    let db = &db;
    let outbox = Outbox::new();
    let event = EventBuilder::new("order.created", "order-17")
        .version("v3")
        .user_id("customer-4")
        .trace_id("trace-1")
        .data(json!({ "amount": 4200, "items": ["a", "b"] }));
    outbox
        .store(db, &event, "order-events")
        .await
        .expect("store on a bare connection");
    let row = rows(db).await.pop().expect("one row");
    assert_eq!(row.event_type, "order.created");
    assert_eq!(row.event_version, "v3");
    assert_eq!(
        row.partition_key.as_deref(),
        Some("order-17"),
        "the key defaults to the aggregate id"
    );
    assert_eq!(row.user_id.as_deref(), Some("customer-4"));
    assert_eq!(row.trace_id.as_deref(), Some("trace-1"));
    assert_eq!(row.headers, None);
    assert_eq!(
        row.event_data,
        json!({ "amount": 4200, "items": ["a", "b"] })
    );
}

/// Counts the statements a connection runs that start with `prefix`.
fn count_statements(db: &mut DatabaseConnection, needle: &'static str) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    db.set_metric_callback(move |info| {
        if info.statement.sql.contains(needle) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    count
}

async fn batch_writes_all_rows_in_one_statement(mut db: DatabaseConnection) {
    let inserts = count_statements(&mut db, "INSERT INTO");
    let envelopes: Vec<Envelope> = (0..250)
        .map(|i| {
            let event =
                EventBuilder::new("order.created", format!("order-{i}")).data(json!({ "n": i }));
            Envelope::new(&event, "order-events")
                .expect("serializable")
                .partition_key(format!("customer-{}", i % 7))
        })
        .collect();
    let expected: Vec<Uuid> = envelopes.iter().map(Envelope::id).collect();

    let txn = db.begin().await.expect("begin");
    let ids = Outbox::new()
        .store_batch(&txn, envelopes)
        .await
        .expect("store batch");
    txn.commit().await.expect("commit");

    assert_eq!(ids, expected);
    assert_eq!(
        inserts.load(Ordering::SeqCst),
        1,
        "one INSERT for the whole batch"
    );
    let rows = rows(&db).await;
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        expected,
        "stored in the order given"
    );
    assert_eq!(rows[3].event_data, json!({ "n": 3 }));
    assert_eq!(rows[9].partition_key.as_deref(), Some("customer-2"));
}

/// A batch whose payloads differ in size by thousands of times (a 40 KB one between
/// small ones) is stored whole, every payload as it was given.
async fn a_batch_of_small_and_large_payloads_is_stored_whole(db: DatabaseConnection) {
    let sizes = [10, 40_000, 10, 40_000, 200_000, 3];
    let envelopes: Vec<Envelope> = sizes
        .iter()
        .enumerate()
        .map(|(n, size)| {
            let event = EventBuilder::new("order.created", format!("order-{n}"))
                .data(json!({ "filler": "x".repeat(*size) }));
            Envelope::new(&event, "order-events").expect("serializable")
        })
        .collect();
    let txn = db.begin().await.expect("begin");
    Outbox::new()
        .store_batch(&txn, envelopes)
        .await
        .expect("store batch");
    txn.commit().await.expect("commit");
    let stored: Vec<usize> = rows(&db)
        .await
        .iter()
        .map(|row| row.event_data["filler"].as_str().map_or(0, str::len))
        .collect();
    assert_eq!(stored, sizes);
}

async fn an_empty_batch_stores_nothing_and_succeeds(db: DatabaseConnection) {
    let txn = db.begin().await.expect("begin");
    let ids = Outbox::new()
        .store_batch(&txn, Vec::<Envelope>::new())
        .await
        .expect("an empty batch is not an error");
    txn.commit().await.expect("the transaction stays usable");
    assert!(ids.is_empty());
    assert!(rows(&db).await.is_empty());
}

/// A map with non-string keys cannot become a JSON object.
#[derive(Serialize, OutboxEvent)]
#[outbox(type = "broken.event", aggregate = "id")]
struct Unserializable {
    id: u32,
    by_pair: BTreeMap<(u8, u8), u8>,
}

async fn invalid_input_is_rejected_and_nothing_is_written(db: DatabaseConnection) {
    let db = &db;
    let outbox = Outbox::new();
    let good = registered();
    let long = "x".repeat(256);
    let txn = db.begin().await.expect("begin");

    let cases: Vec<(&str, Result<Uuid, Error>)> = vec![
        ("empty topic", outbox.store(&txn, &good, "").await),
        ("bad topic", outbox.store(&txn, &good, "user events").await),
        (
            "long partition key",
            outbox.store(&txn, &good, "t").partition_key(&long).await,
        ),
        (
            "long user id",
            outbox.store(&txn, &good, "t").user_id(&long).await,
        ),
        (
            "long trace id",
            outbox.store(&txn, &good, "t").trace_id(&long).await,
        ),
        (
            "reserved header",
            outbox.store(&txn, &good, "t").header("event_id", "x").await,
        ),
        (
            "a CloudEvents header",
            outbox
                .store(&txn, &good, "t")
                .header("ce_source", "x")
                .await,
        ),
        (
            "Debezium's header",
            outbox.store(&txn, &good, "t").header("id", "x").await,
        ),
        (
            "empty type",
            outbox.store(&txn, &EventBuilder::new(" ", "a"), "t").await,
        ),
        (
            "empty aggregate",
            outbox.store(&txn, &EventBuilder::new("a.b", ""), "t").await,
        ),
        (
            "long version",
            outbox
                .store(
                    &txn,
                    &EventBuilder::new("a.b", "a").version("v".repeat(51)),
                    "t",
                )
                .await,
        ),
        (
            "unserializable",
            outbox
                .store(
                    &txn,
                    &Unserializable {
                        id: 1,
                        by_pair: BTreeMap::from([((1, 2), 3)]),
                    },
                    "t",
                )
                .await,
        ),
    ];
    let errors: Vec<String> = cases
        .iter()
        .map(|(case, result)| match result {
            Err(error) => format!("{case}: {error}"),
            Ok(id) => panic!("{case} was stored as {id}"),
        })
        .collect();
    assert_eq!(
        errors,
        [
            "empty topic: invalid topic \"\": it is empty",
            "bad topic: invalid topic \"user events\": Kafka allows only ASCII letters, digits, `.`, `_` and `-`",
            "long partition key: partition key (partition_key) is 256 characters long; at most 255 are allowed",
            "long user id: user id (user_id) is 256 characters long; at most 255 are allowed",
            "long trace id: trace id (trace_id) is 256 characters long; at most 255 are allowed",
            "reserved header: invalid header \"event_id\": the relay sets this header itself (in one of its message formats)",
            "a CloudEvents header: invalid header \"ce_source\": the relay sets this header itself (in one of its message formats)",
            "Debezium's header: invalid header \"id\": the relay sets this header itself (in one of its message formats)",
            "empty type: event type (event_type) must not be empty",
            "empty aggregate: aggregate id (aggregate_id) must not be empty",
            "long version: event version (event_version) is 51 characters long; at most 50 are allowed",
            "unserializable: could not serialize the payload of event type \"broken.event\" to JSON",
        ]
    );
    assert!(matches!(
        cases[2].1,
        Err(Error::FieldTooLong {
            field: EventField::PartitionKey,
            len: 256,
            max: 255
        })
    ));
    assert!(
        matches!(&cases[11].1, Err(Error::Serialize { source, .. }) if source.to_string().contains("key must be a string"))
    );

    // One bad envelope in a batch: nothing of the batch is written.
    let batch = vec![
        Envelope::new(&good, "user-events").expect("serializable"),
        Envelope::new(&good, "user-events")
            .expect("serializable")
            .partition_key(""),
    ];
    let error = outbox
        .store_batch(&txn, batch)
        .await
        .expect_err("batch with an empty key");
    assert!(
        matches!(
            error,
            Error::EmptyField {
                field: EventField::PartitionKey
            }
        ),
        "{error}"
    );

    // The failures left the transaction usable: a valid store and the commit succeed.
    outbox
        .store(&txn, &good, "user-events")
        .await
        .expect("store after failures");
    txn.commit().await.expect("commit after failures");
    assert_eq!(rows(db).await.len(), 1, "only the valid event was written");
}

async fn custom_tables_are_used(db: DatabaseConnection) {
    let db = &db;
    let tables = Tables::with_base("billing_outbox").expect("valid base");
    let manager = sea_orm_migration::SchemaManager::new(db);
    for migration in outbox_migration::migrations_for(&tables) {
        sea_orm_migration::MigrationTrait::up(&*migration, &manager)
            .await
            .expect("create custom tables");
    }
    let outbox = Outbox::new().with_tables(tables);
    outbox
        .store(db, &registered(), "user-events")
        .await
        .expect("store");
    let backend = db.get_database_backend();
    let count = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT count(*) FROM billing_outbox",
        ))
        .await
        .expect("count")
        .and_then(|row| row.try_get_by_index::<i64>(0).ok());
    assert_eq!(count, Some(1));
    assert!(rows(db).await.is_empty(), "the default table is untouched");
}

outbox_tests::on_every_backend!(
    commit_makes_the_row_visible_with_every_field,
    rollback_leaves_nothing,
    defaults_key_to_aggregate_and_builder_fields,
    invalid_input_is_rejected_and_nothing_is_written,
    custom_tables_are_used,
    batch_writes_all_rows_in_one_statement,
    a_batch_of_small_and_large_payloads_is_stored_whole,
    an_empty_batch_stores_nothing_and_succeeds,
);

async fn batch_beyond_the_parameter_limit_is_split_and_complete(mut db: DatabaseConnection) {
    let inserts = count_statements(&mut db, "INSERT INTO");
    let envelopes = (0..5000).map(|i| {
        Envelope::new(&EventBuilder::new("bulk.loaded", i), "bulk").expect("serializable")
    });
    let ids = Outbox::new()
        .store_batch(&db, envelopes)
        .await
        .expect("store 5000");
    assert_eq!(ids.len(), 5000);
    // PostgreSQL: 4,096 + 904 rows; MySQL: 4 x 1,024 + 904 (its packet limit).
    let statements = match db.get_database_backend() {
        DbBackend::MySql => 5,
        _ => 2,
    };
    assert_eq!(inserts.load(Ordering::SeqCst), statements);
    assert_eq!(rows(&db).await.len(), 5000);
}

fn keyed(key: &str, n: u32) -> EventBuilder {
    EventBuilder::new("counter.incremented", key).data(json!({ "n": n }))
}

/// Per-key order at store time: a transaction storing a key waits for an open transaction that
/// stored the same key, so for one key `seq` follows commit order; other keys go on.
async fn same_key_waits_for_the_open_transaction_other_keys_do_not(db: DatabaseConnection) {
    let outbox = Outbox::new();

    let first = db.begin().await.expect("begin first");
    outbox
        .store(&first, &keyed("k", 1), "counters")
        .await
        .expect("store first");

    let (pool, ob) = (db.clone(), outbox.clone());
    let second = tokio::spawn(async move {
        let txn = pool.begin().await?;
        ob.store(&txn, &keyed("k", 2), "counters").await?;
        txn.commit().await?;
        Ok::<_, Error>(())
    });

    let other = db.begin().await.expect("begin other");
    tokio::time::timeout(
        Duration::from_secs(5),
        outbox
            .store(&other, &keyed("other", 1), "counters")
            .into_future(),
    )
    .await
    .expect("another key does not wait")
    .expect("store other");
    other.commit().await.expect("commit other");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second store of `k` waits for the first transaction"
    );
    first.commit().await.expect("commit first");
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second store proceeds after the first commit")
        .expect("task")
        .expect("second store");

    let order: Vec<(String, serde_json::Value)> = rows(&db)
        .await
        .into_iter()
        .filter(|r| r.partition_key.as_deref() == Some("k"))
        .map(|r| (r.aggregate_id, r.event_data["n"].clone()))
        .collect();
    assert_eq!(
        order,
        [("k".to_owned(), json!(1)), ("k".to_owned(), json!(2))]
    );
}

/// Rows are invisible to other sessions until commit (real concurrency).
async fn rows_are_invisible_until_commit(db: DatabaseConnection) {
    let txn = db.begin().await.expect("begin");
    Outbox::new()
        .store(&txn, &registered(), "user-events")
        .await
        .expect("store");
    assert!(rows(&db).await.is_empty(), "uncommitted rows are invisible");
    txn.commit().await.expect("commit");
    assert_eq!(rows(&db).await.len(), 1);
}

/// A NUL character would make PostgreSQL abort the caller's transaction: it is refused
/// before anything is written (on every server), and the transaction goes on.
async fn nul_characters_are_refused_and_the_transaction_stays_usable(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let txn = db.begin().await.expect("begin");
    let with_nul = EventBuilder::new("note.added", "n-1").data(json!({ "text": "a\u{0}b" }));
    let refused = outbox.store(&txn, &with_nul, "notes").await;
    assert!(
        matches!(
            refused,
            Err(Error::NulCharacter {
                field: EventField::Payload
            })
        ),
        "{refused:?}"
    );
    let refused = outbox
        .store(&txn, &EventBuilder::new("note.added", "n-1"), "notes")
        .header("tenant", "ac\u{0}me")
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::NulCharacter {
                field: EventField::Headers
            })
        ),
        "{refused:?}"
    );
    outbox
        .store(&txn, &EventBuilder::new("note.added", "n-1"), "notes")
        .await
        .expect("the transaction is still usable");
    txn.commit().await.expect("commit");
    assert_eq!(rows(&db).await.len(), 1);
}

/// An envelope of key `k-{n}` for the topic `numbers`.
fn numbered(n: usize) -> Envelope {
    Envelope::new(&EventBuilder::new("n.added", format!("k-{n}")), "numbers").expect("envelope")
}

/// A batch of several statements on a bare connection is all or nothing: a failure in
/// its second statement leaves no row of the first.
async fn batch_of_several_statements_is_atomic_on_a_bare_connection(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let mut envelopes: Vec<Envelope> = (0..5000).map(numbered).collect();
    envelopes.push(envelopes[0].clone()); // the same id again: the second statement fails
    let result = outbox.store_batch(&db, envelopes).await;
    assert!(matches!(result, Err(Error::Db(_))), "{result:?}");
    assert_eq!(rows(&db).await.len(), 0, "nothing of the batch is left");

    // Inside the caller's transaction, the failed batch is rolled back to its
    // savepoint: the transaction goes on.
    let txn = db.begin().await.expect("begin");
    let mut envelopes: Vec<Envelope> = (0..4100).map(numbered).collect();
    envelopes.push(envelopes[0].clone());
    assert!(outbox.store_batch(&txn, envelopes).await.is_err());
    outbox
        .store(&txn, &EventBuilder::new("n.added", "k-y"), "numbers")
        .await
        .expect("the transaction is still usable");
    txn.commit().await.expect("commit");
    assert_eq!(rows(&db).await.len(), 1);
}

/// Two large batches over the same keys in opposite orders, in concurrent
/// transactions: both commit (all keys are locked first, in one order), neither is
/// chosen as a deadlock victim.
async fn large_batches_over_shared_keys_do_not_deadlock(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let batch = |reverse: bool| {
        let mut keys: Vec<usize> = (0..6000).collect();
        if reverse {
            keys.reverse();
        }
        keys.into_iter().map(numbered).collect::<Vec<_>>()
    };
    let writers: Vec<_> = [false, true]
        .into_iter()
        .map(|reverse| {
            let (pool, outbox, envelopes) = (db.clone(), outbox.clone(), batch(reverse));
            tokio::spawn(async move {
                let txn = pool.begin().await.expect("begin");
                outbox.store_batch(&txn, envelopes).await?;
                txn.commit().await?;
                Ok::<_, Error>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer").expect("both batches commit");
    }
    assert_eq!(rows(&db).await.len(), 12_000);
}

outbox_tests::on_server_backends!(
    batch_beyond_the_parameter_limit_is_split_and_complete,
    same_key_waits_for_the_open_transaction_other_keys_do_not,
    rows_are_invisible_until_commit,
    nul_characters_are_refused_and_the_transaction_stays_usable,
    batch_of_several_statements_is_atomic_on_a_bare_connection,
    large_batches_over_shared_keys_do_not_deadlock,
);
