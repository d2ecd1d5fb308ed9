//! `fleet_torture`: one relay fleet for many databases (`outbox::fleet`), as a
//! database-per-tenant service runs it.
//!
//! PostgreSQL databases of their own on the local server and MariaDB databases, each
//! with its outbox tables and a writer storing events for a few keys (some
//! transactions roll back), are served by relay processes of one service
//! (`outbox-torture-relay` in fleet mode, as `outbox relay --databases FILE` runs),
//! each with a databases file of its own that names the same databases (its
//! connections carry the process's name). Meanwhile relay processes are killed with
//! SIGKILL and restarted, a database is added to the files (its writer started before:
//! its events wait for it), one is taken away (`ALLOW_CONNECTIONS false`, its sessions
//! ended) and brought back, and one is drained and removed: the relays must let go of
//! it, connections and leases. Then the suite checks: every committed event published
//! (duplicates only after kills), none rolled back, each key's events in commit order,
//! nothing pending or parked anywhere, and no process holding connections to more
//! databases than it serves.
//!
//! Knobs (environment): `TORTURE_FLEET_POSTGRES` (PostgreSQL databases, default 6),
//! `TORTURE_FLEET_MYSQL` (MariaDB databases, default 2), `TORTURE_FLEET_RELAYS`
//! (relay processes, default 3), `TORTURE_SECONDS` and `TORTURE_SEED` as the other
//! runs. The size, `TORTURE_FLEET_POSTGRES=50 TORTURE_FLEET_MYSQL=5`, needs a
//! PostgreSQL server that accepts 300 connections (`max_connections`); the suite
//! says so when it does not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox::{Envelope, EventBuilder, Outbox};
use outbox_tests::kafka::{PrivateBroker, Received, consume_topics, create_topic};
use outbox_tests::pg_database::PgDatabase;
use outbox_tests::{MySqlDatabase, database_url};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use serde_json::json;
use uuid::Uuid;

use super::{Processes, Rng};

/// Keys per database.
const KEYS: u64 = 4;
/// The relays' lease time.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// Each relay's pool per database it serves (a listening connection comes beside it
/// on PostgreSQL).
const POOL: u32 = 2;
/// At most so many events in a relay's batch, and batches at once per database.
const BATCH_SIZE: u64 = 50;
const CONCURRENCY: u64 = 4;

#[derive(Debug)]
struct FleetSize {
    seed: u64,
    seconds: u64,
    postgres: usize,
    mysql: usize,
    relays: usize,
}

impl FleetSize {
    fn from_env() -> Self {
        let var = |name: &str, default: u64| {
            std::env::var(name).ok().map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        };
        let count = |name: &str, default: u64| usize::try_from(var(name, default)).unwrap_or(0);
        let size = FleetSize {
            seed: var(
                "TORTURE_SEED",
                u64::from(Uuid::now_v7().as_fields().1) << 32 | u64::from(std::process::id()),
            )
            .max(1),
            seconds: var("TORTURE_SECONDS", 20),
            postgres: count("TORTURE_FLEET_POSTGRES", 6),
            mysql: count("TORTURE_FLEET_MYSQL", 2),
            relays: count("TORTURE_FLEET_RELAYS", 3).max(1),
        };
        assert!(
            size.postgres >= 3,
            "TORTURE_FLEET_POSTGRES: at least 3 (one is added, one taken away, one removed)"
        );
        size
    }

    fn databases(&self) -> usize {
        self.postgres + self.mysql
    }

    /// The PostgreSQL connections the run may need: every relay process's share of
    /// the databases (a pool and a listening connection each, one process briefly
    /// serving a database beside another while it lets go), the writers' and the
    /// suite's own.
    fn postgres_connections(&self) -> usize {
        let per_process = self.databases().div_ceil(self.relays) * (POOL as usize + 1) + 1;
        per_process * self.relays + self.postgres * 3 + 20
    }
}

/// A tenant's database, on either server.
enum Store {
    Postgres(PgDatabase),
    MySql(MySqlDatabase),
}

/// One tenant: its name in the databases files, its database, and its writer's pause.
struct Tenant {
    name: String,
    store: Store,
    /// While set, its writer stores nothing (the database is away, or being removed).
    paused: Arc<AtomicBool>,
}

impl Tenant {
    fn db(&self) -> &DatabaseConnection {
        match &self.store {
            Store::Postgres(pg) => &pg.db,
            Store::MySql(mysql) => &mysql.db,
        }
    }

    /// The URL for relay process `process`: on PostgreSQL its connections carry the
    /// process's name.
    fn url_for(&self, run: &str, process: usize) -> String {
        match &self.store {
            Store::Postgres(pg) => format!("{}?application_name={}", pg.url(), app(run, process)),
            Store::MySql(mysql) => mysql.url(),
        }
    }

    fn postgres(&self) -> Option<&PgDatabase> {
        match &self.store {
            Store::Postgres(pg) => Some(pg),
            Store::MySql(_) => None,
        }
    }

    async fn drop(self) {
        match self.store {
            Store::Postgres(pg) => pg.drop().await,
            Store::MySql(mysql) => mysql.drop().await,
        }
    }
}

/// The `application_name` of relay process `process`'s connections.
fn app(run: &str, process: usize) -> String {
    format!("tf{run}-{process}")
}

/// What the writers know: each committed event's key and place in its key's order,
/// and the events rolled back or of unknown outcome.
#[derive(Debug, Default)]
struct Ledger {
    committed: HashMap<String, (String, u64)>,
    rolled_back: HashSet<String>,
    unknown: HashSet<String>,
}

/// Tenant `tenant`'s writer: one transaction after the other, each storing one event
/// of one of its keys, numbered in the key's order; one in ten rolled back. Stores
/// nothing while paused.
async fn writer(
    tenant: String,
    db: DatabaseConnection,
    topic: String,
    mut rng: Rng,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let outbox = Outbox::on(&db);
    let mut next = [0_u64; KEYS as usize];
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let k = rng.below(KEYS);
        let key = format!("{tenant}/{k}");
        let n = next[k as usize];
        let event = EventBuilder::new("fleet.torture", &key)
            .data(json!({ "tenant": tenant, "key": key, "n": n }));
        let envelope = Envelope::new(&event, &topic).expect("an envelope");
        let id = envelope.id().to_string();
        let Ok(txn) = db.begin().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if outbox.store_batch(&txn, vec![envelope]).await.is_err() {
            let _ = txn.rollback().await;
            continue;
        }
        let ledger_entry = |ledger: &mut Ledger, committed: Option<bool>| match committed {
            Some(true) => {
                ledger.committed.insert(id.clone(), (key.clone(), n));
            }
            Some(false) => {
                ledger.rolled_back.insert(id.clone());
            }
            None => {
                ledger.unknown.insert(id.clone());
            }
        };
        if rng.chance(10) {
            let _ = txn.rollback().await;
            ledger_entry(&mut ledger.lock().expect("ledger"), Some(false));
        } else if txn.commit().await.is_ok() {
            ledger_entry(&mut ledger.lock().expect("ledger"), Some(true));
            next[k as usize] += 1;
        } else {
            // The key's number is not reused: an event that did commit keeps its place.
            ledger_entry(&mut ledger.lock().expect("ledger"), None);
            next[k as usize] += 1;
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
    }
}

/// The relay processes, each with its databases file.
struct FleetRelays {
    run: String,
    dir: PathBuf,
    brokers: String,
    processes: Processes,
}

impl FleetRelays {
    fn file(&self, process: usize) -> PathBuf {
        self.dir.join(format!("databases-{process}"))
    }

    /// Writes every process's file, listing `tenants`.
    fn list(&self, tenants: &[&Tenant]) {
        for process in 0..self.processes.children.len().max(1) {
            write_file(&self.file(process), tenants, &self.run, process);
        }
    }

    fn start(&mut self, slot: usize) {
        let child = Command::new(env!("CARGO_BIN_EXE_outbox-torture-relay"))
            .env("OUTBOX_DATABASES_FILE", self.file(slot))
            .env("KAFKA_BROKERS", &self.brokers)
            .env("OUTBOX_SERVICE_NAME", format!("fleet-torture-{}", self.run))
            .env("OUTBOX_BATCH_SIZE", BATCH_SIZE.to_string())
            .env("OUTBOX_CONCURRENCY", CONCURRENCY.to_string())
            .env("OUTBOX_INTERVAL", "500ms")
            .env("OUTBOX_MIN_POLL_INTERVAL", "5ms")
            .env("OUTBOX_LEASE_TTL", format!("{}s", LEASE_TTL.as_secs()))
            .env("OUTBOX_SHUTDOWN_TIMEOUT", "10s")
            .env("OUTBOX_FLEET_REFRESH", "500ms")
            .env("OUTBOX_FLEET_CONNECTIONS", POOL.to_string())
            .env("OUTBOX_FLEET_CONNECT_TIMEOUT", "2s")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .spawn()
            .expect("start a fleet relay process");
        self.processes.place(slot, child);
    }
}

/// Writes the databases file of relay process `process`, listing `tenants`: written
/// to a new file and renamed over the old, so a process never reads half a file.
fn write_file(path: &Path, tenants: &[&Tenant], run: &str, process: usize) {
    let mut text = "# the fleet torture's tenants\n".to_owned();
    for tenant in tenants {
        text.push_str(&format!(
            "{} {}\n",
            tenant.name,
            tenant.url_for(run, process)
        ));
    }
    let new = path.with_extension("new");
    std::fs::write(&new, text).expect("write a databases file");
    std::fs::rename(&new, path).expect("replace a databases file");
}

/// A number read by `query` on `db`.
async fn count(db: &DatabaseConnection, query: &str) -> i64 {
    let backend = db.get_database_backend();
    db.query_one_raw(Statement::from_string(backend, query))
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// Events not yet published (nor dead-lettered) in `db`, and those parked.
async fn unfinished(db: &DatabaseConnection) -> (i64, i64) {
    let pending = count(
        db,
        "SELECT COUNT(*) FROM _outbox WHERE NOT published AND dead_lettered_at IS NULL",
    )
    .await;
    let parked = count(
        db,
        "SELECT COUNT(*) FROM _outbox WHERE parked AND NOT published",
    )
    .await;
    (pending, parked)
}

/// Waits until no event of `tenants` is pending, or panics after `timeout` naming
/// those that still have some.
async fn drained(tenants: &[&Tenant], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = BTreeMap::new();
        for tenant in tenants {
            let (pending, _) = unfinished(tenant.db()).await;
            if pending > 0 {
                left.insert(tenant.name.clone(), pending);
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "events still pending after {timeout:?}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The connections of the relay processes to PostgreSQL: per process, and per
/// database.
async fn relay_connections(admin: &DatabaseConnection, run: &str) -> Vec<(String, String, i64)> {
    let rows = admin
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT application_name, datname::text, COUNT(*) AS n FROM pg_stat_activity \
                 WHERE application_name LIKE 'tf{run}-%' GROUP BY application_name, datname"
            ),
        ))
        .await
        .expect("pg_stat_activity");
    rows.iter()
        .map(|row| {
            (
                row.try_get_by_index::<String>(0).expect("application_name"),
                row.try_get_by_index::<String>(1).expect("datname"),
                row.try_get_by_index::<i64>(2).expect("count"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_torture() {
    let size = FleetSize::from_env();
    println!(
        "fleet torture: {size:?} (replay with TORTURE_SEED={})",
        size.seed
    );
    let started = Instant::now();
    let mut rng = Rng(size.seed);
    let run = Uuid::now_v7().simple().to_string()[20..].to_owned();
    let admin = Database::connect(database_url()).await.expect("PostgreSQL");
    let max_connections = count(
        &admin,
        "SELECT setting::bigint FROM pg_settings WHERE name = 'max_connections'",
    )
    .await;
    let needed = size.postgres_connections();
    assert!(
        i64::try_from(needed).unwrap_or(i64::MAX) <= max_connections,
        "{} PostgreSQL databases for {} relay processes need about {needed} connections; \
         the server accepts {max_connections} (raise max_connections, or lower TORTURE_FLEET_POSTGRES)",
        size.postgres,
        size.relays
    );

    // The tenants: t00 (the fleet's coordinator, the first by name) stays throughout.
    let mut tenants = Vec::new();
    for n in 0..size.databases() {
        let store = if n < size.postgres {
            Store::Postgres(PgDatabase::migrated_with(Some(2)).await)
        } else {
            Store::MySql(MySqlDatabase::migrated().await)
        };
        tenants.push(Tenant {
            name: format!("t{n:02}"),
            store,
            paused: Arc::default(),
        });
    }
    // The last PostgreSQL tenant comes in late, the one before is taken away, the one
    // before that removed.
    let (added, away, removed) = (size.postgres - 1, size.postgres - 2, size.postgres - 3);

    let broker = PrivateBroker::start().await;
    let topic = format!("fleet-torture-{run}");
    create_topic(&broker.address, &topic, 4).await;
    let dir = std::env::temp_dir().join(format!("outbox-fleet-torture-{run}"));
    std::fs::create_dir_all(&dir).expect("a directory");
    let mut relays = FleetRelays {
        run: run.clone(),
        dir,
        brokers: broker.address.clone(),
        processes: Processes::new("fleet relay"),
    };
    let listed = |except: &[usize]| -> Vec<&Tenant> {
        tenants
            .iter()
            .enumerate()
            .filter(|(n, _)| !except.contains(n))
            .map(|(_, tenant)| tenant)
            .collect()
    };
    for process in 0..size.relays {
        write_file(&relays.file(process), &listed(&[added]), &run, process);
    }
    for slot in 0..size.relays {
        relays.start(slot);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writers: Vec<_> = tenants
        .iter()
        .map(|tenant| {
            tokio::spawn(writer(
                tenant.name.clone(),
                tenant.db().clone(),
                topic.clone(),
                rng.fork(),
                Arc::clone(&tenant.paused),
                Arc::clone(&stop),
                Arc::clone(&ledger),
            ))
        })
        .collect();

    // Chaos while the writers write.
    let at =
        |fraction: f64| Instant::now() + Duration::from_secs_f64(size.seconds as f64 * fraction);
    let end = at(1.0);
    let (add_at, away_at, remove_at) = (at(0.25), at(0.4), at(0.7));
    let (mut was_added, mut was_away, mut was_removed) = (false, false, false);
    let mut back_at = None;
    let mut next_kill = at(0.1);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_kill {
            let slot = usize::try_from(rng.below(size.relays as u64)).unwrap_or(0);
            relays.processes.kill(slot);
            tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
            relays.start(slot);
            next_kill = Instant::now() + Duration::from_millis(1500 + rng.below(2500));
        }
        if !was_added && now >= add_at {
            relays.list(&listed(&[]));
            was_added = true;
        }
        if !was_away && now >= away_at {
            let tenant = &tenants[away];
            tenant.paused.store(true, Ordering::SeqCst);
            tenant.postgres().expect("PostgreSQL").take_away().await;
            back_at = Some(Instant::now() + Duration::from_secs(4));
            was_away = true;
        }
        if let Some(at) = back_at
            && Instant::now() >= at
        {
            let tenant = &tenants[away];
            tenant.postgres().expect("PostgreSQL").bring_back().await;
            tenant.paused.store(false, Ordering::SeqCst);
            back_at = None;
        }
        if !was_removed && now >= remove_at {
            // Drained first: a database removed from the file is no longer served.
            let tenant = &tenants[removed];
            tenant.paused.store(true, Ordering::SeqCst);
            drained(&[tenant], Duration::from_secs(60)).await;
            relays.list(&listed(&[removed]));
            was_removed = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if back_at.is_some() {
        let tenant = &tenants[away];
        tenant.postgres().expect("PostgreSQL").bring_back().await;
        tenant.paused.store(false, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("a writer");
    }

    // The removed database is let go: no relay process keeps a connection to it.
    let removed_name = tenants[removed]
        .postgres()
        .expect("PostgreSQL")
        .name
        .clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: i64 = relay_connections(&admin, &run)
            .await
            .iter()
            .filter(|(_, database, _)| *database == removed_name)
            .map(|(_, _, n)| n)
            .sum();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay processes still hold {left} connections to the removed database"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live_leases = count(
        tenants[removed].db(),
        "SELECT COUNT(*) FROM _outbox_lease WHERE expires_at > CURRENT_TIMESTAMP",
    )
    .await;

    // Everything served is published; the relays settle.
    let served = listed(&[removed]);
    drained(&served, Duration::from_secs(120)).await;
    let mut parked = BTreeMap::new();
    for tenant in &tenants {
        let (_, left) = unfinished(tenant.db()).await;
        if left > 0 {
            parked.insert(tenant.name.clone(), left);
        }
    }
    // Each process holds connections only to the databases it serves: at most its
    // share of them, a pool and a listening connection each, and the coordinator's.
    let share = size.databases().div_ceil(size.relays);
    let bound = i64::try_from(share * (POOL as usize + 1) + 1).unwrap_or(i64::MAX);
    let mut per_process: BTreeMap<String, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        per_process.clear();
        for (process, _, n) in relay_connections(&admin, &run).await {
            *per_process.entry(process).or_default() += n;
        }
        if per_process.values().all(|&n| n <= bound) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    relays.processes.terminate_all();

    let ledger = Arc::try_unwrap(ledger)
        .expect("writers done")
        .into_inner()
        .expect("ledger");
    let received = consume_topics(
        &broker.address,
        &[&topic],
        ledger.committed.len() + ledger.unknown.len(),
        Duration::from_secs(60),
    )
    .await;
    let report = check(&received, &ledger);
    println!(
        "fleet torture: {} databases ({} PostgreSQL, {} MariaDB), {} relay processes; {} committed, {} rolled back, {} unknown; {} kills; {} messages, {} duplicates; connections per process {per_process:?} (bound {bound}); {:.1?}",
        size.databases(),
        size.postgres,
        size.mysql,
        size.relays,
        ledger.committed.len(),
        ledger.rolled_back.len(),
        ledger.unknown.len(),
        relays.processes.kills,
        received.len(),
        report.duplicates,
        started.elapsed()
    );
    assert!(
        report.lost.is_empty(),
        "lost {} committed events, e.g. {:?}",
        report.lost.len(),
        report.lost.first()
    );
    assert!(
        report.phantoms.is_empty(),
        "published {} rolled-back events, e.g. {:?}",
        report.phantoms.len(),
        report.phantoms.first()
    );
    assert!(
        report.out_of_order.is_empty(),
        "keys out of commit order: {:?}",
        report.out_of_order.first()
    );
    let incidents = relays.processes.kills + 1;
    assert!(
        report.duplicates as u64 <= incidents * BATCH_SIZE * CONCURRENCY * 2,
        "{} duplicates exceed kills x batch x concurrency (x2: a killed process's databases and shards)",
        report.duplicates
    );
    if relays.processes.kills == 0 {
        assert_eq!(report.duplicates, 0, "duplicates without a kill");
    }
    assert!(parked.is_empty(), "events left parked: {parked:?}");
    assert_eq!(
        live_leases, 0,
        "the removed database's leases are still held"
    );
    assert!(
        per_process.values().all(|&n| n <= bound),
        "a relay process holds more connections than its share of databases needs: {per_process:?} (bound {bound})"
    );

    for tenant in tenants {
        tenant.drop().await;
    }
    std::fs::remove_dir_all(&relays.dir).ok();
}

/// What the consumed messages say against the ledger.
struct Report<'a> {
    lost: Vec<&'a String>,
    phantoms: Vec<&'a String>,
    out_of_order: Vec<(String, Vec<u64>)>,
    duplicates: usize,
}

/// Every committed event published, none rolled back, each key's events first seen
/// in commit order (a duplicate may come later: a killed relay's batch sent again).
fn check<'a>(received: &[Received], ledger: &'a Ledger) -> Report<'a> {
    let mut by_place: Vec<&Received> = received.iter().collect();
    by_place.sort_by_key(|m| (m.partition, m.offset));
    let mut seen = HashSet::new();
    let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for message in by_place {
        if !seen.insert(message.event_id()) {
            continue;
        }
        if let Some((key, n)) = ledger.committed.get(message.event_id()) {
            per_key.entry(key).or_default().push(*n);
        }
    }
    Report {
        lost: ledger
            .committed
            .keys()
            .filter(|id| !seen.contains(id.as_str()))
            .collect(),
        phantoms: ledger
            .rolled_back
            .iter()
            .filter(|id| seen.contains(id.as_str()))
            .collect(),
        out_of_order: per_key
            .into_iter()
            .filter(|(_, ns)| ns.windows(2).any(|w| w[0] >= w[1]))
            .map(|(key, ns)| (key.to_owned(), ns))
            .collect(),
        duplicates: received.len() - seen.len(),
    }
}
