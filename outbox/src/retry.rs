//! The retry policy: what one failed attempt does to an event. Used by the relay's
//! write-back and by [`Outbox::handle_event_failure`](crate::Outbox::handle_event_failure).

use chrono::{DateTime, Utc};

use crate::backoff::Backoff;
use crate::publisher::{PublishError, PublishErrorKind};
use crate::sql::FailureUpdate;

/// How an event's failed attempts are retried: `retries` after the first attempt,
/// waiting by `backoff`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retries {
    pub(crate) retries: u32,
    pub(crate) backoff: Backoff,
}

/// The new state of an event after one failed attempt: a permanent failure uses up an
/// attempt (and the last one dead-letters); a transient one only delays the event.
pub(crate) fn failure_update<'a>(
    attempts_so_far: i32,
    error: &'a PublishError,
    now: DateTime<Utc>,
    retries: Retries,
) -> FailureUpdate<'a> {
    let (attempts, dead) = match error.kind() {
        PublishErrorKind::Permanent => {
            let attempts = attempts_so_far.saturating_add(1);
            (
                attempts,
                u32::try_from(attempts).unwrap_or(0) > retries.retries,
            )
        }
        _ => (attempts_so_far, false),
    };
    let wait = match error.kind() {
        PublishErrorKind::Permanent => retries.backoff.after(u32::try_from(attempts).unwrap_or(1)),
        _ => retries.backoff.after(1),
    };
    FailureUpdate {
        attempts,
        error: error.message(),
        now,
        next_attempt_at: (!dead).then(|| {
            chrono::Duration::from_std(wait)
                .ok()
                .and_then(|wait| now.checked_add_signed(wait))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        }),
        dead_lettered_at: dead.then_some(now),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> Retries {
        Retries {
            retries: 2,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(3)),
        }
    }

    #[test]
    fn a_permanent_failure_uses_an_attempt_and_backs_off() {
        let now = Utc::now();
        let error = PublishError::permanent("refused");
        let first = failure_update(0, &error, now, config());
        assert_eq!(first.attempts, 1);
        assert_eq!(
            first.next_attempt_at,
            Some(now + chrono::Duration::seconds(1))
        );
        assert_eq!(first.dead_lettered_at, None);
        let second = failure_update(1, &error, now, config());
        assert_eq!(
            second.next_attempt_at,
            Some(now + chrono::Duration::seconds(2))
        );
        assert_eq!(second.error, "refused");
    }

    #[test]
    fn the_attempt_after_the_last_retry_dead_letters() {
        let now = Utc::now();
        let error = PublishError::permanent("refused");
        let dead = failure_update(2, &error, now, config());
        assert_eq!(dead.attempts, 3);
        assert_eq!(dead.dead_lettered_at, Some(now));
        assert_eq!(dead.next_attempt_at, None);
    }

    #[test]
    fn a_transient_failure_uses_no_attempt_and_waits_the_retry_delay() {
        let now = Utc::now();
        let error = PublishError::transient("broker away");
        let update = failure_update(2, &error, now, config());
        assert_eq!(update.attempts, 2);
        assert_eq!(update.dead_lettered_at, None);
        assert_eq!(
            update.next_attempt_at,
            Some(now + chrono::Duration::seconds(1))
        );
    }
}
