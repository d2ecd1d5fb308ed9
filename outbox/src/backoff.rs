//! [`Backoff`]: how long to wait before the next attempt, for the relay's retries of
//! a refused event and the consumer's retries of a failing handler.

use std::time::Duration;

/// Exponential backoff: `first` after the first failure, doubling with each further
/// failure, at most `max`.
///
/// ```
/// use std::time::Duration;
/// use outbox::Backoff;
///
/// let backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(60));
/// let waits: Vec<u64> = (1..=5).map(|n| backoff.after(n).as_secs()).collect();
/// assert_eq!(waits, [10, 20, 40, 60, 60]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// `first`, doubling, at most `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The wait before the next attempt after `failures` failed attempts:
    /// `first * 2^(failures - 1)`, at most `max`.
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first
            .checked_mul(1 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_the_cap_and_never_overflows() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(backoff.after(0), Duration::from_secs(1));
        assert_eq!(backoff.after(1), Duration::from_secs(1));
        assert_eq!(backoff.after(3), Duration::from_secs(4));
        assert_eq!(backoff.after(40), Duration::from_secs(30));
        assert_eq!(backoff.after(u32::MAX), Duration::from_secs(30));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.after(5), Duration::MAX);
    }
}
