//! The fair share of shards: how many of a service's shards one relay holds, among
//! the live relays and those on probation (see `stall.rs`). Pure, no I/O.

use super::membership::Standing;

/// This relay's fair share of `shards`, standing as `standing` among its service's
/// live relays, on `probation` or not: a relay on probation takes one shard and the
/// others leave one to each such relay; when every relay is on probation (a broker
/// back for all of them, or a lone relay), nobody else would take the shards, so each
/// takes a full share.
pub(super) fn fair_share(shards: u16, standing: Standing, probation: bool) -> usize {
    let all = i64::from(shards);
    let Standing {
        relays,
        on_probation,
        ahead,
    } = standing;
    match (probation, on_probation < relays) {
        (_, false) => share(all, relays, 0, 0),
        (true, true) => 1,
        (false, true) => share(all, relays, on_probation, ahead),
    }
}

/// This relay's fair share of `shards` among `relays` live relays, `on_probation` of
/// which hold one shard each, this one with `ahead` relays not on probation before it
/// by id: the others split what is left exactly, the first by id taking one more, so
/// the shares add up and the probations' shards stay free for them.
fn share(shards: i64, relays: i64, on_probation: i64, ahead: i64) -> usize {
    let live = (relays - on_probation).max(1);
    let left = (shards - on_probation).max(0);
    let share = left / live + i64::from(ahead < left % live);
    usize::try_from(share).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{Standing, fair_share, share};

    fn standing(relays: i64, on_probation: i64, ahead: i64) -> Standing {
        Standing {
            relays,
            on_probation,
            ahead,
        }
    }

    #[test]
    fn a_relay_on_probation_takes_one_shard_unless_every_relay_is() {
        assert_eq!(fair_share(16, standing(1, 0, 0), false), 16, "alone");
        assert_eq!(
            fair_share(16, standing(1, 1, 0), true),
            16,
            "alone on probation"
        );
        assert_eq!(
            fair_share(16, standing(2, 2, 0), true),
            8,
            "all on probation"
        );
        assert_eq!(
            fair_share(16, standing(2, 1, 0), true),
            1,
            "one on probation"
        );
        assert_eq!(
            fair_share(16, standing(2, 1, 0), false),
            15,
            "beside one on probation"
        );
        assert_eq!(fair_share(16, standing(3, 0, 2), false), 5);
    }

    #[test]
    fn shares_add_up_to_the_shards_left_by_the_probations() {
        for (shards, relays, on_probation) in [
            (16, 1, 0),
            (16, 3, 0),
            (16, 3, 1),
            (16, 2, 1),
            (5, 7, 0),
            (16, 17, 1),
        ] {
            let healthy = relays - on_probation;
            let total: usize = (0..healthy)
                .map(|ahead| share(shards, relays, on_probation, ahead))
                .sum();
            let left = usize::try_from((shards - on_probation).max(0)).expect("small");
            assert_eq!(
                total, left,
                "{shards} shards, {relays} relays, {on_probation} on probation"
            );
        }
        assert_eq!(share(16, 3, 0, 0), 6);
        assert_eq!(share(16, 3, 0, 2), 5);
        assert_eq!(
            share(16, 2, 1, 0),
            15,
            "one shard left to the relay on probation"
        );
    }
}
