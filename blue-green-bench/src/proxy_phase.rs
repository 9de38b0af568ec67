//! The phase with blue-green's own proxy as the router: `blue-green proxy run` in its own
//! process, the same app, load and deploys as the nginx phase, and the figures that compare the
//! two routers (the switch, the drain, the overhead, the proxy's memory).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::load::RunningLoad;
use crate::ours::{self, toml_str, OursConfig};
use crate::report::{median, DeployFigures, PhaseReport};
use crate::{finish_phase, free_port, load_config, progress, Args};

/// The name of this phase in the tables.
pub const NAME: &str = "blue-green (proxy)";
/// The name of the nginx phase, for the router comparison.
const NGINX_NAME: &str = "blue-green";

/// A running `blue-green proxy run`; killed on drop.
pub(crate) struct ProxyProcess {
    child: tokio::process::Child,
    /// The port it listens on, on 127.0.0.1.
    pub(crate) port: u16,
}

impl ProxyProcess {
    /// Starts the proxy with its control socket `dir/proxy.sock`, its log in `dir/proxy.log`,
    /// its routes in `dir/proxy.json` if `state`, and `extra` flags.
    pub(crate) async fn start(
        binary: &Path,
        dir: &Path,
        state: bool,
        extra: &[&str],
    ) -> Result<ProxyProcess, String> {
        let port = free_port()?;
        let socket = dir.join("proxy.sock");
        let log = std::fs::File::create(dir.join("proxy.log"))
            .map_err(|e| format!("could not create the proxy's log: {e}"))?;
        let mut command = tokio::process::Command::new(binary);
        command
            .args([
                "proxy",
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--control",
            ])
            .arg(&socket)
            .args(extra);
        if state {
            command.arg("--state").arg(dir.join("proxy.json"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start `blue-green proxy run`: {e}"))?;
        let began = std::time::Instant::now();
        while !socket.exists() {
            if began.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "`blue-green proxy run` made no control socket within 10s; see {}",
                    dir.join("proxy.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ProxyProcess { child, port })
    }

    /// The proxy's peak and current resident memory, KiB (`VmHWM`, `VmRSS`).
    pub(crate) fn memory_kib(&self) -> (Option<u64>, Option<u64>) {
        let Some(pid) = self.child.id() else {
            return (None, None);
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

/// The config of the nginx phase with its `[router]` table replaced by the proxy's.
fn render(config: &OursConfig, socket: &Path, port: u16) -> Result<String, String> {
    let text = config.render();
    let (head, rest) = text
        .split_once("[router]")
        .ok_or("the bench's config has no [router] table")?;
    let (_, switch) = rest
        .split_once("[switch]")
        .ok_or("the bench's config has no [switch] table")?;
    Ok(format!(
        "{head}[router]\nkind = \"proxy\"\ncontrol = {}\nverify_url = {}\n\n[switch]{switch}",
        toml_str(&socket.to_string_lossy()),
        toml_str(&format!("http://127.0.0.1:{port}/health")),
    ))
}

/// Runs the proxy phase: the first deploy, then `args.deploys` deploys under load.
pub async fn run(
    args: &Args,
    tmp: &Path,
    prefix: &str,
    image: &str,
    app_env: &BTreeMap<String, String>,
    binary: &Path,
) -> Result<PhaseReport, String> {
    let dir = tmp.join("proxy");
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let proxy = ProxyProcess::start(binary, &dir, true, &[]).await?;
    let config = OursConfig {
        app: format!("{prefix}-px"),
        dir: dir.clone(),
        runtime: args.runtime,
        image: image.to_string(),
        container_port: 8080,
        ports: [free_port()?, free_port()?],
        app_env: app_env.clone(),
        // The nginx fields are replaced by the proxy's [router] below.
        upstream: String::new(),
        upstream_file: dir.join("unused"),
        test_command: Vec::new(),
        reload_command: Vec::new(),
        verify_url: String::new(),
        pid_file: None,
        drain: args.drain,
        stop_timeout: args.stop_timeout,
    };
    let _ = config.write()?;
    let config_path = config.path();
    std::fs::write(
        &config_path,
        render(&config, &dir.join("proxy.sock"), proxy.port)?,
    )
    .map_err(|e| format!("could not write {}: {e}", config_path.display()))?;
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

    let result = async {
        eprintln!("{NAME}: first deploy (v0), before the load starts");
        let first = deploy("v0".to_string()).await?;
        if first.code != Some(0) {
            return Err(format!(
                "the first deploy (v0) failed with {:?}: {}",
                first.code,
                first.stderr.trim()
            ));
        }
        let load = RunningLoad::start(&load_config(args, proxy.port))?;
        let mut deploys: Vec<(DeployFigures, (Duration, Duration))> = Vec::new();
        for k in 1..=args.deploys {
            tokio::time::sleep(args.gap).await;
            let release = format!("v{k}");
            let from = load.elapsed();
            let run = deploy(release.clone()).await?;
            let window = (from, load.elapsed());
            let mut figures = ours::figures(&release, &run, args.drain);
            // The drain ends when the old color's last request is done, not at the configured
            // time: the overhead takes out the drain as it was.
            if let (true, Some(ready), Some(drain)) = (figures.ok, figures.ready_ms, figures.drain_ms) {
                figures.overhead_ms = Some(figures.wall_ms as i64 - ready as i64 - drain as i64);
            }
            progress(NAME, k, args.deploys, &figures);
            deploys.push((figures, window));
        }
        tokio::time::sleep(args.gap).await;
        let samples = load.stop().await;
        let (peak, now) = proxy.memory_kib();
        let mib = |k: Option<u64>| k.map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        Ok(finish_phase(
            NAME,
            &format!(
                "blue-green deploy ({:?} runtime, its own proxy as the router in a process of its own, probe direct, verify through the proxy, drain up to {:?}: it ends with the last request); proxy memory: peak {}, at the end {}",
                args.runtime, args.drain, mib(peak), mib(now)
            ),
            samples,
            deploys,
        ))
    }
    .await;
    for color in ["blue", "green"] {
        let config_arg = config_arg.clone();
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
    drop(proxy);
    result
}

/// The two routers side by side, when both phases ran: the switch (switch + verify), the drain,
/// the overhead (wall − ready − drain as it was) and the load's latency.
pub fn router_comparison(phases: &[PhaseReport]) -> Option<String> {
    let proxy = phases.iter().find(|p| p.name == NAME)?;
    let nginx = phases.iter().find(|p| p.name == NGINX_NAME)?;
    let med = |p: &PhaseReport, f: &dyn Fn(&DeployFigures) -> Option<f64>| {
        median(
            &p.deploys
                .iter()
                .filter(|d| d.ok)
                .filter_map(f)
                .collect::<Vec<_>>(),
        )
    };
    let switch = |d: &DeployFigures| d.switch_ms.map(|v| v as f64);
    let drain = |d: &DeployFigures| d.drain_ms.map(|v| v as f64);
    let overhead = |d: &DeployFigures| d.overhead_ms.map(|v| v as f64);
    let actual_overhead = |d: &DeployFigures| match (d.ok, d.ready_ms, d.drain_ms) {
        (true, Some(r), Some(dr)) => Some(d.wall_ms as f64 - r as f64 - dr as f64),
        _ => None,
    };
    Some(format!(
        "== routers: proxy vs nginx ==\n\
         failed requests:              {} vs {}\n\
         switch + verify, median:      {:.0} ms vs {:.0} ms\n\
         drain, median:                {:.0} ms vs {:.0} ms\n\
         overhead (wall - ready - drain as configured for nginx, as it was for the proxy), median: {:.0} ms vs {:.0} ms\n\
         overhead (wall - ready - drain as it was, both), median: {:.0} ms vs {:.0} ms\n\
         load latency p50 / p99:       {:.1} / {:.1} ms vs {:.1} / {:.1} ms\n",
        proxy.load.failed,
        nginx.load.failed,
        med(proxy, &switch),
        med(nginx, &switch),
        med(proxy, &drain),
        med(nginx, &drain),
        med(proxy, &overhead),
        med(nginx, &overhead),
        med(proxy, &actual_overhead),
        med(nginx, &actual_overhead),
        proxy.load.p50_ms,
        proxy.load.p99_ms,
        nginx.load.p50_ms,
        nginx.load.p99_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_router_table_is_the_proxys_and_the_rest_is_kept() {
        let c = OursConfig {
            app: "bench".into(),
            dir: PathBuf::from("/tmp/x"),
            runtime: crate::ours::RuntimeKind::Docker,
            image: "demo-app:bench".into(),
            container_port: 8080,
            ports: [1001, 1002],
            app_env: BTreeMap::new(),
            upstream: String::new(),
            upstream_file: PathBuf::from("/tmp/x/unused"),
            test_command: Vec::new(),
            reload_command: Vec::new(),
            verify_url: String::new(),
            pid_file: None,
            drain: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(5),
        };
        let text = render(&c, Path::new("/tmp/x/proxy.sock"), 9999).unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(parsed["router"]["kind"].as_str(), Some("proxy"));
        assert_eq!(
            parsed["router"]["control"].as_str(),
            Some("/tmp/x/proxy.sock")
        );
        assert!(parsed["router"].get("upstream").is_none());
        assert_eq!(parsed["switch"]["drain"].as_str(), Some("2000ms"));
        assert_eq!(parsed["endpoints"]["blue"].as_str(), Some("127.0.0.1:1001"));
    }
}
