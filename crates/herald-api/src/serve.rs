//! The HTTP server loop, written out instead of `axum::serve` for what Herald needs from it: a deadline on
//! the request head (the brief's 2 s handshake: a client that opens a socket and dawdles is dropped),
//! TCP_NODELAY on every connection, an accept loop that survives errors (such as running out of file
//! descriptors) by backing off, and a graceful stop that lets in-flight requests finish.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Serves `router` on `listener` until `stop` is cancelled, then waits for in-flight requests.
pub async fn serve(listener: TcpListener, router: Router, head_timeout: Duration, stop: CancellationToken) {
    // HTTP/1.1 only: the WebSocket upgrade is an HTTP/1.1 affair, and with one protocol the head deadline
    // runs from the first byte the server waits for (hyper restarts it between keep-alive requests, so an
    // idle REST connection is also closed after it).
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(head_timeout);
    let connections = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                metrics::counter!("http_accept_errors_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        // Every request carries its connection's peer (the client's address, or its proxy's).
        let service = TowerToHyperService::new(router.clone().map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        }));
        let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    // Finish the request in progress, then close instead of keeping the connection alive.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                // Peers going away mid-request and slow heads are normal on the internet.
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
