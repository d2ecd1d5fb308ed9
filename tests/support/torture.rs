//! What the torture suite and its consumer processes agree on: which events a
//! handler refuses until the suite mends them, and which it ends the transaction of.

use uuid::Uuid;

/// One event in about 97: the torture consumer refuses it (at COMMIT on PostgreSQL)
/// until the suite marks it mended, then replays its dead letter.
pub fn refused(id: Uuid) -> bool {
    id.as_u128() % 97 == 11
}

/// One event in about 37: the torture consumer's first attempt at it in a process
/// ends the transaction itself and returns `Ok`.
pub fn ends_its_transaction(id: Uuid) -> bool {
    id.as_u128() % 37 == 5
}
