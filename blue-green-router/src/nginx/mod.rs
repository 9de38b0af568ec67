//! [`NginxRouter`]: renders an `upstream` block into the file nginx includes, tests, reloads,
//! restores on failure, and verifies through nginx.
//!
//! The router owns one file, for example `/etc/nginx/conf.d/web-upstream.conf`, which the nginx
//! config includes and proxies to (`proxy_pass http://web;`). A switch writes
//!
//! ```text
//! # Managed by blue-green: rewritten on every switch; edits here will be lost.
//! upstream web {
//!     server 127.0.0.1:8082 max_fails=0;
//!     keepalive 16;
//! }
//! ```
//!
//! atomically, runs the test command (`nginx -t`) and the reload command (`nginx -s reload`),
//! and puts the previous file back, byte for byte, if either fails. Everything that reaches the
//! file — the upstream name, the endpoint, server options and directives — is checked against a
//! strict pattern first ([`NginxConfig::validate`], once, when the router is built; the endpoint
//! at each switch), so no input can add a directive of its own.
//!
//! A gradual shift ([`Router::split`]) writes two servers weighted `100 - percent` and
//! `percent`, after a comment naming the split (`# blue-green split: current … next …
//! percent N`), so that [`Router::target`] names the split's current and
//! [`Router::current_split`] reads it back; a switch writes one server again. nginx splits per
//! request: a client may see both colors while the split lasts.
//!
//! `nginx -s reload` returns before the new worker processes take over, so "reloaded" is not
//! "routed": [`Router::verify`] polls a URL through nginx until it answers for the new color.
//! Even then the old workers go on accepting new connections for a while: the nginx master
//! starts the new workers, sleeps 100 ms, and only then tells the old ones to stop accepting
//! (measured here: the last old-color answer to a new connection comes about 90 ms after the
//! first new-color one). So a verification only counts a run of new-color answers that spans
//! at least [`OLD_WORKER_OVERLAP`], however few `successes` it asks for.
//!
//! When nginx runs as a local process and [`NginxConfig::pid_file`] names its pid file, the
//! router waits for the exact moment instead: it notes the master's workers (from `/proc`)
//! before the reload, and after it waits until a new worker runs and every old one is gone or
//! titled `worker process is shutting down` — nginx sets that title just before the worker
//! closes its listening sockets. From then on every new connection gets the new config, so
//! `successes` answers in a row suffice (measured here, 50 switches under load: reload asked
//! to verified in a median of about 140 ms, against about 300 ms with the overlap, and no
//! old-color answer after the workers were replaced). If the pid file cannot be read or
//! `/proc` does not show an nginx master there (nginx in a container, for example), the router
//! falls back to the overlap; a debug log says which way it verified.
//!
//! If nginx runs in a container, mount the file's *directory* rather than the file itself: the
//! atomic write replaces the file by renaming, which a single-file bind mount does not see.
//!
//! The module is split by job: `config` (the config types and their one check), `upstream`
//! (rendering and reading the upstream block, pure functions), `switch` (the write, test,
//! reload and restore transaction), `command` (running nginx's commands), `workers` (watching
//! nginx's workers through `/proc`), `verify` (verification through nginx) and `connections`
//! (counting what nginx still holds open to the old color when the drain ends).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use blue_green_core::{ComponentError, Endpoint, Instance, RouteReceipt, Router, Split};

use crate::Error;

mod command;
mod config;
mod connections;
mod private;
mod switch;
pub(crate) mod upstream;
mod verify;
mod workers;

pub use config::{NginxConfig, NginxConfigError, NginxField, NginxVerify, MAX_VERIFY_SUCCESSES};
pub use private::{placeholder_upstream, PrivateNginx, PLACEHOLDER_SERVER};
pub use verify::OLD_WORKER_OVERLAP;

/// Where the kernel shows processes.
const PROC_ROOT: &str = "/proc";

/// Routes through nginx by rewriting the upstream file it includes and reloading it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use blue_green_core::{Endpoint, Router};
/// use blue_green_router::{NginxConfig, NginxRouter, NginxVerify};
///
/// let router = NginxRouter::new(NginxConfig {
///     upstream: "web".into(),
///     upstream_file: "/etc/nginx/conf.d/web-upstream.conf".into(),
///     server_options: vec!["max_fails=0".into()],
///     upstream_directives: vec!["keepalive 16".into()],
///     test_command: vec!["nginx".into(), "-t".into()],
///     reload_command: vec!["nginx".into(), "-s".into(), "reload".into()],
///     command_timeout: Duration::from_secs(10),
///     verify: Some(NginxVerify::new("http://127.0.0.1/health")),
///     pid_file: Some("/run/nginx.pid".into()),
/// })?;
/// router.route_to(&Endpoint::new("127.0.0.1", 8082)).await?;
/// assert_eq!(router.target().await?, Some(Endpoint::new("127.0.0.1", 8082)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NginxRouter {
    config: NginxConfig,
    /// One switch at a time: a second `route_to` waits, so restores never interleave.
    switching: Arc<tokio::sync::Mutex<()>>,
    /// Where the kernel shows processes (a fake tree in tests).
    proc_root: PathBuf,
    /// For verification: no connection reuse, so each request is a new client of nginx.
    verify_client: reqwest::Client,
}

impl NginxRouter {
    /// A router with `config`, after [`NginxConfig::validate`]: a bad config fails here, with
    /// every problem, before any switch.
    pub fn new(config: NginxConfig) -> Result<Self, Error> {
        config.validate().map_err(Error::NginxConfig)?;
        let verify_client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(Error::HttpClient)?;
        Ok(NginxRouter {
            config,
            switching: Arc::new(tokio::sync::Mutex::new(())),
            proc_root: PathBuf::from(PROC_ROOT),
            verify_client,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &NginxConfig {
        &self.config
    }

    /// The upstream file's content that routes to `endpoint`, after checking the endpoint.
    pub fn render(&self, endpoint: &Endpoint) -> Result<String, ComponentError> {
        upstream::render(&self.config, endpoint)
    }

    /// The upstream file's content that splits new requests as `split` says: two servers with
    /// `weight=` 100 − percent and percent, after a marker comment naming the split.
    pub fn render_split(&self, split: &Split) -> Result<String, ComponentError> {
        upstream::render_split(&self.config, split)
    }
}

#[async_trait]
impl Router for NginxRouter {
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
        self.read_target().await
    }

    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        self.switch(endpoint).await
    }

    fn can_split(&self) -> bool {
        true
    }

    /// Per request, not per client: open-source nginx has no sticky cookie in an upstream
    /// block (see [`NginxRouter::render_split`] and docs/configuration.md).
    async fn split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
        self.switch_split(split).await
    }

    async fn current_split(&self) -> Result<Option<Split>, ComponentError> {
        self.read_split().await
    }

    async fn verify(
        &self,
        instance: &Instance,
        receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        self.verify_switch(instance, receipt).await
    }

    // No `in_flight`: a count of nginx's connections to the old color misses the requests on
    // their way to it, so the drain waits its whole time; this count is for its report.
    async fn open_connections(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        self.count_open(endpoint).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn config(dir: &Path) -> NginxConfig {
        let mut c = NginxConfig::new("web", dir.join("upstream.conf"));
        c.test_command = vec![];
        c.reload_command = vec!["true".into()];
        c
    }

    #[tokio::test]
    async fn the_placeholder_server_is_no_target() {
        let dir = tempfile::tempdir().unwrap();
        let nginx = PrivateNginx::new(dir.path(), "web", 8080);
        nginx.write_files().unwrap();
        let router = NginxRouter::new(config(dir.path())).unwrap();
        assert_eq!(router.target().await.unwrap(), None);
        let endpoint = Endpoint::new("127.0.0.1", 8081);
        router.route_to(&endpoint).await.unwrap();
        assert_eq!(router.target().await.unwrap(), Some(endpoint));
        let conf = std::fs::read_to_string(nginx.config_file()).unwrap();
        assert!(conf.contains("listen 127.0.0.1:8080;"), "{conf}");
        assert_eq!(
            nginx.reload_argv().last().map(String::as_str),
            Some("reload")
        );
    }

    #[test]
    fn a_bad_config_is_refused_when_the_router_is_built_with_every_problem() {
        let dir = Path::new("/tmp");
        let mut c = config(dir);
        c.upstream = "web;".into();
        c.reload_command = vec![];
        c.server_options = vec!["max_fails=0;".into()];
        c.upstream_directives = vec!["keepalive 16; server evil:1".into()];
        c.verify = Some(NginxVerify {
            successes: 0,
            ..NginxVerify::new("127.0.0.1/")
        });
        let error = NginxRouter::new(c).unwrap_err();
        let fields: Vec<NginxField> = error.nginx_problems().iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                NginxField::Upstream,
                NginxField::ServerOption(0),
                NginxField::UpstreamDirective(0),
                NginxField::ReloadCommand,
                NginxField::VerifyUrl,
                NginxField::VerifySuccesses,
            ]
        );
        let message = error.to_string();
        assert!(message.contains("reload command"), "{message}");
        assert!(message.contains("http://"), "{message}");
        let component = ComponentError::from(error);
        assert_eq!(component.kind, blue_green_core::ComponentErrorKind::Invalid);
        assert!(NginxRouter::new(config(dir)).is_ok());
        let mut c = config(dir);
        c.command_timeout = Duration::ZERO;
        assert!(NginxRouter::new(c).is_err());
    }
}
