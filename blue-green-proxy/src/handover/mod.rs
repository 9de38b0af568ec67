//! Replacing the proxy process under load: a new `blue-green proxy run --take-over` takes the
//! listening sockets (client traffic and the control socket) from the running one, and the
//! running one finishes what it has in flight and exits.
//!
//! The sockets themselves are handed over, not re-bound: the old process sends its listening
//! file descriptors over its control socket with `SCM_RIGHTS`. Both processes then hold the
//! same kernel sockets, so a connection waiting in a listen queue is accepted by one or the
//! other and never reset, and the control socket's path never disappears. (`SO_REUSEPORT`
//! would give each process its own queue, and the connections queued on the old one are reset
//! when it closes it.)
//!
//! The exchange, on one control connection:
//!
//! 1. the new process sends `POST /v1/handover` with `Upgrade: blue-green-handover`; the old
//!    one refuses with `409` if a handover is already under way or it is paused, else it
//!    freezes its routes (every change is refused with `503` from now on, so none can be lost)
//!    and answers `101`;
//! 2. the new one sends `G`; the old one sends a 4-byte length with the listening sockets
//!    attached, then the [`Offer`] (its listen addresses and its routes and mode) as JSON;
//! 3. the new one checks the addresses against its `--listen`, writes the routes to its state
//!    file, starts accepting on the sockets (both processes accept for a moment: harmless,
//!    the routes are the same and frozen), and sends `A`;
//! 4. the old one stops accepting, sends `C` and retires: HTTP/1.1 answers carry
//!    `Connection: close` so kept-alive clients move on without a race, HTTP/2 connections get
//!    a GOAWAY, requests, streams and WebSockets in flight finish (up to its `--grace`), idle
//!    connections are closed, and it exits;
//! 5. on `C` the new one takes changes again. If anything fails before `C`, the new one gives
//!    the sockets back (it closes its copies) and exits with an error, and the old one, once
//!    the connection is gone without an `A`, takes changes again and serves on as before.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::control::ErrorAnswer;
use crate::error::Error;
use crate::gate::Mode;
use crate::proxy::Shared;
use crate::state::SavedState;

mod wire;

use wire::{read_byte, read_exact, recv_with_fds, send_with_fds, write_all};

/// The `Upgrade` protocol name of the handover.
const PROTOCOL: &str = "blue-green-handover";
/// The longest a step of the exchange may take; past it, the side that waits gives up and the
/// old process serves on.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest offer read, in bytes.
const MAX_OFFER: usize = 16 * 1024 * 1024;
/// After the last request in flight ends, how long a retiring process still waits for
/// kept-alive clients to send one more request (answered with `Connection: close`) before it
/// closes their idle connections.
const IDLE_LINGER: Duration = Duration::from_millis(500);

/// What the old process hands over, besides the sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Offer {
    /// The addresses of the client listeners, in the order of the sockets sent.
    pub(crate) listen: Vec<SocketAddr>,
    /// Whether the control socket follows the client listeners.
    pub(crate) control: bool,
    /// The routes and mode, frozen when the handover began.
    pub(crate) state: SavedState,
}

/// A proxy's side of handovers: its sockets, whether changes are frozen, and the tokens that
/// stop accepting and retire connections.
#[derive(Debug)]
pub(crate) struct Handover {
    /// Changes are refused (a handover is under way).
    frozen: AtomicBool,
    /// Copies of the listening sockets, to send; set at start, closed once handed over.
    sockets: Mutex<Option<Sockets>>,
    /// Cancelled when this process stops accepting (handed over, or shutting down).
    pub(crate) accepting: CancellationToken,
    /// Cancelled when this process has handed over and retires: answers close their
    /// connections.
    pub(crate) retire: CancellationToken,
    /// Cancelled when the sockets belong to another process now.
    pub(crate) handed_over: CancellationToken,
}

#[derive(Debug)]
struct Sockets {
    listen: Vec<(SocketAddr, OwnedFd)>,
    control: Option<OwnedFd>,
}

impl Sockets {
    fn try_clone(&self) -> std::io::Result<Sockets> {
        Ok(Sockets {
            listen: self
                .listen
                .iter()
                .map(|(a, fd)| Ok((*a, fd.try_clone()?)))
                .collect::<std::io::Result<_>>()?,
            control: self.control.as_ref().map(|fd| fd.try_clone()).transpose()?,
        })
    }
}

impl Handover {
    /// A handover state; `frozen` for a process that is taking over and must not take changes
    /// before the old one has let go.
    pub(crate) fn new(shutdown: &CancellationToken, frozen: bool) -> Handover {
        Handover {
            frozen: AtomicBool::new(frozen),
            sockets: Mutex::new(None),
            accepting: shutdown.child_token(),
            retire: CancellationToken::new(),
            handed_over: CancellationToken::new(),
        }
    }

    /// Keeps copies of the listening sockets, to hand over later.
    pub(crate) fn keep_sockets(
        &self,
        listen: Vec<(SocketAddr, OwnedFd)>,
        control: Option<OwnedFd>,
    ) {
        *self.sockets() = Some(Sockets { listen, control });
    }

    fn sockets(&self) -> std::sync::MutexGuard<'_, Option<Sockets>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses a change while a handover is under way.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.frozen.load(Ordering::Acquire) {
            Err(Error::HandingOver)
        } else {
            Ok(())
        }
    }

    fn thaw(&self) {
        self.frozen.store(false, Ordering::Release);
    }
}

// ---- the old process ----

/// `POST /v1/handover` on the control socket: the start of a handover to a new process.
pub(crate) async fn answer(
    shared: std::sync::Arc<Shared>,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let wants = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !wants {
        return refusal(
            StatusCode::BAD_REQUEST,
            format!("a handover needs `Upgrade: {PROTOCOL}`; `blue-green proxy run --take-over` sends it"),
        );
    }
    let (offer, sockets) = match freeze(&shared).await {
        Ok(frozen) => frozen,
        Err(message) => return refusal(StatusCode::CONFLICT, message),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match tokio::time::timeout(STEP_TIMEOUT * 2, give(&shared, on_upgrade, offer, sockets))
            .await
        {
            Ok(Ok(())) => {
                tracing::info!("handed the listening sockets over to a new proxy process; finishing what is in flight");
                shared.handover.handed_over.cancel();
            }
            Ok(Err(e)) => {
                tracing::warn!("the handover to a new proxy process failed ({e}); serving on");
                shared.handover.thaw();
            }
            Err(_) => {
                tracing::warn!(
                    "the new proxy process did not complete the handover within {}s; serving on",
                    (STEP_TIMEOUT * 2).as_secs()
                );
                shared.handover.thaw();
            }
        }
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    res.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static(PROTOCOL));
    res
}

/// Freezes the routes for a handover and returns what to offer, or why not now.
async fn freeze(shared: &Shared) -> Result<(Offer, Sockets), String> {
    // Under the change lock: a change under way finishes first, and none starts after.
    let _serial = shared.changes.lock().await;
    if shared.handover.handed_over.is_cancelled() {
        return Err("this proxy has already handed its sockets over to another process".into());
    }
    if shared.handover.frozen.swap(true, Ordering::AcqRel) {
        return Err("another take-over of this proxy is under way; wait for it to finish".into());
    }
    if shared.gate.mode() == Mode::Paused {
        shared.handover.thaw();
        return Err("the proxy is paused: the requests it holds would wait in the old process; run `blue-green proxy resume` first".into());
    }
    let copies = match shared.handover.sockets().as_ref().map(Sockets::try_clone) {
        Some(Ok(copies)) => copies,
        Some(Err(e)) => {
            shared.handover.thaw();
            return Err(format!("could not copy the listening sockets: {e}"));
        }
        None => {
            shared.handover.thaw();
            return Err("this proxy has no sockets to hand over".into());
        }
    };
    let offer = Offer {
        listen: copies.listen.iter().map(|(a, _)| *a).collect(),
        control: copies.control.is_some(),
        state: shared.saved(&shared.routes.snapshot(), shared.gate.mode()),
    };
    Ok((offer, copies))
}

/// The old process's side of the exchange, on the upgraded connection.
async fn give(
    shared: &Shared,
    on_upgrade: hyper::upgrade::OnUpgrade,
    offer: Offer,
    sockets: Sockets,
) -> Result<(), String> {
    let upgraded = on_upgrade
        .await
        .map_err(|e| format!("the upgrade failed: {e}"))?;
    let parts = upgraded
        .downcast::<TokioIo<UnixStream>>()
        .map_err(|_| "the control connection is not a Unix socket".to_string())?;
    let stream = parts.io.into_inner();
    let mut early = parts.read_buf;
    let go = if early.is_empty() {
        read_byte(&stream).await?
    } else {
        let b = early[0];
        early = early.slice(1..);
        b
    };
    if go != b'G' || !early.is_empty() {
        return Err("the new process did not follow the handover protocol".into());
    }
    let json = serde_json::to_vec(&offer).map_err(|e| e.to_string())?;
    let mut fds: Vec<_> = sockets.listen.iter().map(|(_, fd)| fd.as_fd()).collect();
    fds.extend(sockets.control.as_ref().map(|fd| fd.as_fd()));
    let length = u32::try_from(json.len())
        .map_err(|_| "the routes are too large to hand over".to_string())?
        .to_be_bytes();
    send_with_fds(&stream, &length, &fds).await?;
    write_all(&stream, &json).await?;
    match read_byte(&stream).await? {
        b'A' => {}
        other => {
            return Err(format!(
                "the new process answered {other:?} instead of accepting"
            ))
        }
    }
    // The new process accepts on the sockets now: stop accepting here, then tell it.
    shared.handover.accepting.cancel();
    // From now on answers here close their connections: clients move to the new process.
    shared.handover.retire.cancel();
    // Closing this process's copies leaves the sockets open: the new process holds them.
    drop(shared.handover.sockets().take());
    write_all(&stream, b"C").await?;
    Ok(())
}

/// Waits until every request, stream and upgraded connection this process has in flight has
/// ended, or `within` has passed; then a short linger for kept-alive clients. Returns what was
/// still open at the deadline.
pub(crate) async fn wait_in_flight(shared: &Shared, within: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    let mut left = 0;
    for target in shared.targets.all() {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        left += target.wait_idle(remaining).await;
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    tokio::time::sleep(IDLE_LINGER.min(remaining)).await;
    left
}

// ---- the new process ----

/// What a take-over received: the sockets and what the old process offered.
pub(crate) struct Taken {
    pub(crate) offer: Offer,
    /// The client listeners, in the order of the new process's `--listen`.
    pub(crate) listen: Vec<std::net::TcpListener>,
    pub(crate) control: std::os::unix::net::UnixListener,
    /// The connection to the old process, to accept and to hear its commit on.
    pub(crate) stream: UnixStream,
}

/// Connects to the proxy on `control`, asks for a handover and receives its sockets and
/// routes. Nothing is accepted yet; the old process serves on until [`commit`].
pub(crate) async fn take(control: &Path, listen: &[SocketAddr]) -> Result<Taken, Error> {
    let fail = |message: String| Error::TakeOver {
        path: control.to_path_buf(),
        message,
    };
    let stream = UnixStream::connect(control).await.map_err(|e| {
        fail(format!(
            "no proxy answers on it ({e}); start one without --take-over"
        ))
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(format!("the connection failed: {e}")))?;
    let driver = tokio::spawn(conn.with_upgrades());
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/handover")
        .header(HOST, HeaderValue::from_static("blue-green-proxy"))
        .header(CONNECTION, HeaderValue::from_static("upgrade"))
        .header(UPGRADE, HeaderValue::from_static(PROTOCOL))
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    let res = tokio::time::timeout(STEP_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| {
            fail(format!(
                "no answer to the handover request within {}s",
                STEP_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| fail(format!("the handover request failed: {e}")))?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = res.status();
        let bytes = Limited::new(res.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<ErrorAnswer>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(fail(format!(
            "the running proxy refused the take-over (HTTP {}): {message}",
            status.as_u16()
        )));
    }
    let upgraded = hyper::upgrade::on(res)
        .await
        .map_err(|e| fail(format!("the upgrade failed: {e}")))?;
    driver.abort();
    let parts = upgraded
        .downcast::<TokioIo<UnixStream>>()
        .map_err(|_| fail("the upgraded connection is not the Unix socket".into()))?;
    if !parts.read_buf.is_empty() {
        return Err(fail("the running proxy sent data out of turn".into()));
    }
    let stream = parts.io.into_inner();
    write_all(&stream, b"G").await.map_err(&fail)?;
    let (length, fds) = recv_with_fds(&stream).await.map_err(&fail)?;
    let length = usize::try_from(u32::from_be_bytes(length)).unwrap_or(usize::MAX);
    if length > MAX_OFFER {
        return Err(fail(format!("the offer is too large ({length} bytes)")));
    }
    let mut json = vec![0; length];
    read_exact(&stream, &mut json).await.map_err(&fail)?;
    let offer: Offer = serde_json::from_slice(&json)
        .map_err(|e| fail(format!("the offer could not be read: {e}")))?;
    if fds.len() != offer.listen.len() + usize::from(offer.control) || !offer.control {
        return Err(fail(format!(
            "the running proxy sent {} sockets for {} listeners and {} control socket",
            fds.len(),
            offer.listen.len(),
            if offer.control { "a" } else { "no" }
        )));
    }
    let mut fds = fds.into_iter();
    let mut offered: Vec<(SocketAddr, OwnedFd)> =
        offer.listen.iter().copied().zip(fds.by_ref()).collect();
    let control_fd = fds
        .next()
        .ok_or_else(|| fail("no control socket came".into()))?;
    let mut listeners = Vec::new();
    for wanted in listen {
        let at = offered
            .iter()
            .position(|(addr, _)| same_listener(wanted, addr))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--listen {wanted}: the running proxy does not listen on it (it listens on {}); start the new one with the same --listen addresses",
                    show(&offer.listen)
                ))
            })?;
        let (_, fd) = offered.remove(at);
        let listener = std::net::TcpListener::from(fd);
        listener
            .set_nonblocking(true)
            .map_err(|e| fail(format!("a listener could not be set up: {e}")))?;
        listeners.push(listener);
    }
    if !offered.is_empty() {
        let extra: Vec<SocketAddr> = offered.iter().map(|(a, _)| *a).collect();
        return Err(Error::Invalid(format!(
            "the running proxy also listens on {}, which the new one's --listen does not name; start the new one with the same --listen addresses ({})",
            show(&extra),
            show(&offer.listen)
        )));
    }
    let control_listener = std::os::unix::net::UnixListener::from(control_fd);
    control_listener
        .set_nonblocking(true)
        .map_err(|e| fail(format!("the control socket could not be set up: {e}")))?;
    Ok(Taken {
        offer,
        listen: listeners,
        control: control_listener,
        stream,
    })
}

/// Tells the old process that this one accepts now, and waits for it to stop accepting.
/// Changes are taken from then on.
pub(crate) async fn commit(
    shared: &Shared,
    stream: UnixStream,
    control: &Path,
) -> Result<(), Error> {
    let fail = |message: String| Error::TakeOver {
        path: control.to_path_buf(),
        message,
    };
    write_all(&stream, b"A").await.map_err(&fail)?;
    match tokio::time::timeout(STEP_TIMEOUT, read_byte(&stream)).await {
        Ok(Ok(b'C')) => {
            shared.handover.thaw();
            Ok(())
        }
        Ok(Ok(other)) => Err(fail(format!(
            "the running proxy answered {other:?} instead of letting go"
        ))),
        Ok(Err(e)) => Err(fail(format!("the running proxy gave up the handover: {e}"))),
        Err(_) => Err(fail(format!(
            "the running proxy did not let go of its sockets within {}s",
            STEP_TIMEOUT.as_secs()
        ))),
    }
}

/// Whether a `--listen` address names an offered listener: the same address, or the same IP
/// with port 0 (any port).
fn same_listener(wanted: &SocketAddr, offered: &SocketAddr) -> bool {
    wanted == offered || (wanted.port() == 0 && wanted.ip() == offered.ip())
}

fn show(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn refusal(status: StatusCode, error: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&ErrorAnswer { error }).unwrap_or_default();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_address_matches_the_same_address_or_any_port_of_its_ip() {
        let offered: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(same_listener(&offered, &offered));
        assert!(same_listener(&"127.0.0.1:0".parse().unwrap(), &offered));
        assert!(!same_listener(&"127.0.0.1:8081".parse().unwrap(), &offered));
        assert!(!same_listener(&"0.0.0.0:0".parse().unwrap(), &offered));
    }
}
