//! The relay world's `wasi:http/incoming-handler`: a build event arrives as a POST to
//! `/started` or `/finished` whose body is the data-API documents (as for the CLI); it is
//! pushed with the configuration from the `STATUS_PUSH_CONFIG` environment variable (JSON
//! with the seed's keys), and the caller learns from the status whether it was delivered
//! (and so whether to retry).

use std::cell::RefCell;
use std::rc::Rc;

use crate::bindings::exports::wasi::http::incoming_handler::Guest;
use crate::bindings::wasi::cli::environment;
use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::config::Settings;
use crate::relay_api::{self, Answer, Refusal};
use crate::{clock, report, Component, InputError};

thread_local! {
    /// Parsed once per instance; proxy runtimes may reuse an instance for many requests.
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        // The settings parsed from the environment stay for later requests.
        crate::arena::keep_arguments();
        let answer = respond(&request).unwrap_or_else(|refusal| refusal.answer());
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

/// The answer to one request, checked in the order `relay_api` documents.
fn respond(request: &IncomingRequest) -> Result<Answer, Refusal> {
    let kind = relay_api::route(&request.path_with_query().unwrap_or_default())
        .ok_or(Refusal::NotFound)?;
    let method = match request.method() {
        Method::Post => "POST",
        _ => "other",
    };
    relay_api::check_method(method)?;
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(&name.to_string())
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    relay_api::check_content_type(header("content-type").as_deref().map(str::as_bytes))?;
    let settings = settings().map_err(Refusal::InvalidConfiguration)?;
    let body = read_body(request, settings.max_body_bytes)?;
    settings
        .inbound
        .check(&header, &body, clock::unix_s())
        .map_err(|refusal| Refusal::Unauthorized(refusal.to_string()))?;
    let (event, formatted) = relay_api::event_documents(&body)?;
    drop(body);
    Ok(relay_api::pushed(&report(
        &settings,
        kind,
        &event,
        formatted.as_ref(),
    )))
}

fn settings() -> Result<Rc<Settings>, InputError> {
    if let Some(settings) = SETTINGS.with(|s| s.borrow().clone()) {
        return Ok(settings);
    }
    let config = environment::get_environment()
        .into_iter()
        .find(|(name, _)| name == relay_api::CONFIG_VARIABLE)
        .map(|(_, value)| value);
    let settings = Rc::new(relay_api::settings(config)?);
    SETTINGS.with(|s| *s.borrow_mut() = Some(settings.clone()));
    Ok(settings)
}

fn read_body(request: &IncomingRequest, max_bytes: u64) -> Result<Vec<u8>, Refusal> {
    let unreadable = || Refusal::Unreadable("the stream broke off".into());
    let body = request.consume().map_err(|()| unreadable())?;
    let stream = body.stream().map_err(|()| unreadable())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
        }
        if bytes.len() as u64 > max_bytes {
            return Err(Refusal::TooLarge {
                max_body_bytes: max_bytes,
            });
        }
    }
    Ok(bytes)
}
