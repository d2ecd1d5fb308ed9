//! The relay's main loop: a batch per due shard as soon as a slot is free, polls on
//! a timer, and the service's offset written now and then.

use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt as _;
use tokio::task::{self, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::batch::Batcher;
use super::keeper::Keeper;
use super::metrics::relay_metric_names;
use super::offset::Offset;
use super::outcome::ShardOutcome;
use super::schedule::{Batch, Schedule};
use super::setup::Setup;
use super::state::Concern;
use super::unannounced::Unannounced;
use crate::completion::Completion;
use crate::error::{Error, Result};
use crate::publisher::Publisher;

/// The main loop's parts: the setup, the lease keeper, the batcher.
#[derive(Debug)]
pub(super) struct Runner<P> {
    setup: Arc<Setup>,
    keeper: Arc<Keeper>,
    batcher: Arc<Batcher<P>>,
}

impl<P: Publisher> Runner<P> {
    pub(super) fn new(setup: Arc<Setup>, keeper: Arc<Keeper>, batcher: Arc<Batcher<P>>) -> Self {
        Runner {
            setup,
            keeper,
            batcher,
        }
    }

    /// The main loop, and what follows should it ever end by a panic (batches' and
    /// polls' panics are caught inside it): the relay stops, its health fails, its
    /// other tasks end and its leases are released at once, so that no lease keeper
    /// goes on renewing shards that nobody publishes.
    pub(super) async fn run_or_stop(self, cancel: CancellationToken) {
        let this = Arc::new(self);
        if !this.wait_for_archive(&cancel).await {
            this.keeper.stop().await;
            return;
        }
        let ran = AssertUnwindSafe(Arc::clone(&this).run(cancel.clone()))
            .catch_unwind()
            .await;
        if let Err(panic) = ran {
            let message = crate::panic::message(&*panic);
            error!(relay = %this.setup.relay_id, %message, "the relay's loop panicked; the relay stops and gives its shards up");
            this.setup
                .state
                .cycle(Err(format!("the relay's loop panicked: {message}")));
            cancel.cancel();
            this.keeper.stop().await;
        }
    }

    /// In archive mode, waits until the archive table exists: without it every
    /// write-back fails, and every batch would be published again and again. The
    /// health check says why meanwhile. Returns false when cancelled first.
    async fn wait_for_archive(&self, cancel: &CancellationToken) -> bool {
        let setup = &*self.setup;
        if setup.outbox.completion() != Completion::Archive {
            return true;
        }
        let archive = setup.tables().archive();
        loop {
            match setup.outbox.has_table(&setup.db, archive).await {
                Ok(true) => {
                    setup.state.concern(Concern::ArchiveMissing, None);
                    return true;
                }
                Ok(false) => {
                    let problem = format!(
                        "the completion mode is archive, but the archive table {archive} does not exist \
                         (run the outbox's migrations); nothing is published until it does"
                    );
                    error!(relay = %setup.relay_id, "{problem}");
                    setup.state.concern(Concern::ArchiveMissing, Some(problem));
                }
                Err(error) => {
                    warn!(relay = %setup.relay_id, %error, "cannot check that the archive table exists");
                }
            }
            let wait = tokio::time::sleep(setup.config.interval);
            if cancel.run_until_cancelled(wait).await.is_none() {
                return false;
            }
        }
    }

    /// The main loop. Each owned shard has at most one batch in flight, and up to
    /// `concurrency` shards have one; a shard is claimed again as soon as its batch
    /// ends if it may have more, or when a wake-up or a poll says it has work (see
    /// `schedule.rs`). On shutdown, batches in flight finish (and write back) and the
    /// leases are released.
    async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let this = &*self;
        let config = &this.setup.config;
        let mut schedule = Schedule::new(config.min_poll_interval, config.interval, Instant::now());
        // Batches are tasks of their own: one that holds a database connection goes
        // on while this loop waits for another (with futures polled by this loop, a
        // small pool would deadlock).
        let mut batches = Batches::default();
        let mut offset = Offset::default();
        let mut unannounced = Unannounced::default();
        // The poll in flight. Like batches, polls are tasks of their own: at a steady
        // rate one runs every few milliseconds, and the loop waiting for each would
        // start no batch meanwhile.
        let mut polling: Option<JoinHandle<Vec<i32>>> = None;
        loop {
            while batches.len() < config.concurrency {
                let Some(shard) = schedule.next() else { break };
                batches.spawn(&self, shard);
            }
            if batches.is_empty() {
                offset.write(&this.setup, &this.keeper).await;
            }
            let doorbell = &this.setup.doorbell;
            let poll_at = schedule.poll_at();
            // The poll comes before batches and wake-ups: at a steady rate those are
            // always ready, and a poll behind them would never run.
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(poll_at.into()), if polling.is_none() => {
                    let relay = Arc::clone(&self);
                    polling = Some(tokio::spawn(async move { relay.poll().await }.in_current_span()));
                }
                shards = polled(&mut polling), if polling.is_some() => {
                    unannounced.polled(schedule.polled(shards, Instant::now()));
                }
                Some((shard, result)) = batches.next(), if !batches.is_empty() => {
                    let batch = this.batch_ended(shard, result, &mut offset, &mut unannounced).await;
                    schedule.finished(shard, batch);
                    if offset.due() {
                        offset.write(&this.setup, &this.keeper).await;
                    }
                }
                shards = doorbell.rung() => {
                    let shards = this.owned_of(shards);
                    unannounced.woken(&shards);
                    schedule.woken(shards, Instant::now());
                }
                () = this.keeper.took_shards() => {
                    let shards = this.owned_of(None);
                    schedule.woken(shards, Instant::now());
                }
            }
        }
        if let Some(poll) = polling {
            poll.abort();
        }
        while let Some((shard, result)) = batches.next().await {
            this.batch_ended(shard, result, &mut offset, &mut unannounced)
                .await;
        }
        offset.write(&this.setup, &this.keeper).await;
        this.keeper.stop().await;
    }

    /// One batch of `shard`, with the lease token this relay holds it by.
    async fn batch(&self, shard: i32) -> Result<ShardOutcome> {
        match self.keeper.leases.token(shard) {
            Some(token) => {
                self.batcher
                    .process_shard(shard, token, self.setup.config.batch_size)
                    .await
            }
            None => Ok(ShardOutcome::NotHeld),
        }
    }

    /// Records how `shard`'s batch ended (health, stall, lost lease) and says
    /// whether to claim it again at once.
    async fn batch_ended(
        &self,
        shard: i32,
        result: Result<ShardOutcome>,
        offset: &mut Offset,
        unannounced: &mut Unannounced,
    ) -> Batch {
        let report = match result {
            Ok(ShardOutcome::Done {
                report,
                last,
                lateness,
            }) => {
                offset.published(last);
                let late = unannounced.batch_ended(shard, lateness, self.setup.listens());
                if late > 0 {
                    ::metrics::counter!(relay_metric_names::FOUND_BY_POLL, self.setup.labels())
                        .increment(late);
                }
                report
            }
            Ok(ShardOutcome::LeaseLost) => {
                self.keeper.leases.lost(shard);
                return Batch::Done;
            }
            Ok(ShardOutcome::NotHeld) => return Batch::Done,
            Ok(ShardOutcome::Expired) => {
                warn!(relay = %self.setup.relay_id, shard, "the shard's lease ran out locally during its batch (was the relay paused?); renewing before it goes on");
                self.keeper.renew_soon();
                return Batch::Done;
            }
            Err(error) => {
                warn!(relay = %self.setup.relay_id, shard, %error, "relay batch failed");
                self.setup.state.cycle(Err(error.to_string()));
                // A lost connection may have taken the leases with it: renew now.
                self.keeper.renew_soon();
                return Batch::Failed;
            }
        };
        if report.transient_failures > 0 && report.published == 0 {
            // The broker is away: not a successful batch, and no hurry.
            if self.keeper.stall.outage() {
                warn!(relay = %self.setup.relay_id, shard, "the broker answered a check but took nothing; standing aside again");
                self.keeper.renew_soon();
            }
            self.setup.state.cycle(Err(format!(
                "{} events failed to publish: the broker is unavailable",
                report.transient_failures
            )));
            return Batch::Failed;
        }
        if report.published > 0 && self.keeper.stall.delivered() {
            info!(relay = %self.setup.relay_id, "the broker takes events again; taking a full share of shards");
            self.setup.state.concern(Concern::Stalled, None);
            self.keeper.renew_soon();
        }
        let owned = self.keeper.leases.count();
        self.setup.state.cycle(Ok(owned));
        // A batch that was not full took everything visible: events stored since
        // have rung the doorbell.
        if report.full {
            Batch::More
        } else {
            Batch::Done
        }
    }

    /// The owned shards among `shards` (all owned shards for `None`).
    fn owned_of(&self, shards: Option<BTreeSet<i32>>) -> Vec<i32> {
        let owned = self.keeper.leases.owned();
        owned
            .into_iter()
            .map(|(shard, _)| shard)
            .filter(|shard| shards.as_ref().is_none_or(|s| s.contains(shard)))
            .collect()
    }

    /// The owned shards with work, by one query on the claim index (a relay with one
    /// shard just claims it). A failure is reported and finds none: the next poll
    /// comes later.
    async fn poll(&self) -> Vec<i32> {
        let owned = self.owned_of(None);
        if owned.len() <= 1 {
            return owned;
        }
        match self.batcher.shards_with_work(&owned).await {
            Ok(shards) => {
                if shards.is_empty() {
                    self.setup.state.cycle(Ok(owned.len()));
                }
                shards
            }
            Err(error) => {
                warn!(relay = %self.setup.relay_id, %error, "relay poll failed");
                self.setup.state.cycle(Err(error.to_string()));
                self.keeper.renew_soon();
                Vec::new()
            }
        }
    }
}

/// The shards the poll in `polling` found with work, once it ends (it is then taken
/// out); never ends when no poll is in flight. A poll that panicked found none.
async fn polled(polling: &mut Option<JoinHandle<Vec<i32>>>) -> Vec<i32> {
    let Some(poll) = polling else {
        return std::future::pending().await;
    };
    let result = poll.await;
    *polling = None;
    match result {
        Ok(shards) => shards,
        Err(error) => {
            if let Ok(panic) = error.try_into_panic() {
                error!(panic = %crate::panic::message(&*panic), "the relay's poll panicked; polling again later");
            }
            // Or aborted: only on shutdown, which ends the loop.
            Vec::new()
        }
    }
}

/// The batches in flight, one task each, with the shard each is for.
#[derive(Debug, Default)]
struct Batches {
    tasks: JoinSet<Result<ShardOutcome>>,
    shards: HashMap<task::Id, i32>,
}

impl Batches {
    fn spawn<P: Publisher>(&mut self, relay: &Arc<Runner<P>>, shard: i32) {
        let relay = Arc::clone(relay);
        let task = self
            .tasks
            .spawn(async move { relay.batch(shard).await }.in_current_span());
        self.shards.insert(task.id(), shard);
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next batch to end, with its shard; `None` when none is in flight. A batch
    /// that panicked (outside the publisher, whose panics fail their events) ended
    /// with an error: the loop goes on, and the shard's events are claimed again.
    async fn next(&mut self) -> Option<(i32, Result<ShardOutcome>)> {
        let (id, result) = match self.tasks.join_next_with_id().await? {
            Ok((id, result)) => (id, result),
            Err(error) => {
                let id = error.id();
                match error.try_into_panic() {
                    Ok(panic) => (
                        id,
                        Err(Error::Panicked {
                            what: "a relay batch",
                            message: crate::panic::message(&*panic),
                        }),
                    ),
                    // Cancelled: only when the set is dropped, which ends this loop too.
                    Err(_) => (id, Ok(ShardOutcome::NotHeld)),
                }
            }
        };
        let shard = self.shards.remove(&id)?;
        Some((shard, result))
    }
}
