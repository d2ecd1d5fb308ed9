//! Events with a due time (`Store::deliver_at`, `Store::delay`, `Envelope::delay`) on
//! PostgreSQL, MariaDB and SQLite: the order rule (a waiting event holds back none of
//! its key's events; once due it goes out behind those stored before), cancelling,
//! the due time's precision, events that wait for a relay to start, and the bound.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use outbox::{
    Envelope, Error, EventBuilder, MAX_DELAY, Message, Outbox, PublishError, Publisher, Relay,
    RelayConfig,
};
use outbox_tests::eventually;
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

fn config(service: &str) -> RelayConfig {
    RelayConfig {
        interval: Duration::from_millis(200),
        min_poll_interval: Duration::from_millis(5),
        lease_ttl: Duration::from_secs(3),
        ..RelayConfig::new(service)
    }
}

/// A publisher that notes each event's id and when it went out.
#[derive(Debug, Clone, Default)]
struct Clocked {
    sent: Arc<Mutex<Vec<(Uuid, Instant)>>>,
}

impl Clocked {
    fn sent(&self) -> Vec<(Uuid, Instant)> {
        self.sent.lock().expect("sent").clone()
    }

    fn ids(&self) -> Vec<Uuid> {
        self.sent().into_iter().map(|(id, _)| id).collect()
    }

    fn when(&self, id: Uuid) -> Option<Instant> {
        self.sent()
            .into_iter()
            .find(|(sent, _)| *sent == id)
            .map(|(_, at)| at)
    }
}

impl Publisher for Clocked {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        let now = Instant::now();
        self.sent
            .lock()
            .expect("sent")
            .extend(batch.iter().map(|message| (message.id, now)));
        batch.iter().map(|_| Ok(())).collect()
    }
}

fn event(key: &str, n: u32) -> EventBuilder {
    EventBuilder::new("reminder.due", key).data(json!({ "n": n }))
}

/// Stores `event` with `delay` (none: at once) in a transaction of its own; its id
/// and when it was stored.
async fn store(
    db: &DatabaseConnection,
    outbox: &Outbox,
    event: &EventBuilder,
    delay: Option<Duration>,
) -> (Uuid, Instant) {
    let txn = db.begin().await.expect("begin");
    let stored = outbox.store(&txn, event, "reminders");
    let stored = match delay {
        Some(delay) => stored.delay(delay),
        None => stored,
    };
    let id = stored.await.expect("store");
    txn.commit().await.expect("commit");
    (id, Instant::now())
}

/// One key's events, stored in one order and due in another: those stored at once
/// go out at once, the delayed ones each at its due time, in due-time order.
async fn a_delayed_event_holds_back_none_of_its_key_and_goes_out_by_due_time(
    db: DatabaseConnection,
) {
    let outbox = Outbox::new();
    let publisher = Clocked::default();
    let relay = Relay::new(config("delayed"), db.clone(), publisher.clone())
        .expect("a valid config")
        .with_outbox(outbox.clone())
        .spawn();
    let (late, late_at) = store(
        &db,
        &outbox,
        &event("k", 1),
        Some(Duration::from_millis(1500)),
    )
    .await;
    let (soon, soon_at) = store(
        &db,
        &outbox,
        &event("k", 2),
        Some(Duration::from_millis(700)),
    )
    .await;
    let (now, _) = store(&db, &outbox, &event("k", 3), None).await;
    let (also_now, _) = store(&db, &outbox, &event("k", 4), None).await;
    eventually("all four published", Duration::from_secs(10), || async {
        publisher.ids().len() == 4
    })
    .await;
    relay.shutdown().await.expect("shutdown");
    assert_eq!(
        publisher.ids(),
        [now, also_now, soon, late],
        "the order rule"
    );
    let waited = |id, stored: Instant| publisher.when(id).expect("sent") - stored;
    assert!(
        publisher.when(also_now).expect("sent") < soon_at + Duration::from_millis(700),
        "the key's later events were held back by a waiting one"
    );
    for (id, stored, delay) in [
        (soon, soon_at, Duration::from_millis(700)),
        (late, late_at, Duration::from_millis(1500)),
    ] {
        let waited = waited(id, stored);
        // Stored just before `stored` was read: a little less than the delay.
        assert!(
            waited + Duration::from_millis(50) >= delay,
            "published {waited:?} after its store, before its delay of {delay:?}"
        );
        assert!(
            waited <= delay + Duration::from_secs(1),
            "published {waited:?} after its store, more than a second past its delay of {delay:?}"
        );
    }
}

/// A cancelled event is never published; a cancel rolled back cancels nothing; an
/// event published, or unknown, cannot be cancelled.
async fn a_cancelled_event_is_never_published(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let publisher = Clocked::default();
    let relay = Relay::new(config("cancel"), db.clone(), publisher.clone())
        .expect("a valid config")
        .with_outbox(outbox.clone())
        .spawn();
    let delay = Some(Duration::from_millis(600));
    let (cancelled, _) = store(&db, &outbox, &event("order-1", 1), delay).await;
    let (kept, _) = store(&db, &outbox, &event("order-2", 1), delay).await;
    assert_eq!(outbox.scheduled_count(&db).await.expect("count"), 2);

    let txn = db.begin().await.expect("begin");
    assert!(outbox.cancel(&txn, cancelled).await.expect("cancel"));
    txn.commit().await.expect("commit");
    let txn = db.begin().await.expect("begin");
    assert!(outbox.cancel(&txn, kept).await.expect("cancel"));
    txn.rollback().await.expect("rollback");

    eventually(
        "the kept event published",
        Duration::from_secs(10),
        || async { publisher.ids().contains(&kept) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(publisher.ids(), [kept], "the cancelled event was published");
    assert!(
        !outbox.cancel(&db, kept).await.expect("cancel"),
        "published"
    );
    assert!(
        !outbox.cancel(&db, cancelled).await.expect("cancel"),
        "gone"
    );
    assert!(
        !outbox.cancel(&db, Uuid::now_v7()).await.expect("cancel"),
        "unknown"
    );
    assert_eq!(outbox.scheduled_count(&db).await.expect("count"), 0);
    relay.shutdown().await.expect("shutdown");
}

/// Events that became due while no relay ran go out when one runs: by a pass by
/// hand, and by a relay started later; behind their key's events stored before.
async fn due_events_wait_for_a_relay(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let (first, _) = store(
        &db,
        &outbox,
        &event("k", 1),
        Some(Duration::from_millis(300)),
    )
    .await;
    let (second, _) = store(&db, &outbox, &event("k", 2), None).await;
    let (third, _) = store(
        &db,
        &outbox,
        &event("j", 1),
        Some(Duration::from_millis(300)),
    )
    .await;
    // Moved in one go: by due time, then in store order.
    let (due_last, _) = store(
        &db,
        &outbox,
        &event("m", 1),
        Some(Duration::from_millis(400)),
    )
    .await;
    let (due_first, _) = store(
        &db,
        &outbox,
        &event("m", 2),
        Some(Duration::from_millis(200)),
    )
    .await;
    let together = Utc::now() + chrono::Duration::milliseconds(300);
    let mut tied = Vec::new();
    for n in 3..5 {
        let txn = db.begin().await.expect("begin");
        let stored = outbox.store(&txn, &event("m", n), "reminders");
        tied.push(stored.deliver_at(together).await.expect("store"));
        txn.commit().await.expect("commit");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    let by_hand = Clocked::default();
    let relay = Relay::new(config("waiting"), db.clone(), by_hand.clone())
        .expect("a valid config")
        .with_outbox(outbox.clone());
    let report = relay.process_events(50).await.expect("a pass");
    assert_eq!(report.published, 7);
    let published = by_hand.ids();
    let of = |ids: &[Uuid]| -> Vec<Uuid> {
        published
            .iter()
            .filter(|id| ids.contains(id))
            .copied()
            .collect()
    };
    assert_eq!(of(&[first, second]), [second, first], "key k's order");
    assert_eq!(
        of(&[due_last, due_first, tied[0], tied[1]]),
        [due_first, tied[0], tied[1], due_last],
        "key m's order: by due time, ties in store order"
    );
    assert!(published.contains(&third));

    let (fourth, _) = store(
        &db,
        &outbox,
        &event("k", 3),
        Some(Duration::from_millis(200)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Clocked::default();
    let running = Relay::new(config("waiting"), db.clone(), started.clone())
        .expect("a valid config")
        .with_outbox(outbox.clone())
        .spawn();
    eventually(
        "published by a relay started late",
        Duration::from_secs(10),
        || async { started.ids() == [fourth] },
    )
    .await;
    running.shutdown().await.expect("shutdown");
}

/// Relays whose host's clock runs ahead move nothing before it is due. Until its
/// first lease round measures the database's clock, a relay knows only its own; the
/// move reads the database's, so clocks ten minutes fast publish nothing early. (Four
/// relays start at once: each races its first lease round, four chances to move
/// early were the relay's clock used.)
async fn a_relay_whose_clock_runs_ahead_moves_nothing_early(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let delay = Duration::from_millis(1500);
    let (id, stored) = store(&db, &outbox, &event("k", 1), Some(delay)).await;
    let publisher = Clocked::default();
    let relays: Vec<_> = (0..4)
        .map(|_| {
            Relay::new(config("ahead"), db.clone(), publisher.clone())
                .expect("a valid config")
                .with_outbox(outbox.clone())
                .with_clock_skew(chrono::Duration::minutes(10))
                .spawn()
        })
        .collect();
    eventually("published", Duration::from_secs(10), || async {
        publisher.when(id).is_some()
    })
    .await;
    for relay in relays {
        relay.shutdown().await.expect("shutdown");
    }
    let waited = publisher.when(id).expect("sent") - stored;
    assert!(
        waited + Duration::from_millis(50) >= delay,
        "published {waited:?} after its store, before its delay of {delay:?}: due by a relay's clock, not the database's"
    );
}

/// Large delayed events (a payload of 40 KB) move with small ones, in one move.
async fn large_delayed_events_move(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let mut ids = Vec::new();
    for n in 0..4 {
        let event = EventBuilder::new("reminder.due", format!("k{n}"))
            .data(json!({ "n": n, "filler": "x".repeat(if n % 2 == 0 { 40_000 } else { 10 }) }));
        ids.push(
            store(&db, &outbox, &event, Some(Duration::from_millis(300)))
                .await
                .0,
        );
    }
    let publisher = Clocked::default();
    let relay = Relay::new(config("large"), db.clone(), publisher.clone())
        .expect("a valid config")
        .with_outbox(outbox.clone())
        .spawn();
    eventually("all published", Duration::from_secs(10), || async {
        publisher.ids().len() == ids.len()
    })
    .await;
    relay.shutdown().await.expect("shutdown");
}

/// A due time too far ahead is refused, naming the event, and writes nothing: the
/// transaction goes on. One already past is now. A batch with both kinds is one
/// atomic write, on a bare connection too.
async fn due_times_are_checked_and_batches_stay_atomic(db: DatabaseConnection) {
    let outbox = Outbox::new();
    let txn = db.begin().await.expect("begin");
    let too_late = Utc::now() + chrono::Duration::days(400);
    let error = outbox
        .store(&txn, &event("k", 1), "reminders")
        .deliver_at(too_late)
        .await
        .expect_err("too far ahead");
    assert!(
        matches!(error, Error::DueTooLate { max, .. } if max == MAX_DELAY),
        "{error}"
    );
    assert!(
        error.to_string().contains("more than 366 days ahead"),
        "{error}"
    );
    let past = outbox
        .store(&txn, &event("k", 2), "reminders")
        .deliver_at(Utc::now() - chrono::Duration::hours(1))
        .await
        .expect("a past due time is now");
    txn.commit().await.expect("the transaction goes on");
    assert_eq!(outbox.scheduled_count(&db).await.expect("count"), 0);
    let pending = outbox.backlog(&db).await.expect("backlog").pending;
    assert_eq!(pending, 1, "{past} is in the outbox");

    let batch = vec![
        Envelope::new(&event("b", 1), "reminders").expect("envelope"),
        Envelope::new(&event("b", 2), "reminders")
            .expect("envelope")
            .delay(Duration::from_secs(60)),
        Envelope::new(&event("b", 3), "reminders")
            .expect("envelope")
            .delay(Duration::from_secs(120)),
    ];
    outbox.store_batch(&db, batch).await.expect("a mixed batch");
    assert_eq!(outbox.scheduled_count(&db).await.expect("count"), 2);
    assert_eq!(outbox.backlog(&db).await.expect("backlog").pending, 2);

    let refused = vec![
        Envelope::new(&event("c", 1), "reminders").expect("envelope"),
        Envelope::new(&event("c", 2), "reminders")
            .expect("envelope")
            .deliver_at(too_late),
    ];
    assert!(matches!(
        outbox.store_batch(&db, refused).await,
        Err(Error::DueTooLate { .. })
    ));
    assert_eq!(outbox.scheduled_count(&db).await.expect("count"), 2);
    assert_eq!(outbox.backlog(&db).await.expect("backlog").pending, 2);
}

/// A delayed event, once due, is completed by each completion mode as any other:
/// marked, deleted, archived.
async fn delayed_events_complete_by_every_mode(db: DatabaseConnection) {
    use outbox::Completion;
    use outbox::entity::outbox as row;
    use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

    for (n, mode) in [Completion::Mark, Completion::Delete, Completion::Archive]
        .into_iter()
        .enumerate()
    {
        let outbox = Outbox::new().with_completion(mode);
        let publisher = Clocked::default();
        let relay = Relay::new(
            config(&format!("mode-{mode}")),
            db.clone(),
            publisher.clone(),
        )
        .expect("a valid config")
        .with_outbox(outbox.clone())
        .spawn();
        let n = u32::try_from(n).unwrap_or(0);
        let (id, _) = store(
            &db,
            &outbox,
            &event("mode", n),
            Some(Duration::from_millis(200)),
        )
        .await;
        eventually("published", Duration::from_secs(10), || async {
            publisher.when(id).is_some()
        })
        .await;
        relay.shutdown().await.expect("shutdown");
        let rows = row::Entity::find()
            .filter(row::Column::Id.eq(id))
            .all(&db)
            .await
            .expect("the outbox's rows");
        match mode {
            Completion::Mark => assert!(rows.len() == 1 && rows[0].published, "{mode}: {rows:?}"),
            _ => assert!(rows.is_empty(), "{mode}: {rows:?}"),
        }
    }
    let archived = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) FROM _outbox_published",
        ))
        .await
        .expect("the archive")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("a count");
    assert_eq!(archived, 1, "the archived one");
}

/// A scheduled row that cannot be read (written by hand) stays where it is, said;
/// the events due beside it and after it go out.
async fn a_scheduled_row_that_cannot_be_read_holds_back_no_other(db: DatabaseConnection) {
    use sea_orm::ConnectionTrait;
    use sea_orm::sea_query::{Alias, Query};

    let outbox = Outbox::new();
    let broken = Uuid::now_v7();
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new("_outbox_scheduled"))
        .columns(
            [
                "id",
                "deliver_at",
                "event_key",
                "event_type",
                "destination_topic",
                "envelope",
            ]
            .map(Alias::new),
        )
        .values_panic([
            broken.into(),
            (Utc::now() - chrono::Duration::seconds(5)).into(),
            "k".into(),
            "reminder.due".into(),
            "reminders".into(),
            "not an envelope".into(),
        ]);
    db.execute(&insert).await.expect("a row written by hand");
    let (beside, _) = store(
        &db,
        &outbox,
        &event("k", 1),
        Some(Duration::from_millis(100)),
    )
    .await;
    let publisher = Clocked::default();
    let relay = Relay::new(config("broken"), db.clone(), publisher.clone())
        .expect("a valid config")
        .with_outbox(outbox.clone())
        .spawn();
    eventually(
        "the readable event published",
        Duration::from_secs(10),
        || async { publisher.ids() == [beside] },
    )
    .await;
    let (after, _) = store(
        &db,
        &outbox,
        &event("k", 2),
        Some(Duration::from_millis(100)),
    )
    .await;
    eventually(
        "a later one published too",
        Duration::from_secs(10),
        || async { publisher.ids() == [beside, after] },
    )
    .await;
    relay.shutdown().await.expect("shutdown");
    let waiting = outbox.scheduled(&db, 10).await.expect("the waiting events");
    assert_eq!(waiting.iter().map(|e| e.id).collect::<Vec<_>>(), [broken]);
}

outbox_tests::on_every_backend!(
    a_scheduled_row_that_cannot_be_read_holds_back_no_other,
    delayed_events_complete_by_every_mode,
    a_delayed_event_holds_back_none_of_its_key_and_goes_out_by_due_time,
    a_cancelled_event_is_never_published,
    due_events_wait_for_a_relay,
    a_relay_whose_clock_runs_ahead_moves_nothing_early,
    large_delayed_events_move,
    due_times_are_checked_and_batches_stay_atomic,
);

/// A store in another process (here: another pool, another outbox) that schedules an
/// event into an empty scheduled table wakes an idle relay through PostgreSQL: the
/// event goes out about at its due time, not at the relay's next `interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_another_process_wakes_an_idle_relay_for_its_due_time() {
    let pg = outbox_tests::PgSchema::migrated().await;
    let publisher = Clocked::default();
    let idle = RelayConfig {
        interval: Duration::from_secs(20),
        ..config("woken")
    };
    let relay = Relay::new(idle, pg.db.clone(), publisher.clone())
        .expect("a valid config")
        .spawn();
    // Idle: listening, and the scheduled table read once and found empty.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writers_db = sea_orm::Database::connect(pg.url()).await.expect("a pool");
    let writer = Outbox::on(&writers_db);
    let delay = Duration::from_millis(300);
    let (id, stored) = store(&writers_db, &writer, &event("w", 1), Some(delay)).await;
    eventually("published", Duration::from_secs(15), || async {
        publisher.when(id).is_some()
    })
    .await;
    let waited = publisher.when(id).expect("sent") - stored;
    assert!(
        waited <= delay + Duration::from_millis(1500),
        "published {waited:?} after its store: the relay was not woken for it"
    );
    relay.shutdown().await.expect("shutdown");
    writers_db.close().await.ok();
    pg.drop().await;
}

/// A move reads "now" once, as its statement starts, on PostgreSQL too. Its snapshot
/// is of that moment: an event stored later is not in it, however soon it is due. A
/// move that reads its table by the due-time index (a table of thousands waiting)
/// locks row by row and waits for a row another transaction holds (here, a cancel
/// not yet committed); were "now" read row by row, it would take, after the wait, an
/// event that fell due meanwhile and leave behind one of its key stored meanwhile and
/// due sooner, which would go out after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_waits_for_a_lock_moves_nothing_that_fell_due_meanwhile() {
    let pg = outbox_tests::PgSchema::migrated().await;
    let db = &pg.db;
    let outbox = Outbox::new();
    let far: Vec<Envelope> = (0..10_000)
        .map(|n| {
            Envelope::new(&event(&format!("far-{n}"), n), "reminders")
                .expect("an envelope")
                .delay(Duration::from_secs(3600))
        })
        .collect();
    let txn = db.begin().await.expect("begin");
    outbox.store_batch(&txn, far).await.expect("store");
    txn.commit().await.expect("commit");
    // As autovacuum would.
    db.execute_unprepared("ANALYZE _outbox_scheduled")
        .await
        .expect("analyze");
    let later_delay = Duration::from_millis(1500);
    let (later, _) = store(db, &outbox, &event("k", 2), Some(later_delay)).await;
    let later_due = Instant::now() + later_delay;
    let (locked, _) = store(
        db,
        &outbox,
        &event("other", 1),
        Some(Duration::from_millis(1)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cancelling = db.begin().await.expect("begin");
    assert!(outbox.cancel(&cancelling, locked).await.expect("cancel"));
    let holder = pg_number(&cancelling, "SELECT pg_backend_pid()::bigint").await;

    // The relay's move takes the due row the cancel holds, and waits.
    let publisher = Clocked::default();
    let relay = Relay::new(config("waits"), db.clone(), publisher.clone())
        .expect("a valid config")
        .with_outbox(outbox.clone())
        .spawn();
    let blocked = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE {holder} = ANY(pg_blocking_pids(pid))"
    );
    eventually(
        "the move waits for the cancel's lock",
        Duration::from_secs(10),
        || async { pg_number(db, &blocked).await > 0 },
    )
    .await;
    // Meanwhile an event of the key, due at once, commits; then the first falls due.
    let (sooner, _) = store(db, &outbox, &event("k", 1), Some(Duration::from_millis(1))).await;
    tokio::time::sleep_until((later_due + Duration::from_millis(200)).into()).await;
    cancelling.rollback().await.expect("rollback");
    eventually("all published", Duration::from_secs(10), || async {
        publisher.ids().len() == 3
    })
    .await;
    relay.shutdown().await.expect("shutdown");
    let of_k: Vec<Uuid> = publisher
        .ids()
        .into_iter()
        .filter(|id| *id != locked)
        .collect();
    assert_eq!(
        of_k,
        [sooner, later],
        "the key's events out of due order: the move read the clock after it waited"
    );
    pg.drop().await;
}

/// The one number the PostgreSQL query `sql` returns.
async fn pg_number(conn: &impl ConnectionTrait, sql: &str) -> i64 {
    conn.query_one_raw(sea_orm::Statement::from_string(
        sea_orm::DbBackend::Postgres,
        sql,
    ))
    .await
    .expect(sql)
    .expect("a row")
    .try_get_by_index(0)
    .expect("a number")
}
