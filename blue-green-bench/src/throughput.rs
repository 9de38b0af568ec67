//! The throughput phase (`--throughput`): the same `wrk` load through nginx and through
//! blue-green's own proxy, one worker each, to the same upstream on loopback, in one run; then
//! the proxy's memory with many client connections open, and its switch (`route_to` to
//! verified) over the control socket. Needs `wrk` and nginx, not Docker.
//!
//! ```text
//! cargo run -p blue-green-bench --release -- --throughput
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use blue_green_core::{Color, Endpoint, Instance, Router};
use blue_green_proxy::{ProxyRouter, VerifyRequest};
use blue_green_testkit::color_server::ColorServer;
use blue_green_testkit::nginx::NginxHarness;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy_process::ProxyProcess;
use crate::report::median;

/// Where Debian's package puts wrk.
const WRK: &str = "/usr/bin/wrk";
/// The upstream name in nginx's config.
const UPSTREAM: &str = "bench_throughput";

/// The throughput phase's flags.
#[derive(Debug, clap::Args)]
pub struct ThroughputArgs {
    /// Run only the throughput phase: wrk through nginx (`worker_processes 1`) and through
    /// blue-green's own proxy (`--threads 1`) to the same upstream, the proxy's memory with many
    /// open connections, and its switch latency. Needs wrk and nginx, not Docker.
    #[arg(long)]
    pub throughput: bool,
    /// wrk's connections (`-c`); wrk runs one thread (`-t1`).
    #[arg(long, default_value_t = 50)]
    pub wrk_connections: u32,
    /// How long each wrk run lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub wrk_duration: Duration,
    /// wrk runs per target (direct, nginx, proxy, taken in turn); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub wrk_rounds: usize,
    /// Client connections held open through the proxy for its memory figure; each sends one
    /// request first (--wrk-connections of them at a time).
    #[arg(long, default_value_t = 1000)]
    pub open_connections: usize,
    /// Switches (route_to, then verified through the proxy) timed over the control socket.
    #[arg(long, default_value_t = 50)]
    pub switches: usize,
}

/// One wrk run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct WrkRun {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Non-2xx/3xx answers plus socket errors.
    pub errors: u64,
    /// Requests answered in the run.
    pub requests: u64,
    /// The router's CPU time (user and system, all its processes and threads) per request,
    /// microseconds: steadier than req/s on a shared machine, since it does not count the
    /// time the router waited for a core.
    pub cpu_us_per_request: Option<f64>,
}

/// The medians of one target's runs.
#[derive(Debug, Clone, Serialize)]
pub struct WrkSummary {
    /// What was measured.
    pub name: String,
    /// Every run, in order.
    pub runs: Vec<WrkRun>,
    /// Median requests per second.
    pub rps: f64,
    /// Median of the runs' median latencies, milliseconds.
    pub p50_ms: f64,
    /// Median of the runs' 99th percentiles, milliseconds.
    pub p99_ms: f64,
    /// Errors over all runs.
    pub errors: u64,
    /// Median CPU time per request of the router, microseconds (none for the direct runs).
    pub cpu_us_per_request: Option<f64>,
}

/// Timings of the switches, milliseconds (medians and 90th percentiles).
#[derive(Debug, Clone, Serialize)]
pub struct SwitchFigures {
    /// Switches timed.
    pub switches: usize,
    /// Whether the proxy kept its routes in a state file (written and fsync'd before it answers).
    pub state_file: bool,
    /// route_to to verified, median.
    pub total_median_ms: f64,
    /// route_to to verified, 90th percentile.
    pub total_p90_ms: f64,
    /// route_to alone (the control call; the state file written), median.
    pub route_to_median_ms: f64,
    /// verify alone (the target read back, a request through the proxy), median.
    pub verify_median_ms: f64,
}

/// Everything the phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// The wrk command line (without its URL).
    pub wrk: String,
    /// wrk straight to the upstream, nginx, the proxy.
    pub targets: Vec<WrkSummary>,
    /// The proxy's median req/s over nginx's.
    pub ratio: f64,
    /// nginx's median CPU time per request over the proxy's: what the req/s ratio would be if
    /// each router had a core to itself.
    pub cpu_ratio: Option<f64>,
    /// The proxy's resident memory, KiB: idle, after the load, with the connections open.
    pub proxy_rss_kib: [Option<u64>; 3],
    /// The proxy's peak resident memory, KiB.
    pub proxy_peak_kib: Option<u64>,
    /// nginx's resident memory (master and worker) with the same connections open, KiB.
    pub nginx_rss_kib: Option<u64>,
    /// Client connections held open for the memory figure.
    pub open_connections: usize,
    /// The switch, with and without the state file.
    pub switch: Vec<SwitchFigures>,
}

/// Runs the phase and prints its table; returns the figures (for `--json`).
pub async fn run(args: &ThroughputArgs, binary: &Path) -> Result<ThroughputReport, String> {
    if !Path::new(WRK).exists() {
        return Err(format!(
            "wrk not found at {WRK}: install Debian's wrk (scripts/test does)"
        ));
    }
    if args.wrk_connections == 0 || args.wrk_rounds == 0 || args.switches == 0 {
        return Err("--wrk-connections, --wrk-rounds and --switches must be at least 1".into());
    }
    let tmp = tempfile::Builder::new()
        .prefix("blue-green-bench-tp-")
        .tempdir()
        .map_err(|e| format!("could not create a temporary directory: {e}"))?;
    let serve = |color| async move {
        ColorServer::start(color, "v1")
            .await
            .map_err(|e| format!("could not start the {color} upstream: {e}"))
    };
    let blue = serve(Color::Blue).await?;
    let green = serve(Color::Green).await?;

    let nginx = NginxHarness::start(UPSTREAM, &blue.endpoint()).await?;
    crate::replace_upstream(&nginx, &nginx_upstream(&blue.endpoint())).await?;

    let (proxy, router) = start_proxy(binary, &tmp.path().join("proxy"), true).await?;
    router
        .route_to(&blue.endpoint())
        .await
        .map_err(|e| format!("could not route the proxy to the upstream: {e}"))?;
    let idle = proxy.memory_kib().1;

    // The processes whose CPU time each target's requests cost (none: the upstream only).
    let targets = [
        ("upstream, direct (no router)", blue.addr().port(), None),
        (
            "nginx (worker_processes 1)",
            nginx.port(),
            Some(nginx.pid()),
        ),
        ("blue-green proxy (--threads 1)", proxy.port, proxy.pid()),
    ];
    let wrk_args = [
        "-t1".to_string(),
        format!("-c{}", args.wrk_connections),
        format!("-d{}s", args.wrk_duration.as_secs().max(1)),
        "--latency".to_string(),
    ];
    eprintln!("throughput: warming up each target (2 s of wrk)");
    for (_, port, _) in &targets {
        wrk(
            &[
                "-t1".into(),
                format!("-c{}", args.wrk_connections),
                "-d2s".into(),
                "--latency".into(),
            ],
            *port,
        )
        .await?;
    }
    let mut runs: Vec<Vec<WrkRun>> = vec![Vec::new(); targets.len()];
    for round in 1..=args.wrk_rounds {
        for (i, (name, port, pid)) in targets.iter().enumerate() {
            let cpu_before = pid.and_then(group_cpu_us);
            let mut run = wrk(&wrk_args, *port).await?;
            if let (Some(before), Some(after)) = (cpu_before, pid.and_then(group_cpu_us)) {
                if run.requests > 0 {
                    run.cpu_us_per_request =
                        Some(after.saturating_sub(before) as f64 / run.requests as f64);
                }
            }
            eprintln!(
                "throughput: round {round}/{}: {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
                args.wrk_rounds,
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.errors,
                run.cpu_us_per_request
                    .map_or(String::new(), |us| format!(", {us:.2} µs of CPU a request"))
            );
            runs[i].push(run);
        }
    }
    let summaries: Vec<WrkSummary> = targets
        .iter()
        .zip(runs)
        .map(|((name, _, _), runs)| summarize(name, runs))
        .collect();
    let after_load = proxy.memory_kib().1;

    eprintln!(
        "throughput: opening {} client connections to the proxy and to nginx",
        args.open_connections
    );
    let held = open_connections(proxy.port, args.open_connections, args.wrk_connections).await?;
    let (peak, with_open) = proxy.memory_kib();
    drop(held);
    let held = open_connections(nginx.port(), args.open_connections, args.wrk_connections).await?;
    let nginx_rss = group_rss_kib(nginx.pid());
    drop(held);

    eprintln!("throughput: {} switches with a state file", args.switches);
    let colors = [blue.instance(), green.instance()];
    let mut switch =
        vec![time_switches_as_the_cli(router, colors.clone(), args.switches, true).await?];
    drop(proxy);
    let (proxy, router) = start_proxy(binary, &tmp.path().join("proxy-memory-only"), false).await?;
    eprintln!(
        "throughput: {} switches without a state file",
        args.switches
    );
    switch.push(time_switches_as_the_cli(router, colors, args.switches, false).await?);
    drop(proxy);

    let ratio = summaries[2].rps / summaries[1].rps;
    let cpu_ratio = match (
        summaries[1].cpu_us_per_request,
        summaries[2].cpu_us_per_request,
    ) {
        (Some(nginx), Some(proxy)) if proxy > 0.0 => Some(nginx / proxy),
        _ => None,
    };
    let report = ThroughputReport {
        wrk: format!("wrk {}", wrk_args.join(" ")),
        targets: summaries,
        ratio,
        cpu_ratio,
        proxy_rss_kib: [idle, after_load, with_open],
        proxy_peak_kib: peak,
        nginx_rss_kib: nginx_rss,
        open_connections: args.open_connections,
        switch,
    };
    println!("{}", render(&report));
    Ok(report)
}

/// `blue-green proxy run --threads 1` in `dir` (its routes in a state file if `state`), and a
/// router for its app `bench` that verifies through it.
async fn start_proxy(
    binary: &Path,
    dir: &Path,
    state: bool,
) -> Result<(ProxyProcess, ProxyRouter), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let proxy = ProxyProcess::start(binary, dir, state, &["--threads", "1"]).await?;
    let verify = VerifyRequest::new(&format!("http://127.0.0.1:{}/health", proxy.port))
        .map_err(|e| e.to_string())?;
    let router = ProxyRouter::new(dir.join("proxy.sock"), "bench").with_verify(verify);
    Ok((proxy, router))
}

/// nginx's upstream file for this phase: the upstream with kept-alive connections (as a tuned
/// nginx has them, and as the proxy pools them), and no access log (the proxy writes none).
fn nginx_upstream(upstream: &Endpoint) -> String {
    format!(
        "upstream {UPSTREAM} {{\n    server {upstream} max_fails=0;\n    keepalive 64;\n    keepalive_requests 1000000;\n}}\naccess_log off;\nkeepalive_requests 1000000;\n"
    )
}

/// One wrk run against `http://127.0.0.1:{port}/`, parsed.
async fn wrk(args: &[String], port: u16) -> Result<WrkRun, String> {
    let out = tokio::process::Command::new(WRK)
        .args(args)
        .arg(format!("http://127.0.0.1:{port}/"))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("could not run {WRK}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {}{}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("could not read wrk's output: {}", text.trim()))
}

/// The figures in wrk's `--latency` output.
fn parse_wrk(text: &str) -> Option<WrkRun> {
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps = field("Requests/sec:")?.parse().ok()?;
    // "240000 requests in 10.00s, 30.00MB read"
    let requests = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())?;
    let p50_ms = duration_ms(field("50%")?)?;
    let p99_ms = field("99%").map_or(Some(0.0), duration_ms)?;
    let mut errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if let Some(socket) = field("Socket errors:") {
        errors += socket
            .split(',')
            .filter_map(|part| part.split_whitespace().nth(1))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(WrkRun {
        rps,
        p50_ms,
        p99_ms,
        errors,
        requests,
        cpu_us_per_request: None,
    })
}

/// `1.23ms`, `950.00us`, `1.02s` as milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    match unit {
        "us" => Some(value / 1000.0),
        "ms" => Some(value),
        "s" => Some(value * 1000.0),
        "m" => Some(value * 60_000.0),
        _ => None,
    }
}

fn summarize(name: &str, runs: Vec<WrkRun>) -> WrkSummary {
    let med = |f: fn(&WrkRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    WrkSummary {
        name: name.to_string(),
        rps: med(|r| r.rps),
        p50_ms: med(|r| r.p50_ms),
        p99_ms: med(|r| r.p99_ms),
        errors: runs.iter().map(|r| r.errors).sum(),
        cpu_us_per_request: {
            let cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_us_per_request).collect();
            (!cpu.is_empty()).then(|| median(&cpu))
        },
        runs,
    }
}

/// Opens `n` client connections to `127.0.0.1:{port}`, each with one request answered (at
/// most `concurrent` at a time, as wrk's load has them), and keeps them open (kept alive)
/// until the returned streams are dropped.
async fn open_connections(port: u16, n: usize, concurrent: u32) -> Result<Vec<TcpStream>, String> {
    let mut tasks = tokio::task::JoinSet::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrent as usize));
    for _ in 0..n {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| format!("the connection limit closed: {e}"))?;
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("could not connect to 127.0.0.1:{port}: {e}"))?;
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                .await
                .map_err(|e| format!("could not send a request: {e}"))?;
            read_response(&mut stream).await?;
            Ok::<_, String>(stream)
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        held.push(joined.map_err(|e| format!("a connection task failed: {e}"))??);
    }
    Ok(held)
}

/// Reads one response with a `Content-Length` body (what the color server sends).
async fn read_response(stream: &mut TcpStream) -> Result<(), String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let deadline = Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| "no answer within 30s".to_string())?
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        if n == 0 {
            return Err("the connection closed before the answer was whole".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!("expected 200, got: {head}"));
            }
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .ok_or("the answer has no Content-Length")?;
            if body.len() >= length {
                return Ok(());
            }
        }
    }
}

/// Resident memory of a process and its children (nginx's master and worker), KiB.
fn group_rss_kib(pid: u32) -> Option<u64> {
    group_sum(pid, |pid| crate::child::status_kib(pid, "VmRSS"))
}

/// CPU time of a process and its children (nginx's master and worker), microseconds.
fn group_cpu_us(pid: u32) -> Option<u64> {
    group_sum(pid, crate::child::cpu_us)
}

/// `of` summed over a process and its children.
fn group_sum(pid: u32, of: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let mut total = of(pid)?;
    for child in children.split_whitespace() {
        total += of(child.parse().ok()?)?;
    }
    Some(total)
}

/// [`time_switches`] on a current-thread runtime in a thread of its own: the runtime the
/// `blue-green` command runs its steps on, so that the figure is the one a deploy sees (on a
/// multi-threaded runtime each control request costs about 0.1 ms more here: a worker thread
/// receives the answer and wakes the waiting one). The upstreams go on serving on the bench's
/// runtime meanwhile.
async fn time_switches_as_the_cli(
    router: ProxyRouter,
    colors: [Instance; 2],
    n: usize,
    state_file: bool,
) -> Result<SwitchFigures, String> {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("could not start a runtime for the switches: {e}"))?
            .block_on(time_switches(&router, &colors, n, state_file))
    })
    .await
    .map_err(|e| format!("timing the switches failed: {e}"))?
}

/// Switches the proxy back and forth between `colors` (blue, then green) `n` times, timing
/// `route_to`, `verify` and both.
async fn time_switches(
    router: &ProxyRouter,
    colors: &[Instance; 2],
    n: usize,
    state_file: bool,
) -> Result<SwitchFigures, String> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // The router learns the current target first, as the engine's reconcile does.
    router.target().await.map_err(|e| e.to_string())?;
    let (mut total, mut route, mut verify) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..n {
        let to = &colors[(k + 1) % 2];
        let began = Instant::now();
        let receipt = router
            .route_to(&to.endpoint)
            .await
            .map_err(|e| format!("switch {k}: {e}"))?;
        let routed = Instant::now();
        router
            .verify(to, &receipt)
            .await
            .map_err(|e| format!("switch {k}: {e}"))?;
        let done = Instant::now();
        route.push(ms(routed - began));
        verify.push(ms(done - routed));
        total.push(ms(done - began));
    }
    let mut sorted = total.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(SwitchFigures {
        switches: n,
        state_file,
        total_median_ms: median(&total),
        total_p90_ms: sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)],
        route_to_median_ms: median(&route),
        verify_median_ms: median(&verify),
    })
}

fn render(r: &ThroughputReport) -> String {
    use std::fmt::Write as _;
    let mb = |k: Option<u64>| {
        k.map_or("?".to_string(), |k| {
            format!("{:.1} MB", k as f64 * 1.024 / 1000.0)
        })
    };
    let direct = &r.targets[0];
    let mut out = format!(
        "== throughput: nginx vs blue-green's proxy, one worker each ({}, medians of {} runs) ==\n\
         | target | req/s | p50 | p99 | p99 added over direct | errors | router's CPU per request |\n|---|---|---|---|---|---|---|\n",
        r.wrk,
        r.targets[0].runs.len()
    );
    for t in &r.targets {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:+.2} ms | {} | {} |",
            t.name,
            t.rps,
            t.p50_ms,
            t.p99_ms,
            t.p99_ms - direct.p99_ms,
            t.errors,
            t.cpu_us_per_request
                .map_or("-".to_string(), |us| format!("{us:.2} µs"))
        );
    }
    let _ = writeln!(
        out,
        "proxy / nginx throughput: {:.1} % (target: at least 90 %); CPU per request, nginx / proxy: {}\n\
         p99, proxy - nginx: {:+.2} ms (target: at most +1 ms)\n\
         proxy memory (VmRSS): idle {}, after the load {}, with {} open client connections {} (peak {}; target: under 30 MB); nginx, master and worker, with the same connections: {}",
        r.ratio * 100.0,
        r.cpu_ratio
            .map_or("?".to_string(), |c| format!("{:.1} %", c * 100.0)),
        r.targets[2].p99_ms - r.targets[1].p99_ms,
        mb(r.proxy_rss_kib[0]),
        mb(r.proxy_rss_kib[1]),
        r.open_connections,
        mb(r.proxy_rss_kib[2]),
        mb(r.proxy_peak_kib),
        mb(r.nginx_rss_kib),
    );
    for s in &r.switch {
        let _ = writeln!(
            out,
            "switch, route_to to verified over the control socket ({} switches, {}): median {:.2} ms, p90 {:.2} ms; route_to {:.2} ms, verify {:.2} ms",
            s.switches,
            if s.state_file { "state file written and fsync'd first" } else { "no state file" },
            s.total_median_ms,
            s.total_p90_ms,
            s.route_to_median_ms,
            s.verify_median_ms
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 10s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  500.00us  20.00ms   90.00%
    Req/Sec    24.00k     1.00k   26.00k    80.00%
  Latency Distribution
     50%    1.95ms
     75%    2.20ms
     90%    2.60ms
     99%  950.00us
  240000 requests in 10.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 4
Requests/sec:  23998.50
Transfer/sec:      3.00MB
";

    #[test]
    fn wrk_output_is_read() {
        let r = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(r.rps, 23998.5);
        assert_eq!(r.p50_ms, 1.95);
        assert_eq!(r.p99_ms, 0.95);
        assert_eq!(r.errors, 7);
        assert_eq!(r.requests, 240_000);
    }

    #[test]
    fn durations_of_every_unit_are_milliseconds() {
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("500.00us"), Some(0.5));
        assert_eq!(duration_ms("3ms"), Some(3.0));
        assert_eq!(duration_ms("fast"), None);
    }

    #[test]
    fn nginx_keeps_upstream_connections_alive() {
        let block = nginx_upstream(&Endpoint::new("127.0.0.1", 8081));
        assert!(block.contains("server 127.0.0.1:8081 max_fails=0;"));
        assert!(block.contains("keepalive 64;"));
        assert!(block.contains("access_log off;"));
    }
}
