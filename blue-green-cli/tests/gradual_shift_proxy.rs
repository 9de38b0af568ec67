//! The gradual shift end to end: the `blue-green` binary, real Docker containers of the demo
//! app and blue-green's own proxy (`blue-green proxy run`), under steady load (kept-alive and
//! new connections, POSTs, slow requests). `deploy --steps 20,100` holds a 20% split with a
//! sticky cookie for its `step_wait`, then switches; a release whose `/health` fails once it
//! takes traffic fails its 20% step, and all traffic goes back to the old color with no split
//! left and the new color removed. Both with 0 failed requests. Needs Docker; fails with a
//! clear message when it is missing. Containers and images carry the test's prefix and are
//! removed on drop, also when the test fails; the proxy process is killed on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use blue_green_docker::docker::LABEL_COLOR;
use blue_green_proxy::{AppInfo, ControlClient};
use blue_green_testkit::docker::{
    containers_with_prefix, demo_app_image, demo_app_image_with_env, DockerCleanup,
};
use blue_green_testkit::load::{Load, LoadConfig};
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::Value;

#[path = "common/proxy.rs"]
mod proxy;
use proxy::{blue_green, command, free_port, ok, start_proxy, through_proxy, write_proxy_config};

/// One app behind its own proxy, in a temporary directory.
struct Stage {
    cleanup: DockerCleanup,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`: the proxy's listener.
    base: String,
    socket: PathBuf,
    proxy: tokio::process::Child,
}

impl Stage {
    /// Builds the demo image, starts the proxy and writes the config (`[switch]` keys in
    /// `switch`); nothing is deployed yet.
    async fn new(name: &str, switch: &str) -> Stage {
        let cleanup = DockerCleanup::new(name).await;
        let image = demo_app_image(&cleanup).await;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bg-{name}-"))
            .tempdir()
            .expect("temp dir");
        let listen = format!("127.0.0.1:{}", free_port());
        let proxy = start_proxy(dir.path(), &listen).await;
        let socket = write_proxy_config(dir.path(), cleanup.prefix(), &image, &listen, switch);
        Stage {
            cleanup,
            dir,
            base: format!("http://{listen}"),
            socket,
            proxy,
        }
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    /// The app's route as the proxy has it now.
    async fn route(&self) -> AppInfo {
        let status = ControlClient::new(&self.socket)
            .status()
            .await
            .expect("the proxy's status");
        assert_eq!(status.apps.len(), 1, "{status:?}");
        status.apps[0].clone()
    }

    /// Load through the proxy: `GET /` (the pages, not `/health`, which a sick release
    /// fails on purpose), every 5th request a `POST /echo`, every 4th a 300 ms `GET`.
    async fn load(&self) -> Load {
        let mut config = LoadConfig::new(self.base.clone());
        config.get_path = "/".into();
        config.slow_path = Some("/slow?ms=300".into());
        config.slow_every = 4;
        let load = Load::start(config);
        let warm = load.wait_for(50, Duration::from_secs(20)).await;
        assert!(warm.total >= 50, "traffic flows through the proxy: {warm}");
        assert_eq!(warm.failed, 0, "{warm}");
        load
    }

    /// `blue-green --json args` started in the background, its output piped.
    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        command(self.d())
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn blue-green")
    }

    /// Waits (at most 60 s) until the proxy splits the app's traffic; panics if `deploy`
    /// ends first.
    async fn split_begins(&self, deploy: &mut tokio::process::Child) -> AppInfo {
        let began = Instant::now();
        loop {
            let route = self.route().await;
            if route.split.is_some() {
                return route;
            }
            if let Some(status) = deploy.try_wait().expect("deploy state") {
                panic!("the deploy ended ({status}) before the proxy split its traffic");
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the proxy did not split the app's traffic within 60 s: {route:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The app's containers of `color`.
    async fn containers_of(&self, color: &str) -> Vec<String> {
        containers_with_prefix(self.cleanup.docker(), self.cleanup.prefix())
            .await
            .into_iter()
            .filter(|(_, labels)| labels.get(LABEL_COLOR).map(String::as_str) == Some(color))
            .map(|(name, _)| name)
            .collect()
    }

    async fn stop_proxy(mut self) {
        self.proxy.start_kill().expect("stop the proxy");
        let _ = self.proxy.wait().await;
    }
}

/// The events of a `--json` command's stdout.
fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Where in `events` the first event named `name` with `color` is.
fn position(events: &[Value], name: &str, color: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| e["event"] == name && e["color"] == color)
}

/// What one request of a client answered: the color (from `X-Color`) and the sticky cookie
/// the proxy set, if it set one (`bg-<app>=<id>`, without its attributes).
struct Answer {
    color: String,
    set_cookie: Option<String>,
}

/// A client without a cookie store: every request comes as a new client unless the test
/// sends a cookie itself.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn get(client: &reqwest::Client, base: &str, cookie: Option<&str>) -> Answer {
    let mut request = client.get(format!("{base}/"));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = request.send().await.expect("an answer through the proxy");
    assert!(response.status().is_success(), "{response:?}");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let color = header(reqwest::header::HeaderName::from_static("x-color")).expect("X-Color");
    let set_cookie =
        header(SET_COOKIE).map(|c| c.split(';').next().unwrap_or_default().to_string());
    Answer { color, set_cookie }
}

/// Sends `n` requests as new clients (no cookie): the count by color, and one sticky cookie
/// the proxy gave per color.
async fn new_clients(base: &str, n: usize) -> (BTreeMap<String, usize>, BTreeMap<String, String>) {
    let client = client();
    let mut counts = BTreeMap::new();
    let mut cookies = BTreeMap::new();
    for _ in 0..n {
        let answer = get(&client, base, None).await;
        *counts.entry(answer.color.clone()).or_insert(0) += 1;
        if let Some(cookie) = answer.set_cookie {
            cookies.entry(answer.color).or_insert(cookie);
        }
    }
    (counts, cookies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gradual_shift_through_the_proxy_splits_new_clients_keeps_cookies_and_loses_nothing() {
    let stage = Stage::new("cli-shift-proxy", "step_wait = \"3s\"\n").await;
    let d = stage.d();
    let base = stage.base.clone();
    ok(d, &["deploy", "--release", "v1"]).await;
    assert_eq!(through_proxy(&format!("{base}/")).await, "demo-app blue v1");
    let load = stage.load().await;

    let began = Instant::now();
    let mut deploy = stage.spawn(&["deploy", "--release", "v2", "--steps", "20,100"]);
    let split = stage.split_begins(&mut deploy).await;
    let split_at = began.elapsed();
    let split_info = split.split.clone().expect("a split");
    assert_eq!(split_info.percent, 20, "{split:?}");
    assert_ne!(split.target.as_deref(), Some(split_info.next.as_str()));

    // While the 20% step holds: new clients are split, and a client that keeps its cookie
    // keeps its color.
    let (counts, cookies) = new_clients(&base, 200).await;
    let green = counts.get("green").copied().unwrap_or(0);
    let mut sticky = BTreeMap::new();
    let client = client();
    for (color, cookie) in &cookies {
        let mut seen = BTreeMap::new();
        for _ in 0..20 {
            let answer = get(&client, &base, Some(cookie)).await;
            assert_eq!(
                answer.set_cookie, None,
                "a client with its cookie gets no new one"
            );
            *seen.entry(answer.color).or_insert(0) += 1;
        }
        sticky.insert(color.clone(), seen);
    }
    // Every sample above was taken during the split: it is still there.
    let still = stage.route().await;
    let sampled_by = began.elapsed();
    eprintln!(
        "20% step (split {split_at:?} after the deploy began, sampled by {sampled_by:?}): 200 new clients went {counts:?} ({:.1}% green); 20 requests per kept cookie went {sticky:?}",
        green as f64 / 2.0
    );
    assert_eq!(
        still.split.as_ref().map(|s| s.percent),
        Some(20),
        "the samples were taken during the 20% step (the step_wait is too short for this machine?): {still:?}"
    );
    assert!(
        (10..=80).contains(&green),
        "about 20% of 200 new clients go to green: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 200, "{counts:?}");
    assert_eq!(
        cookies.keys().collect::<Vec<_>>(),
        ["blue", "green"],
        "each side's new clients got its cookie"
    );
    for (color, seen) in &sticky {
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            [color],
            "a client keeping its {color} cookie stays on {color}: {seen:?}"
        );
    }

    let out = tokio::time::timeout(Duration::from_secs(120), deploy.wait_with_output())
        .await
        .expect("the deploy ends")
        .expect("deploy output");
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "$ blue-green --json deploy --release v2 --steps 20,100 -> {} in {took:?}\n{stderr}",
        out.status
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = json_lines(&out.stdout);
    let shifts: Vec<&Value> = events.iter().filter(|e| e["event"] == "shifted").collect();
    assert_eq!(shifts.len(), 1, "one step below 100%: {shifts:?}");
    assert_eq!(shifts[0]["color"], "green");
    assert_eq!(shifts[0]["percent"], 20);
    let shifted = position(&events, "shifted", "green").expect("shifted");
    let routed = position(&events, "routed", "green").expect("the switch to green");
    assert!(shifted < routed, "the 20% step comes before the switch");
    assert!(
        took >= Duration::from_secs(3),
        "the 20% step was held for its step_wait"
    );

    // After the switch: everyone on green, a blue cookie included; no split, no cookies.
    let route = stage.route().await;
    assert_eq!(route.split, None, "{route:?}");
    let (after, cookies_after) = new_clients(&base, 50).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["green"],
        "all new clients on green after the deploy: {after:?}"
    );
    assert!(cookies_after.is_empty(), "no split, no cookie");
    let answer = get(&client, &base, Some(&cookies["blue"])).await;
    assert_eq!(
        answer.color, "green",
        "a blue cookie is not honored any more"
    );
    assert_eq!(
        through_proxy(&format!("{base}/")).await,
        "demo-app green v2"
    );

    let report = load.stop().await;
    eprintln!("load through the gradual shift: {report}");
    assert_eq!(report.failed, 0, "{report}");
    assert!(
        report.by_color.contains_key("blue") && report.by_color.contains_key("green"),
        "{report}"
    );
    assert!(
        report.keep_alive > 0 && report.new_connection > 0,
        "{report}"
    );
    stage.stop_proxy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_failing_during_its_step_goes_back_to_the_old_color_with_no_split_and_no_loss() {
    // The step is long enough for the sick release to fail in it: its /health fails 500 ms
    // after its first request from the load, and two failed probes in a row end the step.
    let stage = Stage::new(
        "cli-shift-proxy-sick",
        "step_wait = \"20s\"\nwatch_failures = 2\n",
    )
    .await;
    let sick = demo_app_image_with_env(
        &stage.cleanup,
        "sick",
        &[("UNHEALTHY_AFTER_TRAFFIC_MS", "500")],
    )
    .await;
    let d = stage.d();
    let base = stage.base.clone();
    ok(d, &["deploy", "--release", "v1"]).await;
    let blue_route = stage.route().await;
    let load = stage.load().await;

    let began = Instant::now();
    let deploy = stage.spawn(&[
        "deploy",
        "--image",
        &sick,
        "--release",
        "v2",
        "--steps",
        "20,100",
    ]);
    let out = tokio::time::timeout(Duration::from_secs(120), deploy.wait_with_output())
        .await
        .expect("the deploy ends")
        .expect("deploy output");
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "$ blue-green --json deploy --image <sick> --release v2 --steps 20,100 -> {} in {took:?}\n{stderr}",
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("all live traffic went back to the old color"),
        "says that traffic is back on the old color: {stderr}"
    );
    assert!(
        stderr.contains("the new one was drained and removed"),
        "{stderr}"
    );
    assert!(
        took < Duration::from_secs(20),
        "the step ended at the failure, not at its step_wait"
    );
    let events = json_lines(&out.stdout);
    assert!(
        position(&events, "shifted", "green").is_some(),
        "the 20% step began"
    );
    assert_eq!(
        position(&events, "routed", "green"),
        None,
        "never switched to green"
    );
    let after_failure = load.snapshot();
    assert!(
        after_failure.by_color.get("green").copied().unwrap_or(0) > 0,
        "the sick release took a share of the load: {after_failure}"
    );

    // Everything back on blue: the same route as before, no split, no cookie.
    let route = stage.route().await;
    assert_eq!(route, blue_route, "the proxy routes as before the deploy");
    assert_eq!(route.split, None);
    let (counts, cookies) = new_clients(&base, 50).await;
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["blue"],
        "all new clients on blue after the failed step: {counts:?}"
    );
    assert!(cookies.is_empty(), "no split, no cookie");
    let green = stage.containers_of("green").await;
    assert!(
        green.is_empty(),
        "the sick green container is gone: {green:?}"
    );

    let out = blue_green(d, &["--json", "status"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status = json_lines(&out.stdout).pop().expect("a status line")["status"].clone();
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(status["deployment"]["release"]["id"], "v1", "{status}");
    assert_eq!(status["leftovers"], serde_json::json!([]), "{status}");
    assert_eq!(status["warnings"], serde_json::json!([]), "{status}");
    assert!(status["staged"].is_null(), "{status}");
    let instances = status["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "only blue is left: {status}");
    assert_eq!(instances[0]["instance"]["color"], "blue", "{status}");
    assert_eq!(instances[0]["state"]["state"], "running", "{status}");

    // The next deploy goes through as usual.
    ok(d, &["deploy", "--release", "v3"]).await;
    assert_eq!(
        through_proxy(&format!("{base}/")).await,
        "demo-app green v3"
    );
    let report = load.stop().await;
    eprintln!(
        "load through the failed step and the deploy after it: {report} (when the deploy failed: {after_failure})"
    );
    assert_eq!(report.failed, 0, "{report}");
    stage.stop_proxy().await;
}
