//! The relay against the real Kafka-protocol broker (tansu, started by
//! `scripts/test.sh`) and librdkafka's MockCluster for fault injection.

use std::collections::HashMap;
use std::time::Duration;

use outbox::{EventBuilder, KafkaConfig, KafkaPublisher, Outbox, OutboxEvent, Relay, RelayConfig};
use outbox_tests::crash::Doomed;
use outbox_tests::kafka::{
    PrivateBroker, Received, brokers, consume, create_topic, unique_topic, warmed_up,
};
use outbox_tests::proxy::Mode;
use outbox_tests::{PgSchema, eventually, retry_waits};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sea_orm::{DatabaseConnection, EntityTrait, TransactionTrait};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn config(service: &str) -> RelayConfig {
    RelayConfig {
        interval: Duration::from_millis(200),
        min_poll_interval: Duration::from_millis(5),
        retry_backoff: outbox::Backoff::new(Duration::from_millis(300), Duration::from_secs(3)),
        lease_ttl: Duration::from_secs(3),
        health_timeout: Duration::from_secs(4),
        shutdown_timeout: Duration::from_secs(10),
        batch_size: 100,
        ..RelayConfig::new(service)
    }
}

fn publisher(brokers: &str) -> KafkaPublisher {
    KafkaPublisher::from_config(KafkaConfig::new(brokers).message_timeout(Duration::from_secs(5)))
        .expect("producer")
}

fn counter(key: &str, n: usize) -> EventBuilder {
    EventBuilder::new("counter.incremented", key).data(json!({ "n": n }))
}

/// Each of `keys` keys (`key-0`...) arrived with its `n` 0, 1, ... in order. On a
/// mismatch, the message shows the key's rows in the outbox and what the broker gave of
/// the partitions the key's messages are in (a rare failure here needs that evidence).
async fn assert_every_key_complete(
    db: &DatabaseConnection,
    received: &[Received],
    keys: usize,
    per_key: u64,
) {
    let order = per_key_order(received);
    let expected: Vec<u64> = (0..per_key).collect();
    for k in 0..keys {
        let key = format!("key-{k}");
        if order.get(&key) == Some(&expected) {
            continue;
        }
        let rows = outbox::entity::outbox::Entity::find()
            .all(db)
            .await
            .expect("rows");
        let rows: Vec<String> = rows
            .iter()
            .filter(|row| row.aggregate_id == key)
            .map(|row| {
                format!(
                    "seq {} shard {} published {} at {:?} attempts {} dead {:?} error {:?} data {}",
                    row.seq,
                    row.shard,
                    row.published,
                    row.published_at,
                    row.attempts,
                    row.dead_lettered_at,
                    row.error_message,
                    row.event_data
                )
            })
            .collect();
        let partitions: std::collections::HashSet<i32> = received
            .iter()
            .filter(|m| m.key == key)
            .map(|m| m.partition)
            .collect();
        let mut log: Vec<_> = received
            .iter()
            .filter(|m| partitions.is_empty() || partitions.contains(&m.partition))
            .map(|m| (m.partition, m.offset, m.key.as_str(), m.payload.as_str()))
            .collect();
        log.sort();
        let log: Vec<String> = log
            .iter()
            .map(|(partition, offset, key, payload)| {
                format!("p{partition}@{offset} {key} {payload}")
            })
            .collect();
        panic!(
            "{key}: received {:?}, expected {expected:?}\nits rows:\n{}\nits partitions as read ({} messages in all):\n{}",
            order.get(&key),
            rows.join("\n"),
            received.len(),
            log.join("\n")
        );
    }
}

/// For each key, the `n` of its events in the order first received.
fn per_key_order(received: &[Received]) -> HashMap<String, Vec<u64>> {
    outbox_tests::per_key_order(
        received
            .iter()
            .map(|m| (m.event_id().to_owned(), m.key.as_str(), m.payload.as_str())),
    )
}

#[derive(Serialize, OutboxEvent)]
#[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
struct UserRegistered {
    user_id: u64,
    email: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_arrive_with_key_payload_and_every_header() {
    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let topic = unique_topic("users");
    create_topic(&brokers, &topic, 3).await;
    let outbox = Outbox::new();
    let relay = Relay::new(config("e2e"), pg.db.clone(), publisher(&brokers))
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();

    let txn = pg.db.begin().await.expect("begin");
    let id = outbox
        .store(
            &txn,
            &UserRegistered {
                user_id: 7,
                email: "ada@example.com".into(),
            },
            &topic,
        )
        .partition_key("tenant-3")
        .user_id("admin-1")
        .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
        .header("tenant", "acme")
        .await
        .expect("store");
    outbox.commit(txn).await.expect("commit");
    let txn = pg.db.begin().await.expect("begin");
    outbox
        .store(
            &txn,
            &UserRegistered {
                user_id: 8,
                email: "mallory@example.com".into(),
            },
            &topic,
        )
        .await
        .expect("store");
    txn.rollback().await.expect("rollback");
    let order = EventBuilder::new("order.created", "order-17").data(json!({ "amount": 4200 }));
    outbox
        .store(&pg.db, &order, &topic)
        .await
        .expect("store builder event");

    let received = consume(&brokers, &topic, 3, Duration::from_secs(8)).await;
    relay.shutdown().await.expect("shutdown");
    assert_eq!(
        received.len(),
        2,
        "the rolled-back event never arrives: {received:?}"
    );
    let user = received
        .iter()
        .find(|m| m.key == "tenant-3")
        .expect("the user event");
    let row = outbox::entity::outbox::Entity::find_by_id(1)
        .one(&pg.db)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&user.payload).expect("json"),
        json!({ "user_id": 7, "email": "ada@example.com" })
    );
    let expected: HashMap<String, String> = [
        ("event_id", id.to_string()),
        ("event_type", "user.registered".into()),
        ("event_version", "v2".into()),
        ("aggregate_id", "7".into()),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736".into()),
        (
            "traceparent",
            user.headers.get("traceparent").cloned().unwrap_or_default(),
        ),
        ("user_id", "admin-1".into()),
        (
            "created_at",
            row.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
        ("tenant", "acme".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(user.headers, expected);
    let traceparent = &user.headers["traceparent"];
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    let order = received
        .iter()
        .find(|m| m.key == "order-17")
        .expect("the builder event");
    assert_eq!(order.headers["event_type"], "order.created");
    assert!(!order.headers.contains_key("traceparent"));
    pg.drop().await;
}

/// 2,000 events over 20 keys, stored by concurrent writers, published by three relays
/// of one service: every key arrives complete and in store order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topic_creates_a_topic_once() {
    let kafka = KafkaConfig::new(&brokers());
    let topic = unique_topic("admin");
    assert!(kafka.create_topic(&topic, 2, 1).await.expect("create"));
    assert!(
        !kafka
            .create_topic(&topic, 2, 1)
            .await
            .expect("create again"),
        "a topic that exists is left as it is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_keep_every_keys_order() {
    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let topic = unique_topic("order");
    create_topic(&brokers, &topic, 4).await;
    let outbox = Outbox::new();
    let mut relays = Vec::new();
    for _ in 0..3 {
        let publisher = warmed_up(publisher(&brokers), &brokers).await;
        relays.push(
            Relay::new(config("order"), pg.db.clone(), publisher)
                .expect("valid relay config")
                .spawn(),
        );
    }

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (db, outbox, topic) = (pg.db.clone(), outbox.clone(), topic.clone());
            tokio::spawn(async move {
                write_keys(&db, &outbox, &topic, (w * 5..w * 5 + 5).collect(), 100).await
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let received = consume(&brokers, &topic, 2000, Duration::from_secs(90)).await;
    for relay in relays {
        relay.shutdown().await.expect("shutdown");
    }
    let order = per_key_order(&received);
    assert_eq!(order.len(), 20);
    let expected: Vec<u64> = (0..100).collect();
    for (key, ns) in &order {
        assert_eq!(ns, &expected, "key {key}");
    }
    pg.drop().await;
}

/// Stores `per_key` events for each key, one transaction each, keys interleaved.
async fn write_keys(
    db: &DatabaseConnection,
    outbox: &Outbox,
    topic: &str,
    keys: Vec<usize>,
    per_key: usize,
) {
    for n in 0..per_key {
        for k in &keys {
            let txn = db.begin().await.expect("begin");
            outbox
                .store(&txn, &counter(&format!("key-{k}"), n), topic)
                .await
                .expect("store");
            txn.commit().await.expect("commit");
        }
    }
}

/// MockCluster refuses the first produce requests: the event's attempts grow, each
/// wait longer than the last, and it is published after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_produce_requests_are_retried_with_growing_delays() {
    let pg = PgSchema::migrated().await;
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("mocked", 1, 1).expect("topic");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
    let outbox = Outbox::new();
    let id = outbox
        .store(&pg.db, &counter("k", 0), "mocked")
        .await
        .expect("store");
    let relay =
        Relay::new(config("mock"), pg.db.clone(), publisher(&brokers)).expect("valid relay config");

    let waits = retry_waits(&relay, &pg.db, id).await;
    assert_eq!(
        waits,
        [(1, 300), (2, 600)],
        "two refusals, the second wait twice the first"
    );
    let received = consume(&brokers, "mocked", 1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].event_id(), id.to_string());
    pg.drop().await;
}

/// An event larger than the producer may send is dead-lettered after its attempts
/// (and copied to the dead-letter topic) while other keys flow; later events of its key
/// wait for it; after the limit is raised, replay publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_event_is_dead_lettered_while_other_keys_flow_and_replay_publishes_it() {
    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let topic = unique_topic("sized");
    let dead_letter_topic = unique_topic("sized-dlq");
    create_topic(&brokers, &topic, 2).await;
    create_topic(&brokers, &dead_letter_topic, 1).await;
    let outbox = Outbox::new();
    let big =
        EventBuilder::new("blob.stored", "big").data(json!({ "n": 0, "blob": "x".repeat(50_000) }));
    let big_id = outbox.store(&pg.db, &big, &topic).await.expect("store big");
    for n in 1..3 {
        outbox
            .store(&pg.db, &counter("big", n), &topic)
            .await
            .expect("store after big");
    }
    for n in 0..20 {
        outbox
            .store(&pg.db, &counter(&format!("small-{}", n % 4), n / 4), &topic)
            .await
            .expect("store small");
    }

    let limited = KafkaConfig::new(&brokers).set("message.max.bytes", "20000");
    let relay_config = RelayConfig {
        retry_attempts: 2,
        dead_letter_topic: Some(dead_letter_topic.clone()),
        ..config("sized")
    };
    let relay = Relay::new(
        relay_config.clone(),
        pg.db.clone(),
        KafkaPublisher::from_config(limited).expect("producer"),
    )
    .expect("valid relay config")
    .with_outbox(outbox.clone())
    .spawn();
    let received = consume(&brokers, &topic, 22, Duration::from_secs(30)).await;
    let dead = outbox.dead_letters(&pg.db, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts), (big_id, 3));
    assert!(
        dead[0]
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("too large"),
        "{:?}",
        dead[0].error_message
    );
    let order = per_key_order(&received);
    for k in 0..4 {
        assert_eq!(order[&format!("small-{k}")], [0, 1, 2, 3, 4]);
    }
    assert_eq!(
        order["big"],
        [1, 2],
        "the key went on after the dead letter, in order"
    );
    let rows = outbox::entity::outbox::Entity::find()
        .all(&pg.db)
        .await
        .expect("rows");
    let dead_at = dead[0].dead_lettered_at.expect("dead-lettered at");
    assert!(
        rows.iter()
            .filter(|r| r.aggregate_id == "big" && r.id != big_id)
            .all(|r| r.published_at >= Some(dead_at)),
        "later events of the key waited for the dead letter"
    );
    let copies = consume(&brokers, &dead_letter_topic, 1, Duration::from_secs(10)).await;
    assert_eq!(
        copies.len(),
        0,
        "too large for the dead-letter topic as well: it stays in the table only"
    );
    relay.shutdown().await.expect("shutdown");

    // The operator raises the limit and replays.
    let relay = Relay::new(relay_config, pg.db.clone(), publisher(&brokers))
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    outbox.replay(&pg.db, big_id).await.expect("replay");
    let received = consume(&brokers, &topic, 23, Duration::from_secs(30)).await;
    assert!(
        received.iter().any(|m| m.event_id() == big_id.to_string()),
        "the replayed event arrives"
    );
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}

/// A relay aborted mid-stream loses nothing: another relay of the service takes over
/// its shards once the lease expires, and every key stays in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_relay_loses_nothing() {
    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let topic = unique_topic("crash");
    create_topic(&brokers, &topic, 2).await;
    let outbox = Outbox::new();
    write_keys(&pg.db, &outbox, &topic, (0..8).collect(), 50).await;
    let small_batches = RelayConfig {
        batch_size: 5,
        ..config("crash")
    };
    // On a runtime and a pool of its own, which die with it (see `support/crash.rs`).
    let doomed = Doomed::new();
    let doomed_db = doomed.connect(pg.url()).await;
    let doomed_relay = {
        let (config, brokers) = (small_batches.clone(), brokers.clone());
        doomed
            .run(async move {
                Relay::new(config, doomed_db, publisher(&brokers))
                    .expect("valid relay config")
                    .spawn()
            })
            .await
    };
    eventually(
        "the first relay is publishing",
        Duration::from_secs(20),
        || async { doomed_relay.stats().published > 20 },
    )
    .await;
    doomed.crash();
    doomed_relay.abort();
    let survivor = Relay::new(small_batches, pg.db.clone(), publisher(&brokers))
        .expect("valid relay config")
        .spawn();
    let received = consume(&brokers, &topic, 400, Duration::from_secs(60)).await;
    survivor.shutdown().await.expect("shutdown");
    let order = per_key_order(&received);
    let expected: Vec<u64> = (0..50).collect();
    assert_eq!(order.len(), 8);
    for (key, ns) in &order {
        assert_eq!(ns, &expected, "key {key}");
    }
    pg.drop().await;
}

/// With the broker frozen, events stay pending and the relay reports itself
/// unhealthy; when it returns, everything is published and health recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_keeps_events_pending_and_recovers() {
    let pg = PgSchema::migrated().await;
    let broker = PrivateBroker::start().await;
    let topic = unique_topic("outage");
    create_topic(&broker.address, &topic, 1).await;
    let outbox = Outbox::new();
    let publisher = KafkaPublisher::from_config(
        KafkaConfig::new(&broker.address).message_timeout(Duration::from_secs(2)),
    )
    .expect("producer");
    let relay = Relay::new(config("outage"), pg.db.clone(), publisher)
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn();
    write_keys(&pg.db, &outbox, &topic, (0..5).collect(), 10).await;
    eventually(
        "published and healthy before the outage",
        Duration::from_secs(20),
        || async { relay.stats().published >= 50 && relay.healthcheck().is_ok() },
    )
    .await;

    broker.freeze();
    write_keys(&pg.db, &outbox, &topic, (0..5).collect(), 10).await;
    eventually(
        "unhealthy while the broker is away",
        Duration::from_secs(20),
        || async { relay.healthcheck().is_err() },
    )
    .await;
    let backlog = outbox.backlog(&pg.db).await.expect("backlog");
    assert!(backlog.pending > 0, "events wait for the broker");
    assert_eq!(backlog.dead_lettered, 0, "an outage dead-letters nothing");

    broker.thaw();
    eventually(
        "everything published after the broker returns",
        Duration::from_secs(60),
        || async { outbox.backlog(&pg.db).await.expect("backlog").pending == 0 },
    )
    .await;
    eventually("healthy again", Duration::from_secs(20), || async {
        relay.healthcheck().is_ok()
    })
    .await;
    relay.shutdown().await.expect("shutdown");
    let received = consume(&broker.address, &topic, 100, Duration::from_secs(30)).await;
    let order = per_key_order(&received);
    // Each key got n = 0..9 before the outage and again 0..9 after: 20 events in order.
    for k in 0..5 {
        let ns = &order[&format!("key-{k}")];
        assert_eq!(ns.len(), 20, "key-{k}: {ns:?}");
        assert_eq!(
            ns[..10],
            ns[10..],
            "key-{k} in order on both sides of the outage"
        );
    }
    pg.drop().await;
}

/// Runs `relay` pass by pass until nothing is pending; fails after 200 passes.
async fn drain<P: outbox::Publisher>(relay: &Relay<P>, outbox: &Outbox, db: &DatabaseConnection) {
    for _ in 0..200 {
        relay.process_events(10).await.expect("process");
        if outbox.backlog(db).await.expect("backlog").pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("events still pending after 200 passes");
}

async fn event_row(db: &DatabaseConnection, id: uuid::Uuid) -> outbox::entity::outbox::Model {
    use outbox::entity::outbox as row;
    use sea_orm::{ColumnTrait, QueryFilter};
    row::Entity::find()
        .filter(row::Column::Id.eq(id))
        .one(db)
        .await
        .expect("read")
        .expect("row")
}

/// The broker refuses the record batch of a key's first event while the next ones
/// follow in requests of their own: no later event of the key is marked published
/// before the refused one, every event is published, and only the refused one uses an
/// attempt.
///
/// (Which messages librdkafka's mock broker writes is not asserted: it does not check
/// idempotent sequence numbers, so it may write a request sent while the refusal was
/// being handled, where Apache Kafka rejects it as out of order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_batch_never_lets_a_later_event_of_its_key_ahead() {
    let pg = PgSchema::migrated().await;
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("gaps", 1, 1).expect("topic");
    let outbox = Outbox::new();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(
            outbox
                .store(&pg.db, &counter("k", n), "gaps")
                .await
                .expect("store"),
        );
    }
    let one_per_request = KafkaPublisher::from_config(
        KafkaConfig::new(&brokers)
            .message_timeout(Duration::from_secs(5))
            .set("batch.num.messages", "1"),
    )
    .expect("producer");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let relay =
        Relay::new(config("gaps"), pg.db.clone(), one_per_request).expect("valid relay config");
    let first = relay.process_events(10).await.expect("first pass");
    assert_eq!(
        first.published, 0,
        "nothing behind the refusal is marked: {first:?}"
    );
    drain(&relay, &outbox, &pg.db).await;

    let refused = event_row(&pg.db, ids[0]).await;
    assert_eq!(refused.attempts, 1, "the refused event");
    for id in &ids[1..] {
        let later = event_row(&pg.db, *id).await;
        assert_eq!(later.attempts, 0, "the events behind it use no attempt");
        assert!(
            later.published_at >= refused.published_at,
            "marked after the refused event"
        );
    }
    let received = consume(&brokers, "gaps", 6, Duration::from_secs(10)).await;
    let mut ns = per_key_order(&received).remove("k").unwrap_or_default();
    ns.sort_unstable();
    assert_eq!(ns, [0, 1, 2, 3, 4, 5], "every event reached the broker");
    pg.drop().await;
}

/// The broker refuses a record batch that holds a poisoned event and an innocent one
/// of another key: each is sent again alone, and only the poisoned one (refused again)
/// uses an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_event_at_fault_uses_an_attempt_when_its_record_batch_is_refused() {
    let pg = PgSchema::migrated().await;
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("shared", 1, 1).expect("topic");
    // One shard: both events in one batch.
    let outbox = Outbox::new().with_shards(std::num::NonZeroU16::MIN);
    let poison = outbox
        .store(&pg.db, &counter("poison", 0), "shared")
        .await
        .expect("store");
    let innocent = outbox
        .store(&pg.db, &counter("innocent", 0), "shared")
        .await
        .expect("store");
    let one_batch = KafkaPublisher::from_config(
        KafkaConfig::new(&brokers)
            .message_timeout(Duration::from_secs(5))
            .linger(Duration::from_millis(100)),
    )
    .expect("producer");
    // The shared record batch, then the poisoned event sent alone.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
    let relay = Relay::new(config("shared"), pg.db.clone(), one_batch)
        .expect("valid relay config")
        .with_outbox(outbox.clone());
    let report = relay.process_events(10).await.expect("process");
    assert_eq!((report.published, report.failed), (1, 1), "{report:?}");
    let poison = event_row(&pg.db, poison).await;
    assert_eq!((poison.published, poison.attempts), (false, 1));
    let innocent = event_row(&pg.db, innocent).await;
    assert_eq!((innocent.published, innocent.attempts), (true, 0));
    pg.drop().await;
}

/// Events for a topic that does not exist (the broker creates none) use up their
/// attempts and are dead-lettered, in key order; events for a topic that exists flow
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_dead_lettered_while_an_existing_one_flows() {
    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let existing = unique_topic("exists");
    let missing = unique_topic("missing");
    create_topic(&brokers, &existing, 1).await;
    let outbox = Outbox::new();
    let lost: Vec<_> = [0, 1].into_iter().map(|n| counter("lost", n)).collect();
    for event in &lost {
        outbox.store(&pg.db, event, &missing).await.expect("store");
    }
    for n in 0..5 {
        outbox
            .store(&pg.db, &counter("fine", n), &existing)
            .await
            .expect("store");
    }
    let publisher = KafkaPublisher::from_config(
        KafkaConfig::new(&brokers).message_timeout(Duration::from_secs(2)),
    )
    .expect("producer");
    let relay = Relay::new(
        RelayConfig {
            retry_attempts: 1,
            ..config("missing")
        },
        pg.db.clone(),
        publisher,
    )
    .expect("valid relay config")
    .with_outbox(outbox.clone())
    .spawn();
    let received = consume(&brokers, &existing, 5, Duration::from_secs(20)).await;
    assert_eq!(per_key_order(&received)["fine"], [0, 1, 2, 3, 4]);
    eventually(
        "both events of the missing topic are dead-lettered",
        Duration::from_secs(60),
        || async { outbox.backlog(&pg.db).await.expect("backlog").dead_lettered == 2 },
    )
    .await;
    relay.shutdown().await.expect("shutdown");
    let dead = outbox.dead_letters(&pg.db, 10).await.expect("dead letters");
    for letter in &dead {
        assert_eq!(letter.attempts, 2);
        let error = letter.error_message.as_deref().unwrap_or_default();
        assert!(error.contains("does not exist"), "{error}");
    }
    assert!(
        dead[0].dead_lettered_at <= dead[1].dead_lettered_at,
        "the second waited for the first"
    );
    pg.drop().await;
}

/// A frozen broker is an outage: however many passes fail, no event uses an attempt,
/// even with no retries allowed; when it thaws, everything is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_dead_letters_nothing() {
    let pg = PgSchema::migrated().await;
    let broker = PrivateBroker::start().await;
    let topic = unique_topic("frozen");
    create_topic(&broker.address, &topic, 1).await;
    let outbox = Outbox::new();
    let publisher = KafkaPublisher::from_config(
        KafkaConfig::new(&broker.address).message_timeout(Duration::from_secs(1)),
    )
    .expect("producer");
    let relay = Relay::new(
        RelayConfig {
            retry_attempts: 0,
            retry_backoff: outbox::Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(300),
            ),
            ..config("frozen")
        },
        pg.db.clone(),
        publisher,
    )
    .expect("valid relay config");
    broker.freeze();
    for n in 0..3 {
        outbox
            .store(&pg.db, &counter(&format!("k{n}"), 0), &topic)
            .await
            .expect("store");
    }
    for _ in 0..3 {
        let report = relay.process_events(10).await.expect("process");
        assert_eq!(report.dead_lettered, 0, "{report:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let events = outbox.pending(&pg.db, 10).await.expect("pending");
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.attempts == 0), "{events:?}");
    broker.thaw();
    drain(&relay, &outbox, &pg.db).await;
    assert_eq!(
        outbox.backlog(&pg.db).await.expect("backlog").dead_lettered,
        0
    );
    pg.drop().await;
}

/// Three relays; one reaches the database but not its broker (frozen). Within the
/// stall timeout plus a lease, it gives up its shards and the other two publish every
/// event; when its broker answers again, it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cut_off_from_kafka_gives_up_its_shards_and_rejoins() {
    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let topic = unique_topic("cut-off");
    create_topic(&brokers, &topic, 2).await;
    let unreachable = PrivateBroker::start().await;
    create_topic(&unreachable.address, &topic, 2).await;
    let relay_config = RelayConfig {
        stall_timeout: Duration::from_secs(3),
        lease_ttl: Duration::from_secs(2),
        ..config("cut-off")
    };
    let quick = |address: &str| {
        KafkaPublisher::from_config(
            KafkaConfig::new(address).message_timeout(Duration::from_secs(1)),
        )
        .expect("producer")
    };
    let cut_off = Relay::new(
        relay_config.clone(),
        pg.db.clone(),
        quick(&unreachable.address),
    )
    .expect("valid relay config")
    .spawn();
    let mut healthy = Vec::new();
    for _ in 0..2 {
        let publisher = warmed_up(quick(&brokers), &brokers).await;
        healthy.push(
            Relay::new(relay_config.clone(), pg.db.clone(), publisher)
                .expect("valid relay config")
                .spawn(),
        );
    }
    eventually(
        "the three relays share the shards",
        Duration::from_secs(10),
        || async { cut_off.stats().owned_shards > 0 },
    )
    .await;
    unreachable.freeze();
    let outbox = Outbox::new();
    write_keys(&pg.db, &outbox, &topic, (0..16).collect(), 3).await;
    let started = std::time::Instant::now();
    eventually(
        "every event published by the relays that can deliver",
        Duration::from_secs(30),
        || async { outbox.backlog(&pg.db).await.expect("backlog").pending == 0 },
    )
    .await;
    eprintln!("all published {:?} after the writes", started.elapsed());
    eventually(
        "the cut-off relay holds nothing",
        Duration::from_secs(5),
        || async { cut_off.stats().owned_shards == 0 },
    )
    .await;
    let health = cut_off.healthcheck().expect_err("unhealthy while cut off");
    assert!(health.to_string().contains("nothing delivered"), "{health}");
    let received = consume(&brokers, &topic, 48, Duration::from_secs(20)).await;
    assert_every_key_complete(&pg.db, &received, 16, 3).await;

    unreachable.thaw();
    eventually("the relay rejoins", Duration::from_secs(30), || async {
        cut_off.stats().owned_shards > 0
    })
    .await;
    cut_off.shutdown().await.expect("shutdown");
    for relay in healthy {
        relay.shutdown().await.expect("shutdown");
    }
    pg.drop().await;
}

/// The broker is slow, not down: a proxy holds every chunk longer than the lease, so
/// every pass outlasts it. Three relays keep their shards (no lease changes hands)
/// and publish every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_takes_no_lease_from_a_relay_and_duplicates_nothing() {
    let pg = PgSchema::migrated().await;
    let (broker, proxy) = PrivateBroker::start_behind_proxy().await;
    let topic = unique_topic("slow");
    create_topic(&broker.address, &topic, 2).await;
    let relay_config = RelayConfig {
        lease_ttl: Duration::from_secs(1),
        batch_size: 10,
        ..config("slow")
    };
    let mut relays = Vec::new();
    for _ in 0..3 {
        let publisher = KafkaPublisher::from_config(
            KafkaConfig::new(&broker.address).message_timeout(Duration::from_secs(20)),
        )
        .expect("producer");
        let publisher = warmed_up(publisher, &broker.address).await;
        relays.push(
            Relay::new(relay_config.clone(), pg.db.clone(), publisher)
                .expect("valid relay config")
                .spawn(),
        );
    }
    // Settled means no relay holds more than its fair share (ceil(16 / 3) = 6): a
    // relay that started first and took more gives the surplus up on a later round,
    // which is a hand-over, not a lease taken from a relay.
    eventually(
        "the relays share all 16 shards fairly",
        Duration::from_secs(15),
        || async {
            relays.iter().map(|r| r.stats().owned_shards).sum::<usize>() == 16
                && relays
                    .iter()
                    .all(|r| (4..=6).contains(&r.stats().owned_shards))
        },
    )
    .await;
    let leases_before = leases(&pg.db).await;

    proxy.set(Mode::Delay(Duration::from_millis(700)));
    let outbox = Outbox::new();
    write_keys(&pg.db, &outbox, &topic, (0..16).collect(), 3).await;
    eventually("every event published", Duration::from_secs(90), || async {
        outbox.backlog(&pg.db).await.expect("backlog").pending == 0
    })
    .await;
    proxy.set(Mode::Pass);
    assert_eq!(
        leases(&pg.db).await,
        leases_before,
        "no lease changed hands while the broker was slow"
    );
    for relay in relays {
        relay.shutdown().await.expect("shutdown");
    }
    let received = consume(&broker.address, &topic, 48, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 48, "each event once");
    let order = per_key_order(&received);
    for k in 0..16 {
        assert_eq!(order[&format!("key-{k}")], [0, 1, 2], "key-{k}");
    }
    pg.drop().await;
}

/// Each shard's lease owner and fencing token.
async fn leases(db: &DatabaseConnection) -> Vec<(i32, String, i64)> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    db.query_all_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT shard, owner, token FROM _outbox_lease ORDER BY shard",
    ))
    .await
    .expect("leases")
    .iter()
    .map(|row| {
        (
            row.try_get_by_index(0).expect("shard"),
            row.try_get_by_index(1).expect("owner"),
            row.try_get_by_index(2).expect("token"),
        )
    })
    .collect()
}

/// What a consumer of `user-events` reads: the relay's events, decoded by type.
#[derive(Debug, PartialEq, Serialize, Deserialize, OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
    Registered { user_id: u64, email: String },
    #[outbox(type = "user.deleted", aggregate = "user_id")]
    Deleted { user_id: u64 },
}

/// Consume, change, produce: a message the relay published is decoded, applied once
/// with the inbox in the consumer's transaction (a second delivery of it changes
/// nothing), and the follow-up event stored on that transaction is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_applies_each_event_once_and_its_follow_up_is_published() {
    use outbox::{Inbox, Received};
    use rdkafka::consumer::{Consumer, StreamConsumer};

    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let (users, billing) = (unique_topic("users"), unique_topic("billing"));
    create_topic(&brokers, &users, 2).await;
    create_topic(&brokers, &billing, 1).await;
    let outbox = Outbox::new();
    let relay = Relay::new(
        config("consume-produce"),
        pg.db.clone(),
        publisher(&brokers),
    )
    .expect("valid relay config")
    .with_outbox(outbox.clone())
    .spawn();
    let registered = UserEvent::Registered {
        user_id: 7,
        email: "ada@example.com".into(),
    };
    let stored = outbox
        .store(&pg.db, &registered, &users)
        .await
        .expect("store");

    let consumer: StreamConsumer = outbox_tests::kafka::client_config(&brokers)
        .set(
            "group.id",
            format!("billing-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[users.as_str()]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .expect("the relay publishes the event")
        .expect("consume");

    // The handler of a consumer named "billing": open an account for each new user.
    let inbox = Inbox::new();
    let apply = async |message: &rdkafka::message::BorrowedMessage<'_>| -> bool {
        let received = Received::<UserEvent>::decode(message).expect("decode");
        let txn = pg.db.begin().await.expect("begin");
        if !inbox
            .record(&txn, "billing", received.event_id())
            .await
            .expect("record")
        {
            return false;
        }
        let UserEvent::Registered { user_id, .. } = received.event() else {
            panic!("unexpected {received:?}");
        };
        let opened = EventBuilder::new("billing.account_opened", user_id)
            .data(json!({ "user_id": user_id, "cause": received.event_id() }));
        outbox
            .store(&txn, &opened, &billing)
            .await
            .expect("store follow-up");
        outbox.commit(txn).await.expect("commit");
        true
    };
    let received = Received::<UserEvent>::decode(&message).expect("decode");
    assert_eq!(received.event(), &registered);
    assert_eq!(received.event_id(), stored);
    assert_eq!(received.key(), Some("7"));
    assert!(apply(&message).await, "the first delivery is applied");
    assert!(!apply(&message).await, "a second delivery changes nothing");
    consumer
        .store_offset_from_message(&message)
        .expect("store the offset once the message is applied");

    let follow_ups = consume(&brokers, &billing, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = consume(&brokers, &billing, 2, Duration::from_secs(1)).await;
    relay.shutdown().await.expect("shutdown");
    assert_eq!(follow_ups.len(), 1, "{follow_ups:?}");
    assert_eq!(again.len(), 1, "exactly one follow-up: {again:?}");
    let follow_up = &follow_ups[0];
    assert_eq!(follow_up.headers["event_type"], "billing.account_opened");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&follow_up.payload).expect("json")["cause"],
        json!(stored)
    );
    pg.drop().await;
}
