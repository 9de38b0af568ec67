//! What the Docker and compose runtimes need to know, independent of how the CLI reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use blue_green_core::{Color, Endpoint};

/// A value for each color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerColor<T> {
    /// For blue.
    pub blue: T,
    /// For green.
    pub green: T,
}

impl<T> PerColor<T> {
    /// The value for `color`.
    pub fn get(&self, color: Color) -> &T {
        match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        }
    }
}

/// How a [`DockerRuntime`](crate::DockerRuntime) runs an app's releases as plain containers
/// named `{app}-{color}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The default image; a release's artifact (`--image`) overrides it.
    pub image: String,
    /// The port the app listens on inside the container.
    pub container_port: u16,
    /// Where each color is published on the host. `None`: a free port on `publish_host`,
    /// read back from inspect.
    pub endpoints: Option<PerColor<Endpoint>>,
    /// Host address to publish on when `endpoints` is `None` (default `127.0.0.1`).
    pub publish_host: String,
    /// Environment given to the container, besides `BLUE_GREEN_COLOR` and `BLUE_GREEN_RELEASE`.
    pub env: BTreeMap<String, String>,
    /// Docker networks to attach the container to (must exist).
    pub networks: Vec<String>,
    /// Docker restart policy name: `no`, `on-failure`, `unless-stopped`, `always`.
    pub restart_policy: Option<String>,
    /// Signal for a graceful stop (default: the image's, usually SIGTERM).
    pub stop_signal: Option<String>,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Run Docker's init (tini) as PID 1: it passes the stop signal on and reaps children, so
    /// an app that ignores SIGTERM as PID 1 (a shell, busybox) still stops without waiting out
    /// the grace period (`docker run --init`).
    pub init: bool,
}

/// Which compose program to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ComposeTool {
    /// `docker compose` (v2) if present, else `docker-compose` (v1).
    #[default]
    Auto,
    /// `docker compose`.
    V2,
    /// `docker-compose`.
    V1,
}

/// Which compose files make a color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeFiles {
    /// One file per color (the blog's layout: `docker-compose.blue.yml`, `docker-compose.green.yml`).
    PerColor(PerColor<PathBuf>),
    /// One file for both colors, using `${BLUE_GREEN_COLOR}` interpolation.
    Shared(PathBuf),
}

/// How a [`ComposeRuntime`](crate::ComposeRuntime) runs an app's releases as compose projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeConfig {
    /// Which compose program.
    pub tool: ComposeTool,
    /// The compose files.
    pub files: ComposeFiles,
    /// Project name template; `{app}` and `{color}` are filled in (default `{app}-{color}`).
    pub project: String,
    /// The service that answers on the endpoint.
    pub service: String,
    /// Where each color answers; `None`: asked from `compose port SERVICE container_port`.
    pub endpoints: Option<PerColor<Endpoint>>,
    /// The service's container port, for `compose port` when `endpoints` is `None`.
    pub container_port: Option<u16>,
    /// Working directory for the compose program (default: the directory of the files).
    pub working_dir: Option<PathBuf>,
    /// Extra environment for the compose program (interpolation), besides `BLUE_GREEN_COLOR` and
    /// `BLUE_GREEN_RELEASE`.
    pub env: BTreeMap<String, String>,
}

/// How a swarm service publishes its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PublishMode {
    /// The ingress routing mesh: every node of the swarm answers on the published port and
    /// forwards to a task of the service, wherever it runs (needs IPVS in the nodes' kernel).
    #[default]
    Ingress,
    /// Each task publishes the port on the node it runs on; only those nodes answer. Works
    /// without the routing mesh; pair it with `max_replicas_per_node = 1` so that no two tasks
    /// of a color ask for the same port on one node.
    Host,
}

/// How a [`SwarmRuntime`](crate::SwarmRuntime) runs an app's releases as swarm services named
/// `{app}-{color}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmConfig {
    /// The default image; a release's artifact (`--image`) overrides it. Every node that may
    /// run a task must have it or be able to pull it.
    pub image: String,
    /// The port the app listens on inside its containers.
    pub container_port: u16,
    /// The port each color's service publishes (they differ: both colors run during a switch).
    pub published_ports: PerColor<u16>,
    /// How the port is published.
    pub publish_mode: PublishMode,
    /// Tasks per color (at least 1).
    pub replicas: u32,
    /// At most this many tasks of a color on one node (`None`: no limit).
    pub max_replicas_per_node: Option<u32>,
    /// Placement constraints, as `docker service create --constraint` takes them
    /// (`node.role==worker`, `node.labels.zone==a`).
    pub constraints: Vec<String>,
    /// Networks to attach the tasks to (must exist on the swarm, usually overlay networks).
    pub networks: Vec<String>,
    /// Environment given to every task, besides `BLUE_GREEN_COLOR` and `BLUE_GREEN_RELEASE`.
    pub env: BTreeMap<String, String>,
    /// Extra labels on the service and its containers.
    pub labels: BTreeMap<String, String>,
    /// The addresses a color's published port is reached on, for the router: the nodes' own
    /// addresses, or one address of a balancer in front of them. The first is the instance's
    /// endpoint (probes and routers that take one target use it); all of them are kept in the
    /// instance's `upstream` meta for routers that can list several. Empty: the address of
    /// the manager node this runtime talks to.
    pub addresses: Vec<String>,
    /// How long `start` waits until every task of the new spec runs (and is healthy, when
    /// the image has a healthcheck).
    pub converge_timeout: Duration,
    /// After this many failed or rejected tasks of the new spec, `start` gives up at once.
    pub max_task_failures: u32,
    /// Signal for a graceful stop (default: the image's, usually SIGTERM).
    pub stop_signal: Option<String>,
    /// How long a task may take to stop after the signal before swarm kills it. Swarm stops a
    /// task with the grace period of the spec it was started with, so it is set when the
    /// service is created (the CLI sets `[switch] stop_timeout`); `None`: swarm's 10s.
    pub stop_grace_period: Option<Duration>,
    /// Run Docker's init as PID 1 in each task (`docker service create --init`).
    pub init: bool,
}
