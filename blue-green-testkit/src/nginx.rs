//! [`NginxHarness`]: the real nginx (Debian's `/usr/sbin/nginx`) as a plain process, with its
//! own config, pid file, logs and temp paths in a temporary directory, listening on a free
//! loopback port and proxying everything to one upstream whose block lives in its own file —
//! the file an [`NginxRouter`](blue_green_router::NginxRouter) rewrites.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use blue_green_core::Endpoint;
//! use blue_green_testkit::nginx::NginxHarness;
//!
//! let nginx = NginxHarness::start("app", &Endpoint::new("127.0.0.1", 8081)).await?;
//! let url = nginx.url("/health"); // http://127.0.0.1:PORT/health, proxied to 127.0.0.1:8081
//! let file = nginx.upstream_file(); // give this, test_command() and reload_command() to the router
//! let pid_file = nginx.pid_file(); // and this as its pid_file
//! # Ok(()) }
//! ```
//!
//! The master runs in the foreground (`daemon off`) in its own process group. Dropping the
//! harness stops nginx (SIGTERM to the group, SIGKILL if it lingers), also when a test panics;
//! if the test process itself dies, the master gets SIGTERM from the kernel (parent-death
//! signal). Start it from the test's own task, not from `spawn_blocking`: the parent-death
//! signal follows the thread that spawned nginx.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blue_green_core::Endpoint;
use blue_green_router::{NginxConfig, NginxVerify};
use rustix::process::{Pid, Signal};
use tempfile::TempDir;

/// Where Debian's package puts nginx.
pub const NGINX: &str = "/usr/sbin/nginx";
/// How long nginx gets to start listening.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long nginx gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running nginx; stopped on drop.
#[derive(Debug)]
pub struct NginxHarness {
    dir: TempDir,
    child: Child,
    port: u16,
    upstream: String,
    /// The process group of a master that [`NginxHarness::kill_master`] killed: its workers
    /// live on in it until [`NginxHarness::restart`] or the drop stops them.
    orphans: Option<Pid>,
}

impl NginxHarness {
    /// Starts nginx proxying `http://127.0.0.1:PORT/` to upstream `upstream`, whose file
    /// first routes to `initial`. Fails with a clear message when nginx is not installed or
    /// does not start (quoting its error log).
    pub async fn start(upstream: &str, initial: &Endpoint) -> Result<NginxHarness, String> {
        if !Path::new(NGINX).exists() {
            return Err(format!(
                "nginx not found at {NGINX}: install Debian's nginx-light (scripts/test does)"
            ));
        }
        if upstream.is_empty()
            || !upstream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(format!("`{upstream}` is not a usable upstream name"));
        }
        let dir = tempfile::Builder::new()
            .prefix("blue-green-nginx-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory for nginx: {e}"))?;
        let upstream_file = dir.path().join("upstream.conf");
        let host = if initial.host.contains(':') {
            format!("[{}]", initial.host)
        } else {
            initial.host.clone()
        };
        fs::write(
            &upstream_file,
            format!(
                "upstream {upstream} {{\n    server {host}:{} max_fails=0;\n}}\n",
                initial.port
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", upstream_file.display()))?;

        // The free port is found by binding and releasing it; another process may take it in
        // between, so a failed bind is retried on a new port.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            write_config(dir.path(), upstream, port)?;
            let mut child = spawn_master(dir.path())?;
            match wait_until_listening(&mut child, port, dir.path()).await {
                Ok(()) => {
                    return Ok(NginxHarness {
                        dir,
                        child,
                        port,
                        upstream: upstream.to_string(),
                        orphans: None,
                    })
                }
                Err(error) => {
                    stop(&mut child);
                    if !error.contains("Address already in use") {
                        return Err(error);
                    }
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// The master's process id; its workers are in the process group of the same id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the master with SIGKILL, as a crash or the OOM killer would, and reaps it (as
    /// init or systemd would, so its pid no longer exists). Its workers are left running, as
    /// nginx leaves them: they go on serving with the config they had, but nothing reloads
    /// them any more (`nginx -s reload` finds no master). Idempotent.
    pub fn kill_master(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.orphans = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts nginx again with the same config, port and upstream file, as `systemctl restart
    /// nginx` would: what is left of the previous nginx (a master, or the workers of a killed
    /// one) is stopped first — SIGTERM to its process group, SIGKILL after the grace time —
    /// so requests fail while it is down. Returns once the new master listens.
    pub async fn restart(&mut self) -> Result<(), String> {
        stop(&mut self.child);
        if let Some(group) = self.orphans.take() {
            stop_group(group);
        }
        self.child = spawn_master(self.dir.path())?;
        wait_until_listening(&mut self.child, self.port, self.dir.path()).await
    }

    /// The loopback port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The upstream name nginx proxies to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The file holding the upstream block, included by the main config.
    pub fn upstream_file(&self) -> PathBuf {
        self.dir.path().join("upstream.conf")
    }

    /// nginx's pid file, holding the master's pid (give it to the router as `pid_file`).
    pub fn pid_file(&self) -> PathBuf {
        self.dir.path().join("nginx.pid")
    }

    /// An [`NginxConfig`] that routes through this nginx: its upstream file, test and reload
    /// commands and pid file, `max_fails=0` (with one server, a failed attempt must not make
    /// nginx give up on it), keep-alive to the upstream, and verification of `{color}
    /// {release}` at `/health` through it, 3 answers in a row, 20 ms apart.
    pub fn router_config(&self) -> NginxConfig {
        NginxConfig {
            upstream: self.upstream().to_string(),
            upstream_file: self.upstream_file(),
            server_options: vec!["max_fails=0".into()],
            upstream_directives: vec!["keepalive 16".into()],
            test_command: self.test_command(),
            reload_command: self.reload_command(),
            command_timeout: Duration::from_secs(20),
            verify: Some(NginxVerify {
                url: self.url("/health"),
                expect_body: "{color} {release}".into(),
                successes: 3,
                interval: Duration::from_millis(20),
                deadline: Duration::from_secs(20),
            }),
            pid_file: Some(self.pid_file()),
        }
    }

    /// The main config file.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The argv that tests this nginx's config: `nginx -p DIR -c DIR/nginx.conf -e … -t`.
    pub fn test_command(&self) -> Vec<String> {
        self.command(&["-t"])
    }

    /// The argv that reloads this nginx: `nginx -p DIR -c DIR/nginx.conf -e … -s reload`.
    pub fn reload_command(&self) -> Vec<String> {
        self.command(&["-s", "reload"])
    }

    /// nginx's error log so far, for a failing test's message.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn command(&self, extra: &[&str]) -> Vec<String> {
        let mut argv = base_args(self.dir.path());
        argv.insert(0, NGINX.to_string());
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }
}

impl Drop for NginxHarness {
    fn drop(&mut self) {
        stop(&mut self.child);
        if let Some(group) = self.orphans.take() {
            stop_group(group);
        }
    }
}

/// Stops the workers a killed master left in `group`: SIGTERM, then SIGKILL once the grace
/// time is over, until the group is empty. The group's id is the killed master's pid, which
/// the kernel does not give to a new process while the group has members.
fn stop_group(group: Pid) {
    if rustix::process::kill_process_group(group, Signal::TERM).is_err() {
        // No member left.
        return;
    }
    let until = Instant::now() + STOP_GRACE;
    while Instant::now() < until {
        if !group_runs(group) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = rustix::process::kill_process_group(group, Signal::KILL);
}

/// Whether a process of `group` still runs. Exited workers stay zombies until init reaps them
/// (whenever it does), so they do not count: they hold no socket any more.
fn group_runs(group: Pid) -> bool {
    let group = group.as_raw_nonzero().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After the command name in parentheses: state (field 3), ppid, pgrp (field 5).
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields.len() > 2 && !matches!(fields[0], "Z" | "X") && fields[2] == group
    })
}

async fn wait_until_listening(child: &mut Child, port: u16, dir: &Path) -> Result<(), String> {
    let error_log = || {
        fs::read_to_string(dir.join("error.log"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let until = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "nginx exited ({status}) while starting; its error log says: {}",
                error_log()
            ));
        }
        // nginx opens its listening sockets before it writes its pid file: wait for both.
        let pid_written = fs::read_to_string(dir.join("nginx.pid"))
            .is_ok_and(|pid| pid.trim() == child.id().to_string());
        if pid_written
            && tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "nginx did not listen on 127.0.0.1:{port} within {START_DEADLINE:?}; its error log says: {}",
                error_log()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops nginx: SIGTERM to its process group (master and workers), then SIGKILL if the master
/// is still there after the grace time. Idempotent.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let Some(group) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    // The master is not reaped yet, so its group id cannot have been reused.
    let _ = rustix::process::kill_process_group(group, Signal::TERM);
    let until = Instant::now() + STOP_GRACE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            // On SIGTERM the master waits for its workers before it exits.
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = rustix::process::kill_process_group(group, Signal::KILL);
    let _ = child.wait();
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot find a free loopback port for nginx: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free loopback port for nginx: {e}"))
}

/// `-p DIR -c DIR/nginx.conf -e DIR/error.log`: nothing outside the directory is touched, not
/// even the default error log before the config is read.
fn base_args(dir: &Path) -> Vec<String> {
    let dir = dir.display();
    vec![
        "-p".into(),
        format!("{dir}/"),
        "-c".into(),
        format!("{dir}/nginx.conf"),
        "-e".into(),
        format!("{dir}/error.log"),
    ]
}

fn write_config(dir: &Path, upstream: &str, port: u16) -> Result<(), String> {
    // As root, the workers would run as `nobody` and could not use the temp paths in a 0700
    // directory; run them as the current user instead.
    let user = match fs::metadata("/proc/self") {
        Ok(meta) if meta.uid() == 0 => "user root;\n",
        _ => "",
    };
    let d = dir.display();
    let config = format!(
        "# nginx for a blue-green test; everything lives in {d}
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
    let path = dir.join("nginx.conf");
    fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn spawn_master(dir: &Path) -> Result<Child, String> {
    let log = |name: &str| {
        fs::File::create(dir.join(name))
            .map_err(|e| format!("cannot create {name} for nginx in {}: {e}", dir.display()))
    };
    let mut command = Command::new(NGINX);
    command
        .args(base_args(dir))
        .stdin(Stdio::null())
        .stdout(log("stdout.log")?)
        .stderr(log("stderr.log")?)
        // Its own group, so that master and workers can be signalled together.
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only makes one
    // async-signal-safe system call (prctl); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
                .map_err(std::io::Error::from)
        });
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start {NGINX}: {e}"))
}
