//! The only module that touches `wasi:http`: one POST of a finished body, with the
//! configured headers and timeouts, classified into the WIT `push-error` cases.

use crate::bindings::wasi::cli::stderr;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, OutputStream, RequestOptions, Scheme as WasiScheme,
};
use crate::body::BodyError;
use crate::config::{Scheme, Settings};
use crate::log_stream::LogStreams;
use crate::wire::{self, classify};
use crate::{HttpFailure, PushError};
use serde_json::Value;

/// The most a single body write hands to the host, as `wasi:io` streams advise.
const CHUNK: usize = 4096;
/// How much of a response body is read (for `debug`) before it is dropped.
const RESPONSE_READ_LIMIT: u64 = 64 * 1024;

/// POSTs `body` with `headers` to the configured server, giving up after `budget_ms`
/// at the latest; `Ok` carries the 2xx status.
pub fn post(
    settings: &Settings,
    headers: &[(String, String)],
    body: Body<'_>,
    budget_ms: u64,
) -> Result<u16, PushError> {
    let request = request(settings, headers, &body)?;
    let outgoing_body = request.body().map_err(|()| refused("body"))?;
    let stream = outgoing_body.write().map_err(|()| refused("body stream"))?;
    // A body in memory that the host takes in one write is written and finished before
    // `handle`: the host can then send the whole request within that call (ours does:
    // host-harness/src/outgoing.rs) rather than on a task this wait is woken from. Any
    // other body is written after `handle`, as the host reads it.
    let unwritten = match body {
        Body::Bytes(bytes) => match write_at_once(&stream, bytes) {
            AtOnce::Written => {
                drop(stream);
                let _ = OutgoingBody::finish(outgoing_body, None);
                None
            }
            // Unfinished, the body aborts the request: the response future says why.
            AtOnce::Failed => {
                drop(stream);
                drop(outgoing_body);
                None
            }
            AtOnce::NotTaken => Some((outgoing_body, stream, body)),
        },
        body => Some((outgoing_body, stream, body)),
    };
    let future = outgoing_handler::handle(request, Some(options(settings, budget_ms)))
        .map_err(|code| classify!(code))?;
    if let Some((outgoing_body, stream, body)) = unwritten {
        finish_body(outgoing_body, stream, body)?;
    }
    answer(settings, wait(&future)?)
}

/// The request line and headers (with `Content-Length` for a body in memory); logged
/// under `debug`, credentials redacted.
fn request(
    settings: &Settings,
    headers: &[(String, String)],
    body: &Body<'_>,
) -> Result<OutgoingRequest, PushError> {
    let target = &settings.target;
    let mut headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
        .collect();
    // A streamed body's length is not known up front: it goes out chunked.
    if let Body::Bytes(bytes) = body {
        headers.push((
            "Content-Length".into(),
            bytes.len().to_string().into_bytes(),
        ));
    }
    if settings.debug {
        let shown = match body {
            Body::Bytes(bytes) => wire::excerpt(bytes),
            Body::Streamed { streams, .. } => wire::streamed_text(streams.len()),
        };
        debug_line(&wire::request_text(settings, &headers, &shown));
    }
    let fields = Fields::from_list(&headers)
        .map_err(|e| PushError::Protocol(format!("the host refused a header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&Method::Post)
        .map_err(|()| refused("method"))?;
    let scheme = match target.scheme {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    request
        .set_authority(Some(&target.authority))
        .map_err(|()| refused("authority"))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| refused("path"))?;
    Ok(request)
}

fn refused(what: &str) -> PushError {
    PushError::Protocol(format!("the host refused the request {what}"))
}

/// The configured timeouts, none longer than what is left of the budget.
fn options(settings: &Settings, budget_ms: u64) -> RequestOptions {
    let options = RequestOptions::new();
    let ns = |ms: u32| u64::from(ms).min(budget_ms) * 1_000_000;
    // A host that cannot honour a timeout keeps its own; that is not worth failing over.
    let _ = options.set_connect_timeout(Some(ns(settings.timeouts.connect_ms)));
    let _ = options.set_first_byte_timeout(Some(ns(settings.timeouts.io_ms)));
    let _ = options.set_between_bytes_timeout(Some(ns(settings.timeouts.io_ms)));
    options
}

/// Writes a body the host did not take before `handle`. A failed write means the
/// connection is gone; the response future says why. A failed log source aborts the
/// request: an unfinished body is never taken as complete.
fn finish_body(
    outgoing_body: OutgoingBody,
    stream: OutputStream,
    body: Body<'_>,
) -> Result<(), PushError> {
    let written = write_body(&stream, body);
    drop(stream);
    match written {
        Ok(()) => {
            let _ = OutgoingBody::finish(outgoing_body, None);
            Ok(())
        }
        Err(BodyError::Sink | BodyError::TooLarge) => {
            drop(outgoing_body);
            Ok(())
        }
        Err(BodyError::Source(why)) => {
            drop(outgoing_body);
            Err(PushError::Protocol(format!(
                "reading a streamed log failed: {why}"
            )))
        }
    }
}

/// The response, once it comes.
fn wait(future: &FutureIncomingResponse) -> Result<IncomingResponse, PushError> {
    // The response is never ready this early: wait first, then take it (one host call
    // fewer than asking first).
    let response = loop {
        future.subscribe().block();
        if let Some(result) = future.get() {
            break result;
        }
    };
    match response {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(classify!(code)),
        Err(()) => Err(PushError::Protocol("the response was already taken".into())),
    }
}

/// A 2xx status, or the failure with its `Retry-After`; the body is read (for `debug`)
/// and dropped.
fn answer(settings: &Settings, response: IncomingResponse) -> Result<u16, PushError> {
    let status = response.status();
    let success = (200..300).contains(&status);
    // Only a failure's `Retry-After` is used: a 2xx's headers are not read at all.
    let retry_after = if success {
        None
    } else {
        header(&response, "retry-after")
    };
    let response_body = read_body(response);
    if settings.debug {
        debug_line(&wire::response_text(status, &response_body));
    }
    if success {
        Ok(status)
    } else {
        Err(PushError::HttpStatus(HttpFailure {
            status,
            retry_after,
        }))
    }
}

/// What a request carries.
pub enum Body<'a> {
    /// A body already in memory.
    Bytes(&'a [u8]),
    /// A payload whose streamed log texts are read while it is written.
    Streamed {
        /// The payload, with `body::placeholder(nonce, logid)` for each streamed text.
        payload: &'a Value,
        /// The render's nonce.
        nonce: u64,
        /// The event's streamed texts.
        streams: LogStreams<'a>,
    },
}

fn write_body(stream: &OutputStream, body: Body<'_>) -> Result<(), BodyError> {
    let mut sink = |bytes: &[u8]| -> Result<(), ()> {
        for chunk in bytes.chunks(CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(|_| ())?;
        }
        Ok(())
    };
    match body {
        Body::Bytes(bytes) => sink(bytes).map_err(|()| BodyError::Sink),
        Body::Streamed {
            payload,
            nonce,
            streams,
        } => streams.write(payload, nonce, u64::MAX, &mut sink),
    }
}

/// What became of a body offered to the host in one write.
enum AtOnce {
    Written,
    /// The write was permitted but failed: the body must not be finished.
    Failed,
    /// The host takes fewer bytes at once: nothing was written.
    NotTaken,
}

fn write_at_once(stream: &OutputStream, bytes: &[u8]) -> AtOnce {
    match stream.check_write() {
        Ok(permitted) if permitted >= bytes.len() as u64 => match stream.write(bytes) {
            Ok(()) => AtOnce::Written,
            Err(_) => AtOnce::Failed,
        },
        _ => AtOnce::NotTaken,
    }
}

fn header(response: &IncomingResponse, name: &str) -> Option<String> {
    // The wasi 0.13 bindings take field names as `&String`.
    let values = response.headers().get(&name.to_string());
    values
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Reads (a bounded part of) the response body so the connection can be reused.
fn read_body(response: IncomingResponse) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = response.consume() else {
        return out;
    };
    if let Ok(stream) = body.stream() {
        while (out.len() as u64) < RESPONSE_READ_LIMIT {
            match stream.blocking_read(RESPONSE_READ_LIMIT - out.len() as u64) {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(_) => break,
            }
        }
    }
    out
}

fn debug_line(text: &str) {
    let err = stderr::get_stderr();
    for chunk in format!("{text}\n").as_bytes().chunks(CHUNK) {
        if err.blocking_write_and_flush(chunk).is_err() {
            return;
        }
    }
}
