//! Relay membership: heartbeats, which relays of which services are alive, and
//! leaving. The lease rounds (`lease.rs`) share shards among the live relays.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult};

use crate::error::Result;
use crate::sql::Dialect;
use crate::tables::Tables;

/// The rows of relays gone (no heartbeat for a lease time) are deleted every this many
/// rounds: nothing counts them meanwhile (live relays are those with a recent
/// heartbeat), and an idle relay's queries stay near one a second.
const LEAVE_EVERY: u64 = 6;

/// A service with live relays: when the first of them started, how many there are,
/// how many of those are on probation (see `stall.rs`), and how many not on probation
/// come before this relay by id.
#[derive(Debug, FromQueryResult)]
pub(super) struct LiveService {
    pub(super) service_name: String,
    pub(super) since: DateTime<Utc>,
    pub(super) relays: i64,
    pub(super) on_probation: i64,
    pub(super) ahead: i64,
}

/// One relay's membership of its service: its heartbeat row.
#[derive(Debug)]
pub(super) struct Membership {
    service: String,
    relay_id: String,
    ttl: chrono::Duration,
}

impl Membership {
    pub(super) fn new(service: &str, relay_id: &str, ttl: Duration) -> Self {
        Membership {
            service: service.to_owned(),
            relay_id: relay_id.to_owned(),
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        }
    }

    /// Records that this relay is alive (and whether on probation), in round `round`
    /// (counted from 0) deletes the rows of relays long gone if it is time, and returns
    /// the services with live relays.
    pub(super) async fn show_life(
        &self,
        round: u64,
        db: &DatabaseConnection,
        dialect: Dialect,
        tables: &Tables,
        now: DateTime<Utc>,
        probation: bool,
    ) -> Result<Vec<LiveService>> {
        let heartbeat = dialect.heartbeat(tables, &self.service, &self.relay_id, now, probation);
        db.execute_raw(heartbeat).await?;
        if round.is_multiple_of(LEAVE_EVERY) {
            db.execute_raw(dialect.leave(tables, &self.service, None, self.gone_before(now)))
                .await?;
        }
        Ok(LiveService::find_by_statement(dialect.live_services(
            tables,
            &self.relay_id,
            now - self.ttl,
        ))
        .all(db)
        .await?)
    }

    /// The other service that owns the table, if any: of the services with live
    /// relays, the one whose relays started first.
    pub(super) fn table_owner(&self, services: &[LiveService]) -> Option<String> {
        services
            .iter()
            .min_by(|a, b| (a.since, &a.service_name).cmp(&(b.since, &b.service_name)))
            .map(|owner| owner.service_name.clone())
            .filter(|owner| *owner != self.service)
    }

    /// This relay's service among `services`: its live relays, those on probation,
    /// and those not on probation before this one by id. A relay counts itself even
    /// before its first heartbeat is seen.
    pub(super) fn standing(&self, services: &[LiveService], probation: bool) -> Standing {
        services
            .iter()
            .find(|service| service.service_name == self.service)
            .map_or(
                Standing {
                    relays: 1,
                    on_probation: i64::from(probation),
                    ahead: 0,
                },
                |service| Standing {
                    relays: service.relays,
                    on_probation: service.on_probation,
                    ahead: service.ahead,
                },
            )
    }

    /// Deletes this relay's heartbeat row: the others count one relay fewer.
    pub(super) async fn leave(
        &self,
        db: &DatabaseConnection,
        dialect: Dialect,
        tables: &Tables,
        now: DateTime<Utc>,
    ) -> Result<()> {
        db.execute_raw(dialect.leave(
            tables,
            &self.service,
            Some(&self.relay_id),
            self.gone_before(now),
        ))
        .await?;
        Ok(())
    }

    /// Relays silent since before this are gone for good; their rows are removed.
    fn gone_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.ttl * 10
    }
}

/// Where this relay stands among the live relays of its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Standing {
    pub(super) relays: i64,
    pub(super) on_probation: i64,
    pub(super) ahead: i64,
}
