//! Keep-alive HTTP/1.1 connections to one upstream: a small stack of idle
//! `hyper::client::conn::http1` senders per target.
//!
//! Why not hyper-util's pooled `Client`: it keys a shared pool by scheme and authority, races a
//! new connection against idle waiters, and runs a task per checkout to see when a connection
//! is free again. A profile of the proxy at full load showed that bookkeeping (locks, oneshots,
//! task wake-ups) costing more than forwarding the request. Here a target owns its idle
//! connections; a request pops one (or connects), and its response body puts it back the
//! moment the last frame is read. One task per connection remains: hyper's connection driver.
//!
//! The pool also carries the target's generation (see [`crate::target`]): a cut aborts every
//! driver, which ends whatever a request is waiting for on that connection (its answer, its
//! body), and the requests themselves need not watch for the cut.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use blue_green_core::Endpoint;

/// Idle connections kept per target (nginx's `keepalive 64`); more are closed when their
/// response ends. Each idle one holds its buffers and a task, so a burst of a thousand
/// concurrent requests does not leave a thousand behind.
const MAX_IDLE: usize = 64;
/// An idle connection unused for this long is closed instead of reused (the upstream may have
/// closed it on its side by then).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// The TCP connection could not be made.
    Connect(io::Error),
    /// The TCP connection took longer than the connect timeout.
    ConnectTimeout(Duration),
    /// The connection broke, or the upstream's answer was not HTTP.
    Http(hyper::Error),
    /// The target was cut while the request waited.
    Cut,
}

impl UpstreamError {
    /// Whether nothing was ever sent: no connection could be made.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout(_)
        )
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "{e}"),
            UpstreamError::ConnectTimeout(t) => {
                write!(f, "no connection within {:.1}s", t.as_secs_f64())
            }
            UpstreamError::Http(e) => {
                // The innermost cause says what actually happened (refused, reset).
                let mut inner: &(dyn std::error::Error + 'static) = e;
                while let Some(next) = inner.source() {
                    inner = next;
                }
                write!(f, "{inner}")
            }
            UpstreamError::Cut => write!(f, "cut at the drain deadline"),
        }
    }
}

/// A connection to the upstream, lent to one request until its response ends.
pub(crate) type Lease = SendRequest<Incoming>;

/// An idle connection: since when, and in which generation it was made.
#[derive(Debug)]
struct Idle {
    lease: Lease,
    since: Instant,
    generation: u64,
}

/// The keep-alive connections of one target: the idle ones, and the drivers of all.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// The driver task of every connection made since the last cut; under this lock the
    /// generation is bumped and a new driver registered, so none escapes a cut.
    drivers: Mutex<Vec<AbortHandle>>,
    /// How many cuts there have been.
    generation: AtomicU64,
}

/// Locks `m`: a poisoned lock only means a panic elsewhere while pushing or popping; the list
/// is still a list of connections.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    /// The number of cuts so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts a new generation and closes every connection of the old one, idle or busy: the
    /// requests on them get an error at once (their answer or body ends), and the caller's
    /// [`crate::target::InFlight::is_cut`] tells that error from a failure.
    pub(crate) fn cut(&self) {
        let drivers = {
            let mut drivers = lock(&self.drivers);
            self.generation.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *drivers)
        };
        for driver in drivers {
            driver.abort();
        }
        lock(&self.idle).clear();
    }

    /// The most recently used idle connection of `generation` that is still open and fresh.
    fn take(&self, generation: u64) -> Option<Lease> {
        let mut idle = lock(&self.idle);
        while let Some(conn) = idle.pop() {
            if conn.generation == generation
                && !conn.lease.is_closed()
                && conn.since.elapsed() < IDLE_TIMEOUT
            {
                return Some(conn.lease);
            }
        }
        None
    }

    /// Puts a connection whose response has ended back, unless it is closed, of a generation
    /// since cut, or the pool full.
    pub(crate) fn put(&self, lease: Lease, generation: u64) {
        if lease.is_closed() || generation != self.generation() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                lease,
                since: Instant::now(),
                generation,
            });
        }
    }

    /// Idle connections now (for tests).
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }

    /// Sends `req`, of a request that started in `generation`, over an idle connection or a
    /// new one. A request that an idle connection could not take (the upstream had closed it,
    /// nothing was written) is sent again on the next one, so a closed keep-alive connection
    /// never fails a request. Returns the response and the connection, which the caller gives
    /// back with [`Pool::put`] when the response's body has ended (or drops, when it did not
    /// end cleanly).
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        connect_timeout: Duration,
        mut req: Request<Incoming>,
        generation: u64,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        loop {
            if generation != self.generation() {
                return Err(UpstreamError::Cut);
            }
            let (mut lease, fresh) = match self.take(generation) {
                Some(lease) => (lease, false),
                // Boxed: the rare path, and it would make every request's future larger.
                None => (
                    Box::pin(self.connect(endpoint, connect_timeout, generation)).await?,
                    true,
                ),
            };
            if !fresh && lease.ready().await.is_err() {
                continue;
            }
            match lease.try_send_request(req).await {
                Ok(res) => return Ok((res, lease)),
                Err(mut e) => match e.take_message() {
                    // Not sent: the idle connection was closed under us; try the next one.
                    Some(back) if !fresh => req = back,
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    /// A new connection to `endpoint` for a request of `generation`, its driver running as a
    /// task that a cut aborts (at once, if the cut came while connecting).
    async fn connect(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
        generation: u64,
    ) -> Result<Lease, UpstreamError> {
        let (lease, conn) = handshake(endpoint, timeout).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("an upstream connection ended: {e}");
            }
        })
        .abort_handle();
        let mut drivers = lock(&self.drivers);
        if generation != self.generation() {
            driver.abort();
            return Err(UpstreamError::Cut);
        }
        // Those of connections that have ended go: the list stays as long as the open ones.
        drivers.retain(|d| !d.is_finished());
        drivers.push(driver);
        Ok(lease)
    }
}

/// A new connection to `endpoint` (TCP_NODELAY: a proxy writes heads and small bodies that
/// must not wait for Nagle), and its driver, not yet running.
async fn handshake(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<(Lease, http1::Connection<TokioIo<TcpStream>, Incoming>), UpstreamError> {
    let addr = (endpoint.host.as_str(), endpoint.port);
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
        Err(_) => return Err(UpstreamError::ConnectTimeout(timeout)),
    };
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Http)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    /// An upstream that answers `ok` and counts the connections it accepted.
    async fn upstream() -> (Endpoint, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                    }),
                ));
            }
        });
        (Endpoint::new("127.0.0.1", port), accepted)
    }

    /// A request with an empty `Incoming` body, as a proxied GET has, made by a loopback hop.
    async fn get_through(pool: &Pool, endpoint: &Endpoint) -> (String, Lease) {
        // `Incoming` cannot be built by hand: take a real one from a tiny server.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req: Request<Incoming>| {
                        if let Some(tx) = tx.lock().unwrap().take() {
                            let _ = tx.send(req);
                        }
                        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
                    }),
                )
                .await;
        });
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(conn);
        let sent = sender.send_request(
            Request::get("/")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        );
        tokio::spawn(sent);
        let req = rx.await.unwrap();
        let (res, lease) = pool
            .send(endpoint, Duration::from_secs(2), req, 0)
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (String::from_utf8_lossy(&body).into_owned(), lease)
    }

    #[tokio::test]
    async fn a_connection_given_back_is_reused() {
        let (endpoint, accepted) = upstream().await;
        let pool = Pool::default();
        for _ in 0..3 {
            let (body, lease) = get_through(&pool, &endpoint).await;
            assert_eq!(body, "ok");
            pool.put(lease, 0);
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
    }

    #[tokio::test]
    async fn a_connection_not_given_back_is_not_reused() {
        let (endpoint, accepted) = upstream().await;
        let pool = Pool::default();
        for _ in 0..2 {
            let (_, lease) = get_through(&pool, &endpoint).await;
            drop(lease);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = handshake(&Endpoint::new("127.0.0.1", port), Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert!(e.is_connect(), "{e}");
        assert!(e.to_string().contains("refused"), "{e}");
    }
}
