//! status-push: Buildbot's `HttpStatusPush` as a WASI 0.2 component.
//!
//! This file only binds the WIT contract (`wit/world.wit`) to plain modules. Two kinds:
//!
//! - **pure** ([`payload`], [`encoder`], [`config`], [`documents`], [`filter`],
//!   [`template`], [`retry`], [`signature`], [`body`], [`secret`], [`inbound`],
//!   [`relay_api`]): data in, data out; they
//!   may use the WIT record types re-exported here, never a `wasi:*` import, and are
//!   unit-tested natively (`tests/layout.rs` holds them to it);
//! - **edge** (`transport`: `wasi:http`; `log_stream`: `wasi:io` log streams; `clock`;
//!   `random`; `relay`: the incoming handler), and `delivery`, which runs one event's
//!   attempts through the edges without naming a `wasi:*` item itself.

mod arena;
pub mod body;
pub mod config;
mod delivery;
pub mod documents;
pub mod encoder;
pub mod filter;
pub mod inbound;
mod log_stream;
pub mod payload;
pub mod relay_api;
pub mod retry;
pub mod secret;
pub mod signature;
pub mod template;
mod wire;

// The edges that differ by WASI version: `wasi:http`, the clocks, randomness and the
// relay's handler. The WASI 0.3 ones live in `src/p3/`, under the same module names, so
// everything else (the pure modules, `delivery`, `log_stream`) is one source for both.
#[cfg(not(feature = "p3"))]
mod clock;
#[cfg(feature = "p3")]
#[path = "p3/clock.rs"]
mod clock;
#[cfg(not(feature = "p3"))]
mod random;
#[cfg(feature = "p3")]
#[path = "p3/random.rs"]
mod random;
#[cfg(all(feature = "relay", not(feature = "p3")))]
mod relay;
#[cfg(all(feature = "relay", feature = "p3"))]
#[path = "p3/relay.rs"]
mod relay;
#[cfg(not(feature = "p3"))]
mod transport;
#[cfg(feature = "p3")]
#[path = "p3/transport.rs"]
mod transport;

/// The `status-push` world, or with the `relay` feature the `relay` world (the same
/// exports plus `wasi:http/incoming-handler`). Our own interfaces are generated here; every
/// WASI interface comes from the `wasi` crate, pinned to its last WASI 0.2.0 release so
/// the component imports exactly the `@0.2.0` interfaces `wit/world.wit` names (docs/contract.md:
/// "Why WASI 0.2.0").
mod bindings {
    #[cfg(not(feature = "p3"))]
    pub use ::wasi;
    #[cfg(not(any(feature = "relay", feature = "p3")))]
    wit_bindgen::generate!({
        path: "wit",
        world: "status-push",
        with: {
            "wasi:io/error@0.2.0": wasi::io::error,
            "wasi:io/poll@0.2.0": wasi::io::poll,
            "wasi:io/streams@0.2.0": wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.0": wasi::clocks::monotonic_clock,
            "wasi:clocks/wall-clock@0.2.0": wasi::clocks::wall_clock,
            "wasi:random/random@0.2.0": wasi::random::random,
            "wasi:cli/stderr@0.2.0": wasi::cli::stderr,
            "wasi:http/types@0.2.0": wasi::http::types,
            "wasi:http/outgoing-handler@0.2.0": wasi::http::outgoing_handler,
        },
    });
    #[cfg(all(feature = "relay", not(feature = "p3")))]
    wit_bindgen::generate!({
        path: "wit",
        world: "relay",
        with: {
            "wasi:io/error@0.2.0": wasi::io::error,
            "wasi:io/poll@0.2.0": wasi::io::poll,
            "wasi:io/streams@0.2.0": wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.0": wasi::clocks::monotonic_clock,
            "wasi:clocks/wall-clock@0.2.0": wasi::clocks::wall_clock,
            "wasi:random/random@0.2.0": wasi::random::random,
            "wasi:cli/stderr@0.2.0": wasi::cli::stderr,
            "wasi:cli/environment@0.2.0": wasi::cli::environment,
            "wasi:http/types@0.2.0": wasi::http::types,
            "wasi:http/outgoing-handler@0.2.0": wasi::http::outgoing_handler,
        },
    });
    // WASI 0.3 (`wit/p3/`): the 0.3 interfaces are generated from the WIT committed there,
    // the one wasmtime 48 implements, so the component imports exactly `@0.3.0`. The log
    // streams stay `wasi:io@0.2.0` (`wit/p3/world.wit` says why), from the `wasi` crate.
    #[cfg(all(feature = "p3", not(feature = "relay")))]
    wit_bindgen::generate!({
        path: "wit/p3",
        world: "status-push",
        with: {
            "wasi:io/error@0.2.0": ::wasi::io::error,
            "wasi:io/poll@0.2.0": ::wasi::io::poll,
            "wasi:io/streams@0.2.0": ::wasi::io::streams,
        },
        generate_all,
    });
    #[cfg(all(feature = "p3", feature = "relay"))]
    wit_bindgen::generate!({
        path: "wit/p3",
        world: "relay",
        with: {
            "wasi:io/error@0.2.0": ::wasi::io::error,
            "wasi:io/poll@0.2.0": ::wasi::io::poll,
            "wasi:io/streams@0.2.0": ::wasi::io::streams,
        },
        generate_all,
    });
}

pub use bindings::exports::status_push::reporter::reporter::{
    Auth, Config, Credentials, Delivery, EventKind, FormatFailure, HttpFailure, InputError,
    Outcome, PushError, PushFailure, ResultMode, Signing, SigningScheme, SkipReason,
};
pub use bindings::exports::status_push::reporter::types::{
    Build, BuildEvent, Builder, Buildrequest, Buildset, Log, LogContent, Patch, Property,
    Sourcestamp, Step, StepUrl,
};

use std::cell::RefCell;
use std::rc::Rc;

use bindings::exports::status_push::reporter::reporter::Guest;
use config::Settings;

thread_local! {
    /// The configuration of this instance; components are single-threaded.
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}

/// The component's exports. Only a wasm build exports them: their symbol names (which
/// contain `:` and `/`) are not valid in a native shared library's symbol table.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Component;

impl Guest for Component {
    fn configure(config: Config) -> Result<(), InputError> {
        // The settings keep the configuration's strings.
        arena::keep_arguments();
        let settings = Settings::from_config(config)?;
        SETTINGS.with(|cell| *cell.borrow_mut() = Some(Rc::new(settings)));
        Ok(())
    }

    #[cfg(not(feature = "p3"))]
    fn on_build_started(event: BuildEvent) -> Result<Outcome, PushFailure> {
        dropping_arguments(|| report_configured(EventKind::Started, &event))
    }

    #[cfg(not(feature = "p3"))]
    fn on_build_finished(event: BuildEvent) -> Result<Outcome, PushFailure> {
        dropping_arguments(|| report_configured(EventKind::Finished, &event))
    }

    #[cfg(not(feature = "p3"))]
    fn report_json(kind: EventKind, json: String) -> Result<Outcome, PushFailure> {
        dropping_arguments(|| report_json(kind, json))
    }

    // WASI 0.3: the same calls as `async func`s, since only an async export may wait on
    // the network. The work itself is the same synchronous code: each edge waits for its
    // own 0.3 call (`wit_bindgen::block_on`), which an async task is allowed to do.
    #[cfg(feature = "p3")]
    async fn on_build_started(event: BuildEvent) -> Result<Outcome, PushFailure> {
        dropping_arguments(|| report_configured(EventKind::Started, &event))
    }

    #[cfg(feature = "p3")]
    async fn on_build_finished(event: BuildEvent) -> Result<Outcome, PushFailure> {
        dropping_arguments(|| report_configured(EventKind::Finished, &event))
    }

    #[cfg(feature = "p3")]
    async fn report_json(kind: EventKind, json: String) -> Result<Outcome, PushFailure> {
        dropping_arguments(|| report_json(kind, json))
    }
}

/// Runs the body of an export whose arguments are dead when it returns: the arena that
/// received them takes the next call's ([`arena`]).
fn dropping_arguments<T>(body: impl FnOnce() -> T) -> T {
    arena::call_began();
    let result = body();
    arena::call_ended();
    result
}

/// `report-json`: the documents parsed in the guest, then reported.
fn report_json(kind: EventKind, json: String) -> Result<Outcome, PushFailure> {
    let settings = configured()?;
    let (event, body) = documents::parse_json(&json)
        .and_then(|mut doc| {
            let body = documents::take_formatted_body(&mut doc)?;
            Ok((documents::event_from_json(&doc)?, body))
        })
        .map_err(|e| PushFailure {
            error: PushError::InvalidInput(e),
            retryable: false,
            attempts: 0,
            delivery_id: String::new(),
        })?;
    // The text is not needed past this point; a large event should not be held twice.
    drop(json);
    report(&settings, kind, &event, body.as_ref())
}

fn configured() -> Result<Rc<Settings>, PushFailure> {
    SETTINGS
        .with(|cell| cell.borrow().clone())
        .ok_or(PushFailure {
            error: PushError::NotConfigured,
            retryable: false,
            attempts: 0,
            delivery_id: String::new(),
        })
}

fn report_configured(kind: EventKind, event: &BuildEvent) -> Result<Outcome, PushFailure> {
    report(&*configured()?, kind, event, None)
}

/// Filters, then delivers, one event: its payload, or `formatted`, a body the host
/// formatted itself (the documents' `body`).
fn report(
    settings: &Settings,
    kind: EventKind,
    event: &BuildEvent,
    formatted: Option<&serde_json::Value>,
) -> Result<Outcome, PushFailure> {
    if let Some(reason) = filter::skip_reason(&settings.selection, kind, event) {
        return Ok(Outcome::Skipped(reason));
    }
    delivery::deliver(settings, kind, event, formatted).map(Outcome::Delivered)
}

impl bindings::exports::status_push::reporter::documents::Guest for Component {
    fn parse_config(json: String) -> Result<Config, InputError> {
        dropping_arguments(|| documents::config_from_json(&documents::parse_json(&json)?))
    }

    fn parse_event(json: String) -> Result<BuildEvent, InputError> {
        dropping_arguments(|| documents::event_from_json(&documents::parse_json(&json)?))
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);
