//! Shard leases: which shards this relay may publish, shared fairly among the live
//! relays of a service.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult, Statement};
use tracing::{debug, error, info};

use super::held::{Held, Lease};
use super::membership::Membership;
use super::round::{LiveLease, On, Renewed, Round, TokenRow};
use super::share::fair_share;
use crate::error::Result;
use crate::sql::{Dialect, LeaseKey};
use crate::tables::Tables;

/// The shards this relay holds, with the fencing token of each, shared by the lease
/// keeper and the batches.
///
/// Two locks: `held` (what is owned, what is busy) is taken only between queries, never
/// across one, so a batch never waits behind a lease round's queries; `rounds` is held
/// for a whole round (or release), so rounds, standing aside and the final release
/// never interleave.
#[derive(Debug)]
pub(crate) struct Leases {
    service: String,
    relay_id: String,
    shards: u16,
    ttl: Duration,
    membership: Membership,
    held: std::sync::Mutex<Held>,
    rounds: tokio::sync::Mutex<Rounds>,
}

/// What only rounds read and change.
#[derive(Debug, Default)]
struct Rounds {
    /// Another service whose relays publish the same table and were there first:
    /// this relay holds nothing while they live.
    yielded_to: Option<String>,
    /// Rounds so far, for housekeeping that need not run every round.
    count: u64,
}

impl Leases {
    pub(crate) fn new(service: &str, relay_id: &str, shards: u16, ttl: Duration) -> Self {
        Leases {
            service: service.to_owned(),
            relay_id: relay_id.to_owned(),
            shards,
            ttl,
            membership: Membership::new(service, relay_id, ttl),
            held: std::sync::Mutex::default(),
            rounds: tokio::sync::Mutex::default(),
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
        // No `Busy` unless the batch started: dropping one takes the lock again (a
        // deadlock while the guard lives) and unmarks the shard, which another batch
        // may hold busy.
        let started = self.held().start_batch(shard, token);
        started.then(|| Busy {
            leases: self,
            shard,
        })
    }

    /// The shards held, with their tokens.
    pub(crate) fn owned(&self) -> Vec<(i32, i64)> {
        self.held().tokens()
    }

    /// The token `shard` is held by, if this relay holds it.
    pub(crate) fn token(&self, shard: i32) -> Option<i64> {
        self.held().token(shard)
    }

    /// Whether this relay still holds `shard` with `token` and its local deadline has
    /// not passed: checked before a batch goes to the publisher and before anything is
    /// written for it.
    pub(crate) fn valid(&self, shard: i32, token: i64) -> bool {
        self.held().valid(shard, token)
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
        Lease::new(token, sent + self.ttl.saturating_sub(self.margin()))
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

    fn ttl(&self) -> chrono::Duration {
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
    /// one to it (see [`fair_share`]).
    /// Times are the database's (see `clock.rs`), read as each statement is sent: a
    /// slow round must not write expiries that ended before they were written.
    pub(crate) async fn round(&self, on: On<'_>, probation: bool) -> Result<Round> {
        let mut rounds = self.rounds.lock().await;
        let now = on.clock.now();
        let before = self.count();
        let ended = |rounds: &Rounds, released: &[i32]| Round {
            owned: self.count(),
            took: self.count() > before,
            released: !released.is_empty(),
            yielded_to: rounds.yielded_to.clone(),
        };
        if self.held().closed {
            return Ok(ended(&rounds, &[]));
        }
        let services = self
            .membership
            .show_life(rounds.count, on.db, on.dialect, on.tables, now, probation)
            .await?;
        rounds.count += 1;
        if let Some(owner) = self.membership.table_owner(&services) {
            if rounds.yielded_to.as_deref() != Some(owner.as_str()) {
                error!(
                    relay = %self.relay_id, service = %self.service, other = %owner,
                    "relays of another service publish this outbox table; this relay publishes nothing while they run (give each service its own tables)"
                );
            }
            rounds.yielded_to = Some(owner);
            let released = self.release_idle(0, on, now).await?;
            return Ok(ended(&rounds, &released));
        }
        rounds.yielded_to = None;
        let standing = self.membership.standing(&services, probation);
        let fair = fair_share(self.shards, standing, probation);
        // Give up what is beyond the fair share, highest idle shards first.
        let released = self.release_idle(fair, on, now).await?;
        for shard in &released {
            debug!(shard, relay = %self.relay_id, fair, "shard released for another relay");
        }
        self.renew(on).await?;
        if self.count() < fair {
            self.take(fair, on).await?;
        }
        Ok(ended(&rounds, &released))
    }

    /// Renews every held shard in one statement; a lease found taken (it expired and
    /// another relay took it) is gone.
    async fn renew(&self, on: On<'_>) -> Result<()> {
        let shards: Vec<i32> = self.held().owned.keys().copied().collect();
        if shards.is_empty() {
            return Ok(());
        }
        let (sent, now) = (Instant::now(), on.clock.now());
        let statement = on.dialect.renew_leases(
            on.tables,
            &self.service,
            &self.relay_id,
            &shards,
            now,
            now + self.ttl(),
        );
        let renewed: BTreeMap<i32, i64> = statement
            .rows::<Renewed>(on.db)
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
        Ok(())
    }

    /// Takes free or expired shards until `fair` are held, starting at a place of this
    /// relay's own so that relays starting together do not all race for the same ones.
    async fn take(&self, fair: usize, on: On<'_>) -> Result<()> {
        let live = on
            .dialect
            .live_leases(on.tables, &self.service, on.clock.now());
        let taken: HashSet<i32> = LiveLease::find_by_statement(live)
            .all(on.db)
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
            let (sent, now) = (Instant::now(), on.clock.now());
            if let Some(token) = self.acquire(on, shard, now, now + self.ttl()).await? {
                debug!(shard, token, relay = %self.relay_id, "shard lease taken");
                self.held().owned.insert(shard, self.lease(token, sent));
            }
        }
        Ok(())
    }

    async fn acquire(
        &self,
        on: On<'_>,
        shard: i32,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let rows = on
            .dialect
            .acquire_lease(on.tables, &self.key(shard), now, expires)
            .rows::<TokenRow>(on.db)
            .await?;
        Ok(rows.first().map(|row| row.token))
    }

    /// Gives up shards without a batch in flight, highest first, until `keep` are
    /// left (or only busy ones); returns those given up. They are forgotten before
    /// the release, so no batch starts on them meanwhile. The caller holds `rounds`.
    async fn release_idle(&self, keep: usize, on: On<'_>, now: DateTime<Utc>) -> Result<Vec<i32>> {
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
            on.db
                .execute_raw(self.release(on.dialect, on.tables, shard, now))
                .await?;
        }
        Ok(release)
    }

    /// Gives up every idle shard and leaves the service (its heartbeat row goes), so
    /// the other relays count one relay fewer and take the shards; a later round
    /// rejoins. For a relay that cannot reach the broker. Returns the shards still held
    /// (those with a batch in flight) and whether it gave any up.
    pub(crate) async fn stand_aside(&self, on: On<'_>) -> Result<(usize, bool)> {
        let _rounds = self.rounds.lock().await;
        let now = on.clock.now();
        let released = self.release_idle(0, on, now).await?;
        self.membership
            .leave(on.db, on.dialect, on.tables, now)
            .await?;
        Ok((self.count(), !released.is_empty()))
    }

    /// Gives up every shard and leaves the service, so other relays take over at once;
    /// returns whether it held any.
    pub(crate) async fn release_all(&self, on: On<'_>) -> Result<bool> {
        let _rounds = self.rounds.lock().await;
        let now = on.clock.now();
        let owned = {
            let mut held = self.held();
            held.closed = true;
            std::mem::take(&mut held.owned)
        };
        let released = !owned.is_empty();
        for shard in owned.into_keys() {
            on.db
                .execute_raw(self.release(on.dialect, on.tables, shard, now))
                .await?;
        }
        self.membership
            .leave(on.db, on.dialect, on.tables, now)
            .await?;
        Ok(released)
    }
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
    use std::sync::mpsc;

    use super::*;

    /// A batch refused on a shard leaves the shard's state alone, at once.
    #[test]
    fn a_batch_on_a_shard_not_held_is_refused_without_touching_its_state() {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let leases = Leases::new("svc", "relay-1", 16, Duration::from_secs(30));
            let refused = leases.start_batch(3, 1).is_none();
            let _ = done.send(refused);
        });
        let refused = finished
            .recv_timeout(Duration::from_secs(5))
            .expect("start_batch returned (no deadlock)");
        assert!(refused);
    }

    /// Refusing a batch does not unmark a shard another batch holds busy.
    #[test]
    fn a_refused_batch_leaves_another_batchs_shard_busy() {
        let leases = Leases::new("svc", "relay-1", 16, Duration::from_secs(30));
        let until = Instant::now() + Duration::from_secs(30);
        leases.held().owned.insert(3, Lease::new(7, until));
        let busy = leases.start_batch(3, 7).expect("held with token 7");
        assert!(
            leases.start_batch(3, 8).is_none(),
            "another token is refused"
        );
        assert!(
            leases.held().busy.contains(&3),
            "still busy with the first batch"
        );
        drop(busy);
        assert!(!leases.held().busy.contains(&3));
    }
}
