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
use sea_orm::{DatabaseConnection, FromQueryResult};

use crate::error::Result;
use crate::sql::Dialect;

#[derive(Debug)]
pub(crate) struct Clock {
    /// Added to the host's clock: zero, except in tests that skew a relay's clock.
    skew: chrono::Duration,
    /// The database's time minus the (skewed) local time, as last measured.
    offset: Mutex<chrono::Duration>,
}

#[derive(Debug, FromQueryResult)]
struct DatabaseNow {
    now: DateTime<Utc>,
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
    /// trip as the moment the database read its clock.
    pub(crate) async fn sync(&self, db: &DatabaseConnection, dialect: Dialect) -> Result<()> {
        let Some(statement) = dialect.database_now() else {
            return Ok(());
        };
        let before = self.local();
        let read = DatabaseNow::find_by_statement(statement).one(db).await?;
        let after = self.local();
        if let Some(read) = read {
            let middle = before + (after - before) / 2;
            *self.offset.lock().unwrap_or_else(PoisonError::into_inner) = read.now - middle;
        }
        Ok(())
    }
}
