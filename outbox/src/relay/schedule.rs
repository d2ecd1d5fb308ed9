//! The relay loop's schedule: which owned shards to claim next and when to poll.
//!
//! Pure bookkeeping, no I/O, so that the policy can be read and tested on its own.
//! Shards are claimed one batch at a time each, as soon as they are *due*, with no
//! pass over all shards between batches (a pass waits for its slowest shard, and an
//! event stored meanwhile waited for the whole pass). A shard is due when:
//!
//! - a wake-up names it (a store in this process, or a notification from another);
//! - its last batch was full (more may be waiting);
//! - a poll finds work in it. Polls run on a timer that starts at the minimum poll
//!   interval after a wake-up (a wake-up may come before its commit is visible) and
//!   doubles up to the interval while nothing happens.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// How a shard's batch ended, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batch {
    /// It was full (more may be waiting): claim again at once.
    More,
    /// It took what there was (or found nothing).
    Done,
    /// It failed (the database, or the broker for every event): the shard waits for
    /// the next poll, which backs off.
    Failed,
}

/// The next wait while nothing happens: twice the last, at most `max`.
pub(crate) fn back_off(wait: Duration, max: Duration) -> Duration {
    wait.saturating_mul(2).min(max)
}

#[derive(Debug)]
pub(crate) struct Schedule {
    min: Duration,
    max: Duration,
    /// The wait before the poll after next.
    wait: Duration,
    /// When to poll the owned shards for work.
    poll_at: Instant,
    /// Shards to claim, in the order they became due.
    due: VecDeque<i32>,
    /// Shards with a batch in flight (a due one waits until its batch ends).
    running: BTreeSet<i32>,
}

impl Schedule {
    /// A schedule that polls at once (`now`), then from `min` up to `max`.
    pub(crate) fn new(min: Duration, max: Duration, now: Instant) -> Self {
        Schedule {
            min,
            max,
            wait: min,
            poll_at: now,
            due: VecDeque::new(),
            running: BTreeSet::new(),
        }
    }

    /// Events were stored to `shards` (of this relay's): claim them now, and poll
    /// quickly for a while in case a commit was not yet visible.
    pub(crate) fn woken(&mut self, shards: impl IntoIterator<Item = i32>, now: Instant) {
        for shard in shards {
            self.make_due(shard);
        }
        self.wait = self.min;
        self.poll_at = self.poll_at.min(now + self.min);
    }

    /// When the next poll is.
    pub(crate) fn poll_at(&self) -> Instant {
        self.poll_at
    }

    /// A poll found work in `shards`; the next poll comes after the current wait,
    /// which doubles. Returns the shards the poll made due: those that were neither
    /// due nor running.
    pub(crate) fn polled(
        &mut self,
        shards: impl IntoIterator<Item = i32>,
        now: Instant,
    ) -> Vec<i32> {
        let found: Vec<i32> = shards
            .into_iter()
            .filter(|shard| !self.due.contains(shard) && !self.running.contains(shard))
            .collect();
        for &shard in &found {
            self.make_due(shard);
        }
        self.poll_at = now + self.wait;
        self.wait = back_off(self.wait, self.max);
        found
    }

    /// The next due shard without a batch in flight, now marked running.
    pub(crate) fn next(&mut self) -> Option<i32> {
        let index = self
            .due
            .iter()
            .position(|shard| !self.running.contains(shard))?;
        let shard = self.due.remove(index)?;
        self.running.insert(shard);
        Some(shard)
    }

    /// `shard`'s batch ended as `batch`.
    pub(crate) fn finished(&mut self, shard: i32, batch: Batch) {
        self.running.remove(&shard);
        if batch == Batch::More {
            self.make_due(shard);
        }
    }

    fn make_due(&mut self, shard: i32) {
        if !self.due.contains(&shard) {
            self.due.push_back(shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(5);

    fn drain(schedule: &mut Schedule) -> Vec<i32> {
        std::iter::from_fn(|| schedule.next()).collect()
    }

    #[test]
    fn back_off_doubles_up_to_the_limit() {
        assert_eq!(back_off(MIN, MAX), Duration::from_millis(20));
        assert_eq!(back_off(Duration::from_secs(4), MAX), MAX);
        assert_eq!(back_off(MAX, MAX), MAX);
        assert_eq!(back_off(Duration::MAX, MAX), MAX);
    }

    #[test]
    fn polls_at_once_then_back_off_while_nothing_happens() {
        let start = Instant::now();
        let mut schedule = Schedule::new(MIN, MAX, start);
        assert_eq!(schedule.poll_at(), start);
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..12 {
            schedule.polled([], now);
            waits.push(schedule.poll_at() - now);
            now = schedule.poll_at();
        }
        assert_eq!(waits[..4], [MIN, MIN * 2, MIN * 4, MIN * 8]);
        assert_eq!(waits[11], MAX);
        assert_eq!(schedule.next(), None);
    }

    #[test]
    fn a_wake_up_claims_its_shards_and_polls_quickly_again() {
        let start = Instant::now();
        let mut schedule = Schedule::new(MIN, MAX, start);
        let mut now = start;
        for _ in 0..10 {
            schedule.polled([], now);
            now = schedule.poll_at();
        }
        schedule.polled([], now);
        assert_eq!(schedule.poll_at(), now + MAX);
        schedule.woken([3, 7, 3], now);
        assert_eq!(schedule.poll_at(), now + MIN);
        assert_eq!(drain(&mut schedule), [3, 7]);
        schedule.polled([], now + MIN);
        assert_eq!(schedule.poll_at(), now + MIN * 2, "the wait starts over");
    }

    #[test]
    fn a_shard_runs_one_batch_at_a_time_and_goes_again_while_it_has_more() {
        let now = Instant::now();
        let mut schedule = Schedule::new(MIN, MAX, now);
        schedule.woken([1, 2], now);
        assert_eq!(schedule.next(), Some(1));
        schedule.woken([1], now);
        assert_eq!(schedule.next(), Some(2));
        assert_eq!(schedule.next(), None, "shard 1 is due but in flight");
        schedule.finished(1, Batch::Done);
        assert_eq!(schedule.next(), Some(1), "due again since the wake-up");
        schedule.finished(1, Batch::More);
        schedule.finished(2, Batch::Failed);
        assert_eq!(drain(&mut schedule), [1]);
        schedule.finished(1, Batch::Done);
        assert_eq!(
            schedule.next(),
            None,
            "a failed shard waits for the next poll"
        );
    }

    #[test]
    fn a_later_wake_up_never_delays_an_earlier_poll() {
        let now = Instant::now();
        let mut schedule = Schedule::new(MIN, MAX, now);
        schedule.polled([], now);
        schedule.woken([], now);
        schedule.woken([], now + MIN / 2);
        assert_eq!(schedule.poll_at(), now + MIN);
    }
}
