//! Shared fixtures for the integration tests: an isolated PostgreSQL schema per test,
//! an isolated MySQL/MariaDB database per test, and an in-memory SQLite database.

pub mod counter;
pub mod crash;
pub mod kafka;
pub mod pg_database;
pub mod pgbouncer;
pub mod proxy;
pub mod tls;
pub mod torture;

use std::time::Duration;

use outbox_migration::Migrator;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;

/// The database of a torture process (a relay or a consumer): `DATABASE_URL`, with
/// `OUTBOX_TORTURE_SCHEMA` as PostgreSQL's schema when set.
///
/// # Errors
/// When `DATABASE_URL` is not set; the database's.
pub async fn torture_database() -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let mut options = ConnectOptions::new(std::env::var("DATABASE_URL")?);
    if let Ok(schema) = std::env::var("OUTBOX_TORTURE_SCHEMA") {
        options.set_schema_search_path(schema);
    }
    options
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

/// The PostgreSQL the tests use: `DATABASE_URL`, or the machine's default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A PostgreSQL schema of its own for one test, so tests run in parallel.
#[derive(Debug)]
pub struct PgSchema {
    /// A pool whose connections use the schema.
    pub db: DatabaseConnection,
    /// The schema's name.
    pub schema: String,
    admin: DatabaseConnection,
}

impl PgSchema {
    /// Creates an empty schema named `<prefix>_<uuid>` in the database of `url`, and
    /// a pool of `connections` whose connections use it.
    ///
    /// # Errors
    /// The database's.
    pub async fn create(url: &str, prefix: &str, connections: u32) -> Result<Self, DbErr> {
        let admin = Database::connect(url).await?;
        let schema = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
            .await?;
        let mut options = ConnectOptions::new(url);
        options
            .set_schema_search_path(schema.clone())
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        Ok(PgSchema { db, schema, admin })
    }

    /// Creates an empty schema and connects to it. Panics with a clear message when
    /// PostgreSQL is unreachable: a missing database fails tests, never skips them.
    pub async fn empty() -> Self {
        let url = database_url();
        Self::create(&url, "t", 8).await.unwrap_or_else(|error| {
            panic!("PostgreSQL at {url}: {error}; start it or set DATABASE_URL")
        })
    }

    /// A schema with the outbox's migrations applied.
    pub async fn migrated() -> Self {
        let schema = Self::empty().await;
        Migrator::up(&schema.db, None)
            .await
            .expect("migrate test schema");
        schema
    }

    /// A URL that connects to this schema, for another process.
    pub fn url(&self) -> String {
        Self::url_of(&self.schema)
    }

    /// A URL that connects to schema `schema` of `DATABASE_URL`.
    pub fn url_of(schema: &str) -> String {
        format!("{}?options=-c%20search_path%3D{schema}", database_url())
    }

    /// Drops the schema. A failing test skips this, leaving its data to inspect.
    pub async fn drop(self) {
        self.try_drop().await.expect("drop test schema");
    }

    /// Drops the schema.
    ///
    /// # Errors
    /// The database's.
    pub async fn try_drop(self) -> Result<(), DbErr> {
        self.db.close().await?;
        self.admin
            .execute_unprepared(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await?;
        Ok(())
    }
}

/// The MySQL or MariaDB server the tests use: `MYSQL_URL`, or the machine's MariaDB.
pub fn mysql_url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A MySQL database of its own for one test (MySQL's schemas are databases), so
/// tests run in parallel.
#[derive(Debug)]
pub struct MySqlDatabase {
    /// A pool whose connections use the database.
    pub db: DatabaseConnection,
    /// The database's name.
    pub name: String,
    url: String,
    admin: DatabaseConnection,
}

impl MySqlDatabase {
    /// Creates an empty database named `<prefix>_<uuid>` on the server of `url`, and a
    /// pool of `connections` to it.
    ///
    /// # Errors
    /// The database's.
    pub async fn create(url: &str, prefix: &str, connections: u32) -> Result<Self, DbErr> {
        let admin = Database::connect(url).await?;
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
            .await?;
        let url = database_in(url, &name);
        let mut options = ConnectOptions::new(url.clone());
        options
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        Ok(MySqlDatabase {
            db,
            name,
            url,
            admin,
        })
    }

    /// Creates an empty database and connects to it. Panics with a clear message when
    /// the server is unreachable: a missing database fails tests, never skips them.
    pub async fn empty() -> Self {
        let url = mysql_url();
        Self::create(&url, "t", 8)
            .await
            .unwrap_or_else(|error| panic!("MySQL at {url}: {error}; start it or set MYSQL_URL"))
    }

    /// A database with the outbox's migrations applied.
    pub async fn migrated() -> Self {
        let database = Self::empty().await;
        Migrator::up(&database.db, None)
            .await
            .expect("migrate test database");
        database
    }

    /// A URL that connects to this database, for another process.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Drops the database. A failing test skips this, leaving its data to inspect.
    pub async fn drop(self) {
        self.try_drop().await.expect("drop test database");
    }

    /// Drops the database.
    ///
    /// # Errors
    /// The database's.
    pub async fn try_drop(self) -> Result<(), DbErr> {
        self.db.close().await?;
        self.admin
            .execute_unprepared(&format!("DROP DATABASE `{}`", self.name))
            .await?;
        Ok(())
    }
}

/// A database of a test's own on a server with concurrent transactions: a PostgreSQL
/// schema or a MySQL database.
#[derive(Debug)]
pub enum ServerDatabase {
    /// On PostgreSQL.
    Postgres(PgSchema),
    /// On MySQL or MariaDB.
    MySql(MySqlDatabase),
}

impl ServerDatabase {
    /// An empty database of its own on the server of `url` (`postgres://` or
    /// `mysql://`), named `<prefix>_<uuid>`, and a pool of `connections` to it.
    ///
    /// # Errors
    /// The database's.
    pub async fn create(url: &str, prefix: &str, connections: u32) -> Result<Self, DbErr> {
        if url.starts_with("mysql:") {
            Ok(ServerDatabase::MySql(
                MySqlDatabase::create(url, prefix, connections).await?,
            ))
        } else {
            Ok(ServerDatabase::Postgres(
                PgSchema::create(url, prefix, connections).await?,
            ))
        }
    }

    /// A freshly migrated database on `backend` (PostgreSQL or MySQL).
    pub async fn migrated(backend: DbBackend) -> Self {
        match backend {
            DbBackend::MySql => ServerDatabase::MySql(MySqlDatabase::migrated().await),
            _ => ServerDatabase::Postgres(PgSchema::migrated().await),
        }
    }

    /// A pool of connections to it.
    pub fn db(&self) -> &DatabaseConnection {
        match self {
            ServerDatabase::Postgres(pg) => &pg.db,
            ServerDatabase::MySql(database) => &database.db,
        }
    }

    /// A URL that connects to it, for another process.
    pub fn url(&self) -> String {
        match self {
            ServerDatabase::Postgres(pg) => pg.url(),
            ServerDatabase::MySql(database) => database.url(),
        }
    }

    /// Drops it. A failing test skips this, leaving its data to inspect.
    pub async fn drop(self) {
        self.try_drop().await.expect("drop test database");
    }

    /// Drops it.
    ///
    /// # Errors
    /// The database's.
    pub async fn try_drop(self) -> Result<(), DbErr> {
        match self {
            ServerDatabase::Postgres(pg) => pg.try_drop().await,
            ServerDatabase::MySql(database) => database.try_drop().await,
        }
    }
}

/// `url` with its database replaced by `name`.
fn database_in(url: &str, name: &str) -> String {
    let (server, _) = url
        .rsplit_once('/')
        .expect("a MySQL URL names its database");
    format!("{server}/{name}")
}

/// The peak resident memory of process `pid` so far, in KiB (0 when it cannot be read).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// A fresh in-memory SQLite database, behind a pool of one connection.
///
/// An in-memory database lives only while a connection to it is open, and the pool
/// replaces its connection when a query future is dropped midway (as a relay's tasks
/// are at shutdown): a second connection, held for the rest of the test process,
/// keeps the database alive across that.
pub async fn sqlite() -> DatabaseConnection {
    let url = format!(
        "sqlite:file:outbox-test-{}?mode=memory&cache=shared",
        uuid::Uuid::now_v7().simple()
    );
    let open = || async {
        let mut options = ConnectOptions::new(url.clone());
        options.max_connections(1).sqlx_logging(false);
        Database::connect(options)
            .await
            .expect("open in-memory SQLite")
    };
    std::mem::forget(open().await);
    open().await
}

/// An in-memory SQLite database with the outbox's migrations applied.
pub async fn migrated_sqlite() -> DatabaseConnection {
    let db = sqlite().await;
    Migrator::up(&db, None).await.expect("migrate SQLite");
    db
}

/// Polls `check` until it holds, failing the test with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `relay` holds exactly `shards` shards (at most `timeout`); `who`
/// names it in the failure.
pub async fn until_holding(
    relay: &outbox::RelayHandle,
    shards: usize,
    who: &str,
    timeout: Duration,
) {
    eventually(&format!("{who} holds {shards} shards"), timeout, || async {
        relay.stats().owned_shards == shards
    })
    .await;
}

/// Runs `relay` pass by pass until event `id` is published, and returns the
/// failed attempts it went through with the wait each set (attempts, milliseconds from
/// the failure to the next allowed attempt).
pub async fn retry_waits<P: outbox::Publisher>(
    relay: &outbox::Relay<P>,
    db: &DatabaseConnection,
    id: uuid::Uuid,
) -> Vec<(i32, i64)> {
    use outbox::entity::outbox as row;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let mut waits: Vec<(i32, i64)> = Vec::new();
    for _ in 0..200 {
        relay.process_events(10).await.expect("process");
        let event = row::Entity::find()
            .filter(row::Column::Id.eq(id))
            .one(db)
            .await
            .expect("read")
            .expect("row");
        if event.published {
            return waits;
        }
        if let (Some(last), Some(next)) = (event.last_attempt_at, event.next_attempt_at)
            && waits.last().map(|(attempts, _)| *attempts) != Some(event.attempts)
        {
            waits.push((event.attempts, (next - last).num_milliseconds()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("event {id} was not published after 200 passes; waits so far: {waits:?}");
}

/// Stores `count` events of `key` to topic `counters`, one statement each, with `n`
/// 0, 1, ... in their payloads; returns their ids.
pub async fn store_counters(
    db: &DatabaseConnection,
    outbox: &outbox::Outbox,
    key: &str,
    count: usize,
) -> Vec<uuid::Uuid> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let event = outbox::EventBuilder::new("counter.incremented", key)
            .data(serde_json::json!({ "n": n }));
        ids.push(outbox.store(db, &event, "counters").await.expect("store"));
    }
    ids
}

/// Dead-letters event `ids[0]` and has `ids[1]` wait for a retry an hour away, through
/// the library's failure calls, as an operator's broker would have.
pub async fn dead_and_retrying(
    db: &DatabaseConnection,
    outbox: &outbox::Outbox,
    ids: &[uuid::Uuid],
) {
    use outbox::{FailureOutcome, RelayConfig};
    let dead_now = RelayConfig {
        retry_attempts: 0,
        ..RelayConfig::default()
    };
    let retry_later = RelayConfig {
        retry_backoff: outbox::Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)),
        ..RelayConfig::default()
    };
    let outcome = outbox
        .handle_event_failure(db, ids[0], "unknown topic", &dead_now)
        .await
        .expect("dead-letter");
    assert!(
        matches!(outcome, FailureOutcome::DeadLettered { .. }),
        "{outcome:?}"
    );
    let outcome = outbox
        .handle_event_failure(db, ids[1], "unknown topic", &retry_later)
        .await
        .expect("retry later");
    assert!(
        matches!(outcome, FailureOutcome::Retry { .. }),
        "{outcome:?}"
    );
}

/// Makes event `id`'s retry due (a second ago), as if its backoff had passed.
pub async fn retry_due(db: &DatabaseConnection, id: uuid::Uuid) {
    use outbox::entity::outbox as row;
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    row::Entity::update_many()
        .col_expr(
            row::Column::NextAttemptAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(row::Column::Id.eq(id))
        .exec(db)
        .await
        .expect("the retry falls due");
}

/// For each key, the `n` field of its events' JSON payloads in the order given, after
/// dropping repeated event ids (a consumer's view of at-least-once delivery). Takes
/// `(event id, key, payload)` triples.
pub fn per_key_order<'a>(
    events: impl IntoIterator<Item = (String, &'a str, &'a str)>,
) -> std::collections::HashMap<String, Vec<u64>> {
    let mut seen = std::collections::HashSet::new();
    let mut order: std::collections::HashMap<String, Vec<u64>> = std::collections::HashMap::new();
    for (id, key, payload) in events {
        if seen.insert(id) {
            let payload: serde_json::Value = serde_json::from_str(payload).expect("JSON payload");
            order
                .entry(key.to_owned())
                .or_default()
                .push(payload["n"].as_u64().expect("an `n` in the payload"));
        }
    }
    order
}

/// Runs each named `async fn(DatabaseConnection)` of the calling test file on the
/// backends with concurrent transactions: in module `postgres_server` on a freshly
/// migrated PostgreSQL schema and in module `mysql_server` on a freshly migrated
/// MySQL/MariaDB database (both dropped after).
#[macro_export]
macro_rules! on_server_backends {
    ($($name:ident),* $(,)?) => {
        $crate::__on_servers!(pool: $($name),*);
    };
}

/// Like [`on_server_backends!`], for each `async fn(&ServerDatabase)`: tests that
/// also need the database's URL.
#[macro_export]
macro_rules! on_server_databases {
    ($($name:ident),* $(,)?) => {
        $crate::__on_servers!(database: $($name),*);
    };
}

/// The modules of [`on_server_backends!`] and [`on_server_databases!`]; `pool` or
/// `database` says what the test functions take.
#[doc(hidden)]
#[macro_export]
macro_rules! __on_servers {
    ($takes:ident: $($name:ident),*) => {
        $crate::__on_servers!(@module postgres_server Postgres $takes: $($name),*);
        $crate::__on_servers!(@module mysql_server MySql $takes: $($name),*);
    };
    (@module $module:ident $backend:ident $takes:ident: $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let database =
                        $crate::ServerDatabase::migrated(::sea_orm::DbBackend::$backend).await;
                    $crate::__on_servers!(@call $takes super::$name, database);
                    database.drop().await;
                }
            )*
        }
    };
    (@call pool $test:path, $database:ident) => {
        $test($database.db().clone()).await
    };
    (@call database $test:path, $database:ident) => {
        $test(&$database).await
    };
}

/// Runs each named `async fn(DatabaseConnection)` of the calling test file on every
/// backend: in module `postgres` on a freshly migrated PostgreSQL schema, in module
/// `mysql` on a freshly migrated MySQL/MariaDB database (both dropped after), and in
/// module `sqlite` on a freshly migrated in-memory SQLite database.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let pg = $crate::PgSchema::migrated().await;
                    super::$name(pg.db.clone()).await;
                    pg.drop().await;
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let database = $crate::MySqlDatabase::migrated().await;
                    super::$name(database.db.clone()).await;
                    database.drop().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::migrated_sqlite().await).await;
                }
            )*
        }
    };
}
