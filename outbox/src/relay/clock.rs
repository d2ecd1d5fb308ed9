//! The database's clock, read through the local one.
//!
//! Lease expiry, heartbeats and retry times are compared between relays on different
//! hosts; their own clocks may differ by seconds or more, the database's is the one
//! they share. Each lease round measures the offset between the local clock and the
//! database's (PostgreSQL's `clock_timestamp()`), and every time the relay writes or
//! compares is the local time plus that offset. (SQLite runs in one process, on one
//! host: there the offset stays zero.)

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, FromQueryResult, TransactionTrait};

use crate::error::Result;
use crate::sql::{DatabaseNow, Dialect};

#[derive(Debug)]
pub(crate) struct Clock {
    /// Added to the host's clock: zero, except in tests that skew a relay's clock.
    skew: chrono::Duration,
    /// The database's time minus the (skewed) local time, as last measured.
    offset: Mutex<chrono::Duration>,
}

impl Clock {
    pub(crate) fn new(skew: chrono::Duration) -> Self {
        Clock {
            skew,
            offset: Mutex::new(chrono::Duration::zero()),
        }
    }

    /// The skew a test gave this clock.
    pub(crate) fn skew(&self) -> chrono::Duration {
        self.skew
    }

    fn local(&self) -> DateTime<Utc> {
        Utc::now() + self.skew
    }

    /// The database's time, as well as the last measurement knows it.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.local() + *self.offset.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Measures the offset to the database's clock, taking the middle of the round
    /// trip as the moment the database read its clock: the error is at most half the
    /// round trip. The connection is taken from the pool first, so that a wait for one
    /// (a saturated pool) is not part of the round trip: counted, it made the
    /// database's clock look ahead by half the wait, and the relay take leases that
    /// were still live.
    pub(crate) async fn sync(&self, db: &DatabaseConnection, dialect: Dialect) -> Result<()> {
        let Some(statement) = dialect.database_now() else {
            return Ok(());
        };
        let connection = db.begin().await?;
        let before = self.local();
        let read = DatabaseNow::find_by_statement(statement)
            .one(&connection)
            .await?;
        let after = self.local();
        connection.commit().await?;
        if let Some(read) = read {
            let middle = before + (after - before) / 2;
            *self.offset.lock().unwrap_or_else(PoisonError::into_inner) = read.now - middle;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sea_orm::{ConnectOptions, ConnectionTrait, Database};

    use super::*;

    /// With the pool's only connection busy for a while, the offset measured on the
    /// same host stays near zero: the wait for the connection is not a round trip.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_for_a_pool_connection_is_not_clock_offset() {
        let url = std::env::var("MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        let mut options = ConnectOptions::new(url);
        options.max_connections(1).sqlx_logging(false);
        let db = Database::connect(options)
            .await
            .expect("MySQL or MariaDB (MYSQL_URL)");
        let busy = db.begin().await.expect("take the pool's connection");
        let hold = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            busy.commit().await.expect("give it back");
        });
        let clock = Clock::new(chrono::Duration::zero());
        clock.sync(&db, Dialect::MySql).await.expect("sync");
        hold.await.expect("the holder");
        let offset = clock.now() - Utc::now();
        assert!(
            offset.abs() < chrono::Duration::milliseconds(150),
            "a database on this host looks {offset} away"
        );
        db.execute_unprepared("SELECT 1")
            .await
            .expect("the pool works");
    }
}
