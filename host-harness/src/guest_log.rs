//! The component's stderr, forwarded line by line to the host's `tracing` log under the
//! target `status_push::guest`: that is where its `debug` output lands.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept whole; a longer one is logged in pieces.
const MAX_LINE: usize = 16 * 1024;

/// A `StdoutStream` whose bytes become `tracing` events, one per line.
pub(crate) struct GuestLog;

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter::default())
    }
}

#[derive(Default)]
struct LineWriter {
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(line: &[u8]) {
        tracing::info!(target: "status_push::guest", "{}", String::from_utf8_lossy(line));
    }

    fn drain_lines(&mut self) {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            Self::emit(&self.pending[..end]);
            self.pending.drain(..=end);
        }
        if self.pending.len() >= MAX_LINE {
            Self::emit(&self.pending);
            self.pending.clear();
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        self.drain_lines();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            Self::emit(&self.pending);
            self.pending.clear();
        }
        Poll::Ready(Ok(()))
    }
}
