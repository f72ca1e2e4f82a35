//! The relay's HTTP contract: which paths it answers, every refusal with its status and
//! JSON body, the documents a request carries, and the answer to a push. Pure (data in,
//! data out): the relay component (`relay.rs`, over `wasi:http`) and the CLI's `serve`
//! (over hyper) both answer through it, so a caller sees one contract from either.
//!
//! Checks run cheapest first and nothing is pushed unless every one passes: path (404),
//! method (405), content type (415), configuration (500), host load (503), body size
//! (413) and arrival (408, 400), caller (401), documents (400).

use serde_json::Value;

use crate::config::Settings;
use crate::documents;
use crate::{BuildEvent, EventKind, InputError, Outcome, PushError, PushFailure, SkipReason};

/// The environment variable the relay reads its configuration from.
pub const CONFIG_VARIABLE: &str = "STATUS_PUSH_CONFIG";

/// The relay's settings from the value of [`CONFIG_VARIABLE`] (JSON with the seed's
/// keys); `None` when it is not set. An error names the variable or the key at fault.
pub fn settings(config: Option<String>) -> Result<Settings, InputError> {
    let text = config.ok_or_else(|| InputError {
        key: CONFIG_VARIABLE.into(),
        message: "is not set; it holds the JSON configuration (seed option names)".into(),
    })?;
    let doc = documents::parse_json(&text).map_err(|e| InputError {
        key: CONFIG_VARIABLE.into(),
        message: e.message,
    })?;
    Settings::from_config(documents::config_from_json(&doc)?)
}

/// The event a path reports, or `None` for any other path (answered with
/// [`Refusal::NotFound`]). A query string is ignored.
pub fn route(path_with_query: &str) -> Option<EventKind> {
    match path_with_query.split('?').next() {
        Some("/started") => Some(EventKind::Started),
        Some("/finished") => Some(EventKind::Finished),
        _ => None,
    }
}

/// An HTTP answer: status, headers beyond `content-type: application/json`, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Extra headers (`allow`, `retry-after`, …).
    pub headers: Vec<(&'static str, &'static str)>,
    /// The body.
    pub body: Value,
}

impl Answer {
    fn new(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: vec![],
            body,
        }
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Answer {
        self.headers.push((name, value));
        self
    }
}

/// Why a request was not pushed.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Not `/started` or `/finished`.
    NotFound,
    /// Not a POST.
    MethodNotAllowed,
    /// A `Content-Type` other than `application/json`.
    UnsupportedMediaType,
    /// The relay's own configuration is unusable (the caller cannot fix this).
    InvalidConfiguration(InputError),
    /// The host is at its limit of requests in progress.
    Busy {
        /// That limit.
        in_progress: usize,
    },
    /// The outbox holds its `maxPendingEvents`: retry once it drains.
    OutboxFull {
        /// Events pending.
        pending: u64,
    },
    /// The body is over `maxBodyBytes`.
    TooLarge {
        /// The limit.
        max_body_bytes: u64,
    },
    /// The body did not arrive within the host's time.
    TooSlow {
        /// That time, in whole seconds.
        seconds: u64,
    },
    /// The body broke off.
    Unreadable(String),
    /// The caller is not authenticated, or replays a signed request.
    Unauthorized(String),
    /// The documents do not parse; the error names the JSON path.
    InvalidDocuments(InputError),
}

impl Refusal {
    /// The answer a caller gets.
    pub fn answer(&self) -> Answer {
        // Plain `Value`s rather than `json!`: this runs inside a component that must stay
        // under 1 MiB, and the macro's per-field serialisation costs kilobytes.
        let error = |status: u16, message: String| {
            Answer::new(status, object([("error", Value::String(message))]))
        };
        let input = |status: u16, what: &str, e: &InputError| {
            Answer::new(
                status,
                object([
                    ("error", Value::String(what.into())),
                    ("key", Value::String(e.key.clone())),
                    ("message", Value::String(e.message.clone())),
                ]),
            )
        };
        match self {
            Refusal::NotFound => error(
                404,
                "not found: POST build documents to /started or /finished".into(),
            ),
            Refusal::MethodNotAllowed => {
                error(405, "method not allowed: use POST".into()).with_header("allow", "POST")
            }
            Refusal::UnsupportedMediaType => error(
                415,
                "unsupported media type: send Content-Type: application/json".into(),
            ),
            Refusal::InvalidConfiguration(e) => input(500, "invalid relay configuration", e),
            Refusal::Busy { in_progress } => error(
                503,
                format!("busy: {in_progress} requests in progress; retry shortly"),
            )
            .with_header("retry-after", "1"),
            Refusal::OutboxFull { pending } => error(
                503,
                format!(
                    "the outbox holds {pending} pending events, its maxPendingEvents; retry later"
                ),
            )
            .with_header("retry-after", "30"),
            Refusal::TooLarge { max_body_bytes } => error(
                413,
                format!("the body is over maxBodyBytes ({max_body_bytes} bytes)"),
            )
            .with_header("connection", "close"),
            Refusal::TooSlow { seconds } => {
                error(408, format!("the body did not arrive within {seconds} s"))
                    .with_header("connection", "close")
            }
            Refusal::Unreadable(why) => {
                error(400, format!("the request body could not be read: {why}"))
            }
            Refusal::Unauthorized(reason) => Answer::new(
                401,
                object([
                    ("error", Value::String("unauthorized".into())),
                    ("reason", Value::String(reason.clone())),
                ]),
            )
            .with_header("www-authenticate", "Bearer"),
            Refusal::InvalidDocuments(e) => input(400, "invalid build documents", e),
        }
    }
}

/// A JSON object of `fields`, in order.
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// Refuses any method but POST.
pub fn check_method(method: &str) -> Result<(), Refusal> {
    if method.eq_ignore_ascii_case("POST") {
        Ok(())
    } else {
        Err(Refusal::MethodNotAllowed)
    }
}

/// Refuses a `Content-Type` other than `application/json` (parameters such as
/// `charset` are fine); a request without one is taken as JSON.
pub fn check_content_type(content_type: Option<&[u8]>) -> Result<(), Refusal> {
    let Some(value) = content_type else {
        return Ok(());
    };
    let essence = std::str::from_utf8(value)
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Refusal::UnsupportedMediaType)
    }
}

/// The build documents a request body carries, and the formatted body they may carry
/// (`documents::take_formatted_body`). A log may not name a `content_file`: that is a
/// path on the relay's machine, not the caller's.
pub fn event_documents(body: &[u8]) -> Result<(BuildEvent, Option<Value>), Refusal> {
    let invalid =
        |key: String, message: String| Refusal::InvalidDocuments(InputError { key, message });
    let text = std::str::from_utf8(body)
        .map_err(|e| invalid(String::new(), format!("the body is not UTF-8: {e}")))?;
    let mut doc = documents::parse_json(text).map_err(Refusal::InvalidDocuments)?;
    let formatted = documents::take_formatted_body(&mut doc).map_err(Refusal::InvalidDocuments)?;
    let event = documents::event_from_json(&doc).map_err(Refusal::InvalidDocuments)?;
    if let Some(file) = documents::content_files(&doc).first() {
        return Err(invalid(
            file.key(),
            "is not accepted over HTTP: send the text as content".into(),
        ));
    }
    Ok((event, formatted))
}

/// The answer to a push: 200 delivered or skipped; 503 failed, retry later; 502 failed,
/// retrying will not help.
pub fn pushed(result: &Result<Outcome, PushFailure>) -> Answer {
    let text = |s: &str| Value::String(s.to_string());
    match result {
        Ok(Outcome::Delivered(d)) => Answer::new(
            200,
            object([
                ("outcome", text("delivered")),
                ("status", d.status.into()),
                ("attempts", d.attempts.into()),
                ("delivery_id", text(&d.delivery_id)),
            ]),
        ),
        Ok(Outcome::Skipped(reason)) => Answer::new(
            200,
            object([
                ("outcome", text("skipped")),
                ("reason", text(skip_reason_name(*reason))),
            ]),
        ),
        Err(failure) => {
            let upstream = match &failure.error {
                PushError::HttpStatus(h) => h.status.into(),
                _ => Value::Null,
            };
            Answer::new(
                if failure.retryable { 503 } else { 502 },
                object([
                    ("outcome", text("failed")),
                    ("retryable", failure.retryable.into()),
                    ("attempts", failure.attempts.into()),
                    ("delivery_id", text(&failure.delivery_id)),
                    ("error", push_error_json(&failure.error)),
                    ("upstream_status", upstream),
                ]),
            )
        }
    }
}

/// The answer of a relay with an outbox: the event is kept and will be delivered.
pub fn accepted(delivery_id: &str, seq: i64) -> Answer {
    Answer::new(
        202,
        object([
            ("outcome", Value::String("accepted".into())),
            ("delivery_id", Value::String(delivery_id.into())),
            ("seq", seq.into()),
        ]),
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
    let kind = |name: &str| ("kind", Value::String(name.into()));
    let message = |why: &str| ("message", Value::String(why.into()));
    match error {
        PushError::NotConfigured => object([kind("not-configured")]),
        PushError::InvalidInput(e) => object([
            kind("invalid-input"),
            ("key", Value::String(e.key.clone())),
            message(&e.message),
        ]),
        PushError::Unreachable(why) => object([kind("unreachable"), message(why)]),
        PushError::ConnectionLost(why) => object([kind("connection-lost"), message(why)]),
        PushError::Timeout => object([kind("timeout")]),
        PushError::HttpStatus(h) => object([
            kind("http-status"),
            ("status", h.status.into()),
            ("retry_after", h.retry_after.clone().into()),
        ]),
        PushError::Tls(why) => object([kind("tls"), message(why)]),
        PushError::Denied(why) => object([kind("denied"), message(why)]),
        PushError::Protocol(why) => object([kind("protocol"), message(why)]),
        PushError::Format(f) => object([
            kind("format"),
            message(&f.message),
            ("line", f.line.into()),
            ("column", f.column.into()),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_two_event_paths_are_routes() {
        assert!(matches!(route("/started"), Some(EventKind::Started)));
        assert!(matches!(route("/finished?x=1"), Some(EventKind::Finished)));
        for path in ["/", "/start", "/started/", "/healthz"] {
            assert!(route(path).is_none(), "{path}");
        }
    }

    #[test]
    fn content_types_other_than_json_are_refused() {
        assert!(check_content_type(None).is_ok());
        assert!(check_content_type(Some(b"Application/JSON; charset=utf-8")).is_ok());
        assert!(matches!(
            check_content_type(Some(b"text/plain")),
            Err(Refusal::UnsupportedMediaType)
        ));
        assert!(check_method("post").is_ok());
        assert!(matches!(
            check_method("GET"),
            Err(Refusal::MethodNotAllowed)
        ));
    }

    #[test]
    fn documents_with_a_content_file_are_refused_naming_it() {
        let mut doc: Value = serde_json::from_str(include_str!(
            "../tests/fixtures/buildbot/want_steps_logs_content/finished.json"
        ))
        .unwrap();
        assert!(event_documents(doc.to_string().as_bytes()).is_ok());
        let log = &mut doc["steps"][0]["logs"][0];
        log.as_object_mut().unwrap().remove("content");
        log["content_file"] = json!("/etc/passwd");
        match event_documents(doc.to_string().as_bytes()) {
            Err(Refusal::InvalidDocuments(e)) => {
                assert_eq!(e.key, "steps[0].logs[0].content_file")
            }
            other => panic!("{other:?}"),
        }
        let answer = event_documents(b"\xff").unwrap_err().answer();
        assert_eq!(answer.status, 400);
        assert_eq!(answer.body["error"], "invalid build documents");
    }

    #[test]
    fn refusals_carry_their_status_and_headers() {
        let answer = Refusal::MethodNotAllowed.answer();
        assert_eq!(
            (answer.status, answer.headers),
            (405, vec![("allow", "POST")])
        );
        let answer = Refusal::TooLarge { max_body_bytes: 10 }.answer();
        assert_eq!(answer.status, 413);
        assert_eq!(
            answer.body["error"],
            "the body is over maxBodyBytes (10 bytes)"
        );
        assert_eq!(Refusal::Unauthorized("no".into()).answer().status, 401);
    }
}
