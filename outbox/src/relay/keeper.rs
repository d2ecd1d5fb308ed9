//! The lease keeper: renews the relay's shard leases and heartbeat on a schedule of
//! its own, and stands the relay aside while the broker is unreachable.

use std::sync::Arc;

use sea_orm::DbBackend;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Inner;
use super::state::Concern;
use crate::error::Result;
use crate::publisher::Publisher;
use crate::wake;

impl<P: Publisher> Inner<P> {
    /// One lease round; returns whether it took shards.
    pub(super) async fn lease_round(&self) -> Result<bool> {
        let dialect = self.dialect()?;
        self.clock.sync(&self.db, dialect).await?;
        let round = self
            .leases
            .round(
                &self.db,
                dialect,
                self.outbox.tables(),
                &self.clock,
                self.stall.on_probation(),
            )
            .await?;
        self.state.owned_shards(round.owned);
        self.state.concern(Concern::OtherService, round.yielded_to.map(|other| {
            format!(
                "relays of service {other:?} publish this outbox table too and started first; \
                 this relay (service {:?}) publishes nothing while they run: give each service its own tables",
                self.config.service_name
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
    pub(super) async fn announce_release(&self) {
        self.outbox.wake().announce_release(&self.doorbell);
        if self.db.get_database_backend() != DbBackend::Postgres {
            return;
        }
        let channel = wake::channel(self.outbox.tables());
        wake::notify(&self.db, &channel, wake::released_payload(&self.relay_id)).await;
    }

    /// Renews the leases and the heartbeat every third of the lease time, on a
    /// schedule of its own: however long a batch takes (a slow broker), the shards
    /// stay this relay's while it lives and reaches the database. Another relay giving
    /// shards up brings the next round forward.
    pub(super) async fn keep_leases(self: Arc<Self>, cancel: CancellationToken) {
        let every = self.config.lease_ttl / 3;
        while !cancel.is_cancelled() {
            let round = if self.stall.stalled() {
                self.stand_aside_or_rejoin().await
            } else {
                self.lease_round().await
            };
            match round {
                Ok(true) => self.leased.notify_one(),
                Ok(false) => {}
                Err(error) => {
                    warn!(relay = %self.relay_id, %error, "lease round failed; retrying");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.renew_now.notified() => {}
                () = self.doorbell.release_heard() => {}
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// For a stalled relay: back on probation with one shard (a normal lease round,
    /// capped) when the broker answers a check again and the wait after a failed
    /// probation is over; otherwise gives up its shards and its heartbeat, so relays
    /// that can deliver take its keys (see `stall.rs`).
    pub(super) async fn stand_aside_or_rejoin(&self) -> Result<bool> {
        if self.stall.may_probe() && self.publisher.check().await.is_ok() {
            info!(relay = %self.relay_id, "the broker answers again; rejoining with one shard until a delivery succeeds");
            self.stall.start_probation();
            return self.lease_round().await;
        }
        let dialect = self.dialect()?;
        self.clock.sync(&self.db, dialect).await?;
        if self.leases.count() > 0 {
            warn!(
                relay = %self.relay_id,
                "nothing delivered to the broker for {}; giving up this relay's shards until it answers again",
                humantime::format_duration(self.config.stall_timeout)
            );
        }
        let (owned, released) = self
            .leases
            .stand_aside(&self.db, dialect, self.outbox.tables(), self.clock.now())
            .await?;
        if released {
            self.announce_release().await;
        }
        self.state.owned_shards(owned);
        self.state.concern(
            Concern::Stalled,
            Some(format!(
                "nothing delivered to the broker for over {}: shards given up until it answers again",
                humantime::format_duration(self.config.stall_timeout)
            )),
        );
        Ok(false)
    }
}
