//! Relay membership: heartbeats, which relays of which services are alive, and
//! leaving. The lease rounds (`lease.rs`) share shards among the live relays.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult};

use super::lease::{Keeper, Leases};
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

impl Leases {
    /// Records that this relay is alive (and whether on probation), every few rounds
    /// deletes the rows of relays long gone, and returns the services with live relays.
    pub(super) async fn show_life(
        &self,
        keeper: &mut Keeper,
        db: &DatabaseConnection,
        dialect: Dialect,
        tables: &Tables,
        now: DateTime<Utc>,
        probation: bool,
    ) -> Result<Vec<LiveService>> {
        let heartbeat = dialect.heartbeat(tables, &self.service, &self.relay_id, now, probation);
        db.execute_raw(heartbeat).await?;
        if keeper.rounds.is_multiple_of(LEAVE_EVERY) {
            db.execute_raw(dialect.leave(tables, &self.service, None, self.gone_before(now)))
                .await?;
        }
        keeper.rounds += 1;
        Ok(LiveService::find_by_statement(dialect.live_services(
            tables,
            &self.relay_id,
            now - self.ttl(),
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
        now - self.ttl() * 10
    }
}
