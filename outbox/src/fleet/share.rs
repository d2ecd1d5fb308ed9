//! Which databases a fleet member serves: a fair share of the list, decided by every
//! member alike from the same list of live members, with no message between them.
//!
//! Each database goes to the member that weighs most for it (rendezvous hashing over
//! the member's id and the database's name) among those not yet holding their fair
//! share (`ceil(databases / members)`), the databases taken by name. Every member
//! computes the same split from the same view; while views differ (a member just
//! joined or left), a database may be served by two members for a refresh, which
//! its relays' shard leases make safe, or by none for a refresh.

use std::collections::HashMap;

/// The names of `databases` (sorted, distinct) that `me` serves among `members`
/// (`me` among them). With no members known, every database.
pub(super) fn share<'a>(databases: &[&'a str], members: &[String], me: &str) -> Vec<&'a str> {
    if members.is_empty() {
        return databases.to_vec();
    }
    let fair = databases.len().div_ceil(members.len());
    let mut load: HashMap<&str, usize> = HashMap::new();
    let mut mine = Vec::new();
    for &database in databases {
        let owner = members
            .iter()
            .filter(|member| load.get(member.as_str()).copied().unwrap_or(0) < fair)
            .max_by_key(|member| (weight(member, database), member.as_str()))
            .map(String::as_str);
        if let Some(owner) = owner {
            *load.entry(owner).or_insert(0) += 1;
            if owner == me {
                mine.push(database);
            }
        }
    }
    mine
}

/// How much `member` weighs for `database`: the same on every host and build
/// (64-bit FNV-1a over both, finished with SplitMix64's mixer for spread).
fn weight(member: &str, database: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.bytes().chain([0xff]).chain(database.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tenant-{i:03}")).collect()
    }

    #[test]
    fn every_database_goes_to_one_member_and_none_holds_more_than_its_share() {
        for (databases, members) in [(9, 3), (50, 3), (200, 2), (5, 8), (1, 1), (0, 3)] {
            let databases = names(databases);
            let databases: Vec<&str> = databases.iter().map(String::as_str).collect();
            let members: Vec<String> = (0..members).map(|i| format!("relay-{i}-x")).collect();
            let mut served: Vec<&str> = Vec::new();
            for member in &members {
                let mine = share(&databases, &members, member);
                assert!(
                    mine.len() <= databases.len().div_ceil(members.len()),
                    "{mine:?}"
                );
                served.extend(mine);
            }
            served.sort_unstable();
            assert_eq!(served, databases, "each once, none left out");
        }
    }

    #[test]
    fn a_member_alone_serves_all_and_a_member_unknown_serves_none() {
        let databases = ["a", "b", "c"];
        let alone = vec!["me".to_owned()];
        assert_eq!(share(&databases, &alone, "me"), databases);
        assert_eq!(
            share(&databases, &[], "me"),
            databases,
            "no view: serve all"
        );
        assert!(share(&databases, &alone, "stranger").is_empty());
    }

    #[test]
    fn a_member_leaving_moves_little_when_shares_are_not_full() {
        let databases = names(60);
        let databases: Vec<&str> = databases.iter().map(String::as_str).collect();
        let four: Vec<String> = (0..4).map(|i| format!("relay-{i}")).collect();
        let three = &four[..3];
        let moved = three
            .iter()
            .map(|member| {
                let before = share(&databases, &four, member);
                let after = share(&databases, three, member);
                before.iter().filter(|d| !after.contains(d)).count()
            })
            .sum::<usize>();
        // The leaving member's 15 databases move; the others keep most of theirs.
        assert!(moved <= 20, "{moved} databases left a member that stayed");
    }
}
