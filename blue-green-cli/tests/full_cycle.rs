//! The `blue-green` binary against the real Docker engine and a real nginx: deploy (first),
//! deploy (switch), status, rollback, a failed deploy, Ctrl-C during a deploy, history and down.
//! Every answer through nginx is checked after each command. Needs Docker and nginx; fails with
//! a clear message when either is missing. Containers and images carry the test's prefix and
//! are removed on drop, also when the test fails.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

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
        .env_remove("BLUE_GREEN_TEST_PAUSE_AT")
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
        .env_remove("BLUE_GREEN_TEST_PAUSE_AT")
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
