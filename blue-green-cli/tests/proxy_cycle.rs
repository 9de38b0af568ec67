//! The `blue-green` binary deploying through blue-green's own proxy (`blue-green proxy run`)
//! with real Docker containers, under steady load: validate, three deploys and a rollback,
//! with 0 failed requests and every drain ending with nothing left; and the proxy killed and
//! started again in the middle of a deploy (after the switch, before the drain). Needs Docker; fails with a
//! clear message when it is missing. Containers and images carry the test's prefix and are
//! removed on drop, also when the test fails; the proxy process is killed on drop.

use std::process::Stdio;
use std::time::{Duration, Instant};

use blue_green_testkit::docker::{demo_app_image, DockerCleanup};
use blue_green_testkit::load::{Load, LoadConfig};
use serde_json::Value;

#[path = "common/proxy.rs"]
mod proxy;
use proxy::{command, free_port, ok, start_proxy, through_proxy, write_proxy_config};

/// The `drained` events of a `--json` deploy's output.
fn drains(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "drained")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_through_the_proxy_under_load_lose_no_request() {
    let cleanup = DockerCleanup::new("cli-proxy").await;
    let app = cleanup.prefix().to_string();
    let image = demo_app_image(&cleanup).await;
    let dir = tempfile::Builder::new()
        .prefix("bg-cli-proxy-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");

    let mut proxy = start_proxy(d, &listen).await;

    let socket = write_proxy_config(d, &app, &image, &listen, "");

    ok(d, &["validate"]).await;
    ok(d, &["deploy", "--release", "v1"]).await;
    let base = format!("http://{listen}");
    assert_eq!(through_proxy(&format!("{base}/")).await, "demo-app blue v1");

    let mut load_config = LoadConfig::new(base.clone());
    load_config.slow_path = Some("/slow?ms=300".into());
    load_config.slow_every = 4;
    let load = Load::start(load_config);
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "traffic flows through the proxy: {warm}");

    let mut all_drains = Vec::new();
    for release in ["v2", "v3"] {
        let stdout = ok(d, &["--json", "deploy", "--release", release]).await;
        all_drains.extend(drains(&stdout));
    }
    let stdout = ok(d, &["--json", "rollback"]).await;
    all_drains.extend(drains(&stdout));
    let report = load.stop().await;
    eprintln!("load through the proxy: {report}");
    eprintln!("drains: {all_drains:?}");
    assert_eq!(report.failed, 0, "{report}");
    assert!(
        report.by_color.contains_key("blue") && report.by_color.contains_key("green"),
        "{report}"
    );
    assert_eq!(
        all_drains.len(),
        3,
        "one drain per switch away from a running color"
    );
    for drain in &all_drains {
        assert_eq!(
            drain["left"], 0,
            "the drain ended with nothing left: {drain}"
        );
        let ms = drain["elapsed_ms"].as_u64().expect("elapsed_ms");
        assert!(ms < 5_000, "the drain ended before its deadline: {drain}");
    }
    assert_eq!(
        through_proxy(&format!("{base}/")).await,
        "demo-app green v2"
    );

    let status: Value = serde_json::from_str(
        ok(
            d,
            &[
                "--json",
                "proxy",
                "status",
                "--control",
                socket.to_str().expect("utf-8"),
            ],
        )
        .await
        .lines()
        .last()
        .expect("a result line"),
    )
    .expect("JSON");
    let apps = status["status"]["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 1, "{status}");
    assert_eq!(apps[0]["app"], app.as_str());
    let errors: u64 = status["status"]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["errors"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(errors, 0, "{status}");

    ok(d, &["down", "blue"]).await;
    proxy.start_kill().expect("stop the proxy");
    let _ = proxy.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_killed_and_started_again_during_a_switch_resumes_it_and_the_deploy_completes() {
    let cleanup = DockerCleanup::new("cli-proxy-restart").await;
    let app = cleanup.prefix().to_string();
    let image = demo_app_image(&cleanup).await;
    let dir = tempfile::Builder::new()
        .prefix("bg-cli-proxy-restart-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = start_proxy(d, &listen).await;
    // After the switch, once armed: the deploy parks in its post_switch hook until the test
    // removes `parked` (test-made paths only).
    let armed = d.join("armed");
    let parked = d.join("parked");
    let gate = format!(
        r#"if [ -e "{armed}" ]; then rm -f "{armed}"; : > "{parked}"; while [ -e "{parked}" ]; do sleep 0.05; done; fi"#,
        armed = armed.display(),
        parked = parked.display()
    );
    write_proxy_config(
        d,
        &app,
        &image,
        &listen,
        &format!(
            "\n[hooks]\npost_switch = {{ command = [\"sh\", \"-c\", {gate:?}], timeout = \"60s\" }}\n"
        ),
    );
    ok(d, &["deploy", "--release", "v1"]).await;
    let base = format!("http://{listen}");
    let load = Load::start(LoadConfig::new(base.clone()));
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "traffic flows through the proxy: {warm}");

    std::fs::write(&armed, "").expect("arm the gate");
    let deploy = command(d)
        .args(["--json", "deploy", "--release", "v2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deploy");
    let began = Instant::now();
    while !parked.exists() {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the deploy did not reach its post_switch hook within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Switched to green and verified; blue still runs. The proxy dies (SIGKILL) and starts
    // again from its state file.
    let before = load.snapshot();
    let restarting = Instant::now();
    proxy.start_kill().expect("SIGKILL the proxy");
    proxy.wait().await.expect("the proxy ends");
    let mut proxy = start_proxy(d, &listen).await;
    let restart_took = restarting.elapsed();
    assert_eq!(
        through_proxy(&format!("{base}/")).await,
        "demo-app green v2"
    );
    let up = load
        .wait_for(load.snapshot().total + 50, Duration::from_secs(20))
        .await;
    let lost_while_down = up.failed - before.failed;
    std::fs::remove_file(&parked).expect("let the deploy go on");

    let out = tokio::time::timeout(Duration::from_secs(120), deploy.wait_with_output())
        .await
        .expect("the deploy ends")
        .expect("deploy output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "$ blue-green --json deploy --release v2 (proxy restarted after the switch) -> {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the deploy completes: {stdout}");
    let drained = drains(&stdout);
    assert_eq!(drained.len(), 1, "{stdout}");

    // The next deploy goes through the restarted proxy as usual.
    ok(d, &["deploy", "--release", "v3"]).await;
    assert_eq!(through_proxy(&format!("{base}/")).await, "demo-app blue v3");
    let end = load.stop().await;
    eprintln!(
        "the proxy killed and started again after a switch ({restart_took:?} down): {lost_while_down} requests failed while it was down, {} otherwise; drain: {drained:?}; load: {end}",
        end.failed - lost_while_down
    );
    assert_eq!(
        before.failed, 0,
        "requests failed before the restart: {before}"
    );
    assert_eq!(
        end.failed - lost_while_down,
        0,
        "requests failed outside the proxy's restart: {end}"
    );
    ok(d, &["down", "green"]).await;
    proxy.start_kill().expect("stop the proxy");
    let _ = proxy.wait().await;
}
