//! Stable 64-bit hashes of strings the simulator keeps by the million (recipients, callback
//! data), and a pass-through hasher for maps keyed by them: storing the hash instead of the
//! string saves an allocation per request and most of the memory, and hashing it again would
//! be wasted work.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A hash that is the same on every run and every build, unlike std's hasher whose algorithm
/// may change between Rust versions: FNV-1a, then MurmurHash3's finaliser, because FNV alone
/// leaves the high bits of similar short strings (phone numbers) badly mixed.
///
/// Two different strings share a hash with odds of about n²/2⁶⁵ among n strings (10⁻⁸ at a
/// million), which the simulator accepts for a spurious duplicate or pair-limit hit.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    mix(fnv(FNV_OFFSET, bytes))
}

/// Where a salted value falls in `[0, 1)`: the [`stable_hash`] of `salt:value`, without
/// building that string. Different salts give independent picks from the same numbers.
pub fn share_point(salt: &str, value: &str) -> f64 {
    let h = fnv(
        fnv(fnv(FNV_OFFSET, salt.as_bytes()), b":"),
        value.as_bytes(),
    );
    // Top 53 bits as a fraction in [0, 1).
    (mix(h) >> 11) as f64 / (1u64 << 53) as f64
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Uses a `u64` key that is already a [`stable_hash`] as its own hash.
#[derive(Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are expected; anything else still hashes, just not for free.
        self.0 = stable_hash(bytes);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type HashedMap<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;
pub type HashedSet = HashSet<u64, BuildHasherDefault<PassThrough>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned_across_builds() {
        // Which recipients are undeliverable at a given ratio depends on these values.
        assert_eq!(stable_hash(b"4915112345678"), 0x9733_37bb_1eda_ea7e);
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
    }

    #[test]
    fn a_share_point_is_the_hash_of_the_salted_value() {
        let whole = (stable_hash(b"read:4915112345678") >> 11) as f64 / (1u64 << 53) as f64;
        assert_eq!(share_point("read", "4915112345678"), whole);
        assert_ne!(
            share_point("read", "4915112345678"),
            share_point("delivered", "4915112345678")
        );
    }

    #[test]
    fn hashed_keys_pass_through() {
        let mut set = HashedSet::default();
        assert!(set.insert(stable_hash(b"k:1")));
        assert!(!set.insert(stable_hash(b"k:1")));
        assert!(set.insert(stable_hash(b"k:2")));
    }
}
