//! One relay fleet for many databases (`outbox::fleet`), on the real servers and
//! broker: PostgreSQL schemas and a database of its own, a MariaDB database and a
//! SQLite file, listed in a databases file that changes while the fleet runs; one
//! database taken away and brought back; three processes of a fleet sharing nine
//! databases, one of them killed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outbox::fleet::{DatabaseState, FileSource, Fleet, FleetConfig, FleetHandle};
use outbox::{EventBuilder, KafkaConfig, KafkaPublisher, Outbox, RelayConfig};
use outbox_migration::Migrator;
use outbox_tests::crash::Doomed;
use outbox_tests::kafka::{brokers, consume_topics, create_topic, unique_topic, warmed_up};
use outbox_tests::pg_database::PgDatabase;
use outbox_tests::{MySqlDatabase, PgSchema, database_url, eventually};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, TransactionTrait};
use sea_orm_migration::MigratorTrait;
use serde_json::{Value, json};
use uuid::Uuid;

/// The databases file at `path`, listing `entries` (`NAME URL`).
fn write_file(path: &Path, entries: &[(&str, String)]) {
    let mut text = "# the tenants of the fleet test\n".to_owned();
    for (name, url) in entries {
        text.push_str(&format!("{name}  {url}\n"));
    }
    std::fs::write(path, text).expect("write the databases file");
}

/// A fleet over the databases file at `path`, publishing to the test broker.
async fn fleet(path: &Path, service: &str) -> FleetHandle {
    fleet_with(path, service, None).await
}

/// As [`fleet`], with pools of `connections`.
async fn fleet_with(path: &Path, service: &str, connections: Option<u32>) -> FleetHandle {
    let config = RelayConfig {
        interval: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(3),
        ..RelayConfig::new(service)
    };
    let kafka = KafkaConfig::new(&brokers()).message_timeout(Duration::from_secs(5));
    let publisher = warmed_up(
        KafkaPublisher::from_config(kafka).expect("producer"),
        &brokers(),
    )
    .await;
    let mut settings = FleetConfig::default();
    settings.refresh = Duration::from_millis(200);
    settings.connect_timeout = Duration::from_secs(2);
    if let Some(connections) = connections {
        settings.connections = connections;
    }
    Fleet::new(config, FileSource::new(path), publisher)
        .expect("a valid relay config")
        .with_config(settings)
        .spawn()
}

/// Stores `count` events of tenant `tenant` to `topic`, over keys `tenant-0..2`, each
/// numbered in its payload from `from`.
async fn store(db: &DatabaseConnection, tenant: &str, topic: &str, from: u32, count: u32) {
    let outbox = Outbox::on(db);
    for n in from..from + count {
        let key = format!("{tenant}-{}", n % 3);
        let event = EventBuilder::new("fleet.tick", &key).data(json!({ "tenant": tenant, "n": n }));
        let txn = db.begin().await.expect("begin");
        outbox.store(&txn, &event, topic).await.expect("store");
        txn.commit().await.expect("commit");
    }
}

/// Every message of `topic` once `expected` have arrived: checks that each key's
/// events came in the order they were stored, and counts them per tenant.
async fn published(topic: &str, expected: usize) -> BTreeMap<String, usize> {
    let messages = consume_topics(&brokers(), &[topic], expected, Duration::from_secs(30)).await;
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut per_tenant = BTreeMap::new();
    let mut by_place: Vec<_> = messages.iter().collect();
    by_place.sort_by_key(|m| (m.partition, m.offset));
    for message in by_place {
        let payload: Value = serde_json::from_str(&message.payload).expect("JSON");
        let n = payload["n"].as_i64().expect("n");
        let before = last.insert(message.key.clone(), n);
        assert!(
            before < Some(n),
            "key {} out of order: {before:?} then {n}",
            message.key
        );
        let tenant = payload["tenant"].as_str().expect("tenant").to_owned();
        *per_tenant.entry(tenant).or_insert(0) += 1;
    }
    assert_eq!(messages.len(), expected, "{per_tenant:?}");
    per_tenant
}

/// Whether `fleets` serve `total` databases between them, each database by one of
/// them, none more than `at_most`.
fn shared_out(fleets: &[FleetHandle], at_most: usize, total: usize) -> bool {
    let served: Vec<Vec<String>> = fleets
        .iter()
        .map(|fleet| fleet.databases().into_iter().map(|d| d.name).collect())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = served.iter().flatten().collect();
    served.iter().all(|mine| mine.len() <= at_most)
        && distinct.len() == total
        && served.iter().map(Vec::len).sum::<usize>() == total
}

fn state_of(fleet: &FleetHandle, name: &str) -> Option<DatabaseState> {
    fleet
        .databases()
        .into_iter()
        .find(|database| database.name == name)
        .map(|database| database.state)
}

/// A fleet serves every database of its file (PostgreSQL, MariaDB, SQLite), in each
/// key's order; serves a database added to the file and lets go of one removed; keeps
/// the others' pace while one database is away, says which, and serves it again when
/// it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_serves_its_files_databases_and_follows_the_file() {
    let topic = unique_topic("fleet");
    create_topic(&brokers(), &topic, 3).await;
    let a = PgSchema::migrated().await;
    let b = PgSchema::migrated().await;
    let own = PgDatabase::migrated().await;
    let maria = MySqlDatabase::migrated().await;
    let dir = std::env::temp_dir().join(format!("outbox-fleet-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.join("tenant.db").display());
    let lite = Database::connect(&sqlite_url).await.expect("SQLite");
    Migrator::up(&lite, None).await.expect("migrate SQLite");

    let file = dir.join("databases");
    let mut entries = vec![
        ("a", a.url()),
        ("b", b.url()),
        ("own", own.url()),
        ("maria", maria.url()),
    ];
    write_file(&file, &entries);
    let fleet = fleet(&file, &format!("fleet-{}", Uuid::now_v7().simple())).await;

    store(&a.db, "a", &topic, 0, 6).await;
    store(&b.db, "b", &topic, 0, 6).await;
    store(&own.db, "own", &topic, 0, 6).await;
    store(&maria.db, "maria", &topic, 0, 6).await;
    let counts = published(&topic, 24).await;
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [6, 6, 6, 6]);
    fleet.healthcheck().expect("every database served");

    // Added: served within a refresh.
    entries.push(("lite", sqlite_url.clone()));
    write_file(&file, &entries);
    store(&lite, "lite", &topic, 0, 6).await;
    let counts = published(&topic, 30).await;
    assert_eq!(counts["lite"], 6);

    // Removed: let go; what it stores stays pending.
    entries.retain(|(name, _)| *name != "b");
    write_file(&file, &entries);
    eventually("b is let go", Duration::from_secs(10), || async {
        state_of(&fleet, "b").is_none()
    })
    .await;
    store(&b.db, "b", &topic, 6, 3).await;

    // Away: the others keep their pace; health names it without failing the fleet.
    own.take_away().await;
    store(&a.db, "a", &topic, 6, 3).await;
    store(&maria.db, "maria", &topic, 6, 3).await;
    let counts = published(&topic, 36).await;
    assert_eq!((counts["a"], counts["maria"], counts["b"]), (9, 9, 6));
    eventually("own is reported", Duration::from_secs(30), || async {
        state_of(&fleet, "own") != Some(DatabaseState::Healthy)
    })
    .await;
    fleet.healthcheck().expect("4 of 5 databases are enough");
    let own_health = fleet
        .databases()
        .into_iter()
        .find(|database| database.name == "own")
        .expect("own is listed");
    let said = own_health.error.unwrap_or_default();
    assert!(!said.is_empty() && !said.contains(&own.url()), "{said}");

    // Back: served again.
    own.bring_back().await;
    let back = Database::connect(own.url()).await.expect("connect again");
    store(&back, "own", &topic, 6, 3).await;
    let counts = published(&topic, 39).await;
    assert_eq!(counts["own"], 9);
    assert_eq!(
        Outbox::on(&b.db)
            .pending(&b.db, 10)
            .await
            .expect("pending")
            .len(),
        3
    );

    fleet.shutdown().await;
    back.close().await.ok();
    lite.close().await.ok();
    own.drop().await;
    maria.drop().await;
    a.drop().await;
    b.drop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Three processes of one fleet share nine databases: each serves three (its fair
/// share) and holds connections to those only; when one is killed (no shutdown: its
/// leases run out), the two others take its databases over, and every event is
/// published, each key in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleets_processes_share_its_databases_and_take_over_a_killed_ones() {
    let topic = unique_topic("fleet-share");
    create_topic(&brokers(), &topic, 3).await;
    let mut tenants = Vec::new();
    for _ in 0..9 {
        tenants.push(PgSchema::migrated().await);
    }
    let dir = std::env::temp_dir().join(format!("outbox-fleet-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let run = Uuid::now_v7().simple().to_string();
    let service = format!("fleet-{run}");
    let mut fleets = Vec::new();
    let doomed = Doomed::new();
    for process in 0..3 {
        // Each process's file names the same databases, its connections by the process.
        let file: PathBuf = dir.join(format!("databases-{process}"));
        let entries: Vec<(String, String)> = tenants
            .iter()
            .enumerate()
            .map(|(n, tenant)| {
                let url = format!("{}&application_name=f{run}-{process}", tenant.url());
                (format!("t{n}"), url)
            })
            .collect();
        let entries: Vec<(&str, String)> = entries
            .iter()
            .map(|(n, u)| (n.as_str(), u.clone()))
            .collect();
        write_file(&file, &entries);
        if process == 0 {
            // The one to be killed runs on a runtime of its own, which dies with it.
            let service = service.clone();
            fleets.push(
                doomed
                    .run(async move { fleet_with(&file, &service, Some(2)).await })
                    .await,
            );
        } else {
            fleets.push(fleet_with(&file, &service, Some(2)).await);
        }
    }
    eventually(
        "each process serves its three",
        Duration::from_secs(20),
        || async { shared_out(&fleets, 3, 9) },
    )
    .await;
    for fleet in &fleets {
        assert_eq!(fleet.sharing(), (3, 9));
    }

    // Connections: only to the databases served, at most a pool of 2 and a listening
    // connection each, and one to the coordinator.
    let admin = Database::connect(database_url()).await.expect("PostgreSQL");
    for process in 0..3 {
        let row = admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'f{run}-{process}'"
                ),
            ))
            .await
            .expect("pg_stat_activity")
            .expect("a row");
        let connections: i64 = row.try_get("", "n").expect("a count");
        assert!(
            (1..=3 * 3 + 1).contains(&connections),
            "process {process} holds {connections} connections for 3 databases of 9"
        );
    }

    for (n, tenant) in tenants.iter().enumerate() {
        store(&tenant.db, &format!("t{n}"), &topic, 0, 4).await;
    }
    published(&topic, 36).await;
    let killed = fleets.remove(0);
    doomed.crash(); // its relays stop without giving their leases up
    killed.abort();
    eventually(
        "the two others serve all nine",
        Duration::from_secs(20),
        || async { shared_out(&fleets, 5, 9) },
    )
    .await;
    for (n, tenant) in tenants.iter().enumerate() {
        store(&tenant.db, &format!("t{n}"), &topic, 4, 4).await;
    }
    let counts = published(&topic, 72).await;
    assert!(counts.values().all(|&count| count == 8), "{counts:?}");
    for fleet in fleets {
        fleet.shutdown().await;
    }
    for tenant in tenants {
        tenant.drop().await;
    }
    std::fs::remove_dir_all(&dir).ok();
}
