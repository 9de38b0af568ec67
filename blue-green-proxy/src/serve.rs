//! The client side: accept connections, speak HTTP/1.1 or HTTP/2 cleartext (hyper-util's
//! `auto`), apply the header limits, and shut down gracefully.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::forward;
use crate::proxy::Shared;

/// The connection builder, with the limits applied.
pub(crate) fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 when a head does not fit; it refuses less than 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Accepts connections on `listener` until `shutdown`; each connection runs in `tracker`.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracker.spawn(connection(shared.clone(), stream, peer, shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin; the
                // connections already open are not affected.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let shared = shared.clone();
        let started = started.clone();
        let client = forward::Peer::new(peer);
        service_fn(move |req| {
            started.store(true, Ordering::Relaxed);
            let shared = shared.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(forward::handle(shared, &client, req).await) }
        })
    };
    let conn = shared
        .server
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // hyper times out slow request heads once it knows the protocol; this covers the bytes
    // before that (a client that connects and sends nothing, or a byte at a time).
    let first_request = tokio::time::sleep(shared.config.limits.header_read_timeout);
    tokio::pin!(first_request);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
                return;
            }
            _ = first_request.as_mut(), if !started.load(Ordering::Relaxed) => {
                if !started.load(Ordering::Relaxed) {
                    tracing::debug!("connection from {peer} sent no request in time; closed");
                    return;
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
