//! One event's delivery: render the payload once, then attempt, sign each attempt, and
//! retry retryable failures within the attempt limit and the call's deadline. A payload
//! with streamed log texts is sent in one attempt, written as it is read; with signing
//! it is read into memory first, since the signature header precedes the body.

use crate::bindings::wasi::random::random;
use crate::body;
use crate::config::Settings;
use crate::payload::{self, EventKind};
use crate::transport::{self, Body};
use crate::{clock, encoder, retry, signature};
use crate::{BuildEvent, ConfigError, Delivery, PushError, PushFailure};

/// The largest streamed payload read into memory to be signed.
pub const MAX_SIGNED_STREAMED_BODY: usize = 32 << 20;

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
    let nonce = random::get_random_u64();
    let payload = payload::render(settings, kind, event, nonce).map_err(|e| failure(e, 0))?;
    let streams = payload::streams(event);
    let body = if streams.is_empty() {
        encoder::to_vec(&payload)
    } else if settings.signer.is_some() {
        read_whole(&payload, nonce, streams).map_err(|e| failure(e, 0))?
    } else {
        let mut headers = settings.headers.clone();
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
        let mut headers = settings.headers.clone();
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
        let wait = retry::delay_ms(attempt + 1, retry_after, random::get_random_u64());
        if clock::monotonic_ms() + wait >= deadline {
            return Err(failure(error, attempt));
        }
        clock::sleep_ms(wait);
    }
}

/// The payload with its streamed texts read in, for signing.
fn read_whole(
    payload: &serde_json::Value,
    nonce: u64,
    streams: Vec<(i64, &crate::bindings::wasi::io::streams::InputStream)>,
) -> Result<Vec<u8>, PushError> {
    let mut whole = Vec::new();
    let too_large = || {
        PushError::InvalidConfig(ConfigError {
            key: "signingScheme".into(),
            message: format!(
                "a payload with streamed logs over {} MiB cannot be signed: the signature header precedes the body",
                MAX_SIGNED_STREAMED_BODY >> 20
            ),
        })
    };
    let result = transport::write_streams(payload, nonce, streams, &mut |piece| {
        if whole.len() + piece.len() > MAX_SIGNED_STREAMED_BODY {
            return Err(());
        }
        whole.extend_from_slice(piece);
        Ok(())
    });
    match result {
        Ok(()) => Ok(whole),
        Err(body::BodyError::Sink) => Err(too_large()),
        Err(body::BodyError::Source(why)) => Err(PushError::Protocol(format!(
            "reading a streamed log failed: {why}"
        ))),
    }
}
