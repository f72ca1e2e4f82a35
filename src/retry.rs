//! When to try again: which failures are retryable, and how long to wait (exponential
//! backoff with full jitter, `Retry-After` honoured but clamped). Pure: randomness and
//! time are arguments.

use crate::PushError;

/// First backoff ceiling; it doubles each attempt.
pub const BASE_DELAY_MS: u64 = 500;
/// Highest backoff ceiling.
pub const MAX_DELAY_MS: u64 = 10_000;
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER_MS: u64 = 60_000;

/// Whether a later attempt may succeed.
pub fn is_retryable(error: &PushError) -> bool {
    match error {
        PushError::Unreachable(_) | PushError::ConnectionLost(_) | PushError::Timeout => true,
        PushError::HttpStatus(f) => matches!(f.status, 408 | 425 | 429 | 500..=599),
        _ => false,
    }
}

/// How long to wait before attempt `next` (2, 3, …): the receiver's `Retry-After` when it
/// sent one (clamped), else a uniformly random delay up to the doubling ceiling. `random`
/// is any uniformly distributed number.
pub fn delay_ms(next: u32, retry_after_ms: Option<u64>, random: u64) -> u64 {
    if let Some(after) = retry_after_ms {
        return after.min(MAX_RETRY_AFTER_MS);
    }
    let doublings = next.saturating_sub(2).min(20);
    let ceiling = (BASE_DELAY_MS << doublings).min(MAX_DELAY_MS);
    random % (ceiling + 1)
}

/// `Retry-After` in milliseconds from now: delta-seconds, or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) compared with `now_unix_s`.
pub fn parse_retry_after(value: &str, now_unix_s: u64) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still a number of seconds: a very long one.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(seconds.saturating_mul(1000));
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.saturating_sub(now_unix_s).saturating_mul(1000))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn parse_imf_fixdate(value: &str) -> Option<u64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let mut parts = value.split_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u64 + 1;
    let year: u64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT"
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || s > 60
        || year < 1970
    {
        return None;
    }
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HttpFailure;

    fn status(code: u16) -> PushError {
        PushError::HttpStatus(HttpFailure {
            status: code,
            retry_after: None,
        })
    }

    #[test]
    fn classification_follows_the_contract() {
        for code in [408, 425, 429, 500, 502, 503, 599] {
            assert!(is_retryable(&status(code)), "{code}");
        }
        for code in [300, 400, 401, 403, 404, 410, 422] {
            assert!(!is_retryable(&status(code)), "{code}");
        }
        assert!(is_retryable(&PushError::Timeout));
        assert!(is_retryable(&PushError::Unreachable("refused".into())));
        assert!(is_retryable(&PushError::ConnectionLost("reset".into())));
        assert!(!is_retryable(&PushError::Tls("bad certificate".into())));
        assert!(!is_retryable(&PushError::Denied("elsewhere".into())));
        assert!(!is_retryable(&PushError::NotConfigured));
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        assert_eq!(delay_ms(2, None, 0), 0);
        assert_eq!(delay_ms(2, None, 500), 500);
        assert_eq!(delay_ms(2, None, 501), 0, "wraps within [0, 500]");
        assert_eq!(delay_ms(3, None, 1000), 1000);
        assert_eq!(delay_ms(4, None, 2000), 2000);
        assert_eq!(
            delay_ms(30, None, u64::MAX - 1),
            (u64::MAX - 1) % (MAX_DELAY_MS + 1)
        );
        assert!((0..1000).all(|r| delay_ms(30, None, r * 7919) <= MAX_DELAY_MS));
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        assert_eq!(delay_ms(2, Some(2_000), 12345), 2_000);
        assert_eq!(delay_ms(2, Some(3_600_000), 0), MAX_RETRY_AFTER_MS);
        assert_eq!(parse_retry_after("3", 0), Some(3_000));
        assert_eq!(parse_retry_after(" 0 ", 0), Some(0));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770),
            Some(7_000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_800),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
        // Too big for a u64: still seconds, clamped like any long wait.
        let huge = parse_retry_after("99999999999999999999", 0);
        assert_eq!(huge, Some(u64::MAX));
        assert_eq!(delay_ms(2, huge, 0), MAX_RETRY_AFTER_MS);
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 PST", 0), None);
    }
}
