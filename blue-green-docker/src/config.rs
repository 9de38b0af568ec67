//! What the Docker and compose runtimes need to know, independent of how the CLI reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
