//! Randomness, from `wasi:random` 0.3: backoff jitter and the per-render placeholder nonce.

use crate::bindings::wasi::random::random;

/// A uniformly distributed number.
pub fn u64() -> u64 {
    random::get_random_u64()
}
