//! [`Doomed`]: a runtime of its own, with a database pool of its own, for what a test
//! crashes.
//!
//! `RelayHandle::abort` stops a relay's tasks, but not all that a crashed process
//! loses: the futures it drops mid-query hand their connections back to the pool they
//! came from, with whatever the server was doing for them. A test relay that shares
//! the test's pool then leaves that pool, and the survivor using it, in a state no
//! real crash produces (seen once in a hundred runs: a survivor that waited for the
//! end of the test). A killed process takes its connections with it, and the server
//! ends their sessions; [`Doomed::crash`] does the same in-process, by shutting the
//! runtime down: every task it ran is dropped, every connection it opened is closed.

use std::future::Future;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};

/// A runtime of its own for a relay (or a fleet) that the test will crash.
#[derive(Debug)]
pub struct Doomed {
    runtime: tokio::runtime::Runtime,
}

impl Doomed {
    /// A runtime with one worker thread.
    ///
    /// # Panics
    /// When the runtime cannot be built.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("doomed")
            .enable_all()
            .build()
            .expect("a runtime for the doomed relay");
        Doomed { runtime }
    }

    /// Runs `work` on this runtime and returns its result: whatever it spawns runs
    /// there, and dies with it.
    ///
    /// # Panics
    /// When `work` panics.
    pub async fn run<F>(&self, work: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .spawn(work)
            .await
            .expect("the doomed runtime's work")
    }

    /// A pool of its own to the database at `url`, opened on this runtime.
    ///
    /// # Panics
    /// When the database cannot be reached.
    pub async fn connect(&self, url: String) -> DatabaseConnection {
        self.run(async move {
            let mut options = ConnectOptions::new(url);
            options.max_connections(4).sqlx_logging(false);
            Database::connect(options)
                .await
                .expect("the doomed relay's pool")
        })
        .await
    }

    /// A pool of its own to the database (on PostgreSQL, the schema) that `db` uses.
    ///
    /// # Panics
    /// When the database cannot be reached.
    pub async fn connect_like(&self, db: &DatabaseConnection) -> DatabaseConnection {
        let backend = db.get_database_backend();
        let query = match backend {
            DbBackend::Postgres => "SELECT current_schema() AS name",
            _ => "SELECT DATABASE() AS name",
        };
        let name: String = db
            .query_one_raw(Statement::from_string(backend, query))
            .await
            .expect("the test database's name")
            .expect("a row")
            .try_get("", "name")
            .expect("a name");
        let url = match backend {
            DbBackend::Postgres => crate::PgSchema::url_of(&name),
            _ => crate::database_in(&crate::mysql_url(), &name),
        };
        self.connect(url).await
    }

    /// Crashes: every task of this runtime ends where it is, and the connections they
    /// held close, as when the process is killed.
    pub fn crash(self) {
        self.runtime.shutdown_background();
    }
}

impl Default for Doomed {
    fn default() -> Self {
        Self::new()
    }
}
