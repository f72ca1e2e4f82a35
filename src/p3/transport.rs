//! The WASI 0.3 transport: one POST of a finished body through `wasi:http/client@0.3.0`,
//! with the configured headers and timeouts, classified into the WIT `push-error` cases
//! exactly as the 0.2 transport (`src/transport.rs`) does.
//!
//! A 0.3 request is one async call (`client.send`) whose body is a `stream<u8>` the guest
//! writes while the host reads it. The call is started first, then the body is written,
//! then its response awaited: a body written before the call would wait for a reader that
//! does not exist yet.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::bindings::wasi::cli::stderr;
use crate::bindings::wasi::http::client;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, Method, Request, RequestOptions, Response, Scheme as WasiScheme,
};
use crate::bindings::{wit_future, wit_stream};
use crate::body::BodyError;
use crate::config::{Scheme, Settings};
use crate::log_stream::LogStreams;
use crate::wire::{self, classify};
use crate::{HttpFailure, PushError};
use serde_json::Value;
use wit_bindgen::{FutureWriter, StreamResult, StreamWriter};

/// How much of a response body is read (for `debug`) before it is dropped.
const RESPONSE_READ_LIMIT: usize = 64 * 1024;
/// The most a streamed body hands the host per write: the log reader's own piece size.
const CHUNK: usize = 64 * 1024;

/// The trailers a request ends with: none.
type Trailers = Result<Option<Fields>, ErrorCode>;

/// POSTs `body` with `headers` to the configured server, giving up after `budget_ms`
/// at the latest; `Ok` carries the 2xx status.
pub fn post(
    settings: &Settings,
    headers: &[(String, String)],
    body: Body<'_>,
    budget_ms: u64,
) -> Result<u16, PushError> {
    let (contents, reader) = wit_stream::new::<u8>();
    let (trailers, trailers_reader) = wit_future::new::<Trailers>(|| Ok(None));
    let request = request(settings, headers, &body, reader, trailers_reader, budget_ms)?;
    wit_bindgen::block_on(async move {
        let mut send = Box::pin(client::send(request));
        // Start the call, so the host reads the body while it is written. A call that
        // ends at once (a refused origin) has read nothing: the body is dropped unsent.
        let early = poll_once(&mut send).await;
        let written = match early {
            Some(_) => Ok(()),
            None => write_body(contents, trailers, body).await,
        };
        let response = match early {
            Some(result) => result,
            None => send.await,
        };
        // A log source that failed aborts the request; its reason is the one to report.
        written?;
        let response = response.map_err(|code| classify!(code))?;
        answer(settings, response).await
    })
}

/// The request line, headers (with `Content-Length` for a body in memory) and timeouts;
/// logged under `debug`, credentials redacted.
fn request(
    settings: &Settings,
    headers: &[(String, String)],
    body: &Body<'_>,
    contents: wit_bindgen::StreamReader<u8>,
    trailers: wit_bindgen::FutureReader<Trailers>,
    budget_ms: u64,
) -> Result<Request, PushError> {
    let target = &settings.target;
    let mut headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
        .collect();
    // A streamed body's length is not known up front: it goes out chunked.
    if let Body::Bytes(bytes) = body {
        headers.push((
            "Content-Length".into(),
            bytes.len().to_string().into_bytes(),
        ));
    }
    if settings.debug {
        let shown = match body {
            Body::Bytes(bytes) => wire::excerpt(bytes),
            Body::Streamed { streams, .. } => wire::streamed_text(streams.len()),
        };
        debug_line(&wire::request_text(settings, &headers, &shown));
    }
    let fields = Fields::from_list(&headers)
        .map_err(|e| PushError::Protocol(format!("the host refused a header: {e:?}")))?;
    let (request, _transmitted) = Request::new(
        fields,
        Some(contents),
        trailers,
        Some(options(settings, budget_ms)),
    );
    request
        .set_method(&Method::Post)
        .map_err(|()| refused("method"))?;
    let scheme = match target.scheme {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    request
        .set_authority(Some(&target.authority))
        .map_err(|()| refused("authority"))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| refused("path"))?;
    Ok(request)
}

fn refused(what: &str) -> PushError {
    PushError::Protocol(format!("the host refused the request {what}"))
}

/// The configured timeouts, none longer than what is left of the budget.
fn options(settings: &Settings, budget_ms: u64) -> RequestOptions {
    let options = RequestOptions::new();
    let ns = |ms: u32| u64::from(ms).min(budget_ms) * 1_000_000;
    // A host that cannot honour a timeout keeps its own; that is not worth failing over.
    let _ = options.set_connect_timeout(Some(ns(settings.timeouts.connect_ms)));
    let _ = options.set_first_byte_timeout(Some(ns(settings.timeouts.io_ms)));
    let _ = options.set_between_bytes_timeout(Some(ns(settings.timeouts.io_ms)));
    options
}

/// Polls `future` once: its output if it is already done, `None` once it has started.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(
        |cx: &mut Context<'_>| match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Ready(None),
        },
    )
    .await
}

/// Writes the body and ends it: the stream closed, then the trailers (none). A write the
/// host stops reading means the connection is gone, and the response says why; a failed
/// log source ends the body with an error instead, so the host never sends it as whole.
async fn write_body(
    mut contents: StreamWriter<u8>,
    trailers: FutureWriter<Trailers>,
    body: Body<'_>,
) -> Result<(), PushError> {
    let written = match body {
        Body::Bytes(bytes) => {
            // What `write_all` hands back is what the host did not take: it stopped reading.
            let left = contents.write_all(bytes.to_vec()).await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(BodyError::Sink)
            }
        }
        Body::Streamed {
            payload,
            nonce,
            streams,
        } => {
            // The splicer is synchronous (it is shared with the 0.2 build); each piece is
            // handed to the host before the next is read.
            let mut sink = |bytes: &[u8]| -> Result<(), ()> {
                for chunk in bytes.chunks(CHUNK) {
                    let left = wit_bindgen::block_on(contents.write_all(chunk.to_vec()));
                    if !left.is_empty() {
                        return Err(());
                    }
                }
                Ok(())
            };
            streams.write(payload, nonce, u64::MAX, &mut sink)
        }
    };
    drop(contents);
    match written {
        Ok(()) => {
            let _ = trailers.write(Ok(None)).await;
            Ok(())
        }
        Err(BodyError::Sink | BodyError::TooLarge) => {
            let _ = trailers
                .write(Err(ErrorCode::InternalError(Some(
                    "the body was not written whole".into(),
                ))))
                .await;
            Ok(())
        }
        Err(BodyError::Source(why)) => {
            let _ = trailers
                .write(Err(ErrorCode::InternalError(Some(why.clone()))))
                .await;
            Err(PushError::Protocol(format!(
                "reading a streamed log failed: {why}"
            )))
        }
    }
}

/// A 2xx status, or the failure with its `Retry-After`; the body is read (for `debug`)
/// and dropped.
async fn answer(settings: &Settings, response: Response) -> Result<u16, PushError> {
    let status = response.get_status_code();
    let success = (200..300).contains(&status);
    // Only a failure's `Retry-After` is used: a 2xx's headers are not read at all.
    let retry_after = if success {
        None
    } else {
        response
            .get_headers()
            .get("retry-after")
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let response_body = read_body(response).await;
    if settings.debug {
        debug_line(&wire::response_text(status, &response_body));
    }
    if success {
        Ok(status)
    } else {
        Err(PushError::HttpStatus(HttpFailure {
            status,
            retry_after,
        }))
    }
}

/// Reads (a bounded part of) the response body so the connection can be reused.
async fn read_body(response: Response) -> Vec<u8> {
    let (done, done_reader) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
    let (mut stream, _trailers) = Response::consume_body(response, done_reader);
    let mut out = Vec::new();
    while out.len() < RESPONSE_READ_LIMIT {
        let (result, bytes) = stream
            .read(Vec::with_capacity(RESPONSE_READ_LIMIT - out.len()))
            .await;
        out.extend_from_slice(&bytes);
        match result {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped | StreamResult::Cancelled => break,
        }
    }
    drop(stream);
    drop(done);
    out
}

/// What a request carries.
pub enum Body<'a> {
    /// A body already in memory.
    Bytes(&'a [u8]),
    /// A payload whose streamed log texts are read while it is written.
    Streamed {
        /// The payload, with `body::placeholder(nonce, logid)` for each streamed text.
        payload: &'a Value,
        /// The render's nonce.
        nonce: u64,
        /// The event's streamed texts.
        streams: LogStreams<'a>,
    },
}

/// One `debug` line to stderr, through 0.3's `write-via-stream`.
fn debug_line(text: &str) {
    let (mut tx, rx) = wit_stream::new::<u8>();
    let done = stderr::write_via_stream(rx);
    let bytes = format!("{text}\n").into_bytes();
    wit_bindgen::block_on(async move {
        tx.write_all(bytes).await;
        drop(tx);
        let _ = done.await;
    });
}
