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
use crate::config::Settings;
use crate::payload::EventKind;
use crate::{documents, report, Component, ConfigError, Outcome, PushError, PushFailure};

/// The environment variable the relay reads its configuration from.
pub const CONFIG_VARIABLE: &str = "STATUS_PUSH_CONFIG";
/// The largest request body accepted.
const MAX_REQUEST_BODY: u64 = 64 << 20;

thread_local! {
    /// Parsed once per instance; proxy runtimes may reuse an instance for many requests.
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = respond(&request);
        let headers = Fields::new();
        let _ = headers.append("content-type", b"application/json");
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = outgoing.write() {
            for chunk in body.to_string().as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

/// The status and JSON answer for one request.
fn respond(request: &IncomingRequest) -> (u16, Value) {
    let kind = match request
        .path_with_query()
        .as_deref()
        .map(|p| p.split('?').next().unwrap_or(p))
    {
        Some("/started") => EventKind::Started,
        Some("/finished") => EventKind::Finished,
        _ => {
            return (
                404,
                json!({"error": "POST build documents to /started or /finished"}),
            )
        }
    };
    if !matches!(request.method(), Method::Post) {
        return (405, json!({"error": "use POST"}));
    }
    let settings = match settings() {
        Ok(settings) => settings,
        Err(e) => {
            return (
                500,
                json!({"error": "invalid relay configuration", "key": e.key, "message": e.message}),
            )
        }
    };
    let text = match read_body(request) {
        Ok(text) => text,
        Err(why) => return (400, json!({"error": why})),
    };
    let event = match serde_json::from_str::<Value>(&text)
        .map_err(|e| ConfigError {
            key: String::new(),
            message: format!("not JSON: {e}"),
        })
        .and_then(|doc| documents::event_from_json(&doc))
    {
        Ok(event) => event,
        Err(e) => {
            return (
                400,
                json!({"error": "invalid build documents", "key": e.key, "message": e.message}),
            )
        }
    };
    match report(&settings, kind, &event) {
        Ok(Outcome::Delivered(d)) => (
            200,
            json!({"outcome": "delivered", "status": d.status, "attempts": d.attempts, "delivery_id": d.delivery_id}),
        ),
        Ok(Outcome::Skipped(reason)) => (
            200,
            json!({"outcome": "skipped", "reason": format!("{reason:?}")}),
        ),
        Err(failure) => failed(&failure),
    }
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
               "delivery_id": failure.delivery_id, "error": format!("{:?}", failure.error),
               "upstream_status": upstream}),
    )
}

fn settings() -> Result<Rc<Settings>, ConfigError> {
    if let Some(settings) = SETTINGS.with(|s| s.borrow().clone()) {
        return Ok(settings);
    }
    let text = environment::get_environment()
        .into_iter()
        .find(|(name, _)| name == CONFIG_VARIABLE)
        .map(|(_, value)| value)
        .ok_or_else(|| ConfigError {
            key: CONFIG_VARIABLE.into(),
            message: "is not set; it holds the JSON configuration (seed option names)".into(),
        })?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| ConfigError {
        key: CONFIG_VARIABLE.into(),
        message: format!("is not JSON: {e}"),
    })?;
    let settings = Rc::new(Settings::from_config(documents::config_from_json(&doc)?)?);
    SETTINGS.with(|s| *s.borrow_mut() = Some(settings.clone()));
    Ok(settings)
}

fn read_body(request: &IncomingRequest) -> Result<String, String> {
    let body = request
        .consume()
        .map_err(|()| "the body was already read".to_string())?;
    let stream = body
        .stream()
        .map_err(|()| "the body has no stream".to_string())?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > MAX_REQUEST_BODY {
            return Err(format!("the body is over {} MiB", MAX_REQUEST_BODY >> 20));
        }
    }
    String::from_utf8(bytes).map_err(|_| "the body is not UTF-8".to_string())
}
