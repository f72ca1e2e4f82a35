//! One event's delivery: render the payload once, then attempt, sign each attempt, and
//! retry retryable failures within the attempt limit and the call's deadline. A payload
//! with streamed log texts is sent in one attempt, written as it is read; with signing
//! it is read into memory first, since the signature header precedes the body.
//!
//! It reaches `wasi:*` only through the edge modules (`transport`, `log_stream`, `clock`,
//! `random`).

use crate::body::BodyError;
use crate::config::Settings;
use crate::log_stream::LogStreams;
use crate::transport::{self, Body};
use crate::{clock, payload, random, retry, signature};
use crate::{BuildEvent, Delivery, EventKind, InputError, PushError, PushFailure};

/// Delivers `event`, retrying as configured.
pub fn deliver(
    settings: &Settings,
    kind: EventKind,
    event: &BuildEvent,
) -> Result<Delivery, PushFailure> {
    let delivery_id = signature::delivery_id(
        &settings.target.url(),
        &settings.payload.buildbot_url,
        event.build.buildid,
        kind,
    );
    let failure = |error: PushError, attempts: u32| PushFailure {
        retryable: retry::is_retryable(&error),
        error,
        attempts,
        delivery_id: delivery_id.clone(),
    };
    let nonce = random::u64();
    let streams = LogStreams::of(event);
    let body = if streams.is_empty() {
        // Straight from the records to bytes: no JSON tree unless `format_fn` needs one.
        let body = payload::render_body(settings, kind, event, nonce).map_err(|e| failure(e, 0))?;
        if body.len() as u64 > settings.max_body_bytes {
            return Err(failure(too_large(settings.max_body_bytes), 0));
        }
        body
    } else if settings.signer.is_some() {
        let payload = payload::render(settings, kind, event, nonce).map_err(|e| failure(e, 0))?;
        read_whole(settings, &payload, nonce, streams).map_err(|e| failure(e, 0))?
    } else {
        let payload = payload::render(settings, kind, event, nonce).map_err(|e| failure(e, 0))?;
        let mut headers = settings.request_headers();
        headers.push(("Idempotency-Key".into(), delivery_id.clone()));
        let budget = u64::from(settings.retry.deadline_ms);
        let streamed = Body::Streamed {
            payload: &payload,
            nonce,
            streams,
        };
        return match transport::post(settings, &headers, streamed, budget) {
            Ok(status) => Ok(Delivery {
                status,
                attempts: 1,
                delivery_id,
            }),
            Err(error) => Err(failure(error, 1)),
        };
    };

    let deadline = clock::monotonic_ms() + u64::from(settings.retry.deadline_ms);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut headers = settings.request_headers();
        match &settings.signer {
            Some(signer) => headers.extend(signer.headers(&delivery_id, clock::unix_s(), &body)),
            None => headers.push(("Idempotency-Key".into(), delivery_id.clone())),
        }
        let remaining = deadline.saturating_sub(clock::monotonic_ms()).max(1);
        let error = match transport::post(settings, &headers, Body::Bytes(&body), remaining) {
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
        let wait = retry::delay_ms(attempt + 1, retry_after, random::u64());
        if clock::monotonic_ms() + wait >= deadline {
            return Err(failure(error, attempt));
        }
        clock::sleep_ms(wait);
    }
}

/// The error for a body over `maxBodyBytes`.
pub fn too_large(max_bytes: u64) -> PushError {
    PushError::InvalidInput(InputError {
        key: "maxBodyBytes".into(),
        message: format!(
            "the request body would be over {max_bytes} bytes; nothing was sent (raise maxBodyBytes, or send fewer steps, properties or logs)"
        ),
    })
}

/// The payload with its streamed texts read in, for signing.
fn read_whole(
    settings: &Settings,
    payload: &serde_json::Value,
    nonce: u64,
    streams: LogStreams<'_>,
) -> Result<Vec<u8>, PushError> {
    let mut whole = Vec::new();
    let result = streams.write(payload, nonce, settings.max_body_bytes, &mut |piece| {
        whole.extend_from_slice(piece);
        Ok(())
    });
    match result {
        Ok(()) => Ok(whole),
        Err(BodyError::TooLarge | BodyError::Sink) => Err(too_large(settings.max_body_bytes)),
        Err(BodyError::Source(why)) => Err(PushError::Protocol(format!(
            "reading a streamed log failed: {why}"
        ))),
    }
}
