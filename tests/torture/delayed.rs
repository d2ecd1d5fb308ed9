//! The torture's checks of events stored with a due time.
//!
//! Nothing may be published before its due time: a message's Kafka timestamp (the
//! moment the relay's producer sent it) is never earlier. And a delayed event takes
//! its place among its key's events when it is due, by the order rule
//! (`store/scheduled.rs`), which the suite checks from what the writers know:
//!
//! - an event of the key committed before a delayed event's due time goes out before
//!   it: it was in the outbox before the move, which comes at the due time or later;
//! - of two delayed events of one key, the one due first goes out first when it was
//!   committed before the other was due: at that move it waited, or had moved.
//!
//! Events committed after a delayed event's due time may come before or after it
//! (when it moved is not known), and replayed dead letters come late by design; the
//! rule says nothing more of them. Only first sightings count: duplicates after kills
//! come later.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use outbox_tests::kafka::Received;

use super::Ledger;

/// What the checks found.
#[derive(Debug)]
pub(super) struct Delayed {
    /// Committed events stored with a due time.
    pub(super) committed: usize,
    /// Messages sent before their event's due time, described.
    pub(super) early: Vec<String>,
    /// Pairs of one key's events whose order the rule decides: the checks' reach.
    pub(super) ordered_pairs: usize,
    /// Pairs of one key's events in an order the rule forbids, described.
    pub(super) out_of_rule: Vec<String>,
}

/// One committed event's first sighting, as the rule needs it.
struct Sighting<'a> {
    id: &'a str,
    committed_at: DateTime<Utc>,
    due: Option<DateTime<Utc>>,
}

/// Checks every delayed event in `received` (in the order read, one partition per key)
/// whose first sightings, in that order, are `first_seen`.
pub(super) fn check(
    received: &[Received],
    first_seen: &[&str],
    ledger: &Ledger,
    replayed: &HashSet<String>,
) -> Delayed {
    let committed = ledger
        .delayed
        .keys()
        .filter(|id| ledger.committed.contains_key(*id))
        .count();
    let early = received
        .iter()
        .filter_map(|message| {
            let due = ledger.delayed.get(message.event_id())?;
            let sent = message.timestamp_ms;
            match sent {
                Some(sent) if sent >= due.timestamp_millis() => None,
                _ => Some(format!(
                    "{} sent at {sent:?} ms, due at {due} ({} ms)",
                    message.event_id(),
                    due.timestamp_millis()
                )),
            }
        })
        .collect();
    let (ordered_pairs, out_of_rule) = out_of_rule(first_seen, ledger, replayed);
    Delayed {
        committed,
        early,
        ordered_pairs,
        out_of_rule,
    }
}

/// How many pairs of a key's first sightings the order rule decides, and those that
/// break it.
fn out_of_rule(
    first_seen: &[&str],
    ledger: &Ledger,
    replayed: &HashSet<String>,
) -> (usize, Vec<String>) {
    let mut per_key: HashMap<&str, Vec<Sighting<'_>>> = HashMap::new();
    for id in first_seen {
        if replayed.contains(*id) {
            continue;
        }
        let (Some((key, _)), Some(committed_at)) =
            (ledger.committed.get(*id), ledger.committed_at.get(*id))
        else {
            continue;
        };
        per_key.entry(key).or_default().push(Sighting {
            id,
            committed_at: *committed_at,
            due: ledger.delayed.get(*id).copied(),
        });
    }
    let mut broken = Vec::new();
    let mut ordered = 0;
    for (key, sightings) in &per_key {
        for (at, event) in sightings.iter().enumerate() {
            let Some(due) = event.due else { continue };
            ordered += sightings[..at]
                .iter()
                .filter(|before| must_precede(before, due))
                .count();
            // No event seen after this delayed one may have been owed a place before
            // it.
            for after in &sightings[at + 1..] {
                if must_precede(after, due) {
                    broken.push(format!(
                        "key {key:?}: {} (committed at {}, due {:?}) came after {} (due {due})",
                        after.id, after.committed_at, after.due, event.id
                    ));
                }
            }
        }
    }
    (ordered + broken.len(), broken)
}

/// Whether `event` must go out before a delayed event of its key due at `due`.
fn must_precede(event: &Sighting<'_>, due: DateTime<Utc>) -> bool {
    event.committed_at < due
        && event
            .due
            // Due times a millisecond apart at least: a tie goes by store order.
            .is_none_or(|own| own + chrono::Duration::milliseconds(1) < due)
}
