//! Fault injection: the real `blue-green` binary against the real Docker engine and a real
//! nginx, with GET, POST and slow requests flowing through nginx the whole time.
//!
//! - the CLI killed with SIGKILL at the start of each step of a deploy (the test-only hook
//!   `BLUE_GREEN_TEST_PAUSE_AT` of the `test-hooks` feature parks it there) — also while it
//!   clears the idle slot, removes the old color, or undoes a failed release — then `status`
//!   lists what is left and changes nothing (same containers, router target, state and
//!   history), and `repair` or the next `deploy` repairs it;
//! - a release that crash-loops under a restart policy; one that never gets healthy;
//! - nginx's config test failing; an old container that ignores SIGTERM; nginx's master
//!   killed (SIGKILL) in the middle of a switch (before or after the reload), then nginx
//!   started again;
//! - ten deploys started at once;
//! - hostile releases: one that writes logs without end, one that closes its listener but
//!   keeps running, one whose `/health` answers while `/` fails;
//! - the state directory (a small tmpfs the test mounts) filled up while a deploy waits for
//!   its new color, or read-only when a deploy starts: the error names the directory, and the
//!   next deploy after the space is back succeeds.
//!
//! In every case no request through nginx may fail. Needs Docker and nginx; fails with a clear
//! message when either is missing. Every container and image carries the test's prefix and is
//! removed on drop, also when a test fails; nginx and the temporary directory go the same way.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use blue_green_cli::test_hooks::{pause_marker, PAUSE_ENV};
use blue_green_core::{Endpoint, Router};
use blue_green_testkit::docker::{demo_app_image, demo_app_image_with_env, DockerCleanup};
use blue_green_testkit::load::{Load, LoadConfig, LoadReport};
use blue_green_testkit::nginx::NginxHarness;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_blue-green");
/// No single command of these tests takes longer on a busy 2-core machine.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// What a test varies in the config file.
#[derive(Default)]
struct Tweaks {
    /// `runtime.restart_policy`.
    restart_policy: Option<&'static str>,
    /// Replace nginx's config test with this argv.
    test_command: Option<Vec<String>>,
    /// Replace nginx's reload command with this argv.
    reload_command: Option<Vec<String>>,
    /// `switch.keep_previous` (default `stopped`).
    keep_previous: Option<&'static str>,
    /// `health.path` (default `/health`).
    health_path: Option<&'static str>,
    /// `router.pid_file` = nginx's pid file (the router then watches nginx's workers, and
    /// counts what they hold open to the old color when the drain ends).
    pid_file: bool,
}

/// One app with its own nginx, image, config and state, and everything torn down on drop.
/// Fields drop in order, so nginx stops before the containers go; a test's load, declared
/// after its stage, stops before either.
struct Stage {
    nginx: NginxHarness,
    dir: tempfile::TempDir,
    image: String,
    cleanup: DockerCleanup,
}

impl Stage {
    async fn new(name: &str) -> Stage {
        let cleanup = DockerCleanup::new(name).await;
        let image = demo_app_image(&cleanup).await;
        // Until the first deploy nginx points at a port where nothing listens.
        let nowhere = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            Endpoint::new("127.0.0.1", l.local_addr().expect("local addr").port())
        };
        let nginx = NginxHarness::start(cleanup.prefix(), &nowhere)
            .await
            .unwrap_or_else(|e| panic!("nginx did not start: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("bg-fault-")
            .tempdir()
            .expect("temp dir");
        let stage = Stage {
            nginx,
            dir,
            image,
            cleanup,
        };
        stage.write_config("blue-green.toml", &Tweaks::default());
        stage
    }

    fn app(&self) -> &str {
        self.cleanup.prefix()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("blue-green.toml")
    }

    /// Writes a config for this app (same state, same nginx) as `file` in the test's directory.
    fn write_config(&self, file: &str, tweaks: &Tweaks) -> PathBuf {
        let list = |argv: &[String]| {
            let items: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
            format!("[{}]", items.join(", "))
        };
        let restart = tweaks
            .restart_policy
            .map(|p| format!("restart_policy = {p:?}\n"))
            .unwrap_or_default();
        let pid_file = if tweaks.pid_file {
            format!(
                "pid_file = {:?}\n",
                self.nginx.pid_file().display().to_string()
            )
        } else {
            String::new()
        };
        let test = tweaks
            .test_command
            .clone()
            .unwrap_or_else(|| self.nginx.test_command());
        let text = format!(
            r#"app = "{app}"
state_dir = {state:?}

[runtime]
kind = "docker"
image = "{image}"
container_port = 8080
{restart}
[health]
kind = "http"
path = "{health_path}"
expect_body = "{{color}} {{release}}"
interval = "100ms"
timeout = "1s"
deadline = "8s"

[router]
kind = "nginx"
upstream = "{app}"
upstream_file = {upstream_file:?}
server_options = ["max_fails=0"]
test_command = {test}
reload_command = {reload}
verify_url = "{verify}"
{pid_file}
[switch]
drain = "500ms"
stop_timeout = "2s"
keep_previous = "{keep}"
"#,
            app = self.app(),
            state = self.state_dir().display().to_string(),
            image = self.image,
            upstream_file = self.nginx.upstream_file().display().to_string(),
            test = list(&test),
            reload = list(
                &tweaks
                    .reload_command
                    .clone()
                    .unwrap_or_else(|| self.nginx.reload_command())
            ),
            verify = self.nginx.url("/health"),
            keep = tweaks.keep_previous.unwrap_or("stopped"),
            health_path = tweaks.health_path.unwrap_or("/health"),
        );
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn command(&self, config: &PathBuf, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("-c")
            .arg(config)
            .args(args)
            .env_remove("BLUE_GREEN_CONFIG")
            .env_remove(PAUSE_ENV)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `blue-green -c CONFIG ARGS` to its end and prints what it said.
    async fn run_with(&self, config: &PathBuf, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = tokio::time::timeout(COMMAND_DEADLINE, self.command(config, args).output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "`blue-green {}` ran past {COMMAND_DEADLINE:?}",
                    args.join(" ")
                )
            })
            .expect("run blue-green");
        eprintln!(
            "$ blue-green {} -> {} ({} ms)\n{}",
            args.join(" "),
            out.status,
            started.elapsed().as_millis(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.config(), args).await
    }

    /// A deploy that must succeed.
    async fn deploy(&self, release: &str, extra: &[&str]) {
        let mut args = vec!["deploy", "--release", release];
        args.extend_from_slice(extra);
        let out = self.run(&args).await;
        assert!(
            out.status.success(),
            "`deploy --release {release}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `status --json`: must succeed; returns its `status` object.
    async fn status(&self) -> Value {
        let out = self.run(&["--json", "status"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`status` failed ({}): {}{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let last = stdout.lines().last().expect("a result line on stdout");
        let result: Value = serde_json::from_str(last).expect("the result line is JSON");
        result["status"].clone()
    }

    /// What nginx answers on `/health` now: `{color} {release}`.
    async fn served(&self) -> String {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        match client.get(self.nginx.url("/health")).send().await {
            Ok(r) => r.text().await.unwrap_or_default().trim().to_string(),
            Err(e) => format!("no answer: {e}"),
        }
    }

    /// Waits until nginx answers `expected` on `/health`, for at most 10 s.
    async fn wait_until_served(&self, expected: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let served = self.served().await;
            if served == expected {
                return;
            }
            assert!(
                Instant::now() < until,
                "nginx still serves `{served}` instead of `{expected}` after 10s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Steady traffic through nginx: GETs, POSTs with a body, slow GETs, half of the clients
    /// on kept-alive connections. Returns once requests flow.
    async fn load(&self) -> Load {
        let mut config = LoadConfig::new(self.nginx.url(""));
        config.post_path = Some("/echo".into());
        config.post_every = 4;
        config.slow_path = Some("/slow?ms=300".into());
        config.slow_every = 6;
        config.pause = Duration::from_millis(10);
        config.max_duration = Duration::from_secs(300);
        let load = Load::start(config);
        let report = load.wait_for(20, Duration::from_secs(20)).await;
        assert!(
            report.total >= 20,
            "no traffic flows through nginx: {report}"
        );
        load
    }
}

/// Everything a command can change, as the world shows it: the app's containers (name, id and
/// state), nginx's upstream file, and the state and history files.
#[derive(Debug, PartialEq)]
struct Snapshot {
    containers: Vec<(String, String, String)>,
    upstream: Vec<u8>,
    state: Option<Vec<u8>>,
    history: Option<Vec<u8>>,
}

/// How a test repairs what a kill left.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RepairBy {
    /// `blue-green repair`, then the next deploy.
    Repair,
    /// The next deploy, which reconciles first.
    Deploy,
}

impl Stage {
    /// What a command could change: the app's containers, nginx's upstream file, the state
    /// and history files.
    ///
    /// A stop that the killed deploy made has returned at the app's exit, and Docker may still
    /// be taking that container's network down: its list shows the container running until
    /// then, while an inspect waits for it. So each of the app's containers is inspected first,
    /// and the snapshot is of what Docker has settled.
    async fn snapshot(&self) -> Snapshot {
        let docker = self.cleanup.docker();
        for (_, id, _) in self.containers().await {
            let _ = docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await;
        }
        let mut containers = self.containers().await;
        containers.sort();
        Snapshot {
            containers,
            upstream: std::fs::read(self.nginx.upstream_file()).expect("upstream file"),
            state: std::fs::read(self.state_dir().join("state.json")).ok(),
            history: std::fs::read(self.state_dir().join("history.jsonl")).ok(),
        }
    }

    /// The app's containers as Docker lists them: name, id and state.
    async fn containers(&self) -> Vec<(String, String, String)> {
        let options = ListContainersOptionsBuilder::new().all(true).build();
        self.cleanup
            .docker()
            .list_containers(Some(options))
            .await
            .expect("list containers")
            .into_iter()
            .filter_map(|c| {
                let name = c.names?.first()?.trim_start_matches('/').to_string();
                name.starts_with(self.app())
                    .then(|| (name, c.id.unwrap_or_default(), format!("{:?}", c.state)))
            })
            .collect()
    }

    /// The journal in the state file, if a command left one.
    fn journal(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.state_dir().join("state.json")).ok()?;
        let state: Value = serde_json::from_str(&text).expect("state.json is JSON");
        state.get("journal").cloned()
    }
}

/// The instance of `color` in a status object, if there is one.
fn instance<'a>(status: &'a Value, color: &str) -> Option<&'a Value> {
    status["instances"]
        .as_array()?
        .iter()
        .find(|i| i["instance"]["color"] == color)
}

fn running(status: &Value, color: &str) -> bool {
    instance(status, color).is_some_and(|i| i["state"]["state"] == "running")
}

fn assert_no_failed_requests(report: &LoadReport) {
    eprintln!("load: {report}");
    assert!(report.total > 0, "the load sent nothing: {report}");
    assert_eq!(report.failed, 0, "requests failed through nginx: {report}");
}

impl Stage {
    /// Starts `deploy --release RELEASE EXTRA…` with the pause hook at `step`, waits (at most
    /// 60 s) until it is parked there, and kills it with SIGKILL.
    async fn deploy_killed_at(&self, config: &PathBuf, step: &str, release: &str, extra: &[&str]) {
        let marker = pause_marker(&self.state_dir(), step);
        let mut args = vec!["--json", "deploy", "--release", release];
        args.extend_from_slice(extra);
        let mut child = self
            .command(config, &args)
            .env(PAUSE_ENV, step)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn deploy");
        let until = Instant::now() + Duration::from_secs(60);
        while !marker.exists() {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let out = child.wait_with_output().await.expect("output");
                panic!(
                    "the deploy of {release} ended ({status}) before step {step}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                Instant::now() < until,
                "the deploy of {release} did not reach step {step} within 60s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.start_kill().expect("SIGKILL the deploy");
        let status = child.wait().await.expect("wait for the killed deploy");
        assert_eq!(status.code(), None, "killed by a signal");
        std::fs::remove_file(&marker).expect("remove the pause marker");
    }

    /// After a kill: `status` (JSON and text) must change nothing — same containers, router
    /// target, state and history files — and list what the kill left (when it left a journal),
    /// pointing at `blue-green repair`; the live color it names is the router's, it runs, and
    /// nginx serves it as one of `whole`, the releases that were ever complete. Then `by`
    /// repairs: `repair` (after which status lists nothing and the same color is live) or the
    /// next deploy directly. Either way `deploy --release NEXT` must succeed, switch to the
    /// other color and stop this one. Returns the color live after the kill.
    async fn assert_repaired(
        &self,
        whole: &[(&str, &str)],
        next_release: &str,
        by: RepairBy,
    ) -> String {
        let journal = self.journal();
        let before = self.snapshot().await;
        let status = self.status().await;
        let text = self.run(&["status"]).await;
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        eprintln!("{text}");
        assert_eq!(
            self.snapshot().await,
            before,
            "status changed the world: {status}"
        );
        let live = status["live"].as_str().unwrap_or_default().to_string();
        let Some((_, release)) = whole.iter().find(|(color, _)| *color == live) else {
            panic!("after the kill the live color is `{live}`, expected one of {whole:?}: {status}")
        };
        assert!(running(&status, &live), "the live color runs: {status}");
        let leftovers = status["leftovers"].as_array().expect("leftovers");
        match &journal {
            Some(journal) => {
                let found = leftovers
                    .first()
                    .and_then(|l| l["found"].as_str())
                    .unwrap_or_default();
                assert!(
                    found.contains("interrupted `deploy`")
                        && found.contains(&format!(
                            "its {} step",
                            journal["step"].as_str().unwrap_or("?")
                        )),
                    "status lists the killed deploy's leftovers: {status}"
                );
                assert!(
                    text.contains("left over:") && text.contains("run `blue-green repair`"),
                    "status says how to repair: {text}"
                );
            }
            None => assert!(leftovers.is_empty(), "no journal, no leftovers: {status}"),
        }
        // nginx may answer from its old workers for a moment after a reload that the killed
        // deploy started.
        self.wait_until_served(&format!("{live} {release}")).await;

        if by == RepairBy::Repair {
            let out = self.run(&["--json", "repair"]).await;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "`repair` failed ({}): {stdout}",
                out.status
            );
            let result: Value = serde_json::from_str(stdout.lines().last().expect("a result"))
                .expect("the result line is JSON");
            assert_eq!(result["report"]["live"], live.as_str(), "{result}");
            assert_eq!(
                result["report"]["repaired"].as_array().map(Vec::len),
                Some(usize::from(journal.is_some())),
                "{result}"
            );
            assert_eq!(self.journal(), None, "the repair cleared the journal");
            let status = self.status().await;
            assert_eq!(status["live"], live.as_str(), "{status}");
            assert_eq!(status["leftovers"], serde_json::json!([]), "{status}");
            assert!(running(&status, &live), "{status}");
            self.wait_until_served(&format!("{live} {release}")).await;
        }

        self.deploy(next_release, &[]).await;
        let next = if live == "blue" { "green" } else { "blue" };
        assert_eq!(self.served().await, format!("{next} {next_release}"));
        let status = self.status().await;
        assert_eq!(status["live"], next, "{status}");
        assert!(running(&status, next), "{status}");
        assert!(
            !running(&status, &live),
            "the old color was stopped: {status}"
        );
        live
    }
}

/// Kills a deploy with SIGKILL at the start of `step`, then checks that `status` lists what is
/// left and changes nothing, that `repair` repairs it, and that the next deploy succeeds, with
/// no request lost.
async fn killed_at(step: &str) {
    let stage = Stage::new(&format!("fi-kill-{step}")).await;
    stage.deploy("v1", &[]).await;
    assert_eq!(stage.served().await, "blue v1");
    let load = stage.load().await;

    stage
        .deploy_killed_at(&stage.config(), step, "v2", &[])
        .await;
    stage
        .assert_repaired(&[("blue", "v1"), ("green", "v2")], "v3", RepairBy::Repair)
        .await;
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_taking_the_lock_leaves_blue_serving_and_next_deploy_succeeds() {
    killed_at("lock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_reconciling_leaves_blue_serving_and_next_deploy_succeeds() {
    killed_at("reconcile").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_starting_leaves_blue_serving_and_next_deploy_succeeds() {
    killed_at("start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_waiting_for_ready_leaves_blue_serving_and_next_deploy_clears_green() {
    killed_at("ready").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_switch_leaves_blue_serving_and_next_deploy_succeeds() {
    killed_at("switch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_verifying_leaves_a_whole_color_serving_and_next_deploy_succeeds() {
    killed_at("verify").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_draining_leaves_green_serving_and_next_deploy_retires_blue() {
    killed_at("drain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_stopping_the_old_color_leaves_green_serving_and_next_deploy_succeeds() {
    killed_at("stop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_recording_leaves_green_serving_and_next_deploy_succeeds() {
    killed_at("record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_clearing_the_previous_color_leaves_green_serving_and_next_deploy_succeeds() {
    let stage = Stage::new("fi-kill-clear").await;
    // After two deploys green is live and blue is kept stopped: the third deploy clears blue's
    // slot before it starts there.
    stage.deploy("v1", &[]).await;
    stage.deploy("v2", &[]).await;
    let load = stage.load().await;
    stage
        .deploy_killed_at(&stage.config(), "clear", "v3", &[])
        .await;
    let live = stage
        .assert_repaired(&[("green", "v2")], "v4", RepairBy::Deploy)
        .await;
    assert_eq!(live, "green");
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_removing_the_old_color_leaves_green_serving_and_next_deploy_succeeds() {
    let stage = Stage::new("fi-kill-remove").await;
    let config = stage.write_config(
        "removing.toml",
        &Tweaks {
            keep_previous: Some("removed"),
            ..Tweaks::default()
        },
    );
    let out = stage
        .run_with(&config, &["deploy", "--release", "v1"])
        .await;
    assert!(out.status.success(), "the first deploy failed");
    let load = stage.load().await;
    stage.deploy_killed_at(&config, "remove", "v2", &[]).await;
    let live = stage
        .assert_repaired(&[("green", "v2")], "v3", RepairBy::Deploy)
        .await;
    assert_eq!(live, "green");
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_restoring_after_a_failed_release_leaves_blue_serving() {
    let stage = Stage::new("fi-kill-restore").await;
    let sick = demo_app_image_with_env(&stage.cleanup, "sick", &[("NEVER_HEALTHY", "1")]).await;
    stage.deploy("v1", &[]).await;
    let load = stage.load().await;
    // The sick release fails its readiness wait; the deploy is killed as it starts to undo.
    stage
        .deploy_killed_at(&stage.config(), "restore", "v2", &["--image", &sick])
        .await;
    let live = stage
        .assert_repaired(&[("blue", "v1")], "v3", RepairBy::Deploy)
        .await;
    assert_eq!(live, "blue");
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_release_fails_and_blue_serves_on() {
    let stage = Stage::new("fi-crashloop").await;
    let crashing =
        demo_app_image_with_env(&stage.cleanup, "crash", &[("CRASH_ON_START", "1")]).await;
    let config = stage.write_config(
        "restarting.toml",
        &Tweaks {
            restart_policy: Some("always"),
            ..Tweaks::default()
        },
    );
    let out = stage
        .run_with(&config, &["deploy", "--release", "v1"])
        .await;
    assert!(out.status.success(), "the first deploy failed");
    let load = stage.load().await;

    let out = stage
        .run_with(
            &config,
            &["deploy", "--release", "v2", "--image", &crashing],
        )
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a crash-looping release fails with exit 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stage.served().await, "blue v1");
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert!(
        !running(&status, "green"),
        "the crashing release was not left running: {status}"
    );
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_never_gets_healthy_fails_and_blue_serves_on() {
    let stage = Stage::new("fi-sick").await;
    let sick = demo_app_image_with_env(&stage.cleanup, "sick", &[("NEVER_HEALTHY", "1")]).await;
    stage.deploy("v1", &[]).await;
    let load = stage.load().await;

    let out = stage
        .run(&["deploy", "--release", "v2", "--image", &sick])
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stage.served().await, "blue v1");
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert!(!running(&status, "green"), "{status}");
    // And the app can still be deployed afterwards.
    stage.deploy("v3", &[]).await;
    assert_eq!(stage.served().await, "green v3");
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_nginx_config_test_leaves_the_upstream_file_and_blue_serving() {
    let stage = Stage::new("fi-nginx-t").await;
    stage.deploy("v1", &[]).await;
    let upstream_before = std::fs::read(stage.nginx.upstream_file()).expect("upstream file");
    // The real nginx -t, on a main config that nginx rejects.
    let broken = stage.dir.path().join("broken-nginx.conf");
    std::fs::write(&broken, "events {}\nhttp { no_such_directive on; }\n").expect("write");
    let mut test = stage.nginx.test_command();
    let c = test
        .iter()
        .position(|a| a == "-c")
        .expect("-c in the test argv");
    test[c + 1] = broken.display().to_string();
    let config = stage.write_config(
        "failing-test.toml",
        &Tweaks {
            test_command: Some(test),
            ..Tweaks::default()
        },
    );
    let load = stage.load().await;

    let out = stage
        .run_with(&config, &["deploy", "--release", "v2"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no_such_directive"),
        "the error quotes nginx: {stderr}"
    );
    assert_eq!(
        std::fs::read(stage.nginx.upstream_file()).expect("upstream file"),
        upstream_before,
        "the previous upstream file is back"
    );
    assert_eq!(stage.served().await, "blue v1");
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert!(!running(&status, "green"), "{status}");
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_container_that_ignores_sigterm_is_killed_and_the_deploy_succeeds() {
    let stage = Stage::new("fi-stubborn").await;
    let stubborn =
        demo_app_image_with_env(&stage.cleanup, "stubborn", &[("IGNORE_SIGTERM", "1")]).await;
    stage.deploy("v1", &["--image", &stubborn]).await;
    let load = stage.load().await;

    stage.deploy("v2", &[]).await;
    assert_eq!(stage.served().await, "green v2");
    let status = stage.status().await;
    let blue = instance(&status, "blue").expect("blue is kept stopped");
    assert_eq!(blue["state"]["state"], "exited", "{status}");
    assert_eq!(
        blue["state"]["code"], 137,
        "blue ignored SIGTERM, so it was killed: {status}"
    );
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_deploys_at_once_one_runs_the_others_exit_3() {
    let stage = Stage::new("fi-ten").await;
    // A release that takes 3 s to listen, so that the winner holds the lock while the others
    // start.
    let slow =
        demo_app_image_with_env(&stage.cleanup, "slowstart", &[("START_DELAY_MS", "3000")]).await;
    stage.deploy("v1", &[]).await;
    let load = stage.load().await;

    let children: Vec<_> = (0..10)
        .map(|i| {
            let release = format!("v2-{i}");
            stage
                .command(
                    &stage.config(),
                    &["deploy", "--release", &release, "--image", &slow],
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn deploy")
        })
        .collect();
    let mut codes = Vec::new();
    let mut winner = None;
    for (i, child) in children.into_iter().enumerate() {
        let out = tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
            .await
            .expect("each deploy ends")
            .expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("deploy {i}: {}\n{stderr}", out.status);
        if out.status.code() == Some(3) {
            assert!(stderr.contains("lock"), "exit 3 names the lock: {stderr}");
        }
        if out.status.success() {
            winner = Some(i);
        }
        codes.push(out.status.code());
    }
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "exactly one deploy ran: {codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some(3)).count(),
        9,
        "the others exit 3: {codes:?}"
    );
    let winner = winner.expect("a winner");
    assert_eq!(stage.served().await, format!("green v2-{winner}"));
    assert_no_failed_requests(&load.stop().await);
}

// --- Hostile releases ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_floods_its_logs_fails_with_a_bounded_report_or_deploys() {
    let stage = Stage::new("fi-logflood").await;
    let flooding_sick = demo_app_image_with_env(
        &stage.cleanup,
        "floodsick",
        &[("LOG_FLOOD", "1"), ("NEVER_HEALTHY", "1")],
    )
    .await;
    let flooding = demo_app_image_with_env(&stage.cleanup, "flood", &[("LOG_FLOOD", "1")]).await;
    stage.deploy("v1", &[]).await;
    let load = stage.load().await;

    // Never healthy: the failure report quotes the logs, which never stop.
    let started = Instant::now();
    let out = stage
        .run(&["deploy", "--release", "v2", "--image", &flooding_sick])
        .await;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("LOG_FLOOD"),
        "the report quotes the release's logs: {stderr}"
    );
    assert!(
        out.stderr.len() < 256 * 1024,
        "the report quotes a bounded part of the logs, not {} bytes",
        out.stderr.len()
    );
    // The readiness deadline is 8 s and the stop timeout 2 s; reading the logs adds little.
    assert!(
        took < Duration::from_secs(60),
        "the failed deploy took {took:?}"
    );
    assert_eq!(stage.served().await, "blue v1");
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert!(!running(&status, "green"), "{status}");

    // Healthy but flooding: deployed like any release.
    stage.deploy("v3", &["--image", &flooding]).await;
    assert_eq!(stage.served().await, "green v3");
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_closes_its_listener_but_runs_is_refused_and_blue_serves_on() {
    let stage = Stage::new("fi-nolisten").await;
    let deaf = demo_app_image_with_env(&stage.cleanup, "deaf", &[("CLOSE_LISTENER", "1")]).await;
    stage.deploy("v1", &[]).await;
    let load = stage.load().await;

    let out = stage
        .run(&["deploy", "--release", "v2", "--image", &deaf])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not ready"),
        "the error says the release never got ready: {stderr}"
    );
    assert_eq!(stage.served().await, "blue v1");
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert!(
        !running(&status, "green"),
        "the process that kept running was stopped: {status}"
    );
    assert_no_failed_requests(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_health_answers_but_root_fails_is_refused_by_a_probe_of_root() {
    let stage = Stage::new("fi-liar").await;
    let liar = demo_app_image_with_env(&stage.cleanup, "liar", &[("BROKEN_ROOT", "1")]).await;
    // The probe asks `/`, the page users get, not only `/health`.
    let config = stage.write_config(
        "probe-root.toml",
        &Tweaks {
            health_path: Some("/"),
            ..Tweaks::default()
        },
    );
    let out = stage
        .run_with(&config, &["deploy", "--release", "v1"])
        .await;
    assert!(out.status.success(), "the first deploy failed");
    let load = stage.load().await;

    let out = stage
        .run_with(&config, &["deploy", "--release", "v2", "--image", &liar])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("500"),
        "the error quotes the answer: {stderr}"
    );
    assert_eq!(stage.served().await, "blue v1");
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert!(!running(&status, "green"), "{status}");
    assert_no_failed_requests(&load.stop().await);
}

// --- The state directory full or read-only -------------------------------------------------

/// A small tmpfs mounted (by `mount(8)`, as root) on the stage's state directory; unmounted on
/// drop, also when the test fails.
struct StateTmpfs {
    dir: PathBuf,
}

impl StateTmpfs {
    fn mount(dir: &std::path::Path) -> StateTmpfs {
        std::fs::create_dir_all(dir).expect("create the state directory");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k,mode=0700", "bg-fi-state"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8) (this test needs it, as root): {e}"));
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: mount said {}",
            String::from_utf8_lossy(&out.stderr)
        );
        StateTmpfs {
            dir: dir.to_path_buf(),
        }
    }

    fn remount(&self, mode: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Fills it up: a file that grows until the space runs out.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0u8; 4096];
        loop {
            if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
                return path;
            }
        }
    }
}

impl Drop for StateTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// How a test breaks the state directory.
#[derive(Debug, Clone, Copy)]
enum StateFault {
    /// Filled up while the deploy waits for its new color.
    Full,
    /// Remounted read-only before the deploy: the kernel refuses to remount a file system
    /// read-only while a file on it is open for writing (EBUSY), and a running deploy holds
    /// its lock file open.
    ReadOnly,
}

/// A deploy is started with a release that takes 3 s to listen, and `fault` breaks the state
/// directory. The deploy must fail with exit 4 and name the directory, blue serves on, and
/// once the directory is usable again the next deploy succeeds.
async fn state_directory_broken_during_a_deploy(fault: StateFault) {
    let name = match fault {
        StateFault::Full => "fi-statefull",
        StateFault::ReadOnly => "fi-statero",
    };
    let stage = Stage::new(name).await;
    let tmpfs = StateTmpfs::mount(&stage.state_dir());
    let slow =
        demo_app_image_with_env(&stage.cleanup, "slowstart", &[("START_DELAY_MS", "3000")]).await;
    stage.deploy("v1", &[]).await;
    let load = stage.load().await;

    if let StateFault::ReadOnly = fault {
        tmpfs.remount("ro");
    }
    let child = stage
        .command(
            &stage.config(),
            &["deploy", "--release", "v2", "--image", &slow],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn deploy");
    let filler = match fault {
        StateFault::Full => {
            let until = Instant::now() + Duration::from_secs(60);
            while stage
                .journal()
                .and_then(|j| j["step"].as_str().map(String::from))
                != Some("ready".into())
            {
                assert!(
                    Instant::now() < until,
                    "the deploy did not reach its ready step within 60s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(tmpfs.fill())
        }
        StateFault::ReadOnly => None,
    };
    let out = tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
        .await
        .expect("the deploy ends")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "deploy with the state directory {fault:?}: {}\n{stderr}",
        out.status
    );
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let dir = stage.state_dir().display().to_string();
    assert!(stderr.contains(&dir), "the error names {dir}: {stderr}");
    assert_eq!(stage.served().await, "blue v1");

    match filler {
        Some(filler) => std::fs::remove_file(filler).expect("remove the filler"),
        None => tmpfs.remount("rw"),
    }
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert!(!running(&status, "green"), "{status}");
    stage.deploy("v3", &[]).await;
    assert_eq!(stage.served().await, "green v3");
    assert_no_failed_requests(&load.stop().await);
    // `tmpfs`, declared after `stage`, is unmounted before the stage's directory goes.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_that_fills_up_during_a_deploy_fails_it_naming_the_directory() {
    state_directory_broken_during_a_deploy(StateFault::Full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_directory_fails_the_deploy_naming_the_directory() {
    state_directory_broken_during_a_deploy(StateFault::ReadOnly).await;
}

/// `command` (nginx's test or reload argv) behind a gate: once `armed` exists, it removes it,
/// creates `parked` and waits until the test removes `parked`. With `first` the gate comes
/// before the command (the switch stops with the new upstream file written, nginx not yet
/// reloaded), otherwise after it (nginx reloaded, not yet verified), for as long as the test
/// needs. The paths are the test's own temporary files.
fn gated(
    command: Vec<String>,
    first: bool,
    armed: &std::path::Path,
    parked: &std::path::Path,
) -> Vec<String> {
    let gate =
        r#"if [ -e "$1" ]; then rm -f "$1"; : > "$2"; while [ -e "$2" ]; do sleep 0.05; done; fi"#;
    let script = if first {
        format!(r#"{gate}; shift 2; exec "$@""#)
    } else {
        format!(r#"a="$1"; p="$2"; shift 2; "$@" || exit $?; set -- "$a" "$p"; {gate}"#)
    };
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        script,
        "gate".into(),
        armed.display().to_string(),
        parked.display().to_string(),
    ];
    argv.extend(command);
    argv
}

/// Waits (at most 60 s) until `marker` exists; panics with what `child` said if it ends first.
async fn wait_for_marker(child: &mut tokio::process::Child, marker: &std::path::Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the command ended ({status}) before {}", marker.display());
        }
        assert!(
            Instant::now() < until,
            "the command did not reach {} within 60s",
            marker.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_master_killed_during_a_switch_fails_it_with_exit_4_and_after_a_restart_the_next_deploy_succeeds(
) {
    let mut stage = Stage::new("fi-nginx-killed").await;
    stage.deploy("v1", &[]).await;
    let load = stage.load().await;
    let armed = stage.dir.path().join("gate-armed");
    let parked = stage.dir.path().join("gate-parked");
    let gated_config = stage.write_config(
        "gated.toml",
        &Tweaks {
            test_command: Some(gated(stage.nginx.test_command(), true, &armed, &parked)),
            ..Tweaks::default()
        },
    );

    std::fs::write(&armed, "").expect("arm the gate");
    let mut deploy = stage
        .command(&gated_config, &["deploy", "--release", "v2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn deploy");
    wait_for_marker(&mut deploy, &parked).await;
    // Mid-switch: the upstream file routes to green, nginx is not reloaded yet.
    let upstream = std::fs::read_to_string(stage.nginx.upstream_file()).expect("upstream file");
    assert!(!upstream.contains(":9;"), "{upstream}");
    stage.nginx.kill_master();
    std::fs::remove_file(&parked).expect("let the switch go on");
    let out = tokio::time::timeout(COMMAND_DEADLINE, deploy.wait_with_output())
        .await
        .expect("the deploy ends")
        .expect("deploy output");
    let said = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "$ blue-green deploy --release v2 (nginx's master killed mid-switch) -> {}\n{said}",
        out.status
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "exit 4 (router unreachable): {said}"
    );
    assert!(said.contains("nginx is not running"), "{said}");
    assert!(said.contains("previous file was restored"), "{said}");

    // nginx's orphaned workers go on serving blue: nothing was lost so far.
    assert_eq!(stage.served().await, "blue v1");
    let down = load.snapshot();
    assert_eq!(
        down.failed, 0,
        "requests failed before nginx was restarted: {down}"
    );
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(status["leftovers"], serde_json::json!([]), "{status}");
    assert!(
        !running(&status, "green"),
        "the failed deploy removed green: {status}"
    );

    // nginx started again (what is left of it stopped first): it routes by the restored file.
    let restarting = Instant::now();
    stage.nginx.restart().await.expect("nginx starts again");
    let restart_took = restarting.elapsed();
    stage.wait_until_served("blue v1").await;
    let up = load
        .wait_for(load.snapshot().total + 50, Duration::from_secs(20))
        .await;
    let lost_while_down = up.failed - down.failed;

    stage.deploy("v2", &[]).await;
    assert_eq!(stage.served().await, "green v2");
    let end = load.stop().await;
    eprintln!(
        "nginx's master killed mid-switch: {} requests failed while nginx was stopped and started again ({restart_took:?}, the router itself down), {} otherwise; load: {end}",
        lost_while_down,
        end.failed - lost_while_down
    );
    assert_eq!(
        end.failed - lost_while_down,
        0,
        "requests failed outside nginx's restart: {end}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_reports_the_connections_nginx_still_held_open_to_the_old_color() {
    let stage = Stage::new("fi-open-at-stop").await;
    let config = stage.write_config(
        "blue-green.toml",
        &Tweaks {
            pid_file: true,
            ..Tweaks::default()
        },
    );
    stage.deploy("v1", &[]).await;
    let status = stage.status().await;
    let blue = &instance(&status, "blue").expect("blue runs")["instance"]["endpoint"];
    let blue = Endpoint::new(
        blue["host"].as_str().expect("host"),
        blue["port"].as_u64().expect("port") as u16,
    );
    // A request that outlasts the drain (500 ms): it stands for a WebSocket or a stream.
    let long = {
        let url = stage.nginx.url("/slow?ms=20000");
        tokio::spawn(async move {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client")
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map(|_| ())
        })
    };
    let router = blue_green_router::NginxRouter::new(stage.nginx.router_config()).expect("router");
    let until = Instant::now() + Duration::from_secs(10);
    while router.open_connections(&blue).await.expect("count") != Some(1) {
        assert!(
            Instant::now() < until,
            "nginx never held the long request open to blue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let out = stage
        .run_with(&config, &["--json", "deploy", "--release", "v2"])
        .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let drained: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "drained")
        .collect();
    assert_eq!(drained.len(), 1, "{stdout}");
    assert_eq!(drained[0]["open"], 1, "{}", drained[0]);
    assert_eq!(drained[0]["left"], Value::Null, "{}", drained[0]);
    // The long request ended when blue stopped.
    let ended = tokio::time::timeout(Duration::from_secs(30), long)
        .await
        .expect("the long request ends when blue stops")
        .expect("its task");
    assert!(ended.is_err(), "it did not end normally: {ended:?}");

    // And in a person's terms.
    stage.deploy("v3", &[]).await;
    let text = stage
        .run_with(&config, &["deploy", "--release", "v4"])
        .await;
    let said = String::from_utf8_lossy(&text.stderr);
    assert!(text.status.success(), "{said}");
    assert!(
        said.contains("0 long-lived connections still open to blue when it stopped"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_master_killed_after_the_reload_leaves_a_consistent_state_that_the_next_command_repairs(
) {
    let mut stage = Stage::new("fi-nginx-killed-late").await;
    stage.deploy("v1", &[]).await;
    let load = stage.load().await;
    let armed = stage.dir.path().join("gate-armed");
    let parked = stage.dir.path().join("gate-parked");
    let gated_config = stage.write_config(
        "gated.toml",
        &Tweaks {
            reload_command: Some(gated(stage.nginx.reload_command(), false, &armed, &parked)),
            pid_file: true,
            ..Tweaks::default()
        },
    );

    std::fs::write(&armed, "").expect("arm the gate");
    let mut deploy = stage
        .command(&gated_config, &["deploy", "--release", "v2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn deploy");
    wait_for_marker(&mut deploy, &parked).await;
    // Reloaded: once nginx's new workers serve green, its master dies before the verification.
    stage.wait_until_served("green v2").await;
    stage.nginx.kill_master();
    std::fs::remove_file(&parked).expect("let the switch go on");
    let out = tokio::time::timeout(COMMAND_DEADLINE, deploy.wait_with_output())
        .await
        .expect("the deploy ends")
        .expect("deploy output");
    let said = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "$ blue-green deploy --release v2 (nginx's master killed after the reload) -> {}\n{said}",
        out.status
    );
    let down = load.snapshot();
    let status = stage.status().await;
    let served = stage.served().await;
    eprintln!("after it: nginx serves `{served}`; status {status}; load {down}");
    // The verification cannot watch the workers of a master that is gone, and routing back
    // needs a reload that no master takes: exit 5, saying what is left. Nothing is
    // half-done: the file routes to green, a ready color that runs and that nginx's orphaned
    // workers serve, and status lists the interrupted deploy for the next command.
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(said.contains("nginx is not running"), "{said}");
    // What nginx's orphaned workers serve is nginx's: the new ones green, and old ones that
    // the master had not yet told to stop when it died (it signals them after it starts the
    // new ones) still blue; two full runs saw `blue v1` here. Both colors run, so either one
    // answers, and never an error.
    assert!(served == "green v2" || served == "blue v1", "{served}");
    assert_eq!(status["live"], "green", "{status}");
    assert!(
        running(&status, "green") && running(&status, "blue"),
        "{status}"
    );
    assert_eq!(
        status["leftovers"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );

    stage.nginx.restart().await.expect("nginx starts again");
    let up = load
        .wait_for(load.snapshot().total + 50, Duration::from_secs(20))
        .await;
    let lost_while_down = up.failed - down.failed;
    let out = stage.run(&["repair"]).await;
    assert!(
        out.status.success(),
        "repair: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The repair finishes what the deploy began to undo: back to blue, green removed.
    let status = stage.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert!(
        running(&status, "blue") && !running(&status, "green"),
        "{status}"
    );
    assert_eq!(status["leftovers"], serde_json::json!([]), "{status}");
    stage.wait_until_served("blue v1").await;
    stage.deploy("v3", &[]).await;
    assert_eq!(stage.served().await, "green v3");
    let end = load.stop().await;
    eprintln!(
        "nginx's master killed after the reload: {lost_while_down} requests failed while nginx was stopped and started again, {} otherwise; load: {end}",
        end.failed - lost_while_down
    );
    assert_eq!(
        down.failed, 0,
        "requests failed before nginx's restart: {down}"
    );
    assert_eq!(end.failed - lost_while_down, 0, "{end}");
}
