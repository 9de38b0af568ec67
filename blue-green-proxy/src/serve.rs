//! The client side: accept connections, speak HTTP/1.1 or HTTP/2 cleartext (told apart by the
//! first bytes), apply the header limits, and shut down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::forward;
use crate::proxy::Shared;

/// The connection builders, with the limits applied.
///
/// A connection that does not open with HTTP/2's preface goes straight to hyper's HTTP/1
/// builder; the rest to hyper-util's `auto`, which reads the preface to decide. `auto` reads
/// those first bytes into a side buffer and hands them to hyper afterwards, and hyper's read
/// buffer then grows from 8 KiB to 16 KiB on the rest of the first request, for the life of the
/// connection: 8 KiB more for each open HTTP/1 connection, most of a proxy's connections.
pub(crate) struct Builders {
    http1: http1::Builder,
    auto: auto::Builder<TokioExecutor>,
}

/// The HTTP/1 settings, the same on both builders (hyper's and hyper-util's have the same
/// setters but no common trait).
macro_rules! http1_limits {
    ($builder:expr, $limits:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($limits.header_read_timeout)
            // hyper answers 431 when a head does not fit; it refuses less than 8 KiB.
            .max_buf_size($limits.max_header_bytes.max(8192))
            .keep_alive(true)
    };
}

impl Builders {
    pub(crate) fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1_limits!(http1, limits);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        http1_limits!(auto.http1(), limits);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Builders { http1, auto }
    }
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

/// The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // hyper times out slow request heads once it knows the protocol; this covers the bytes
    // before that (a client that connects and sends nothing, or a byte at a time).
    let first_request = tokio::time::sleep(shared.config.limits.header_read_timeout);
    tokio::pin!(first_request);
    let mut first = [0u8; HTTP2_PREFACE.len()];
    let http1 = tokio::select! {
        peeked = stream.peek(&mut first) => match peeked {
            Ok(0) | Err(_) => return,
            // Whatever is not (yet) the preface: HTTP/1 when a byte differs, `auto` to wait for
            // the rest when all agree so far.
            Ok(n) => !HTTP2_PREFACE.starts_with(&first[..n]),
        },
        _ = first_request.as_mut() => {
            tracing::debug!("connection from {peer} sent no request in time; closed");
            return;
        }
        _ = shutdown.cancelled() => return,
    };
    let started = Arc::new(AtomicBool::new(false));
    let http2 = Arc::new(AtomicBool::new(false));
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
            // Boxed: hyper keeps room for one request's future in every connection, idle or
            // not, and this one is about 3 KB; boxed, an idle connection keeps a pointer.
            Box::pin(async move {
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
            })
        })
    };
    let io = TokioIo::new(stream);
    let watch = Watch {
        peer,
        started: &started,
        http2: &http2,
        // HTTP/1: hyper's header read timeout runs from the first byte of every head, this one
        // included; watching a timer of our own too would poll it at every wake of the connection.
        first_request: (!http1).then_some(first_request),
        shutdown: &shutdown,
        retire: &shared.handover.retire,
    };
    if http1 {
        let conn = shared
            .server
            .http1
            .serve_connection(io, service)
            .with_upgrades();
        watch
            .run(conn, http1::UpgradeableConnection::graceful_shutdown)
            .await;
    } else {
        // Boxed: `auto`'s connection is larger (HTTP/2's state too), and every connection's task
        // would be sized for it.
        let conn = shared
            .server
            .auto
            .serve_connection_with_upgrades(io, service);
        Box::pin(watch.run(conn, auto::UpgradeableConnection::graceful_shutdown)).await;
    }
}

/// What a connection's life is watched for besides its own progress: no request in time, the
/// proxy's shutdown, and its retirement after a handover.
struct Watch<'a> {
    peer: SocketAddr,
    started: &'a AtomicBool,
    http2: &'a AtomicBool,
    /// The first request's deadline, where the protocol's own timeout does not cover it.
    first_request: Option<Pin<&'a mut Sleep>>,
    shutdown: &'a CancellationToken,
    retire: &'a CancellationToken,
}

impl Watch<'_> {
    /// Drives `conn` to its end; `graceful_shutdown` is its builder's.
    ///
    /// A connection's task wakes for every read, write and upstream answer, and a `select!`
    /// would poll the signals at each of those wakes too: for a cancellation token, a lock on
    /// a list of waiters that every connection shares. Here the signals have a waker of their
    /// own ([`Signals`]) and are polled only when one of them woke the task.
    async fn run<C, E>(self, conn: C, graceful_shutdown: fn(Pin<&mut C>))
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let Watch {
            peer,
            started,
            http2,
            mut first_request,
            shutdown,
            retire,
        } = self;
        let mut conn = pin!(conn);
        let mut shutdown = pin!(shutdown.cancelled());
        let mut retire = pin!(retire.cancelled());
        let signals = Arc::new(Signals {
            // Polled once at the start, so that each signal has the waker.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        let signal_waker = Waker::from(signals.clone());
        let mut task: Option<Waker> = None;
        let mut draining = false;
        let mut retiring = false;
        std::future::poll_fn(|cx| {
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                task = Some(cx.waker().clone());
                *signals.task.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(cx.waker().clone());
            }
            if signals.woken.load(Ordering::Relaxed) && signals.woken.swap(false, Ordering::Acquire)
            {
                let mut signal_cx = Context::from_waker(&signal_waker);
                if let Some(deadline) = first_request.as_mut() {
                    if started.load(Ordering::Relaxed) {
                        first_request = None;
                    } else if deadline.as_mut().poll(&mut signal_cx).is_ready() {
                        tracing::debug!("connection from {peer} sent no request in time; closed");
                        return Poll::Ready(());
                    }
                }
                if !draining && shutdown.as_mut().poll(&mut signal_cx).is_ready() {
                    draining = true;
                    graceful_shutdown(conn.as_mut());
                }
                // HTTP/2 says "no new streams here" without a race (GOAWAY); an HTTP/1
                // connection stays open until its next answer closes it, or until the shutdown.
                if !retiring && retire.as_mut().poll(&mut signal_cx).is_ready() {
                    retiring = true;
                    if http2.load(Ordering::Relaxed) && !draining {
                        draining = true;
                        graceful_shutdown(conn.as_mut());
                    }
                }
            }
            conn.as_mut().poll(cx).map(|done| {
                if let Err(e) = done {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
            })
        })
        .await
    }
}

/// The waker of a connection's signals: it marks that a signal is to be polled, then wakes the
/// connection's task.
struct Signals {
    woken: AtomicBool,
    /// The connection's task, as last seen polling.
    task: Mutex<Option<Waker>>,
}

impl Wake for Signals {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            task.wake_by_ref();
        }
    }
}
