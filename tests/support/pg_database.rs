//! [`PgDatabase`]: a PostgreSQL database of a test's own (not a schema of `test`),
//! which can be taken away and brought back, as a tenant's database of a fleet.

use outbox_migration::Migrator;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

use crate::database_url;

/// A PostgreSQL database of its own (not a schema), which can be taken away.
#[derive(Debug)]
pub struct PgDatabase {
    /// The database's name.
    pub name: String,
    /// A pool of connections to it.
    pub db: DatabaseConnection,
}

/// A connection to `DATABASE_URL`'s database, for statements about the others; opened
/// for each (a fleet's test holds dozens of databases, and the server's connections
/// are few).
async fn admin() -> DatabaseConnection {
    let mut options = ConnectOptions::new(database_url());
    options.max_connections(1).sqlx_logging(false);
    Database::connect(options).await.expect("PostgreSQL")
}

/// Runs `statement` on a connection of its own to `DATABASE_URL`'s database.
async fn as_admin(statement: &str, what: &str) {
    let admin = admin().await;
    admin
        .execute_unprepared(statement)
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    admin.close().await.ok();
}

impl PgDatabase {
    /// A new database, migrated, with a pool of sea-orm's default size.
    pub async fn migrated() -> Self {
        Self::migrated_with(None).await
    }

    /// A new database, migrated, with a pool of `connections` (sea-orm's default
    /// for `None`).
    pub async fn migrated_with(connections: Option<u32>) -> Self {
        let name = format!("fleet_{}", Uuid::now_v7().simple());
        as_admin(&format!("CREATE DATABASE {name}"), "create database").await;
        let mut options = ConnectOptions::new(Self::url_of(&name));
        options.sqlx_logging(false);
        if let Some(connections) = connections {
            options.max_connections(connections);
        }
        let db = Database::connect(options).await.expect("connect");
        Migrator::up(&db, None).await.expect("migrate");
        PgDatabase { name, db }
    }

    /// The URL of database `name` on `DATABASE_URL`'s server.
    pub fn url_of(name: &str) -> String {
        let url = database_url();
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        format!("{base}/{name}")
    }

    /// Its URL.
    pub fn url(&self) -> String {
        Self::url_of(&self.name)
    }

    /// Refuses new connections and ends those open: the database is gone for a while.
    pub async fn take_away(&self) {
        let name = &self.name;
        as_admin(
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
            "refuse connections",
        )
        .await;
        as_admin(
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
            "end connections",
        )
        .await;
    }

    /// Accepts connections again.
    pub async fn bring_back(&self) {
        as_admin(
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name),
            "allow connections",
        )
        .await;
    }

    /// Drops it, ending its sessions.
    pub async fn drop(self) {
        self.db.close().await.ok();
        as_admin(
            &format!("DROP DATABASE {} WITH (FORCE)", self.name),
            "drop database",
        )
        .await;
    }
}
