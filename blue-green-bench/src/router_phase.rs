//! The phases with another router than the nginx phase's: blue-green's own proxy
//! (`blue-green proxy run`), HAProxy (runtime API) and Caddy (admin API), each in a process of
//! its own in a temporary directory, with the same app, load and deploys as the nginx phase;
//! and the table that puts every router side by side (failed requests, the switch, the drain,
//! the overhead, the load's latency).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::ours::{toml_str, OursConfig};
use crate::report::{median, DeployFigures, PhaseReport};
use crate::{deploys_under_load, free_port, take_down, Args, RouterAt};

/// The name of the nginx phase, for the router comparison.
pub const NGINX_NAME: &str = "blue-green";

/// Debian's HAProxy and Caddy.
const HAPROXY: &str = "/usr/sbin/haproxy";
const CADDY: &str = "/usr/bin/caddy";

/// The routers a phase of this module can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouterKind {
    /// The nginx phase (in main.rs): upstream file and reload.
    Nginx,
    /// blue-green's own proxy, over its control socket.
    Proxy,
    /// HAProxy, through its runtime API.
    Haproxy,
    /// Caddy, through its admin API.
    Caddy,
}

impl RouterKind {
    /// The phase's name in the tables.
    pub fn phase_name(self) -> &'static str {
        match self {
            RouterKind::Nginx => NGINX_NAME,
            RouterKind::Proxy => "blue-green (proxy)",
            RouterKind::Haproxy => "blue-green (haproxy)",
            RouterKind::Caddy => "blue-green (caddy)",
        }
    }

    fn label(self) -> &'static str {
        match self {
            RouterKind::Nginx => "nginx",
            RouterKind::Proxy => "proxy",
            RouterKind::Haproxy => "HAProxy",
            RouterKind::Caddy => "Caddy",
        }
    }

    /// Whether the drain ends when the router counts no request left on the old color (else
    /// it is a fixed wait of the configured drain).
    fn counts_in_flight(self) -> bool {
        matches!(self, RouterKind::Proxy | RouterKind::Haproxy)
    }
}

/// A router server of this run (proxy, HAProxy or Caddy); killed on drop.
struct RouterProcess {
    child: tokio::process::Child,
    /// Where the load and the verification go.
    port: u16,
    /// The `[router]` table of blue-green's config for it.
    table: String,
}

impl RouterProcess {
    /// Starts `kind` in `dir`, routing to `blue` until the first deploy, and waits (up to 15 s)
    /// until it listens and its control interface answers.
    async fn start(
        kind: RouterKind,
        binary: &Path,
        dir: &Path,
        blue: u16,
    ) -> Result<RouterProcess, String> {
        let port = free_port()?;
        let d = dir.display();
        let health = toml_str(&format!("http://127.0.0.1:{port}/health"));
        let (program, args, control, table): (PathBuf, Vec<String>, PathBuf, String) = match kind {
            RouterKind::Nginx => return Err("the nginx phase is not a router phase".into()),
            RouterKind::Proxy => {
                let socket = dir.join("proxy.sock");
                let args = vec![
                    "proxy".into(),
                    "run".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{port}"),
                    "--control".into(),
                    socket.to_string_lossy().into_owned(),
                    "--state".into(),
                    format!("{d}/proxy.json"),
                ];
                let table = format!(
                    "kind = \"proxy\"\ncontrol = {}\nverify_url = {health}\n",
                    toml_str(&socket.to_string_lossy())
                );
                (binary.to_path_buf(), args, socket, table)
            }
            RouterKind::Haproxy => {
                std::fs::write(dir.join("haproxy.cfg"), haproxy_config(dir, port, blue))
                    .map_err(|e| format!("could not write haproxy.cfg: {e}"))?;
                let socket = dir.join("admin.sock");
                let args = vec![
                    "-W".into(),
                    "-db".into(),
                    "-f".into(),
                    format!("{d}/haproxy.cfg"),
                ];
                let table = format!(
                    "kind = \"haproxy\"\nsocket = {}\nbackend = \"app\"\nservers = {{ blue = \"blue\", green = \"green\" }}\nstate_file = {}\nverify_url = {health}\nverify_body = \"{{color}} {{release}}\"\n",
                    toml_str(&socket.to_string_lossy()),
                    toml_str(&format!("{d}/app.state")),
                );
                (HAPROXY.into(), args, socket, table)
            }
            RouterKind::Caddy => {
                let admin = free_port()?;
                std::fs::write(dir.join("caddy.json"), caddy_config(port, admin, blue))
                    .map_err(|e| format!("could not write caddy.json: {e}"))?;
                let args = vec!["run".into(), "--config".into(), format!("{d}/caddy.json")];
                let table = format!(
                    "kind = \"caddy\"\nadmin = \"127.0.0.1:{admin}\"\nupstream_id = \"bench_upstreams\"\nverify_url = {health}\nverify_body = \"{{color}} {{release}}\"\n",
                );
                (CADDY.into(), args, PathBuf::new(), table)
            }
        };
        if !program.exists() {
            return Err(format!(
                "{} not found at {}: install it (scripts/test does: Debian's haproxy and caddy)",
                kind.label(),
                program.display()
            ));
        }
        let log_path = dir.join(format!("{}.log", kind.label().to_lowercase()));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("could not create {}: {e}", log_path.display()))?;
        let mut child = tokio::process::Command::new(&program)
            .args(&args)
            .current_dir(dir)
            // Caddy keeps its autosaved config and data under these: in the temporary directory.
            .env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .env("XDG_DATA_HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", program.display()))?;
        let began = std::time::Instant::now();
        loop {
            let listening = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok();
            let control_up = match kind {
                RouterKind::Caddy => true, // its admin API answers before its server listens
                _ => control.exists(),
            };
            if listening && control_up {
                return Ok(RouterProcess { child, port, table });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before it listened; see {}",
                    kind.label(),
                    log_path.display()
                ));
            }
            if began.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "{} did not listen on 127.0.0.1:{port} within 15s; see {}",
                    kind.label(),
                    log_path.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process's peak and current resident memory, KiB (`VmHWM`, `VmRSS`).
    fn memory_kib(&self) -> (Option<u64>, Option<u64>) {
        let Some(pid) = self.child.id() else {
            return (None, None);
        };
        (
            crate::child::status_kib(pid, "VmHWM"),
            crate::child::status_kib(pid, "VmRSS"),
        )
    }
}

/// HAProxy in `dir`: one frontend on `port`, backend `app` with the slots `blue` (at `blue`)
/// and `green` (disabled), the admin socket, and the server-state file that keeps a switch
/// through a reload. Servers by host name with `init-addr last`, as docs/configuration.md says.
fn haproxy_config(dir: &Path, port: u16, blue: u16) -> String {
    let d = dir.display();
    format!(
        "global
    stats socket {d}/admin.sock mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file local

frontend web
    bind 127.0.0.1:{port}
    default_backend app

backend app
    server-state-file-name {d}/app.state
    default-server init-addr last,libc,none
    server blue localhost:{blue}
    server green localhost:1 disabled
"
    )
}

/// Caddy: its admin API on `admin`, one server on `port` whose `reverse_proxy` handler (id
/// `bench_upstreams`) goes to `blue` until the first deploy.
fn caddy_config(port: u16, admin: u16, blue: u16) -> String {
    serde_json::json!({
        "admin": { "listen": format!("127.0.0.1:{admin}") },
        "logging": { "logs": { "default": { "level": "WARN" } } },
        "apps": { "http": { "servers": { "bench": {
            "listen": [format!("127.0.0.1:{port}")],
            "routes": [{ "handle": [{
                "handler": "reverse_proxy",
                "@id": "bench_upstreams",
                "upstreams": [{ "dial": format!("127.0.0.1:{blue}") }]
            }]}]
        }}}}
    })
    .to_string()
}

/// The config of the nginx phase with its `[router]` table replaced by `table`.
fn render(config: &OursConfig, table: &str) -> Result<String, String> {
    let text = config.render();
    let (head, rest) = text
        .split_once("[router]")
        .ok_or("the bench's config has no [router] table")?;
    let (_, switch) = rest
        .split_once("[switch]")
        .ok_or("the bench's config has no [switch] table")?;
    Ok(format!("{head}[router]\n{table}\n[switch]{switch}"))
}

/// Runs the phase of `kind`: the router server, the first deploy, then `args.deploys` deploys
/// under load through it.
pub async fn run(
    kind: RouterKind,
    args: &Args,
    tmp: &Path,
    prefix: &str,
    image: &str,
    app_env: &BTreeMap<String, String>,
    binary: &Path,
) -> Result<PhaseReport, String> {
    let dir = tmp.join(kind.label().to_lowercase());
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let ports = [free_port()?, free_port()?];
    let router = RouterProcess::start(kind, binary, &dir, ports[0]).await?;
    let config = OursConfig {
        app: format!("{prefix}-{}", &kind.label().to_lowercase()[..2]),
        dir: dir.clone(),
        runtime: args.runtime,
        image: image.to_string(),
        container_port: 8080,
        ports,
        app_env: app_env.clone(),
        // The nginx fields are replaced by this router's [router] table below.
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
    std::fs::write(&config_path, render(&config, &router.table)?)
        .map_err(|e| format!("could not write {}: {e}", config_path.display()))?;

    let drain = if kind.counts_in_flight() {
        format!(
            "drain up to {:?}: it ends with the last request",
            args.drain
        )
    } else {
        format!("drain {:?}", args.drain)
    };
    let result = deploys_under_load(
        args,
        binary,
        &config_path,
        RouterAt {
            port: router.port,
            pid: router.child.id(),
        },
        kind.phase_name(),
        kind.counts_in_flight(),
        || {
            let (peak, now) = router.memory_kib();
            let mib = |k: Option<u64>| {
                k.map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
            };
            format!(
                "blue-green deploy ({:?} runtime, {} as the router in a process of its own, probe direct, verify through it, {drain}); {} memory: peak {}, at the end {}",
                args.runtime,
                kind.label(),
                kind.label(),
                mib(peak),
                mib(now)
            )
        },
    )
    .await;
    take_down(binary, &config_path).await;
    drop(router);
    result
}

/// Every router phase that ran, side by side, as a Markdown table: failed requests, the switch
/// (route_to to verified), the drain, the overhead (wall − ready − drain as it was) and the
/// load's latency. `None` when fewer than two router phases ran.
pub fn router_comparison(phases: &[PhaseReport]) -> Option<String> {
    let routers: Vec<(&str, &PhaseReport)> = [
        RouterKind::Nginx,
        RouterKind::Proxy,
        RouterKind::Haproxy,
        RouterKind::Caddy,
    ]
    .into_iter()
    .filter_map(|k| {
        let phase = phases.iter().find(|p| p.name == k.phase_name())?;
        Some((k.label(), phase))
    })
    .collect();
    if routers.len() < 2 {
        return None;
    }
    let med = |p: &PhaseReport, f: &dyn Fn(&DeployFigures) -> Option<f64>| {
        let v: Vec<f64> = p.deploys.iter().filter(|d| d.ok).filter_map(f).collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0} ms", median(&v))
        }
    };
    let actual_overhead = |d: &DeployFigures| match (d.ready_ms, d.drain_ms) {
        (Some(r), Some(dr)) => Some(d.wall_ms as f64 - r as f64 - dr as f64),
        _ => None,
    };
    let mut out = String::from(
        "== routers side by side ==\n\n\
         | router | deploys ok | failed requests | switch + verify, median | drain, median | overhead (wall - ready - drain as it was), median | deploy wall time, median | load latency p50 / p99 |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (label, p) in routers {
        out.push_str(&format!(
            "| {label} | {} / {} | {} of {} | {} | {} | {} | {} | {:.1} / {:.1} ms |\n",
            p.deploys.iter().filter(|d| d.ok).count(),
            p.deploys.len(),
            p.load.failed,
            p.load.requests,
            med(p, &|d| d.switch_ms.map(|v| v as f64)),
            med(p, &|d| d.drain_ms.map(|v| v as f64)),
            med(p, &actual_overhead),
            med(p, &|d| Some(d.wall_ms as f64)),
            p.load.p50_ms,
            p.load.p99_ms,
        ));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OursConfig {
        OursConfig {
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
        }
    }

    #[test]
    fn the_router_table_is_replaced_and_the_rest_is_kept() {
        let table = "kind = \"haproxy\"\nsocket = \"/tmp/x/admin.sock\"\nbackend = \"app\"\nservers = { blue = \"blue\", green = \"green\" }\n";
        let text = render(&config(), table).unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(parsed["router"]["kind"].as_str(), Some("haproxy"));
        assert_eq!(parsed["router"]["servers"]["green"].as_str(), Some("green"));
        assert!(parsed["router"].get("upstream").is_none());
        assert_eq!(parsed["switch"]["drain"].as_str(), Some("2000ms"));
        assert_eq!(parsed["endpoints"]["blue"].as_str(), Some("127.0.0.1:1001"));
    }

    #[test]
    fn the_caddy_config_routes_to_blue_under_the_id_the_router_is_given() {
        let config: serde_json::Value =
            serde_json::from_str(&caddy_config(8080, 2019, 1001)).unwrap();
        let server = &config["apps"]["http"]["servers"]["bench"];
        assert_eq!(server["listen"][0], "127.0.0.1:8080");
        let handler = &server["routes"][0]["handle"][0];
        assert_eq!(handler["@id"], "bench_upstreams");
        assert_eq!(handler["upstreams"][0]["dial"], "127.0.0.1:1001");
        assert_eq!(config["admin"]["listen"], "127.0.0.1:2019");
    }

    #[test]
    fn the_table_lists_every_router_that_ran_in_a_fixed_order() {
        let phase = |kind: RouterKind, failed: usize| PhaseReport {
            name: kind.phase_name().into(),
            method: String::new(),
            load: crate::report::LoadSummary {
                failed,
                requests: 100,
                ..Default::default()
            },
            deploys: Vec::new(),
            resources: Vec::new(),
            history_ms: None,
        };
        let table =
            router_comparison(&[phase(RouterKind::Caddy, 3), phase(RouterKind::Nginx, 0)]).unwrap();
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
        assert!(
            rows[1].starts_with("| nginx | 0 / 0 | 0 of 100 |"),
            "{table}"
        );
        assert!(
            rows[2].starts_with("| Caddy | 0 / 0 | 3 of 100 |"),
            "{table}"
        );
        assert!(router_comparison(&[phase(RouterKind::Proxy, 0)]).is_none());
    }
}
