//! The only module that touches `wasi:http`: one POST of a finished body, with the
//! configured headers and timeouts, classified into the WIT `push-error` cases.

use crate::bindings::wasi::cli::stderr;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme as WasiScheme,
};
use crate::config::{Scheme, Settings};
use crate::{HttpFailure, PushError};

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
    body: &[u8],
    budget_ms: u64,
) -> Result<u16, PushError> {
    let target = &settings.target;
    let mut headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
        .collect();
    headers.push(("Content-Length".into(), body.len().to_string().into_bytes()));
    if settings.debug {
        debug_request(settings, &headers, body);
    }
    let fields = Fields::from_list(&headers)
        .map_err(|e| PushError::Protocol(format!("the host refused a header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let refused = |what: &str| PushError::Protocol(format!("the host refused the request {what}"));
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

    let options = RequestOptions::new();
    let ns = |ms: u32| u64::from(ms).min(budget_ms) * 1_000_000;
    // A host that cannot honour a timeout keeps its own; that is not worth failing over.
    let _ = options.set_connect_timeout(Some(ns(settings.timeouts.connect_ms)));
    let _ = options.set_first_byte_timeout(Some(ns(settings.timeouts.io_ms)));
    let _ = options.set_between_bytes_timeout(Some(ns(settings.timeouts.io_ms)));

    let outgoing_body = request.body().map_err(|()| refused("body"))?;
    let future = outgoing_handler::handle(request, Some(options)).map_err(classify)?;

    // A failed write means the connection is gone; the response future says why.
    let written = write_body(&outgoing_body, body);
    if written.is_ok() {
        let _ = OutgoingBody::finish(outgoing_body, None);
    } else {
        drop(outgoing_body);
    }

    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = match response {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => return Err(classify(code)),
        Err(()) => return Err(PushError::Protocol("the response was already taken".into())),
    };
    let status = response.status();
    let retry_after = header(&response, "retry-after");
    let response_body = read_body(response);
    if settings.debug {
        debug_line(&format!(
            "status-push: <- {status} ({} body bytes) {}",
            response_body.len(),
            excerpt(&response_body)
        ));
    }
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(PushError::HttpStatus(HttpFailure {
            status,
            retry_after,
        }))
    }
}

fn write_body(outgoing: &OutgoingBody, body: &[u8]) -> Result<(), ()> {
    let stream = outgoing.write()?;
    for chunk in body.chunks(CHUNK) {
        stream.blocking_write_and_flush(chunk).map_err(|_| ())?;
    }
    Ok(())
}

fn header(response: &IncomingResponse, name: &str) -> Option<String> {
    let values = response.headers().get(name);
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

/// Headers whose values are credentials; `debug` shows them as `<redacted>`.
fn is_secret_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "token",
        "secret",
        "password",
        "signature",
        "api-key",
        "apikey",
    ]
    .iter()
    .any(|s| lower.contains(s))
}

fn debug_request(settings: &Settings, headers: &[(String, Vec<u8>)], body: &[u8]) {
    let mut text = format!("status-push: -> POST {}\n", settings.target.url());
    for (name, value) in headers {
        let shown = if is_secret_header(name) {
            "<redacted>".into()
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        text.push_str(&format!("status-push:    {name}: {shown}\n"));
    }
    text.push_str(&format!("status-push:    {}", excerpt(body)));
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
    fn credentials_are_recognised_by_header_name() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "X-Auth-Token",
            "Cookie",
            "X-Hub-Signature-256",
        ] {
            assert!(is_secret_header(name), "{name}");
        }
        for name in [
            "Content-Type",
            "X-Request-Id",
            "Accept",
            "Idempotency-Key",
            "webhook-id",
        ] {
            assert!(!is_secret_header(name), "{name}");
        }
    }

    #[test]
    fn long_bodies_are_cut_for_debug() {
        let body = vec![b'x'; DEBUG_BODY_LIMIT + 10];
        assert!(excerpt(&body).ends_with("… (10 more bytes)"));
        assert_eq!(excerpt(b"{}"), "{}");
    }
}
