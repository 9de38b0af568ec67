//! [`PrivateNginx`]: the files and argv of an nginx of one's own, living in one directory, for
//! embedders, examples and tests that want a real nginx without touching `/etc/nginx`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blue_green_core::process::{Command, Service};

use super::config::NginxConfig;
use crate::Error;

/// The server an upstream file holds before the first deploy: `127.0.0.1:9`, the discard port,
/// where nothing answers. nginx needs some server to pass `nginx -t`;
/// [`NginxRouter::target`](super::NginxRouter) reports this one as no target at all.
pub const PLACEHOLDER_SERVER: (&str, u16) = ("127.0.0.1", 9);

/// The upstream file to write before the first deploy: `upstream NAME { server 127.0.0.1:9; }`
/// (see [`PLACEHOLDER_SERVER`]). The name is not checked here; the router checks it when built.
pub fn placeholder_upstream(upstream: &str) -> String {
    let (host, port) = PLACEHOLDER_SERVER;
    format!("upstream {upstream} {{\n    server {host}:{port};\n}}\n")
}

/// An nginx whose config, pid file, logs and temp paths all live in one directory (its prefix),
/// listening on one loopback port and proxying everything to one upstream.
///
/// [`start`](Self::start) writes a minimal `nginx.conf` and the initial upstream file
/// ([`write_files`](Self::write_files)), runs nginx in the foreground (`daemon off`, so the
/// caller owns the process) and waits until it listens; [`router_config`](Self::router_config)
/// gives the router the test and reload argv and the pid file of this nginx. To run it some
/// other way, [`start_argv`](Self::start_argv) is its argv.
///
/// ```no_run
/// use std::time::Duration;
/// use blue_green_router::nginx::PrivateNginx;
/// use blue_green_router::NginxRouter;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let nginx = PrivateNginx::new("/tmp/my-nginx", "web", 8080);
/// let master = nginx.start(Duration::from_secs(10)).await?; // listening on 127.0.0.1:8080
/// let router = NginxRouter::new(nginx.router_config())?;
/// // ... deploy through `router` ...
/// master.stop(Duration::from_secs(10)).await; // nginx's fast shutdown, then KILL
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateNginx {
    prefix: PathBuf,
    upstream: String,
    port: u16,
    program: String,
}

impl PrivateNginx {
    /// An nginx in `prefix` (an existing directory, made private to this nginx), proxying
    /// `127.0.0.1:port` to `upstream`, run as the program `nginx` from `PATH`.
    pub fn new(prefix: impl Into<PathBuf>, upstream: impl Into<String>, port: u16) -> Self {
        PrivateNginx {
            prefix: prefix.into(),
            upstream: upstream.into(),
            port,
            program: "nginx".into(),
        }
    }

    /// Runs `program` (a path to an nginx binary) instead of `nginx` from `PATH`.
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// The directory everything lives in.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The upstream file the router owns: `PREFIX/upstream.conf`.
    pub fn upstream_file(&self) -> PathBuf {
        self.prefix.join("upstream.conf")
    }

    /// nginx's pid file: `PREFIX/nginx.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.prefix.join("nginx.pid")
    }

    /// The config file: `PREFIX/nginx.conf`.
    pub fn config_file(&self) -> PathBuf {
        self.prefix.join("nginx.conf")
    }

    /// The URL of `path` through this nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Writes `nginx.conf` and, unless it exists already, the upstream file with the
    /// [placeholder](placeholder_upstream). Run as root, the workers run as root too (as
    /// `nobody` they could not use the private directory).
    pub fn write_files(&self) -> io::Result<()> {
        #[cfg(unix)]
        let root = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        };
        #[cfg(not(unix))]
        let root = false;
        let user = if root { "user root;\n" } else { "" };
        let d = self.prefix.display();
        let (upstream, port) = (&self.upstream, self.port);
        let config = format!(
            "# A private nginx for blue-green; everything lives in {d}
{user}worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log notice;

events {{
    worker_connections 1024;
}}

http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    # WebSockets: pass the client's `Upgrade` on, and `Connection: upgrade` with it; other
    # requests send no `Connection` header, so the upstream keep-alive connections stay open.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        \"\" \"\";
    }}

    include {d}/upstream.conf;

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
"
        );
        fs::write(self.config_file(), config)?;
        if !self.upstream_file().exists() {
            fs::write(self.upstream_file(), placeholder_upstream(&self.upstream))?;
        }
        Ok(())
    }

    /// `nginx -p PREFIX/ -c PREFIX/nginx.conf -e PREFIX/error.log`, then `extra`: nothing
    /// outside the prefix is touched, not even the default error log.
    fn argv(&self, extra: &[&str]) -> Vec<String> {
        let d = self.prefix.display();
        let mut argv = vec![
            self.program.clone(),
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            format!("{d}/nginx.conf"),
            "-e".into(),
            format!("{d}/error.log"),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    /// Writes the files and starts this nginx with blue-green-core's process runner (in its own
    /// process group, with its workers), then waits up to `deadline` until it has written its
    /// pid file and accepts connections on its port. Stop it with [`Service::stop`] (SIGTERM: nginx's fast
    /// shutdown); dropping the returned service kills it.
    pub async fn start(&self, deadline: Duration) -> Result<Service, Error> {
        let refused = |reason: String| Error::NginxStart {
            prefix: self.prefix.clone(),
            reason,
        };
        self.write_files()
            .map_err(|e| refused(format!("cannot write its files: {e}")))?;
        let master = Command::from_argv(&self.start_argv())
            .expect("an nginx argv is never empty")
            .spawn()
            .await
            .map_err(|e| refused(e.to_string()))?;
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = master.exit_status() {
                return Err(refused(format!(
                    "it exited ({status}); see {}",
                    self.prefix.join("error.log").display()
                )));
            }
            // nginx writes its pid file once its sockets are bound: a pid file naming this
            // master, and the port answering, mean this nginx listens (not someone else).
            let pid = fs::read_to_string(self.pid_file()).unwrap_or_default();
            if pid.trim() == master.id().to_string()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return Ok(master);
            }
            if tokio::time::Instant::now() >= until {
                master.stop(Duration::ZERO).await;
                return Err(refused(format!(
                    "it did not listen on 127.0.0.1:{} within {deadline:?}; see {}",
                    self.port,
                    self.prefix.join("error.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The argv that runs nginx in the foreground (the config says `daemon off`).
    pub fn start_argv(&self) -> Vec<String> {
        self.argv(&[])
    }

    /// The argv that tests the config (`… -t`).
    pub fn test_argv(&self) -> Vec<String> {
        self.argv(&["-t"])
    }

    /// The argv that reloads nginx (`… -s reload`).
    pub fn reload_argv(&self) -> Vec<String> {
        self.argv(&["-s", "reload"])
    }

    /// The argv that stops nginx (`… -s quit`, a graceful stop).
    pub fn quit_argv(&self) -> Vec<String> {
        self.argv(&["-s", "quit"])
    }

    /// A router config for this nginx: its upstream and file, its test and reload argv, its
    /// pid file (so verification waits for the old workers), `max_fails=0` (with one server, a
    /// failed attempt must not mark it down).
    pub fn router_config(&self) -> NginxConfig {
        NginxConfig::new(self.upstream.clone(), self.upstream_file())
            .with_server_options(vec!["max_fails=0".into()])
            .with_test_command(self.test_argv())
            .with_reload_command(self.reload_argv())
            .with_pid_file(self.pid_file())
    }
}
