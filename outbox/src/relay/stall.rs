//! The relay's breaker for a broker it cannot deliver to.
//!
//! A relay whose batches all fail as outages for the stall timeout stands aside: it
//! gives its shards up, so relays that can deliver take its keys. It comes back on
//! probation, holding one shard, when the broker answers a check again; the first
//! batch that delivers something ends the probation, and one that fails as an outage
//! sends the relay aside again at once, with a longer wait before the next probation
//! (doubling, from the stall timeout up to 16 times it). When every live relay is on
//! probation (a relay alone, or all after an outage for all), each takes a full share
//! instead: no other relay would take the rest. A check alone proves little:
//! a relay that reaches the bootstrap broker but not the partitions' leaders answers
//! it and delivers nothing; rejoining with its whole share of shards, it would fail
//! them for another stall timeout each time.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

#[derive(Debug)]
pub(crate) struct Stall {
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Since when every batch has failed as an outage with nothing delivered.
    since: Option<Instant>,
    /// Back on probation: one shard, until a batch delivers or fails.
    probation: bool,
    /// Probations failed in a row.
    failed_probations: u32,
    /// No probation before this.
    next_probation: Option<Instant>,
}

impl Stall {
    pub(crate) fn new(timeout: Duration) -> Self {
        Stall {
            timeout,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A batch delivered something: the broker works. Returns whether that ended a
    /// stall (the relay then takes its whole share again).
    pub(crate) fn delivered(&self) -> bool {
        let mut state = self.state();
        let ended = state.since.is_some();
        *state = State::default();
        ended
    }

    /// A batch failed as an outage and delivered nothing. Returns whether it ended a
    /// probation: the relay stands aside again at once.
    pub(crate) fn outage(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        state.since.get_or_insert(now);
        if !state.probation {
            return false;
        }
        state.probation = false;
        state.failed_probations = state.failed_probations.saturating_add(1);
        let wait = Backoff::new(self.timeout, self.timeout * 16).after(state.failed_probations);
        state.next_probation = Some(now + wait);
        true
    }

    /// Whether the relay must stand aside: nothing delivered for the stall timeout,
    /// and not on probation.
    pub(crate) fn stalled(&self) -> bool {
        let state = self.state();
        !state.probation
            && state
                .since
                .is_some_and(|since| since.elapsed() >= self.timeout)
    }

    /// Whether a relay standing aside may try a probation now.
    pub(crate) fn may_probe(&self) -> bool {
        self.state()
            .next_probation
            .is_none_or(|at| Instant::now() >= at)
    }

    /// Back on probation: one shard, until a batch delivers or fails.
    pub(crate) fn start_probation(&self) {
        self.state().probation = true;
    }

    /// Whether the relay is on probation: it holds one shard.
    pub(crate) fn on_probation(&self) -> bool {
        self.state().probation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_probation_stands_aside_and_waits_longer_each_time() {
        let stall = Stall::new(Duration::ZERO);
        assert!(!stall.stalled());
        assert!(!stall.outage(), "not on probation");
        assert!(stall.stalled());
        assert!(stall.may_probe());
        stall.start_probation();
        assert!(stall.on_probation());
        assert!(!stall.stalled(), "on probation");
        assert!(stall.outage(), "the probation failed");
        assert!(stall.stalled());
        assert!(!stall.on_probation());
        assert_eq!(stall.state().failed_probations, 1);
        stall.start_probation();
        assert!(stall.delivered(), "a delivery ends the stall");
        assert!(!stall.stalled());
        assert_eq!(stall.state().failed_probations, 0);
        assert!(!stall.delivered(), "nothing to end");
    }

    #[test]
    fn the_next_probation_waits() {
        let stall = Stall::new(Duration::from_secs(60));
        stall.outage();
        stall.start_probation();
        stall.outage();
        assert!(!stall.may_probe(), "a minute at least");
    }
}
