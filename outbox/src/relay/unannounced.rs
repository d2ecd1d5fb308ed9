//! Events that a poll found long after they were stored: their writers do not wake
//! this relay. Such events wait for the relay's next poll, up to `interval` after an
//! idle spell, where a wake-up brings them out within milliseconds. The relay says so
//! once, with the fix, and counts them
//! ([`FOUND_BY_POLL`](super::relay_metric_names::FOUND_BY_POLL)).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::wire::Message;

/// An event claimed this long after its store, from a shard no wake-up named, was
/// not announced: a wake-up and the quick polls after it take milliseconds.
const LATE: Duration = Duration::from_secs(1);

/// The first attempts of a batch that waited longer than [`LATE`] to be claimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lateness {
    /// How many.
    pub(super) events: u64,
    /// The longest wait among them.
    pub(super) longest: Duration,
}

impl Lateness {
    /// Of `messages`, claimed at `claimed_at` by the database's clock.
    pub(super) fn of(messages: &[Message], claimed_at: DateTime<Utc>) -> Self {
        let mut lateness = Lateness::default();
        for message in messages.iter().filter(|m| m.attempts == 0) {
            let waited = (claimed_at - message.created_at)
                .to_std()
                .unwrap_or_default();
            if waited > LATE {
                lateness.events += 1;
                lateness.longest = lateness.longest.max(waited);
            }
        }
        lateness
    }
}

/// Which shards a poll made due without a wake-up, and whether the relay has said so.
#[derive(Debug, Default)]
pub(super) struct Unannounced {
    shards: BTreeSet<i32>,
    warned: bool,
}

impl Unannounced {
    /// A poll made `shards` due, which no wake-up had.
    pub(super) fn polled(&mut self, shards: impl IntoIterator<Item = i32>) {
        self.shards.extend(shards);
    }

    /// A wake-up named `shards`: their next batches were announced.
    pub(super) fn woken(&mut self, shards: &[i32]) {
        for shard in shards {
            self.shards.remove(shard);
        }
    }

    /// `shard`'s batch ended having claimed `lateness`; returns how many of its events
    /// a poll found late, logging the first time.
    pub(super) fn batch_ended(&mut self, shard: i32, lateness: Lateness, listens: bool) -> u64 {
        if !self.shards.remove(&shard) || lateness.events == 0 {
            return 0;
        }
        if !self.warned {
            self.warned = true;
            let waited = humantime::format_duration(round(lateness.longest));
            if listens {
                warn!(
                    shard,
                    %waited,
                    "events were found by polling, up to {waited} after they were stored: \
                     their writers do not wake the relays. Build the writers' outbox with \
                     `Outbox::on(&db)` (or call `with_wake_connection(&db)` on it) so that \
                     every store wakes the relays within milliseconds"
                );
            } else {
                warn!(
                    shard,
                    %waited,
                    "events were found by polling, up to {waited} after they were stored: this \
                     relay does not listen for wake-ups (only PostgreSQL with `listen` on has \
                     them across processes); lower `interval` (OUTBOX_INTERVAL) to find them sooner"
                );
            }
        }
        lateness.events
    }
}

/// `duration` to the millisecond, for a log line.
fn round(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn late(events: u64) -> Lateness {
        Lateness {
            events,
            longest: Duration::from_secs(3),
        }
    }

    #[test]
    fn only_late_events_of_shards_a_poll_found_count() {
        let mut unannounced = Unannounced::default();
        unannounced.polled([1, 2, 3]);
        unannounced.woken(&[2]);
        assert_eq!(
            unannounced.batch_ended(1, late(4), true),
            4,
            "found by the poll"
        );
        assert_eq!(
            unannounced.batch_ended(1, late(4), true),
            0,
            "counted once per poll"
        );
        assert_eq!(
            unannounced.batch_ended(2, late(4), true),
            0,
            "a wake-up named it"
        );
        assert_eq!(
            unannounced.batch_ended(3, late(0), true),
            0,
            "nothing was late"
        );
        assert_eq!(
            unannounced.batch_ended(7, late(4), true),
            0,
            "not found by a poll"
        );
        assert!(unannounced.warned);
    }
}
