//! What a relay holds between lease rounds: each shard's lease (its fencing token and
//! local deadline) and which shards have a batch in flight.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// A shard held: its fencing token, and until when this relay may act on it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    token: i64,
    /// The local, monotonic deadline: the start of the statement that took or last
    /// renewed the lease, plus the lease time, minus `Leases::margin`. A relay
    /// paused past it (SIGSTOP, a frozen VM, CPU throttling) may have lost the shard
    /// to a relay that saw the lease expire; it claims, publishes and writes nothing
    /// on it until a round renews it.
    valid_until: Instant,
}

impl Lease {
    /// A lease held with `token` until `valid_until`.
    pub(super) fn new(token: i64, valid_until: Instant) -> Self {
        Lease { token, valid_until }
    }

    fn valid(&self, token: i64) -> bool {
        self.token == token && Instant::now() < self.valid_until
    }
}

/// What batches and rounds read and change.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) owned: BTreeMap<i32, Lease>,
    /// Shards with a batch in flight: never given up until it is written back.
    pub(super) busy: HashSet<i32>,
    /// Set when the relay stops: no round takes or renews anything after.
    pub(super) closed: bool,
}

impl Held {
    /// Marks `shard` busy if it is held with `token` and its local deadline has not
    /// passed; whether it was.
    pub(super) fn start_batch(&mut self, shard: i32, token: i64) -> bool {
        let valid = self.valid(shard, token);
        if valid {
            self.busy.insert(shard);
        }
        valid
    }

    /// Whether `shard` is held with `token` and its local deadline has not passed.
    pub(super) fn valid(&self, shard: i32, token: i64) -> bool {
        self.owned
            .get(&shard)
            .is_some_and(|lease| lease.valid(token))
    }

    /// The shards held, with their tokens.
    pub(super) fn tokens(&self) -> Vec<(i32, i64)> {
        self.owned
            .iter()
            .map(|(&shard, lease)| (shard, lease.token))
            .collect()
    }

    /// The token `shard` is held by, if it is held.
    pub(super) fn token(&self, shard: i32) -> Option<i64> {
        self.owned.get(&shard).map(|lease| lease.token)
    }
}
