//! [`WorkerContext`]: what every partition worker of one consumer shares.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::ConsumerConfig;
use super::halt::Halt;
use super::health::Progress;
use super::metrics::Counters;
use super::proof::Proof;
use crate::inbox::Inbox;

/// What every worker of one consumer shares.
pub(super) struct WorkerContext<E, H> {
    pub(super) config: ConsumerConfig,
    pub(super) db: DatabaseConnection,
    pub(super) inbox: Inbox,
    pub(super) handler: H,
    pub(super) counters: Arc<Counters>,
    /// Which message each partition's worker is on, for the health probe.
    pub(super) progress: Arc<Progress>,
    /// Stops the whole consumer when a worker fails in a way it cannot go on from.
    pub(super) halt: Halt,
    /// How a transaction proves, before its commit, that it still holds its inbox
    /// record; learned from the database on first use.
    pub(super) proof: OnceCell<Proof>,
    pub(super) event: PhantomData<fn() -> E>,
}

/// Waits `wait`; `false` when cancelled first.
pub(super) async fn sleep(wait: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}
