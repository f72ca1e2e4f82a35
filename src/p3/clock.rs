//! Time for the retry loop and signatures, from `wasi:clocks` 0.3.

use crate::bindings::wasi::clocks::{monotonic_clock, system_clock};

/// Milliseconds on a clock that never goes back.
pub fn monotonic_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

/// Seconds since the UNIX epoch (0 for a clock set before it).
pub fn unix_s() -> u64 {
    u64::try_from(system_clock::now().seconds).unwrap_or(0)
}

/// Blocks this call (not the host) for `ms` milliseconds: 0.3's `wait-for` is an async
/// import, waited for here so the retry loop stays the same code in both builds.
pub fn sleep_ms(ms: u64) {
    wit_bindgen::block_on(monotonic_clock::wait_for(ms.saturating_mul(1_000_000)));
}
