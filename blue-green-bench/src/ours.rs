//! This project's way: the real `blue-green` binary, run once per deploy with `--json`, its
//! NDJSON events turned into per-step figures.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::child::{run_measured, Finished};
use crate::report::DeployFigures;

/// What goes into `blue-green.toml`.
#[derive(Debug, Clone)]
pub struct OursConfig {
    /// App name (also the container name prefix).
    pub app: String,
    /// Where the config file and the state go.
    pub dir: PathBuf,
    /// `docker` or `compose`.
    pub runtime: RuntimeKind,
    /// The app's image.
    pub image: String,
    /// The port the app listens on inside the container.
    pub container_port: u16,
    /// Host ports on 127.0.0.1 for blue and green.
    pub ports: [u16; 2],
    /// Extra environment of the app.
    pub app_env: BTreeMap<String, String>,
    /// The upstream name in nginx.
    pub upstream: String,
    /// The file nginx includes and the router owns.
    pub upstream_file: PathBuf,
    /// argv of nginx's config test.
    pub test_command: Vec<String>,
    /// argv of nginx's reload.
    pub reload_command: Vec<String>,
    /// The health URL through nginx, for the router's verification.
    pub verify_url: String,
    /// nginx's pid file, so the router watches nginx's workers instead of a fixed overlap.
    pub pid_file: Option<PathBuf>,
    /// The configured drain.
    pub drain: Duration,
    /// The configured stop timeout.
    pub stop_timeout: Duration,
}

/// Which runtime `blue-green` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Plain containers over the Docker API.
    Docker,
    /// One docker-compose project per color.
    Compose,
}

impl OursConfig {
    /// The path of the config file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("blue-green.toml")
    }

    /// Writes the config file (and, for compose, one compose file per color).
    pub fn write(&self) -> Result<PathBuf, String> {
        let path = self.path();
        std::fs::write(&path, self.render())
            .map_err(|e| format!("could not write {}: {e}", path.display()))?;
        if self.runtime == RuntimeKind::Compose {
            for (color, port) in [("blue", self.ports[0]), ("green", self.ports[1])] {
                let compose = self.compose_path(color);
                std::fs::write(&compose, self.compose_file(port))
                    .map_err(|e| format!("could not write {}: {e}", compose.display()))?;
            }
        }
        Ok(path)
    }

    /// The TOML text. Every value is written as a TOML string literal via `toml_str`, so no
    /// value can add a key.
    pub fn render(&self) -> String {
        let env = self
            .app_env
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let runtime = match self.runtime {
            RuntimeKind::Docker => format!(
                "kind = \"docker\"\nimage = {}\ncontainer_port = {}\nenv = {{ {env} }}\n",
                toml_str(&self.image),
                self.container_port
            ),
            RuntimeKind::Compose => format!(
                "kind = \"compose\"\nfiles = {{ blue = {}, green = {} }}\nproject = \"{{app}}-{{color}}\"\nservice = \"app\"\n",
                toml_str(&self.compose_path("blue").to_string_lossy()),
                toml_str(&self.compose_path("green").to_string_lossy()),
            ),
        };
        let argv = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|a| toml_str(a)).collect::<Vec<_>>().join(", ")
            )
        };
        format!(
            "app = {app}\nstate_dir = {state}\n\n[runtime]\n{runtime}\n[endpoints]\nblue = \"127.0.0.1:{blue}\"\ngreen = \"127.0.0.1:{green}\"\n\n\
             [health]\nkind = \"http\"\npath = \"/health\"\nexpect_status = 200\nexpect_body = \"{{color}} {{release}}\"\ninterval = \"100ms\"\ntimeout = \"1s\"\nhealthy_threshold = 1\ndeadline = \"30s\"\n\n\
             [router]\nkind = \"nginx\"\nupstream = {upstream}\nupstream_file = {ufile}\ntest_command = {test}\nreload_command = {reload}\nverify_url = {verify}\n{pid_file}\n\
             [switch]\ndrain = \"{drain}ms\"\nstop_timeout = \"{stop}ms\"\nkeep_previous = \"stopped\"\n",
            app = toml_str(&self.app),
            state = toml_str(&self.dir.join("state").to_string_lossy()),
            blue = self.ports[0],
            green = self.ports[1],
            upstream = toml_str(&self.upstream),
            ufile = toml_str(&self.upstream_file.to_string_lossy()),
            test = argv(&self.test_command),
            reload = argv(&self.reload_command),
            verify = toml_str(&self.verify_url),
            pid_file = self
                .pid_file
                .as_ref()
                .map(|p| format!("pid_file = {}\n", toml_str(&p.to_string_lossy())))
                .unwrap_or_default(),
            drain = self.drain.as_millis(),
            stop = self.stop_timeout.as_millis(),
        )
    }

    fn compose_path(&self, color: &str) -> PathBuf {
        self.dir.join(format!("docker-compose.{color}.yml"))
    }

    /// The compose file of one color (the blog's layout: one file per color).
    fn compose_file(&self, port: u16) -> String {
        let mut env = String::new();
        for (k, v) in &self.app_env {
            env.push_str(&format!(
                "      {k}: {}\n",
                serde_json::Value::String(v.clone())
            ));
        }
        format!(
            "version: \"3.7\"\nservices:\n  app:\n    image: {}\n    ports:\n      - \"127.0.0.1:{port}:{}\"\n    environment:\n      BLUE_GREEN_COLOR: \"${{BLUE_GREEN_COLOR}}\"\n      BLUE_GREEN_RELEASE: \"${{BLUE_GREEN_RELEASE}}\"\n{env}",
            serde_json::Value::String(self.image.clone()),
            self.container_port
        )
    }
}

/// A TOML basic string (JSON string escapes are valid TOML).
pub fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Runs `blue-green {args…}` and measures it. Blocking: call from `spawn_blocking`.
pub fn run_cli(
    binary: &Path,
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Finished, String> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    run_measured(binary, &args, env, timeout)
}

/// Figures of one `deploy --json` run: step times from the `step_finished` events.
pub fn figures(release: &str, run: &Finished, drain: Duration) -> DeployFigures {
    let mut steps: BTreeMap<String, u64> = BTreeMap::new();
    for (_, line) in &run.stdout {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["event"] == "step_finished" {
            if let (Some(step), Some(ms)) = (event["step"].as_str(), event["elapsed_ms"].as_u64()) {
                *steps.entry(step.to_string()).or_insert(0) += ms;
            }
        }
    }
    let get = |s: &str| steps.get(s).copied();
    let wall_ms = u64::try_from(run.wall.as_millis()).unwrap_or(u64::MAX);
    let ready_ms = match (get("start"), get("ready")) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    let switch_ms = match (get("switch"), get("verify")) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    let ok = run.code == Some(0);
    let overhead_ms = (ok && ready_ms.is_some())
        .then(|| wall_ms as i64 - ready_ms.unwrap_or(0) as i64 - drain.as_millis() as i64);
    DeployFigures {
        release: release.to_string(),
        ok,
        exit_code: run.code,
        wall_ms,
        ready_ms,
        switch_ms,
        drain_ms: get("drain"),
        stop_ms: get("stop"),
        overhead_ms,
        peak_rss_kib: Some(run.max_rss_kib),
        own_peak_rss_kib: run.own_hwm_kib,
        first_event_ms: run
            .stdout
            .first()
            .map(|(at, _)| u64::try_from(at.as_millis()).unwrap_or(u64::MAX)),
        failed_requests: 0,
        error: (!ok).then(|| {
            let tail: Vec<&str> = run.stderr.lines().rev().take(5).collect();
            let mut tail: Vec<&str> = tail.into_iter().rev().collect();
            if run.timed_out {
                tail.insert(0, "killed after the deploy timeout");
            }
            tail.join(" | ")
        }),
        steps_ms: steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(lines: &[&str], code: i32, wall_ms: u64) -> Finished {
        Finished {
            code: Some(code),
            wall: Duration::from_millis(wall_ms),
            stdout: lines
                .iter()
                .map(|l| (Duration::ZERO, l.to_string()))
                .collect(),
            stderr: "error: it broke\n".into(),
            max_rss_kib: 9000,
            own_hwm_kib: Some(8000),
            timed_out: false,
        }
    }

    #[test]
    fn figures_come_from_step_finished_events() {
        let lines = [
            r#"{"event":"command_started","app":"a","command":"deploy","release":"v1"}"#,
            r#"{"event":"step_finished","step":"start","color":"green","elapsed_ms":300}"#,
            r#"{"event":"step_finished","step":"ready","color":"green","elapsed_ms":700}"#,
            r#"{"event":"step_finished","step":"switch","elapsed_ms":40}"#,
            r#"{"event":"step_finished","step":"verify","elapsed_ms":10}"#,
            r#"{"event":"step_finished","step":"drain","elapsed_ms":2000}"#,
            r#"{"event":"step_finished","step":"stop","color":"blue","elapsed_ms":120}"#,
            "not json",
        ];
        let f = figures("v1", &finished(&lines, 0, 3300), Duration::from_secs(2));
        assert!(f.ok);
        assert_eq!(f.ready_ms, Some(1000));
        assert_eq!(f.switch_ms, Some(50));
        assert_eq!(f.drain_ms, Some(2000));
        assert_eq!(f.stop_ms, Some(120));
        assert_eq!(f.overhead_ms, Some(300));
        assert_eq!(f.peak_rss_kib, Some(9000));
        assert_eq!(f.error, None);
    }

    #[test]
    fn a_failed_deploy_keeps_the_error_and_has_no_overhead() {
        let f = figures("v2", &finished(&[], 1, 500), Duration::from_secs(2));
        assert!(!f.ok);
        assert_eq!(f.exit_code, Some(1));
        assert_eq!(f.overhead_ms, None);
        assert_eq!(f.error.as_deref(), Some("error: it broke"));
    }

    #[test]
    fn config_values_are_quoted() {
        let c = OursConfig {
            app: "bench".into(),
            dir: PathBuf::from("/tmp/x"),
            runtime: RuntimeKind::Docker,
            image: "demo-app:bench".into(),
            container_port: 8080,
            ports: [1001, 1002],
            app_env: BTreeMap::from([("SIGTERM_MODE".into(), "graceful\"\n[x]".into())]),
            upstream: "bench".into(),
            upstream_file: PathBuf::from("/tmp/x/up.conf"),
            test_command: vec!["nginx".into(), "-t".into()],
            reload_command: vec!["nginx".into(), "-s".into(), "reload".into()],
            verify_url: "http://127.0.0.1:1/health".into(),
            pid_file: Some(PathBuf::from("/tmp/x/nginx.pid")),
            drain: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(5),
        };
        let text = c.render();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["runtime"]["env"]["SIGTERM_MODE"].as_str(),
            Some("graceful\"\n[x]")
        );
        assert_eq!(parsed["switch"]["drain"].as_str(), Some("2000ms"));
        assert_eq!(parsed["router"]["test_command"][1].as_str(), Some("-t"));
        assert_eq!(
            parsed["endpoints"]["green"].as_str(),
            Some("127.0.0.1:1002")
        );
    }
}
