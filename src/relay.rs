//! The relay world's `wasi:http/incoming-handler`: a build event arrives as a POST to
//! `/started` or `/finished` whose body is the data-API documents (as for the CLI); it is
//! pushed with the configuration from the `STATUS_PUSH_CONFIG` environment variable (JSON
//! with the seed's keys), and the caller learns from the status whether it was delivered
//! (and so whether to retry).

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{json, Value};

use crate::bindings::exports::wasi::http::incoming_handler::Guest;
use crate::bindings::wasi::cli::environment;
use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::config::Settings;
use crate::{
    clock, documents, report, Component, EventKind, InputError, Outcome, PushError, PushFailure,
    SkipReason,
};

/// The environment variable the relay reads its configuration from.
pub const CONFIG_VARIABLE: &str = "STATUS_PUSH_CONFIG";

thread_local! {
    /// Parsed once per instance; proxy runtimes may reuse an instance for many requests.
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}

/// One answer: status, extra headers, JSON body.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: Value,
}

impl Answer {
    fn new(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: vec![],
            body,
        }
    }
}

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let answer = respond(&request);
        let headers = Fields::new();
        // The wasi 0.13 bindings take names and values as owned `String`/`Vec` references.
        let _ = headers.append(&"content-type".to_string(), &b"application/json".to_vec());
        for (name, value) in &answer.headers {
            let _ = headers.append(&name.to_string(), &value.as_bytes().to_vec());
        }
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(answer.status);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = outgoing.write() {
            for chunk in answer.body.to_string().as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

/// The answer to one request. Checks run cheapest first, and nothing is pushed unless
/// every one passes: path (404), method (405), content type (415), configuration (500),
/// body size (413), caller (401), documents (400).
fn respond(request: &IncomingRequest) -> Answer {
    let kind = match request
        .path_with_query()
        .as_deref()
        .map(|p| p.split('?').next().unwrap_or(p))
    {
        Some("/started") => EventKind::Started,
        Some("/finished") => EventKind::Finished,
        _ => {
            return Answer::new(
                404,
                json!({"error": "not found: POST build documents to /started or /finished"}),
            )
        }
    };
    if !matches!(request.method(), Method::Post) {
        let mut answer = Answer::new(405, json!({"error": "method not allowed: use POST"}));
        answer.headers.push(("allow", "POST"));
        return answer;
    }
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(&name.to_string())
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    if let Some(content_type) = header("content-type") {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Answer::new(
                415,
                json!({"error": "unsupported media type: send Content-Type: application/json"}),
            );
        }
    }
    let settings = match settings() {
        Ok(settings) => settings,
        Err(e) => {
            return Answer::new(
                500,
                json!({"error": "invalid relay configuration", "key": e.key, "message": e.message}),
            )
        }
    };
    let body = match read_body(request, settings.max_body_bytes) {
        Ok(body) => body,
        Err(BodyRead::TooLarge) => {
            return Answer::new(
                413,
                json!({"error": format!("the body is over maxBodyBytes ({} bytes)", settings.max_body_bytes)}),
            )
        }
        Err(BodyRead::Failed) => {
            return Answer::new(400, json!({"error": "the request body could not be read"}))
        }
    };
    if let Err(refusal) = settings.inbound.check(&header, &body, clock::unix_s()) {
        let mut answer = Answer::new(
            401,
            json!({"error": "unauthorized", "reason": refusal.to_string()}),
        );
        answer.headers.push(("www-authenticate", "Bearer"));
        return answer;
    }
    let event = match std::str::from_utf8(&body)
        .map_err(|_| InputError {
            key: String::new(),
            message: "the body is not UTF-8".into(),
        })
        .and_then(crate::parse_json)
        .and_then(|doc| documents::event_from_json(&doc))
    {
        Ok(event) => event,
        Err(e) => {
            return Answer::new(
                400,
                json!({"error": "invalid build documents", "key": e.key, "message": e.message}),
            )
        }
    };
    drop(body);
    let (status, body) = match report(&settings, kind, &event) {
        Ok(Outcome::Delivered(d)) => (
            200,
            json!({"outcome": "delivered", "status": d.status, "attempts": d.attempts, "delivery_id": d.delivery_id}),
        ),
        Ok(Outcome::Skipped(reason)) => (
            200,
            json!({"outcome": "skipped", "reason": skip_reason_name(reason)}),
        ),
        Err(failure) => failed(&failure),
    };
    Answer::new(status, body)
}

/// 503 tells the caller to retry, 502 that retrying will not help.
fn failed(failure: &PushFailure) -> (u16, Value) {
    let status = if failure.retryable { 503 } else { 502 };
    let upstream = match &failure.error {
        PushError::HttpStatus(h) => Some(h.status),
        _ => None,
    };
    (
        status,
        json!({"outcome": "failed", "retryable": failure.retryable, "attempts": failure.attempts,
               "delivery_id": failure.delivery_id, "error": push_error_json(&failure.error),
               "upstream_status": upstream}),
    )
}

/// The WIT name of a skip reason.
fn skip_reason_name(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::Builder => "builder",
        SkipReason::Tags => "tags",
        SkipReason::Branch => "branch",
        SkipReason::Scheduler => "scheduler",
        SkipReason::Results => "results",
    }
}

/// A `push-error` as JSON: its WIT case name as `kind`, and its payload.
fn push_error_json(error: &PushError) -> Value {
    match error {
        PushError::NotConfigured => json!({"kind": "not-configured"}),
        PushError::InvalidInput(e) => {
            json!({"kind": "invalid-input", "key": e.key, "message": e.message})
        }
        PushError::Unreachable(why) => json!({"kind": "unreachable", "message": why}),
        PushError::ConnectionLost(why) => json!({"kind": "connection-lost", "message": why}),
        PushError::Timeout => json!({"kind": "timeout"}),
        PushError::HttpStatus(h) => {
            json!({"kind": "http-status", "status": h.status, "retry_after": h.retry_after})
        }
        PushError::Tls(why) => json!({"kind": "tls", "message": why}),
        PushError::Denied(why) => json!({"kind": "denied", "message": why}),
        PushError::Protocol(why) => json!({"kind": "protocol", "message": why}),
        PushError::Format(f) => {
            json!({"kind": "format", "message": f.message, "line": f.line, "column": f.column})
        }
    }
}

fn settings() -> Result<Rc<Settings>, InputError> {
    if let Some(settings) = SETTINGS.with(|s| s.borrow().clone()) {
        return Ok(settings);
    }
    let text = environment::get_environment()
        .into_iter()
        .find(|(name, _)| name == CONFIG_VARIABLE)
        .map(|(_, value)| value)
        .ok_or_else(|| InputError {
            key: CONFIG_VARIABLE.into(),
            message: "is not set; it holds the JSON configuration (seed option names)".into(),
        })?;
    let doc = crate::parse_json(&text).map_err(|e| InputError {
        key: CONFIG_VARIABLE.into(),
        message: e.message,
    })?;
    let settings = Rc::new(Settings::from_config(documents::config_from_json(&doc)?)?);
    SETTINGS.with(|s| *s.borrow_mut() = Some(settings.clone()));
    Ok(settings)
}

/// Why a body was not read.
enum BodyRead {
    /// Over the limit; reading stopped there.
    TooLarge,
    /// The stream failed before its end.
    Failed,
}

fn read_body(request: &IncomingRequest, max_bytes: u64) -> Result<Vec<u8>, BodyRead> {
    let body = request.consume().map_err(|()| BodyRead::Failed)?;
    let stream = body.stream().map_err(|()| BodyRead::Failed)?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(BodyRead::Failed),
        }
        if bytes.len() as u64 > max_bytes {
            return Err(BodyRead::TooLarge);
        }
    }
    Ok(bytes)
}
