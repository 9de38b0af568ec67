//! The client side: accept connections, speak HTTP/1.1 or HTTP/2 cleartext (hyper-util's
//! `auto`), apply the header limits, and shut down gracefully.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::service_fn;
use hyper::{StatusCode, Version};
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

/// Accepts connections on `listener` until the proxy stops accepting (shut down, or handed
/// over to a new process); each connection runs in `tracker` until `shutdown`.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let accepting = shared.handover.accepting.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Dropping the listener closes this process's descriptor only: after a handover
            // the socket, and the connections in its queue, are the new process's.
            _ = accepting.cancelled() => return,
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
    let http2 = Arc::new(AtomicBool::new(false));
    let retire = shared.handover.retire.clone();
    let service = {
        let shared = shared.clone();
        let started = started.clone();
        let http2 = http2.clone();
        let client = forward::Peer::new(peer);
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            started.store(true, Ordering::Relaxed);
            let version = req.version();
            if version == Version::HTTP_2 {
                http2.store(true, Ordering::Relaxed);
            }
            let shared = shared.clone();
            let client = client.clone();
            async move {
                let mut res = forward::handle(shared.clone(), &client, req).await;
                // A retiring process (handed over to a new one) closes each HTTP/1 connection
                // after its answer, and says so: the client opens its next connection to the
                // new process instead of racing a close on an idle one.
                if shared.handover.retire.is_cancelled()
                    && version < Version::HTTP_2
                    && res.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(res)
            }
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
    let mut retiring = false;
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
            // HTTP/2 says "no new streams here" without a race (GOAWAY); an HTTP/1 connection
            // stays open until its next answer closes it, or until the shutdown.
            _ = retire.cancelled(), if !retiring => {
                retiring = true;
                if http2.load(Ordering::Relaxed) && !draining {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
