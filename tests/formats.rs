//! Message formats end to end, on the real broker: a relay writing each topic in a
//! format of its own (native, CloudEvents binary and structured, Debezium), read back
//! by this crate's consumer on every backend, by the CloudEvents Python SDK (code
//! nobody here wrote, from PyPI), and across a change of format on one topic; and
//! tombstones in every format.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox::{
    Consumer, ConsumerConfig, ConsumerHandle, DecodeEvent, EventBuilder, KafkaConfig,
    KafkaPublisher, MessageFormat, Outbox, OutboxEvent, Received, Relay, RelayConfig, RelayHandle,
};
use outbox_tests::kafka::{brokers, consume_topics, create_topic, unique_topic, warmed_up};
use outbox_tests::{PgSchema, eventually};
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// The event of these tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, OutboxEvent)]
#[outbox(type = "order.placed", version = "v2", aggregate = "order")]
struct OrderPlaced {
    order: String,
    customer: String,
    n: i64,
}

/// One event as stored.
#[derive(Debug, Clone)]
struct Stored {
    topic: String,
    id: Uuid,
    customer: String,
    n: i64,
    trace_id: String,
}

/// One event as this crate's consumer received it.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    format: MessageFormat,
    id: Uuid,
    key: Option<String>,
    version: String,
    trace_id: Option<String>,
    event: OrderPlaced,
}

/// A W3C trace id of its own for event `n` of `customer`.
fn trace_id_of(customer: &str, n: i64) -> String {
    let hash = customer.bytes().fold(17u64, |h, b| h * 31 + u64::from(b));
    format!("{hash:016x}{:016x}", n + 1)
}

/// A topic per format, created with 2 partitions.
async fn topics(formats: &[MessageFormat]) -> Vec<(MessageFormat, String)> {
    let mut topics = Vec::new();
    for &format in formats {
        let topic = unique_topic(&format!("formats-{format}"));
        create_topic(&brokers(), &topic, 2).await;
        topics.push((format, topic));
    }
    topics
}

/// A relay writing `native` except on the topics named in `topics`, each in its format.
async fn relay(
    db: &DatabaseConnection,
    outbox: &Outbox,
    topics: &[(MessageFormat, String)],
) -> RelayHandle {
    let config = RelayConfig {
        format_by_topic: topics
            .iter()
            .map(|(format, topic)| (topic.clone(), *format))
            .collect(),
        cloudevents_source: Some("/tests/formats".to_owned()),
        interval: Duration::from_millis(200),
        ..RelayConfig::new(format!("formats-{}", Uuid::now_v7().simple()))
    };
    let kafka = KafkaConfig::new(&brokers()).message_timeout(Duration::from_secs(5));
    let publisher = warmed_up(
        KafkaPublisher::from_config(kafka).expect("producer"),
        &brokers(),
    )
    .await;
    Relay::new(config, db.clone(), publisher)
        .expect("valid relay config")
        .with_outbox(outbox.clone())
        .spawn()
}

/// Stores `per_customer` orders of each of three customers to every topic, customers
/// interleaved, each in a transaction of its own; returns them in store order.
async fn store_orders(
    db: &DatabaseConnection,
    outbox: &Outbox,
    topics: &[(MessageFormat, String)],
    per_customer: i64,
) -> Vec<Stored> {
    let mut stored = Vec::new();
    for n in 0..per_customer {
        for customer in ["ada", "grace", "edsger"] {
            for (_, topic) in topics {
                let event = OrderPlaced {
                    order: format!("{customer}-{n}"),
                    customer: customer.to_owned(),
                    n,
                };
                let trace_id = trace_id_of(customer, n);
                let txn = db.begin().await.expect("begin");
                let id = outbox
                    .store(&txn, &event, topic.as_str())
                    .partition_key(customer)
                    .user_id(customer)
                    .trace_id(trace_id.clone())
                    .await
                    .expect("store");
                outbox.commit(txn).await.expect("commit");
                stored.push(Stored {
                    topic: topic.clone(),
                    id,
                    customer: customer.to_owned(),
                    n,
                    trace_id,
                });
            }
        }
    }
    stored
}

/// A consumer of `topics` that records every event it receives.
fn recording_consumer(
    db: &DatabaseConnection,
    topics: &[&str],
) -> (ConsumerHandle, Arc<Mutex<Vec<Got>>>) {
    recording(db, topics, |received: &Received<OrderPlaced>| Got {
        topic: received.topic().to_owned(),
        format: received.format(),
        id: received.event_id(),
        key: received.key().map(str::to_owned),
        version: received.event_version().to_owned(),
        trace_id: received.trace_id().map(str::to_owned),
        event: received.event().clone(),
    })
}

/// A consumer of `topics` that records what `note` makes of every event it receives,
/// once per event id: an attempt that fails after the handler ran (MariaDB may refuse
/// its commit as a deadlock under load) runs the handler again, and its database
/// changes, unlike this record in memory, were rolled back. The inbox keeps a
/// duplicate message from reaching the handler at all.
fn recording<E, G>(
    db: &DatabaseConnection,
    topics: &[&str],
    note: fn(&Received<E>) -> G,
) -> (ConsumerHandle, Arc<Mutex<Vec<G>>>)
where
    E: DecodeEvent + Send + Sync + 'static,
    G: Send + 'static,
{
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let kafka = KafkaConfig::new(&brokers()).set("fetch.wait.max.ms", "5");
    let name = format!("formats-{}", Uuid::now_v7().simple());
    let config = ConsumerConfig::new(kafka, &name, topics.iter().copied());
    let record = Arc::clone(&got);
    let consumer = Consumer::new(config, db.clone())
        .expect("valid consumer")
        .handle(move |_txn, received: Received<E>| {
            let record = Arc::clone(&record);
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                if seen
                    .lock()
                    .expect("not poisoned")
                    .insert(received.event_id())
                {
                    record.lock().expect("not poisoned").push(note(&received));
                }
                Ok(())
            })
        })
        .spawn()
        .expect("consumer starts");
    (consumer, got)
}

/// Waits (60 s at most) until `got` holds `count` events.
async fn until_received<G>(got: &Mutex<Vec<G>>, count: usize) {
    eventually("every event consumed", Duration::from_secs(60), || async {
        got.lock().expect("not poisoned").len() >= count
    })
    .await;
}

/// Every stored event received once, in the format of its topic, with its id, key,
/// version, trace and payload, and each customer's events of a topic in store order.
fn assert_received_as_stored(
    stored: &[Stored],
    got: &[Got],
    format_of: &dyn Fn(&Stored) -> MessageFormat,
) {
    assert_eq!(got.len(), stored.len(), "each event received once");
    let by_id: HashMap<Uuid, &Got> = got.iter().map(|g| (g.id, g)).collect();
    assert_eq!(by_id.len(), got.len(), "no event received twice");
    for event in stored {
        let received = by_id
            .get(&event.id)
            .unwrap_or_else(|| panic!("event {} not received", event.id));
        assert_eq!(received.topic, event.topic);
        assert_eq!(received.format, format_of(event), "{}", event.topic);
        assert_eq!(received.key.as_deref(), Some(event.customer.as_str()));
        assert_eq!(received.version, "v2");
        assert_eq!(received.trace_id.as_deref(), Some(event.trace_id.as_str()));
        assert_eq!(
            received.event.order,
            format!("{}-{}", event.customer, event.n)
        );
    }
    let mut expected: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for event in stored {
        expected
            .entry((&event.topic, &event.customer))
            .or_default()
            .push(event.n);
    }
    let mut order: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for event in got {
        order
            .entry((&event.topic, &event.event.customer))
            .or_default()
            .push(event.event.n);
    }
    assert_eq!(order, expected, "each customer's events in store order");
}

/// One relay, a topic per format: this crate's consumer reads every format, telling
/// them apart message by message.
async fn every_format_reaches_the_consumer_in_order(db: DatabaseConnection) {
    let topics = topics(&MessageFormat::ALL).await;
    let outbox = Outbox::on(&db);
    let relay = relay(&db, &outbox, &topics).await;
    let names: Vec<&str> = topics.iter().map(|(_, topic)| topic.as_str()).collect();
    let (consumer, got) = recording_consumer(&db, &names);
    let stored = store_orders(&db, &outbox, &topics, 4).await;
    until_received(&got, stored.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // nothing more comes
    let formats: HashMap<&str, MessageFormat> = topics
        .iter()
        .map(|(format, topic)| (topic.as_str(), *format))
        .collect();
    assert_received_as_stored(&stored, &got.lock().expect("not poisoned"), &|event| {
        formats[event.topic.as_str()]
    });
    consumer.shutdown().await.expect("consumer shutdown");
    relay.shutdown().await.expect("relay shutdown");
}

/// A customer's events, the forgetting one a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, OutboxEvent)]
enum CustomerEvent {
    #[outbox(type = "customer.registered", aggregate = "customer")]
    Registered { customer: String, n: i64 },
    #[outbox(type = "customer.forgotten", aggregate = "customer", tombstone)]
    Forgotten { customer: String },
}

/// One customer event as this crate's consumer received it.
#[derive(Debug, Clone, PartialEq)]
struct GotCustomer {
    topic: String,
    format: MessageFormat,
    tombstone: bool,
    event: CustomerEvent,
}

/// In every format, a tombstone reaches the broker as a null value under its key, in
/// its place among its key's events, and this crate's consumer reads it back as the
/// event it was. Structured CloudEvents writes a tombstone in binary mode.
async fn tombstones_reach_the_consumer_in_every_format_in_order(db: DatabaseConnection) {
    let topics = topics(&MessageFormat::ALL).await;
    let outbox = Outbox::on(&db);
    let relay = relay(&db, &outbox, &topics).await;
    let names: Vec<&str> = topics.iter().map(|(_, topic)| topic.as_str()).collect();
    let (consumer, got) = recording(&db, &names, |received: &Received<CustomerEvent>| {
        GotCustomer {
            topic: received.topic().to_owned(),
            format: received.format(),
            tombstone: received.is_tombstone(),
            event: received.event().clone(),
        }
    });
    let customers = ["ada", "grace"];
    let life = |customer: &str| {
        let customer = customer.to_owned();
        [
            CustomerEvent::Registered {
                customer: customer.clone(),
                n: 0,
            },
            CustomerEvent::Forgotten {
                customer: customer.clone(),
            },
            CustomerEvent::Registered { customer, n: 1 },
        ]
    };
    for step in 0..3 {
        for customer in customers {
            for (_, topic) in &topics {
                let txn = db.begin().await.expect("begin");
                outbox
                    .store(&txn, &life(customer)[step], topic.as_str())
                    .await
                    .expect("store");
                outbox.commit(txn).await.expect("commit");
            }
        }
    }
    let count = 3 * customers.len() * topics.len();
    until_received(&got, count).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // nothing more comes
    let got = got.lock().expect("not poisoned").clone();
    assert_eq!(got.len(), count, "each event received once");
    for (format, topic) in &topics {
        for customer in customers {
            let events: Vec<&GotCustomer> = got
                .iter()
                .filter(|g| &g.topic == topic && life(customer).contains(&g.event))
                .collect();
            let lived: Vec<&CustomerEvent> = events.iter().map(|g| &g.event).collect();
            assert_eq!(lived, life(customer).iter().collect::<Vec<_>>(), "{format}");
            let tombstones: Vec<bool> = events.iter().map(|g| g.tombstone).collect();
            assert_eq!(tombstones, [false, true, false], "{format}");
            let written = match format {
                MessageFormat::CloudEventsStructured => MessageFormat::CloudEventsBinary,
                other => *other,
            };
            assert_eq!(
                events[1].format, written,
                "{format}: the tombstone's format"
            );
        }
    }
    let raw = consume_topics(&brokers(), &names, count, Duration::from_secs(30)).await;
    let nulls: Vec<(&str, &str)> = raw
        .iter()
        .filter(|m| m.null_value)
        .map(|m| (m.key.as_str(), m.payload.as_str()))
        .collect();
    let expected = topics.len() * customers.len();
    assert_eq!(
        nulls.len(),
        expected,
        "a null value per tombstone, none else"
    );
    assert!(
        nulls.iter().all(|(key, _)| customers.contains(key)),
        "{nulls:?}"
    );
    consumer.shutdown().await.expect("consumer shutdown");
    relay.shutdown().await.expect("relay shutdown");
}

outbox_tests::on_every_backend!(
    every_format_reaches_the_consumer_in_order,
    tombstones_reach_the_consumer_in_every_format_in_order,
);

/// A topic moves from one format to the next while events flow, as in a rolling
/// deploy of relays configured one after the other: the consumer loses nothing and
/// keeps each customer's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_changing_format_loses_nothing_and_keeps_order() {
    let pg = PgSchema::migrated().await;
    let topic = unique_topic("formats-rolling");
    create_topic(&brokers(), &topic, 2).await;
    let (consumer, got) = recording_consumer(&pg.db, &[topic.as_str()]);
    let outbox = Outbox::on(&pg.db);
    let mut stored = Vec::new();
    let mut formats = HashMap::new();
    for format in MessageFormat::ALL {
        let relay = relay(&pg.db, &outbox, &[(format, topic.clone())]).await;
        let batch = store_orders(&pg.db, &outbox, &[(format, topic.clone())], 2).await;
        eventually(
            "the relay published them",
            Duration::from_secs(30),
            || async { relay.stats().published >= batch.len() as u64 },
        )
        .await;
        relay.shutdown().await.expect("relay shutdown");
        for event in &batch {
            formats.insert(event.id, format);
        }
        stored.extend(batch);
    }
    until_received(&got, stored.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every customer's n restarts at 0 with each format: order is checked per format.
    let got = got.lock().expect("not poisoned").clone();
    for format in MessageFormat::ALL {
        let stored: Vec<Stored> = stored
            .iter()
            .filter(|s| formats[&s.id] == format)
            .cloned()
            .collect();
        let got: Vec<Got> = got
            .iter()
            .filter(|g| formats.get(&g.id) == Some(&format))
            .cloned()
            .collect();
        assert_received_as_stored(&stored, &got, &|_| format);
    }
    assert_eq!(got.len(), stored.len(), "nothing else was received");
    consumer.shutdown().await.expect("consumer shutdown");
    pg.drop().await;
}

/// The CloudEvents SDK for Python reads what the relay published, in both content
/// modes, with every required attribute, the extensions and the payload; and a
/// tombstone, in binary mode whichever was asked for, as an event without data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudevents_python_sdk_reads_what_the_relay_published() {
    let pg = PgSchema::migrated().await;
    let topics = topics(&[
        MessageFormat::CloudEventsBinary,
        MessageFormat::CloudEventsStructured,
    ])
    .await;
    let outbox = Outbox::on(&pg.db);
    let relay = relay(&pg.db, &outbox, &topics).await;
    let stored = store_orders(&pg.db, &outbox, &topics, 1).await;
    let mut tombstones = HashMap::new();
    for (_, topic) in &topics {
        let cancelled = EventBuilder::new("order.cancelled", "ada-0").tombstone();
        let txn = pg.db.begin().await.expect("begin");
        let id = outbox
            .store(&txn, &cancelled, topic.as_str())
            .partition_key("ada")
            .await
            .expect("store a tombstone");
        outbox.commit(txn).await.expect("commit");
        tombstones.insert(id.to_string(), topic.clone());
    }
    let names: Vec<&str> = topics.iter().map(|(_, topic)| topic.as_str()).collect();
    let count = stored.len() + tombstones.len();
    let messages = consume_topics(&brokers(), &names, count, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), count);
    let nulls = messages.iter().filter(|m| m.null_value).count();
    assert_eq!(nulls, tombstones.len(), "a null value per tombstone");
    let input: Vec<Value> = messages
        .iter()
        .map(|m| {
            let value = (!m.null_value).then_some(&m.payload);
            json!({ "headers": m.headers, "key": m.key, "value": value })
        })
        .collect();
    let events = read_with_python_sdk(&input);
    assert_eq!(events.len(), count);
    let by_id: HashMap<String, &Stored> = stored.iter().map(|s| (s.id.to_string(), s)).collect();
    let mut modes = BTreeMap::new();
    for event in &events {
        let attributes = &event["attributes"];
        let id = attributes["id"].as_str().expect("an id");
        *modes
            .entry(event["mode"].as_str().expect("a mode").to_owned())
            .or_insert(0) += 1;
        if tombstones.contains_key(id) {
            // An event without data: no data, no content type; binary in both modes.
            assert_eq!(event["mode"], "binary");
            assert_eq!(attributes["type"], "order.cancelled");
            assert_eq!(attributes["subject"], "ada-0");
            assert_eq!(attributes["partitionkey"], "ada");
            assert_eq!(attributes.get("datacontenttype"), None);
            assert_eq!(event["data"], Value::Null);
            continue;
        }
        let stored = by_id.get(id).unwrap_or_else(|| panic!("unknown id {id}"));
        assert_eq!(attributes["specversion"], "1.0");
        assert_eq!(attributes["source"], "/tests/formats");
        assert_eq!(attributes["type"], "order.placed");
        let order = format!("{}-{}", stored.customer, stored.n);
        assert_eq!(attributes["subject"], order, "the aggregate id");
        assert_eq!(attributes["datacontenttype"], "application/json");
        assert_eq!(attributes["eventversion"], "v2");
        assert_eq!(attributes["userid"], stored.customer);
        assert_eq!(attributes["partitionkey"], stored.customer, "from the key");
        let traceparent = attributes["traceparent"].as_str().expect("a traceparent");
        assert_eq!(
            traceparent.split('-').nth(1),
            Some(stored.trace_id.as_str())
        );
        let time: DateTime<Utc> = attributes["time"]
            .as_str()
            .expect("a time")
            .parse()
            .expect("RFC 3339");
        assert!((Utc::now() - time).num_seconds().abs() < 120, "{time}");
        assert_eq!(
            event["data"],
            json!({ "order": format!("{}-0", stored.customer), "customer": stored.customer, "n": 0 })
        );
    }
    assert_eq!(
        modes,
        BTreeMap::from([("binary".to_owned(), 5), ("structured".to_owned(), 3)])
    );
    relay.shutdown().await.expect("relay shutdown");
    pg.drop().await;
}

/// What `tests/python/read_cloudevents.py` makes of `messages`, run with the venv of
/// `scripts/python.sh` (which installs the SDK from PyPI when it is missing).
fn read_with_python_sdk(messages: &[Value]) -> Vec<Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let setup = Command::new("bash")
        .arg(format!("{root}/scripts/python.sh"))
        .output()
        .expect("run scripts/python.sh");
    assert!(
        setup.status.success(),
        "scripts/python.sh failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8(setup.stdout).expect("a path");
    let mut reader = Command::new(python.trim())
        .arg(format!("{root}/tests/python/read_cloudevents.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the Python reader");
    reader
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(messages).expect("JSON"))
        .expect("write the messages");
    let output = reader.wait_with_output().expect("the reader's output");
    assert!(
        output.status.success(),
        "the CloudEvents SDK could not read the messages: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the reader")
}
