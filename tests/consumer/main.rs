//! The consumer loop against the real broker (tansu, started by `scripts/test.sh`)
//! and PostgreSQL: each event applied once, in partition order, retries and dead
//! letters, offsets kept across a restart, a group sharing the partitions; hostile
//! messages and handlers in `hostile.rs`.

mod hostile;
mod replay;
mod trace;

use std::collections::BTreeMap;
use std::time::Duration;

use outbox::{
    Consumer, ConsumerConfig, ConsumerHandle, EventBuilder, HandlerError, KafkaConfig,
    KafkaPublisher, Outbox, OutboxEvent, Publisher, Received, Relay, RelayConfig,
};
use outbox_tests::kafka::{brokers, consume, create_topic, unique_topic, warmed_up};
use outbox_tests::{PgSchema, eventually};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// What the consumers of these tests read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, OutboxEvent)]
enum AccountEvent {
    #[outbox(type = "account.credited", aggregate = "account")]
    Credited { account: String, n: i64 },
    #[outbox(type = "account.closed", aggregate = "account")]
    Closed { account: String },
}

fn consumer_config(name: &str, topic: &str) -> ConsumerConfig {
    let kafka = KafkaConfig::new(&brokers()).set("fetch.wait.max.ms", "5");
    let mut config = ConsumerConfig::new(kafka, name, [topic]);
    config.retry_backoff =
        outbox::Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    config.retry_attempts = 2;
    config.shutdown_timeout = Duration::from_secs(10);
    config
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

/// A publisher that sends each message in a record batch of its own. tansu 0.6 answers
/// a fetch from an offset inside a record batch with the batches after it, skipping the
/// rest of that batch (Kafka returns the whole batch, and the client drops what comes
/// before the offset): a consumer that resumes, or takes over a partition, at an offset
/// inside a batch would miss messages on the test broker only. Seen with 20 messages
/// produced at once and a consumer assigned offset 5: it received nothing.
async fn publisher() -> KafkaPublisher {
    let config = KafkaConfig::new(&brokers())
        .message_timeout(Duration::from_secs(5))
        .set("batch.num.messages", "1");
    warmed_up(
        KafkaPublisher::from_config(config).expect("producer"),
        &brokers(),
    )
    .await
}

/// The message the relay would publish for a credit of `n` to `account`.
fn credit(topic: &str, account: &str, n: i64) -> outbox::Message {
    let event = AccountEvent::Credited {
        account: account.to_owned(),
        n,
    };
    message(topic, account, &event)
}

fn message(topic: &str, account: &str, event: &AccountEvent) -> outbox::Message {
    outbox::Message {
        seq: 0,
        id: Uuid::now_v7(),
        event_type: event.event_type().to_owned(),
        event_version: event.event_version().to_owned(),
        aggregate_id: account.to_owned(),
        topic: topic.to_owned(),
        key: account.to_owned(),
        payload: event.payload().expect("payload").to_string(),
        extra_headers: Vec::new(),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
        user_id: None,
        created_at: chrono::Utc::now(),
        attempts: 0,
        tombstone: false,
        encoding: outbox::Encoding::native(),
    }
}

async fn publish(publisher: &KafkaPublisher, messages: &[outbox::Message]) {
    for outcome in publisher.publish(messages).await {
        outcome.expect("published");
    }
}

/// A migrated schema with the `applied` table, a topic of `partitions` partitions, and
/// a publisher.
async fn scene(partitions: i32) -> (PgSchema, String, KafkaPublisher) {
    let pg = PgSchema::migrated().await;
    create_applied(&pg.db).await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, partitions).await;
    (pg, topic, publisher().await)
}

/// The number `sql` counts.
async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("count")
        .expect("row")
        .try_get_by_index::<i64>(0)
        .expect("count")
}

/// The table the handlers change: one row per application of an event.
async fn create_applied(db: &DatabaseConnection) {
    db.execute_unprepared(
        "CREATE TABLE applied (id BIGSERIAL PRIMARY KEY, account TEXT NOT NULL, n BIGINT NOT NULL, event_id UUID NOT NULL, trace_id TEXT)",
    )
    .await
    .expect("create applied");
}

/// Each account's `n`s in the order they were applied, and how often each event was.
async fn applied(db: &DatabaseConnection) -> (BTreeMap<String, Vec<i64>>, BTreeMap<Uuid, i64>) {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT account, n, event_id FROM applied ORDER BY id",
        ))
        .await
        .expect("applied rows");
    let mut order: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut times: BTreeMap<Uuid, i64> = BTreeMap::new();
    for row in rows {
        let account: String = row.try_get_by_index(0).expect("account");
        order
            .entry(account)
            .or_default()
            .push(row.try_get_by_index(1).expect("n"));
        *times
            .entry(row.try_get_by_index(2).expect("event_id"))
            .or_default() += 1;
    }
    (order, times)
}

/// Records a credit in `applied`, on the handler's transaction; other events change
/// nothing.
async fn apply_credit(
    txn: &sea_orm::DatabaseTransaction,
    event: &Received<AccountEvent>,
) -> Result<(), sea_orm::DbErr> {
    let AccountEvent::Credited { account, n } = event.event() else {
        return Ok(());
    };
    txn.execute_raw(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "INSERT INTO applied (account, n, event_id, trace_id) VALUES ($1, $2, $3, $4)",
        [
            account.clone().into(),
            (*n).into(),
            event.event_id().into(),
            event.trace_id().map(str::to_owned).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Waits (30 s at most) until `consumer` is done with `messages` messages: applied,
/// dead-lettered or skipped.
async fn done_with(consumer: &ConsumerHandle, messages: u64) {
    eventually(
        "every message is done with",
        Duration::from_secs(30),
        || async {
            let stats = consumer.stats();
            stats.processed + stats.dead_lettered + stats.skipped == messages
        },
    )
    .await;
}

/// Waits (30 s at most) until `consumer` is done with `messages` messages, duplicates
/// counted.
async fn done_with_any(consumer: &ConsumerHandle, messages: u64) {
    eventually(
        "every message is done with",
        Duration::from_secs(30),
        || async {
            let stats = consumer.stats();
            stats.processed + stats.duplicates + stats.dead_lettered + stats.skipped == messages
        },
    )
    .await;
}

/// A consumer whose handler records each credit in `applied`.
fn recording(config: ConsumerConfig, db: &DatabaseConnection) -> ConsumerHandle {
    Consumer::new(config, db.clone())
        .expect("valid consumer")
        .handle(|txn, event: Received<AccountEvent>| {
            Box::pin(async move { Ok(apply_credit(txn, &event).await?) })
        })
        .spawn()
        .expect("consumer starts")
}

/// Every key's events applied once each, in the order they were published, with
/// duplicates delivered in between skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_applied_once_in_order_and_duplicates_are_skipped() {
    let (pg, topic, publisher) = scene(3).await;
    let (accounts, per_account) = (6, 20);
    let messages: Vec<outbox::Message> = (0..per_account)
        .flat_map(|n| (0..accounts).map(move |a| (a, n)))
        .map(|(a, n)| credit(&topic, &format!("account-{a}"), n))
        .collect();
    publish(&publisher, &messages).await;
    // The relay publishes at least once: every fifth event comes twice.
    let again: Vec<outbox::Message> = messages.iter().step_by(5).cloned().collect();
    publish(&publisher, &again).await;

    let name = unique_name("billing");
    let consumer = recording(consumer_config(&name, &topic), &pg.db);
    let total = messages.len() + again.len();
    eventually(
        "every message is done with",
        Duration::from_secs(30),
        || async {
            let stats = consumer.stats();
            usize::try_from(stats.processed + stats.duplicates).expect("count") == total
        },
    )
    .await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");

    let (order, times) = applied(&pg.db).await;
    let expected: Vec<i64> = (0..per_account).collect();
    for a in 0..accounts {
        assert_eq!(order[&format!("account-{a}")], expected, "account-{a}");
    }
    assert!(
        times.values().all(|&t| t == 1),
        "each event applied once: {times:?}"
    );
    assert_eq!(times.len(), messages.len());
    assert_eq!((stats.processed, stats.duplicates), (120, 24));
    assert_eq!((stats.dead_lettered, stats.handler_failures), (0, 0));
    let inbox_rows = count(&pg.db, "SELECT COUNT(*) FROM _outbox_inbox").await;
    assert_eq!(inbox_rows, 120, "one inbox row per distinct event");
    let traced = count(
        &pg.db,
        "SELECT COUNT(*) FROM applied WHERE trace_id = '4bf92f3577b34da6a3ce929d0e0e4736'",
    )
    .await;
    assert_eq!(traced, 120, "the handler sees the event's trace id");
    pg.drop().await;
}

/// A handler that fails is retried with backoff; one that keeps failing has its message
/// dead-lettered (with the inbox record, so a redelivery is skipped), and the rest of
/// its key is applied after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_then_dead_lettered_and_its_key_goes_on() {
    let (pg, topic, publisher) = scene(1).await;
    // n = 1 fails once then succeeds; n = 2 always fails; n = 3 fails permanently.
    let messages: Vec<outbox::Message> = (0..5).map(|n| credit(&topic, "account-0", n)).collect();
    publish(&publisher, &messages).await;

    let name = unique_name("billing");
    let flaky_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = flaky_failed.clone();
    let consumer = Consumer::new(consumer_config(&name, &topic), pg.db.clone())
        .expect("valid consumer")
        .handle(move |txn, event: Received<AccountEvent>| {
            let failed = failed.clone();
            Box::pin(async move {
                apply_credit(txn, &event).await?;
                let AccountEvent::Credited { n, .. } = event.event() else {
                    return Ok(());
                };
                match n {
                    1 if !failed.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                        Err("the ledger is busy".into())
                    }
                    2 => Err(format!("credit {n} does not balance").into()),
                    3 => Err(HandlerError::permanent("account-0 is frozen")),
                    _ => Ok(()),
                }
            })
        })
        .spawn()
        .expect("consumer starts");
    done_with(&consumer, 5).await;
    // A redelivery of the dead-lettered event is skipped: the inbox has it.
    publish(&publisher, &messages[2..3]).await;
    eventually(
        "the redelivery is skipped",
        Duration::from_secs(10),
        || async { consumer.stats().duplicates == 1 },
    )
    .await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");

    assert_eq!((stats.processed, stats.dead_lettered), (3, 2), "{stats:?}");
    // n=1 once, n=2 three times (1 + retry_attempts), n=3 once.
    assert_eq!(stats.handler_failures, 5, "{stats:?}");
    let (order, _) = applied(&pg.db).await;
    assert_eq!(
        order["account-0"],
        vec![0, 1, 4],
        "failed attempts rolled back"
    );
    let dead = outbox::Inbox::new()
        .dead_letters(&pg.db, &name, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].event_id, Some(messages[2].id));
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].error, "credit 2 does not balance");
    assert_eq!(dead[0].event_type.as_deref(), Some("account.credited"));
    assert_eq!(dead[0].message_key.as_deref(), Some(&b"account-0"[..]));
    assert_eq!(
        dead[0].payload.as_deref(),
        Some(messages[2].payload.as_bytes())
    );
    let headers: serde_json::Value = serde_json::from_str(&dead[0].headers).expect("json");
    assert_eq!(headers["event_id"], json!(messages[2].id));
    assert_eq!(
        (
            dead[0].topic.as_str(),
            dead[0].kafka_partition,
            dead[0].kafka_offset
        ),
        (topic.as_str(), 0, 2)
    );
    assert_eq!(dead[1].event_id, Some(messages[3].id));
    assert_eq!(
        (dead[1].attempts, dead[1].error.as_str()),
        (1, "account-0 is frozen")
    );
    let inbox = outbox::Inbox::new();
    assert!(
        inbox
            .delete_dead_letter(&pg.db, &dead[1])
            .await
            .expect("delete")
    );
    assert!(
        !inbox
            .delete_dead_letter(&pg.db, &dead[1])
            .await
            .expect("delete")
    );
    assert_eq!(
        inbox
            .dead_letters(&pg.db, &name, 10)
            .await
            .expect("list")
            .len(),
        1
    );
    assert!(
        inbox
            .contains(&pg.db, &name, messages[3].id)
            .await
            .expect("contains"),
        "still recorded"
    );
    pg.drop().await;
}

/// A message that is not an event of the consumer's type is dead-lettered at once,
/// without calling the handler, unless unknown types are to be skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_read_is_dead_lettered_at_once() {
    let (pg, topic, publisher) = scene(1).await;
    let producer: FutureProducer = outbox_tests::kafka::client_config(&brokers())
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&topic)
                .key("account-0")
                .payload("not an event"),
            Duration::from_secs(5),
        )
        .await
        .expect("sent");
    let mut unknown = credit(&topic, "account-0", 1);
    unknown.event_type = "account.audited".to_owned();
    let mut misfit = credit(&topic, "account-0", 2);
    misfit.payload = r#"{"account": 7}"#.to_owned();
    // A version this consumer does not know yet, of a type it knows.
    let mut newer = credit(&topic, "account-0", 4);
    newer.event_version = "v9".to_owned();
    publish(
        &publisher,
        &[
            unknown.clone(),
            misfit.clone(),
            credit(&topic, "account-0", 3),
            newer.clone(),
        ],
    )
    .await;

    let name = unique_name("billing");
    let consumer = recording(consumer_config(&name, &topic), &pg.db);
    done_with(&consumer, 5).await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(
        (stats.processed, stats.dead_lettered, stats.handler_failures),
        (1, 4, 0)
    );
    let dead = outbox::Inbox::new()
        .dead_letters(&pg.db, &name, 10)
        .await
        .expect("dead letters");
    let errors: Vec<(i64, Option<Uuid>, i32, &str)> = dead
        .iter()
        .map(|d| (d.kafka_offset, d.event_id, d.attempts, d.error.as_str()))
        .collect();
    assert_eq!(
        errors[0],
        (
            0,
            None,
            0,
            "received message: header \"event_id\" is missing, or not UTF-8"
        )
    );
    assert_eq!(errors[1].1, Some(unknown.id));
    assert!(
        errors[1]
            .3
            .contains("has no event type \"account.audited\""),
        "{errors:?}"
    );
    assert_eq!(errors[3].1, Some(newer.id), "{errors:?}");
    assert_eq!(errors[2].1, Some(misfit.id));
    assert!(
        errors[2]
            .3
            .starts_with("could not decode the payload of event type \"account.credited\""),
        "{errors:?}"
    );

    // With unknown types skipped, the same topic read by another consumer skips one.
    let mut config = consumer_config(&unique_name("audit"), &topic);
    config.skip_unknown_events = true;
    let skipping = recording(config, &pg.db);
    done_with(&skipping, 5).await;
    let stats = skipping.stats();
    skipping.shutdown().await.expect("shutdown");
    // The unknown type is skipped; the unknown version of a known type is not.
    assert_eq!((stats.skipped, stats.dead_lettered), (1, 3), "{stats:?}");
    pg.drop().await;
}

/// A consumer that stopped resumes after what it applied: offsets are committed at
/// shutdown, so a restart reads only what came since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_resumes_after_what_it_applied() {
    let (pg, topic, publisher) = scene(2).await;
    let first: Vec<_> = (0..10)
        .map(|n| credit(&topic, &format!("account-{}", n % 3), n))
        .collect();
    publish(&publisher, &first).await;
    let name = unique_name("billing");
    let consumer = recording(consumer_config(&name, &topic), &pg.db);
    eventually(
        "the first events are applied",
        Duration::from_secs(30),
        || async { consumer.stats().processed == 10 },
    )
    .await;
    consumer.shutdown().await.expect("shutdown");

    let second: Vec<_> = (10..15)
        .map(|n| credit(&topic, &format!("account-{}", n % 3), n))
        .collect();
    publish(&publisher, &second).await;
    let consumer = recording(consumer_config(&name, &topic), &pg.db);
    eventually(
        "the new events are applied",
        Duration::from_secs(30),
        || async { consumer.stats().processed == 5 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(
        (stats.processed, stats.duplicates),
        (5, 0),
        "nothing read twice: {stats:?}"
    );
    let (_, times) = applied(&pg.db).await;
    assert_eq!(times.len(), 15);
    pg.drop().await;
}

/// Two consumers of one group share the partitions; the second joins while the first
/// is busy, and leaves again. Every event is applied exactly once, each key in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shares_partitions_across_rebalances_and_applies_each_event_once() {
    let (pg, topic, publisher) = scene(4).await;
    let (accounts, per_account) = (8, 50);
    let messages: Vec<outbox::Message> = (0..per_account)
        .flat_map(|n| (0..accounts).map(move |a| (a, n)))
        .map(|(a, n)| credit(&topic, &format!("account-{a}"), n))
        .collect();
    let name = unique_name("billing");
    let slow = |name: &str| {
        let mut config = consumer_config(name, &topic);
        config.max_buffered = 10;
        config
    };
    let first = recording(slow(&name), &pg.db);
    // Half the events now; the other half paced while the second consumer joins, so
    // that the first cannot have applied everything before the group rebalances (it
    // did on a loaded machine, and the second then had nothing to take).
    let (now, paced) = messages.split_at(messages.len() / 2);
    for chunk in now.chunks(100) {
        publish(&publisher, chunk).await;
    }
    eventually(
        "the first consumer is under way",
        Duration::from_secs(30),
        || async { first.stats().processed >= 50 },
    )
    .await;
    let second = recording(slow(&name), &pg.db);
    for round in paced.chunks(accounts) {
        publish(&publisher, round).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eventually(
        "the second consumer takes partitions",
        Duration::from_secs(30),
        || async { second.stats().processed > 0 },
    )
    .await;
    second.shutdown().await.expect("shutdown");
    eventually(
        "every event is applied",
        Duration::from_secs(60),
        || async { applied(&pg.db).await.1.len() == messages.len() },
    )
    .await;
    first.shutdown().await.expect("shutdown");

    let (order, times) = applied(&pg.db).await;
    let expected: Vec<i64> = (0..per_account).collect();
    for a in 0..accounts {
        assert_eq!(order[&format!("account-{a}")], expected, "account-{a}");
    }
    assert!(times.values().all(|&t| t == 1), "each event applied once");
    pg.drop().await;
}

/// Consume, change, produce: the handler stores a follow-up event on its transaction,
/// and the relay publishes it once, however often the cause was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_events_stored_by_the_handler_are_published_once() {
    let pg = PgSchema::migrated().await;
    let (accounts, ledger) = (unique_topic("accounts"), unique_topic("ledger"));
    create_topic(&brokers(), &accounts, 1).await;
    create_topic(&brokers(), &ledger, 1).await;
    let outbox = Outbox::new();
    let relay_config = RelayConfig {
        min_poll_interval: Duration::from_millis(5),
        interval: Duration::from_millis(200),
        ..RelayConfig::new("ledger")
    };
    let relay = Relay::new(relay_config, pg.db.clone(), publisher().await)
        .expect("relay")
        .with_outbox(outbox.clone())
        .spawn();
    let closed = AccountEvent::Closed {
        account: "account-9".to_owned(),
    };
    let cause = outbox
        .store(&pg.db, &closed, &accounts)
        .await
        .expect("store");

    let name = unique_name("ledger");
    let (handler_outbox, ledger_topic) = (outbox.clone(), ledger.clone());
    let consumer = Consumer::new(consumer_config(&name, &accounts), pg.db.clone())
        .expect("valid consumer")
        .handle(move |txn, event: Received<AccountEvent>| {
            let (outbox, topic) = (handler_outbox.clone(), ledger_topic.clone());
            Box::pin(async move {
                if let AccountEvent::Closed { account } = event.event() {
                    let follow_up = EventBuilder::new("ledger.account_settled", account)
                        .data(json!({ "cause": event.event_id() }));
                    let trace_id = event.trace_id().map(str::to_owned);
                    let store = outbox.store(txn, &follow_up, &topic);
                    match trace_id {
                        Some(trace_id) => store.trace_id(trace_id).await?,
                        None => store.await?,
                    };
                }
                Ok(())
            })
        })
        .spawn()
        .expect("consumer starts");
    eventually("the event is applied", Duration::from_secs(30), || async {
        consumer.stats().processed == 1
    })
    .await;
    // The relay's at-least-once: the cause comes again.
    let mut again = message(&accounts, "account-9", &closed);
    again.id = cause;
    publish(&publisher().await, &[again]).await;
    eventually(
        "the redelivery is skipped",
        Duration::from_secs(10),
        || async { consumer.stats().duplicates == 1 },
    )
    .await;
    let follow_ups = consume(&brokers(), &ledger, 2, Duration::from_secs(5)).await;
    consumer.shutdown().await.expect("shutdown");
    relay.shutdown().await.expect("shutdown");
    assert_eq!(follow_ups.len(), 1, "one follow-up: {follow_ups:?}");
    assert_eq!(
        follow_ups[0].headers["event_type"],
        "ledger.account_settled"
    );
    let payload: serde_json::Value = serde_json::from_str(&follow_ups[0].payload).expect("json");
    assert_eq!(payload["cause"], json!(cause));
    pg.drop().await;
}

/// The inbox record, the duplicate check and the dead letters on `db`: one event
/// applied, its redelivery skipped, one dead-lettered by its handler, one message that
/// is no event dead-lettered as it came.
async fn dead_letters_and_duplicates_on(db: &DatabaseConnection) {
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let producer: FutureProducer = outbox_tests::kafka::client_config(&brokers())
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&topic)
                .key("account-0")
                .payload(&[0xff_u8, 0x00, 0x7f][..]),
            Duration::from_secs(5),
        )
        .await
        .expect("sent");
    let publisher = publisher().await;
    let (applied, refused) = (
        credit(&topic, "account-0", 0),
        credit(&topic, "account-0", 1),
    );
    publish(
        &publisher,
        &[applied.clone(), refused.clone(), applied.clone()],
    )
    .await;

    let name = unique_name("billing");
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let consumer = Consumer::new(consumer_config(&name, &topic), db.clone())
        .expect("valid consumer")
        .handle(move |_txn, event: Received<AccountEvent>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                match event.event() {
                    AccountEvent::Credited { n: 1, .. } => Err(HandlerError::permanent("refused")),
                    _ => Ok(()),
                }
            })
        })
        .spawn()
        .expect("consumer starts");
    eventually(
        "every message is done with",
        Duration::from_secs(30),
        || async {
            let stats = consumer.stats();
            stats.processed + stats.duplicates + stats.dead_lettered == 4
        },
    )
    .await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(
        (stats.processed, stats.duplicates, stats.dead_lettered),
        (1, 1, 2),
        "{stats:?}"
    );
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the duplicate reaches no handler"
    );
    let inbox = outbox::Inbox::new();
    for id in [applied.id, refused.id] {
        assert!(inbox.contains(db, &name, id).await.expect("contains"));
    }
    let dead = inbox
        .dead_letters(db, &name, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(
        (
            dead[0].kafka_offset,
            dead[0].event_id,
            dead[0].payload.as_deref()
        ),
        (0, None, Some(&[0xff_u8, 0x00, 0x7f][..])),
        "the message kept byte for byte"
    );
    assert_eq!(
        (dead[1].event_id, dead[1].error.as_str()),
        (Some(refused.id), "refused")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_records_duplicates_and_dead_letters() {
    let database = outbox_tests::MySqlDatabase::migrated().await;
    dead_letters_and_duplicates_on(&database.db).await;
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_records_duplicates_and_dead_letters() {
    dead_letters_and_duplicates_on(&outbox_tests::migrated_sqlite().await).await;
}

/// While the database cannot be reached, failed attempts do not count: a message that
/// fails for longer than its retries would allow is applied once the database is
/// back, not dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_dead_letters_nothing() {
    use outbox_tests::proxy::{Mode, Proxy};
    let pg = PgSchema::migrated().await;
    let proxy = Proxy::start("127.0.0.1:5432".to_owned()).await;
    let url = outbox_tests::database_url().replace("127.0.0.1:5432", &proxy.address);
    assert_ne!(
        url,
        outbox_tests::database_url(),
        "the database goes through the proxy"
    );
    let mut options = sea_orm::ConnectOptions::new(url);
    options
        .set_schema_search_path(pg.schema.clone())
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .sqlx_logging(false);
    let db = sea_orm::Database::connect(options).await.expect("connect");
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let name = unique_name("billing");
    let consumer = Consumer::new(consumer_config(&name, &topic), db.clone())
        .expect("valid consumer")
        .handle(|_txn, _event: Received<AccountEvent>| Box::pin(async { Ok(()) }))
        .spawn()
        .expect("consumer starts");

    proxy.set(Mode::Blackhole);
    proxy.reset();
    let message = credit(&topic, "account-0", 0);
    publish(&publisher().await, std::slice::from_ref(&message)).await;
    // Three attempts would dead-letter it (retry_attempts = 2), were they counted.
    eventually(
        "attempts fail while the database is away",
        Duration::from_secs(30),
        || async { consumer.stats().handler_failures >= 5 },
    )
    .await;
    proxy.set(Mode::Pass);
    eventually(
        "the event is applied once the database is back",
        Duration::from_secs(30),
        || async { consumer.stats().processed == 1 },
    )
    .await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    assert!(
        outbox::Inbox::new()
            .contains(&pg.db, &name, message.id)
            .await
            .expect("contains")
    );
    pg.drop().await;
}

/// A handler that panics fails its attempt (the transaction rolls back, the message is
/// tried again); on PostgreSQL, one that swallows a database error fails too, instead
/// of committing an aborted transaction (which PostgreSQL turns into a rollback,
/// losing the inbox record while the offset moved on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_error_swallowing_handler_fails_its_attempt() {
    let pg = PgSchema::migrated().await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let (panics, swallows) = (
        credit(&topic, "account-0", 0),
        credit(&topic, "account-0", 1),
    );
    publish(&publisher().await, &[panics.clone(), swallows.clone()]).await;

    let name = unique_name("billing");
    let panicked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = panicked.clone();
    let consumer = Consumer::new(consumer_config(&name, &topic), pg.db.clone())
        .expect("valid consumer")
        .handle(move |txn, event: Received<AccountEvent>| {
            let once = once.clone();
            Box::pin(async move {
                match event.event() {
                    AccountEvent::Credited { n: 0, .. } => {
                        assert!(
                            once.swap(true, std::sync::atomic::Ordering::SeqCst),
                            "the first attempt panics"
                        );
                    }
                    _ => {
                        // An error the handler ignores: the transaction is aborted.
                        let _ = txn.execute_unprepared("SELECT * FROM no_such_table").await;
                    }
                }
                Ok(())
            })
        })
        .spawn()
        .expect("consumer starts");
    done_with(&consumer, 2).await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!((stats.processed, stats.dead_lettered), (1, 1), "{stats:?}");
    // One panic, then three attempts (1 + retry_attempts) of the swallowed error.
    assert_eq!(stats.handler_failures, 4, "{stats:?}");
    let dead = outbox::Inbox::new()
        .dead_letters(&pg.db, &name, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event_id, Some(swallows.id));
    assert!(
        dead[0]
            .error
            .starts_with("the transaction no longer holds the event's inbox record (Query Error: error returned from database: current transaction is aborted"),
        "{}",
        dead[0].error
    );
    pg.drop().await;
}
