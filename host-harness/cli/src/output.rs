//! Everything the CLI prints, written so that a closed or broken stdout or stderr never
//! changes the outcome: a line nobody can read is dropped, and the exit code stays the
//! event's.

use std::io::Write;

/// Prints one line to stdout; a closed pipe (`status-push push … | true`) is ignored.
pub fn say(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints one line to stderr; a closed stderr is ignored.
pub fn complain(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Sends the log (`tracing`) to stderr through [`QuietStderr`], filtered by `RUST_LOG`
/// or else `default_filter`; standard descriptors that were closed point at /dev/null
/// first.
pub fn init(default_filter: &str) {
    reopen_closed_standard_fds();
    tracing_subscriber::fmt()
        .with_writer(|| QuietStderr)
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
}

/// The log's writer: stderr, with every write error swallowed. tracing-subscriber
/// reports a failed write with `eprintln!`, which panics when stderr is a closed pipe;
/// that panic, inside a host call of the component, used to leave the call pending for
/// ever (and the deadline cannot fire while the component is not running).
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Points any of fds 0, 1 and 2 that was closed (`2>&-`) at /dev/null, so a file or
/// socket the process opens later cannot land on them and receive log lines.
#[cfg(unix)]
pub fn reopen_closed_standard_fds() {
    use std::os::fd::AsRawFd;
    // Opening returns the lowest free descriptor: while it is 0, 1 or 2, that one was
    // closed, and now holds /dev/null for good.
    for _ in 0..3 {
        let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        else {
            return;
        };
        if null.as_raw_fd() > 2 {
            // Not a standard descriptor: dropping closes it again.
            break;
        }
        std::mem::forget(null);
    }
}

#[cfg(not(unix))]
pub fn reopen_closed_standard_fds() {}
