//! Events with a due time: the relay moves them from the scheduled table into the
//! outbox when due (see `store/scheduled.rs` for the order rule), and wakes at the
//! next due time.
//!
//! Every relay moves; the move locks the rows it takes, so each event moves once.
//! The relay reads the next due time again at least every second while events wait,
//! every `interval` while none do, and at once when a store schedules one: of this
//! process through the outbox, of others by a notification (PostgreSQL). The store's
//! transaction may not have committed when the relay reads, so after such a wake-up
//! it reads again within a second.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DbBackend;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::keeper::Keeper;
use super::setup::Setup;
use crate::wake;

/// At most so many events move in one transaction.
const MOVE_BATCH: usize = 500;

/// The longest the relay waits before reading the next due time again while events
/// wait: a store in another process may have scheduled an earlier one.
const WHILE_WAITING: Duration = Duration::from_secs(1);

/// Moves due events into the outbox until `cancel`.
pub(super) async fn deliver_due(setup: Arc<Setup>, keeper: Arc<Keeper>, cancel: CancellationToken) {
    let outbox = &setup.outbox;
    // A store scheduled events: its transaction may commit after the next read.
    let mut woken = false;
    loop {
        // Enabled before the reads, so a store meanwhile is not missed.
        let stored = outbox.wake().scheduled_stored();
        tokio::pin!(stored);
        stored.as_mut().enable();
        let retry = setup.config.interval.min(WHILE_WAITING);
        // The next due time first: one indexed read, and a move (a transaction) only
        // when something is due.
        let wait = match outbox.next_due(&setup.db).await {
            Ok(Some(next)) => match (next - keeper.clock.now()).to_std() {
                Ok(wait) if !wait.is_zero() => wait.min(WHILE_WAITING),
                _ => match move_due(&setup).await {
                    Move::More | Move::Done(true) if cancel.is_cancelled() => return,
                    Move::More | Move::Done(true) => continue,
                    // Due, yet nothing moved (a row that cannot be read stays): not
                    // again at once.
                    Move::Done(false) | Move::Failed => retry,
                },
            },
            Ok(None) if woken => retry,
            Ok(None) => setup.config.interval,
            Err(error) => {
                warn!(relay = %setup.relay_id, %error, "could not read the next due time; trying again");
                retry
            }
        };
        woken = tokio::select! {
            () = cancel.cancelled() => return,
            () = &mut stored => true,
            () = tokio::time::sleep(wait) => false,
        };
    }
}

/// How a move ended.
enum Move {
    /// A full batch: there may be more due now.
    More,
    /// Everything due now that could be read was moved; whether anything was.
    Done(bool),
    /// The move failed (it said why); nothing moved.
    Failed,
}

/// Moves what is due now.
async fn move_due(setup: &Setup) -> Move {
    match setup.outbox.move_due(&setup.db, MOVE_BATCH).await {
        Ok(moved) => {
            if moved.events > 0 {
                debug!(relay = %setup.relay_id, events = moved.events, "moved due events into the outbox");
                let shards = moved.shards.iter().copied();
                setup.outbox.wake().committed_to(shards.clone());
                // Relays of other processes own some of these shards.
                if setup.db.get_database_backend() == DbBackend::Postgres {
                    let channel = wake::channel(setup.tables());
                    wake::send_notify(&setup.db, &channel, wake::shards_payload(shards)).await;
                }
            }
            if moved.events < MOVE_BATCH {
                Move::Done(moved.events > 0)
            } else {
                Move::More
            }
        }
        Err(error) => {
            warn!(relay = %setup.relay_id, %error, "could not move due events into the outbox; trying again");
            Move::Failed
        }
    }
}
