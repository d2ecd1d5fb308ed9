//! [`Keeper`]: the lease keeper. It holds the relay's shard leases, the database's
//! clock and the stall breaker, renews the leases and the heartbeat on a schedule of
//! its own, and stands the relay aside while the broker is unreachable.

use std::future::Future;
use std::sync::Arc;

use sea_orm::DbBackend;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::clock::Clock;
use super::lease::Leases;
use super::round::On;
use super::setup::Setup;
use super::stall::Stall;
use super::state::Concern;
use crate::error::Result;
use crate::wake;

/// The lease keeper's state, shared with the main loop and the batches.
#[derive(Debug)]
pub(super) struct Keeper {
    setup: Arc<Setup>,
    /// The shards this relay holds.
    pub(super) leases: Leases,
    /// The database's clock, measured at every round.
    pub(super) clock: Clock,
    /// The breaker for a broker the relay cannot deliver to.
    pub(super) stall: Stall,
    /// Asks for a round now.
    renew_now: Notify,
    /// Tells the main loop that a round took shards.
    leased: Notify,
}

impl Keeper {
    pub(super) fn new(setup: Arc<Setup>, skew: chrono::Duration) -> Self {
        let config = &setup.config;
        let leases = Leases::new(
            &config.service_name,
            &setup.relay_id,
            setup.outbox.shards(),
            config.lease_ttl,
        );
        let stall = Stall::new(config.stall_timeout);
        Keeper {
            setup,
            leases,
            clock: Clock::new(skew),
            stall,
            renew_now: Notify::new(),
            leased: Notify::new(),
        }
    }

    fn on(&self) -> On<'_> {
        On {
            db: &self.setup.db,
            dialect: self.setup.dialect,
            tables: self.setup.tables(),
            clock: &self.clock,
        }
    }

    /// Asks for a lease round now (a lease may be lost, or the relay may rejoin).
    pub(super) fn renew_soon(&self) {
        self.renew_now.notify_one();
    }

    /// Ends when a lease round took shards.
    pub(super) async fn took_shards(&self) {
        self.leased.notified().await;
    }

    /// One lease round; returns whether it took shards.
    pub(super) async fn lease_round(&self) -> Result<bool> {
        let setup = &*self.setup;
        self.clock.sync(&setup.db, setup.dialect).await?;
        let round = self
            .leases
            .round(self.on(), self.stall.on_probation())
            .await?;
        setup.state.owned_shards(round.owned);
        setup.state.concern(Concern::OtherService, round.yielded_to.map(|other| {
            format!(
                "relays of service {other:?} publish this outbox table too and started first; \
                 this relay (service {:?}) publishes nothing while they run: give each service its own tables",
                setup.config.service_name
            )
        }));
        if round.released {
            self.announce_release().await;
        }
        Ok(round.took)
    }

    /// This relay gave shards up: the service's other relays take them now, not at
    /// their next round (a third of the lease time later at most, while events stored
    /// to those shards wait). Relays of this process hear it through the outbox's
    /// doorbells, others (on PostgreSQL) through a `NOTIFY` on the wake-up channel.
    /// A lost announcement costs only that wait. (A relay of this process that also
    /// listens hears it twice and runs two rounds: harmless.)
    async fn announce_release(&self) {
        let setup = &*self.setup;
        setup.outbox.wake().announce_release(&setup.doorbell);
        if setup.db.get_database_backend() != DbBackend::Postgres {
            return;
        }
        let channel = wake::channel(setup.tables());
        wake::send_notify(&setup.db, &channel, wake::released_payload(&setup.relay_id)).await;
    }

    /// Renews the leases and the heartbeat every third of the lease time, on a
    /// schedule of its own: however long a batch takes (a slow broker), the shards
    /// stay this relay's while it lives and reaches the database. Another relay giving
    /// shards up brings the next round forward. `broker_answers` checks the broker for
    /// a relay that stands aside.
    pub(super) async fn keep_leases<F, Answers>(
        self: Arc<Self>,
        broker_answers: F,
        cancel: CancellationToken,
    ) where
        F: Fn() -> Answers,
        Answers: Future<Output = bool>,
    {
        let every = self.setup.config.lease_ttl / 3;
        while !cancel.is_cancelled() {
            let round = if self.stall.stalled() {
                self.stand_aside_or_rejoin(&broker_answers).await
            } else {
                self.lease_round().await
            };
            match round {
                Ok(true) => self.leased.notify_one(),
                Ok(false) => {}
                Err(error) => {
                    warn!(relay = %self.setup.relay_id, %error, "lease round failed; retrying");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.renew_now.notified() => {}
                () = self.setup.doorbell.release_heard() => {}
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// For a stalled relay: back on probation with one shard (a normal lease round,
    /// capped) when the broker answers a check again and the wait after a failed
    /// probation is over; otherwise gives up its shards and its heartbeat, so relays
    /// that can deliver take its keys (see `stall.rs`).
    async fn stand_aside_or_rejoin<F, Answers>(&self, broker_answers: &F) -> Result<bool>
    where
        F: Fn() -> Answers,
        Answers: Future<Output = bool>,
    {
        let setup = &*self.setup;
        if self.stall.may_probe() && broker_answers().await {
            info!(relay = %setup.relay_id, "the broker answers again; rejoining with one shard until a delivery succeeds");
            self.stall.start_probation();
            return self.lease_round().await;
        }
        self.clock.sync(&setup.db, setup.dialect).await?;
        let stall_timeout = humantime::format_duration(setup.config.stall_timeout);
        if self.leases.count() > 0 {
            warn!(
                relay = %setup.relay_id,
                "nothing delivered to the broker for {stall_timeout}; giving up this relay's shards until it answers again",
            );
        }
        let (owned, released) = self.leases.stand_aside(self.on()).await?;
        if released {
            self.announce_release().await;
        }
        setup.state.owned_shards(owned);
        setup.state.concern(
            Concern::Stalled,
            Some(format!(
                "nothing delivered to the broker for over {stall_timeout}: shards given up until it answers again",
            )),
        );
        Ok(false)
    }

    /// The relay stops: it says so and gives its shards up.
    pub(super) async fn stop(&self) {
        self.setup.state.stopped();
        match self.leases.release_all(self.on()).await {
            Ok(true) => self.announce_release().await,
            Ok(false) => {}
            Err(error) => {
                warn!(relay = %self.setup.relay_id, %error, "could not release leases; they expire on their own");
            }
        }
    }
}
