//! status-push: Buildbot's `HttpStatusPush` as a WASI 0.2 component.
//!
//! This file only binds the WIT contract (`wit/world.wit`) to plain modules: everything
//! but [`transport`] is pure Rust, unit-tested natively.

pub mod body;
mod clock;
pub mod config;
mod delivery;
pub mod documents;
pub mod encoder;
pub mod filter;
pub mod payload;
pub mod retry;
pub mod signature;
pub mod template;
mod transport;

#[cfg(feature = "relay")]
mod relay;

/// The `status-push` world, or with the `relay` feature the `relay` world (the same
/// exports plus `wasi:http/incoming-handler`).
mod bindings {
    #[cfg(not(feature = "relay"))]
    wit_bindgen::generate!({
        path: "wit",
        world: "status-push",
        generate_all,
    });
    #[cfg(feature = "relay")]
    wit_bindgen::generate!({
        path: "wit",
        world: "relay",
        generate_all,
    });
}

pub use bindings::exports::status_push::reporter::reporter::{
    Auth, Config, ConfigError, Credentials, Delivery, FormatFailure, HttpFailure, Outcome,
    PushError, PushFailure, ResultMode, Signing, SigningScheme, SkipReason,
};
pub use bindings::exports::status_push::reporter::types::{
    Build, BuildEvent, Builder, Buildrequest, Buildset, Log, LogContent, Patch, Property,
    Sourcestamp, Step, StepUrl,
};

use std::cell::RefCell;
use std::rc::Rc;

use bindings::exports::status_push::reporter::reporter::Guest;
use config::Settings;
use payload::EventKind;

thread_local! {
    /// The configuration of this instance; components are single-threaded.
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}

/// The component's exports. Only a wasm build exports them: their symbol names (which
/// contain `:` and `/`) are not valid in a native shared library's symbol table.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Component;

impl Guest for Component {
    fn configure(config: Config) -> Result<(), ConfigError> {
        let settings = Settings::from_config(config)?;
        SETTINGS.with(|cell| *cell.borrow_mut() = Some(Rc::new(settings)));
        Ok(())
    }

    fn on_build_started(event: BuildEvent) -> Result<Outcome, PushFailure> {
        report_configured(EventKind::Started, &event)
    }

    fn on_build_finished(event: BuildEvent) -> Result<Outcome, PushFailure> {
        report_configured(EventKind::Finished, &event)
    }
}

fn report_configured(kind: EventKind, event: &BuildEvent) -> Result<Outcome, PushFailure> {
    let settings = SETTINGS
        .with(|cell| cell.borrow().clone())
        .ok_or(PushFailure {
            error: PushError::NotConfigured,
            retryable: false,
            attempts: 0,
            delivery_id: String::new(),
        })?;
    report(&settings, kind, event)
}

/// Filters, then delivers, one event.
fn report(
    settings: &Settings,
    kind: EventKind,
    event: &BuildEvent,
) -> Result<Outcome, PushFailure> {
    if let Some(reason) = filter::skip_reason(&settings.selection, kind, event) {
        return Ok(Outcome::Skipped(reason));
    }
    delivery::deliver(settings, kind, event).map(Outcome::Delivered)
}

impl bindings::exports::status_push::reporter::documents::Guest for Component {
    fn parse_config(json: String) -> Result<Config, ConfigError> {
        documents::config_from_json(&parse_json(&json)?)
    }

    fn parse_event(json: String) -> Result<BuildEvent, ConfigError> {
        documents::event_from_json(&parse_json(&json)?)
    }
}

fn parse_json(text: &str) -> Result<serde_json::Value, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError {
        key: String::new(),
        message: format!("not JSON: {e}"),
    })
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);
