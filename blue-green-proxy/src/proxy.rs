//! [`Proxy`]: a running proxy, and [`ProxyHandle`], the in-process way to drive it.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use blue_green_core::{Endpoint, Split};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ProxyConfig;
use crate::control;
use crate::error::Error;
use crate::gate::{Gate, Mode};
use crate::handover::{self, Handover};
use crate::router::EmbeddedRouter;
use crate::routes::{AppInfo, RouteSpec, RouteTable, Routes};
use crate::serve;
use crate::state::{self, SavedState};
use crate::target::{TargetStats, Targets};

/// How long a cut waits for what it closed to be gone before it reports.
const CUT_WAIT: Duration = Duration::from_secs(5);

/// What the proxy shares between its listeners, its control socket and its handles.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) routes: Routes,
    pub(crate) targets: Targets,
    pub(crate) gate: Gate,
    pub(crate) server: serve::Builders,
    /// The addresses the listeners got (a port 0 picked), once bound: a preview's address
    /// names the first one's port.
    pub(crate) listening: OnceLock<Vec<SocketAddr>>,
    /// Serialises changes (target sets, mode changes) with their state-file writes.
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// Handing the sockets over to a new process, and retiring after it.
    pub(crate) handover: Handover,
}

/// What a compare-and-set of an app's target expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Set it whatever it is now.
    Anything,
    /// Set it only if the app has no target yet.
    NoTarget,
    /// Set it only if the app's target is this endpoint now.
    Target(Endpoint),
}

/// An app's target change, for [`ProxyHandle::set_target`].
#[derive(Debug, Clone)]
pub struct TargetChange {
    /// Where the app's new requests go from now on.
    pub target: Endpoint,
    /// What the app's target must be for the change to happen.
    pub expect: Expect,
    /// The app's host names; `None` keeps the ones it has (a new app without hosts is the
    /// default app).
    pub hosts: Option<Vec<String>>,
}

/// The answer to a target change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switched {
    /// The app.
    pub app: String,
    /// Its target before, if it had one.
    pub previous: Option<String>,
    /// Its target now.
    pub target: String,
}

/// The answer to a split change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitAnswer {
    /// The app.
    pub app: String,
    /// Its target, which keeps `100 - percent` of new clients.
    pub current: String,
    /// The target that gets `percent` of new clients.
    pub next: String,
    /// The share of new clients sent to `next`.
    pub percent: u8,
}

/// The answer to a preview change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewAnswer {
    /// The app.
    pub app: String,
    /// The preview host name, `None` once the preview ended.
    pub host: Option<String>,
    /// The staged target, `None` once the preview ended.
    pub target: Option<String>,
    /// Where the preview is reachable: `http://HOST` with the port of the proxy's first
    /// listener unless it is 80.
    pub url: Option<String>,
}

/// The proxy's status: its mode, apps and every target's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Serving, paused or maintenance.
    pub mode: Mode,
    /// Requests held by a pause now.
    pub queued: usize,
    /// The apps, by name.
    pub apps: Vec<AppInfo>,
    /// Every target the proxy has routed to since it started, by endpoint.
    pub targets: Vec<TargetStats>,
}

/// The answer to a drain wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// The endpoint.
    pub endpoint: String,
    /// Requests and upgraded connections still open when the wait ended (0: drained).
    pub left: u64,
    /// How long the wait took, in milliseconds.
    pub waited_ms: u64,
}

impl Shared {
    /// The current state, as the state file keeps it.
    pub(crate) fn saved(&self, table: &RouteTable, mode: Mode) -> SavedState {
        SavedState::new(mode, table.apps().map(|a| a.info()).collect())
    }

    /// Writes a change to the state file before it takes effect. Every change goes through
    /// here, so this is also where a change is refused during a handover.
    async fn persist(&self, saved: SavedState) -> Result<(), Error> {
        self.handover.check_open()?;
        let Some(path) = self.config.state_file.clone() else {
            return Ok(());
        };
        let superseded = tokio::task::spawn_blocking(move || state::save(&path, &saved))
            .await
            .map_err(|e| Error::StateIo {
                path: self.config.state_file.clone().unwrap_or_default(),
                action: "writing",
                source: std::io::Error::other(e),
            })??;
        // The old file is released while the change is answered, not before.
        tokio::task::spawn_blocking(move || drop(superseded));
        Ok(())
    }
}

/// The in-process way to drive a proxy: what the control socket offers, without a socket.
/// Cheap to clone.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle").finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// Sends `app`'s new requests to `change.target`, if its target is what `change.expect`
    /// says (compare-and-set). Requests already bound to the previous target finish there.
    /// The state file is written before the switch: on any error nothing changed.
    pub async fn set_target(&self, app: &str, change: TargetChange) -> Result<Switched, Error> {
        let s = &self.shared;
        let _serial = s.changes.lock().await;
        let table = s.routes.snapshot();
        let current = table.app(app);
        let current_target = current.and_then(|a| a.target.as_ref()).map(|t| &t.endpoint);
        let matches = match &change.expect {
            Expect::Anything => true,
            Expect::NoTarget => current_target.is_none(),
            Expect::Target(e) => current_target == Some(e),
        };
        if !matches {
            return Err(Error::Conflict {
                app: app.to_string(),
                expected: match &change.expect {
                    Expect::Target(e) => Some(e.to_string()),
                    _ => None,
                },
                current: current_target.map(|e| e.to_string()),
            });
        }
        let hosts = change
            .hosts
            .or_else(|| current.map(|a| a.hosts.clone()))
            .unwrap_or_default();
        let target = s.targets.get_or_add(&change.target)?;
        // A switch ends any split (its cookies no longer matter) and keeps a preview.
        let preview = current
            .and_then(|a| a.preview.as_ref())
            .map(|p| (p.host.clone(), p.target.clone()));
        let next = table.with_route(
            app,
            RouteSpec {
                hosts,
                target: Some(target),
                split: None,
                preview,
            },
        )?;
        s.persist(s.saved(&next, s.gate.mode())).await?;
        let previous = current_target.map(|e| e.to_string());
        s.routes.replace(next);
        tracing::info!(
            "app {app}: target {} -> {}",
            previous.as_deref().unwrap_or("none"),
            change.target
        );
        Ok(Switched {
            app: app.to_string(),
            previous,
            target: change.target.to_string(),
        })
    }

    /// Sends `split.percent()` of `app`'s new clients to `split.next()` and the rest to
    /// `split.current()`, replacing any split in place; a client keeps its side by a cookie
    /// (`bg-<app>`) while the split lasts. Compare-and-set: the app's target must be
    /// `split.current()` (else [`Error::Conflict`]). Written to the state file first, like a
    /// switch; [`ProxyHandle::set_target`] ends the split.
    pub async fn set_split(&self, app: &str, split: &Split) -> Result<SplitAnswer, Error> {
        let s = &self.shared;
        let _serial = s.changes.lock().await;
        let table = s.routes.snapshot();
        let target_of = |r: &crate::routes::AppRoute| r.target.as_ref().map(|t| t.endpoint.clone());
        let route = match table.app(app) {
            Some(r) if target_of(r).as_ref() == Some(split.current()) => r,
            other => {
                return Err(Error::Conflict {
                    app: app.to_string(),
                    expected: Some(split.current().to_string()),
                    current: other.and_then(|r| target_of(r)).map(|e| e.to_string()),
                })
            }
        };
        let next_target = s.targets.get_or_add(split.next())?;
        let next = table.with_route(
            app,
            RouteSpec {
                split: Some((next_target, split.percent())),
                ..RouteSpec::of(route)
            },
        )?;
        s.persist(s.saved(&next, s.gate.mode())).await?;
        s.routes.replace(next);
        tracing::info!(
            "app {app}: {}% of new clients to {}, the rest to {}",
            split.percent(),
            split.next(),
            split.current()
        );
        Ok(SplitAnswer {
            app: app.to_string(),
            current: split.current().to_string(),
            next: split.next().to_string(),
            percent: split.percent(),
        })
    }

    /// `app`'s split in place, if any.
    pub fn split(&self, app: &str) -> Option<Split> {
        let table = self.shared.routes.snapshot();
        let route = table.app(app)?;
        let (current, split) = (route.target.as_ref()?, route.split.as_ref()?);
        Split::new(
            current.endpoint.clone(),
            split.next.endpoint.clone(),
            split.percent,
        )
        .ok()
    }

    /// Makes `target` reachable at the preview host name `host` beside `app`'s live target
    /// (a staged color), or, with `None`, ends `app`'s preview. The app must have a route
    /// already; the host must be a host name no app has. Kept in the state file.
    pub async fn set_preview(
        &self,
        app: &str,
        preview: Option<(&str, &Endpoint)>,
    ) -> Result<PreviewAnswer, Error> {
        let s = &self.shared;
        let _serial = s.changes.lock().await;
        let table = s.routes.snapshot();
        let Some(route) = table.app(app) else {
            return Err(Error::Invalid(format!(
                "app {app} has no route in the proxy yet, so it has no preview; deploy it once first"
            )));
        };
        let preview = match preview {
            Some((host, endpoint)) => Some((host.to_string(), s.targets.get_or_add(endpoint)?)),
            None => None,
        };
        let next = table.with_route(
            app,
            RouteSpec {
                preview,
                ..RouteSpec::of(route)
            },
        )?;
        s.persist(s.saved(&next, s.gate.mode())).await?;
        s.routes.replace(next);
        let info = s.routes.snapshot().app(app).and_then(|a| a.preview.clone());
        match &info {
            Some(p) => tracing::info!("app {app}: preview {} -> {}", p.host, p.target.endpoint),
            None => tracing::info!("app {app}: no preview"),
        }
        Ok(PreviewAnswer {
            app: app.to_string(),
            url: info.as_ref().map(|p| self.preview_url(&p.host)),
            host: info.as_ref().map(|p| p.host.clone()),
            target: info.map(|p| p.target.endpoint.to_string()),
        })
    }

    /// `http://HOST`, with the first listener's port unless it is 80.
    fn preview_url(&self, host: &str) -> String {
        let port = self
            .shared
            .listening
            .get()
            .and_then(|a| a.first())
            .map(SocketAddr::port)
            .or_else(|| self.shared.config.listen.first().map(SocketAddr::port));
        match port {
            Some(80) | None => format!("http://{host}"),
            Some(port) => format!("http://{host}:{port}"),
        }
    }

    /// Where `app`'s new requests go now.
    pub fn target(&self, app: &str) -> Option<Endpoint> {
        self.shared
            .routes
            .snapshot()
            .app(app)
            .and_then(|a| a.target.as_ref())
            .map(|t| t.endpoint.clone())
    }

    /// The mode, the apps and every target's counters.
    pub fn status(&self) -> Status {
        let s = &self.shared;
        Status {
            mode: s.gate.mode(),
            queued: s.gate.queued(),
            apps: s.routes.snapshot().apps().map(|a| a.info()).collect(),
            targets: s.targets.stats(),
        }
    }

    /// Requests and upgraded connections open to `endpoint` now (0 for an endpoint never
    /// routed to).
    pub fn in_flight(&self, endpoint: &Endpoint) -> u64 {
        self.shared
            .targets
            .get(endpoint)
            .map_or(0, |t| t.in_flight())
    }

    /// Waits until nothing is open to `endpoint`, or `within` has passed. Returns the moment
    /// the last request or upgraded connection ends (it is woken, not polled).
    pub async fn wait_drained(&self, endpoint: &Endpoint, within: Duration) -> Drain {
        let began = Instant::now();
        let left = match self.shared.targets.get(endpoint) {
            Some(t) => t.wait_idle(within).await,
            None => 0,
        };
        Drain {
            endpoint: endpoint.to_string(),
            left,
            waited_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Closes every request and upgraded connection open to `endpoint` now and returns how many
    /// it closed. Meant for the drain deadline, after the switch away from `endpoint`.
    pub async fn cut(&self, endpoint: &Endpoint) -> u64 {
        match self.shared.targets.get(endpoint) {
            Some(t) => {
                let n = t.cut(CUT_WAIT).await;
                if n > 0 {
                    tracing::info!("cut {n} requests or connections to {endpoint}");
                }
                n
            }
            None => 0,
        }
    }

    /// Pauses (new requests are held), resumes (held ones go on, oldest first) or enters
    /// maintenance (new requests get the maintenance page). Kept in the state file.
    pub async fn set_mode(&self, mode: Mode) -> Result<(), Error> {
        let s = &self.shared;
        let _serial = s.changes.lock().await;
        s.persist(s.saved(&s.routes.snapshot(), mode)).await?;
        s.gate.set(mode);
        tracing::info!("mode: {mode:?}");
        Ok(())
    }

    /// A [`Router`](blue_green_core::Router) for `app` that drives this proxy in-process.
    pub fn router(&self, app: &str) -> EmbeddedRouter {
        EmbeddedRouter::new(self.clone(), app)
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

/// A running proxy. It serves until [`Proxy::shutdown`] (or until dropped, which stops the
/// listeners at once).
///
/// ```no_run
/// # async fn demo() -> Result<(), blue_green_proxy::Error> {
/// use blue_green_proxy::{Proxy, ProxyConfig};
///
/// let proxy = Proxy::start(ProxyConfig::new(["127.0.0.1:8080".parse().unwrap()])).await?;
/// let handle = proxy.handle();
/// println!("serving on {:?}, mode {:?}", proxy.local_addrs(), handle.status().mode);
/// proxy.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Proxy {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    control: Option<PathBuf>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addrs", &self.addrs)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Loads the state file (if any), binds the listeners and the control socket, and starts
    /// serving. Must be called inside a tokio runtime.
    pub async fn start(config: ProxyConfig) -> Result<Proxy, Error> {
        let targets = Targets::default();
        let (table, mode) = match &config.state_file {
            Some(path) => match state::load(path)? {
                Some(saved) => (restore(path, &saved, &targets)?, saved.mode),
                None => (RouteTable::default(), Mode::Serving),
            },
            None => (RouteTable::default(), Mode::Serving),
        };
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push(listener);
        }
        let control_listener = match &config.control {
            Some(path) => Some(control::server::bind(path).await?),
            None => None,
        };
        Ok(Proxy::launch(
            config,
            Launch {
                table,
                mode,
                targets,
                listeners,
                control: control_listener,
                frozen: false,
            },
        ))
    }

    /// Takes over from the proxy that runs with the same control socket: receives its listening
    /// sockets (client traffic and control) and its routes, serves them, and lets the old
    /// process finish what it has in flight and exit. No connection is refused or reset on the
    /// way; see `docs/proxy.md`, "Upgrading the proxy".
    ///
    /// `config.listen` must name the addresses the running proxy listens on (port 0 matches any
    /// port); `config.control` is required. The routes come from the running proxy and are
    /// written to `config.state_file`, if any. On any error the running proxy serves on as
    /// before.
    pub async fn take_over(config: ProxyConfig) -> Result<Proxy, Error> {
        let Some(control) = config.control.clone() else {
            return Err(Error::Invalid(
                "a take-over needs the running proxy's control socket (--control PATH)".into(),
            ));
        };
        let began = Instant::now();
        let taken = handover::take(&control, &config.listen).await?;
        let saved = taken.offer.state.clone();
        let targets = Targets::default();
        let origin = config.state_file.clone().unwrap_or_else(|| control.clone());
        let table = restore(&origin, &saved, &targets)?;
        if let Some(path) = config.state_file.clone() {
            let copy = saved.clone();
            tokio::task::spawn_blocking(move || state::save(&path, &copy).map(drop))
                .await
                .map_err(|e| Error::StateIo {
                    path: config.state_file.clone().unwrap_or_default(),
                    action: "writing",
                    source: std::io::Error::other(e),
                })??;
        }
        let bind_err = |source| Error::TakeOver {
            path: control.clone(),
            message: format!("a received socket could not be used: {source}"),
        };
        let mut listeners = Vec::new();
        for l in taken.listen {
            listeners.push(TcpListener::from_std(l).map_err(bind_err)?);
        }
        let control_listener =
            tokio::net::UnixListener::from_std(taken.control).map_err(bind_err)?;
        let mut proxy = Proxy::launch(
            config,
            Launch {
                table,
                mode: saved.mode,
                targets,
                listeners,
                control: Some(control_listener),
                frozen: true,
            },
        );
        if let Err(e) = handover::commit(&proxy.shared, taken.stream, &control).await {
            // The old process serves on: give the sockets back (close the copies here), after
            // the few connections accepted meanwhile are answered; the socket file is its own.
            proxy.control = None;
            proxy.shutdown_within(Duration::from_secs(10)).await;
            return Err(e);
        }
        tracing::info!(
            "took over {} and control socket {} from the running proxy in {} ms; it finishes what it has in flight and exits",
            proxy
                .addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            control.display(),
            began.elapsed().as_millis()
        );
        Ok(proxy)
    }

    fn launch(config: ProxyConfig, launch: Launch) -> Proxy {
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            server: serve::Builders::new(&config.limits),
            routes: Routes::new(launch.table),
            targets: launch.targets,
            gate: Gate::new(launch.mode, config.pause.clone()),
            listening: OnceLock::new(),
            changes: tokio::sync::Mutex::new(()),
            handover: Handover::new(&shutdown, launch.frozen),
            config,
        });
        let addrs: Vec<SocketAddr> = launch
            .listeners
            .iter()
            .zip(&shared.config.listen)
            .map(|(l, a)| l.local_addr().unwrap_or(*a))
            .collect();
        let _ = shared.listening.set(addrs.clone());
        // Copies of the sockets, for a later handover; without them (out of file descriptors)
        // the proxy serves, and a take-over is refused with the reason.
        let copies: std::io::Result<Vec<_>> = launch
            .listeners
            .iter()
            .zip(&addrs)
            .map(|(l, a)| Ok((*a, l.as_fd().try_clone_to_owned()?)))
            .collect();
        let control_copy = launch
            .control
            .as_ref()
            .map(|l| l.as_fd().try_clone_to_owned())
            .transpose();
        match (copies, control_copy) {
            (Ok(listen), Ok(control)) => shared.handover.keep_sockets(listen, control),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("could not keep copies of the listening sockets ({e}); this proxy cannot be taken over")
            }
        }

        let tracker = TaskTracker::new();
        for listener in launch.listeners {
            tracker.spawn(serve::accept_loop(
                shared.clone(),
                listener,
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        if let Some(listener) = launch.control {
            tracker.spawn(control::server::serve(
                ProxyHandle {
                    shared: shared.clone(),
                },
                listener,
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        Proxy {
            control: shared.config.control.clone(),
            shared,
            addrs,
            shutdown,
            tracker,
        }
    }

    /// Resolves once a new process has taken this proxy's sockets over
    /// ([`Proxy::take_over`]); then call [`Proxy::retire`].
    pub async fn handed_over(&self) {
        self.shared.handover.handed_over.cancelled().await
    }

    /// After a handover: lets what is in flight finish (requests, event streams, WebSockets)
    /// for up to `grace`, with `Connection: close` on every HTTP/1.1 answer and a GOAWAY on
    /// HTTP/2 so that clients move to the new process without a race, then closes the idle
    /// connections and stops. Returns how many requests or upgraded connections were still
    /// open at the deadline (and were closed).
    pub async fn retire(self, grace: Duration) -> u64 {
        let began = Instant::now();
        self.shared.handover.retire.cancel();
        let left = handover::wait_in_flight(&self.shared, grace).await;
        self.shutdown_within(
            grace
                .saturating_sub(began.elapsed())
                .max(Duration::from_secs(1)),
        )
        .await;
        left
    }

    /// The addresses it listens on (with the ports picked for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The control socket's path, if it has one.
    pub fn control_path(&self) -> Option<&Path> {
        self.control.as_deref()
    }

    /// A handle to drive it in-process.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// A [`Router`](blue_green_core::Router) for `app` that drives this proxy in-process.
    pub fn router(&self, app: &str) -> EmbeddedRouter {
        self.handle().router(app)
    }

    /// Stops taking connections, lets open requests finish for up to `grace`, then closes
    /// what is left. The control socket's file is removed.
    pub async fn shutdown_within(self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still open after {:.1}s; closing them",
                grace.as_secs_f64()
            );
        }
        // After a handover the socket file is the new process's.
        if let Some(path) = self
            .control
            .as_ref()
            .filter(|_| !self.shared.handover.handed_over.is_cancelled())
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// [`Proxy::shutdown_within`] with a grace of 10 seconds.
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(10)).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a proxy starts serving with.
struct Launch {
    table: RouteTable,
    mode: Mode,
    targets: Targets,
    listeners: Vec<TcpListener>,
    control: Option<tokio::net::UnixListener>,
    /// Changes refused until a take-over commits.
    frozen: bool,
}

/// The route table a state file describes.
fn restore(path: &Path, saved: &SavedState, targets: &Targets) -> Result<RouteTable, Error> {
    let corrupt = |message: String| Error::StateCorrupt {
        path: path.to_path_buf(),
        message,
    };
    let mut table = RouteTable::default();
    for app in &saved.apps {
        let target_of = |t: &str| {
            let endpoint: Endpoint = t.parse().map_err(|e: blue_green_core::ComponentError| {
                corrupt(format!("app {}: {e}", app.app))
            })?;
            targets
                .get_or_add(&endpoint)
                .map_err(|e| corrupt(e.to_string()))
        };
        let spec = RouteSpec {
            hosts: app.hosts.clone(),
            target: app.target.as_deref().map(target_of).transpose()?,
            split: match &app.split {
                Some(s) => Some((target_of(&s.next)?, s.percent)),
                None => None,
            },
            preview: match &app.preview {
                Some(p) => Some((p.host.clone(), target_of(&p.target)?)),
                None => None,
            },
        };
        // Checked the same way as a change from the control socket.
        table = table
            .with_route(&app.app, spec)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(table)
}
