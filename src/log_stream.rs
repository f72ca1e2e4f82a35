//! Streamed log texts: the `wasi:io` input streams an event's logs may carry
//! (`log-content.stream`), read piece by piece while the request body is written.

use serde_json::Value;

// The `wasi` crate's 0.2.0 streams in both builds: a log stays a `wasi:io` 0.2 stream
// in the WASI 0.3 world too (`wit/p3/world.wit`).
use crate::body::{write_streamed, BodyError, TextSource};
use crate::{BuildEvent, LogContent};
use wasi::io::streams::{InputStream, StreamError};

/// The streamed logs of one event, by logid, in event order.
pub struct LogStreams<'a>(Vec<(i64, &'a InputStream)>);

impl<'a> LogStreams<'a> {
    /// The logs of `event` whose text is a stream.
    pub fn of(event: &'a BuildEvent) -> LogStreams<'a> {
        let streams = event
            .steps
            .iter()
            .flat_map(|s| &s.logs)
            .filter_map(|l| match &l.content {
                Some(LogContent::Stream(stream)) => Some((l.logid, stream)),
                _ => None,
            })
            .collect();
        LogStreams(streams)
    }

    /// Whether the event streams no text.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many texts are streamed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Writes `payload` to `sink`, reading each streamed text where its placeholder
    /// (`body::placeholder(nonce, logid)`) stands. Past `max_bytes` in all, the write
    /// stops with [`BodyError::TooLarge`]: a body is never sent short. (`u64::MAX` when
    /// the sink holds nothing, as a connection does.)
    pub fn write(
        self,
        payload: &Value,
        nonce: u64,
        max_bytes: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ()>,
    ) -> Result<(), BodyError> {
        let mut readers: Vec<(i64, StreamSource)> = self
            .0
            .into_iter()
            .map(|(logid, s)| (logid, StreamSource(s)))
            .collect();
        let mut sources: Vec<(i64, &mut dyn TextSource)> = readers
            .iter_mut()
            .map(|(logid, r)| (*logid, r as &mut dyn TextSource))
            .collect();
        let mut written = 0u64;
        let mut over = false;
        let mut counted = |piece: &[u8]| {
            written += piece.len() as u64;
            if written > max_bytes {
                over = true;
                return Err(());
            }
            sink(piece)
        };
        match write_streamed(payload, nonce, &mut sources, &mut counted) {
            Err(BodyError::Sink) if over => Err(BodyError::TooLarge),
            other => other,
        }
    }
}

/// A log text read from a `wasi:io` input stream.
struct StreamSource<'a>(&'a InputStream);

impl TextSource for StreamSource<'_> {
    fn read(&mut self, max: u64) -> Result<Option<Vec<u8>>, String> {
        match self.0.blocking_read(max) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StreamError::Closed) => Ok(None),
            Err(StreamError::LastOperationFailed(e)) => Err(e.to_debug_string()),
        }
    }
}
