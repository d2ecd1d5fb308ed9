//! The statements against the migrated schema on SQLite: each runs, and each that
//! should read a partial index does. SQLite uses a partial index only when the query
//! states each of the index's terms, so a predicate written twice that drifted apart
//! shows here as a full scan.

use chrono::Utc;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

use super::{Dialect, FailureUpdate, LeaseKey, Published, Unpublished};
use crate::completion::Completion;
use crate::tables::Tables;

async fn migrated() -> DatabaseConnection {
    let db = Database::connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    outbox_migration::Migrator::up(&db, None)
        .await
        .expect("the migrations run");
    db
}

/// The query plan's lines, after running the statement itself once (so a statement
/// the database rejects fails here, not only its plan).
async fn plan(db: &DatabaseConnection, statement: Statement) -> String {
    db.execute_raw(statement.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", statement.sql));
    let explain = Statement {
        sql: format!("EXPLAIN QUERY PLAN {}", statement.sql),
        ..statement
    };
    let rows = db.query_all_raw(explain).await.expect("EXPLAIN runs");
    rows.iter()
        .map(|row| row.try_get::<String>("", "detail").expect("a plan line"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `statement`, a single-table SELECT, told to read `index`: SQLite refuses it
/// ("no query solution") when the WHERE clause does not imply the index's predicate.
fn indexed_by(statement: Statement, index: &str) -> Statement {
    let from = "FROM \"_outbox\"";
    assert_eq!(statement.sql.matches(from).count(), 1, "{}", statement.sql);
    Statement {
        sql: statement
            .sql
            .replace(from, &format!("{from} INDEXED BY \"idx__outbox_{index}\"")),
        ..statement
    }
}

#[track_caller]
fn assert_uses(plan: &str, indexes: &[&str]) {
    for index in indexes {
        assert!(
            plan.contains(&format!("INDEX idx__outbox_{index}")),
            "expected idx__outbox_{index} in the plan:\n{plan}"
        );
    }
}

#[tokio::test]
async fn the_relay_statements_read_their_partial_indexes() {
    let db = migrated().await;
    let d = Dialect::Sqlite;
    let t = Tables::default();
    let now = Utc::now();

    let claim = plan(&db, d.claim(t.outbox(), 3, now, 100)).await;
    assert_uses(&claim, &["claim", "retry", "parked"]);
    let ready = plan(&db, d.shards_with_work(t.outbox(), &[0, 1, 2], now)).await;
    assert_uses(&ready, &["claim"]);
    let park = plan(&db, d.park_behind(t.outbox(), 3, "k", 7)).await;
    assert_uses(&park, &["claim"]);
    let unpark = plan(&db, d.unpark(t.outbox(), 3, &["k", "l"])).await;
    assert_uses(&unpark, &["parked"]);
    let orphans = plan(&db, d.orphaned_parked_keys(t.outbox())).await;
    assert_uses(&orphans, &["parked", "retry"]);
}

#[tokio::test]
async fn the_management_statements_read_their_partial_indexes() {
    let db = migrated().await;
    let d = Dialect::Sqlite;
    let t = Tables::default();
    let now = Utc::now();

    // On an empty table the planner walks the primary key for `ORDER BY seq LIMIT`;
    // what matters is that the index can serve it.
    let dead = d.events(t.outbox(), Unpublished::DeadLettered, 10);
    let dead = plan(&db, indexed_by(dead, "dead")).await;
    assert_uses(&dead, &["dead"]);
    let cleanup = plan(&db, d.cleanup(t.outbox(), now, 1000)).await;
    assert_uses(&cleanup, &["published_at"]);
    let expired = plan(&db, d.count_published_before(t.outbox(), now)).await;
    assert_uses(&expired, &["published_at"]);
    let archive_cleanup = plan(&db, d.cleanup(t.archive(), now, 1000)).await;
    assert_uses(&archive_cleanup, &["published_published_at"]);
    let from_shard = plan(&db, d.count_pending_from_shard(t.outbox(), 4)).await;
    assert_uses(&from_shard, &["claim"]);
    let backlog = plan(&db, d.backlog(t.outbox(), 4)).await;
    assert_uses(&backlog, &["claim", "parked", "dead"]);
    let topics = plan(&db, d.topic_backlog(t.outbox())).await;
    assert_uses(&topics, &["claim", "parked", "dead"]);
}

/// The statements without a plan to check still run as built.
#[tokio::test]
async fn every_other_statement_runs() {
    let db = migrated().await;
    let d = Dialect::Sqlite;
    let t = Tables::default();
    let now = Utc::now();
    let id = Uuid::now_v7();
    let lease = LeaseKey {
        service: "svc",
        shard: 1,
        owner: "relay-a",
    };
    let failure = FailureUpdate {
        attempts: 1,
        error: "refused",
        now,
        next_attempt_at: Some(now),
        dead_lettered_at: None,
    };
    let mut statements = d.acquire_lease(&t, &lease, now, now).0;
    statements.extend(d.renew_leases(&t, "svc", "relay-a", &[1, 2], now, now).0);
    statements.extend([
        d.fence(&t, &lease, 1),
        d.record_failure(t.outbox(), id, &failure),
        d.failure_state(t.outbox(), id),
        d.release_lease(&t, &lease, now, now),
        d.live_leases(&t, "svc", now),
        d.heartbeat(&t, "svc", "relay-a", now, false),
        d.live_services(&t, "relay-a", now),
        d.relays(&t, now),
        d.leave(&t, "svc", Some("relay-a"), now),
        d.leave(&t, "svc", None, now),
        d.upsert_offset(t.offset(), "svc", id, now),
        d.events(t.outbox(), Unpublished::Pending, u64::MAX),
        d.event(t.outbox(), id),
        d.dead_letter_keys(t.outbox(), Some(id), 1),
        d.dead_letter_keys(t.outbox(), None, 10),
        d.replay(t.outbox(), &[1, 2], 3, now),
        d.event(t.archive(), id),
        d.count_published_before(t.archive(), now),
    ]);
    for completion in [Completion::Mark, Completion::Delete, Completion::Archive] {
        let fenced = d.complete(
            &t,
            completion,
            Published::Seqs(&[1, 2]),
            now,
            Some((&lease, 1)),
        );
        let by_id = d.complete(&t, completion, Published::Ids(&[id]), now, None);
        statements.extend(fenced.0.into_iter().chain(by_id.0));
    }
    for statement in statements {
        db.execute_raw(statement.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}: {}", statement.sql));
    }
}

/// MySQL gets backticks and one `?` per occurrence, the values repeated in order.
#[test]
fn hand_written_statements_are_respelled_for_mysql() {
    use sea_orm::Value;
    let (sql, values) = super::respell_for_mysql(
        r#"SELECT "a" FROM "t" WHERE "b" = $2 AND "c" BETWEEN $1 AND $1 LIMIT $10"#,
        (1..=10).map(|n| Value::Int(Some(n))).collect(),
    );
    assert_eq!(
        sql,
        "SELECT `a` FROM `t` WHERE `b` = ? AND `c` BETWEEN ? AND ? LIMIT ?"
    );
    let ints: Vec<Value> = [2, 1, 1, 10].map(|n| Value::Int(Some(n))).into();
    assert_eq!(values, ints);
}

/// A migrated MySQL database of the test's own (`MYSQL_URL`, or the machine's
/// MariaDB); drop it with [`MySqlScratch::drop`].
struct MySqlScratch {
    admin: DatabaseConnection,
    db: DatabaseConnection,
    name: String,
}

impl MySqlScratch {
    async fn migrated() -> Self {
        let url = std::env::var("MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        let admin = Database::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("MySQL at {url}: {e}; start it or set MYSQL_URL"));
        let name = format!("unit_{}", Uuid::now_v7().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
            .await
            .expect("create a database");
        let (server, _) = url.rsplit_once('/').expect("a database in MYSQL_URL");
        let db = Database::connect(format!("{server}/{name}"))
            .await
            .expect("connect");
        outbox_migration::Migrator::up(&db, None)
            .await
            .expect("the migrations run");
        MySqlScratch { admin, db, name }
    }

    async fn drop(self) {
        self.db.close().await.expect("close");
        self.admin
            .execute_unprepared(&format!("DROP DATABASE `{}`", self.name))
            .await
            .expect("drop the database");
    }
}

/// On MySQL (no partial indexes) the claim reads one shard's claimable events in
/// `seq` order from the claim index, without sorting them, and so does the backlog's
/// probe of each shard's oldest pending event; the backlog's counts read the pending
/// events, not the published history: 2,000 events over 4 shards, half of them
/// published, statistics fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_claim_and_backlog_read_their_index_unsorted_past_no_history() {
    use crate::{Envelope, EventBuilder, Outbox};

    let scratch = MySqlScratch::migrated().await;
    let db = &scratch.db;
    let outbox = Outbox::new().with_shards(std::num::NonZeroU16::new(4).expect("4 shards"));
    let envelopes = (0..2000).map(|n| {
        Envelope::new(&EventBuilder::new("n.added", format!("k-{n}")), "numbers").expect("envelope")
    });
    let ids = outbox.store_batch(db, envelopes).await.expect("store");
    outbox
        .mark_events_as_published(db, &ids[..1000])
        .await
        .expect("publish half");
    db.execute_unprepared("ANALYZE TABLE _outbox")
        .await
        .expect("analyze");

    let claim = Dialect::MySql.claim(Tables::default().outbox(), 1, Utc::now(), 100);
    // Sorting the claimed rows themselves (at most the batch) is fine; sorting the
    // shard's pending events is not.
    assert_reads_claim_index_unsorted(&plan_lines(db, claim).await, "c");

    // The backlog: its oldest-pending probe, per shard, reads the same index unsorted,
    // and its counts of pending events read no published history.
    let backlog = Dialect::MySql.backlog(Tables::default().outbox(), 4);
    assert_reads_claim_index_unsorted(&plan_lines(db, backlog.clone()).await, "o");
    // Rows the backlog reads, by the session's handler counters (a transaction keeps
    // one connection): about the 1,000 pending events, not the 1,000 published ones too.
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared("FLUSH STATUS").await.expect("flush");
    txn.query_all_raw(backlog.clone())
        .await
        .expect("backlog runs");
    let read: i64 = txn
        .query_all_raw(Statement::from_string(
            DbBackend::MySql,
            "SHOW SESSION STATUS LIKE 'Handler_read%'",
        ))
        .await
        .expect("status")
        .iter()
        .map(|row| {
            let value: String = row.try_get_by_index(1).expect("a value");
            value.parse::<i64>().expect("a count")
        })
        .sum();
    txn.commit().await.expect("commit");
    assert!(read < 1500, "the backlog read {read} rows");
    // The figures themselves: 1,000 pending (half of them parked), none dead.
    db.execute_unprepared(
        "UPDATE _outbox SET parked = TRUE WHERE NOT published AND MOD(seq, 2) = 0",
    )
    .await
    .expect("park some");
    let row = db
        .query_one_raw(backlog)
        .await
        .expect("backlog runs")
        .expect("a row");
    assert_eq!(row.try_get::<i64>("", "pending").expect("pending"), 1000);
    assert_eq!(row.try_get::<i64>("", "dead").expect("dead"), 0);
    scratch.drop().await;
}

/// The plan's line for `table` (an alias) reads the claim index without sorting.
#[track_caller]
fn assert_reads_claim_index_unsorted(lines: &[(String, String, String)], table: &str) {
    let (_, key, extra) = lines
        .iter()
        .find(|(name, _, _)| name == table)
        .unwrap_or_else(|| panic!("no plan line for {table}: {lines:?}"));
    assert_eq!(key, "idx__outbox_claim", "{lines:?}");
    assert!(!extra.contains("filesort"), "{lines:?}");
}

/// MySQL's `EXPLAIN` of `statement`: per line, the table, the key and the extra notes.
async fn plan_lines(
    db: &DatabaseConnection,
    statement: Statement,
) -> Vec<(String, String, String)> {
    let explain = Statement {
        sql: format!("EXPLAIN {}", statement.sql),
        ..statement
    };
    let rows = db.query_all_raw(explain).await.expect("EXPLAIN runs");
    rows.iter()
        .map(|row| {
            let text = |column: &str| {
                row.try_get::<Option<String>>("", column)
                    .expect("a plan column")
                    .unwrap_or_default()
            };
            (text("table"), text("key"), text("Extra"))
        })
        .collect()
}

/// On MySQL the relay's transactions run at READ COMMITTED: an unpark that scans the
/// whole (small) table while another shard's write-back transaction is open neither
/// waits for it nor deadlocks with it. Under REPEATABLE READ the scan waits for every
/// row the other transaction locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_write_backs_of_two_shards_do_not_wait_for_each_other() {
    use crate::{Envelope, EventBuilder, Outbox};

    let scratch = MySqlScratch::migrated().await;
    let db = &scratch.db;
    let d = Dialect::MySql;
    let t = Tables::default();
    let outbox = Outbox::new().with_shards(std::num::NonZeroU16::new(2).expect("2 shards"));
    let envelopes = (0..8).map(|n| {
        Envelope::new(&EventBuilder::new("n.added", format!("k-{n}")), "numbers").expect("envelope")
    });
    outbox.store_batch(db, envelopes).await.expect("store");
    db.execute_unprepared("UPDATE _outbox SET parked = TRUE")
        .await
        .expect("park every event");
    let pending = outbox.pending(db, 8).await.expect("pending");
    let keys_of = |shard: i32| -> Vec<&str> {
        pending
            .iter()
            .filter(|row| row.shard == shard)
            .map(|row| row.aggregate_id.as_str())
            .collect()
    };
    let (first, second) = (keys_of(0), keys_of(1));
    assert!(
        !first.is_empty() && !second.is_empty(),
        "both shards hold events"
    );

    let open = d.begin(db).await.expect("begin");
    open.execute_raw(d.unpark(t.outbox(), 0, &first))
        .await
        .expect("unpark shard 0");
    let other = async {
        let txn = d.begin(db).await?;
        let unparked = txn.execute_raw(d.unpark(t.outbox(), 1, &second)).await?;
        txn.commit().await?;
        Ok::<u64, crate::Error>(unparked.rows_affected())
    };
    let unparked = tokio::time::timeout(std::time::Duration::from_secs(5), other)
        .await
        .expect("the second shard's write-back does not wait for the first's")
        .expect("unpark shard 1");
    assert_eq!(unparked, u64::try_from(second.len()).expect("a count"));
    open.commit().await.expect("commit");
    scratch.drop().await;
}

/// The claim's columns, read by position into [`ClaimedRow`], come back as stored:
/// every field, each in its own place, the four flags in four different patterns, no
/// two flags alike in all of them (a claim whose column order drifted from
/// `ClaimedRow`'s reads the wrong column or fails here). PostgreSQL runs the same `claim.sql` as SQLite.
async fn assert_claims_every_column(db: &DatabaseConnection, dialect: Dialect) {
    use chrono::TimeDelta;
    use sea_orm::FromQueryResult;
    use sea_orm::sea_query::{Expr, ExprTrait, Query, SimpleExpr};

    use crate::entity::outbox::Column;
    use crate::event::EventBuilder;
    use crate::wire::ClaimedRow;
    use crate::{Envelope, Outbox};

    let outbox = Outbox::new().with_shards(std::num::NonZeroU16::MIN);
    let envelope = |key: &str| {
        let event = EventBuilder::new("order.placed", "order-7")
            .version("v3")
            .data(serde_json::json!({ "cents": 990 }));
        Envelope::new(&event, "orders")
            .expect("an envelope")
            .partition_key(key)
            .user_id("user-5")
            .trace_id("trace-9")
            .header("tenant", "acme")
    };
    // retried (due again), behind it, parked, behind the parked one, waiting, behind
    // the waiting one
    let keys = [
        "retried", "retried", "parked", "parked", "waiting", "waiting",
    ];
    let stored_at = Utc::now();
    let forgotten = EventBuilder::new("order.placed", "order-7")
        .version("v3")
        .tombstone();
    let tombstone = Envelope::new(&forgotten, "orders")
        .expect("a tombstone")
        .partition_key("forgotten");
    let ids = outbox
        .store_batch(db, keys.map(envelope).into_iter().chain([tombstone]))
        .await
        .expect("stored");
    let now = Utc::now();
    let set = |id: Uuid, values: Vec<(Column, SimpleExpr)>| {
        let update = Query::update()
            .table(super::table(outbox.tables().outbox()))
            .values(values)
            .and_where(Expr::col(Column::Id).eq(id))
            .to_owned();
        db.execute_raw(db.get_database_backend().build(&update))
    };
    let past = now - TimeDelta::hours(1);
    let future = now + TimeDelta::hours(1);
    let changes = [
        (
            ids[0],
            "a retried event",
            vec![
                (Column::Attempts, 2.into()),
                (Column::NextAttemptAt, past.into()),
            ],
        ),
        (
            ids[2],
            "a parked event",
            vec![(Column::Parked, true.into())],
        ),
        (
            ids[4],
            "an event waiting for its retry",
            vec![
                (Column::Attempts, 1.into()),
                (Column::NextAttemptAt, future.into()),
            ],
        ),
    ];
    for (id, what, values) in changes {
        set(id, values).await.expect(what);
    }

    let claim = dialect.claim(outbox.tables().outbox(), 0, Utc::now(), 10);
    let rows = ClaimedRow::find_by_statement(claim)
        .all(db)
        .await
        .expect("the claim decodes");
    let claimed: Vec<(Uuid, &str, i32, [bool; 4])> = rows
        .iter()
        .map(|r| {
            let flags = [r.retried, r.waiting, r.failing, r.after_parked];
            (r.id, r.key.as_str(), r.attempts, flags)
        })
        .collect();
    assert_eq!(
        claimed,
        [
            // Its own failure does not count: only earlier events hold one back.
            (ids[0], "retried", 2, [true, false, false, false]),
            (ids[1], "retried", 0, [false, false, true, false]),
            (ids[3], "parked", 0, [false, false, false, true]),
            (ids[5], "waiting", 0, [false, true, true, false]),
            (ids[6], "forgotten", 0, [false; 4]),
        ],
    );
    let (tombstones, rows): (Vec<_>, Vec<_>) = rows.iter().partition(|row| row.tombstone);
    assert_eq!(tombstones.len(), 1, "only the tombstone is one");
    assert_eq!(tombstones[0].payload, "null", "stored without data");
    for row in &rows {
        assert!(row.seq > 0, "{row:?}");
        assert_eq!(
            (
                row.event_type.as_str(),
                row.event_version.as_str(),
                row.aggregate_id.as_str(),
                row.destination_topic.as_str(),
            ),
            ("order.placed", "v3", "order-7", "orders"),
        );
        let payload: serde_json::Value = serde_json::from_str(&row.payload).expect("JSON");
        assert_eq!(payload, serde_json::json!({ "cents": 990 }));
        let headers: serde_json::Value =
            serde_json::from_str(row.headers.as_deref().expect("headers")).expect("JSON");
        assert_eq!(headers, serde_json::json!({ "tenant": "acme" }));
        assert_eq!(
            (row.trace_id.as_deref(), row.user_id.as_deref()),
            (Some("trace-9"), Some("user-5"))
        );
        let age = (row.created_at - stored_at).num_seconds().abs();
        assert!(
            age < 60,
            "created_at {} is the store's time",
            row.created_at
        );
    }
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq), "{rows:?}");
}

#[tokio::test]
async fn the_claim_reads_every_column_sqlite() {
    assert_claims_every_column(&migrated().await, Dialect::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_reads_every_column_mysql() {
    let scratch = MySqlScratch::migrated().await;
    assert_claims_every_column(&scratch.db, Dialect::MySql).await;
    scratch.drop().await;
}
