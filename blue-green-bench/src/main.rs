//! `blue-green-bench`: M deploys under steady load through nginx, done by the real `blue-green`
//! binary and then by a faithful port of the blog post's `deploy.sh`, on the same machine in
//! the same run. Prints a table for each and the ratios; `--json FILE` writes the same.
//!
//! ```text
//! cargo run -p blue-green-bench --release -- --deploys 20 --clients 8 --json bench.json
//! ```
//!
//! Everything runs on loopback: nginx in a temporary directory, the app in containers that
//! publish on 127.0.0.1. Containers, compose projects, nginx and the temporary directory are
//! removed at the end, also after an error or Ctrl-C.

mod baseline;
mod child;
mod load;
mod ours;
mod proxy_process;
mod report;
mod resources;
mod router_phase;
mod throughput;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::baseline::{Baseline, BaselineConfig};
use crate::load::{LoadConfig, RunningLoad, Sample};
use crate::ours::{OursConfig, RuntimeKind};
use crate::report::{Comparison, DeployFigures, LoadSummary, PhaseReport};
use crate::resources::ResourceProbe;
use crate::router_phase::RouterKind;
use blue_green_core::Endpoint;
use blue_green_testkit::docker::{demo_app_image, DockerCleanup};
use blue_green_testkit::nginx::NginxHarness;

/// Deploys under load: blue-green against the shell-script way.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Deploys in each phase.
    #[arg(long, default_value_t = 20)]
    deploys: usize,
    /// Concurrent clients sending requests through nginx.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime blue-green drives.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Docker)]
    runtime: RuntimeKind,
    /// blue-green's configured drain.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// blue-green's configured stop timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,
    /// The app's own start time (demo-app's START_DELAY_MS), in both phases.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    app_start_delay: Duration,
    /// How the app answers SIGTERM, in both phases: graceful or abort.
    /// The default is the blog's app: Spring Boot 2.4 stops at once on SIGTERM
    /// (`server.shutdown=immediate`).
    #[arg(long, value_enum, default_value_t = SigtermMode::Abort)]
    sigterm_mode: SigtermMode,
    /// Server-side time of a slow request.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    slow: Duration,
    /// Bytes in each POST body.
    #[arg(long, default_value_t = 4096)]
    post_bytes: usize,
    /// Pause of each client between two requests.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// Pause between two deploys.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    gap: Duration,
    /// The baseline's fixed sleep after `up -d` (the blog post: 30s). Shorter than the app's
    /// start plus nginx's fail_timeout (10s), the script's checks often miss the new color,
    /// which nginx has marked down while it started, and the script gives up on it.
    #[arg(long, default_value = "12s", value_parser = humantime::parse_duration)]
    baseline_sleep: Duration,
    /// The baseline's pause between two health checks (the blog post: 5s).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    baseline_retry_pause: Duration,
    /// The baseline's number of health checks (the blog post: 5).
    #[arg(long, default_value_t = 5)]
    baseline_attempts: u32,
    /// Run only this project's phase.
    #[arg(long, conflicts_with = "only_baseline")]
    only_ours: bool,
    /// Run only the baseline phase.
    #[arg(long)]
    only_baseline: bool,
    /// The routers blue-green deploys through, one phase each, in this order (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "nginx,proxy,haproxy,caddy"
    )]
    routers: Vec<RouterKind>,
    /// Path of the `blue-green` binary (default: built by cargo next to this one).
    #[arg(long)]
    blue_green: Option<PathBuf>,
    /// Use this image instead of building the demo app's.
    #[arg(long)]
    image: Option<String>,
    /// Sample the resources (the router's processes, memory and file descriptors, the app's
    /// containers and networks, the state directory) after every this many deploys, and after
    /// the first and the last. 0: a tenth of `--deploys`. For a soak: `--deploys 500`.
    #[arg(long, default_value_t = 0)]
    sample_every: usize,
    /// Give up on one deploy after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    deploy_timeout: Duration,
    /// The throughput phase (`--throughput` and its knobs).
    #[command(flatten)]
    throughput: throughput::ThroughputArgs,
}

/// What the demo app does on SIGTERM (its `SIGTERM_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SigtermMode {
    /// Stop accepting, finish the requests in flight, exit.
    Graceful,
    /// Exit at once.
    Abort,
}

impl SigtermMode {
    fn as_env(self) -> &'static str {
        match self {
            SigtermMode::Graceful => "graceful",
            SigtermMode::Abort => "abort",
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let code = tokio::select! {
        result = run(&args) => match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: cleaning up");
            130
        }
    };
    // Dropping `run` above stopped nginx and the load and removed the containers.
    std::process::exit(code);
}

async fn run(args: &Args) -> Result<(), String> {
    if args.deploys == 0 || args.clients == 0 {
        return Err("--deploys and --clients must be at least 1".into());
    }
    if args.throughput.throughput {
        let report = throughput::run(&args.throughput, &blue_green_binary(args).await?).await?;
        return write_json(args, &report).await;
    }
    let tmp = tempfile::Builder::new()
        .prefix("blue-green-bench-")
        .tempdir()
        .map_err(|e| format!("could not create a temporary directory: {e}"))?;
    // Every container, compose project, network and image of this run is named after the
    // guard's prefix; dropping the guard removes them, also after an error or Ctrl-C.
    let cleanup = DockerCleanup::new("bench").await;
    let prefix = cleanup.prefix().to_string();
    let image = match &args.image {
        Some(image) => image.clone(),
        None => {
            eprintln!("building the demo-app image (static binary, FROM scratch)");
            demo_app_image(&cleanup).await
        }
    };
    let mut app_env = BTreeMap::new();
    app_env.insert(
        "START_DELAY_MS".to_string(),
        args.app_start_delay.as_millis().to_string(),
    );
    app_env.insert(
        "SIGTERM_MODE".to_string(),
        args.sigterm_mode.as_env().to_string(),
    );

    let mut comparison = Comparison {
        setup: machine(args, &image).await,
        phases: Vec::new(),
    };
    if !args.only_baseline {
        let binary = blue_green_binary(args).await?;
        for &kind in &args.routers {
            let phase = match kind {
                RouterKind::Nginx => {
                    run_ours(args, tmp.path(), &prefix, &image, &app_env, &binary).await?
                }
                _ => {
                    router_phase::run(kind, args, tmp.path(), &prefix, &image, &app_env, &binary)
                        .await?
                }
            };
            comparison.phases.push(phase);
        }
    }
    if !args.only_ours {
        let phase = run_baseline(args, tmp.path(), &prefix, &image, &app_env).await?;
        comparison.phases.push(phase);
    }
    println!("{}", comparison.render());
    if let Some(routers) = router_phase::router_comparison(&comparison.phases) {
        println!("{routers}");
    }
    write_json(args, &comparison).await
}

/// Writes `figures` to `--json FILE`, if given.
async fn write_json(args: &Args, figures: &impl serde::Serialize) -> Result<(), String> {
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(figures)
            .map_err(|e| format!("could not serialize the figures: {e}"))?;
        tokio::fs::write(path, json)
            .await
            .map_err(|e| format!("could not write {}: {e}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

fn load_config(args: &Args, nginx_port: u16) -> LoadConfig {
    LoadConfig {
        base_url: format!("http://127.0.0.1:{nginx_port}"),
        clients: args.clients,
        slow: args.slow,
        post_bytes: args.post_bytes,
        pause: args.pause,
        request_timeout: Duration::from_secs(30),
    }
}

/// Failed requests among those sent while a deploy ran.
fn failed_between(samples: &[Sample], window: (Duration, Duration)) -> usize {
    samples
        .iter()
        .filter(|s| s.sent_at >= window.0 && s.sent_at <= window.1 && s.failed())
        .count()
}

async fn run_ours(
    args: &Args,
    tmp: &Path,
    prefix: &str,
    image: &str,
    app_env: &BTreeMap<String, String>,
    binary: &Path,
) -> Result<PhaseReport, String> {
    let dir = tmp.join("blue-green");
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let upstream = "bench_blue_green";
    let ports = [free_port()?, free_port()?];
    // Until the first deploy, nginx routes to the blue slot, where nothing listens yet.
    let nginx = NginxHarness::start(upstream, &Endpoint::new("127.0.0.1", ports[0])).await?;
    let config = OursConfig {
        app: format!("{prefix}-bg"),
        dir: dir.clone(),
        runtime: args.runtime,
        image: image.to_string(),
        container_port: 8080,
        ports,
        app_env: app_env.clone(),
        upstream: upstream.to_string(),
        upstream_file: nginx.upstream_file(),
        test_command: nginx.test_command(),
        reload_command: nginx.reload_command(),
        verify_url: nginx.url("/health"),
        pid_file: Some(nginx.pid_file()),
        drain: args.drain,
        stop_timeout: args.stop_timeout,
    };
    let config_path = config.write()?;
    let result = deploys_under_load(
        args,
        binary,
        &config_path,
        RouterAt {
            port: nginx.port(),
            pid: Some(nginx.pid()),
        },
        RouterKind::Nginx.phase_name(),
        false,
        || {
            format!(
                "blue-green deploy ({:?} runtime, nginx router, probe direct, verify through nginx, drain {:?})",
                args.runtime, args.drain
            )
        },
    )
    .await;
    take_down(binary, &config_path).await;
    drop(nginx);
    result
}

/// The deploys of one blue-green phase, through the router listening on `port`: the first
/// deploy (v0) before the load starts, then `args.deploys` deploys under load. With
/// `drain_as_it_was`, each deploy's overhead takes out the drain as it was (a router that ends
/// the drain with the last request) instead of the configured one. `method` describes the
/// phase once the load has stopped.
pub(crate) async fn deploys_under_load(
    args: &Args,
    binary: &Path,
    config_path: &Path,
    router: RouterAt,
    name: &str,
    drain_as_it_was: bool,
    method: impl FnOnce() -> String,
) -> Result<PhaseReport, String> {
    let config_arg = config_path.to_string_lossy().into_owned();
    let deploy = |release: String| {
        let binary = binary.to_path_buf();
        let config_arg = config_arg.clone();
        let timeout = args.deploy_timeout;
        async move {
            tokio::task::spawn_blocking(move || {
                ours::run_cli(
                    &binary,
                    &["deploy", "-c", &config_arg, "--release", &release, "--json"],
                    &[],
                    timeout,
                )
            })
            .await
            .map_err(|e| format!("the deploy task failed: {e}"))?
        }
    };
    eprintln!("{name}: first deploy (v0), before the load starts");
    let first = deploy("v0".to_string()).await?;
    if first.code != Some(0) {
        return Err(format!(
            "{name}: the first deploy (v0) failed with {:?}: {}",
            first.code,
            first.stderr.trim()
        ));
    }
    let docker = blue_green_testkit::docker::docker().await;
    let app = app_of(config_path)?;
    let probe = ResourceProbe {
        router_pid: router.pid,
        state_dir: config_path.with_file_name("state"),
        prefix: app,
        docker: &docker,
    };
    let every = match args.sample_every {
        0 => (args.deploys / 10).max(1),
        n => n,
    };
    let mut resources = Vec::new();
    let load = RunningLoad::start(&load_config(args, router.port))?;
    let mut deploys: Vec<(DeployFigures, (Duration, Duration))> = Vec::new();
    for k in 1..=args.deploys {
        tokio::time::sleep(args.gap).await;
        let release = format!("v{k}");
        let from = load.elapsed();
        let run = deploy(release.clone()).await?;
        let window = (from, load.elapsed());
        let mut figures = ours::figures(&release, &run, args.drain);
        if let (true, true, Some(ready), Some(drain)) = (
            drain_as_it_was,
            figures.ok,
            figures.ready_ms,
            figures.drain_ms,
        ) {
            figures.overhead_ms = Some(figures.wall_ms as i64 - ready as i64 - drain as i64);
        }
        progress(name, k, args.deploys, &figures);
        if resources::sampled(k, args.deploys, every) {
            // The command's own high-water mark: wait4's figure also holds the bench's memory at
            // fork, which grows with the load's samples over a long run.
            resources.push(probe.sample(k, figures.own_peak_rss_kib).await);
        }
        deploys.push((figures, window));
    }
    tokio::time::sleep(args.gap).await;
    let samples = load.stop().await;
    let method = method();
    let mut report = finish_phase(name, &method, samples, deploys);
    report.resources = resources;
    report.history_ms = time_history(binary, &config_arg).await;
    Ok(report)
}

/// The `app` of a config file the bench wrote (`app = "..."` on its first line).
fn app_of(config_path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| format!("could not read {}: {e}", config_path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{} is not TOML: {e}", config_path.display()))?;
    table
        .get("app")
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{} has no app", config_path.display()))
}

/// How long `blue-green history` takes over what the phase recorded, milliseconds; `None` if
/// it failed.
async fn time_history(binary: &Path, config_arg: &str) -> Option<u64> {
    let binary = binary.to_path_buf();
    let config_arg = config_arg.to_string();
    let run = tokio::task::spawn_blocking(move || {
        ours::run_cli(
            &binary,
            &["history", "-c", &config_arg],
            &[],
            Duration::from_secs(60),
        )
    })
    .await
    .ok()?
    .ok()?;
    (run.code == Some(0)).then_some(run.wall.as_millis() as u64)
}

/// The router a phase deploys through: where the load goes, and its main process for the
/// resource samples.
pub(crate) struct RouterAt {
    /// The port it serves the app on, on 127.0.0.1.
    pub port: u16,
    /// Its main process (nginx's master, the proxy, HAProxy's master, Caddy).
    pub pid: Option<u32>,
}

/// Leaves nothing running after a phase: both colors down, whatever happened before.
pub(crate) async fn take_down(binary: &Path, config_path: &Path) {
    for color in ["blue", "green"] {
        let config_arg = config_path.to_string_lossy().into_owned();
        let binary = binary.to_path_buf();
        let _ = tokio::task::spawn_blocking(move || {
            ours::run_cli(
                &binary,
                &["down", color, "--force", "-c", &config_arg],
                &[],
                Duration::from_secs(60),
            )
        })
        .await;
    }
}

async fn run_baseline(
    args: &Args,
    tmp: &Path,
    prefix: &str,
    image: &str,
    app_env: &BTreeMap<String, String>,
) -> Result<PhaseReport, String> {
    let dir = tmp.join("baseline");
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let upstream = "bench_baseline";
    let ports = [free_port()?, free_port()?];
    let nginx = NginxHarness::start(upstream, &Endpoint::new("127.0.0.1", ports[0])).await?;
    replace_upstream(&nginx, &baseline::upstream_block(upstream, ports)).await?;
    let baseline = Arc::new(
        Baseline::new(BaselineConfig {
            dir: dir.clone(),
            project_prefix: format!("{prefix}-sh"),
            image: image.to_string(),
            container_port: 8080,
            ports,
            app_env: app_env.clone(),
            check_url: nginx.url("/health"),
            sleep: args.baseline_sleep,
            retry_pause: args.baseline_retry_pause,
            attempts: args.baseline_attempts,
            compose_timeout: Duration::from_secs(120),
        })
        .await?,
    );
    let result = async {
        eprintln!("baseline: blue up (v0), before the load starts");
        baseline.start_first("v0", Duration::from_secs(60)).await?;
        let load = RunningLoad::start(&load_config(args, nginx.port()))?;
        let mut deploys = Vec::new();
        for k in 1..=args.deploys {
            tokio::time::sleep(args.gap).await;
            let release = format!("v{k}");
            let from = load.elapsed();
            let figures = baseline.deploy(&release).await;
            let window = (from, load.elapsed());
            progress("baseline", k, args.deploys, &figures);
            deploys.push((figures, window));
        }
        tokio::time::sleep(args.gap).await;
        let samples = load.stop().await;
        Ok(finish_phase(
            "shell-script way",
            &format!(
                "deploy.sh ported: both colors in one upstream (max_fails=3 fail_timeout=10s), compose up -d, sleep {:?}, up to {} checks through nginx {:?} apart, compose down the old color",
                args.baseline_sleep, args.baseline_attempts, args.baseline_retry_pause
            ),
            samples,
            deploys,
        ))
    }
    .await;
    if let Err(e) = baseline.tear_down().await {
        eprintln!("warning: baseline cleanup: {e}");
    }
    drop(nginx);
    result
}

/// One progress line on stderr per deploy, the same for both phases.
fn progress(phase: &str, k: usize, total: usize, figures: &DeployFigures) {
    eprintln!(
        "{phase}: deploy {k}/{total} {} in {} ms{}",
        if figures.ok { "ok" } else { "FAILED" },
        figures.wall_ms,
        figures
            .error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
}

fn finish_phase(
    name: &str,
    method: &str,
    samples: Vec<Sample>,
    deploys: Vec<(DeployFigures, (Duration, Duration))>,
) -> PhaseReport {
    let deploys = deploys
        .into_iter()
        .map(|(mut figures, window)| {
            figures.failed_requests = failed_between(&samples, window);
            figures
        })
        .collect();
    PhaseReport {
        name: name.to_string(),
        method: method.to_string(),
        load: LoadSummary::from_samples(&samples),
        deploys,
        resources: Vec::new(),
        history_ms: None,
    }
}

/// Finds the `blue-green` binary: `--blue-green`, or built by cargo (when run by cargo) in the
/// same target directory and profile as this binary.
async fn blue_green_binary(args: &Args) -> Result<PathBuf, String> {
    if let Some(path) = &args.blue_green {
        // Absolute: the router phases start it from their own directories.
        return std::fs::canonicalize(path)
            .map_err(|e| format!("--blue-green {}: {e}", path.display()));
    }
    let here =
        std::env::current_exe().map_err(|e| format!("could not find this program's path: {e}"))?;
    let sibling = here
        .parent()
        .map(|d| d.join("blue-green"))
        .ok_or("this program's path has no directory")?;
    if let Ok(cargo) = std::env::var("CARGO") {
        eprintln!("building the blue-green binary (cargo build -p blue-green-cli)");
        let mut cmd = tokio::process::Command::new(cargo);
        cmd.args(["build", "-p", "blue-green-cli"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("could not run cargo build: {e}"))?;
        if !status.success() {
            return Err("cargo build -p blue-green-cli failed; see its output above".into());
        }
    }
    if !sibling.exists() {
        return Err(format!(
            "no blue-green binary at {}: run `cargo build -p blue-green-cli --release` or pass --blue-green PATH",
            sibling.display()
        ));
    }
    Ok(sibling)
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("could not find a free port on 127.0.0.1: {e}"))
}

/// Replaces the harness's upstream block with `block`, then tests and reloads nginx.
async fn replace_upstream(nginx: &NginxHarness, block: &str) -> Result<(), String> {
    tokio::fs::write(nginx.upstream_file(), block)
        .await
        .map_err(|e| format!("could not write {}: {e}", nginx.upstream_file().display()))?;
    for argv in [nginx.test_command(), nginx.reload_command()] {
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| format!("`{}` did not finish within 10s", argv.join(" ")))?
        .map_err(|e| format!("could not run `{}`: {e}", argv.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// The machine and the settings, for the report.
async fn machine(args: &Args, image: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    m.insert("cpus".into(), cpus.to_string());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    m.insert("cpu".into(), model);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    m.insert(
        "memory".into(),
        mem.trim_start_matches("MemTotal:").trim().to_string(),
    );
    let out = |program: &str, a: &[&str]| {
        let program = program.to_string();
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::process::Command::new(&program)
                .args(&a)
                .output()
                .await
                .map(|o| {
                    let mut t = String::from_utf8_lossy(&o.stdout).trim().to_string();
                    if t.is_empty() {
                        t = String::from_utf8_lossy(&o.stderr).trim().to_string();
                    }
                    t
                })
                .unwrap_or_else(|e| format!("unknown ({e})"))
        }
    };
    m.insert(
        "docker".into(),
        out("docker", &["version", "--format", "{{.Server.Version}}"]).await,
    );
    m.insert(
        "docker-compose".into(),
        out("docker-compose", &["version", "--short"]).await,
    );
    m.insert("nginx".into(), out("/usr/sbin/nginx", &["-v"]).await);
    m.insert("haproxy".into(), out("/usr/sbin/haproxy", &["-v"]).await);
    m.insert("caddy".into(), out("/usr/bin/caddy", &["version"]).await);
    m.insert("kernel".into(), out("uname", &["-r"]).await);
    m.insert("image".into(), image.to_string());
    m.insert(
        "load".into(),
        format!(
            "{} clients; in every 10 requests 1 slow GET and 1 slow POST ({:?}), 3 POST with {} bytes, 5 GET /health; half over fresh connections; {:?} pause",
            args.clients, args.slow, args.post_bytes, args.pause
        ),
    );
    m.insert(
        "app".into(),
        format!(
            "demo-app, START_DELAY_MS={}, SIGTERM_MODE={}",
            args.app_start_delay.as_millis(),
            args.sigterm_mode.as_env()
        ),
    );
    m.insert("deploys".into(), args.deploys.to_string());
    m
}
