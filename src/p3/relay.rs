//! The relay world's `wasi:http/handler@0.3.0`: the same routes, checks and answers as
//! the 0.2 relay (`src/relay.rs`), all from `relay_api`; only the HTTP types differ.
//! A 0.3 handler returns its response before the body is written (the host reads the
//! body stream only then), so the answer's body is written by a task spawned for it.

use std::cell::RefCell;
use std::rc::Rc;

use crate::bindings::exports::wasi::http::handler::Guest;
use crate::bindings::wasi::cli::environment;
use crate::bindings::wasi::http::types::{ErrorCode, Fields, Method, Request, Response};
use crate::bindings::{wit_future, wit_stream};
use crate::config::Settings;
use crate::relay_api::{self, Answer, Refusal};
use crate::{clock, report, Component, InputError};
use wit_bindgen::StreamResult;

/// The most a request body read asks for at once.
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Parsed once per instance; proxy runtimes may reuse an instance for many requests.
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}

impl Guest for Component {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        // The settings parsed from the environment stay for later requests.
        crate::arena::keep_arguments();
        let answer = match respond(request).await {
            Ok(answer) => answer,
            Err(refusal) => refusal.answer(),
        };
        let mut headers = vec![("content-type".to_string(), b"application/json".to_vec())];
        headers.extend(
            answer
                .headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec())),
        );
        let headers = Fields::from_list(&headers).map_err(|e| {
            ErrorCode::InternalError(Some(format!("the host refused a header: {e:?}")))
        })?;
        let (mut body, body_reader) = wit_stream::new::<u8>();
        let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
        let (response, _transmitted) = Response::new(headers, Some(body_reader), trailers_reader);
        let _ = response.set_status_code(answer.status);
        let bytes = answer.body.to_string().into_bytes();
        wit_bindgen::spawn_local(async move {
            body.write_all(bytes).await;
            drop(body);
            drop(trailers);
        });
        Ok(response)
    }
}

/// The answer to one request, checked in the order `relay_api` documents.
async fn respond(request: Request) -> Result<Answer, Refusal> {
    let kind = relay_api::route(&request.get_path_with_query().unwrap_or_default())
        .ok_or(Refusal::NotFound)?;
    let method = match request.get_method() {
        Method::Post => "POST",
        _ => "other",
    };
    relay_api::check_method(method)?;
    let headers = request.get_headers();
    let header = |name: &str| {
        headers
            .get(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    relay_api::check_content_type(header("content-type").as_deref().map(str::as_bytes))?;
    let settings = settings().map_err(Refusal::InvalidConfiguration)?;
    let body = read_body(request, settings.max_body_bytes).await?;
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

/// The request body, refused past `max_bytes` or when its transmission failed.
async fn read_body(request: Request, max_bytes: u64) -> Result<Vec<u8>, Refusal> {
    let unreadable = || Refusal::Unreadable("the stream broke off".into());
    let (done, done_reader) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
    let (mut stream, trailers) = Request::consume_body(request, done_reader);
    let mut bytes = Vec::new();
    loop {
        let (result, chunk) = stream.read(Vec::with_capacity(READ_CHUNK)).await;
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > max_bytes {
            return Err(Refusal::TooLarge {
                max_body_bytes: max_bytes,
            });
        }
        match result {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped => break,
            StreamResult::Cancelled => return Err(unreadable()),
        }
    }
    drop(stream);
    drop(done);
    // The body is whole only if its transmission ended without an error.
    match trailers.await {
        Ok(_) => Ok(bytes),
        Err(_) => Err(unreadable()),
    }
}
