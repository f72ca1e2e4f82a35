//! What the two transports (`wasi:http` 0.2 in `transport.rs`, 0.3 in `p3/transport.rs`)
//! share without naming either: the mapping of `wasi:http`'s `error-code` onto the WIT
//! `push-error` cases, and the text of the `debug` lines.
//!
//! The mapping is a macro because each WASI version has its own `error-code` type, with
//! the same cases under the same names: written once here, it is expanded where that
//! type is in scope, so both builds classify a failure alike.

use crate::config::Settings;
use crate::secret::{is_secret_header, redact_url, REDACTED};

/// How much of a body `debug` shows.
const DEBUG_BODY_LIMIT: usize = 2048;

/// `classify!(code)`: the `push-error` for a `wasi:http` `ErrorCode` (the type in scope at
/// the call site), described for people.
macro_rules! classify {
    ($code:expr) => {{
        let code = $code;
        let describe = |code: &ErrorCode| -> String {
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
                ErrorCode::HttpProtocolError => {
                    "connection reset, or HTTP that could not be read".into()
                }
                ErrorCode::DestinationNotFound => "host not found".into(),
                ErrorCode::DestinationUnavailable => "host unavailable".into(),
                ErrorCode::HttpRequestDenied => "not the configured origin".into(),
                other => format!("{other:?}"),
            }
        };
        match code {
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => $crate::PushError::Timeout,
            ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionLimitReached => $crate::PushError::Unreachable(describe(&code)),
            ErrorCode::ConnectionTerminated
            | ErrorCode::HttpResponseIncomplete
            | ErrorCode::HttpProtocolError => $crate::PushError::ConnectionLost(describe(&code)),
            ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsAlertReceived(_) => $crate::PushError::Tls(describe(&code)),
            ErrorCode::HttpRequestDenied => $crate::PushError::Denied(describe(&code)),
            other => $crate::PushError::Protocol(describe(&other)),
        }
    }};
}
pub(crate) use classify;

/// The `debug` text of a request: its line, its headers (secret ones redacted) and what
/// its body shows.
pub fn request_text(settings: &Settings, headers: &[(String, Vec<u8>)], body: &str) -> String {
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
    text
}

/// The `debug` text of a response.
pub fn response_text(status: u16, body: &[u8]) -> String {
    format!(
        "status-push: <- {status} ({} body bytes) {}",
        body.len(),
        excerpt(body)
    )
}

/// What `debug` shows of a streamed body.
pub fn streamed_text(texts: usize) -> String {
    format!("(streamed body with {texts} log text(s))")
}

/// The start of a body, for `debug`.
pub fn excerpt(body: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&body[..body.len().min(DEBUG_BODY_LIMIT)]).into_owned();
    if body.len() > DEBUG_BODY_LIMIT {
        format!("{shown}… ({} more bytes)", body.len() - DEBUG_BODY_LIMIT)
    } else {
        shown
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
