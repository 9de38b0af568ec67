//! The control socket's server side: bind (mode 0600), refuse other users' peers, answer the
//! JSON API.

use std::convert::Infallible;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use blue_green_core::{Endpoint, Split};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::{
    CutAnswer, CutRequest, DrainWait, ErrorAnswer, Maintenance, ModeAnswer, SetPreview, SetSplit,
    SetTarget,
};
use crate::error::Error;
use crate::gate::Mode;
use crate::proxy::{Expect, ProxyHandle, TargetChange};

/// Largest request body taken on the control socket.
const MAX_BODY: usize = 64 * 1024;
/// Longest drain wait one request may ask for.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(3600);

/// Binds the control socket at `path`, readable and writable by its owner only. A stale socket
/// file (nothing answers) is replaced; a live one or another kind of file is an error.
pub(crate) async fn bind(path: &Path) -> Result<UnixListener, Error> {
    let fail = |message: String| Error::ControlSocket {
        path: path.to_path_buf(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("could not create its directory: {e}")))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(fail(
                    "another proxy is already listening on it; stop it or pick another path".into(),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("could not remove the stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(fail(
                "a file that is not a socket is in the way; remove it or pick another path".into(),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(format!("could not bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("could not make it private (mode 0600): {e}")))?;
    Ok(listener)
}

/// Answers the control API on `listener` until the proxy stops accepting (shut down, or handed
/// over to a new process); the connections open then are answered until `shutdown`, so a
/// drain wait under way when the proxy hands over still gets its answer.
pub(crate) async fn serve(
    handle: ProxyHandle,
    listener: UnixListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let accepting = handle.shared().handover.accepting.clone();
    let owner = rustix::process::geteuid().as_raw();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("control socket: accepting failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = accepting.cancelled() => return,
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let allowed = matches!(uid, Some(u) if u == owner || u == 0);
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let handle = handle.clone();
                async move {
                    let res = if allowed {
                        answer(&handle, req).await
                    } else {
                        tracing::warn!(
                            "control socket: refused a peer with uid {}",
                            uid.map_or("unknown".to_string(), |u| u.to_string())
                        );
                        refuse(
                            StatusCode::FORBIDDEN,
                            format!(
                                "only uid {owner} (the proxy's owner) or root may use this socket; the peer is uid {}",
                                uid.map_or("unknown".to_string(), |u| u.to_string())
                            ),
                        )
                        .answer()
                    };
                    Ok::<_, Infallible>(res)
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(allowed);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

type Answer = Response<Full<Bytes>>;

async fn answer(handle: &ProxyHandle, req: Request<Incoming>) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = match (&method, path.as_str()) {
        (&Method::GET, "/v1/status") => Ok(json(StatusCode::OK, &handle.status())),
        (&Method::PUT, "/v1/target") => match body::<SetTarget>(req).await {
            Ok(set) => set_target(handle, set).await,
            Err(e) => Err(e),
        },
        (&Method::PUT, "/v1/split") => match body::<SetSplit>(req).await {
            Ok(set) => set_split(handle, set).await,
            Err(e) => Err(e),
        },
        (&Method::PUT, "/v1/preview") => match body::<SetPreview>(req).await {
            Ok(set) => set_preview(handle, set).await,
            Err(e) => Err(e),
        },
        (&Method::POST, "/v1/pause") => set_mode(handle, Mode::Paused).await,
        (&Method::POST, "/v1/resume") => set_mode(handle, Mode::Serving).await,
        (&Method::POST, "/v1/maintenance") => match body::<Maintenance>(req).await {
            Ok(m) => {
                let mode = if m.on {
                    Mode::Maintenance
                } else {
                    Mode::Serving
                };
                set_mode(handle, mode).await
            }
            Err(e) => Err(e),
        },
        (&Method::POST, "/v1/drain") => match body::<DrainWait>(req).await {
            Ok(wait) => match endpoint(&wait.endpoint) {
                Ok(e) => {
                    let within = Duration::from_millis(wait.within_ms).min(MAX_DRAIN_WAIT);
                    Ok(json(StatusCode::OK, &handle.wait_drained(&e, within).await))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (&Method::POST, "/v1/cut") => match body::<CutRequest>(req).await {
            Ok(cut) => match endpoint(&cut.endpoint) {
                Ok(e) => Ok(json(
                    StatusCode::OK,
                    &CutAnswer {
                        endpoint: e.to_string(),
                        cut: handle.cut(&e).await,
                    },
                )),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (&Method::POST, "/v1/handover") => Ok(handover(handle, req).await),
        (
            _,
            "/v1/status" | "/v1/target" | "/v1/split" | "/v1/preview" | "/v1/pause" | "/v1/resume"
            | "/v1/maintenance" | "/v1/drain" | "/v1/cut" | "/v1/handover",
        ) => Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no such control request: {method} {path}"),
        )),
    };
    result.unwrap_or_else(Refused::answer)
}

/// `POST /v1/handover`: a new `blue-green proxy run --take-over` takes the sockets over (see
/// the `handover` module).
async fn handover(handle: &ProxyHandle, req: Request<Incoming>) -> Answer {
    crate::handover::answer(handle.shared(), req).await
}

async fn set_target(handle: &ProxyHandle, set: SetTarget) -> Result<Answer, Refused> {
    let target = endpoint(&set.target)?;
    let expect = match set.expect {
        None => Expect::Anything,
        Some(None) => Expect::NoTarget,
        Some(Some(e)) => Expect::Target(endpoint(&e)?),
    };
    let change = TargetChange {
        target,
        expect,
        hosts: set.hosts,
    };
    handle
        .set_target(&set.app, change)
        .await
        .map(|switched| json(StatusCode::OK, &switched))
        .map_err(refused)
}

async fn set_split(handle: &ProxyHandle, set: SetSplit) -> Result<Answer, Refused> {
    let split = Split::new(endpoint(&set.current)?, endpoint(&set.next)?, set.percent)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.message))?;
    handle
        .set_split(&set.app, &split)
        .await
        .map(|answer| json(StatusCode::OK, &answer))
        .map_err(refused)
}

async fn set_preview(handle: &ProxyHandle, set: SetPreview) -> Result<Answer, Refused> {
    let target = set.target.as_deref().map(endpoint).transpose()?;
    let preview = match (&set.host, &target) {
        (Some(host), Some(target)) => Some((host.as_str(), target)),
        (None, Some(_)) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "a preview needs `host`, the host name it is reachable at".into(),
            ))
        }
        (_, None) => None,
    };
    handle
        .set_preview(&set.app, preview)
        .await
        .map(|answer| json(StatusCode::OK, &answer))
        .map_err(refused)
}

/// A change the proxy refused, as the control API answers it.
fn refused(e: Error) -> Refused {
    let status = match e {
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        // A handover refuses changes for a moment; the client retries.
        Error::HandingOver => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, e.to_string())
}

async fn set_mode(handle: &ProxyHandle, mode: Mode) -> Result<Answer, Refused> {
    handle
        .set_mode(mode)
        .await
        .map(|()| json(StatusCode::OK, &ModeAnswer { mode }))
        .map_err(refused)
}

fn endpoint(text: &str) -> Result<Endpoint, Refused> {
    Endpoint::from_str(text).map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Refused> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read (at most {MAX_BODY} bytes): {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("the request body is not what this request takes: {e}"),
        )
    })
}

fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"could not write the answer: {e}\"}}").into_bytes()
    });
    let mut res = Response::new(Full::new(Bytes::from(bytes)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A refused control request: its status and what was wrong.
struct Refused(StatusCode, String);

impl Refused {
    fn answer(self) -> Answer {
        json(self.0, &ErrorAnswer { error: self.1 })
    }
}

fn refuse(status: StatusCode, error: String) -> Refused {
    Refused(status, error)
}
