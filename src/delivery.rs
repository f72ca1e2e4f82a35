//! One event's delivery: render the body once, then attempt, sign each attempt, and retry
//! retryable failures within the attempt limit and the call's deadline.

use crate::bindings::wasi::random::random;
use crate::config::Settings;
use crate::payload::{self, EventKind};
use crate::{clock, retry, signature, transport};
use crate::{BuildEvent, Delivery, PushError, PushFailure};

/// Delivers `event`, retrying as configured.
pub fn deliver(
    settings: &Settings,
    kind: EventKind,
    event: &BuildEvent,
) -> Result<Delivery, PushFailure> {
    let delivery_id =
        signature::delivery_id(&settings.payload.buildbot_url, event.build.buildid, kind);
    let failure = |error: PushError, attempts: u32| PushFailure {
        retryable: retry::is_retryable(&error),
        error,
        attempts,
        delivery_id: delivery_id.clone(),
    };
    let body = payload::render(settings, kind, event).map_err(|e| failure(e, 0))?;
    let deadline = clock::monotonic_ms() + u64::from(settings.retry.deadline_ms);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut headers = settings.headers.clone();
        match &settings.signer {
            Some(signer) => headers.extend(signer.headers(&delivery_id, clock::unix_s(), &body)),
            None => headers.push(("Idempotency-Key".into(), delivery_id.clone())),
        }
        let remaining = deadline.saturating_sub(clock::monotonic_ms()).max(1);
        let error = match transport::post(settings, &headers, &body, remaining) {
            Ok(status) => {
                return Ok(Delivery {
                    status,
                    attempts: attempt,
                    delivery_id,
                })
            }
            Err(error) => error,
        };
        if !retry::is_retryable(&error) || attempt >= settings.retry.max_attempts {
            return Err(failure(error, attempt));
        }
        let retry_after = match &error {
            PushError::HttpStatus(f) => f
                .retry_after
                .as_deref()
                .and_then(|v| retry::parse_retry_after(v, clock::unix_s())),
            _ => None,
        };
        let wait = retry::delay_ms(attempt + 1, retry_after, random::get_random_u64());
        if clock::monotonic_ms() + wait >= deadline {
            return Err(failure(error, attempt));
        }
        clock::sleep_ms(wait);
    }
}
