//! Time for the retry loop and signatures, from `wasi:clocks`.

use crate::bindings::wasi::clocks::{monotonic_clock, wall_clock};

/// Milliseconds on a clock that never goes back.
pub fn monotonic_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

/// Seconds since the UNIX epoch.
pub fn unix_s() -> u64 {
    wall_clock::now().seconds
}

/// Blocks this call (not the host) for `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
}
