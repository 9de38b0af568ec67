//! [`ControlClient`]: the control API from another process, over the Unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use super::api::{
    CutAnswer, CutRequest, DrainWait, ErrorAnswer, Maintenance, ModeAnswer, SetPreview, SetSplit,
    SetTarget,
};
use crate::error::Error;
use crate::exchange::{exchange, Failed};
use crate::proxy::{Drain, PreviewAnswer, SplitAnswer, Status, Switched};

/// Largest answer read from the proxy.
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// How long to wait before sending a change again that a handover refused.
const HANDOVER_RETRY: Duration = Duration::from_millis(50);

/// A client of a proxy's control socket. Each call opens its own connection and has a timeout.
///
/// ```no_run
/// # async fn demo() -> Result<(), blue_green_proxy::Error> {
/// use blue_green_proxy::ControlClient;
///
/// let control = ControlClient::new("/run/blue-green/proxy.sock");
/// let status = control.status().await?;
/// println!("{:?}: {} apps", status.mode, status.apps.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ControlClient {
    path: PathBuf,
    timeout: Duration,
}

impl ControlClient {
    /// A client of the socket at `path`, with a timeout of 5 seconds per call.
    pub fn new(path: impl Into<PathBuf>) -> ControlClient {
        ControlClient {
            path: path.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The same client with another timeout per call (a drain wait adds its own wait to it).
    pub fn with_timeout(mut self, timeout: Duration) -> ControlClient {
        self.timeout = timeout;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The proxy's mode, apps and counters.
    pub async fn status(&self) -> Result<Status, Error> {
        self.call(Method::GET, "/v1/status", None::<&()>, self.timeout)
            .await
    }

    /// Sets an app's target, compare-and-set (see [`SetTarget::expect`]).
    pub async fn set_target(&self, set: &SetTarget) -> Result<Switched, Error> {
        self.call(Method::PUT, "/v1/target", Some(set), self.timeout)
            .await
    }

    /// Splits an app's new clients between its target and another, compare-and-set (see
    /// [`SetSplit`]).
    pub async fn set_split(&self, set: &SetSplit) -> Result<SplitAnswer, Error> {
        self.call(Method::PUT, "/v1/split", Some(set), self.timeout)
            .await
    }

    /// Sets or ends an app's preview (see [`SetPreview`]).
    pub async fn set_preview(&self, set: &SetPreview) -> Result<PreviewAnswer, Error> {
        self.call(Method::PUT, "/v1/preview", Some(set), self.timeout)
            .await
    }

    /// Holds new requests until [`ControlClient::resume`].
    pub async fn pause(&self) -> Result<ModeAnswer, Error> {
        self.call(Method::POST, "/v1/pause", None::<&()>, self.timeout)
            .await
    }

    /// Serves again, releasing held requests in order.
    pub async fn resume(&self) -> Result<ModeAnswer, Error> {
        self.call(Method::POST, "/v1/resume", None::<&()>, self.timeout)
            .await
    }

    /// Turns maintenance (the `503` page for every request) on or off.
    pub async fn maintenance(&self, on: bool) -> Result<ModeAnswer, Error> {
        self.call(
            Method::POST,
            "/v1/maintenance",
            Some(&Maintenance { on }),
            self.timeout,
        )
        .await
    }

    /// Waits until nothing is in flight to `endpoint`, or `within` has passed.
    pub async fn wait_drained(&self, endpoint: &str, within: Duration) -> Result<Drain, Error> {
        let wait = DrainWait {
            endpoint: endpoint.to_string(),
            within_ms: u64::try_from(within.as_millis()).unwrap_or(u64::MAX),
        };
        self.call(
            Method::POST,
            "/v1/drain",
            Some(&wait),
            self.timeout + within,
        )
        .await
    }

    /// Closes what is open to `endpoint`; says how many it closed.
    pub async fn cut(&self, endpoint: &str) -> Result<CutAnswer, Error> {
        let cut = CutRequest {
            endpoint: endpoint.to_string(),
        };
        // A cut waits (a few seconds at most) for what it closed to be gone.
        self.call(
            Method::POST,
            "/v1/cut",
            Some(&cut),
            self.timeout + Duration::from_secs(5),
        )
        .await
    }

    /// One request, within `timeout`. A change refused with `503` (the proxy is handing its
    /// sockets over to a new process, a matter of milliseconds) is sent again until the new
    /// process takes it or the time is up.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, Error> {
        let what = format!("{method} {path}");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut refused = None;
        loop {
            let attempt =
                tokio::time::timeout_at(deadline, self.exchange(method.clone(), path, body, &what))
                    .await;
            match attempt {
                Ok(Err(e @ Error::ControlRefused { status: 503, .. }))
                    if tokio::time::Instant::now() + HANDOVER_RETRY < deadline =>
                {
                    refused = Some(e);
                    tokio::time::sleep(HANDOVER_RETRY).await;
                }
                Ok(answer) => return answer,
                // Still refused at the deadline: say why, rather than "no answer".
                Err(_) => {
                    return Err(refused.unwrap_or(Error::ControlTimeout {
                        path: self.path.clone(),
                        what,
                        secs: timeout.as_secs_f64(),
                    }))
                }
            }
        }
    }

    async fn exchange<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        what: &str,
    ) -> Result<T, Error> {
        let protocol = |message: String| Error::ControlProtocol {
            what: what.to_string(),
            message,
        };
        let unreachable = |source| Error::ControlUnreachable {
            path: self.path.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.path).await.map_err(unreachable)?;
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| protocol(e.to_string()))?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, HeaderValue::from_static("blue-green-proxy"))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(bytes))
            .map_err(|e| protocol(e.to_string()))?;
        let (status, bytes) = exchange(TokioIo::new(stream), req, MAX_ANSWER)
            .await
            .map_err(|e| match e {
                Failed::Handshake(e) => unreachable(std::io::Error::other(e)),
                Failed::Send(e) => protocol(format!("the connection failed: {e}")),
                Failed::Body(e) => protocol(format!("the answer could not be read: {e}")),
            })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorAnswer>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::ControlRefused {
                what: what.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| protocol(format!("not the expected JSON: {e}")))
    }
}
