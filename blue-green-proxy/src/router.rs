//! The [`Router`] implementations: [`ProxyRouter`] drives a proxy over its control socket,
//! [`EmbeddedRouter`] drives one running in the same process.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use blue_green_core::{ComponentError, Endpoint, Instance, Responses, RouteReceipt, Router, Split};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::control::{ControlClient, SetPreview, SetSplit, SetTarget};
use crate::error::Error;
use crate::exchange::{exchange, Failed};
use crate::proxy::{Expect, ProxyHandle, TargetChange};
use crate::routes::AppInfo;
use crate::target::TargetStats;

/// A request through the proxy that [`Router::verify`] sends after a switch: it must be
/// answered by the new instance.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The URL on the proxy's listener, `http://127.0.0.1:8080/health`.
    pub url: Uri,
    /// The `Host` header to send; `None` sends the app's first host name, or the URL's host
    /// for the default app.
    pub host: Option<String>,
    /// Text the answer's body must contain; `{color}` and `{release}` are filled in.
    /// `None` only asks for a `2xx` answer.
    pub expect_body: Option<String>,
    /// How long to keep trying.
    pub timeout: Duration,
}

impl VerifyRequest {
    /// A verify request to `url` (plain `http://host:port/path`) that expects `{color}` in the
    /// body, for up to 5 seconds.
    pub fn new(url: &str) -> Result<VerifyRequest, Error> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::Invalid(format!("`{url}` is not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Error::Invalid(format!(
                "`{url}` must be a plain http:// URL with a host and port, on the proxy's listener"
            )));
        }
        Ok(VerifyRequest {
            url: uri,
            host: None,
            expect_body: Some("{color}".to_string()),
            timeout: Duration::from_secs(5),
        })
    }

    /// One attempt: `Ok(())` when the answer is `2xx` and carries the expected text.
    async fn once(&self, instance: &Instance, app_host: Option<&str>) -> Result<(), String> {
        let authority = self.url.authority().map(|a| a.as_str()).unwrap_or_default();
        let port = self.url.port_u16().unwrap_or(80);
        let host = self.url.host().unwrap_or_default().trim_matches(['[', ']']);
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("could not connect to {authority}: {e}"))?;
        let path = self.url.path_and_query().map_or("/", |p| p.as_str());
        let host_header = self.host.as_deref().or(app_host).unwrap_or(authority);
        let req = Request::get(path)
            .header(
                HOST,
                HeaderValue::from_str(host_header).map_err(|e| e.to_string())?,
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let (status, body) = exchange(TokioIo::new(stream), req, 64 * 1024)
            .await
            .map_err(|e| match e {
                Failed::Handshake(e) | Failed::Send(e) => e.to_string(),
                Failed::Body(e) => e,
            })?;
        let body = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(format!("answered {status}: {}", body.trim()));
        }
        if let Some(expect) = &self.expect_body {
            let expect = expect
                .replace("{color}", instance.color.as_str())
                .replace("{release}", &instance.release);
            if !body.contains(&expect) {
                return Err(format!("answered without `{expect}`: {}", body.trim()));
            }
        }
        Ok(())
    }

    /// Tries until the answer is right or the timeout passes. `app_host` is the `Host` sent
    /// when [`VerifyRequest::host`] is not set: the app's first host name, so the request
    /// picks the app being switched.
    async fn check(
        &self,
        instance: &Instance,
        app_host: Option<&str>,
    ) -> Result<(), ComponentError> {
        let began = Instant::now();
        loop {
            match self.once(instance, app_host).await {
                Ok(()) => return Ok(()),
                Err(why) if began.elapsed() >= self.timeout => {
                    return Err(ComponentError::failed(format!(
                        "{} through the proxy did not reach the new {} instance within {:.1}s: {why}",
                        self.url,
                        instance.color,
                        self.timeout.as_secs_f64()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// What a router remembers between calls: the target it last saw, which its next switch
/// expects (compare-and-set), so a change made by someone else in between is refused.
#[derive(Debug, Default)]
struct LastSeen(Mutex<Option<Option<Endpoint>>>);

impl LastSeen {
    fn get(&self) -> Option<Option<Endpoint>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, seen: Option<Option<Endpoint>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = seen;
    }

    /// Notes the outcome of a change that leaves `target` as the app's target: remembered when
    /// it went through, forgotten on error (read again next time rather than trust it).
    fn changed<T>(
        &self,
        outcome: Result<T, Error>,
        target: &Endpoint,
    ) -> Result<RouteReceipt, ComponentError> {
        match outcome {
            Ok(_) => {
                self.set(Some(Some(target.clone())));
                Ok(RouteReceipt::new())
            }
            Err(e) => {
                self.set(None);
                Err(component(e))
            }
        }
    }
}

fn expect_of(seen: &Option<Endpoint>) -> Expect {
    match seen {
        Some(e) => Expect::Target(e.clone()),
        None => Expect::NoTarget,
    }
}

/// Maps a proxy error to what the engine needs to pick an exit class.
/// The one verification of both routers: the proxy's target for `app` (`now`) is `instance`,
/// and, with a verify request, a request through the proxy (with the app's first host) answers
/// for it.
async fn verify_routed(
    app: &str,
    now: Option<Endpoint>,
    instance: &Instance,
    verify: Option<&VerifyRequest>,
    hosts: Option<&[String]>,
) -> Result<(), ComponentError> {
    if now.as_ref() != Some(&instance.endpoint) {
        return Err(ComponentError::failed(format!(
            "the proxy routes app {app} to {} instead of {}",
            now.map_or("nothing".to_string(), |e| e.to_string()),
            instance.endpoint
        )));
    }
    match verify {
        Some(v) => {
            let host = hosts.and_then(|h| h.first()).map(String::as_str);
            v.check(instance, host).await
        }
        None => Ok(()),
    }
}

/// An endpoint the proxy reported for `app`, parsed.
fn reported(app: &str, what: &str, text: &str) -> Result<Endpoint, ComponentError> {
    text.parse::<Endpoint>().map_err(|e| {
        ComponentError::failed(format!(
            "the proxy reports {what} `{text}` for app {app} that is not an endpoint: {e}"
        ))
    })
}

/// The split an app's route holds, as the status reports it.
fn split_of(info: Option<&AppInfo>) -> Result<Option<Split>, ComponentError> {
    let Some(app) = info else { return Ok(None) };
    let (Some(current), Some(split)) = (&app.target, &app.split) else {
        return Ok(None);
    };
    let current = reported(&app.app, "a target", current)?;
    let next = reported(&app.app, "a split's next target", &split.next)?;
    Split::new(current, next, split.percent)
        .map(Some)
        .map_err(|e| {
            ComponentError::failed(format!(
                "the proxy reports a split for app {} that is not one: {}",
                app.app, e.message
            ))
        })
}

/// The responses counted for `endpoint` (none yet when the proxy never routed there).
fn responses_of(targets: &[TargetStats], endpoint: &Endpoint) -> Responses {
    let key = endpoint.to_string();
    targets
        .iter()
        .find(|t| t.endpoint == key)
        .map_or(Responses::default(), |t| Responses {
            total: t.responses,
            errors: t.error_responses,
        })
}

fn component(e: Error) -> ComponentError {
    let message = e.to_string();
    match e {
        Error::ControlUnreachable { .. } => ComponentError::unreachable(message),
        Error::ControlTimeout { .. } => ComponentError::timeout(message),
        Error::Invalid(_) => ComponentError::invalid(message),
        Error::ControlRefused { status: 400, .. } => ComponentError::invalid(message),
        _ => ComponentError::failed(message),
    }
}

/// A [`Router`] for one app of a proxy run by another process (`blue-green proxy run`), over
/// its control socket.
///
/// ```no_run
/// use blue_green_proxy::{ProxyRouter, VerifyRequest};
///
/// let router = ProxyRouter::new("/run/blue-green/proxy.sock", "web")
///     .with_hosts(vec!["web.example.com".into()])
///     .with_verify(VerifyRequest::new("http://127.0.0.1:8080/health").unwrap());
/// ```
#[derive(Debug)]
pub struct ProxyRouter {
    control: ControlClient,
    app: String,
    hosts: Option<Vec<String>>,
    preview_host: Option<String>,
    verify: Option<VerifyRequest>,
    seen: LastSeen,
}

impl ProxyRouter {
    /// A router for `app` through the control socket at `socket`.
    pub fn new(socket: impl Into<std::path::PathBuf>, app: impl Into<String>) -> ProxyRouter {
        ProxyRouter {
            control: ControlClient::new(socket),
            app: app.into(),
            hosts: None,
            preview_host: None,
            verify: None,
            seen: LastSeen::default(),
        }
    }

    /// The same router, which makes a staged color reachable at `host` ([`Router::preview`]).
    /// The proxy checks it like the app's hosts and refuses a name that is not one (a config
    /// reader checks it first with [`host_name`](crate::host_name)).
    pub fn with_preview_host(mut self, host: impl Into<String>) -> ProxyRouter {
        self.preview_host = Some(host.into());
        self
    }

    /// The same router, which gives the app these host names with every switch (none: the
    /// app is the proxy's default app).
    pub fn with_hosts(mut self, hosts: Vec<String>) -> ProxyRouter {
        self.hosts = Some(hosts);
        self
    }

    /// The same router, which also checks a request through the proxy after each switch.
    pub fn with_verify(mut self, verify: VerifyRequest) -> ProxyRouter {
        self.verify = Some(verify);
        self
    }

    /// The control client it uses.
    pub fn control(&self) -> &ControlClient {
        &self.control
    }
}

#[async_trait]
impl Router for ProxyRouter {
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
        let status = self.control.status().await.map_err(component)?;
        let target = match status.apps.iter().find(|a| a.app == self.app) {
            Some(app) => match &app.target {
                Some(t) => Some(reported(&self.app, "a target", t)?),
                None => None,
            },
            None => None,
        };
        self.seen.set(Some(target.clone()));
        Ok(target)
    }

    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        let seen = match self.seen.get() {
            Some(seen) => seen,
            None => self.target().await?,
        };
        let set = SetTarget {
            app: self.app.clone(),
            target: endpoint.to_string(),
            expect: Some(seen.as_ref().map(|e| e.to_string())),
            hosts: self.hosts.clone(),
        };
        self.seen
            .changed(self.control.set_target(&set).await, endpoint)
    }

    fn can_split(&self) -> bool {
        true
    }

    /// Compare-and-set on the split's current target: the proxy refuses the split (and keeps
    /// what it has) when the app's target is another.
    async fn split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
        let set = SetSplit {
            app: self.app.clone(),
            current: split.current().to_string(),
            next: split.next().to_string(),
            percent: split.percent(),
        };
        self.seen
            .changed(self.control.set_split(&set).await, split.current())
    }

    async fn current_split(&self) -> Result<Option<Split>, ComponentError> {
        let status = self.control.status().await.map_err(component)?;
        split_of(status.apps.iter().find(|a| a.app == self.app))
    }

    async fn preview(&self, endpoint: Option<&Endpoint>) -> Result<Option<String>, ComponentError> {
        let Some(host) = &self.preview_host else {
            return Ok(None);
        };
        let set = SetPreview {
            app: self.app.clone(),
            host: endpoint.map(|_| host.clone()),
            target: endpoint.map(Endpoint::to_string),
        };
        let answer = self.control.set_preview(&set).await.map_err(component)?;
        Ok(answer.url)
    }

    async fn responses(&self, endpoint: &Endpoint) -> Result<Option<Responses>, ComponentError> {
        let status = self.control.status().await.map_err(component)?;
        Ok(Some(responses_of(&status.targets, endpoint)))
    }

    async fn verify(
        &self,
        instance: &Instance,
        _receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        let now = self.target().await?;
        verify_routed(
            &self.app,
            now,
            instance,
            self.verify.as_ref(),
            self.hosts.as_deref(),
        )
        .await
    }

    async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        let status = self.control.status().await.map_err(component)?;
        let key = endpoint.to_string();
        Ok(Some(
            status
                .targets
                .iter()
                .find(|t| t.endpoint == key)
                .map_or(0, |t| t.in_flight),
        ))
    }

    /// Answers the moment nothing is left in flight to `endpoint` (the proxy is woken, it does
    /// not poll), or at `within` with what is left.
    async fn wait_idle(
        &self,
        endpoint: &Endpoint,
        within: Duration,
    ) -> Result<Option<u64>, ComponentError> {
        let drain = self
            .control
            .wait_drained(&endpoint.to_string(), within)
            .await
            .map_err(component)?;
        Ok(Some(drain.left))
    }

    async fn cut(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        let answer = self
            .control
            .cut(&endpoint.to_string())
            .await
            .map_err(component)?;
        Ok(Some(answer.cut))
    }
}

/// A [`Router`] for one app of a proxy running in the same process: no socket, no
/// serialisation. Made by [`Proxy::router`](crate::Proxy::router).
#[derive(Debug)]
pub struct EmbeddedRouter {
    handle: ProxyHandle,
    app: String,
    hosts: Option<Vec<String>>,
    preview_host: Option<String>,
    verify: Option<VerifyRequest>,
    seen: LastSeen,
}

impl EmbeddedRouter {
    pub(crate) fn new(handle: ProxyHandle, app: &str) -> EmbeddedRouter {
        EmbeddedRouter {
            handle,
            app: app.to_string(),
            hosts: None,
            preview_host: None,
            verify: None,
            seen: LastSeen::default(),
        }
    }

    /// The same router, which makes a staged color reachable at `host` ([`Router::preview`]);
    /// the proxy refuses a name that is not a host name.
    pub fn with_preview_host(mut self, host: impl Into<String>) -> EmbeddedRouter {
        self.preview_host = Some(host.into());
        self
    }

    /// The same router, which gives the app these host names with every switch.
    pub fn with_hosts(mut self, hosts: Vec<String>) -> EmbeddedRouter {
        self.hosts = Some(hosts);
        self
    }

    /// The same router, which also checks a request through the proxy after each switch.
    pub fn with_verify(mut self, verify: VerifyRequest) -> EmbeddedRouter {
        self.verify = Some(verify);
        self
    }
}

#[async_trait]
impl Router for EmbeddedRouter {
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
        let target = self.handle.target(&self.app);
        self.seen.set(Some(target.clone()));
        Ok(target)
    }

    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        let seen = match self.seen.get() {
            Some(seen) => seen,
            None => self.target().await?,
        };
        let change = TargetChange {
            target: endpoint.clone(),
            expect: expect_of(&seen),
            hosts: self.hosts.clone(),
        };
        self.seen
            .changed(self.handle.set_target(&self.app, change).await, endpoint)
    }

    fn can_split(&self) -> bool {
        true
    }

    /// Compare-and-set on the split's current target, as [`ProxyRouter`] does.
    async fn split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
        self.seen.changed(
            self.handle.set_split(&self.app, split).await,
            split.current(),
        )
    }

    async fn current_split(&self) -> Result<Option<Split>, ComponentError> {
        Ok(self.handle.split(&self.app))
    }

    async fn preview(&self, endpoint: Option<&Endpoint>) -> Result<Option<String>, ComponentError> {
        let Some(host) = &self.preview_host else {
            return Ok(None);
        };
        let answer = self
            .handle
            .set_preview(&self.app, endpoint.map(|e| (host.as_str(), e)))
            .await
            .map_err(component)?;
        Ok(answer.url)
    }

    async fn responses(&self, endpoint: &Endpoint) -> Result<Option<Responses>, ComponentError> {
        Ok(Some(responses_of(&self.handle.status().targets, endpoint)))
    }

    async fn verify(
        &self,
        instance: &Instance,
        _receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        let now = self.handle.target(&self.app);
        verify_routed(
            &self.app,
            now,
            instance,
            self.verify.as_ref(),
            self.hosts.as_deref(),
        )
        .await
    }

    async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        Ok(Some(self.handle.in_flight(endpoint)))
    }

    /// Answers the moment nothing is left in flight to `endpoint`, or at `within`.
    async fn wait_idle(
        &self,
        endpoint: &Endpoint,
        within: Duration,
    ) -> Result<Option<u64>, ComponentError> {
        Ok(Some(self.handle.wait_drained(endpoint, within).await.left))
    }

    async fn cut(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        Ok(Some(self.handle.cut(endpoint).await))
    }
}
