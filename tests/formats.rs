//! Message formats end to end, on the real broker: a relay writing each topic in a
//! format of its own (native, CloudEvents binary and structured, Debezium), read back
//! by this crate's consumer on every backend, by the CloudEvents Python SDK (code
//! nobody here wrote, from PyPI), and across a change of format on one topic;
//! tombstones in every format; and the published contract (`outbox::contract`) checked
//! against what the relay published.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox::contract::Contract;
use outbox::{
    Consumer, ConsumerConfig, ConsumerHandle, DecodeEvent, EventBuilder, KafkaConfig,
    KafkaPublisher, MessageFormat, Outbox, OutboxEvent, Received, Relay, RelayConfig, RelayHandle,
};
use outbox_tests::kafka::{brokers, consume_topics, create_topic, unique_topic, warmed_up};
use outbox_tests::{PgSchema, eventually};
use schemars::JsonSchema;
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
    let input = serde_json::to_vec(messages).expect("JSON");
    let output = python("read_cloudevents.py", &[], &input)
        .unwrap_or_else(|error| panic!("the CloudEvents SDK could not read the messages: {error}"));
    serde_json::from_slice(&output).expect("JSON from the reader")
}

/// The events of the contract test: variants renamed by serde, a newtype variant, a
/// tombstone, an optional field serde leaves out, and types with formats of their own.
#[derive(Debug, Serialize, Deserialize, JsonSchema, OutboxEvent)]
#[serde(rename_all = "snake_case")]
enum ShopEvent {
    #[outbox(
        type = "order.placed",
        version = "v2",
        aggregate = "order",
        partition_key = "customer"
    )]
    Placed {
        order: Uuid,
        customer: String,
        lines: Vec<ShopLine>,
        placed_at: DateTime<Utc>,
        #[serde(skip_serializing_if = "Option::is_none")]
        coupon: Option<String>,
    },
    Paid(ShopPaid),
    #[outbox(
        type = "order.erased",
        aggregate = "order",
        partition_key = "customer",
        tombstone
    )]
    Erased {
        order: Uuid,
        customer: String,
    },
}

/// A line of a [`ShopEvent::Placed`].
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ShopLine {
    sku: String,
    quantity: u32,
}

/// The newtype variant's event.
#[derive(Debug, Serialize, Deserialize, JsonSchema, OutboxEvent)]
#[outbox(type = "order.paid", aggregate = "order")]
struct ShopPaid {
    order: Uuid,
    cents: i64,
}

/// The contract says what the relay publishes: the AsyncAPI document it writes is
/// valid by the AsyncAPI Initiative's parser (from npm), and every message the relay
/// published, in each of the four formats, fits exactly one message of its topic's
/// channel (headers and value) and the JSON Schema of its type and version, checked by
/// the jsonschema package (from PyPI). A message changed to break its schema is
/// refused, so the check is not vacuous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_relay_published_fits_the_contract() {
    let pg = PgSchema::migrated().await;
    let topics = topics(&MessageFormat::ALL).await;
    let outbox = Outbox::on(&pg.db);
    let relay = relay(&pg.db, &outbox, &topics).await;
    let settings = RelayConfig {
        format_by_topic: topics.iter().map(|(f, t)| (t.clone(), *f)).collect(),
        cloudevents_source: Some("/tests/formats".to_owned()),
        ..RelayConfig::default()
    };
    let contract = topics.iter().fold(
        Contract::new("formats", "1.0.0").relay(&settings),
        |contract, (_, topic)| contract.topic::<ShopEvent>(topic.as_str()),
    );
    let dir = std::env::temp_dir().join(format!("outbox-contract-{}", Uuid::now_v7().simple()));
    let files = contract.write(&dir).expect("write the contract");
    assert_eq!(files.len(), 4, "asyncapi.json and three schemas: {files:?}");

    let parsed = run_script("scripts/asyncapi.sh", &[dir.join("asyncapi.json")], b"");
    let parsed: Value = serde_json::from_slice(&parsed).expect("the parser's summary");
    assert_eq!(parsed["version"], "3.0.0");
    assert_eq!(parsed["channels"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        parsed["messages"], 12,
        "three event types on each of four topics"
    );

    let order = Uuid::now_v7();
    let placed = |coupon: Option<&str>| ShopEvent::Placed {
        order,
        customer: "ada".into(),
        lines: vec![ShopLine {
            sku: "A-1".into(),
            quantity: 2,
        }],
        placed_at: Utc::now(),
        coupon: coupon.map(str::to_owned),
    };
    for (_, topic) in &topics {
        let txn = pg.db.begin().await.expect("begin");
        outbox
            .store(&txn, &placed(None), topic.as_str())
            .await
            .expect("store");
        outbox
            .store(&txn, &placed(Some("WINTER")), topic.as_str())
            .user_id("ada")
            .trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .header("tracestate", "vendor=1")
            .header("source-system", "shop")
            .await
            .expect("store");
        let paid = ShopEvent::Paid(ShopPaid { order, cents: 4200 });
        outbox
            .store(&txn, &paid, topic.as_str())
            .trace_id("request-17")
            .await
            .expect("store");
        let erased = ShopEvent::Erased {
            order,
            customer: "ada".into(),
        };
        outbox
            .store(&txn, &erased, topic.as_str())
            .await
            .expect("store");
        outbox.commit(txn).await.expect("commit");
    }
    let names: Vec<&str> = topics.iter().map(|(_, topic)| topic.as_str()).collect();
    let messages = consume_topics(&brokers(), &names, 16, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 16);
    let input: Vec<Value> = messages
        .iter()
        .map(|m| {
            let value = (!m.null_value).then_some(&m.payload);
            json!({ "topic": m.topic, "headers": m.headers, "key": m.key, "value": value })
        })
        .collect();
    let checked = check_contract(&dir, &input).expect("every message fits the contract");
    let checked: Vec<Value> = serde_json::from_slice(&checked).expect("the checker's JSON");
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for each in &checked {
        let key = (
            each["topic"].as_str().unwrap_or_default().to_owned(),
            each["message"].as_str().unwrap_or_default().to_owned(),
        );
        *seen.entry(key).or_default() += 1;
    }
    for (_, topic) in &topics {
        for (message, count) in [
            ("order.placed.v2", 2),
            ("order.paid.v1", 1),
            ("order.erased.v1", 1),
        ] {
            assert_eq!(
                seen.get(&(topic.clone(), message.to_owned())),
                Some(&count),
                "{topic} {message}: {seen:?}"
            );
        }
    }

    // The same messages, each changed to break the contract, are refused.
    let placed_at = input
        .iter()
        .position(|m| m["headers"].get("event_type") == Some(&json!("order.placed")))
        .expect("a native order.placed");
    let mut broken = input[placed_at].clone();
    let mut value: Value =
        serde_json::from_str(broken["value"].as_str().expect("a value")).expect("JSON");
    value["lines"] = json!("not a list");
    broken["value"] = json!(value.to_string());
    let refused = check_contract(&dir, &[broken]).expect_err("a payload that breaks its schema");
    assert!(
        refused.contains("lines") || refused.contains("not a list"),
        "{refused}"
    );
    let mut unheard = input[placed_at].clone();
    unheard["headers"]["event_version"] = json!("v9");
    let refused =
        check_contract(&dir, &[unheard]).expect_err("a version the contract does not list");
    assert!(refused.contains("0 messages"), "{refused}");

    relay.shutdown().await.expect("relay shutdown");
    std::fs::remove_dir_all(&dir).expect("remove the contract");
    pg.drop().await;
}

/// What `tests/python/check_contract.py` says of `messages` against the contract in
/// `dir`: its output, or its complaint.
fn check_contract(dir: &std::path::Path, messages: &[Value]) -> Result<Vec<u8>, String> {
    let input = serde_json::to_vec(messages).expect("JSON");
    python("check_contract.py", &[dir.as_os_str()], &input)
}

/// Runs `tests/python/<script>` with `args` and `stdin`, in the venv of
/// `scripts/python.sh` (which installs the packages from PyPI when they are missing):
/// its output, or its error output.
fn python(script: &str, args: &[&std::ffi::OsStr], stdin: &[u8]) -> Result<Vec<u8>, String> {
    let python = String::from_utf8(run_script("scripts/python.sh", &[], b"")).expect("a path");
    let script = format!("{}/../tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut all: Vec<&std::ffi::OsStr> = vec![script.as_ref()];
    all.extend(args);
    run(python.trim(), &all, stdin)
}

/// Runs the project's script `path` with `args`, `stdin` as its input; its output.
fn run_script(path: &str, args: &[std::path::PathBuf], stdin: &[u8]) -> Vec<u8> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = format!("{root}/{path}");
    let mut all: Vec<&std::ffi::OsStr> = vec![script.as_ref()];
    all.extend(args.iter().map(|arg| arg.as_os_str()));
    run("bash", &all, stdin).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Runs `program` with `args` and `stdin`: its output, or its error output.
fn run(program: &str, args: &[&std::ffi::OsStr], stdin: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("run {program}: {error}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let output = child.wait_with_output().expect("the output");
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
