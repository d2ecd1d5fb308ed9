//! Cross-process wake-ups on PostgreSQL: a writer in another OS process
//! (`outbox-test-writer`) stores events; the relay here, idle with its next poll
//! seconds away, must publish them at once when it listens, and still publish them
//! (by polling) when it does not.
//!
//! The relay polls after 10 ms, 20 ms, 40 ms... up to a 60 s interval when it finds
//! nothing; 6 s after its start its next poll is about 4 s away, which is the window
//! these tests store in.

use std::time::Duration;

use outbox::{EventBuilder, MemoryPublisher, Outbox, Relay, RelayConfig, RelayHandle, Tables};
use outbox_tests::pgbouncer::Pooler;
use outbox_tests::{PgSchema, counter, eventually, until_holding};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

fn config(listen: bool) -> RelayConfig {
    RelayConfig {
        interval: Duration::from_secs(60),
        min_poll_interval: Duration::from_millis(10),
        listen,
        ..RelayConfig::new("wake")
    }
}

/// A relay on `pg` that owns every shard and has been idle for 6 s.
async fn idle_relay(pg: &PgSchema, listen: bool) -> RelayHandle {
    let relay = Relay::new(config(listen), pg.db.clone(), MemoryPublisher::new())
        .expect("valid relay config")
        .spawn();
    until_holding(&relay, 16, "the relay", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    relay
}

/// Stores `count` events from another process and waits for it to exit.
fn write(pg: &PgSchema, count: usize) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_outbox-test-writer"))
        .args(["wake-topic", &count.to_string()])
        .env("DATABASE_URL", pg.url())
        .status()
        .expect("run outbox-test-writer");
    assert!(status.success(), "the writer failed");
}

/// Stores `count` events (keys `key-0`...) here, through an outbox that wakes no relay.
async fn store_silently(pg: &PgSchema, count: usize) {
    let silent = Outbox::new();
    for n in 0..count {
        let event = EventBuilder::new("thing.happened", format!("key-{n}"));
        silent
            .store(&pg.db, &event, "wake-topic")
            .await
            .expect("store");
    }
}

/// The process ids of the relay's listening connections.
async fn listeners(db: &DatabaseConnection, relay: &RelayHandle) -> Vec<i32> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            [format!("outbox listen {}", relay.relay_id()).into()],
        ))
        .await
        .expect("pg_stat_activity");
    rows.iter()
        .map(|row| row.try_get::<i32>("", "pid").expect("pid"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_another_process_wakes_an_idle_relay_at_once() {
    let pg = PgSchema::migrated().await;
    let relay = idle_relay(&pg, true).await;
    write(&pg, 1);
    let stored = tokio::time::Instant::now();
    eventually(
        "published without waiting for a poll",
        Duration::from_secs(2),
        || async { relay.stats().published >= 1 },
    )
    .await;
    eprintln!("published {:?} after the writer exited", stored.elapsed());
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}

/// `Outbox::on(&db)` wakes relays on the default tables' channel; given tables of its
/// own afterwards, it wakes the relays of those tables instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_on_the_database_with_tables_of_its_own_wakes_their_relays() {
    let pg = PgSchema::migrated().await;
    let tables = own_tables(&pg, "woken_outbox").await;
    let relay = idle_relay_of(&pg, &tables).await;

    let writer = Outbox::on(&pg.db).with_tables(tables);
    let event = EventBuilder::new("thing.happened", "key-0");
    writer
        .store(&pg.db, &event, "wake-topic")
        .await
        .expect("store");
    eventually(
        "published without waiting for a poll",
        Duration::from_secs(2),
        || async { relay.stats().published >= 1 },
    )
    .await;
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_listen_finds_events_of_other_processes_by_polling() {
    let pg = PgSchema::migrated().await;
    let relay = idle_relay(&pg, false).await;
    write(&pg, 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        relay.stats().published,
        0,
        "nothing wakes a relay that does not listen: it waits for its poll"
    );
    eventually(
        "all published by the next poll",
        Duration::from_secs(15),
        || async { relay.stats().published >= 5 },
    )
    .await;
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}

/// A listening relay on `tables` in `pg` that owns every shard and has been idle for
/// 6 s. Its outbox is its own, not a clone of a writer's: only a NOTIFY wakes it.
async fn idle_relay_of(pg: &PgSchema, tables: &Tables) -> RelayHandle {
    let relay = Relay::new(config(true), pg.db.clone(), MemoryPublisher::new())
        .expect("valid relay config")
        .with_outbox(Outbox::new().with_tables(tables.clone()))
        .spawn();
    until_holding(&relay, 16, "the relay", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    relay
}

/// Migrates a set of tables of its own (base name `base`) in `pg`'s schema. Wake-ups
/// go to a channel named after the outbox table, for the whole database: tables of
/// its own keep a test's relay from hearing other tests' writers.
async fn own_tables(pg: &PgSchema, base: &str) -> Tables {
    let tables = Tables::with_base(base).expect("valid base");
    let manager = sea_orm_migration::SchemaManager::new(&pg.db);
    for migration in outbox_migration::migrations_for(&tables) {
        sea_orm_migration::MigrationTrait::up(&*migration, &manager)
            .await
            .expect("create the tables");
    }
    tables
}

/// A listening relay that finds events by polling, long after they were stored,
/// counts them (and says once that the writers should wake it); events a wake-up
/// announced are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_counts_the_events_it_found_by_polling_late() {
    let found_by_poll = counter::count(outbox::relay_metric_names::FOUND_BY_POLL);
    let pg = PgSchema::migrated().await;
    let tables = own_tables(&pg, "found_by_poll_outbox").await;
    let relay = idle_relay_of(&pg, &tables).await;

    let waking = Outbox::on(&pg.db).with_tables(tables.clone());
    let silent = Outbox::new().with_tables(tables);
    let store = |outbox: &Outbox, n: usize| {
        let event = EventBuilder::new("thing.happened", format!("key-{n}"));
        let (outbox, db) = (outbox.clone(), pg.db.clone());
        async move {
            outbox
                .store(&db, &event, "wake-topic")
                .await
                .expect("store");
        }
    };
    for n in 0..3 {
        store(&waking, n).await;
    }
    eventually("published at once", Duration::from_secs(2), || async {
        relay.stats().published >= 3
    })
    .await;
    assert_eq!(
        counter::read(&found_by_poll),
        0,
        "announced events are not counted"
    );
    // Idle again, its next poll seconds away (the quick polls after a wake-up would
    // find these within milliseconds: not late).
    tokio::time::sleep(Duration::from_secs(6)).await;
    for n in 0..5 {
        store(&silent, n).await;
    }
    eventually(
        "found by the next poll",
        Duration::from_secs(15),
        || async { relay.stats().published >= 8 },
    )
    .await;
    assert_eq!(counter::read(&found_by_poll), 5);
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listening_connection_comes_back_and_misses_nothing() {
    let pg = PgSchema::migrated().await;
    let relay = idle_relay(&pg, true).await;
    let before = listeners(&pg.db, &relay).await;
    assert_eq!(before.len(), 1, "one listening connection");
    pg.db
        .execute_raw(Statement::from_sql_and_values(
            pg.db.get_database_backend(),
            "SELECT pg_terminate_backend($1)",
            [before[0].into()],
        ))
        .await
        .expect("terminate");
    // Stored while nobody listens, by a writer that notifies no one: only the poll
    // the relay makes once it listens again can find these before its next poll.
    store_silently(&pg, 3).await;
    eventually(
        "published long before the next poll",
        Duration::from_secs(3),
        || async { relay.stats().published >= 3 },
    )
    .await;
    // Listening again, on a new connection. (Not asserted at the moment of the
    // publication: the wake-up channel is named after the table, not the schema, so
    // a store of another test in another schema may have woken this relay just
    // before its connection was cut, and its quick polls then find the events before
    // it listens again.)
    eventually("listening again", Duration::from_secs(3), || async {
        let after = listeners(&pg.db, &relay).await;
        after.len() == 1 && after != before
    })
    .await;
    // And notifications arrive again.
    write(&pg, 2);
    eventually("woken again", Duration::from_secs(2), || async {
        relay.stats().published >= 5
    })
    .await;
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}

/// A relay of the `wake` service whose leases last `lease_ttl` (a round every third of
/// it), over its own outbox: it hears other relays only through PostgreSQL.
fn relay_with_leases(pg: &PgSchema, lease_ttl: Duration) -> RelayHandle {
    let config = RelayConfig {
        lease_ttl,
        ..config(true)
    };
    Relay::new(config, pg.db.clone(), MemoryPublisher::new())
        .expect("valid relay config")
        .spawn()
}

/// Shards a relay gives up (to a newcomer at its round, all of them on shutdown) are
/// taken by the others at once, not at their next lease round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_a_relay_gives_up_are_taken_at_once_not_at_the_next_round() {
    let pg = PgSchema::migrated().await;
    // A round every 10 s.
    let first = relay_with_leases(&pg, Duration::from_secs(30));
    // Owns every shard and listens (a relay runs a round when it starts listening:
    // that one too is over before the second relay starts).
    eventually(
        "the first relay owns every shard and listens",
        Duration::from_secs(10),
        || async { first.stats().owned_shards == 16 && listeners(&pg.db, &first).await.len() == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A round every 30 s: its first finds nothing free, its next is 30 s away.
    // (Unless a relay of another test, in another schema, gives shards up meanwhile:
    // the channel is named after the table, so that brings this relay's round
    // forward too; it can make this test pass early, never fail.)
    let second = relay_with_leases(&pg, Duration::from_secs(90));
    // The first relay's next round sees the second and gives up half.
    until_holding(&first, 8, "the first relay", Duration::from_secs(15)).await;
    until_holding(
        &second,
        8,
        "the second relay, at once,",
        Duration::from_secs(2),
    )
    .await;

    first.shutdown().await.expect("shutdown");
    // Stored by a writer that notifies no one: the second relay finds them by the
    // quick polls that follow taking shards, in the first relay's shards only if it
    // took them.
    store_silently(&pg, 16).await;
    eventually(
        "the second relay takes every shard and publishes what was stored",
        Duration::from_secs(5),
        || async { second.stats().owned_shards == 16 && second.stats().published >= 16 },
    )
    .await;
    second.shutdown().await.expect("shutdown");
    pg.drop().await;
}

/// A relay on a pool of one connection listens on a connection of its own and still
/// has the pool's for its work: it publishes. (The listener used to take the pool's
/// only connection for good, and the relay could claim nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_pool_of_one_listens_and_publishes() {
    let pg = PgSchema::migrated().await;
    let mut options = sea_orm::ConnectOptions::new(pg.url());
    options
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .sqlx_logging(false);
    let db = sea_orm::Database::connect(options).await.expect("connect");
    let publisher = MemoryPublisher::new();
    let relay = Relay::new(
        RelayConfig {
            interval: Duration::from_millis(200),
            ..config(true)
        },
        db,
        publisher.clone(),
    )
    .expect("valid relay config")
    .spawn();
    eventually("the relay listens", Duration::from_secs(10), || async {
        !listeners(&pg.db, &relay).await.is_empty()
    })
    .await;
    store_silently(&pg, 5).await;
    eventually(
        "the relay publishes on the pool's one connection",
        Duration::from_secs(10),
        || async { publisher.messages().len() == 5 },
    )
    .await;
    assert!(relay.healthcheck().is_ok(), "{:?}", relay.healthcheck());
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}

/// Behind PgBouncer in transaction mode, `LISTEN` succeeds and hears nothing: the
/// relay's own notification tells it, and the relay says so (and counts it); a relay
/// listening on a direct connection hears its own and says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_listening_through_a_pooler_in_transaction_mode_says_it_hears_nothing() {
    let unheard = counter::count(outbox::relay_metric_names::LISTEN_UNHEARD);
    let pg = PgSchema::migrated().await;
    let direct = Relay::new(config(true), pg.db.clone(), MemoryPublisher::new())
        .expect("valid relay config")
        .spawn();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        counter::read(&unheard),
        0,
        "a direct listening connection hears the relay's notification"
    );
    direct.shutdown().await.expect("shutdown");

    let pooler = Pooler::transaction_mode(&outbox_tests::database_url()).await;
    let pooled = RelayConfig {
        listen_url: Some(pooler.url.as_str().into()),
        ..config(true)
    };
    let relay = Relay::new(pooled, pg.db.clone(), MemoryPublisher::new())
        .expect("valid relay config")
        .spawn();
    eventually(
        "the relay says its listening connection hears nothing",
        Duration::from_secs(15),
        || async { counter::read(&unheard) == 1 },
    )
    .await;
    relay.shutdown().await.expect("shutdown");
    pg.drop().await;
}
