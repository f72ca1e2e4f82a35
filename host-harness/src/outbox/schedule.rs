//! Every timing rule of the outbox, in one place, so the courier, both backends and the
//! documentation cannot disagree. Pure: numbers in, numbers out.

use std::time::Duration;

/// A failed call of a build's head waits this long before the next call, doubling per
/// failed call up to [`MAX_BACKOFF`]. A destination's circuit uses the same schedule for
/// its probes.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two calls of one build's head, or two probes of a failing
/// destination.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The longest wait between two probes of a failing destination: a destination that
/// comes back is in use again within this long, whatever the length of its outage.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a claim holds a build's chain without being renewed. The courier renews it
/// every [`RENEW_EVERY`] while the call runs, so a host that dies holding claims delays
/// their events by at most this long.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a running call's lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);

/// Builds one courier delivers at once to one destination; each is one call at a time,
/// in its order.
pub const MAX_IN_FLIGHT_PER_DESTINATION: usize = 16;
/// Builds one courier delivers at once in all, not counting stalled calls (below).
pub const MAX_IN_FLIGHT: usize = MAX_IN_FLIGHT_PER_DESTINATION + 4;
/// A call still running after this long is stalled: its receiver took it and is slow to
/// answer, or hangs until the call's budget runs out. It gives its place back to the
/// courier's others (it still counts against its destination's share), so destinations
/// that hang, however many, never hold up those that answer.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);
/// Stalled calls one courier keeps running at once, beside its [`MAX_IN_FLIGHT`]: each
/// holds an instance, so their number is bounded too. Four destinations that hang fill
/// their whole share; beyond that, each one's circuit opens after its first calls time
/// out, and it holds one probe at a time.
pub const MAX_STALLED: usize = 4 * MAX_IN_FLIGHT_PER_DESTINATION;
/// How often an idle courier looks at the outbox when nothing wakes it (another process
/// may have queued events).
pub const POLL: Duration = Duration::from_millis(250);
/// How often a courier that `LISTEN`s (PostgreSQL) looks at an outbox nothing woke it
/// for: only what comes due with time (a backoff, a probe, a dead host's lease).
pub const POLL_LISTENING: Duration = Duration::from_secs(1);
/// How often the courier prunes old dead letters and empty chains.
pub const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// Dead letters, and empty chains, pruned per transaction, so pruning never holds the
/// database for long.
pub const PRUNE_BATCH: i64 = 1_000;

/// Puts a different one of the due destinations first on each poll (`now_ms` on the
/// store's clock), so none waits behind another's backlog of due chains.
pub(super) fn take_turns<T>(destinations: &mut [T], now_ms: i64) {
    if destinations.is_empty() {
        return;
    }
    let turn = usize::try_from(now_ms / ms(POLL).max(1)).unwrap_or(0);
    destinations.rotate_left(turn % destinations.len());
}

// How long dead letters are kept and how many events may wait are a configuration's
// (`deadLetterRetentionDays`, `maxPendingEvents`): their defaults are in `policy.rs`.

/// The wait after the `failures`-th failed call in a row (1 for the first).
pub fn backoff(failures: i64) -> Duration {
    let doublings = u32::try_from((failures - 1).clamp(0, 16)).unwrap_or(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// The wait before the next probe of a destination after its `failures`-th failed call
/// in a row: [`backoff`], capped at [`MAX_PROBE_INTERVAL`].
pub fn probe_backoff_ms(failures: i64) -> i64 {
    ms(backoff(failures).min(MAX_PROBE_INTERVAL))
}

/// [`backoff`] in milliseconds, for the databases.
pub fn backoff_ms(failures: i64) -> i64 {
    i64::try_from(backoff(failures).as_millis()).unwrap_or(i64::MAX)
}

/// A duration in milliseconds, for the databases.
pub fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_due_destination_goes_first_in_turn() {
        let firsts: Vec<char> = (0..4)
            .map(|poll| {
                let mut due = ['a', 'b', 'c'];
                take_turns(&mut due, poll * ms(POLL));
                due[0]
            })
            .collect();
        assert_eq!(firsts, ['a', 'b', 'c', 'a']);
        take_turns(&mut [0u8; 0], 0);
    }

    #[test]
    fn a_failure_waits_longer_each_time_up_to_thirty_seconds() {
        let waits: Vec<i64> = (1..=9).map(backoff_ms).collect();
        assert_eq!(
            waits,
            [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
        assert_eq!(backoff_ms(i64::MAX), 30_000);
        assert_eq!(backoff_ms(0), 250);
    }

    #[test]
    fn a_failing_destination_is_probed_at_least_every_ten_seconds() {
        assert_eq!(probe_backoff_ms(1), 250);
        assert_eq!(probe_backoff_ms(99), 10_000);
    }

    #[test]
    fn a_lease_outlives_its_renewals_and_a_dead_host_frees_it_within_fifteen_seconds() {
        assert!(RENEW_EVERY * 3 <= LEASE);
        assert!(LEASE <= Duration::from_secs(15));
    }
}
