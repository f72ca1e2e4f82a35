//! The harness's typed errors, and readable forms of the component's WIT errors.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::bindings::{FormatFailure, InputError, Outcome, PushError, PushFailure, SkipReason};

/// Everything that can go wrong between loading the component and a pushed event.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The component file could not be read or compiled.
    #[error("cannot load component {path}")]
    Load {
        /// The file given.
        path: PathBuf,
        /// Why.
        source: wasmtime::Error,
    },
    /// The component does not fit the `status-push` world, or could not be instantiated.
    #[error("cannot instantiate the component: {0:#}")]
    Instantiate(wasmtime::Error),
    /// The component trapped for another reason than a limit (a bug in the component).
    /// Shown as its cause alone, on one line; the wasm backtrace is logged at `debug`.
    #[error("the component trapped: {}", trap_cause(.0))]
    Trap(wasmtime::Error),
    /// The component's linear memory reached [`crate::Limits::memory_bytes`] and it
    /// stopped: the input is too large for it. The instance is unusable afterwards.
    #[error(
        "the component ran out of memory (limit {} MiB) while {doing}; the input is too large",
        limit_bytes >> 20
    )]
    OutOfMemory {
        /// The limit it hit, in bytes.
        limit_bytes: usize,
        /// What the call was doing: `handling the event`, `parsing the build documents`, …
        doing: &'static str,
    },
    /// The call ran past its wall-time budget and the host stopped it. The instance is
    /// unusable afterwards.
    #[error("the component exceeded its time budget ({}s) while {doing}", budget.as_secs_f64())]
    TimeBudget {
        /// The budget it had.
        budget: Duration,
        /// What the call was doing.
        doing: &'static str,
    },
    /// The configuration was refused (the error names the key); nothing was sent.
    #[error("invalid configuration: {}", describe_input_error(.0))]
    Config(InputError),
    /// The event's documents were refused (the error names the JSON path or key, such as
    /// `steps[0].logs[1].content_file`); nothing was sent.
    #[error("invalid build documents: {}", describe_input_error(.0))]
    Event(InputError),
    /// The event could not be delivered.
    #[error("push failed after {} attempt(s){}: {}", .0.attempts, if .0.retryable { " (retryable)" } else { "" }, describe_push_error(&.0.error))]
    Push(PushFailure),
}

impl HostError {
    /// Whether trying the same event again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HostError::Push(failure) if failure.retryable)
    }

    /// Whether the component stopped mid-call (a trap, or a memory or time limit): that
    /// instance is unusable, so make a new [`crate::Reporter`].
    pub fn is_trap(&self) -> bool {
        matches!(
            self,
            HostError::Trap(_) | HostError::OutOfMemory { .. } | HostError::TimeBudget { .. }
        )
    }
}

/// A trap's cause on one line: the innermost error (wasmtime puts the wasm backtrace in
/// the outer context, and the trap code last).
fn trap_cause(e: &wasmtime::Error) -> String {
    let cause = e.root_cause().to_string();
    cause.lines().next().unwrap_or_default().trim().to_string()
}

/// `key: message`, the form the CLI prints.
fn describe_input_error(e: &InputError) -> String {
    if e.key.is_empty() {
        e.message.clone()
    } else {
        format!("{}: {}", e.key, e.message)
    }
}

impl fmt::Display for FormatFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // No position: the error is about the output as a whole.
            return write!(f, "format_fn: {}", self.message);
        }
        write!(
            f,
            "format_fn line {} column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// One line a person can act on.
fn describe_push_error(e: &PushError) -> String {
    match e {
        PushError::NotConfigured => "the reporter was not configured".into(),
        PushError::InvalidInput(e) => {
            format!(
                "invalid configuration or event: {}",
                describe_input_error(e)
            )
        }
        PushError::Unreachable(why) => format!("receiver unreachable: {why}"),
        PushError::ConnectionLost(why) => format!("connection lost: {why}"),
        PushError::Timeout => "receiver timed out".into(),
        PushError::HttpStatus(h) => match &h.retry_after {
            Some(after) => format!("receiver answered HTTP {} (Retry-After: {after})", h.status),
            None => format!("receiver answered HTTP {}", h.status),
        },
        PushError::Tls(why) => format!("TLS failed: {why}"),
        PushError::Denied(why) => format!("request denied by the host sandbox: {why}"),
        PushError::Protocol(why) => format!("HTTP failure: {why}"),
        PushError::Format(e) => e.to_string(),
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Builder => "builder not in builders",
            SkipReason::Tags => "builder has none of tags",
            SkipReason::Branch => "branch not in branches",
            SkipReason::Scheduler => "scheduler not in schedulers",
            SkipReason::Results => "result not selected by mode",
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Delivered(d) => write!(f, "delivered: HTTP {}", d.status),
            Outcome::Skipped(reason) => write!(f, "skipped: {reason}"),
        }
    }
}
