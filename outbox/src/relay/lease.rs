//! Shard leases: which shards this relay may publish, shared fairly among the live
//! relays of a service.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Statement};
use tracing::{debug, error, info};

use super::clock::Clock;
use crate::error::Result;
use crate::sql::{Dialect, LeaseKey};
use crate::tables::Tables;

/// The shards this relay holds, with the fencing token of each, shared by the lease
/// keeper and the batches.
///
/// Two locks: `held` (what is owned, what is busy) is taken only between queries, never
/// across one, so a batch never waits behind a lease round's queries; `keeper` is held
/// for a whole round (or release), so rounds, standing aside and the final release
/// never interleave.
#[derive(Debug)]
pub(crate) struct Leases {
    pub(super) service: String,
    pub(super) relay_id: String,
    shards: u16,
    ttl: Duration,
    held: std::sync::Mutex<Held>,
    keeper: tokio::sync::Mutex<Keeper>,
}

/// A shard held: its fencing token, and until when this relay may act on it.
#[derive(Debug, Clone, Copy)]
struct Lease {
    token: i64,
    /// The local, monotonic deadline: the start of the statement that took or last
    /// renewed the lease, plus the lease time, minus [`Leases::margin`]. A relay
    /// paused past it (SIGSTOP, a frozen VM, CPU throttling) may have lost the shard
    /// to a relay that saw the lease expire; it claims, publishes and writes nothing
    /// on it until a round renews it.
    valid_until: Instant,
}

impl Lease {
    fn valid(&self, token: i64) -> bool {
        self.token == token && Instant::now() < self.valid_until
    }
}

/// What batches and rounds read and change.
#[derive(Debug, Default)]
struct Held {
    owned: BTreeMap<i32, Lease>,
    /// Shards with a batch in flight: never given up until it is written back.
    busy: HashSet<i32>,
    /// Set when the relay stops: no round takes or renews anything after.
    closed: bool,
}

/// What only rounds read and change.
#[derive(Debug, Default)]
pub(super) struct Keeper {
    /// Another service whose relays publish the same table and were there first:
    /// this relay holds nothing while they live.
    yielded_to: Option<String>,
    /// Rounds so far, for housekeeping that need not run every round.
    pub(super) rounds: u64,
}

/// What a round ended with.
#[derive(Debug)]
pub(crate) struct Round {
    /// Shards held after it.
    pub(crate) owned: usize,
    /// Whether it took shards it did not hold before.
    pub(crate) took: bool,
    /// Whether it gave shards up (for another relay, or all of them).
    pub(crate) released: bool,
    /// The service this relay gives way to, if another service's relays publish the
    /// same table and started first.
    pub(crate) yielded_to: Option<String>,
}

#[derive(Debug, FromQueryResult)]
struct TokenRow {
    token: i64,
}

#[derive(Debug, FromQueryResult)]
struct Renewed {
    shard: i32,
    token: i64,
}

#[derive(Debug, FromQueryResult)]
struct LiveLease {
    shard: i32,
    owner: String,
}

impl Leases {
    pub(crate) fn new(service: &str, relay_id: &str, shards: u16, ttl: Duration) -> Self {
        Leases {
            service: service.to_owned(),
            relay_id: relay_id.to_owned(),
            shards,
            ttl,
            held: std::sync::Mutex::default(),
            keeper: tokio::sync::Mutex::default(),
        }
    }

    /// The in-memory state; never held across an await.
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `shard` busy for a batch if this relay still holds it with `token`
    /// and its local deadline has not passed, until the returned guard is dropped (the
    /// batch written back, abandoned, or ended by a panic).
    pub(crate) fn start_batch(&self, shard: i32, token: i64) -> Option<Busy<'_>> {
        let mut held = self.held();
        if !held
            .owned
            .get(&shard)
            .is_some_and(|lease| lease.valid(token))
        {
            return None;
        }
        held.busy.insert(shard);
        Some(Busy {
            leases: self,
            shard,
        })
    }

    /// The shards held, with their tokens.
    pub(crate) fn owned(&self) -> Vec<(i32, i64)> {
        self.held()
            .owned
            .iter()
            .map(|(&shard, lease)| (shard, lease.token))
            .collect()
    }

    /// The token `shard` is held by, if this relay holds it.
    pub(crate) fn token(&self, shard: i32) -> Option<i64> {
        self.held().owned.get(&shard).map(|lease| lease.token)
    }

    /// Whether this relay still holds `shard` with `token` and its local deadline has
    /// not passed: checked before a batch goes to the publisher and before anything is
    /// written for it.
    pub(crate) fn valid(&self, shard: i32, token: i64) -> bool {
        self.held()
            .owned
            .get(&shard)
            .is_some_and(|lease| lease.valid(token))
    }

    /// How much sooner than the database's expiry a lease ends here: room for the
    /// error of this relay's and another relay's estimates of the database's clock
    /// (each within half a round trip, see `clock.rs`), and for the time between the
    /// check and the act it guards.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }

    /// A lease taken or renewed by a statement sent at `sent`, with `token`.
    fn lease(&self, token: i64, sent: Instant) -> Lease {
        Lease {
            token,
            valid_until: sent + self.ttl.saturating_sub(self.margin()),
        }
    }

    /// Forgets a shard whose lease turned out to be lost.
    pub(crate) fn lost(&self, shard: i32) {
        if self.held().owned.remove(&shard).is_some() {
            info!(shard, relay = %self.relay_id, "shard lease lost to another relay");
        }
    }

    /// The statement that gives `shard` up. Its lease expired a lease time ago, not
    /// now: the relays told of it take it at once (see `keeper.rs`), and one whose
    /// estimate of the database's clock is a few milliseconds behind this relay's
    /// would see it live and wait for its next round.
    fn release(
        &self,
        dialect: Dialect,
        tables: &Tables,
        shard: i32,
        now: DateTime<Utc>,
    ) -> Statement {
        dialect.release_lease(tables, &self.key(shard), now, now - self.ttl())
    }

    fn key(&self, shard: i32) -> LeaseKey<'_> {
        LeaseKey {
            service: &self.service,
            shard,
            owner: &self.relay_id,
        }
    }

    /// How many shards are held.
    pub(crate) fn count(&self) -> usize {
        self.held().owned.len()
    }

    pub(super) fn ttl(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX)
    }

    /// One round: record that this relay is alive, count the live relays, keep (renew)
    /// at most a fair share of shards, give up the rest, and take free or expired
    /// shards up to the fair share. Rounds run on their own schedule, beside the
    /// batches; a shard with a batch in flight is never given up, so two relays never
    /// work on one shard by handing it over.
    ///
    /// One outbox table belongs to one service: when relays of another service publish
    /// the same table and started first, this relay gives up its idle shards, takes
    /// none, and says so, until they are gone. (Two services would each publish every
    /// event, and one key's events could go out from both at once.)
    ///
    /// A relay on `probation` (see `stall.rs`) takes one shard, and the others leave
    /// one to it: they share the rest among the relays not on probation. When every
    /// relay is on probation, each takes a full share.
    /// Times are the database's (see `clock.rs`), read as each statement is sent: a
    /// slow round must not write expiries that ended before they were written.
    pub(crate) async fn round(
        &self,
        db: &DatabaseConnection,
        dialect: Dialect,
        tables: &Tables,
        clock: &Clock,
        probation: bool,
    ) -> Result<Round> {
        let mut keeper = self.keeper.lock().await;
        let now = clock.now();
        let before = self.count();
        let ended = |keeper: &Keeper, released: &[i32]| Round {
            owned: self.count(),
            took: self.count() > before,
            released: !released.is_empty(),
            yielded_to: keeper.yielded_to.clone(),
        };
        if self.held().closed {
            return Ok(ended(&keeper, &[]));
        }
        let services = self
            .show_life(&mut keeper, db, dialect, tables, now, probation)
            .await?;
        if let Some(owner) = self.table_owner(&services) {
            if keeper.yielded_to.as_deref() != Some(owner.as_str()) {
                error!(
                    relay = %self.relay_id, service = %self.service, other = %owner,
                    "relays of another service publish this outbox table; this relay publishes nothing while they run (give each service its own tables)"
                );
            }
            keeper.yielded_to = Some(owner);
            let released = self.release_idle(0, db, dialect, tables, now).await?;
            return Ok(ended(&keeper, &released));
        }
        keeper.yielded_to = None;
        // This relay counts itself even before its first heartbeat is seen.
        let (relays, on_probation, ahead) = services
            .iter()
            .find(|service| service.service_name == self.service)
            .map_or((1, i64::from(probation), 0), |service| {
                (service.relays, service.on_probation, service.ahead)
            });
        let all = i64::from(self.shards);
        let fair = match (probation, on_probation < relays) {
            // Every relay is on probation (a broker back for all of them, or a lone
            // relay): nobody else would take the shards, so each takes a full share.
            (_, false) => share(all, relays, 0, 0),
            (true, true) => 1,
            (false, true) => share(all, relays, on_probation, ahead),
        };

        // Give up what is beyond the fair share, highest idle shards first.
        let released = self.release_idle(fair, db, dialect, tables, now).await?;
        for shard in &released {
            debug!(shard, relay = %self.relay_id, fair, "shard released for another relay");
        }
        // Renew the rest in one statement; a lease found taken (it expired and another
        // relay took it) is gone.
        let shards: Vec<i32> = self.held().owned.keys().copied().collect();
        if !shards.is_empty() {
            let (sent, now) = (Instant::now(), clock.now());
            let statement = dialect.renew_leases(
                tables,
                &self.service,
                &self.relay_id,
                &shards,
                now,
                now + self.ttl(),
            );
            let renewed: BTreeMap<i32, i64> = statement
                .rows::<Renewed>(db)
                .await?
                .into_iter()
                .map(|row| (row.shard, row.token))
                .collect();
            for shard in shards {
                match renewed.get(&shard) {
                    Some(&token) => {
                        // Unless a batch found it lost meanwhile.
                        if let Some(held) = self.held().owned.get_mut(&shard) {
                            *held = self.lease(token, sent);
                        }
                    }
                    None => self.lost(shard),
                }
            }
        }
        if self.count() >= fair {
            return Ok(ended(&keeper, &released));
        }
        // Take free or expired shards, starting at a place of this relay's own so that
        // relays starting together do not all race for the same ones.
        let taken: HashSet<i32> =
            LiveLease::find_by_statement(dialect.live_leases(tables, &self.service, clock.now()))
                .all(db)
                .await?
                .into_iter()
                .filter(|lease| lease.owner != self.relay_id)
                .map(|lease| lease.shard)
                .collect();
        let start =
            i32::try_from(crate::key::key_hash(&self.relay_id) % u64::from(self.shards.max(1)))
                .unwrap_or(0);
        let count = i32::from(self.shards);
        for offset in 0..count {
            if self.count() >= fair {
                break;
            }
            let shard = (start + offset) % count;
            if taken.contains(&shard) || self.held().owned.contains_key(&shard) {
                continue;
            }
            let (sent, now) = (Instant::now(), clock.now());
            if let Some(token) = self
                .acquire(db, dialect, tables, shard, now, now + self.ttl())
                .await?
            {
                debug!(shard, token, relay = %self.relay_id, "shard lease taken");
                self.held().owned.insert(shard, self.lease(token, sent));
            }
        }
        Ok(ended(&keeper, &released))
    }

    async fn acquire(
        &self,
        db: &DatabaseConnection,
        dialect: Dialect,
        tables: &Tables,
        shard: i32,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let rows = dialect
            .acquire_lease(tables, &self.key(shard), now, expires)
            .rows::<TokenRow>(db)
            .await?;
        Ok(rows.first().map(|row| row.token))
    }

    /// Gives up shards without a batch in flight, highest first, until `keep` are
    /// left (or only busy ones); returns those given up. They are forgotten before
    /// the release, so no batch starts on them meanwhile. The caller holds `keeper`.
    async fn release_idle(
        &self,
        keep: usize,
        db: &DatabaseConnection,
        dialect: Dialect,
        tables: &Tables,
        now: DateTime<Utc>,
    ) -> Result<Vec<i32>> {
        let release: Vec<i32> = {
            let mut held = self.held();
            let surplus = held.owned.len().saturating_sub(keep);
            let release: Vec<i32> = held
                .owned
                .keys()
                .rev()
                .filter(|shard| !held.busy.contains(shard))
                .take(surplus)
                .copied()
                .collect();
            for shard in &release {
                held.owned.remove(shard);
            }
            release
        };
        for &shard in &release {
            db.execute_raw(self.release(dialect, tables, shard, now))
                .await?;
        }
        Ok(release)
    }

    /// Gives up every idle shard and leaves the service (its heartbeat row goes), so
    /// the other relays count one relay fewer and take the shards; a later round
    /// rejoins. For a relay that cannot reach the broker. Returns the shards still held
    /// (those with a batch in flight) and whether it gave any up.
    pub(crate) async fn stand_aside(
        &self,
        db: &DatabaseConnection,
        dialect: Dialect,
        tables: &Tables,
        now: DateTime<Utc>,
    ) -> Result<(usize, bool)> {
        let _keeper = self.keeper.lock().await;
        let released = self.release_idle(0, db, dialect, tables, now).await?;
        self.leave(db, dialect, tables, now).await?;
        Ok((self.count(), !released.is_empty()))
    }

    /// Gives up every shard and leaves the service, so other relays take over at once;
    /// returns whether it held any.
    pub(crate) async fn release_all(
        &self,
        db: &DatabaseConnection,
        dialect: Dialect,
        tables: &Tables,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let _keeper = self.keeper.lock().await;
        let owned = {
            let mut held = self.held();
            held.closed = true;
            std::mem::take(&mut held.owned)
        };
        let released = !owned.is_empty();
        for shard in owned.into_keys() {
            db.execute_raw(self.release(dialect, tables, shard, now))
                .await?;
        }
        self.leave(db, dialect, tables, now).await?;
        Ok(released)
    }
}

/// This relay's fair share of `shards` among `relays` live relays, `on_probation` of
/// which hold one shard each, this one with `ahead` relays not on probation before it
/// by id: the others split what is left exactly, the first by id taking one more, so
/// the shares add up and the probations' shards stay free for them.
fn share(shards: i64, relays: i64, on_probation: i64, ahead: i64) -> usize {
    let live = (relays - on_probation).max(1);
    let left = (shards - on_probation).max(0);
    let share = left / live + i64::from(ahead < left % live);
    usize::try_from(share).unwrap_or(0)
}

/// A shard busy with a batch (see [`Leases::start_batch`]); no longer busy once dropped.
#[derive(Debug)]
pub(crate) struct Busy<'a> {
    leases: &'a Leases,
    shard: i32,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.leases.held().busy.remove(&self.shard);
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up_to_the_shards_left_by_the_probations() {
        for (shards, relays, on_probation) in [
            (16, 1, 0),
            (16, 3, 0),
            (16, 3, 1),
            (16, 2, 1),
            (5, 7, 0),
            (16, 17, 1),
        ] {
            let healthy = relays - on_probation;
            let total: usize = (0..healthy)
                .map(|ahead| share(shards, relays, on_probation, ahead))
                .sum();
            let left = usize::try_from((shards - on_probation).max(0)).expect("small");
            assert_eq!(
                total, left,
                "{shards} shards, {relays} relays, {on_probation} on probation"
            );
        }
        assert_eq!(share(16, 3, 0, 0), 6);
        assert_eq!(share(16, 3, 0, 2), 5);
        assert_eq!(
            share(16, 2, 1, 0),
            15,
            "one shard left to the relay on probation"
        );
    }
}
