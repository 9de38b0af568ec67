//! The `blue-green` binary against the real Docker engine and a real nginx: deploy (first),
//! deploy (switch), status, rollback, a failed deploy, Ctrl-C during a deploy, history and down.
//! Every answer through nginx is checked after each command. Needs Docker and nginx; fails with
//! a clear message when either is missing. Containers and images carry the test's prefix and
//! are removed on drop, also when the test fails.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use blue_green_cli::test_hooks::{pause_marker, PAUSE_ENV};
use blue_green_core::Endpoint;
use blue_green_testkit::docker::{
    containers_with_prefix, demo_app_image, demo_app_image_with_env, DockerCleanup,
};
use blue_green_testkit::nginx::NginxHarness;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn toml_list(argv: &[String]) -> String {
    let items: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", items.join(", "))
}

async fn blue_green(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(args)
        .current_dir(dir)
        .env_remove("BLUE_GREEN_CONFIG")
        .env_remove(PAUSE_ENV)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run blue-green")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; returns its stdout and prints its stderr.
async fn ok(dir: &Path, args: &[&str]) -> String {
    let started = Instant::now();
    let out = blue_green(dir, args).await;
    eprintln!(
        "$ blue-green {} ({} ms)\n{}",
        args.join(" "),
        started.elapsed().as_millis(),
        text(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`blue-green {}` failed ({}):\n{}",
        args.join(" "),
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// What nginx answers on `/` now.
async fn through_nginx(nginx: &NginxHarness) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    match client.get(nginx.url("/")).send().await {
        Ok(r) => r.text().await.unwrap_or_default().trim().to_string(),
        Err(e) => format!("no answer: {e}"),
    }
}

fn result_line(stdout: &str) -> Value {
    let last = stdout.lines().last().expect("a result line on stdout");
    let v: Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(v["event"], "result", "{last}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_switch_status_rollback_history_down_through_real_nginx() {
    let cleanup = DockerCleanup::new("cli-cycle").await;
    let app = cleanup.prefix().to_string();
    let image = demo_app_image(&cleanup).await;
    let sick = demo_app_image_with_env(&cleanup, "sick", &[("NEVER_HEALTHY", "1")]).await;
    let slow = demo_app_image_with_env(&cleanup, "slow", &[("START_DELAY_MS", "60000")]).await;

    // Before the first deploy nginx points at a port where nothing listens.
    let nothing = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = Endpoint::new("127.0.0.1", nothing.local_addr().expect("addr").port());
    drop(nothing);
    let nginx = NginxHarness::start(&app, &nowhere)
        .await
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));

    let dir = tempfile::Builder::new()
        .prefix("bg-cli-cycle-")
        .tempdir()
        .expect("temp dir");
    let config = format!(
        r#"app = "{app}"

[runtime]
kind = "docker"
image = "{image}"
container_port = 8080

[health]
kind = "http"
path = "/health"
expect_body = "{{color}} {{release}}"
interval = "100ms"
deadline = "10s"

[router]
kind = "nginx"
upstream = "{app}"
upstream_file = "{upstream_file}"
server_options = ["max_fails=0"]
test_command = {test}
reload_command = {reload}
verify_url = "{verify}"

[switch]
drain = "300ms"
stop_timeout = "5s"
keep_previous = "stopped"
"#,
        upstream_file = nginx.upstream_file().display(),
        test = toml_list(&nginx.test_command()),
        reload = toml_list(&nginx.reload_command()),
        verify = nginx.url("/health"),
    );
    std::fs::write(dir.path().join("blue-green.toml"), config).expect("write config");
    let d = dir.path();

    ok(d, &["validate"]).await;

    // 1. The first deploy goes to blue.
    ok(d, &["deploy", "--release", "v1"]).await;
    assert_eq!(through_nginx(&nginx).await, "demo-app blue v1");

    // 2. The second deploy starts green and switches; NDJSON events on stdout.
    let stdout = ok(d, &["--json", "deploy", "--release", "v2"]).await;
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "routed" && e["color"] == "green"),
        "{stdout}"
    );
    let result = result_line(&stdout);
    assert_eq!(result["ok"], true);
    assert_eq!(result["report"]["live"]["color"], "green");
    assert_eq!(result["report"]["previous"], "blue");
    assert_eq!(through_nginx(&nginx).await, "demo-app green v2");

    // 3. Status: green live, blue kept stopped for rollback.
    let status = result_line(&ok(d, &["--json", "status"]).await);
    assert_eq!(status["status"]["live"], "green", "{status}");
    let instances = status["status"]["instances"].as_array().expect("instances");
    let of = |color: &str| {
        instances
            .iter()
            .find(|i| i["instance"]["color"] == color)
            .unwrap_or_else(|| panic!("no {color} instance in {status}"))
    };
    assert_eq!(of("green")["live"], true);
    assert_eq!(of("green")["state"]["state"], "running");
    assert_eq!(of("blue")["live"], false);
    assert_eq!(of("blue")["state"]["state"], "exited");
    let human = ok(d, &["status"]).await;
    assert!(human.contains("live     green, release v2"), "{human}");

    // 4. Rollback starts blue again and routes to it.
    ok(d, &["rollback"]).await;
    assert_eq!(through_nginx(&nginx).await, "demo-app blue v1");

    // 5. A release that never gets healthy fails with exit 1, shows its logs, and blue serves on.
    let out = blue_green(d, &["deploy", "--release", "v3", "--image", &sick]).await;
    let stderr = text(&out.stderr);
    eprintln!("$ blue-green deploy --release v3 --image {sick}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("never became ready"), "{stderr}");
    assert!(stderr.contains("status 503"), "the last probe: {stderr}");
    assert!(stderr.contains("log lines of green"), "the logs: {stderr}");
    assert_eq!(through_nginx(&nginx).await, "demo-app blue v1");

    // 6. Ctrl-C while a slow release starts: rolled back, exit 130, blue serves on.
    let mut child = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(["--json", "deploy", "--release", "v4", "--image", &slow])
        .current_dir(d)
        .env_remove(PAUSE_ENV)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn deploy");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let wait_for_ready = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains(r#""event":"probe_attempt""#) {
                return true;
            }
        }
        false
    };
    let probing = tokio::time::timeout(Duration::from_secs(30), wait_for_ready)
        .await
        .expect("the deploy should reach its readiness wait within 30s");
    assert!(probing, "the deploy ended before probing");
    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the cancelled deploy should end within 30s")
        .expect("wait");
    assert_eq!(status.code(), Some(130));
    assert_eq!(through_nginx(&nginx).await, "demo-app blue v1");

    // 7. History: every command with its outcome and step timings.
    let history = result_line(&ok(d, &["--json", "history"]).await);
    let records = history["history"].as_array().expect("history array");
    let summary: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["command"].as_str().unwrap_or("").to_string(),
                r["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected = [
        ("deploy", "succeeded"),
        ("deploy", "succeeded"),
        ("rollback", "succeeded"),
        ("deploy", "failed"),
        ("deploy", "cancelled"),
    ];
    assert_eq!(
        summary,
        expected
            .iter()
            .map(|(c, o)| (c.to_string(), o.to_string()))
            .collect::<Vec<_>>()
    );
    assert!(
        records[1]["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|t| t["step"] == "switch")),
        "{history}"
    );
    let human = ok(d, &["history", "-n", "2"]).await;
    assert_eq!(
        human.lines().count(),
        1 + 2 + 2,
        "header, 2 records and their errors:\n{human}"
    );

    // 8. Down: the idle color goes; the live one only with --force.
    ok(d, &["down"]).await;
    let left = containers_with_prefix(cleanup.docker(), &app).await;
    assert_eq!(
        left.len(),
        1,
        "only the live blue container is left: {left:?}"
    );
    let out = blue_green(d, &["down", "blue"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(through_nginx(&nginx).await, "demo-app blue v1");
    ok(d, &["down", "blue", "--force"]).await;
    let left = containers_with_prefix(cleanup.docker(), &app).await;
    assert!(left.is_empty(), "nothing is left: {left:?}");
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// nginx started from an example's own `nginx/nginx.conf`; stopped on drop.
struct ExampleNginx {
    args: Vec<String>,
    pid_file: std::path::PathBuf,
}

impl ExampleNginx {
    fn start(example: &Path) -> ExampleNginx {
        let prefix = example.join("nginx");
        let args = vec![
            "-p".to_string(),
            format!("{}/", prefix.display()),
            "-c".into(),
            "nginx.conf".into(),
            "-e".into(),
            "error.log".into(),
        ];
        let nginx = blue_green_testkit::nginx::NGINX;
        assert!(
            Path::new(nginx).exists(),
            "nginx not found at {nginx}: install Debian's nginx-light (scripts/test does)"
        );
        let status = std::process::Command::new(nginx)
            .args(&args)
            .status()
            .expect("run nginx");
        let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
        assert!(status.success(), "nginx did not start: {log}");
        ExampleNginx {
            args,
            pid_file: prefix.join("nginx.pid"),
        }
    }
}

impl Drop for ExampleNginx {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
        let _ = std::process::Command::new(blue_green_testkit::nginx::NGINX)
            .args(&self.args)
            .args(["-s", "stop"])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while self.pid_file.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.pid_file.exists() && !pid.trim().is_empty() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Replaces `from` by `to` in `file`, which must contain it.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("read");
    assert!(text.contains(from), "{} has no `{from}`", file.display());
    std::fs::write(file, text.replace(from, to)).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_nginx_example_deploys_switches_and_rolls_back() {
    let cleanup = DockerCleanup::new("cli-compose").await;
    let app = cleanup.prefix().to_string();
    let image = demo_app_image(&cleanup).await;

    // The example as a user has it, with ports and the app name made unique to this test.
    let dir = tempfile::Builder::new()
        .prefix("bg-cli-compose-")
        .tempdir()
        .expect("temp dir");
    let example = dir.path().join("compose-nginx");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/compose-nginx"),
        &example,
    );
    let (front, blue, green) = (free_port(), free_port(), free_port());
    let config = example.join("blue-green.toml");
    edit(&config, r#"app = "demo""#, &format!(r#"app = "{app}""#));
    edit(&config, "127.0.0.1:8080", &format!("127.0.0.1:{front}"));
    edit(&config, "127.0.0.1:8081", &format!("127.0.0.1:{blue}"));
    edit(&config, "127.0.0.1:8082", &format!("127.0.0.1:{green}"));
    edit(&config, r#"drain = "10s""#, r#"drain = "200ms""#);
    // Keep the old color running, so that `switch` has a color to switch to.
    edit(
        &config,
        r#"keep_previous = "stopped""#,
        r#"keep_previous = "running""#,
    );
    edit(
        &example.join("docker-compose.blue.yml"),
        "8081:8080",
        &format!("{blue}:8080"),
    );
    edit(
        &example.join("docker-compose.green.yml"),
        "8082:8080",
        &format!("{green}:8080"),
    );
    edit(
        &example.join("nginx/nginx.conf"),
        "listen 127.0.0.1:8080;",
        &format!("listen 127.0.0.1:{front};"),
    );
    std::fs::copy(
        example.join("nginx/upstream.conf.initial"),
        example.join("nginx/upstream.conf"),
    )
    .expect("copy the initial upstream");
    let _nginx = ExampleNginx::start(&example);
    let front_url = format!("http://127.0.0.1:{front}/");
    let get = || async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        match client.get(&front_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default().trim().to_string(),
            Err(e) => format!("no answer: {e}"),
        }
    };

    // Run from the repository's point of view, like the README: -c with a path.
    let cli = |args: Vec<String>| {
        let mut all = vec!["-c".to_string(), config.display().to_string()];
        all.extend(args);
        all
    };
    let run = |args: &[&str]| {
        let args = cli(args.iter().map(|s| s.to_string()).collect());
        async move {
            let out = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
                .args(&args)
                .env_remove(PAUSE_ENV)
                .kill_on_drop(true)
                .output()
                .await
                .expect("run blue-green");
            eprintln!("$ blue-green {}\n{}", args.join(" "), text(&out.stderr));
            assert!(out.status.success(), "`{}` failed", args.join(" "));
            text(&out.stdout)
        }
    };

    run(&["validate"]).await;
    run(&["deploy", "--release", "v1", "--image", &image]).await;
    assert_eq!(get().await, "demo-app blue v1");
    run(&["deploy", "--release", "v2", "--image", &image]).await;
    assert_eq!(get().await, "demo-app green v2");
    let status = result_line(&run(&["--json", "status"]).await);
    assert_eq!(status["status"]["live"], "green", "{status}");

    // Blue kept running: `switch` routes to it without starting anything.
    run(&["switch", "blue"]).await;
    assert_eq!(get().await, "demo-app blue v1");
    let refused = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(cli(vec!["switch".into(), "blue".into()]))
        .output()
        .await
        .expect("run blue-green");
    assert_eq!(
        refused.status.code(),
        Some(2),
        "switching to the live color is a usage error: {}",
        text(&refused.stderr)
    );
    assert!(text(&refused.stderr).contains("already live"));

    // Rollback goes back to where traffic was before the switch.
    run(&["rollback"]).await;
    let status = result_line(&run(&["--json", "status"]).await);
    let live = status["status"]["live"]
        .as_str()
        .expect("a live color")
        .to_string();
    let release = status["status"]["deployment"]["release"]["id"]
        .as_str()
        .expect("a live release")
        .to_string();
    assert_eq!(live, "green", "{status}");
    assert_eq!(get().await, format!("demo-app {live} {release}"));

    run(&["down"]).await;
    run(&["down", "--force", &live]).await;
    let left = containers_with_prefix(cleanup.docker(), &app).await;
    assert!(left.is_empty(), "nothing is left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_paused_by_the_test_hook_holds_the_lock_and_is_repaired_after_a_kill() {
    let cleanup = DockerCleanup::new("cli-pause").await;
    let app = cleanup.prefix().to_string();
    let image = demo_app_image(&cleanup).await;
    let nothing = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = Endpoint::new("127.0.0.1", nothing.local_addr().expect("addr").port());
    drop(nothing);
    let nginx = NginxHarness::start(&app, &nowhere)
        .await
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));
    let dir = tempfile::Builder::new()
        .prefix("bg-cli-pause-")
        .tempdir()
        .expect("temp dir");
    let config = format!(
        r#"app = "{app}"
[runtime]
kind = "docker"
image = "{image}"
container_port = 8080
[health]
path = "/health"
expect_body = "{{color}} {{release}}"
interval = "100ms"
deadline = "10s"
[router]
kind = "nginx"
upstream = "{app}"
upstream_file = "{upstream_file}"
test_command = {test}
reload_command = {reload}
verify_url = "{verify}"
[switch]
drain = "200ms"
stop_timeout = "5s"
"#,
        upstream_file = nginx.upstream_file().display(),
        test = toml_list(&nginx.test_command()),
        reload = toml_list(&nginx.reload_command()),
        verify = nginx.url("/health"),
    );
    std::fs::write(dir.path().join("blue-green.toml"), config).expect("write config");
    let d = dir.path();
    ok(d, &["deploy", "--release", "v1"]).await;

    // Pause the next deploy as its readiness wait starts.
    let mut paused = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(["deploy", "--release", "v2"])
        .current_dir(d)
        .env(PAUSE_ENV, "ready")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn deploy");
    let marker = pause_marker(&d.join(".blue-green"), "ready");
    let until = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < until,
            "the deploy did not reach `ready` within 60s"
        );
        if let Some(status) = paused.try_wait().expect("try_wait") {
            panic!("the paused deploy ended early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = paused.id().expect("pid");
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker").trim(),
        pid.to_string()
    );

    // While it holds the lock, another deploy is refused with exit 3, naming it.
    let out = blue_green(d, &["deploy", "--release", "v3"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {pid}")) && stderr.contains("`deploy`"),
        "{stderr}"
    );
    assert_eq!(through_nginx(&nginx).await, "demo-app blue v1");
    // Status is not refused: it reads, names the command at work, and lists no leftovers.
    let status = result_line(&ok(d, &["--json", "status"]).await);
    assert_eq!(status["status"]["live"], "blue", "{status}");
    assert_eq!(status["status"]["in_progress"]["pid"], pid, "{status}");
    assert_eq!(
        status["status"]["leftovers"],
        serde_json::json!([]),
        "{status}"
    );

    // Killed at that exact point: status lists what it left, and the next deploy repairs it.
    paused.kill().await.expect("kill the paused deploy");
    let status = result_line(&ok(d, &["--json", "status"]).await);
    assert_eq!(status["status"]["live"], "blue", "{status}");
    assert_eq!(status["status"]["in_progress"], Value::Null, "{status}");
    let found = status["status"]["leftovers"][0]["found"]
        .as_str()
        .unwrap_or_default();
    assert!(
        found.contains(&format!("interrupted `deploy` (pid {pid}")),
        "{status}"
    );
    ok(d, &["deploy", "--release", "v2"]).await;
    assert_eq!(through_nginx(&nginx).await, "demo-app green v2");
    let history = result_line(&ok(d, &["--json", "history"]).await);
    let outcomes: Vec<&str> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or(""))
        .collect();
    assert!(
        outcomes.contains(&"interrupted"),
        "the killed deploy is recorded as interrupted: {outcomes:?}"
    );
}
