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
use crate::secret::{is_secret_header, redact_url, REDACTED};
use crate::{HttpFailure, PushError};
use serde_json::Value;

/// The most a single body write hands to the host, as `wasi:io` streams advise.
const CHUNK: usize = 4096;
/// How much of a body `debug` shows.
const DEBUG_BODY_LIMIT: usize = 2048;
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
    let future =
        outgoing_handler::handle(request, Some(options(settings, budget_ms))).map_err(classify)?;
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
            Body::Bytes(bytes) => excerpt(bytes),
            Body::Streamed { streams, .. } => {
                format!("(streamed body with {} log text(s))", streams.len())
            }
        };
        debug_request(settings, &headers, &shown);
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
        Ok(Err(code)) => Err(classify(code)),
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
        debug_line(&format!(
            "status-push: <- {status} ({} body bytes) {}",
            response_body.len(),
            excerpt(&response_body)
        ));
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

/// Maps a `wasi:http` error code onto the WIT `push-error` cases.
fn classify(code: ErrorCode) -> PushError {
    match code {
        ErrorCode::DnsTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => PushError::Timeout,
        ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionLimitReached => PushError::Unreachable(describe(&code)),
        ErrorCode::ConnectionTerminated
        | ErrorCode::HttpResponseIncomplete
        | ErrorCode::HttpProtocolError => PushError::ConnectionLost(describe(&code)),
        ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => PushError::Tls(describe(&code)),
        ErrorCode::HttpRequestDenied => PushError::Denied(describe(&code)),
        other => PushError::Protocol(describe(&other)),
    }
}

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::DnsError(e) => format!(
            "DNS error {}{}",
            e.rcode.as_deref().unwrap_or(""),
            e.info_code.map(|c| format!(" ({c})")).unwrap_or_default()
        ),
        ErrorCode::TlsAlertReceived(a) => format!(
            "TLS alert {} {}",
            a.alert_id.map(|i| i.to_string()).unwrap_or_default(),
            a.alert_message.as_deref().unwrap_or("")
        ),
        ErrorCode::InternalError(Some(message)) => message.clone(),
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTerminated => "connection closed before the response".into(),
        ErrorCode::HttpResponseIncomplete => "connection closed mid-response".into(),
        ErrorCode::HttpProtocolError => "connection reset, or HTTP that could not be read".into(),
        ErrorCode::DestinationNotFound => "host not found".into(),
        ErrorCode::DestinationUnavailable => "host unavailable".into(),
        ErrorCode::HttpRequestDenied => "not the configured origin".into(),
        other => format!("{other:?}"),
    }
}

fn debug_request(settings: &Settings, headers: &[(String, Vec<u8>)], body: &str) {
    let mut text = format!(
        "status-push: -> POST {}\n",
        redact_url(&settings.target.url())
    );
    for (name, value) in headers {
        let shown = if is_secret_header(name) {
            REDACTED.into()
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        text.push_str(&format!("status-push:    {name}: {shown}\n"));
    }
    text.push_str(&format!("status-push:    {body}"));
    debug_line(&text);
}

fn excerpt(body: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&body[..body.len().min(DEBUG_BODY_LIMIT)]).into_owned();
    if body.len() > DEBUG_BODY_LIMIT {
        format!("{shown}… ({} more bytes)", body.len() - DEBUG_BODY_LIMIT)
    } else {
        shown
    }
}

fn debug_line(text: &str) {
    let err = stderr::get_stderr();
    for chunk in format!("{text}\n").as_bytes().chunks(CHUNK) {
        if err.blocking_write_and_flush(chunk).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_for_debug() {
        let body = vec![b'x'; DEBUG_BODY_LIMIT + 10];
        assert!(excerpt(&body).ends_with("… (10 more bytes)"));
        assert_eq!(excerpt(b"{}"), "{}");
    }
}
