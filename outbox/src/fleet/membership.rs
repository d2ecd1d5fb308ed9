//! A fleet member's heartbeat in the fleet's coordinator database (`_outbox_fleet`),
//! and the live members it reads back there.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, FromQueryResult};
use tracing::{info, warn};

use super::source::DatabaseEntry;
use crate::error::{Error, Result};
use crate::secrets::Secrets;
use crate::sql::{DatabaseNow, Dialect};

/// Members silent for ten times the time to live are deleted.
const FORGET_AFTER: i32 = 10;

#[derive(Debug, FromQueryResult)]
struct Member {
    member_id: String,
}

/// This process's membership of its fleet.
#[derive(Debug)]
pub(super) struct Membership {
    service: String,
    member_id: String,
    ttl: chrono::Duration,
    connect_timeout: Duration,
    /// The coordinator it reaches, with a pool of one connection.
    coordinator: Option<(DatabaseEntry, DatabaseConnection, Dialect)>,
}

impl Membership {
    pub(super) fn new(
        service: &str,
        member_id: String,
        ttl: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Membership {
            service: service.to_owned(),
            member_id,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            connect_timeout,
            coordinator: None,
        }
    }

    pub(super) fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Shows this member alive in `coordinator` and reads the live members (this one
    /// among them), by id.
    ///
    /// # Errors
    /// The coordinator's: it cannot be reached, or has no `_outbox_fleet` table.
    pub(super) async fn round(&mut self, coordinator: &DatabaseEntry) -> Result<Vec<String>> {
        self.connect(coordinator).await?;
        let Some((entry, db, dialect)) = &self.coordinator else {
            return Err(unreachable(coordinator, "no connection"));
        };
        let (tables, dialect) = (entry.tables(), *dialect);
        let now = match dialect.database_now() {
            Some(statement) => DatabaseNow::find_by_statement(statement)
                .one(db)
                .await?
                .map_or_else(Utc::now, |row| row.now),
            None => Utc::now(),
        };
        db.execute_raw(dialect.fleet_heartbeat(tables, &self.service, &self.member_id, now))
            .await?;
        db.execute_raw(dialect.fleet_leave(
            tables,
            &self.service,
            None,
            now - self.ttl * FORGET_AFTER,
        ))
        .await?;
        let members =
            Member::find_by_statement(dialect.fleet_members(tables, &self.service, now - self.ttl))
                .all(db)
                .await?;
        Ok(members.into_iter().map(|member| member.member_id).collect())
    }

    /// Deletes this member's heartbeat: the others share its databases at once.
    pub(super) async fn leave(&mut self) {
        let Some((entry, db, dialect)) = self.coordinator.take() else {
            return;
        };
        let statement = dialect.fleet_leave(
            entry.tables(),
            &self.service,
            Some(&self.member_id),
            DateTime::<Utc>::MIN_UTC,
        );
        if let Err(error) = db.execute_raw(statement).await {
            warn!(member = %self.member_id, %error, "could not leave the fleet; the others wait for its heartbeat to age");
        }
        db.close().await.ok();
    }

    /// Makes the coordinator's pool (again) when there is none or the coordinator
    /// changed.
    async fn connect(&mut self, coordinator: &DatabaseEntry) -> Result<()> {
        if self
            .coordinator
            .as_ref()
            .is_some_and(|(entry, _, _)| entry != coordinator)
            && let Some((_, db, _)) = self.coordinator.take()
        {
            db.close().await.ok();
        }
        if self.coordinator.is_none() {
            let url = coordinator.url().as_str();
            let mut options = ConnectOptions::new(url);
            options
                .max_connections(1)
                .min_connections(0)
                .connect_timeout(self.connect_timeout)
                .acquire_timeout(self.connect_timeout)
                .sqlx_logging(false);
            let db = Database::connect(options)
                .await
                .map_err(|error| unreachable(coordinator, &error.to_string()))?;
            let dialect = Dialect::of(db.get_database_backend())?;
            info!(coordinator = %coordinator.name(), member = %self.member_id, "fleet membership kept in the coordinator database");
            self.coordinator = Some((coordinator.clone(), db, dialect));
        }
        Ok(())
    }
}

/// The coordinator cannot be reached, for `why` (its URL's password taken out).
fn unreachable(coordinator: &DatabaseEntry, why: &str) -> Error {
    let url = coordinator.url().as_str();
    Error::Unhealthy {
        reason: Secrets::of_url(url).scrub(&format!(
            "cannot reach the fleet's coordinator {}: {why}",
            coordinator.name()
        )),
    }
}
