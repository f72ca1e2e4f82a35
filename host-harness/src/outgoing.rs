//! `wasi:http/outgoing-handler.handle`, in place of wasmtime-wasi-http's, for a request
//! whose body the guest wrote and finished before calling it: the request is sent within
//! the guest's own call, and the response future it returns is already resolved.
//!
//! Why: wasmtime-wasi-http 48 runs every request on a task of its own, which the guest's
//! wait then has to be woken from; those hops were the largest cost of an event left on
//! the host (docs/design/where-time-goes.md). A request whose body is still being written
//! (a streamed log, or any body the guest writes after `handle`) takes wasmtime-wasi-http's
//! own path unchanged, so the streamed-log path, the sandbox ([`crate::sandbox`], whose
//! hook sends both kinds) and the request options' timeouts are the same on both.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::runtime::AbortOnDropJoinHandle;
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler::Host as _;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Method, Scheme};
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpView};

/// The interface this replaces a function of, under the name wasmtime-wasi-http 48 links
/// it (components importing any 0.2.x resolve to it).
const INTERFACE: &str = "wasi:http/outgoing-handler@0.2.12";

type Handled = wasmtime::Result<(Result<Resource<HostFutureIncomingResponse>, ErrorCode>,)>;

/// Links our `handle` over the one `add_only_http_to_linker_async` linked.
pub(crate) fn add_to_linker<T: WasiHttpView + Send + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = linker.instance(INTERFACE)?.func_wrap_async(
        "handle",
        |mut store,
         (request, options): (
            Resource<HostOutgoingRequest>,
            Option<Resource<RequestOptions>>,
        )| { Box::new(async move { handle(store.data_mut(), request, options).await }) },
    );
    linker.allow_shadowing(false);
    result
}

async fn handle<T: WasiHttpView>(
    host: &mut T,
    request_id: Resource<HostOutgoingRequest>,
    options: Option<Resource<RequestOptions>>,
) -> Handled {
    let mut http = host.http();
    let taken = http.table.get_mut(&request_id)?.body.take();
    let body = match taken.map(Written::poll_now) {
        Some(Written::Complete(bytes)) => bytes,
        still_open => {
            // Not written yet: put back what was read and let wasmtime-wasi-http send it.
            if let Some(Written::Open(body)) = still_open {
                http.table.get_mut(&request_id)?.body = Some(body);
            }
            return lift(http.handle(request_id, options));
        }
    };
    // The guest hands the options over with the request: nothing else holds them.
    let options = match options {
        Some(o) => Some(http.table.delete(o)?),
        None => None,
    };
    let request = http.table.delete(request_id)?;
    let request = match to_hyper(request, body, http.hooks) {
        Ok(request) => request,
        Err(code) => return Ok((Err(code),)),
    };
    let sent = http
        .hooks
        .send_request(request, options, Box::new(async { Ok(()) }));
    let outcome = match Pin::from(sent).await {
        Ok((response, io)) => Ok((response.map(|b| b.boxed_unsync()), worker(io))),
        Err(e) => Err(e),
    };
    let future = host
        .http()
        .table
        .push(HostFutureIncomingResponse::Ready(outcome))?;
    Ok((Ok(future),))
}

/// The task a response's body keeps for its I/O, as wasmtime-wasi-http requires one. Our
/// hook's I/O is done at once (the pooled client's connection task does the reading), so
/// the task is an empty one from [`RESERVE`].
fn worker(
    io: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
) -> AbortOnDropJoinHandle<()> {
    let mut io = Pin::from(io);
    match io.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(done) => {
            if let Err(e) = done {
                tracing::warn!("response I/O failed: {e}");
            }
            empty_task()
        }
        Poll::Pending => wasmtime_wasi::runtime::spawn(async move {
            if let Err(e) = io.await {
                tracing::warn!("response I/O failed: {e}");
            }
        }),
    }
}

/// Empty tasks spawned ahead, [`RESERVE_SIZE`] at a time.
///
/// Why not one per response: that cost a futex wake and wait and two worker parks per
/// event, traced with gdb to the wake hyper's `body::chan::Receiver::poll_next` makes when
/// the guest reads the response body (under `HostIncomingBodyStream::ready`). The task
/// spawned then sits in this worker's next-task slot; the connection's task, woken into
/// that slot, pushes it out, and tokio wakes the other worker to take it (our reading of
/// tokio's scheduler). Spawned ahead, 64 at a time, they cost no futex call per event,
/// measured (docs/design/request-in-guest-call.md).
static RESERVE: Mutex<Vec<AbortOnDropJoinHandle<()>>> = Mutex::new(Vec::new());
const RESERVE_SIZE: usize = 64;

fn empty_task() -> AbortOnDropJoinHandle<()> {
    let mut reserve = RESERVE.lock().unwrap_or_else(PoisonError::into_inner);
    if reserve.is_empty() {
        reserve.extend((0..RESERVE_SIZE).map(|_| wasmtime_wasi::runtime::spawn(async {})));
    }
    reserve
        .pop()
        .unwrap_or_else(|| wasmtime_wasi::runtime::spawn(async {}))
}

/// wasmtime-wasi-http's result as the function's: an error code goes to the guest, any
/// other error traps.
fn lift(
    handled: wasmtime_wasi_http::p2::HttpResult<Resource<HostFutureIncomingResponse>>,
) -> Handled {
    match handled {
        Ok(future) => Ok((Ok(future),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// The guest's request as hyper's, built as wasmtime-wasi-http 48's `handle` builds it.
fn to_hyper(
    request: HostOutgoingRequest,
    body: Bytes,
    hooks: &mut dyn wasmtime_wasi_http::WasiHttpHooks,
) -> Result<http::Request<WasiBody>, ErrorCode> {
    let method = match request.method {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Connect => http::Method::CONNECT,
        Method::Options => http::Method::OPTIONS,
        Method::Trace => http::Method::TRACE,
        Method::Patch => http::Method::PATCH,
        Method::Other(m) => http::Method::from_bytes(m.as_bytes())
            .map_err(|_| ErrorCode::HttpRequestMethodInvalid)?,
    };
    let scheme = match request.scheme {
        Some(scheme) => {
            let scheme = match scheme {
                Scheme::Http => http::uri::Scheme::HTTP,
                Scheme::Https => http::uri::Scheme::HTTPS,
                Scheme::Other(s) => http::uri::Scheme::try_from(s.as_str())
                    .map_err(|_| ErrorCode::HttpProtocolError)?,
            };
            if !hooks.is_supported_scheme(&scheme) {
                return Err(ErrorCode::HttpProtocolError);
            }
            scheme
        }
        None => hooks.default_scheme().ok_or(ErrorCode::HttpProtocolError)?,
    };
    let authority = request.authority.unwrap_or_default();
    let mut uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority.as_str());
    if let Some(path) = request.path_with_query {
        uri = uri.path_and_query(path);
    }
    let uri = uri.build().map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    if hooks.set_host_header() {
        builder = builder.header(http::header::HOST, authority.as_str());
    }
    for (name, value) in request.headers.iter() {
        builder = builder.header(name, value);
    }
    builder
        .body(
            Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))
}

/// What a guest's outgoing body holds when `handle` is called.
enum Written {
    /// Written and finished: every byte of it.
    Complete(Bytes),
    /// Still being written (or ending in trailers or an error): the body, with what was
    /// read from it put back in front.
    Open(WasiBody),
}

impl Written {
    /// Reads what the body already holds, without waiting for more.
    fn poll_now(mut body: WasiBody) -> Written {
        let mut cx = Context::from_waker(Waker::noop());
        let mut read = BytesMut::new();
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(None) => return Written::Complete(read.freeze()),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => read.extend_from_slice(&data),
                    Err(frame) => return Written::open(read, Some(Ok(frame)), body),
                },
                Poll::Ready(Some(Err(e))) => return Written::open(read, Some(Err(e)), body),
                Poll::Pending => return Written::open(read, None, body),
            }
        }
    }

    fn open(
        read: BytesMut,
        next: Option<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>,
        rest: WasiBody,
    ) -> Written {
        let read = (!read.is_empty()).then(|| Ok(Frame::data(read.freeze())));
        Written::Open(
            Replayed {
                frames: [read, next].into_iter().flatten().collect(),
                rest,
            }
            .boxed_unsync(),
        )
    }
}

/// A body's frames already read, then the rest of it.
struct Replayed {
    frames: std::collections::VecDeque<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>,
    rest: WasiBody,
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.frames.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_linked_under_the_name_wasmtime_wasi_http_uses() {
        // Under any other name ours would be a second definition beside wasmtime-wasi-http's
        // instead of replacing it; defining the name again without shadowing fails only if
        // it is taken.
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<crate::store::Host>::new(&engine);
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
        let again = linker
            .instance(INTERFACE)
            .unwrap()
            .func_new("handle", |_, _, _, _| Ok(()));
        assert!(again.is_err(), "{INTERFACE} has no `handle` to replace");
    }

    fn channel_body() -> (tokio::sync::mpsc::Sender<Frame<Bytes>>, WasiBody) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(4);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (Ok(frame), rx))
        });
        (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
    }

    #[test]
    fn a_finished_body_is_complete() {
        let (tx, body) = channel_body();
        tx.try_send(Frame::data(Bytes::from_static(b"{\"a\": ")))
            .unwrap();
        tx.try_send(Frame::data(Bytes::from_static(b"1}"))).unwrap();
        drop(tx);
        match Written::poll_now(body) {
            Written::Complete(bytes) => assert_eq!(&bytes[..], b"{\"a\": 1}"),
            Written::Open(_) => panic!("a finished body was taken as open"),
        }
    }

    #[tokio::test]
    async fn an_unfinished_body_keeps_every_byte_in_order() {
        let (tx, body) = channel_body();
        tx.try_send(Frame::data(Bytes::from_static(b"first ")))
            .unwrap();
        let Written::Open(body) = Written::poll_now(body) else {
            panic!("an unfinished body was taken as complete");
        };
        tx.try_send(Frame::data(Bytes::from_static(b"then")))
            .unwrap();
        tx.try_send(Frame::trailers(http::HeaderMap::new()))
            .unwrap();
        drop(tx);
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_some(), "the trailers were lost");
        assert_eq!(&collected.to_bytes()[..], b"first then");
    }

    #[tokio::test]
    async fn trailers_already_written_are_kept() {
        let (tx, body) = channel_body();
        tx.try_send(Frame::data(Bytes::from_static(b"x"))).unwrap();
        tx.try_send(Frame::trailers(http::HeaderMap::new()))
            .unwrap();
        drop(tx);
        let Written::Open(body) = Written::poll_now(body) else {
            panic!("a body with trailers was taken as plain bytes");
        };
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_some());
        assert_eq!(&collected.to_bytes()[..], b"x");
    }
}
