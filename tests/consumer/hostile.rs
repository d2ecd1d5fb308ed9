//! Hostile messages and handlers: what a producer in another language, a careless
//! handler or a strict schema can do to a consumer. Each event is applied exactly once
//! or dead-lettered, and no partition stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outbox::{Consumer, DecodeEvent, Received};
use outbox_tests::kafka::{brokers, create_topic, unique_topic};
use outbox_tests::{MySqlDatabase, PgSchema};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};

use super::{
    AccountEvent, consumer_config, count, create_applied, credit, done_with, publish, publisher,
    recording, unique_name,
};

/// Sends one message as a producer of another language would: any key, payload and
/// headers.
async fn send_raw(topic: &str, key: &str, payload: &[u8], headers: &[(&str, &[u8])]) {
    let producer: FutureProducer = outbox_tests::kafka::client_config(&brokers())
        .create()
        .expect("producer");
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(*value),
        });
    }
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(owned),
            Duration::from_secs(5),
        )
        .await
        .expect("sent");
}

/// A NUL byte in a header (PostgreSQL stores none in text) is escaped in the dead
/// letter; before, writing the dead letter failed forever and its partition stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_a_header_is_dead_lettered_and_its_partition_goes_on() {
    let pg = PgSchema::migrated().await;
    create_applied(&pg.db).await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let publisher = publisher().await;
    publish(&publisher, &[credit(&topic, "account-0", 0)]).await;
    let id = uuid::Uuid::now_v7().to_string();
    send_raw(
        &topic,
        "account-0",
        br#"{"step": 1}"#,
        &[
            ("event_id", id.as_bytes()),
            ("event_type", b"acceptance.step\0"),
            ("event_version", b"v1"),
        ],
    )
    .await;
    publish(
        &publisher,
        &[
            credit(&topic, "account-0", 2),
            credit(&topic, "account-0", 3),
        ],
    )
    .await;

    let name = unique_name("billing");
    let consumer = recording(consumer_config(&name, &topic), &pg.db);
    done_with(&consumer, 4).await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!((stats.processed, stats.dead_lettered), (3, 1), "{stats:?}");
    let dead = outbox::Inbox::new()
        .dead_letters(&pg.db, &name, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event_type.as_deref(), Some("acceptance.step\\0"));
    assert!(
        dead[0].headers.contains("acceptance.step\\u0000"),
        "{}",
        dead[0].headers
    );
    assert_eq!(count(&pg.db, "SELECT COUNT(*) FROM applied").await, 3);
    pg.drop().await;
}

/// A dead letter the database keeps refusing whole (here a trigger; in life a value
/// over `max_allowed_packet`) is written minimal after a few tries: where the message
/// is, its key and the errors. Its partition goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_refused_whole_is_kept_minimal() {
    let pg = PgSchema::migrated().await;
    create_applied(&pg.db).await;
    pg.db
        .execute_unprepared(
            "CREATE FUNCTION refuse_large() RETURNS trigger AS $$ BEGIN \
               IF length(NEW.payload) > 100 THEN RAISE EXCEPTION 'this test refuses payloads over 100 bytes'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_large BEFORE INSERT ON _outbox_inbox_dead \
               FOR EACH ROW EXECUTE FUNCTION refuse_large();",
        )
        .await
        .expect("trigger");
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    send_raw(&topic, "account-0", &[b'x'; 1000], &[]).await;
    publish(&publisher().await, &[credit(&topic, "account-0", 1)]).await;

    let name = unique_name("billing");
    let consumer = recording(consumer_config(&name, &topic), &pg.db);
    done_with(&consumer, 2).await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!((stats.processed, stats.dead_lettered), (1, 1), "{stats:?}");
    let dead = outbox::Inbox::new()
        .dead_letters(&pg.db, &name, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(
        (
            letter.kafka_partition,
            letter.kafka_offset,
            letter.payload.as_deref()
        ),
        (0, 0, None)
    );
    assert_eq!(letter.message_key.as_deref(), Some(&b"account-0"[..]));
    assert!(
        letter
            .error
            .starts_with("received message: header \"event_id\" is missing")
            && letter
                .error
                .contains("this test refuses payloads over 100 bytes"),
        "{}",
        letter.error
    );
    pg.drop().await;
}

/// An event type whose decoding panics on a payload that says so: a user's
/// `Deserialize` or `From` impl with a bug.
#[derive(Debug)]
struct Fragile(i64);

impl DecodeEvent for Fragile {
    fn accepts(_event_type: &str, _event_version: &str) -> bool {
        true
    }

    fn decode(_event_type: &str, _event_version: &str, payload: &[u8]) -> outbox::Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
        let n = value["n"].as_i64().expect("a credit");
        if n == 1 {
            panic!("this decoding panics on n = 1");
        }
        Ok(Fragile(n))
    }
}

/// A panic while decoding (every time) or in the handler's closure before its future
/// (once) is a failed attempt of that message; before, it ended the partition's
/// worker and every later message of the partition was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_outside_the_handler_future_fails_only_its_attempt() {
    let pg = PgSchema::migrated().await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let messages: Vec<_> = (0..4).map(|n| credit(&topic, "account-0", n)).collect();
    publish(&publisher().await, &messages).await;

    let name = unique_name("billing");
    let panicked = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (once, seen) = (Arc::clone(&panicked), Arc::clone(&handled));
    let consumer = Consumer::new(consumer_config(&name, &topic), pg.db.clone())
        .expect("valid consumer")
        .handle(move |_txn, event: Received<Fragile>| {
            // The closure's body, before its future: outside any future to catch.
            if event.event().0 == 2 && !once.swap(true, Ordering::SeqCst) {
                panic!("the closure panics once on n = 2");
            }
            seen.lock().expect("lock").push(event.event().0);
            Box::pin(async { Ok(()) })
        })
        .spawn()
        .expect("consumer starts");
    done_with(&consumer, 4).await;
    let stats = consumer.stats();
    assert_eq!(consumer.failure(), None);
    consumer.shutdown().await.expect("shutdown");
    assert_eq!((stats.processed, stats.dead_lettered), (3, 1), "{stats:?}");
    // Three attempts of n = 1 (1 + retry_attempts), one of n = 2.
    assert_eq!(stats.handler_failures, 4, "{stats:?}");
    assert_eq!(*handled.lock().expect("lock"), vec![0, 2, 3]);
    let dead = outbox::Inbox::new()
        .dead_letters(&pg.db, &name, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead[0].event_id, Some(messages[1].id));
    assert!(
        dead[0]
            .error
            .starts_with("decoding the message panicked: this decoding panics on n = 1"),
        "{}",
        dead[0].error
    );
    pg.drop().await;
}

/// A constraint checked only at COMMIT (a deferred foreign key) refuses the message:
/// a failed attempt, then a dead letter. Before, a failure at COMMIT counted as the
/// consumer's own, used no attempt, and was tried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_commit_counts_against_the_message() {
    let pg = PgSchema::migrated().await;
    pg.db
        .execute_unprepared(
            "CREATE TABLE accounts (name TEXT PRIMARY KEY); \
             INSERT INTO accounts VALUES ('account-0'); \
             CREATE TABLE credits (account TEXT NOT NULL REFERENCES accounts (name) \
               DEFERRABLE INITIALLY DEFERRED, n BIGINT NOT NULL)",
        )
        .await
        .expect("tables");
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    publish(
        &publisher().await,
        &[
            credit(&topic, "account-0", 0),
            credit(&topic, "no-such-account", 1),
            credit(&topic, "account-0", 2),
        ],
    )
    .await;

    let name = unique_name("billing");
    let consumer = Consumer::new(consumer_config(&name, &topic), pg.db.clone())
        .expect("valid consumer")
        .handle(|txn, event: Received<AccountEvent>| {
            Box::pin(async move {
                let AccountEvent::Credited { account, n } = event.event() else {
                    return Ok(());
                };
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO credits (account, n) VALUES ($1, $2)",
                    [account.clone().into(), (*n).into()],
                ))
                .await?;
                Ok(())
            })
        })
        .spawn()
        .expect("consumer starts");
    done_with(&consumer, 3).await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(
        (stats.processed, stats.dead_lettered, stats.handler_failures),
        (2, 1, 3),
        "{stats:?}"
    );
    let dead = outbox::Inbox::new()
        .dead_letters(&pg.db, &name, 10)
        .await
        .expect("dead letters");
    assert!(dead[0].error.contains("foreign key"), "{}", dead[0].error);
    assert_eq!(count(&pg.db, "SELECT COUNT(*) FROM credits").await, 2);
    pg.drop().await;
}

/// A handler that runs longer than `handler_timeout` fails its attempt (its
/// transaction rolls back) and is tried again, instead of holding its partition in
/// silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_times_out_and_is_tried_again() {
    let pg = PgSchema::migrated().await;
    create_applied(&pg.db).await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    publish(
        &publisher().await,
        &[
            credit(&topic, "account-0", 0),
            credit(&topic, "account-0", 1),
        ],
    )
    .await;
    let name = unique_name("billing");
    let mut config = consumer_config(&name, &topic);
    config.handler_timeout = Duration::from_millis(300);
    let hung = Arc::new(AtomicBool::new(false));
    let consumer = Consumer::new(config, pg.db.clone())
        .expect("valid consumer")
        .handle(move |txn, event: Received<AccountEvent>| {
            let hung = Arc::clone(&hung);
            Box::pin(async move {
                super::apply_credit(txn, &event).await?;
                if !hung.swap(true, Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok(())
            })
        })
        .spawn()
        .expect("consumer starts");
    done_with(&consumer, 2).await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(
        (stats.processed, stats.handler_failures),
        (2, 1),
        "{stats:?}"
    );
    assert_eq!(count(&pg.db, "SELECT COUNT(*) FROM applied").await, 2);
    pg.drop().await;
}

/// A dead letter at a topic, partition and offset that has one already, of another
/// message (the topic was deleted and created again), is kept beside it; before, the
/// conflict dropped it while the inbox said done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_at_a_reused_offset_is_kept() {
    let pg = PgSchema::migrated().await;
    create_applied(&pg.db).await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let name = unique_name("billing");
    // The letter of the topic's earlier life, at partition 0, offset 0.
    pg.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO _outbox_inbox_dead (consumer, topic, kafka_partition, kafka_offset, \
               payload, headers, error, attempts, dead_lettered_at) \
             VALUES ($1, $2, 0, 0, 'before', '{}', 'an earlier life', 0, now())",
            [name.clone().into(), topic.clone().into()],
        ))
        .await
        .expect("earlier letter");
    send_raw(&topic, "account-0", b"not an event", &[]).await;
    publish(&publisher().await, &[credit(&topic, "account-0", 1)]).await;

    let consumer = recording(consumer_config(&name, &topic), &pg.db);
    done_with(&consumer, 2).await;
    consumer.shutdown().await.expect("shutdown");
    let dead = outbox::Inbox::new()
        .dead_letters(&pg.db, &name, 10)
        .await
        .expect("dead letters");
    let payloads: Vec<_> = dead.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(
        payloads,
        vec![Some(b"before".to_vec()), Some(b"not an event".to_vec())]
    );
    pg.drop().await;
}

/// MariaDB keeps a dead letter's payload whole past 64 KiB (a `BLOB`'s size), where
/// `INSERT IGNORE` used to cut it with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_keeps_a_large_dead_letter_whole() {
    let database = MySqlDatabase::migrated().await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let payload = vec![b'x'; 200 * 1024];
    send_raw(&topic, "account-0", &payload, &[]).await;
    let name = unique_name("billing");
    let consumer = Consumer::new(consumer_config(&name, &topic), database.db.clone())
        .expect("valid consumer")
        .handle(|_txn, _event: Received<AccountEvent>| Box::pin(async { Ok(()) }))
        .spawn()
        .expect("consumer starts");
    done_with(&consumer, 1).await;
    consumer.shutdown().await.expect("shutdown");
    let dead = outbox::Inbox::new()
        .dead_letters(&database.db, &name, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead[0].payload.as_ref().map(Vec::len), Some(payload.len()));
    database.drop().await;
}

/// A handler on MariaDB that swallows a deadlock: InnoDB rolled its transaction back
/// (the inbox record with it) and its later statements ran outside any transaction.
/// The attempt fails and the event is applied by the next one, with its inbox record;
/// before, the COMMIT "succeeded" on nothing, the record was lost and the offset moved
/// on. A DDL statement, which commits the transaction early, fails the attempt too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_handler_that_swallows_a_deadlock_fails_its_attempt() {
    let database = MySqlDatabase::migrated().await;
    let db = database.db.clone();
    db.execute_unprepared(
        "CREATE TABLE locks (id INT PRIMARY KEY, v INT NOT NULL); \
         INSERT INTO locks VALUES (1, 0), (2, 0); \
         CREATE TABLE heavy (id INT AUTO_INCREMENT PRIMARY KEY, v INT); \
         CREATE TABLE applied (event_id BINARY(16) NOT NULL, n BIGINT NOT NULL)",
    )
    .await
    .expect("tables");
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let messages = [
        credit(&topic, "account-0", 0),
        credit(&topic, "account-0", 1),
    ];
    publish(&publisher().await, &messages).await;

    let name = unique_name("billing");
    let (deadlocked, committed_early) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let other = db.clone();
    let consumer = Consumer::new(consumer_config(&name, &topic), db.clone())
        .expect("valid consumer")
        .handle(move |txn, event: Received<AccountEvent>| {
            let (deadlocked, committed_early, other) = (
                Arc::clone(&deadlocked),
                Arc::clone(&committed_early),
                other.clone(),
            );
            Box::pin(async move {
                let AccountEvent::Credited { n, .. } = *event.event() else {
                    return Ok(());
                };
                if n == 0 && !deadlocked.swap(true, Ordering::SeqCst) {
                    deadlock_swallowed(txn, &other).await;
                }
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::MySql,
                    "INSERT INTO applied (event_id, n) VALUES (?, ?)",
                    [event.event_id().into(), n.into()],
                ))
                .await?;
                if n == 1 && !committed_early.swap(true, Ordering::SeqCst) {
                    // Commits the transaction, inbox record and all, before its end.
                    txn.execute_unprepared("CREATE TABLE IF NOT EXISTS scratch (a INT)")
                        .await?;
                }
                Ok(())
            })
        })
        .spawn()
        .expect("consumer starts");
    super::done_with_any(&consumer, 2).await;
    let stats = consumer.stats();
    consumer.shutdown().await.expect("shutdown");
    // The deadlocked attempt of n = 0 and the early-committed one of n = 1 fail; n = 0
    // is then applied, n = 1 found in the inbox (its DDL committed the record).
    assert_eq!(
        (stats.processed, stats.duplicates, stats.handler_failures),
        (1, 1, 2),
        "{stats:?}"
    );
    let inbox = outbox::Inbox::new();
    for message in &messages {
        assert!(
            inbox
                .contains(&db, &name, message.id)
                .await
                .expect("contains")
        );
    }
    database.drop().await;
}

/// Makes `txn` the victim of a deadlock with a heavier transaction on `other`, and
/// swallows the error as a careless handler would.
async fn deadlock_swallowed(txn: &sea_orm::DatabaseTransaction, other: &DatabaseConnection) {
    txn.execute_unprepared("UPDATE locks SET v = v + 1 WHERE id = 1")
        .await
        .expect("lock row 1");
    let (locked, mut locked_receiver) = tokio::sync::mpsc::channel(1);
    let other = other.clone();
    let heavier = tokio::spawn(async move {
        let theirs = other.begin().await.expect("begin");
        // More rows changed than the handler's transaction: InnoDB picks the lighter
        // one as the deadlock's victim.
        for _ in 0..20 {
            theirs
                .execute_unprepared("INSERT INTO heavy (v) VALUES (1)")
                .await
                .expect("heavy");
        }
        theirs
            .execute_unprepared("UPDATE locks SET v = v + 1 WHERE id = 2")
            .await
            .expect("lock row 2");
        locked.send(()).await.expect("signal");
        theirs
            .execute_unprepared("UPDATE locks SET v = v + 1 WHERE id = 1")
            .await
            .expect("waits for row 1, then gets it");
        theirs.commit().await.expect("commit");
    });
    locked_receiver.recv().await.expect("row 2 locked");
    tokio::time::sleep(Duration::from_millis(300)).await; // it now waits for row 1
    let deadlock = txn
        .execute_unprepared("UPDATE locks SET v = v + 1 WHERE id = 2")
        .await;
    let error = deadlock.expect_err("a deadlock");
    assert!(error.to_string().contains("Deadlock"), "{error}");
    heavier.await.expect("the heavier transaction commits");
}

/// A partition on one message longer than `stuck_after` (a handler that keeps
/// failing) fails the consumer's health probe, naming the partition, the offset and
/// the error; it passes again once the message is done with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stuck_on_one_message_fails_the_health_probe() {
    let pg = PgSchema::migrated().await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    publish(&publisher().await, &[credit(&topic, "account-0", 0)]).await;
    let name = unique_name("billing");
    let mut config = consumer_config(&name, &topic);
    config.retry_attempts = 1_000;
    config.stuck_after = Duration::from_millis(500);
    let mended = Arc::new(AtomicBool::new(false));
    let handler_mended = Arc::clone(&mended);
    let consumer = Consumer::new(config, pg.db.clone())
        .expect("valid consumer")
        .handle(move |_txn, _event: Received<AccountEvent>| {
            let mended = handler_mended.load(Ordering::SeqCst);
            Box::pin(async move {
                if mended {
                    Ok(())
                } else {
                    Err("the ledger service is down".into())
                }
            })
        })
        .spawn()
        .expect("consumer starts");
    let probe = consumer.probe();
    outbox_tests::eventually("the probe fails", Duration::from_secs(30), || async {
        probe.healthcheck().is_err()
    })
    .await;
    let reason = probe.healthcheck().expect_err("stuck").to_string();
    assert!(
        reason.contains(&format!("{topic}/0 has been on offset 0 for"))
            && reason.contains("the ledger service is down"),
        "{reason}"
    );
    assert_eq!(probe.retrying_partitions(), 1);
    assert_eq!(probe.assigned_partitions(), 1);
    mended.store(true, Ordering::SeqCst);
    done_with(&consumer, 1).await;
    probe.healthcheck().expect("healthy again");
    assert_eq!(probe.retrying_partitions(), 0);
    consumer.shutdown().await.expect("shutdown");
    assert!(
        probe.healthcheck().is_err(),
        "a stopped consumer is not ready"
    );
    pg.drop().await;
}

/// A `metrics` recorder whose counter of one consumer's outcomes panics the first
/// time it is incremented: a bug outside any message's attempt.
struct PanicOnce {
    consumer: String,
    armed: Arc<AtomicBool>,
}

struct Panicking(Arc<AtomicBool>);

impl metrics::CounterFn for Panicking {
    fn increment(&self, _value: u64) {
        assert!(
            !self.0.swap(false, Ordering::SeqCst),
            "the metrics recorder panics"
        );
    }

    fn absolute(&self, _value: u64) {}
}

impl metrics::Recorder for PanicOnce {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let ours = key.name() == outbox::consumer_metric_names::MESSAGES
            && key
                .labels()
                .any(|label| label.key() == "consumer" && label.value() == self.consumer);
        if ours {
            metrics::Counter::from_arc(Arc::new(Panicking(Arc::clone(&self.armed))))
        } else {
            metrics::Counter::noop()
        }
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// A panic outside any message's attempt (here the process's metrics recorder, after
/// the first message committed) stops the consumer loudly: `failure()` says why and
/// `shutdown()` fails. Its message's offset was not stored, so the next consumer of
/// the name gets it again and finds it in the inbox: nothing is skipped, nothing
/// applied twice. Before, the worker's task died in silence and every later message
/// of its partition was dropped with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bug_outside_any_attempt_stops_the_consumer_loudly_and_skips_nothing() {
    let pg = PgSchema::migrated().await;
    create_applied(&pg.db).await;
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let messages: Vec<_> = (0..3).map(|n| credit(&topic, "account-0", n)).collect();
    publish(&publisher().await, &messages).await;
    let name = unique_name("billing");
    metrics::set_global_recorder(PanicOnce {
        consumer: name.clone(),
        armed: Arc::new(AtomicBool::new(true)),
    })
    .expect("this test's process has no recorder yet (nextest runs each test alone)");

    let failing = recording(consumer_config(&name, &topic), &pg.db);
    outbox_tests::eventually("the consumer fails", Duration::from_secs(30), || async {
        failing.failure().is_some()
    })
    .await;
    let failure = failing.failure().expect("failed");
    assert!(
        failure.contains(&format!("the worker of {topic}/0 panicked"))
            && failure.contains("the metrics recorder panics"),
        "{failure}"
    );
    assert!(failing.probe().healthcheck().is_err());
    let stopped = failing.shutdown().await;
    assert!(
        matches!(stopped, Err(outbox::Error::ConsumerFailed(_))),
        "{stopped:?}"
    );

    let next = recording(consumer_config(&name, &topic), &pg.db);
    super::done_with_any(&next, 3).await;
    let stats = next.stats();
    next.shutdown().await.expect("shutdown");
    assert_eq!((stats.processed, stats.duplicates), (2, 1), "{stats:?}");
    assert_eq!(count(&pg.db, "SELECT COUNT(*) FROM applied").await, 3);
    assert_eq!(
        count(&pg.db, "SELECT COUNT(DISTINCT event_id) FROM applied").await,
        3
    );
    pg.drop().await;
}
