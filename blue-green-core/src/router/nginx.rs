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
//! strict pattern first, so no input can add a directive of its own.
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

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{ComponentError, ComponentErrorKind};
use crate::model::{Endpoint, Instance};
use crate::router::{RouteReceipt, Router};
use crate::state::atomic::write_atomic;

mod workers;

use workers::{WaitError, WorkerWatch};

/// The first line of every file the router writes.
const HEADER: &str = "# Managed by blue-green: rewritten on every switch; edits here will be lost.";
/// How long a run of new-color answers must last before a switch counts as verified: nginx's
/// old workers accept new connections for about 100 ms after the new ones start, and a busy
/// machine may be slower to tell them to stop.
pub const OLD_WORKER_OVERLAP: Duration = Duration::from_millis(250);
/// How often the router looks at nginx's workers while they are replaced.
const WORKER_POLL: Duration = Duration::from_millis(10);
/// Where the kernel shows processes.
const PROC_ROOT: &str = "/proc";
/// How much of a command's output an error quotes.
const OUTPUT_LIMIT: usize = 2000;

/// Directives accepted inside the upstream block (each followed by `[A-Za-z0-9._]+` arguments).
const UPSTREAM_DIRECTIVES: &[&str] = &[
    "keepalive",
    "keepalive_requests",
    "keepalive_time",
    "keepalive_timeout",
    "least_conn",
    "ip_hash",
    "random",
    "zone",
    "ntlm",
];

/// How [`NginxRouter`] checks, after a reload, that requests through nginx reach the new color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxVerify {
    /// URL through nginx, for example `http://127.0.0.1/health`.
    pub url: String,
    /// The body must contain this, after `{color}` and `{release}` are filled in (default
    /// `{color}`).
    pub expect_body: String,
    /// Answers in a row needed; unless the router could watch nginx's workers (see
    /// [`NginxConfig::pid_file`]), the run must also last [`OLD_WORKER_OVERLAP`].
    pub successes: u32,
    /// Time between two requests.
    pub interval: Duration,
    /// Give up after this long.
    pub deadline: Duration,
}

impl NginxVerify {
    /// Verification of `url` with the defaults: the body contains `{color}`, 3 answers in a row,
    /// 100ms apart, within 10s.
    pub fn new(url: impl Into<String>) -> Self {
        NginxVerify {
            url: url.into(),
            expect_body: "{color}".into(),
            successes: 3,
            interval: Duration::from_millis(100),
            deadline: Duration::from_secs(10),
        }
    }
}

/// Everything [`NginxRouter`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxConfig {
    /// Upstream name, `[A-Za-z0-9_.-]+`.
    pub upstream: String,
    /// The file nginx includes; the router owns it.
    pub upstream_file: PathBuf,
    /// Options after `server HOST:PORT`, each checked against a strict pattern (for example
    /// `max_fails=0`).
    pub server_options: Vec<String>,
    /// Extra directives inside the upstream block, each checked against a strict pattern (for
    /// example `keepalive 16`).
    pub upstream_directives: Vec<String>,
    /// argv of the config test, for example `["nginx", "-t"]`; empty to skip.
    pub test_command: Vec<String>,
    /// argv of the reload, for example `["nginx", "-s", "reload"]`.
    pub reload_command: Vec<String>,
    /// Timeout of each command.
    pub command_timeout: Duration,
    /// Optional verification through nginx.
    pub verify: Option<NginxVerify>,
    /// nginx's pid file (the `pid` directive), when nginx runs as a process on this machine.
    /// With it, [`Router::verify`] waits until nginx's old workers stop accepting instead of
    /// the fixed [`OLD_WORKER_OVERLAP`] (and waits for that even without `verify`).
    pub pid_file: Option<PathBuf>,
}

/// Routes through nginx by rewriting the upstream file it includes and reloading it.
///
/// ```no_run
/// # async fn demo() -> Result<(), blue_green_core::ComponentError> {
/// use std::time::Duration;
/// use blue_green_core::{Endpoint, NginxConfig, NginxRouter, NginxVerify, Router};
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
    #[cfg(feature = "http-probe")]
    verify_client: reqwest::Client,
}

/// What a switch hands to its verification: nginx's workers noted before the reload (or why
/// they could not be), so `verify` can wait for exactly those to stop accepting.
#[derive(Debug)]
struct Reloaded(Result<WorkerWatch, String>);

impl NginxRouter {
    /// A router with `config`. The upstream name, server options, directives, commands and
    /// verification are checked here, so a bad config fails before any switch.
    pub fn new(config: NginxConfig) -> Result<Self, ComponentError> {
        validate_upstream_name(&config.upstream)?;
        for option in &config.server_options {
            validate_server_option(option)?;
        }
        for directive in &config.upstream_directives {
            validate_directive(directive)?;
        }
        if config.upstream_file.file_name().is_none() {
            return Err(ComponentError::invalid(format!(
                "the nginx upstream file `{}` does not name a file",
                config.upstream_file.display()
            )));
        }
        if config.reload_command.is_empty() || config.reload_command[0].is_empty() {
            return Err(ComponentError::invalid(
                "the nginx router needs a reload command, for example [\"nginx\", \"-s\", \"reload\"]",
            ));
        }
        if config.test_command.first().is_some_and(|p| p.is_empty()) {
            return Err(ComponentError::invalid(
                "the nginx test command starts with an empty program name; use for example [\"nginx\", \"-t\"], or [] to skip the test",
            ));
        }
        if config.command_timeout.is_zero() {
            return Err(ComponentError::invalid(
                "the nginx command timeout must be more than zero",
            ));
        }
        if let Some(verify) = &config.verify {
            validate_verify(verify)?;
        }
        #[cfg(feature = "http-probe")]
        let verify_client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| {
                ComponentError::failed(format!(
                    "could not build the HTTP client that verifies switches through nginx: {e}"
                ))
            })?;
        Ok(NginxRouter {
            config,
            switching: Arc::new(tokio::sync::Mutex::new(())),
            proc_root: PathBuf::from(PROC_ROOT),
            #[cfg(feature = "http-probe")]
            verify_client,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &NginxConfig {
        &self.config
    }

    /// The upstream file's content that routes to `endpoint`, after checking the endpoint.
    pub fn render(&self, endpoint: &Endpoint) -> Result<String, ComponentError> {
        let host = render_host(&endpoint.host)?;
        if endpoint.port == 0 {
            return Err(ComponentError::invalid(format!(
                "cannot route nginx to `{endpoint}`: port 0 is not a port"
            )));
        }
        let mut server = format!("server {host}:{}", endpoint.port);
        for option in &self.config.server_options {
            server.push(' ');
            server.push_str(option);
        }
        let mut text = format!(
            "{HEADER}\nupstream {} {{\n    {server};\n",
            self.config.upstream
        );
        for directive in &self.config.upstream_directives {
            text.push_str("    ");
            text.push_str(directive);
            text.push_str(";\n");
        }
        text.push_str("}\n");
        Ok(text)
    }

    fn file(&self) -> &Path {
        &self.config.upstream_file
    }

    /// Puts `previous` back (or removes the file if there was none), and says what it did.
    async fn restore(&self, previous: &Option<Vec<u8>>) -> Result<&'static str, String> {
        match previous {
            Some(bytes) => write_file(self.file(), bytes.clone())
                .await
                .map(|()| "the previous file was restored")
                .map_err(|e| format!("restoring the previous file failed too ({e})")),
            None => match tokio::fs::remove_file(self.file()).await {
                Ok(()) => Ok("the new file was removed again (there was none before)"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Ok("the new file was removed again (there was none before)")
                }
                Err(e) => Err(format!("removing the new file failed ({e})")),
            },
        }
    }

    /// With a pid file: notes nginx's workers before a reload; `None` without a pid file.
    async fn watch_workers(&self) -> Option<Result<WorkerWatch, String>> {
        let pid_file = self.config.pid_file.as_ref()?;
        let timeout = self.config.command_timeout;
        let watch = tokio::time::timeout(
            timeout,
            WorkerWatch::before_reload(&self.proc_root, pid_file),
        )
        .await
        .unwrap_or_else(|_| Err(format!("reading /proc took longer than {timeout:?}")));
        Some(watch)
    }

    /// How long a run of good answers must last: nothing once nginx's old workers are seen to
    /// stop accepting, else [`OLD_WORKER_OVERLAP`]. Fails when the workers are not replaced
    /// by `deadline`.
    async fn wait_for_workers(
        &self,
        reload: Option<&Reloaded>,
        started: tokio::time::Instant,
        deadline: tokio::time::Instant,
    ) -> Result<Duration, ComponentError> {
        let watch = match reload.map(|r| &r.0) {
            Some(Ok(watch)) => watch,
            Some(Err(why)) => {
                tracing::debug!(reason = %why, overlap = ?OLD_WORKER_OVERLAP, "cannot watch nginx's workers; verifying with the fixed overlap");
                return Ok(OLD_WORKER_OVERLAP);
            }
            None => {
                tracing::debug!(overlap = ?OLD_WORKER_OVERLAP, "no pid file, or no reload to watch; verifying with the fixed overlap");
                return Ok(OLD_WORKER_OVERLAP);
            }
        };
        let pid_file = self
            .config
            .pid_file
            .as_deref()
            .unwrap_or(Path::new(""))
            .display();
        match watch.wait(deadline, WORKER_POLL).await {
            Ok(()) => {
                tracing::debug!(
                    master = watch.master(),
                    elapsed = ?started.elapsed(),
                    "nginx's old workers stopped accepting; verifying without an overlap"
                );
                Ok(Duration::ZERO)
            }
            Err(WaitError::Timeout(why)) => Err(ComponentError::timeout(format!(
                "nginx did not replace its workers within {:?} after the reload: {why}. Check nginx's error log (a reload that nginx cannot apply keeps the old workers), and that pid_file {pid_file} belongs to the nginx that the reload command reloads",
                deadline.saturating_duration_since(started)
            ))),
            Err(WaitError::Unreadable(why)) => Err(ComponentError::failed(format!(
                "{why}; check that nginx (pid file {pid_file}) still runs"
            ))),
        }
    }

    #[cfg(feature = "http-probe")]
    async fn verify_through_nginx(
        &self,
        verify: &NginxVerify,
        instance: &Instance,
        started: tokio::time::Instant,
        overlap: Duration,
    ) -> Result<(), ComponentError> {
        use crate::probe::http::{body_snippet, contains, describe_request_error, read_body};
        use tokio::time::Instant;

        let expected = crate::probe::http::fill_placeholders(&verify.expect_body, instance);
        let deadline = started + verify.deadline;
        let over = if overlap.is_zero() {
            String::new()
        } else {
            format!(", over at least {overlap:?},")
        };
        let mut in_a_row = 0u32;
        let mut run_started = started;
        let mut requests = 0u32;
        let mut last_seen = String::from("no answer yet");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ComponentError::timeout(format!(
                    "requests through nginx to {} did not answer with `{expected}` {} times in a row{over} within {:?} ({requests} requests); last seen: {last_seen}. Check that nginx proxies that URL to upstream `{}` and that {} answers `{expected}`",
                    verify.url, verify.successes, verify.deadline, self.config.upstream, instance.endpoint
                )));
            }
            requests += 1;
            let attempt = async {
                let response = self.verify_client.get(&verify.url).send().await?;
                let status = response.status().as_u16();
                Ok::<_, reqwest::Error>((status, read_body(response).await?))
            };
            match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok((status, body)))
                    if (200..300).contains(&status) && contains(&body, expected.as_bytes()) =>
                {
                    if in_a_row == 0 {
                        run_started = Instant::now();
                    }
                    in_a_row += 1;
                    last_seen = format!(
                        "the expected answer {in_a_row} times in a row over {:?}",
                        run_started.elapsed()
                    );
                    if in_a_row >= verify.successes && run_started.elapsed() >= overlap {
                        tracing::debug!(
                            url = %verify.url,
                            requests,
                            ?overlap,
                            elapsed = ?started.elapsed(),
                            "switch verified through nginx"
                        );
                        return Ok(());
                    }
                }
                Ok(Ok((status, body))) => {
                    in_a_row = 0;
                    last_seen = format!("status {status}: {}", body_snippet(&body));
                }
                Ok(Err(error)) => {
                    in_a_row = 0;
                    last_seen = describe_request_error(&error, remaining);
                }
                Err(_) => {
                    in_a_row = 0;
                    last_seen = "a request still unanswered at the deadline".into();
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(verify.interval.min(remaining)).await;
        }
    }
}

#[async_trait]
impl Router for NginxRouter {
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
        let text = match tokio::fs::read_to_string(self.file()).await {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ComponentError::unreachable(format!(
                    "cannot read the nginx upstream file {}: {e}",
                    self.file().display()
                ))
                .with_source(e))
            }
        };
        parse_target(&text, &self.config.upstream).map_err(|why| {
            ComponentError::failed(format!(
                "cannot tell where nginx routes: the upstream file {} {why}; route again (for example `blue-green switch`) to rewrite it",
                self.file().display()
            ))
        })
    }

    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        // Everything is checked before the file is touched.
        let content = self.render(endpoint)?;
        let _switching = self.switching.lock().await;
        let file = self.file().display().to_string();

        let previous = match tokio::fs::read(self.file()).await {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ComponentError::unreachable(format!(
                    "cannot read the nginx upstream file {file} before switching: {e}"
                ))
                .with_source(e))
            }
        };
        write_file(self.file(), content.into_bytes())
            .await
            .map_err(|e| {
                ComponentError::unreachable(format!(
                    "cannot write the nginx upstream file {file}: {e}; nothing was changed"
                ))
            })?;

        if !self.config.test_command.is_empty() {
            if let Err(failure) = run(&self.config.test_command, self.config.command_timeout).await
            {
                let restored = self.restore(&previous).await;
                return Err(failure.into_error(
                    format!("rejected the new upstream file {file} (routing to {endpoint})"),
                    restored,
                    false,
                ));
            }
        }

        // Before the reload: once `nginx -s reload` returns, the master may already have
        // started new workers.
        let watch = self.watch_workers().await;
        if let Err(failure) = run(&self.config.reload_command, self.config.command_timeout).await {
            let restored = self.restore(&previous).await;
            // The reload may have gone through before failing (or timing out): reload again so
            // that nginx runs the restored file, not the new one.
            let reloaded = match &restored {
                Ok(_) if failure.started => {
                    run(&self.config.reload_command, self.config.command_timeout)
                        .await
                        .map_err(|again| again.detail)
                }
                _ => Ok(()),
            };
            let restored = match (restored, reloaded) {
                (Ok(done), Ok(())) => Ok(done),
                (Ok(done), Err(why)) => Err(format!(
                    "{done}, but reloading nginx with it failed too: {why}"
                )),
                (Err(why), _) => Err(why),
            };
            return Err(failure.into_error(
                format!(
                    "failed after writing the new upstream file {file} (routing to {endpoint})"
                ),
                restored,
                true,
            ));
        }
        Ok(watch.map_or_else(RouteReceipt::new, |w| RouteReceipt::with(Reloaded(w))))
    }

    async fn verify(
        &self,
        instance: &Instance,
        receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        let started = tokio::time::Instant::now();
        let reload = receipt.detail::<Reloaded>();
        let Some(verify) = &self.config.verify else {
            // Without a URL, still wait for the old workers when they can be watched.
            if matches!(reload, Some(Reloaded(Ok(_)))) {
                let deadline = started + self.config.command_timeout;
                self.wait_for_workers(reload, started, deadline).await?;
            }
            return Ok(());
        };
        let overlap = self
            .wait_for_workers(reload, started, started + verify.deadline)
            .await?;
        #[cfg(feature = "http-probe")]
        {
            self.verify_through_nginx(verify, instance, started, overlap)
                .await
        }
        #[cfg(not(feature = "http-probe"))]
        {
            // `new` refuses a verification without the feature; kept for completeness.
            let _ = (verify, instance, overlap);
            Err(ComponentError::invalid(
                "verifying through nginx needs blue-green-core's `http-probe` feature",
            ))
        }
    }
}

/// Writes `bytes` to `path` atomically, off the async runtime.
async fn write_file(path: &Path, bytes: Vec<u8>) -> io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| io::Error::other(format!("the writing task failed: {e}")))?
}

/// A command that failed: which one, and what it said.
struct CommandFailure {
    /// The argv, quoted for a message: `` `nginx -s reload` ``.
    command: String,
    kind: ComponentErrorKind,
    /// Why, with the command's output.
    detail: String,
    /// False when the program could not even be started (so it changed nothing).
    started: bool,
}

impl CommandFailure {
    /// The error for a failed switch: the command, `what` it did, why, and what was done
    /// about it.
    fn into_error(
        self,
        what: String,
        restored: Result<&'static str, String>,
        reloaded_again: bool,
    ) -> ComponentError {
        match restored {
            Ok(done) => {
                let again = if reloaded_again && self.started {
                    " and nginx reloaded with it"
                } else {
                    ""
                };
                ComponentError::new(
                    self.kind,
                    format!(
                        "{} {what}: {}; {done}{again}, so nginx still routes as before",
                        self.command, self.detail
                    ),
                )
            }
            Err(why) => ComponentError::failed(format!(
                "{} {what}: {}; {why}: check the file by hand and reload nginx",
                self.command, self.detail
            )),
        }
    }
}

/// Runs `argv` (never through a shell) within `timeout`; the child is killed if it overruns.
async fn run(argv: &[String], timeout: Duration) -> Result<(), CommandFailure> {
    let command = format!("`{}`", argv.join(" "));
    let fail = |kind, detail: String| CommandFailure {
        command: command.clone(),
        kind,
        detail,
        started: true,
    };
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            let detail = if e.kind() == io::ErrorKind::NotFound {
                format!(
                    "`{}` was not found; install nginx or give the command's full path",
                    argv[0]
                )
            } else {
                format!("could not be started: {e}")
            };
            return Err(CommandFailure {
                started: false,
                ..fail(ComponentErrorKind::Unreachable, detail)
            });
        }
    };
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            return Err(fail(
                ComponentErrorKind::Timeout,
                format!("did not finish within {timeout:?} and was killed"),
            ))
        }
        Ok(Err(e)) => {
            return Err(fail(
                ComponentErrorKind::Unreachable,
                format!("could not be waited for: {e}"),
            ))
        }
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if said.is_empty() {
        said = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    if said.len() > OUTPUT_LIMIT {
        let mut cut = OUTPUT_LIMIT;
        while !said.is_char_boundary(cut) {
            cut -= 1;
        }
        said.truncate(cut);
        said.push('…');
    }
    let status = match output.status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "was killed by a signal".to_string(),
    };
    let detail = if said.is_empty() {
        status
    } else {
        format!("{status}: {}", said.replace('\n', " | "))
    };
    Err(fail(ComponentErrorKind::Failed, detail))
}

/// `[A-Za-z0-9_.-]{1,128}`.
fn validate_upstream_name(name: &str) -> Result<(), ComponentError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ComponentError::invalid(format!(
            "`{}` is not a valid nginx upstream name: use 1 to 128 characters of A-Z, a-z, 0-9, `_`, `.` and `-`",
            name.escape_debug()
        )))
    }
}

/// `[a-z_]+=[A-Za-z0-9.]+` (`max_fails=0`) or a bare `[a-z_]+` (`backup`).
fn validate_server_option(option: &str) -> Result<(), ComponentError> {
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let value =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    let ok = match option.split_once('=') {
        Some((name, val)) => word(name) && value(val),
        None => word(option),
    };
    if ok {
        Ok(())
    } else {
        Err(ComponentError::invalid(format!(
            "`{}` is not a valid nginx server option: write NAME=VALUE (a-z and `_`, then A-Z, a-z, 0-9 and `.`) such as `max_fails=0`, or a bare word such as `backup`",
            option.escape_debug()
        )))
    }
}

/// A known upstream keyword, then arguments of `[A-Za-z0-9._]+`, separated by single spaces.
fn validate_directive(directive: &str) -> Result<(), ComponentError> {
    let mut words = directive.split(' ');
    let keyword = words.next().unwrap_or_default();
    let known = UPSTREAM_DIRECTIVES.contains(&keyword);
    let args_ok = words.all(|arg| {
        !arg.is_empty()
            && arg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'))
    });
    if known && args_ok {
        return Ok(());
    }
    let hint = if directive.trim_end().ends_with(';') {
        " (leave out the `;`, the router adds it)"
    } else {
        ""
    };
    Err(ComponentError::invalid(format!(
        "`{}` is not an allowed nginx upstream directive{hint}: use one of {} followed by arguments of A-Z, a-z, 0-9, `.` and `_`, separated by single spaces, such as `keepalive 16`",
        directive.escape_debug(),
        UPSTREAM_DIRECTIVES.join(", ")
    )))
}

fn validate_verify(verify: &NginxVerify) -> Result<(), ComponentError> {
    if !cfg!(feature = "http-probe") {
        return Err(ComponentError::invalid(
            "verifying through nginx needs blue-green-core's `http-probe` feature; turn it on or leave out the verification",
        ));
    }
    if !verify.url.starts_with("http://") {
        return Err(ComponentError::invalid(format!(
            "the nginx verification URL `{}` must start with http://, for example http://127.0.0.1/health",
            verify.url
        )));
    }
    if verify.successes == 0 {
        return Err(ComponentError::invalid(
            "the nginx verification needs at least 1 success in a row",
        ));
    }
    if verify.deadline <= OLD_WORKER_OVERLAP {
        return Err(ComponentError::invalid(format!(
            "the nginx verification deadline must be more than {OLD_WORKER_OVERLAP:?} (nginx's old workers take about that long to stop accepting), for example 10s"
        )));
    }
    Ok(())
}

/// The host as nginx wants it: an IPv4 address, a bracketed IPv6 address, or a host name of
/// `[A-Za-z0-9.-]`.
fn render_host(host: &str) -> Result<String, ComponentError> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host.to_string());
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Ok(format!("[{v6}]"));
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    if ok {
        Ok(host.to_string())
    } else {
        Err(ComponentError::invalid(format!(
            "cannot route nginx to host `{}`: use an IPv4 or IPv6 address or a host name of A-Z, a-z, 0-9, `.` and `-`",
            host.escape_debug()
        )))
    }
}

/// The endpoint of the one `server` in `upstream NAME { … }`; `None` for a file without an
/// upstream block. The error completes "the upstream file X …".
fn parse_target(text: &str, upstream: &str) -> Result<Option<Endpoint>, String> {
    // Tokens, with comments dropped and `;`, `{`, `}` as tokens of their own.
    let mut tokens = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let spaced = line
            .replace(';', " ; ")
            .replace('{', " { ")
            .replace('}', " } ");
        tokens.extend(spaced.split_whitespace().map(str::to_string));
    }
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut tokens = tokens.iter().map(String::as_str);
    match (tokens.next(), tokens.next(), tokens.next()) {
        (Some("upstream"), Some(name), Some("{")) if name == upstream => {}
        (Some("upstream"), Some(name), Some("{")) => {
            return Err(format!("defines upstream `{name}`, not `{upstream}`"))
        }
        _ => return Err(format!("does not start with `upstream {upstream} {{`")),
    }
    let mut servers = Vec::new();
    let mut closed = false;
    let mut statement: Vec<&str> = Vec::new();
    for token in tokens {
        match token {
            ";" => {
                if statement.first() == Some(&"server") {
                    servers.push(statement.get(1).copied().unwrap_or_default());
                }
                statement.clear();
            }
            "}" if statement.is_empty() && !closed => closed = true,
            _ if closed => return Err("has text after the upstream block".into()),
            "{" | "}" => return Err("has a nested or unbalanced block".into()),
            word => statement.push(word),
        }
    }
    if !closed || !statement.is_empty() {
        return Err("is cut short: the upstream block is not closed".into());
    }
    match servers.as_slice() {
        [address] => address
            .parse::<Endpoint>()
            .map(Some)
            .map_err(|_| format!("has a server `{address}` that is not HOST:PORT")),
        [] => Err("has no `server` in its upstream block".into()),
        many => Err(format!(
            "has {} servers in its upstream block; blue-green writes exactly one",
            many.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> NginxConfig {
        NginxConfig {
            upstream: "web_app-1.x".into(),
            upstream_file: dir.join("upstream.conf"),
            server_options: vec!["max_fails=0".into(), "backup".into()],
            upstream_directives: vec!["keepalive 16".into(), "keepalive_timeout 60s".into()],
            test_command: vec![],
            reload_command: vec!["true".into()],
            command_timeout: Duration::from_secs(5),
            verify: None,
            pid_file: None,
        }
    }

    #[test]
    fn renders_one_server_with_options_and_directives() {
        let router = NginxRouter::new(config(Path::new("/tmp"))).unwrap();
        let text = router.render(&Endpoint::new("127.0.0.1", 8082)).unwrap();
        assert_eq!(
            text,
            format!(
                "{HEADER}\nupstream web_app-1.x {{\n    server 127.0.0.1:8082 max_fails=0 backup;\n    keepalive 16;\n    keepalive_timeout 60s;\n}}\n"
            )
        );
        let v6 = router.render(&Endpoint::new("::1", 80)).unwrap();
        assert!(v6.contains("server [::1]:80 "), "{v6}");
        let name = router
            .render(&Endpoint::new("app-green.internal", 80))
            .unwrap();
        assert!(name.contains("server app-green.internal:80 "), "{name}");
    }

    #[test]
    fn what_it_renders_it_parses_back() {
        let router = NginxRouter::new(config(Path::new("/tmp"))).unwrap();
        for endpoint in [
            Endpoint::new("127.0.0.1", 8082),
            Endpoint::new("::1", 9000),
            Endpoint::new("green.local", 1),
        ] {
            let text = router.render(&endpoint).unwrap();
            assert_eq!(parse_target(&text, "web_app-1.x"), Ok(Some(endpoint)));
        }
    }

    #[test]
    fn parsing_refuses_files_it_did_not_write() {
        let name = "web";
        assert_eq!(parse_target("", name), Ok(None));
        assert_eq!(parse_target("# only a comment\n", name), Ok(None));
        let cases = [
            (
                "upstream other { server 1.2.3.4:80; }",
                "defines upstream `other`",
            ),
            ("server 1.2.3.4:80;", "does not start with"),
            ("upstream web { keepalive 2; }", "no `server`"),
            ("upstream web { server a:1; server b:2; }", "2 servers"),
            ("upstream web { server 1.2.3.4:80;", "not closed"),
            ("upstream web { server unix:/x.sock; }", "not HOST:PORT"),
            (
                "upstream web { server a:1; } server b:2;",
                "after the upstream block",
            ),
        ];
        for (text, why) in cases {
            let error = parse_target(text, name).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert_eq!(
            parse_target(
                "upstream web {\n  server 10.0.0.2:81 weight=1; # hand-written\n}\n",
                name
            ),
            Ok(Some(Endpoint::new("10.0.0.2", 81)))
        );
    }

    #[test]
    fn names_options_and_directives_are_checked_strictly() {
        for good in ["web", "Web_1.a-b"] {
            assert!(validate_upstream_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a b", "a;b", "a{", "a}", "a\nb", "a$b", "a\"b", "a'b", "a#b", "a/b",
        ] {
            assert!(validate_upstream_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "max_fails=0",
            "weight=1",
            "fail_timeout=10s",
            "backup",
            "down",
        ] {
            assert!(validate_server_option(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "=1",
            "a=",
            "max_fails=0;",
            "a=1 b=2",
            "a=$x",
            "a=\"1\"",
            "A=1",
            "a=1}",
            "a=1\n",
        ] {
            assert!(validate_server_option(bad).is_err(), "{bad:?}");
        }
        for good in [
            "keepalive 16",
            "keepalive_timeout 60s",
            "least_conn",
            "random two least_conn",
        ] {
            assert!(validate_directive(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "keepalive 16;",
            "keepalive  16",
            "keepalive\t16",
            "keepalive 16\nserver evil:1",
            "proxy_pass http://evil",
            "server 1.2.3.4:80",
            "hash $remote_addr",
            "keepalive 1}",
            "keepalive \"1\"",
            "include /etc/passwd",
        ] {
            assert!(validate_directive(bad).is_err(), "{bad:?}");
        }
        assert!(validate_directive("keepalive 16;")
            .unwrap_err()
            .message
            .contains("leave out the `;`"));
    }

    #[test]
    fn hosts_must_be_addresses_or_plain_names() {
        assert_eq!(render_host("10.1.2.3").unwrap(), "10.1.2.3");
        assert_eq!(render_host("::1").unwrap(), "[::1]");
        assert_eq!(
            render_host("blue.app-1.internal").unwrap(),
            "blue.app-1.internal"
        );
        for bad in [
            "",
            "a b",
            "a;b",
            "a}",
            "a{",
            "a\nb",
            "$host",
            "\"a\"",
            "-a",
            "[::1]",
            "a:b",
            "unix:/tmp/x",
            "a#b",
        ] {
            assert!(render_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_config_is_refused_when_the_router_is_built() {
        let dir = Path::new("/tmp");
        let mut c = config(dir);
        c.upstream = "web;".into();
        assert!(NginxRouter::new(c).is_err());
        let mut c = config(dir);
        c.reload_command = vec![];
        assert!(NginxRouter::new(c)
            .unwrap_err()
            .message
            .contains("reload command"));
        let mut c = config(dir);
        c.server_options = vec!["max_fails=0;".into()];
        assert!(NginxRouter::new(c).is_err());
        let mut c = config(dir);
        c.upstream_directives = vec!["keepalive 16; server evil:1".into()];
        assert!(NginxRouter::new(c).is_err());
        let mut c = config(dir);
        c.verify = Some(NginxVerify {
            successes: 0,
            ..NginxVerify::new("http://127.0.0.1/")
        });
        assert!(NginxRouter::new(c).is_err());
        let mut c = config(dir);
        c.verify = Some(NginxVerify::new("127.0.0.1/"));
        assert!(NginxRouter::new(c).unwrap_err().message.contains("http://"));
    }

    #[tokio::test]
    async fn a_failing_test_command_restores_the_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.test_command = vec![
            "sh".into(),
            "-c".into(),
            "echo 'config is bad' >&2; exit 1".into(),
        ];
        let router = NginxRouter::new(c).unwrap();
        let file = dir.path().join("upstream.conf");
        let before = b"upstream web_app-1.x { server 127.0.0.1:1; }  # hand\n".to_vec();
        std::fs::write(&file, &before).unwrap();
        let error = router
            .route_to(&Endpoint::new("127.0.0.1", 2))
            .await
            .unwrap_err();
        assert_eq!(std::fs::read(&file).unwrap(), before);
        assert!(error.message.contains("config is bad"), "{error}");
        assert!(error.message.starts_with("`sh -c "), "{error}");
        assert!(
            error.message.contains("previous file was restored"),
            "{error}"
        );
        assert!(
            error.message.contains(&file.display().to_string()),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_failing_reload_without_a_previous_file_removes_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.reload_command = vec!["false".into()];
        let router = NginxRouter::new(c).unwrap();
        let error = router
            .route_to(&Endpoint::new("127.0.0.1", 2))
            .await
            .unwrap_err();
        assert!(!dir.path().join("upstream.conf").exists());
        assert!(error.message.contains("`false` failed"), "{error}");
        assert!(error.message.contains("removed again"), "{error}");
        assert_eq!(router.target().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_missing_program_is_unreachable_and_a_slow_one_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.reload_command = vec!["/nonexistent/nginx".into(), "-s".into(), "reload".into()];
        let router = NginxRouter::new(c).unwrap();
        let error = router
            .route_to(&Endpoint::new("127.0.0.1", 2))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ComponentErrorKind::Unreachable, "{error}");
        assert!(error.message.contains("was not found"), "{error}");

        let mut c = config(dir.path());
        c.test_command = vec!["sleep".into(), "5".into()];
        c.command_timeout = Duration::from_millis(200);
        let router = NginxRouter::new(c).unwrap();
        let error = router
            .route_to(&Endpoint::new("127.0.0.1", 2))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ComponentErrorKind::Timeout, "{error}");
        assert!(
            error.message.contains("did not finish within 200ms"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_good_switch_writes_the_file_and_target_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let router = NginxRouter::new(config(dir.path())).unwrap();
        assert_eq!(router.target().await.unwrap(), None);
        router
            .route_to(&Endpoint::new("127.0.0.1", 8082))
            .await
            .unwrap();
        assert_eq!(
            router.target().await.unwrap(),
            Some(Endpoint::new("127.0.0.1", 8082))
        );
        std::fs::write(dir.path().join("upstream.conf"), "garbage {").unwrap();
        let error = router.target().await.unwrap_err();
        assert!(error.message.contains("upstream.conf"), "{error}");
    }
}
