//! `blue-green proxy`: run blue-green's own proxy in the foreground, and drive a running one
//! over its control socket (status, pause, resume, maintenance). No config file is read.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use blue_green_proxy::{ControlClient, Proxy, ProxyConfig, Status};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tokio::signal::unix::SignalKind;

use crate::config::DEFAULT_PROXY_CONTROL;
use crate::failure::Failure;
use crate::output::Printer;

/// `blue-green proxy` and its commands.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ProxyCommand,
}

/// The control socket flag, shared by every proxy command.
#[derive(Debug, Args)]
pub struct ControlArg {
    /// The proxy's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PROXY_CONTROL, env = "BLUE_GREEN_PROXY_CONTROL")]
    pub control: PathBuf,
}

/// The proxy commands.
#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Run the proxy in the foreground (for systemd or a container); logs go to stderr.
    /// SIGTERM or Ctrl-C stops it gracefully: it stops taking connections and lets open
    /// requests finish (up to --grace). To replace the binary under load, start the new one
    /// with the same flags and --take-over (or send SIGUSR2, which does it for you).
    #[command(after_long_help = "\
Examples:
  blue-green proxy run --listen 127.0.0.1:8080 --control /run/blue-green/proxy.sock --state /var/lib/blue-green/proxy.json
  blue-green proxy run --listen 0.0.0.0:80 --listen [::]:80 --state /var/lib/blue-green/proxy.json

Upgrading the proxy without losing a request (see docs/proxy.md, \"Upgrading the proxy\"):
  blue-green proxy run --listen 127.0.0.1:8080 --control /run/blue-green/proxy.sock --state /var/lib/blue-green/proxy.json --take-over
  kill -USR2 <pid of the running proxy>   # it starts its own path again with --take-over")]
    Run(RunArgs),
    /// Show the proxy's mode, its apps and their targets, and each target's counters.
    Status(ControlArg),
    /// Hold new requests (a bounded queue, for a bounded time, then 503) until `resume`.
    Pause(ControlArg),
    /// Serve again; held requests go on, oldest first.
    Resume(ControlArg),
    /// Answer every request with a 503 maintenance page (on), or serve again (off). The health
    /// path keeps answering 200.
    Maintenance {
        /// on or off.
        #[arg(value_enum)]
        switch: OnOff,
        /// The control socket.
        #[command(flatten)]
        control: ControlArg,
    },
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Turn it on.
    On,
    /// Turn it off.
    Off,
}

/// `blue-green proxy run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// An address to take client traffic on (HTTP/1.1 and HTTP/2 cleartext); repeat for more.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: Vec<SocketAddr>,
    /// The control socket to create (mode 0600; only its owner and root may use it).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PROXY_CONTROL)]
    pub control: PathBuf,
    /// The file to keep the routes in, so a restarted proxy serves the same targets at once.
    /// Without it, routes live in memory only.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// A path the proxy answers itself with 200, in every mode.
    #[arg(long, value_name = "PATH", default_value = "/_blue-green/health")]
    pub health_path: String,
    /// How long a client may take to send a request's head (slowloris guard).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// The largest request head taken, in bytes (at least 8192).
    #[arg(long, value_name = "BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// How long connecting to an upstream may take (then 502).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// How long an upstream may take to start its answer (then 504); bodies are not limited.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub response_timeout: Duration,
    /// How long requests held by a pause wait before they get 503.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub pause_timeout: Duration,
    /// How long open requests may take to finish when the proxy is stopped.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Keep X-Forwarded-* headers that clients send (only behind a proxy you trust).
    #[arg(long)]
    pub trust_forwarded_headers: bool,
    /// Take the listening sockets and the routes over from the proxy running on --control,
    /// instead of binding them: no connection is refused or reset. The running proxy then
    /// finishes what it has in flight (up to its own --grace) and exits 0. --listen must name
    /// the addresses it listens on.
    #[arg(long)]
    pub take_over: bool,
    /// Threads that serve traffic (default: one per CPU). With 1, everything runs on one
    /// thread with no work-stealing between threads: the leanest and, for one core's worth of
    /// traffic, the fastest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// If `command` is `proxy run`, the serving threads it asks for (`--threads N`; `None`: one
/// per CPU); the binary builds its async runtime with them. `None` for every other command.
pub fn serving_threads(command: &crate::cli::Command) -> Option<Option<usize>> {
    match command {
        crate::cli::Command::Proxy(ProxyArgs {
            command: ProxyCommand::Run(run),
        }) => Some(run.threads.map(usize::from)),
        _ => None,
    }
}

/// The name of a proxy command, for its result line.
pub fn command_name(args: &ProxyArgs) -> &'static str {
    match args.command {
        ProxyCommand::Run(_) => "proxy run",
        ProxyCommand::Status(_) => "proxy status",
        ProxyCommand::Pause(_) => "proxy pause",
        ProxyCommand::Resume(_) => "proxy resume",
        ProxyCommand::Maintenance { .. } => "proxy maintenance",
    }
}

/// Runs a proxy command.
pub async fn run(args: &ProxyArgs, printer: Printer) -> Result<(), Failure> {
    let name = command_name(args);
    let refused = |e: blue_green_proxy::Error| Failure::Unreachable(e.to_string());
    match &args.command {
        ProxyCommand::Run(run) => serve(run, printer).await,
        ProxyCommand::Status(c) => {
            let status = ControlClient::new(&c.control)
                .status()
                .await
                .map_err(refused)?;
            printer.success(
                name,
                json!({ "status": status }),
                &status_text(&status),
                true,
            );
            Ok(())
        }
        ProxyCommand::Pause(c) => {
            let answer = ControlClient::new(&c.control)
                .pause()
                .await
                .map_err(refused)?;
            printer.success(
                name,
                json!({ "mode": answer.mode }),
                "paused: new requests are held until `blue-green proxy resume`",
                false,
            );
            Ok(())
        }
        ProxyCommand::Resume(c) => {
            let answer = ControlClient::new(&c.control)
                .resume()
                .await
                .map_err(refused)?;
            printer.success(
                name,
                json!({ "mode": answer.mode }),
                "serving: held requests went on",
                false,
            );
            Ok(())
        }
        ProxyCommand::Maintenance { switch, control } => {
            let on = *switch == OnOff::On;
            let answer = ControlClient::new(&control.control)
                .maintenance(on)
                .await
                .map_err(refused)?;
            let human = if on {
                "maintenance on: every request gets the 503 maintenance page"
            } else {
                "maintenance off: serving"
            };
            printer.success(name, json!({ "mode": answer.mode }), human, false);
            Ok(())
        }
    }
}

async fn serve(run: &RunArgs, printer: Printer) -> Result<(), Failure> {
    if run.max_header_bytes < 8192 {
        return Err(Failure::Usage(format!(
            "--max-header-bytes {} is too small: at least 8192",
            run.max_header_bytes
        )));
    }
    if !run.health_path.starts_with('/') {
        return Err(Failure::Usage(format!(
            "--health-path `{}` must start with /",
            run.health_path
        )));
    }
    let mut config = ProxyConfig::new(run.listen.iter().copied()).with_control(&run.control);
    config.state_file = run.state.clone();
    config.health_path = run.health_path.clone();
    config.trust_forwarded_headers = run.trust_forwarded_headers;
    config.limits.header_read_timeout = run.header_timeout;
    config.limits.max_header_bytes = run.max_header_bytes;
    config.limits.upstream_connect_timeout = run.connect_timeout;
    config.limits.upstream_response_timeout = run.response_timeout;
    config.pause.max_wait = run.pause_timeout;
    let started = if run.take_over {
        Proxy::take_over(config).await
    } else {
        Proxy::start(config).await
    };
    let proxy = started.map_err(|e| match e {
        blue_green_proxy::Error::StateCorrupt { .. } | blue_green_proxy::Error::Invalid(_) => {
            Failure::Usage(e.to_string())
        }
        e => Failure::Unreachable(e.to_string()),
    })?;
    let addrs: Vec<String> = proxy.local_addrs().iter().map(|a| a.to_string()).collect();
    tracing::info!(
        "blue-green proxy {} {}; control socket {}; {}",
        if run.take_over {
            "took over"
        } else {
            "listening on"
        },
        addrs.join(", "),
        run.control.display(),
        match &run.state {
            Some(s) => format!("routes kept in {}", s.display()),
            None => "routes kept in memory only (pass --state FILE to keep them across restarts)"
                .to_string(),
        }
    );
    if !printer.quiet && !printer.json {
        eprintln!("listening on {}", addrs.join(", "));
    }
    notify_systemd();
    let mut upgrade = signal(SignalKind::user_defined2());
    loop {
        tokio::select! {
            _ = stopped() => break,
            _ = proxy.handed_over() => {
                tracing::info!(
                    "handed over to a new proxy process: finishing what is in flight (up to {:?}), then exiting",
                    run.grace
                );
                let left = proxy.retire(run.grace).await;
                if left > 0 {
                    tracing::warn!("{left} requests or connections were still open after {:?}; closed", run.grace);
                }
                printer.success(
                    "proxy run",
                    json!({ "listened": addrs, "handed_over": true, "closed_at_grace": left }),
                    "handed over to the new proxy process; stopped",
                    false,
                );
                return Ok(());
            }
            _ = async { match upgrade.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                start_successor();
            }
        }
    }
    tracing::info!(
        "stopping: letting open requests finish (up to {:?})",
        run.grace
    );
    proxy.shutdown_within(run.grace).await;
    printer.success("proxy run", json!({ "listened": addrs }), "stopped", false);
    Ok(())
}

/// Watches a signal; `None` (with a warning) if it cannot be watched.
fn signal(kind: SignalKind) -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot watch signal {} ({e})", kind.as_raw_value());
            None
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stopped() {
    let mut term = signal(SignalKind::terminate());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// On SIGUSR2 (systemd's `ExecReload=/bin/kill -USR2 $MAINPID`): starts the program at this
/// process's own path (argv[0], which names the new binary once a package upgrade replaced
/// the file) with the same arguments and `--take-over`. It is a successor, not a child this
/// process waits for: it outlives this one, so the bounded runner of `blue_green_core::process`
/// (which kills what it started) is not the tool here. Its logs go where this one's go.
fn start_successor() {
    let mut args = std::env::args_os();
    let Some(program) = args.next() else {
        tracing::warn!("SIGUSR2: cannot tell this program's path; start the new proxy with --take-over yourself");
        return;
    };
    let mut args: Vec<std::ffi::OsString> = args.collect();
    if !args.iter().any(|a| a == "--take-over") {
        args.push("--take-over".into());
    }
    match tokio::process::Command::new(&program).args(&args).spawn() {
        Ok(mut child) => {
            let pid = child.id().unwrap_or_default();
            tracing::info!(
                "SIGUSR2: started {} (pid {pid}) to take over",
                std::path::Path::new(&program).display()
            );
            tokio::spawn(async move {
                if let Ok(status) = child.wait().await {
                    if !status.success() {
                        tracing::warn!("the new proxy process (pid {pid}) exited with {status}; this one serves on");
                    }
                }
            });
        }
        Err(e) => tracing::warn!(
            "SIGUSR2: could not start {}: {e}; this proxy serves on",
            std::path::Path::new(&program).display()
        ),
    }
}

/// Tells systemd (a `Type=notify` unit, `NotifyAccess=all`) that the proxy serves, and that
/// this process is the unit's main process now: after a take-over the old process exits and
/// systemd follows the new one instead of stopping the unit. Nothing without `NOTIFY_SOCKET`.
fn notify_systemd() {
    use std::os::linux::net::SocketAddrExt;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    let bytes = path.as_encoded_bytes();
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|socket| {
        // `@name` is an abstract socket address.
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
            None => std::os::unix::net::SocketAddr::from_pathname(&path)?,
        };
        socket.send_to_addr(message.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!("could not notify systemd on NOTIFY_SOCKET: {e}");
    }
}

/// `proxy status` for people.
fn status_text(status: &Status) -> String {
    let mut out = format!("mode: {:?}", status.mode).to_lowercase();
    if status.queued > 0 {
        let _ = write!(out, " ({} requests held)", status.queued);
    }
    out.push('\n');
    if status.apps.is_empty() {
        out.push_str("apps: none yet (the first deploy sets one)\n");
    }
    for app in &status.apps {
        let hosts = if app.hosts.is_empty() {
            "default app".to_string()
        } else {
            app.hosts.join(", ")
        };
        let _ = write!(
            out,
            "app {} ({hosts}) -> {}",
            app.app,
            app.target.as_deref().unwrap_or("no target")
        );
        if let Some(split) = &app.split {
            let _ = write!(
                out,
                ", {}% of new clients -> {} (sticky cookie bg-{})",
                split.percent, split.next, app.app
            );
        }
        if let Some(preview) = &app.preview {
            let _ = write!(out, "; preview {} -> {}", preview.host, preview.target);
        }
        out.push('\n');
    }
    for t in &status.targets {
        let _ = writeln!(
            out,
            "  {:<22} in flight {:<5} requests {:<8} errors {:<5} cut {:<5} responses {:<8} 5xx {}",
            t.endpoint, t.in_flight, t.requests, t.errors, t.cut, t.responses, t.error_responses
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<crate::cli::Cli, clap::Error> {
        crate::cli::Cli::try_parse_from(std::iter::once("blue-green").chain(args.iter().copied()))
    }

    #[test]
    fn status_shows_a_split_a_preview_and_the_response_counters() {
        let status: Status = serde_json::from_value(json!({
            "mode": "serving",
            "queued": 0,
            "apps": [{
                "app": "web",
                "hosts": ["web.example"],
                "target": "127.0.0.1:8081",
                "split": { "next": "127.0.0.1:8082", "percent": 20 },
                "preview": { "host": "preview.example", "target": "127.0.0.1:8082" }
            }],
            "targets": [{
                "endpoint": "127.0.0.1:8082", "in_flight": 1, "requests": 40, "errors": 1,
                "cut": 0, "responses": 39, "error_responses": 3
            }]
        }))
        .unwrap();
        let text = status_text(&status);
        assert!(
            text.contains("app web (web.example) -> 127.0.0.1:8081, 20% of new clients -> 127.0.0.1:8082 (sticky cookie bg-web); preview preview.example -> 127.0.0.1:8082\n"),
            "{text}"
        );
        assert!(
            text.contains("responses 39 ") && text.contains("5xx 3"),
            "{text}"
        );
    }

    #[test]
    fn proxy_run_threads_pick_the_runtime_and_zero_is_refused() {
        let one = parse(&["proxy", "run", "--threads", "1"]).unwrap();
        assert_eq!(serving_threads(&one.command), Some(Some(1)));
        let default = parse(&["proxy", "run"]).unwrap();
        assert_eq!(serving_threads(&default.command), Some(None));
        let status = parse(&["proxy", "status"]).unwrap();
        assert_eq!(
            serving_threads(&status.command),
            None,
            "not a serving command"
        );
        assert!(parse(&["proxy", "run", "--threads", "0"]).is_err());
    }
}
