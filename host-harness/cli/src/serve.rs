//! `status-push serve`'s accept loop: HTTP/1 connections on a listener, each request
//! handed to the library's [`Relay`].

use std::sync::Arc;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use status_push_host::relay::Relay;
use tokio::net::TcpListener;

/// Serves requests from `listener` until the task is dropped.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let relay = relay.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let relay = relay.clone();
                async move { relay.handle(request).await }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("relay connection ended: {e}");
            }
        });
    }
}
