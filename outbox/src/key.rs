//! Hashing of partition keys into shards and lock ids.
//!
//! The hash is part of the stored data (the `shard` column), so it must never change
//! between versions or platforms: 64-bit FNV-1a over the key's UTF-8 bytes.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// The stable 64-bit hash of a partition key.
pub(crate) fn key_hash(key: &str) -> u64 {
    key.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard of a key hash, in `0..shards`.
pub(crate) fn shard_of(hash: u64, shards: u16) -> i32 {
    // The remainder is below `shards`, which fits in an i32.
    i32::from(u16::try_from(hash % u64::from(shards.max(1))).unwrap_or(0))
}

/// The 32-bit id under which a key is locked while its event is stored.
pub(crate) fn lock_id(hash: u64) -> i32 {
    // Fold the high half in, then reinterpret the bits: any i32 is a valid lock id.
    i32::from_ne_bytes(((hash ^ (hash >> 32)) as u32).to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_stay_in_range_and_spread() {
        let mut seen = [0usize; 16];
        for i in 0..1600 {
            let shard = shard_of(key_hash(&format!("customer-{i}")), 16);
            seen[usize::try_from(shard).expect("non-negative")] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "uneven spread: {seen:?}");
    }
}
