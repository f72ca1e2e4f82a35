//! The host's `tracing` events, forwarded to Python's `logging`: the component's stderr
//! (its `debug` trace, target `status_push::guest`) to the logger
//! `buildbot_status_push.component`, everything else (host warnings) to
//! `buildbot_status_push.host`. The plugin routes `buildbot_status_push` to Twisted's log,
//! so both land in `twistd.log`.
//!
//! Installed once per process as the global `tracing` subscriber, unless the process
//! already has one. Which events pass: `$RUST_LOG` when set (an `EnvFilter`), else
//! warnings and errors, and the component's lines at `info`.

use std::fmt::Write as _;
use std::sync::Once;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::EnvFilter;

const GUEST_TARGET: &str = "status_push::guest";
const DEFAULT_FILTER: &str = "warn,status_push::guest=info";

/// Sets the global subscriber, the first time only.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(PythonLogging);
        // Another library may have set one first; then it keeps the events.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// A `Layer` that hands each event to `logging.getLogger(name).log(level, text)`.
struct PythonLogging;

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut text = Text::default();
        event.record(&mut text);
        let (logger, line) = if meta.target() == GUEST_TARGET {
            ("buildbot_status_push.component", text.message)
        } else {
            let line = format!("{}: {}{}", meta.target(), text.message, text.fields);
            ("buildbot_status_push.host", line)
        };
        let level = match *meta.level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            Level::DEBUG => 10,
            Level::TRACE => 5,
        };
        // Not while the interpreter is shutting down; a failing handler is Python's
        // business (logging reports it itself), never a reason to disturb the host.
        let _ = Python::try_attach(|py| {
            let logged = py
                .import("logging")
                .and_then(|logging| logging.call_method1("getLogger", (logger,)))
                .and_then(|logger| logger.call_method1("log", (level, line)));
            if let Err(e) = logged {
                e.write_unraisable(py, None);
            }
        });
    }
}

/// An event's `message` and its other fields as ` key=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
