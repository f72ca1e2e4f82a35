//! Why a command failed, typed, and the exit code each reason gives: 1 a push failed;
//! 2 invalid configuration, input or arguments; 3 the component could not be loaded or
//! trapped, or the outbox or the machine failed. The codes are a contract scripts rely
//! on (`status-push --help` states them), so they are decided here and only here.

use status_push_host::outbox::{KeyError, OutboxError};
use status_push_host::HostError;

use crate::input::InputFileError;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A file given as a flag could not be read.
    #[error(transparent)]
    Input(#[from] InputFileError),
    /// The component, or the push it made.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The same, with the input files it concerns.
    #[error(transparent)]
    Blamed(#[from] Blamed),
    /// The outbox.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The arguments cannot work together, or a value is unusable as given (an address
    /// to listen on, a signature key); the message says which and what to do.
    #[error("{0}")]
    Usage(String),
    /// The machine refused (a port taken, no async runtime); the message names what.
    #[error("{what}: {source}")]
    System {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A [`HostError`] with the input file it concerns, so the one line names both.
#[derive(Debug)]
pub struct Blamed {
    /// What went wrong (the exit code follows it).
    pub error: HostError,
    /// The flags and files at fault: `--build PATH`, or both files.
    pub input: String,
}

impl std::fmt::Display for Blamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.error.is_trap() {
            // The cause first; the input that provoked it after.
            write!(f, "{} (input: {})", self.error, self.input)
        } else {
            write!(f, "{}: {}", self.input, self.error)
        }
    }
}

impl std::error::Error for Blamed {}

impl CliError {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) | CliError::Usage(_) => 2,
            CliError::Host(e) => host_code(e),
            CliError::Blamed(b) => host_code(&b.error),
            CliError::Outbox(OutboxError::Host(e)) => host_code(e),
            // Not queued, as a failed push is not delivered: try again later.
            CliError::Outbox(OutboxError::Full { .. }) => 1,
            CliError::Outbox(OutboxError::Key(KeyError::Random)) => 3,
            CliError::Outbox(
                OutboxError::NoSuchDeadLetter(_)
                | OutboxError::Superseded(_)
                | OutboxError::Location { .. }
                | OutboxError::Key(_)
                | OutboxError::NoKey { .. }
                | OutboxError::WrongKey { .. },
            ) => 2,
            CliError::Outbox(_) | CliError::System { .. } => 3,
        }
    }

    /// The error and its causes on one line, `: `-separated: the one line a failed
    /// command prints.
    pub fn with_causes(&self) -> String {
        let mut line = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            line.push_str(": ");
            line.push_str(&e.to_string());
            cause = e.source();
        }
        line
    }

    /// A [`CliError::System`] for `what`.
    pub fn system(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::System { what, source }
    }
}

fn host_code(error: &HostError) -> u8 {
    match error {
        HostError::Push(_) => 1,
        HostError::Config(_) | HostError::Event(_) => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use status_push_host::InputError;

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        let config = HostError::Config(InputError {
            key: "serverUrl".into(),
            message: "missing".into(),
        });
        assert_eq!(CliError::from(config).exit_code(), 2);
        assert_eq!(CliError::Usage("--id or --all".into()).exit_code(), 2);
        assert_eq!(
            CliError::from(OutboxError::NoSuchDeadLetter("7".into())).exit_code(),
            2
        );
        assert_eq!(
            CliError::from(OutboxError::Stopped("runtime".into())).exit_code(),
            3
        );
        // The outbox key: a missing, unreadable or wrong key is the caller's to fix.
        let no_key = OutboxError::NoKey {
            location: "postgresql://db/ci".into(),
        };
        assert_eq!(CliError::from(no_key).exit_code(), 2);
        let wrong = OutboxError::WrongKey {
            location: "o.sqlite".into(),
            sealing: "0a0b0c0d".into(),
        };
        assert_eq!(CliError::from(wrong).exit_code(), 2);
        assert_eq!(
            CliError::from(OutboxError::from(KeyError::Empty)).exit_code(),
            2
        );
        assert_eq!(
            CliError::from(OutboxError::from(KeyError::Random)).exit_code(),
            3
        );
        let port_taken = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert_eq!(CliError::system("cannot listen")(port_taken).exit_code(), 3);
    }
}
