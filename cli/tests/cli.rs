//! The `outbox` command against real databases (PostgreSQL, and MariaDB for the
//! commands that read and change events): every command, its JSON, and its errors
//! for bad input.

use std::process::{Command, Output};

use outbox::entity::outbox as row;
use outbox::{EventBuilder, Outbox, RelayConfig};
use outbox_tests::{PgSchema, ServerDatabase, database_url};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::Value;
use uuid::Uuid;

/// Runs `outbox` on the test's database.
fn outbox_cli(database: &ServerDatabase, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(args)
        .env("DATABASE_URL", database.url())
        .output()
        .expect("run outbox")
}

/// Marks every event published `days` days ago.
async fn publish_all_days_ago(database: &ServerDatabase, days: i64) {
    row::Entity::update_many()
        .col_expr(row::Column::Published, Expr::value(true))
        .col_expr(
            row::Column::PublishedAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::days(days)),
        )
        .exec(database.db())
        .await
        .expect("publish every event");
}

/// How many rows the outbox table holds.
async fn outbox_rows(database: &ServerDatabase) -> u64 {
    row::Entity::find()
        .count(database.db())
        .await
        .expect("count the outbox's rows")
}

/// Sets the publication time of the events `ids` to `days` days ago.
async fn published_days_ago(database: &ServerDatabase, ids: &[Uuid], days: i64) {
    row::Entity::update_many()
        .col_expr(
            row::Column::PublishedAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::days(days)),
        )
        .filter(row::Column::Id.is_in(ids.iter().copied()))
        .exec(database.db())
        .await
        .expect("age");
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).expect("JSON output")
}

fn stderr_of_failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Three pending events over two topics, one dead letter, two events published long
/// ago and one published now.
async fn fixture(database: &ServerDatabase) -> (Uuid, Uuid) {
    let db = database.db();
    let outbox = Outbox::new();
    let mut ids = Vec::new();
    for (topic, key) in [
        ("orders", "o-1"),
        ("orders", "o-2"),
        ("users", "u-1"),
        ("users", "u-2"),
        ("users", "u-3"),
        ("users", "u-4"),
        ("users", "u-5"),
    ] {
        ids.push(
            outbox
                .store(db, &EventBuilder::new("thing.happened", key), topic)
                .await
                .expect("store"),
        );
    }
    let config = RelayConfig {
        retry_attempts: 0,
        ..RelayConfig::default()
    };
    outbox
        .handle_event_failure(db, ids[3], "message too large", &config)
        .await
        .expect("dead-letter");
    outbox
        .mark_events_as_published(db, &ids[4..])
        .await
        .expect("publish");
    published_days_ago(database, &ids[4..6], 10).await;
    (ids[0], ids[3])
}

async fn status_reports_backlog_per_topic_and_relays(database: &ServerDatabase) {
    let (_, _) = fixture(database).await;
    let status = json(&outbox_cli(database, &["status", "--json"]));
    assert_eq!(status["pending"], 3);
    assert_eq!(status["dead_lettered"], 1);
    assert!(
        status["oldest_pending_age_seconds"]
            .as_f64()
            .is_some_and(|age| age >= 0.0)
    );
    let topics: Vec<(String, i64, i64)> = status["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap_or_default().to_owned(),
                t["pending"].as_i64().unwrap_or(-1),
                t["dead_lettered"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        topics,
        [("orders".to_owned(), 2, 0), ("users".to_owned(), 1, 1)]
    );
    assert_eq!(status["relays"], Value::Array(Vec::new()));

    let text = stdout(&outbox_cli(database, &["status"]));
    assert!(
        text.starts_with("pending 3, dead-lettered 1, oldest pending "),
        "{text}"
    );
    assert!(
        text.contains("topic   pending  dead-lettered  oldest pending"),
        "{text}"
    );
    assert!(
        text.contains("service  relay  shards  last heartbeat"),
        "{text}"
    );
}

async fn list_and_show_events(database: &ServerDatabase) {
    let (pending, dead) = fixture(database).await;
    let listed = json(&outbox_cli(database, &["list", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert_eq!(listed[0]["id"], pending.to_string(), "oldest first");
    let dead_letters = json(&outbox_cli(database, &["list", "--dead", "--json"]));
    assert_eq!(dead_letters.as_array().map(Vec::len), Some(1));
    assert_eq!(dead_letters[0]["error_message"], "message too large");
    let table = stdout(&outbox_cli(database, &["list", "--dead"]));
    assert!(
        table.lines().nth(1).is_some_and(
            |line| line.starts_with(&dead.to_string()) && line.ends_with("message too large")
        ),
        "{table}"
    );

    let shown = json(&outbox_cli(
        database,
        &["show", &dead.to_string(), "--json"],
    ));
    assert_eq!(shown["id"], dead.to_string());
    assert_eq!(shown["attempts"], 1);
    let text = stdout(&outbox_cli(database, &["show", &dead.to_string()]));
    assert!(
        text.lines()
            .any(|l| l.starts_with("destination_topic") && l.ends_with("users")),
        "{text}"
    );

    let unknown = Uuid::now_v7();
    let error = stderr_of_failure(&outbox_cli(database, &["show", &unknown.to_string()]));
    assert_eq!(error.trim(), format!("error: no event with id {unknown}"));
    let error = stderr_of_failure(&outbox_cli(database, &["show", "not-a-uuid"]));
    assert!(error.contains("invalid value 'not-a-uuid'"), "{error}");
}

/// `list --scheduled` shows the events waiting for their due time, soonest first;
/// `status` counts them apart from the pending ones; after `cancel`, they are gone.
async fn scheduled_events_are_listed_and_counted_apart(database: &ServerDatabase) {
    let db = database.db();
    let outbox = Outbox::new();
    let mut ids = Vec::new();
    for (key, hours) in [("later", 48), ("sooner", 24)] {
        let event = EventBuilder::new("payment.reminder", key);
        let id = outbox
            .store(db, &event, "reminders")
            .delay(std::time::Duration::from_secs(hours * 60 * 60))
            .await
            .expect("schedule");
        ids.push(id);
    }
    outbox
        .store(db, &EventBuilder::new("order.created", "now"), "orders")
        .await
        .expect("store");
    let listed = json(&outbox_cli(database, &["list", "--scheduled", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert_eq!(listed[0]["id"], ids[1].to_string(), "soonest first");
    assert_eq!(listed[0]["event_key"], "sooner");
    assert_eq!(listed[1]["destination_topic"], "reminders");
    let table = stdout(&outbox_cli(database, &["list", "--scheduled"]));
    assert!(
        table.lines().nth(1).is_some_and(
            |line| line.starts_with(&ids[1].to_string()) && line.contains("(in 23h 59m")
        ),
        "{table}"
    );
    let status = json(&outbox_cli(database, &["status", "--json"]));
    assert_eq!(
        (status["pending"].as_u64(), status["scheduled"].as_u64()),
        (Some(1), Some(2))
    );
    let text = stdout(&outbox_cli(database, &["status"]));
    assert!(
        text.contains("scheduled 2 (waiting for their due time)"),
        "{text}"
    );
    assert!(outbox.cancel(db, ids[0]).await.expect("cancel"));
    let listed = json(&outbox_cli(database, &["list", "--scheduled", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

async fn replay_asks_for_yes_then_puts_dead_letters_back(database: &ServerDatabase) {
    let (pending, dead) = fixture(database).await;
    let dry = stdout(&outbox_cli(database, &["replay", &dead.to_string()]));
    assert!(
        dry.starts_with("dry run: would replay dead-lettered event"),
        "{dry}"
    );
    assert_eq!(
        json(&outbox_cli(database, &["status", "--json"]))["dead_lettered"],
        1,
        "a dry run changes nothing"
    );

    let error = stderr_of_failure(&outbox_cli(
        database,
        &["replay", &pending.to_string(), "--yes"],
    ));
    assert!(error.contains("is not dead-lettered"), "{error}");

    let all = json(&outbox_cli(database, &["replay", "--all-dead", "--json"]));
    assert_eq!(
        (all["dry_run"].clone(), all["would_affect"].clone()),
        (Value::Bool(true), Value::from(1))
    );
    let done = json(&outbox_cli(
        database,
        &["replay", &dead.to_string(), "--yes", "--json"],
    ));
    assert_eq!(
        (done["dry_run"].clone(), done["replayed"].clone()),
        (Value::Bool(false), Value::from(1))
    );
    let status = json(&outbox_cli(database, &["status", "--json"]));
    assert_eq!(
        (status["pending"].clone(), status["dead_lettered"].clone()),
        (Value::from(4), Value::from(0))
    );

    let usage = stderr_of_failure(&outbox_cli(database, &["replay"]));
    assert!(
        usage.contains("--all-dead"),
        "replay needs an id or --all-dead: {usage}"
    );
}

async fn purge_deletes_only_old_published_events_after_yes(database: &ServerDatabase) {
    let (_, _) = fixture(database).await;
    let dry = json(&outbox_cli(
        database,
        &["purge", "--published-older-than", "7d", "--json"],
    ));
    assert_eq!(
        (dry["dry_run"].clone(), dry["would_affect"].clone()),
        (Value::Bool(true), Value::from(2))
    );
    let text = stdout(&outbox_cli(
        database,
        &["purge", "--published-older-than", "7days"],
    ));
    assert_eq!(
        text.trim(),
        "dry run: would delete 2 events published more than 7days ago; run again with --yes to do it"
    );
    let done = stdout(&outbox_cli(
        database,
        &["purge", "--published-older-than", "7d", "--yes"],
    ));
    assert_eq!(
        done.trim(),
        "deleted 2 events published more than 7days ago"
    );
    let status = json(&outbox_cli(database, &["status", "--json"]));
    assert_eq!(
        (status["pending"].clone(), status["dead_lettered"].clone()),
        (Value::from(3), Value::from(1))
    );
    let error = stderr_of_failure(&outbox_cli(
        database,
        &["purge", "--published-older-than", "a while"],
    ));
    assert!(error.contains("invalid value 'a while'"), "{error}");
    // An age past every date is an error naming it, not a panic, dry run or not.
    for args in [
        &["purge", "--published-older-than", "300000y"][..],
        &["purge", "--published-older-than", "300000y", "--yes"][..],
    ] {
        let output = outbox_cli(database, args);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains("reaches past the dates"), "{error}");
    }
}

#[test]
fn bad_database_urls_are_explained() {
    let output = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["status", "--connect-timeout", "1s"])
        .env("DATABASE_URL", "postgres://app:s3cret@127.0.0.1:1/nowhere")
        .output()
        .expect("run");
    let error = stderr_of_failure(&output);
    assert!(
        error.starts_with(
            "error: cannot connect to the database at postgres://app:***@127.0.0.1:1/nowhere"
        ),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "the password is not printed");

    // Passwords that break URL parsing, or hide in the query, are not printed either,
    // neither in the URL nor in what sqlx reports about it.
    for (url, password) in [
        (
            "postgres://app:pa/ss#w?rd@127.0.0.1:1/nowhere",
            "pa/ss#w?rd",
        ),
        (
            "postgres://app@127.0.0.1:1/nowhere?password=s3cr%2Ft",
            "s3cr",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_outbox"))
            .args(["status", "--connect-timeout", "1s"])
            .env("DATABASE_URL", url)
            .output()
            .expect("run");
        let error = stderr_of_failure(&output);
        assert!(error.starts_with("error: cannot connect"), "{error}");
        assert!(!error.contains(password), "{url}: {error}");
        assert!(
            !error.contains("s3cr/t"),
            "{url}: the decoded form neither: {error}"
        );
    }

    let output = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["status"])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run");
    assert_eq!(
        stderr_of_failure(&output).trim(),
        "error: no database given: set DATABASE_URL or pass --database-url"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["status", "--table", "bad name"])
        .env("DATABASE_URL", database_url())
        .output()
        .expect("run");
    assert!(stderr_of_failure(&output).contains("invalid table name \"bad name\""));
}

/// `outbox relay` publishes what is pending and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_runs_until_sigterm() {
    use outbox_tests::kafka::{brokers, consume, create_topic, unique_topic};
    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let topic = unique_topic("cli-relay");
    create_topic(&brokers, &topic, 1).await;
    let id = Outbox::new()
        .store(&pg.db, &EventBuilder::new("thing.happened", "k"), &topic)
        .await
        .expect("store");

    let url = format!(
        "{}?options=-c%20search_path%3D{}",
        database_url(),
        pg.schema
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["relay"])
        .env("DATABASE_URL", url)
        .env("KAFKA_BROKERS", &brokers)
        .env("OUTBOX_SERVICE_NAME", "cli-test")
        .env("OUTBOX_INTERVAL", "100ms")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(Running::new)
        .expect("start outbox relay");
    let received = consume(&brokers, &topic, 1, std::time::Duration::from_secs(30)).await;
    assert_eq!(
        received.first().map(|m| m.event_id().to_owned()),
        Some(id.to_string())
    );
    outbox_tests::eventually(
        "the relay marks it published",
        std::time::Duration::from_secs(10),
        || async {
            Outbox::new()
                .backlog(&pg.db)
                .await
                .is_ok_and(|b| b.pending == 0)
        },
    )
    .await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("relay stopped") && stderr.contains("published=1"),
        "{stderr}"
    );
    pg.drop().await;
}

/// `outbox relay --message-format` writes that format, and topics named in
/// `OUTBOX_MESSAGE_FORMAT_BY_TOPIC` theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_writes_the_message_format_it_is_given() {
    use outbox_tests::kafka::{brokers, consume, create_topic, unique_topic};
    let pg = PgSchema::migrated().await;
    let brokers = brokers();
    let (events, orders) = (unique_topic("cli-ce"), unique_topic("cli-debezium"));
    for topic in [&events, &orders] {
        create_topic(&brokers, topic, 1).await;
    }
    let outbox = Outbox::new();
    let event = EventBuilder::new("thing.happened", "k");
    let ce_id = outbox.store(&pg.db, &event, &events).await.expect("store");
    let debezium_id = outbox.store(&pg.db, &event, &orders).await.expect("store");

    let url = format!(
        "{}?options=-c%20search_path%3D{}",
        database_url(),
        pg.schema
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["relay", "--message-format", "cloudevents-binary"])
        .env("DATABASE_URL", url)
        .env("KAFKA_BROKERS", &brokers)
        .env("OUTBOX_SERVICE_NAME", "cli-formats")
        .env("OUTBOX_INTERVAL", "100ms")
        .env(
            "OUTBOX_MESSAGE_FORMAT_BY_TOPIC",
            format!("{orders}=debezium"),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(Running::new)
        .expect("start outbox relay");
    let timeout = std::time::Duration::from_secs(30);
    let cloudevent = consume(&brokers, &events, 1, timeout).await;
    let header = |name: &str| {
        cloudevent
            .first()
            .and_then(|m| m.headers.get(name).cloned())
    };
    assert_eq!(header("ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce_id"), Some(ce_id.to_string()));
    assert_eq!(header("ce_source").as_deref(), Some("/cli-formats"));
    let debezium = consume(&brokers, &orders, 1, timeout).await;
    assert_eq!(
        debezium.first().and_then(|m| m.headers.get("id").cloned()),
        Some(debezium_id.to_string())
    );
    drop(child);
    pg.drop().await;
}

/// Stores `count` events in one transaction.
async fn store_many(db: &sea_orm::DatabaseConnection, count: usize) {
    use sea_orm::TransactionTrait;
    let outbox = Outbox::new();
    let txn = db.begin().await.expect("begin");
    for start in (0..count).step_by(1000) {
        let envelopes = (start..count.min(start + 1000)).map(|i| {
            let event = EventBuilder::new("thing.happened", format!("k-{}", i % 50));
            outbox::Envelope::new(&event, "things").expect("envelope")
        });
        outbox.store_batch(&txn, envelopes).await.expect("store");
    }
    txn.commit().await.expect("commit");
}

async fn replay_all_dead_and_purge_work_in_batches(database: &ServerDatabase) {
    store_many(database.db(), 2500).await;
    row::Entity::update_many()
        .col_expr(row::Column::DeadLetteredAt, Expr::value(chrono::Utc::now()))
        .col_expr(row::Column::Attempts, Expr::value(3))
        .exec(database.db())
        .await
        .expect("dead-letter every event");
    let done = json(&outbox_cli(
        database,
        &[
            "replay",
            "--all-dead",
            "--yes",
            "--json",
            "--batch-size",
            "1000",
        ],
    ));
    assert_eq!(done["replayed"], 2500);
    let status = json(&outbox_cli(database, &["status", "--json"]));
    assert_eq!(
        (status["pending"].clone(), status["dead_lettered"].clone()),
        (Value::from(2500), Value::from(0))
    );

    publish_all_days_ago(database, 40).await;
    let done = json(&outbox_cli(
        database,
        &[
            "purge",
            "--published-older-than",
            "30d",
            "--yes",
            "--json",
            "--batch-size",
            "700",
        ],
    ));
    assert_eq!(done["deleted"], 2500);
    assert_eq!(outbox_rows(database).await, 0);
}

/// The operator's replay as the report ran it: a key's first event dead-lettered, the
/// second waiting for a retry, the third parked behind it, then `outbox replay
/// --all-dead --yes`. The replayed event is published at once, the rest follows in
/// order when the retry falls due, and `outbox status` shows the key's oldest pending
/// event meanwhile. (The relay used to park the whole key for good after the replay,
/// and status showed no oldest pending event.) A replay by id after the shard count
/// changed puts the event in its key's shard under the new count.
async fn a_replay_frees_the_key_and_follows_the_shard_count(database: &ServerDatabase) {
    use outbox::{MemoryPublisher, Relay};
    let db = database.db();
    let outbox = Outbox::new();
    let ids = outbox_tests::store_counters(db, &outbox, "k", 3).await;
    outbox_tests::dead_and_retrying(db, &outbox, &ids).await;
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(RelayConfig::new("cli"), db.clone(), publisher.clone())
        .expect("valid relay config")
        .with_outbox(outbox.clone());
    relay.process_events(10).await.expect("process");

    let done = json(&outbox_cli(
        database,
        &["replay", "--all-dead", "--yes", "--json"],
    ));
    assert_eq!(done["replayed"], 1);
    relay.process_events(10).await.expect("process");
    let published: Vec<Uuid> = publisher.messages().iter().map(|m| m.id).collect();
    assert_eq!(published, ids[..1], "the replayed event goes out at once");
    let status = json(&outbox_cli(database, &["status", "--json"]));
    assert_eq!(status["pending"], 2);
    assert!(
        status["oldest_pending_age_seconds"].is_f64(),
        "the waiting key shows: {status}"
    );
    outbox_tests::retry_due(db, ids[1]).await;
    relay.process_events(10).await.expect("process");
    relay.process_events(10).await.expect("process");
    let published: Vec<Uuid> = publisher.messages().iter().map(|m| m.id).collect();
    assert_eq!(published, ids);
    let status = json(&outbox_cli(database, &["status", "--json"]));
    assert_eq!(
        (status["pending"].clone(), status["dead_lettered"].clone()),
        (Value::from(0), Value::from(0))
    );

    // The shard count changes from 16 to 3 while an event is dead-lettered.
    let event = EventBuilder::new("counter.incremented", "k");
    let dead = outbox.store(db, &event, "counters").await.expect("store");
    let dead_now = RelayConfig {
        retry_attempts: 0,
        ..RelayConfig::new("cli")
    };
    outbox
        .handle_event_failure(db, dead, "unknown topic", &dead_now)
        .await
        .expect("dead-letter");
    let three = Outbox::new().with_shards(std::num::NonZeroU16::new(3).expect("non-zero"));
    let newer = three.store(db, &event, "counters").await.expect("store");
    stdout(&outbox_cli(
        database,
        &["replay", &dead.to_string(), "--yes", "--shards", "3"],
    ));
    let shards: Vec<i32> = row::Entity::find()
        .filter(row::Column::Id.is_in([dead, newer]))
        .all(db)
        .await
        .expect("rows")
        .iter()
        .map(|r| r.shard)
        .collect();
    assert_eq!(shards.len(), 2);
    assert_eq!(
        shards[0], shards[1],
        "the replayed event joins its key's new shard"
    );
}

/// Ctrl-C stops a long purge after the batch in progress: what was deleted stays
/// deleted, the rest stays, and the command says how far it got.
async fn an_interrupted_purge_keeps_what_it_did_and_says_so(database: &ServerDatabase) {
    store_many(database.db(), 20_000).await;
    publish_all_days_ago(database, 40).await;
    let child = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args([
            "purge",
            "--published-older-than",
            "30d",
            "--yes",
            "--batch-size",
            "20",
        ])
        .env("DATABASE_URL", database.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(Running::new)
        .expect("start outbox purge");
    outbox_tests::eventually(
        "the purge has started",
        std::time::Duration::from_secs(30),
        || async { outbox_rows(database).await < 20_000 },
    )
    .await;
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "an interrupted purge fails: {stderr}"
    );
    let left = outbox_rows(database).await;
    assert!(left > 0, "interrupted before the end");
    let deleted = 20_000 - left;
    assert!(
        stderr.contains(&format!("interrupted after {deleted} of 20000 rows")),
        "{deleted} deleted: {stderr}"
    );
    assert_eq!(deleted % 20, 0, "whole batches only");
    let rest = json(&outbox_cli(
        database,
        &["purge", "--published-older-than", "30d", "--yes", "--json"],
    ));
    assert_eq!(rest["deleted"], left, "running it again goes on");
}

/// A command started by a test, killed when the test ends however it ends (a failed
/// assertion must not leave a relay running).
struct Running(Option<std::process::Child>);

impl Running {
    fn new(child: std::process::Child) -> Self {
        Running(Some(child))
    }

    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }

    fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0.take().expect("running").wait_with_output()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stores one event for each of the keys `k-0` .. `k-{count - 1}`.
async fn store_keys(pg: &PgSchema, outbox: &Outbox, topic: &str, count: usize) {
    for i in 0..count {
        let event = EventBuilder::new("thing.happened", format!("k-{i}"));
        outbox.store(&pg.db, &event, topic).await.expect("store");
    }
}

/// One HTTP/1.1 GET: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to --http-addr");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of `metric` (the sum over its label sets) in Prometheus text.
fn metric(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `outbox relay` as operators run it: Kafka settings from a properties file and the
/// environment (TLS through a real listener, which needs both: the file gives the
/// protocol and the brokers, the environment the CA), the HTTP endpoints, JSON logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_takes_kafka_settings_from_a_file_and_the_environment_and_serves_probes() {
    use outbox_tests::kafka::{create_topic_with, unique_topic};
    use outbox_tests::tls::{Pki, broker_behind_tls, tls_client};
    let pg = PgSchema::migrated().await;
    let pki = Pki::make();
    let (broker, listener) = broker_behind_tls(&pki, false).await;
    let client = tls_client(&listener.address, &pki.ca);
    let topic = unique_topic("cli-ops");
    create_topic_with(&client, &topic, 1).await;
    let outbox = Outbox::new();
    let properties = std::env::temp_dir().join(format!("outbox-cli-{}.properties", Uuid::now_v7()));
    std::fs::write(
        &properties,
        format!(
            "# the relay's Kafka settings\nbootstrap.servers={}\nsecurity.protocol=ssl\nmessage.timeout.ms=3000\n",
            listener.address
        ),
    )
    .expect("properties file");
    let http = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        format!("127.0.0.1:{port}")
    };
    let child = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["relay", "--kafka-config"])
        .arg(&properties)
        .args(["--http-addr", &http, "--log-format", "json"])
        .env("DATABASE_URL", pg.url())
        .env_remove("KAFKA_BROKERS")
        .env("OUTBOX_KAFKA_SSL_CA_LOCATION", &pki.ca)
        .env("OUTBOX_SERVICE_NAME", "cli-ops")
        .env("OUTBOX_INTERVAL", "100ms")
        .env("OUTBOX_HEALTH_TIMEOUT", "5s")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(Running::new)
        .expect("start outbox relay");

    let published = |at_least: f64| {
        let http = http.clone();
        move || {
            let http = http.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    std::net::TcpStream::connect(&http).is_ok()
                        && metric(&http_get(&http, "/metrics").1, "outbox_published_total")
                            >= at_least
                })
                .await
                .expect("probe")
            }
        }
    };
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            tokio::task::spawn_blocking(move || http_get(&http, path))
                .await
                .expect("get")
        }
    };
    // Before any event: the counters are there, at zero, so that rate() sees the
    // first events (the recorder is installed before the relay starts).
    outbox_tests::eventually(
        "/metrics served",
        std::time::Duration::from_secs(30),
        published(0.0),
    )
    .await;
    let (_, text) = get("/metrics").await;
    assert!(text.contains("outbox_published_total{"), "{text}");
    assert!(text.contains("outbox_dead_lettered_total{"), "{text}");
    store_keys(&pg, &outbox, &topic, 5).await;
    outbox_tests::eventually(
        "5 published, in /metrics",
        std::time::Duration::from_secs(30),
        published(5.0),
    )
    .await;
    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "outbox_pending",
        "outbox_dead_letters",
        "outbox_oldest_pending_age_seconds",
        "outbox_publish_latency_seconds_bucket",
        "outbox_relay_healthy",
        "# HELP outbox_published_total",
    ] {
        assert!(text.contains(name), "{name} in /metrics: {text}");
    }
    assert_eq!(metric(&text, "outbox_dead_lettered_total"), 0.0);
    assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));
    outbox_tests::eventually("ready", std::time::Duration::from_secs(20), || async {
        get("/readyz").await == (200, "ready\n".to_owned())
    })
    .await;
    store_keys(&pg, &outbox, &topic, 3).await;
    outbox_tests::eventually(
        "/metrics grows as events flow",
        std::time::Duration::from_secs(30),
        published(8.0),
    )
    .await;

    broker.freeze();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let reason = loop {
        let (status, body) = get("/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready with the broker frozen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        reason.contains("broker"),
        "the reason names the broker: {reason}"
    );
    assert_eq!(
        get("/healthz").await.0,
        200,
        "alive while the broker is away"
    );
    broker.thaw();
    outbox_tests::eventually(
        "ready again",
        std::time::Duration::from_secs(30),
        || async { get("/readyz").await.0 == 200 },
    )
    .await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines.iter().any(
            |l| l["message"] == "relay running; Ctrl-C or SIGTERM stops it" && l["level"] == "INFO"
        ),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "relay stopped"
                && l["published"].as_u64().is_some_and(|n| n >= 8)),
        "{stderr}"
    );
    std::fs::remove_file(properties).expect("remove");
    pg.drop().await;
}

/// Writes a consumer's dead letter as the consumer would.
async fn dead_letter(
    database: &ServerDatabase,
    consumer: &str,
    topic: &str,
    offset: i64,
    payload: &[u8],
    error: &str,
) -> i64 {
    use outbox::entity::inbox_dead;
    use sea_orm::{ActiveModelTrait, Set};
    let letter = inbox_dead::ActiveModel {
        consumer: Set(consumer.to_owned()),
        topic: Set(topic.to_owned()),
        kafka_partition: Set(0),
        kafka_offset: Set(offset),
        event_id: Set(Some(Uuid::now_v7())),
        event_type: Set(Some("account.credited".to_owned())),
        message_key: Set(Some(b"account-0".to_vec())),
        payload: Set(Some(payload.to_vec())),
        headers: Set(r#"{"event_type":"account.credited"}"#.to_owned()),
        error: Set(error.to_owned()),
        attempts: Set(4),
        dead_lettered_at: Set(chrono::Utc::now()),
        replay_requested_at: Set(None),
        ..Default::default()
    };
    letter.insert(database.db()).await.expect("dead letter").id
}

/// `outbox inbox`: the consumers' dead letters listed (filtered by consumer, topic and
/// error), shown with their message, marked for replay and deleted, dry runs first.
async fn inbox_dead_letters_are_listed_shown_replayed_and_deleted(database: &ServerDatabase) {
    let frozen = dead_letter(
        database,
        "billing",
        "accounts",
        3,
        br#"{"n":1}"#,
        "account frozen",
    )
    .await;
    let binary = dead_letter(database, "billing", "orders", 9, &[0xff, 0x00], "timed out").await;
    let audit = dead_letter(database, "audit", "accounts", 3, b"{}", "account frozen").await;

    let all = json(&outbox_cli(database, &["inbox", "list", "--json"]));
    assert_eq!(all.as_array().map(Vec::len), Some(3), "{all}");
    let billing = json(&outbox_cli(
        database,
        &["inbox", "list", "--consumer", "billing", "--json"],
    ));
    let ids: Vec<i64> = billing
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [frozen, binary]);
    let timed_out = json(&outbox_cli(
        database,
        &["inbox", "list", "--error", "timed out", "--json"],
    ));
    assert_eq!(timed_out[0]["id"], binary, "{timed_out}");
    assert_eq!(
        timed_out[0]["payload"], "0xff00",
        "bytes that are not UTF-8 as hex"
    );
    let table = stdout(&outbox_cli(
        database,
        &["inbox", "list", "--topic", "accounts"],
    ));
    assert!(table.starts_with("id"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");

    let shown = json(&outbox_cli(
        database,
        &["inbox", "show", &frozen.to_string(), "--json"],
    ));
    assert_eq!(shown["payload"], r#"{"n":1}"#);
    assert_eq!(shown["message_key"], "account-0");
    assert_eq!(shown["headers"]["event_type"], "account.credited");
    let text = stdout(&outbox_cli(
        database,
        &["inbox", "show", &frozen.to_string()],
    ));
    assert!(text.contains("account frozen"), "{text}");
    let missing = outbox_cli(database, &["inbox", "show", "999999"]);
    assert!(stderr_of_failure(&missing).contains("no dead letter with id 999999"));

    let marked = || async {
        outbox::Inbox::new()
            .find_dead_letters(
                database.db(),
                &outbox::DeadLetterFilter::all().marked_for_replay(),
                10,
            )
            .await
            .expect("marked")
            .iter()
            .map(|l| l.id)
            .collect::<Vec<_>>()
    };
    let dry = stdout(&outbox_cli(
        database,
        &["inbox", "replay", &frozen.to_string()],
    ));
    assert!(
        dry.starts_with("dry run: would mark for replay 1 dead letters"),
        "{dry}"
    );
    assert!(marked().await.is_empty());
    let done = json(&outbox_cli(
        database,
        &["inbox", "replay", &frozen.to_string(), "--yes", "--json"],
    ));
    assert_eq!(done["marked_for_replay"], 1, "{done}");
    assert_eq!(marked().await, [frozen]);
    // Every letter of `accounts` whose error says "frozen": audit's; billing's is
    // marked already.
    let dry = json(&outbox_cli(
        database,
        &[
            "inbox", "replay", "--all", "--topic", "accounts", "--error", "frozen", "--json",
        ],
    ));
    assert_eq!(
        (dry["dry_run"].as_bool(), dry["would_affect"].as_u64()),
        (Some(true), Some(1))
    );
    stdout(&outbox_cli(
        database,
        &[
            "inbox", "replay", "--all", "--topic", "accounts", "--error", "frozen", "--yes",
        ],
    ));
    assert_eq!(marked().await, [frozen, audit]);
    let neither = outbox_cli(database, &["inbox", "replay"]);
    assert!(!neither.status.success(), "an id or --all is required");

    let dry = stdout(&outbox_cli(
        database,
        &["inbox", "delete", "--all", "--consumer", "billing"],
    ));
    assert!(
        dry.starts_with("dry run: would delete 2 dead letters"),
        "{dry}"
    );
    let done = stdout(&outbox_cli(
        database,
        &["inbox", "delete", &binary.to_string(), "--yes"],
    ));
    assert_eq!(done.trim(), "deleted 1 dead letters");
    let left = json(&outbox_cli(database, &["inbox", "list", "--json"]));
    assert_eq!(left.as_array().map(Vec::len), Some(2), "{left}");
}

/// Starts `outbox relay` on the database at `url`, with a short lease so that the next
/// relay takes over a killed one's shards soon.
fn relay_process(url: &str, brokers: &str) -> Running {
    Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["relay"])
        .env("DATABASE_URL", url)
        .env("KAFKA_BROKERS", brokers)
        .env("OUTBOX_SERVICE_NAME", "cli-delayed")
        .env("OUTBOX_INTERVAL", "100ms")
        .env("OUTBOX_LEASE_TTL", "2s")
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Running::new)
        .expect("start outbox relay")
}

/// A relay process killed (SIGKILL) while events wait for their due time leaves them
/// to the relay process started after it: each goes out once, by the order rule, and
/// none before its due time (by the message's timestamp, the moment it was sent).
async fn a_relay_killed_while_events_wait_leaves_them_to_the_next(
    db: &sea_orm::DatabaseConnection,
    url: &str,
) {
    use chrono::{SubsecRound, Utc};
    use outbox_tests::kafka::{brokers, consume, create_topic, unique_topic};
    let brokers = brokers();
    let topic = unique_topic("cli-delayed");
    create_topic(&brokers, &topic, 1).await;
    let outbox = Outbox::new();
    let start = Utc::now().trunc_subsecs(3);
    let due = |seconds| start + chrono::Duration::seconds(seconds);
    let event = |n: u32| EventBuilder::new("reminder.due", "k").data(serde_json::json!({ "n": n }));
    let later = outbox
        .store(db, &event(1), &topic)
        .deliver_at(due(8))
        .await
        .expect("store");
    let sooner = outbox
        .store(db, &event(2), &topic)
        .deliver_at(due(7))
        .await
        .expect("store");
    let at_once = outbox.store(db, &event(3), &topic).await.expect("store");

    let first = relay_process(url, &brokers);
    let timeout = std::time::Duration::from_secs(30);
    let running = consume(&brokers, &topic, 1, timeout).await;
    assert_eq!(running[0].event_id(), at_once.to_string());
    drop(first); // SIGKILL
    assert!(
        Utc::now() < due(7),
        "the first relay ran too long to be killed while the events waited"
    );
    assert_eq!(outbox.scheduled_count(db).await.expect("count"), 2);

    let _second = relay_process(url, &brokers);
    let received = consume(&brokers, &topic, 3, timeout).await;
    let mut seen = std::collections::HashSet::new();
    let first_sightings: Vec<&outbox_tests::kafka::Received> = received
        .iter()
        .filter(|m| seen.insert(m.event_id().to_owned()))
        .collect();
    let ids: Vec<String> = first_sightings
        .iter()
        .map(|m| m.event_id().to_owned())
        .collect();
    assert_eq!(
        ids,
        [at_once, sooner, later].map(|id| id.to_string()),
        "the order rule: the one due sooner first"
    );
    for (message, due) in first_sightings[1..].iter().zip([due(7), due(8)]) {
        let sent = message.timestamp_ms.expect("a timestamp");
        assert!(
            sent >= due.timestamp_millis(),
            "{} sent {} ms before its due time",
            message.event_id(),
            due.timestamp_millis() - sent
        );
    }
    assert_eq!(outbox.scheduled_count(db).await.expect("count"), 0);
}

async fn a_relay_process_killed_while_events_wait(database: &ServerDatabase) {
    a_relay_killed_while_events_wait_leaves_them_to_the_next(database.db(), &database.url()).await;
}

/// The same on SQLite: a file the test and the relay processes share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_process_killed_while_events_wait_on_sqlite() {
    use sea_orm_migration::MigratorTrait;
    let file = std::env::temp_dir().join(format!("outbox-cli-{}.sqlite", Uuid::now_v7().simple()));
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let db = sea_orm::Database::connect(&url)
        .await
        .expect("open the file");
    outbox_migration::Migrator::up(&db, None)
        .await
        .expect("migrate");
    a_relay_killed_while_events_wait_leaves_them_to_the_next(&db, &url).await;
    db.close().await.ok();
    std::fs::remove_file(&file).ok();
}

outbox_tests::on_server_databases!(
    status_reports_backlog_per_topic_and_relays,
    list_and_show_events,
    scheduled_events_are_listed_and_counted_apart,
    replay_asks_for_yes_then_puts_dead_letters_back,
    purge_deletes_only_old_published_events_after_yes,
    replay_all_dead_and_purge_work_in_batches,
    a_replay_frees_the_key_and_follows_the_shard_count,
    an_interrupted_purge_keeps_what_it_did_and_says_so,
    inbox_dead_letters_are_listed_shown_replayed_and_deleted,
    a_relay_process_killed_while_events_wait,
);

/// With a databases file: `status` has a row per database (one that cannot be reached
/// says why, without its password; events waiting for their due time counted apart)
/// and totals; the other commands work on the database `--database` names, and ask
/// for one when none is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_over_a_databases_file() {
    let a = PgSchema::migrated().await;
    let b = PgSchema::migrated().await;
    let outbox = Outbox::new();
    for (db, key) in [(&a.db, "a-1"), (&a.db, "a-2"), (&b.db, "b-1")] {
        outbox
            .store(db, &EventBuilder::new("thing.happened", key), "things")
            .await
            .expect("store");
    }
    outbox
        .store(&b.db, &EventBuilder::new("thing.due", "b-2"), "things")
        .delay(std::time::Duration::from_secs(3600))
        .await
        .expect("store a delayed event");
    let file = std::env::temp_dir().join(format!("outbox-cli-{}", Uuid::now_v7().simple()));
    std::fs::write(
        &file,
        format!(
            "# tenants\na {}\nb {}\ngone postgres://relay:s3cret@127.0.0.1:1/none\n",
            a.url(),
            b.url()
        ),
    )
    .expect("write the file");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_outbox"))
            .args(args)
            .env("OUTBOX_DATABASES_FILE", &file)
            .env_remove("DATABASE_URL")
            .output()
            .expect("run outbox")
    };
    let status = json(&run(&["status", "--json", "--connect-timeout", "2s"]));
    let rows: Vec<(String, Value, Value)> = status["databases"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            (
                row["database"].as_str().unwrap_or_default().to_owned(),
                row["pending"].clone(),
                row["scheduled"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a".to_owned(), Value::from(2), Value::from(0)),
            ("b".to_owned(), Value::from(1), Value::from(1)),
            ("gone".to_owned(), Value::Null, Value::Null)
        ]
    );
    assert_eq!(
        (
            status["pending"].as_u64(),
            status["scheduled"].as_u64(),
            status["unreachable"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    let said = status["databases"][2]["error"]
        .as_str()
        .expect("why gone is not read");
    assert!(!said.is_empty() && !said.contains("s3cret"), "{said}");
    let text = stdout(&run(&["status", "--connect-timeout", "2s"]));
    assert!(
        text.contains("total (3)") && !text.contains("s3cret"),
        "{text}"
    );

    let listed = json(&run(&["list", "--json", "--database", "a"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let unnamed = stderr_of_failure(&run(&["list"]));
    assert!(unnamed.contains("--database NAME"), "{unnamed}");
    let unknown = stderr_of_failure(&run(&["list", "--database", "zeta"]));
    assert!(unknown.contains("no database \"zeta\""), "{unknown}");
    std::fs::remove_file(&file).ok();
    a.drop().await;
    b.drop().await;
}
