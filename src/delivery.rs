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

/// A rendered request body.
enum Prepared<'a> {
    /// In memory: sent as is, signed if configured, tried again if that may help.
    InMemory(Vec<u8>),
    /// With log texts read while it is written: one attempt, since a stream is read once.
    Streamed {
        payload: serde_json::Value,
        nonce: u64,
        streams: LogStreams<'a>,
    },
}

/// Delivers `event` (its payload, or `formatted`, a body the host formatted itself),
/// retrying as configured.
pub fn deliver(
    settings: &Settings,
    kind: EventKind,
    event: &BuildEvent,
    formatted: Option<&serde_json::Value>,
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
    let mut prepared = match formatted {
        // A host's own report: encoded as Buildbot's HTTP client encodes it
        // (`json.dumps`), and neither `format_fn` nor the payload options apply.
        Some(body) => {
            let body = crate::encoder::to_vec(body);
            if body.len() as u64 > settings.max_body_bytes {
                return Err(failure(too_large(settings.max_body_bytes), 0));
            }
            Prepared::InMemory(body)
        }
        None => prepare(settings, kind, event).map_err(|e| failure(e, 0))?,
    };
    let deadline = clock::monotonic_ms() + u64::from(settings.retry.deadline_ms);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let remaining = deadline.saturating_sub(clock::monotonic_ms()).max(1);
        // A body in memory stays for the next attempt; a streamed one is read by its one.
        let (sent, kept) = match prepared {
            Prepared::InMemory(body) => {
                let headers = attempt_headers(settings, &delivery_id, Some(&body));
                let sent = transport::post(settings, &headers, Body::Bytes(&body), remaining);
                (sent, Some(body))
            }
            Prepared::Streamed {
                payload,
                nonce,
                streams,
            } => {
                let headers = attempt_headers(settings, &delivery_id, None);
                let body = Body::Streamed {
                    payload: &payload,
                    nonce,
                    streams,
                };
                (transport::post(settings, &headers, body, remaining), None)
            }
        };
        let error = match sent {
            Ok(status) => {
                return Ok(Delivery {
                    status,
                    attempts: attempt,
                    delivery_id,
                })
            }
            Err(error) => error,
        };
        let body = match kept {
            Some(body) if attempt < settings.retry.max_attempts && retry::is_retryable(&error) => {
                body
            }
            _ => return Err(failure(error, attempt)),
        };
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
        prepared = Prepared::InMemory(body);
    }
}

/// The body, rendered once for every attempt. Streamed log texts stay streamed unless
/// the request is signed: the signature header precedes the body, so it is read whole.
fn prepare<'a>(
    settings: &Settings,
    kind: EventKind,
    event: &'a BuildEvent,
) -> Result<Prepared<'a>, PushError> {
    let nonce = random::u64();
    let streams = LogStreams::of(event);
    if streams.is_empty() {
        // Straight from the records to bytes: no JSON tree unless `format_fn` needs one.
        let body = payload::render_body(settings, kind, event, nonce)?;
        if body.len() as u64 > settings.max_body_bytes {
            return Err(too_large(settings.max_body_bytes));
        }
        return Ok(Prepared::InMemory(body));
    }
    let payload = payload::render(settings, kind, event, nonce)?;
    if settings.signer.is_some() {
        return read_whole(settings, &payload, nonce, streams).map(Prepared::InMemory);
    }
    Ok(Prepared::Streamed {
        payload,
        nonce,
        streams,
    })
}

/// The configured headers, then the delivery id: as the signature's `webhook-id` when
/// signing (over `body`), otherwise as `Idempotency-Key`.
fn attempt_headers(
    settings: &Settings,
    delivery_id: &str,
    body: Option<&[u8]>,
) -> Vec<(String, String)> {
    let mut headers = settings.request_headers();
    match (&settings.signer, body) {
        (Some(signer), Some(body)) => {
            headers.extend(signer.headers(delivery_id, clock::unix_s(), body))
        }
        _ => headers.push(("Idempotency-Key".into(), delivery_id.to_string())),
    }
    headers
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
