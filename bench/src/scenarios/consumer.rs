//! Consumer throughput, and what its transaction proof costs: the `Consumer` on
//! preloaded messages (a one-row handler), beside a hand-written loop doing the same
//! transaction (begin, inbox record, the handler's row, commit) one message at a time,
//! without a check before the commit, with PostgreSQL's old `SELECT 1`, and with the
//! consumer's proof that the transaction still holds its inbox record. The loops'
//! ratios are the proof's cost; the consumer applies partitions concurrently, so it is
//! not comparable with them.

use std::time::{Duration, Instant};

use outbox::{Consumer, ConsumerConfig, KafkaConfig, OutboxEvent, Received};
use outbox_tests::ServerDatabase;
use outbox_tests::kafka::{create_topic, unique_topic};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use uuid::Uuid;

use super::Failure;
use super::fixtures::migrated_database;

/// The scenario's event.
#[derive(Debug, serde::Serialize, serde::Deserialize, OutboxEvent)]
#[outbox(type = "bench.event", aggregate = "key")]
struct BenchEvent {
    key: String,
    n: i64,
}

/// The partitions of the scenario's topic.
const PARTITIONS: i32 = 4;

/// What the hand-written loop checks before its commit.
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    SelectOne,
    Proof,
}

/// Runs the scenario on every database of `urls` and prints a table.
pub(crate) async fn run_consumer(
    urls: &[String],
    brokers: &str,
    messages: usize,
) -> Result<(), Failure> {
    println!("consumer: {messages} messages over {PARTITIONS} partitions, a one-row handler");
    println!(
        "{:<10} {:<34} {:>10} {:>8}",
        "database", "loop", "msgs/s", "ratio"
    );
    for url in urls {
        let database = migrated_database(url, 8).await?;
        let db = database.db();
        db.execute_unprepared("CREATE TABLE bench_applied (n BIGINT NOT NULL)")
            .await?;
        let topic = unique_topic("bench-consumer");
        create_topic(brokers, &topic, PARTITIONS).await;
        produce(brokers, &topic, messages).await?;
        let name = backend_name(&database);
        // Two rounds, alternating, to see the noise.
        let mut rates = Vec::new();
        for round in 0..2 {
            for check in [Check::None, Check::SelectOne, Check::Proof] {
                let rate = hand_loop(db, brokers, &topic, messages, check, round).await?;
                rates.push((check, rate));
            }
        }
        let best = |wanted: fn(Check) -> bool| {
            rates
                .iter()
                .filter(|(check, _)| wanted(*check))
                .map(|(_, rate)| *rate)
                .fold(0.0_f64, f64::max)
        };
        let none = best(|c| matches!(c, Check::None));
        let select_one = best(|c| matches!(c, Check::SelectOne));
        let proof = best(|c| matches!(c, Check::Proof));
        println!(
            "{name:<10} {:<34} {none:>10.0} {:>8}",
            "hand loop, no check", "1.00"
        );
        println!(
            "{name:<10} {:<34} {select_one:>10.0} {:>8.2}",
            "hand loop, SELECT 1 (old PostgreSQL)",
            select_one / none
        );
        println!(
            "{name:<10} {:<34} {proof:>10.0} {:>8.2}",
            "hand loop, the proof",
            proof / none
        );
        let consumer = consumer_rate(db, brokers, &topic, messages).await?;
        println!(
            "{name:<10} {:<34} {consumer:>10.0} {:>8}",
            "outbox::Consumer", "-"
        );
        database.drop().await;
    }
    Ok(())
}

fn backend_name(database: &ServerDatabase) -> &'static str {
    match database.db().get_database_backend() {
        DbBackend::MySql => "mysql",
        _ => "postgres",
    }
}

/// Produces `messages` events as the relay would, keyed over 64 keys.
async fn produce(brokers: &str, topic: &str, messages: usize) -> Result<(), Failure> {
    // One message per record batch: tansu 0.6 answers a fetch from an offset inside a
    // batch with the batches after it, so a consumer that pauses a partition (past
    // `max_buffered`) and resumes inside a batch would miss the rest of it on the
    // test broker (seen: the consumer stalled for good with 10,000 messages).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "1")
        .create()?;
    let mut sends = Vec::with_capacity(messages);
    for n in 0..messages {
        let id = Uuid::now_v7().to_string();
        let key = format!("key-{}", n % 64);
        let payload = format!(r#"{{"key":"{key}","n":{n}}}"#);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event_id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "event_type",
                value: Some("bench.event"),
            })
            .insert(Header {
                key: "event_version",
                value: Some("v1"),
            });
        let producer = &producer;
        sends.push(async move {
            producer
                .send(
                    FutureRecord::to(topic)
                        .key(&key)
                        .payload(&payload)
                        .headers(headers),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(error, _)| error)
        });
        if sends.len() == 1_000 {
            for result in futures_util::future::join_all(sends.drain(..)).await {
                result?;
            }
        }
    }
    for result in futures_util::future::join_all(sends).await {
        result?;
    }
    Ok(())
}

/// The statements of the hand loop on `backend`: the inbox record, the handler's
/// row, and the check before the commit.
fn statements(
    backend: DbBackend,
    check: Check,
    consumer: &str,
    event_id: Uuid,
    n: i64,
) -> Vec<Statement> {
    let (record, row, proof) = match backend {
        DbBackend::MySql => (
            "INSERT IGNORE INTO _outbox_inbox (consumer, event_id, processed_at) VALUES (?, ?, UTC_TIMESTAMP(6))",
            "INSERT INTO bench_applied (n) VALUES (?)",
            "SELECT CAST(CASE WHEN @@in_transaction = 1 AND EXISTS (SELECT 1 FROM _outbox_inbox WHERE consumer = ? AND event_id = ?) THEN 1 ELSE 0 END AS SIGNED)",
        ),
        _ => (
            "INSERT INTO _outbox_inbox (consumer, event_id, processed_at) VALUES ($1, $2, now()) ON CONFLICT DO NOTHING",
            "INSERT INTO bench_applied (n) VALUES ($1)",
            "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM _outbox_inbox WHERE consumer = $1 AND event_id = $2 AND xmin::text::bigint = txid_current() % 4294967296) THEN 1 ELSE 0 END AS BIGINT)",
        ),
    };
    let mut statements = vec![
        Statement::from_sql_and_values(backend, record, [consumer.into(), event_id.into()]),
        Statement::from_sql_and_values(backend, row, [n.into()]),
    ];
    match check {
        Check::None => {}
        Check::SelectOne => statements.push(Statement::from_string(backend, "SELECT 1")),
        Check::Proof => statements.push(Statement::from_sql_and_values(
            backend,
            proof,
            [consumer.into(), event_id.into()],
        )),
    }
    statements
}

/// Messages a second of the hand loop: every message of `topic`, each in a
/// transaction of its own, one at a time.
async fn hand_loop(
    db: &DatabaseConnection,
    brokers: &str,
    topic: &str,
    messages: usize,
    check: Check,
    round: usize,
) -> Result<f64, Failure> {
    let name = format!("hand-{check:?}-{round}-{}", Uuid::now_v7().simple());
    let kafka: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &name)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    kafka.subscribe(&[topic])?;
    let backend = db.get_database_backend();
    let mut started = None;
    let mut done = 0;
    while done < messages {
        let Some(message) = kafka.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        started.get_or_insert_with(Instant::now);
        let event_id = message
            .headers()
            .and_then(|headers| {
                use rdkafka::message::Headers as _;
                headers
                    .iter()
                    .find(|h| h.key == "event_id")
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| Uuid::parse_str(v).ok())
            })
            .ok_or("a message without an event id")?;
        let txn = db.begin().await?;
        let n = i64::try_from(done).unwrap_or(i64::MAX);
        let mut checked = true;
        for statement in statements(backend, check, &name, event_id, n) {
            if statement.sql.starts_with("SELECT CAST") {
                let row = txn.query_one_raw(statement).await?.ok_or("no row")?;
                checked = row.try_get_by_index::<i64>(0)? == 1;
            } else if statement.sql == "SELECT 1" {
                txn.query_one_raw(statement).await?;
            } else {
                txn.execute_raw(statement).await?;
            }
        }
        if !checked {
            return Err("the proof failed in a healthy transaction".into());
        }
        txn.commit().await?;
        done += 1;
    }
    let seconds = started.map_or(f64::INFINITY, |at| at.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    Ok(messages as f64 / seconds)
}

/// Messages a second of the `Consumer`, from its first message applied to its last.
async fn consumer_rate(
    db: &DatabaseConnection,
    brokers: &str,
    topic: &str,
    messages: usize,
) -> Result<f64, Failure> {
    let name = format!("bench-{}", Uuid::now_v7().simple());
    let config = ConsumerConfig::new(KafkaConfig::new(brokers), &name, [topic]);
    let consumer = Consumer::new(config, db.clone())?
        .handle(|txn, event: Received<BenchEvent>| {
            Box::pin(async move {
                let backend = txn.get_database_backend();
                let sql = match backend {
                    DbBackend::MySql => "INSERT INTO bench_applied (n) VALUES (?)",
                    _ => "INSERT INTO bench_applied (n) VALUES ($1)",
                };
                let n = event.event().n;
                txn.execute_raw(Statement::from_sql_and_values(backend, sql, [n.into()]))
                    .await?;
                Ok(())
            })
        })
        .spawn()?;
    let total = u64::try_from(messages).unwrap_or(u64::MAX);
    let mut started = None;
    while consumer.stats().processed < total {
        if started.is_none() && consumer.stats().processed > 0 {
            started = Some((Instant::now(), consumer.stats().processed));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.shutdown().await?;
    let (at, first) = started.ok_or("the consumer applied everything at once")?;
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    Ok((total - first) as f64 / at.elapsed().as_secs_f64())
}
