//! The Docker daemon stopped (SIGTERM, as `systemctl stop docker` does) and started again
//! while the `blue-green` binary deploys, at the start of each of the steps start, ready, drain
//! and stop, with requests flowing through the built-in proxy the whole time.
//!
//! The machine's own daemon is shared by everything on it and is never stopped: the runtime
//! talks to a private dockerd (blue_green_testkit::swarm::TestDaemon, a dockerd in a network
//! namespace of its own, ports published on its address on a test bridge) through
//! `DOCKER_HOST`, with `live-restore: true` as in production, so that the containers keep
//! running while dockerd is down. The deploy is parked at the step (`BLUE_GREEN_TEST_PAUSE_AT`
//! of the `test-hooks` feature), dockerd is stopped, the deploy goes on to its end, dockerd is
//! started again. Then: the command completed (exit 0) or failed with exit 4 naming Docker;
//! the proxy routes to a running color that answers; the next deploy succeeds; no request
//! failed.
//!
//! Runs as root (a network namespace, a bridge, iptables rules, a cgroup, a dockerd); fails
//! with a clear message otherwise. Everything it makes is removed on drop, also on panic.

use std::path::Path;
use std::time::{Duration, Instant};

use blue_green_cli::test_hooks::{pause_marker, resume_marker, PAUSE_ENV};
use blue_green_testkit::docker::{demo_app_image, DockerCleanup};
use blue_green_testkit::load::{Load, LoadConfig};
use blue_green_testkit::swarm::TestDaemon;
use serde_json::Value;

// `blue_green`, `ok` and `write_proxy_config` of the shared helpers run against the machine's
// daemon; this test points every command at its private one.
#[allow(dead_code)]
#[path = "common/proxy.rs"]
mod proxy;
use proxy::{
    command, free_port, ok_with, start_proxy, through_proxy, write_proxy_config_with_runtime,
};

/// No single command here takes longer on a busy 2-core machine.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `blue-green args` in `dir` against the daemon at `host`; it must succeed.
async fn ok(dir: &Path, host: &str, args: &[&str]) -> String {
    let mut cmd = command(dir);
    cmd.env("DOCKER_HOST", host);
    tokio::time::timeout(COMMAND_DEADLINE, ok_with(cmd, args))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`blue-green {}` ran past {COMMAND_DEADLINE:?}",
                args.join(" ")
            )
        })
}

/// The last JSON line of `status --json`.
async fn status(dir: &Path, host: &str) -> Value {
    let out = ok(dir, host, &["--json", "status"]).await;
    serde_json::from_str(out.lines().last().expect("a result line")).expect("JSON")
}

/// True when `status` lists a running instance of `color` marked live.
fn live_instance_runs(status: &Value, color: &str) -> bool {
    status["status"]["instances"].as_array().is_some_and(|all| {
        all.iter().any(|i| {
            i["live"] == true && i["instance"]["color"] == color && i["state"]["state"] == "running"
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_daemon_stopped_and_started_again_at_each_step_loses_no_request() {
    let cleanup = DockerCleanup::new("cli-dockerd").await;
    let app = cleanup.prefix().to_string();
    let image = demo_app_image(&cleanup).await;
    let mut daemon = TestDaemon::start(true).await;
    daemon.load_image(cleanup.docker(), &image).await;
    let host = daemon.node().docker_host();
    let address = daemon.node().address.clone();

    let dir = tempfile::Builder::new()
        .prefix("bg-cli-dockerd-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path();
    let state_dir = d.join(".blue-green");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = start_proxy(d, &listen).await;
    write_proxy_config_with_runtime(
        d,
        &app,
        &image,
        &listen,
        &format!("publish_host = {address:?}\n"),
        "",
    );

    ok(d, &host, &["deploy", "--release", "v1"]).await;
    let base = format!("http://{listen}");
    assert_eq!(through_proxy(&format!("{base}/")).await, "demo-app blue v1");

    let load = Load::start(LoadConfig::new(base.clone()));
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "traffic flows through the proxy: {warm}");

    let mut outcomes = Vec::new();
    let mut release = 1;
    for step in ["start", "ready", "drain", "stop"] {
        release += 1;
        let faulty = format!("v{release}");
        let mut deploy = command(d)
            .env("DOCKER_HOST", &host)
            .env(PAUSE_ENV, step)
            .args(["deploy", "--release", &faulty])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start blue-green deploy");
        let marker = pause_marker(&state_dir, step);
        let began = Instant::now();
        while !marker.exists() {
            assert!(
                began.elapsed() < COMMAND_DEADLINE,
                "the deploy never reached {step}"
            );
            if let Some(status) = deploy.try_wait().expect("deploy state") {
                let out = deploy.wait_with_output().await.expect("deploy output");
                panic!(
                    "the deploy ended ({status}) before reaching {step}:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        tokio::task::block_in_place(|| daemon.stop());
        std::fs::write(resume_marker(&state_dir, step), "").expect("write the resume file");
        let out = tokio::time::timeout(COMMAND_DEADLINE, deploy.wait_with_output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the deploy parked at {step} ran past {COMMAND_DEADLINE:?} with dockerd down"
                )
            })
            .expect("deploy output");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "deploy {faulty}, dockerd stopped at {step}: {}\n{said}",
            out.status
        );
        match out.status.code() {
            Some(0) => {}
            Some(4) => assert!(
                said.contains("Docker"),
                "exit 4 names Docker (dockerd stopped at {step}):\n{said}"
            ),
            other => panic!("dockerd stopped at {step}: exit {other:?}, expected 0 or 4:\n{said}"),
        }
        outcomes.push(format!("{step}: exit {:?}", out.status.code()));

        daemon.restart().await;
        let after = status(d, &host).await;
        eprintln!("status after dockerd came back ({step}): {after}");
        let live = after["status"]["live"]
            .as_str()
            .unwrap_or_else(|| panic!("a live color after {step}: {after}"))
            .to_string();
        // The live color's instance runs, the router points at it, and it answers.
        assert!(
            live_instance_runs(&after, &live),
            "the live color {live} runs after {step}: {after}"
        );
        let answer = through_proxy(&format!("{base}/")).await;
        assert!(
            answer.starts_with(&format!("demo-app {live} ")),
            "the proxy routes to the live color {live} after {step}: {answer}"
        );

        // The next deploy succeeds (repairing whatever the fault left).
        release += 1;
        let next = format!("v{release}");
        ok(d, &host, &["deploy", "--release", &next]).await;
        let clean = status(d, &host).await;
        assert_eq!(
            clean["status"]["deployment"]["release"]["id"],
            next.as_str(),
            "{clean}"
        );
        let leftovers = clean["status"]["leftovers"]
            .as_array()
            .unwrap_or_else(|| panic!("status lists its leftovers: {clean}"));
        assert!(
            leftovers.is_empty(),
            "the next deploy left nothing to repair: {clean}"
        );
        let answer = through_proxy(&format!("{base}/")).await;
        let live = clean["status"]["live"].as_str().unwrap_or_default();
        assert!(live_instance_runs(&clean, live), "{clean}");
        assert_eq!(answer, format!("demo-app {live} {next}"), "{clean}");
    }

    let report = load.stop().await;
    eprintln!("dockerd restarts: {outcomes:?}\nload through the proxy: {report}");
    assert_eq!(report.failed, 0, "{report}");
    proxy.start_kill().expect("stop the proxy");
    let _ = proxy.wait().await;
}

/// Without `live-restore` (dockerd's default), stopping dockerd stops every container with it:
/// the live color dies, requests through the proxy fail until a deploy starts a color again.
/// This test records what happens, so that the docs can say why `live-restore` matters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_live_restore_the_live_color_dies_with_the_daemon() {
    let cleanup = DockerCleanup::new("cli-dockerd-nolr").await;
    let app = cleanup.prefix().to_string();
    let image = demo_app_image(&cleanup).await;
    let mut daemon = TestDaemon::start(false).await;
    daemon.load_image(cleanup.docker(), &image).await;
    let host = daemon.node().docker_host();
    let address = daemon.node().address.clone();
    let dir = tempfile::Builder::new()
        .prefix("bg-cli-dockerd-nolr-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = start_proxy(d, &listen).await;
    write_proxy_config_with_runtime(
        d,
        &app,
        &image,
        &listen,
        &format!("publish_host = {address:?}\n"),
        "",
    );
    ok(d, &host, &["deploy", "--release", "v1"]).await;
    let base = format!("http://{listen}");
    let load = Load::start(LoadConfig::new(base.clone()));
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert_eq!(warm.failed, 0, "{warm}");

    tokio::task::block_in_place(|| daemon.stop());
    let down = through_proxy(&format!("{base}/")).await;
    eprintln!("through the proxy with dockerd stopped: {down}");
    assert!(
        !down.starts_with("demo-app blue"),
        "blue died with its daemon: {down}"
    );

    daemon.restart().await;
    let after = status(d, &host).await;
    eprintln!("status once dockerd is back: {after}");
    // The daemon does not start blue again (no restart policy): status finds it exited, no
    // color live, and says what the next command does about it.
    assert_eq!(after["status"]["live"], Value::Null, "{after}");
    let blue_exited = after["status"]["instances"].as_array().is_some_and(|all| {
        all.iter()
            .any(|i| i["instance"]["color"] == "blue" && i["state"]["state"] == "exited")
    });
    assert!(blue_exited, "{after}");
    assert!(
        after["status"]["leftovers"]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "{after}"
    );
    let still_down = through_proxy(&format!("{base}/")).await;
    eprintln!("through the proxy once dockerd is back: {still_down}");
    assert!(
        !still_down.starts_with("demo-app"),
        "nothing serves: {still_down}"
    );
    let out = command(d)
        .env("DOCKER_HOST", &host)
        .args(["deploy", "--release", "v2"])
        .output()
        .await
        .expect("run blue-green");
    eprintln!(
        "deploy v2 after: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the next deploy brings a color up");
    let served = through_proxy(&format!("{base}/")).await;
    eprintln!("through the proxy after deploy v2: {served}");
    assert_eq!(served, "demo-app green v2");
    let report = load.stop().await;
    eprintln!("load: {report}");
    assert!(report.failed > 0, "requests were lost: {report}");
    proxy.start_kill().expect("stop the proxy");
    let _ = proxy.wait().await;
}
