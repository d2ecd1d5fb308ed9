//! What a batch came to: the broker's answers judged per event (published, failed,
//! dead-lettered, keys that go back in line), and the report of a pass. Pure, no I/O.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tracing::error;
use uuid::Uuid;

use super::unannounced::Lateness;
use crate::publisher::{PublishError, PublishErrorKind};
use crate::retry::{Retries, failure_update};
use crate::sql::FailureUpdate;
use crate::wire::Message;

/// What one pass over the owned shards did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessReport {
    /// Events claimed.
    pub claimed: u64,
    /// Events published.
    pub published: u64,
    /// Events whose attempt failed.
    pub failed: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Of the failed, those that failed because the broker was unavailable.
    pub transient_failures: u64,
    /// Whether some shard returned a full batch (more may be waiting).
    pub full: bool,
}

impl ProcessReport {
    pub(super) fn add(&mut self, other: ProcessReport) {
        self.claimed += other.claimed;
        self.published += other.published;
        self.failed += other.failed;
        self.dead_lettered += other.dead_lettered;
        self.transient_failures += other.transient_failures;
        self.full |= other.full;
    }
}

/// What processing one shard came to.
#[derive(Debug)]
pub(super) enum ShardOutcome {
    /// The batch was written back.
    Done {
        report: ProcessReport,
        /// The last event published.
        last: Option<Uuid>,
        /// Its first attempts that waited long to be claimed.
        lateness: Lateness,
    },
    /// The lease was taken by another relay before the write-back; nothing written.
    LeaseLost,
    /// The shard was no longer held when its batch was to start; nothing claimed.
    NotHeld,
    /// The lease's local deadline passed during the batch (the relay was paused, or
    /// its renewals were late): what was claimed was neither published nor written
    /// back, and is claimed again once a lease round renews the shard.
    Expired,
}

/// An event of a batch that did not go through, with what its failure does to it
/// (see `retry.rs`).
pub(super) struct Failure<'a> {
    pub(super) message: &'a Message,
    pub(super) error: &'a PublishError,
    pub(super) update: FailureUpdate<'a>,
}

impl Failure<'_> {
    /// Whether this failure used up the event's last attempt.
    pub(super) fn dead_lettered(&self) -> bool {
        self.update.dead_lettered_at.is_some()
    }
}

/// A batch's outcomes, judged: the events to mark published, the failures to record
/// (with what each does to its event), and the keys that go back in line.
pub(super) struct Judged<'a> {
    pub(super) published: Vec<&'a Message>,
    pub(super) failed: Vec<Failure<'a>>,
    /// Keys whose failed event is through (published after a retry, or dead-lettered):
    /// their parked events go back in line.
    pub(super) through: Vec<&'a str>,
}

impl<'a> Judged<'a> {
    /// Judges `outcomes`, one per message of `messages`, acknowledged at `at`; `retried`
    /// holds the `seq`s claimed as retries. After the first event of a key that did not
    /// go through, no later event of that key is marked (a publisher that acknowledged
    /// one broke its contract; it is logged and the event goes out again after the
    /// earlier one), and only that first failure is recorded, so an event never uses up
    /// an attempt for an earlier event of its key.
    pub(super) fn of(
        messages: &'a [Message],
        outcomes: &'a [std::result::Result<(), PublishError>],
        retried: &HashSet<i64>,
        at: DateTime<Utc>,
        retries: Retries,
    ) -> Self {
        let mut published = Vec::new();
        let mut failed = Vec::new();
        let mut stopped: HashSet<&str> = HashSet::new();
        for (message, outcome) in messages.iter().zip(outcomes) {
            let behind = stopped.contains(message.key.as_str());
            match outcome {
                Ok(()) if behind => error!(
                    event_id = %message.id,
                    key = %message.key,
                    "the publisher acknowledged an event after an earlier event of its key failed; \
                     it is not marked published and goes out again after that event"
                ),
                Ok(()) => published.push(message),
                Err(_) if behind => {}
                Err(error) => {
                    stopped.insert(&message.key);
                    if error.kind() != PublishErrorKind::NotSent {
                        failed.push(Failure {
                            message,
                            error,
                            update: failure_update(message.attempts, error, at, retries),
                        });
                    }
                }
            }
        }
        let through = published
            .iter()
            .filter(|message| retried.contains(&message.seq))
            .map(|message| message.key.as_str())
            .chain(
                failed
                    .iter()
                    .filter(|failure| failure.dead_lettered())
                    .map(|failure| failure.message.key.as_str()),
            )
            .collect();
        Judged {
            published,
            failed,
            through,
        }
    }

    /// The batch's report: `claimed` events, of a batch of at most `batch_size`, with
    /// `behind` events met behind an earlier event of their key.
    pub(super) fn report(&self, claimed: usize, batch_size: usize, behind: bool) -> ProcessReport {
        let failed = &self.failed;
        ProcessReport {
            claimed: as_u64(claimed),
            published: as_u64(self.published.len()),
            failed: as_u64(failed.len()),
            dead_lettered: as_u64(failed.iter().filter(|f| f.dead_lettered()).count()),
            transient_failures: as_u64(
                failed
                    .iter()
                    .filter(|f| f.error.kind() == PublishErrorKind::Transient)
                    .count(),
            ),
            // Unparked events are ready now: go again at once, as after a full batch.
            full: claimed >= batch_size || !self.through.is_empty() || behind,
        }
    }
}

/// A count of things in memory, as the relay's figures keep counts.
pub(super) fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
