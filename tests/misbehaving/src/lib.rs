//! A status-push component that misbehaves on purpose, so the host's sandbox can be
//! shown to hold. `configure` remembers the `X-Misbehave` header; `on-build-started`
//! then does what it says:
//!
//! - `loop`: spins forever (the host's epoch deadline must stop it);
//! - `balloon`: allocates without end (the host's memory limit must stop it);
//! - `elsewhere`: POSTs to the URL in `X-Target` instead of `server-url` (the host must
//!   refuse it with `HttpRequestDenied`, which is returned as `denied`).

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "status-push",
        generate_all,
    });
}

use std::cell::RefCell;

use bindings::exports::status_push::reporter::documents;
use bindings::exports::status_push::reporter::reporter::{
    Config, EventKind, Guest, InputError, Outcome, PushError, PushFailure,
};
use bindings::exports::status_push::reporter::types::BuildEvent;
use bindings::wasi::http::outgoing_handler;
use bindings::wasi::http::types::{ErrorCode, Fields, Method, OutgoingRequest, Scheme};

thread_local! {
    static BEHAVIOUR: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Component;

fn header(config: &Config, name: &str) -> String {
    config
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn failure(error: PushError) -> PushFailure {
    PushFailure {
        error,
        retryable: false,
        attempts: 1,
        delivery_id: String::new(),
    }
}

impl Guest for Component {
    fn configure(config: Config) -> Result<(), InputError> {
        let behaviour = (header(&config, "X-Misbehave"), header(&config, "X-Target"));
        BEHAVIOUR.with(|b| *b.borrow_mut() = behaviour);
        Ok(())
    }

    fn on_build_started(_event: BuildEvent) -> Result<Outcome, PushFailure> {
        misbehave()
    }

    fn on_build_finished(_event: BuildEvent) -> Result<Outcome, PushFailure> {
        misbehave()
    }

    fn report_json(_kind: EventKind, _json: String) -> Result<Outcome, PushFailure> {
        misbehave()
    }
}

/// Whatever the configuration's `X-Misbehave` header asks for, on every report.
fn misbehave() -> Result<Outcome, PushFailure> {
    let (behaviour, target) = BEHAVIOUR.with(|b| b.borrow().clone());
    match behaviour.as_str() {
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "balloon" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "elsewhere" => post_elsewhere(&target),
        _ => Err(failure(PushError::Protocol(format!(
            "unknown behaviour {behaviour:?}"
        )))),
    }
}

/// POSTs to `target` (`host:port`), whatever the configuration allowed.
fn post_elsewhere(target: &str) -> Result<Outcome, PushFailure> {
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Post);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(target));
    let _ = request.set_path_with_query(Some("/stolen"));
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return Err(failure(to_error(code))),
    };
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    match response {
        Ok(Ok(response)) => Err(failure(PushError::Protocol(format!(
            "the host let a request out to {target}: HTTP {}",
            response.status()
        )))),
        Ok(Err(code)) => Err(failure(to_error(code))),
        Err(()) => Err(failure(PushError::Protocol("no response".into()))),
    }
}

fn to_error(code: ErrorCode) -> PushError {
    match code {
        ErrorCode::HttpRequestDenied => PushError::Denied("HttpRequestDenied".into()),
        other => PushError::Protocol(format!("{other:?}")),
    }
}

impl documents::Guest for Component {
    fn parse_config(_json: String) -> Result<Config, InputError> {
        Err(InputError {
            key: String::new(),
            message: "not supported by the misbehaving component".into(),
        })
    }

    fn parse_event(_json: String) -> Result<BuildEvent, InputError> {
        Err(InputError {
            key: String::new(),
            message: "not supported by the misbehaving component".into(),
        })
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);
