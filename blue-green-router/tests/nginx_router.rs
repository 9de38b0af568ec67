//! NginxRouter against the real nginx (Debian's package, started on loopback by the test) and
//! two real color servers.
//!
//! Run with `--nocapture` to see the reload→verified times and the request counts.

use std::path::Path;
use std::time::{Duration, Instant};

use blue_green_core::{Color, ComponentErrorKind, Endpoint, RouteReceipt, Router};
use blue_green_router::nginx::OLD_WORKER_OVERLAP;
use blue_green_router::{NginxConfig, NginxRouter, NginxVerify};
use blue_green_testkit::color_server::ColorServer;
use blue_green_testkit::load::{Load, LoadConfig};
use blue_green_testkit::nginx::NginxHarness;

const SWITCHES: usize = 50;

fn router_config(nginx: &NginxHarness) -> NginxConfig {
    let mut config = nginx.router_config();
    if let Some(verify) = config.verify.as_mut() {
        verify.interval = Duration::from_millis(10);
    }
    config
}

/// The colors that `n` requests through nginx, each on a new connection, answer.
async fn colors_through(nginx: &NginxHarness, n: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..n {
        let body = client
            .get(nginx.url("/health"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.push(
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    seen
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// The pids of the master's children that are accepting workers (title `worker process`, not
/// shutting down), read from /proc.
fn accepting_workers(master: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_else(|e| panic!("cannot list the children of nginx's master {master}: {e}"));
    children
        .split_whitespace()
        .filter_map(|pid| {
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let title = String::from_utf8_lossy(&title).replace('\0', " ");
            (title.contains("worker process") && !title.contains("shutting down"))
                .then(|| pid.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_switches_under_load_fail_no_request_and_verify_the_new_color() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let nginx = NginxHarness::start("app", &blue.endpoint()).await.unwrap();
    assert_eq!(colors_through(&nginx, 3).await, ["blue"; 3]);

    // First with the pid file (the router watches nginx's workers), then without it (the
    // router waits the fixed overlap), on the same nginx under the same load.
    for watch_workers in [true, false] {
        let mode = if watch_workers {
            "with pid_file (workers watched)"
        } else {
            "without pid_file (fixed overlap)"
        };
        let mut config = router_config(&nginx);
        if !watch_workers {
            config.pid_file = None;
        }
        let router = NginxRouter::new(config).unwrap();
        let load = Load::start(LoadConfig::new(nginx.url("")));
        let warm = load.wait_for(50, Duration::from_secs(20)).await;
        assert!(warm.total >= 50, "the load loop does not get going: {warm}");

        let mut reload_to_verified = Vec::new();
        let mut reload_took = Vec::new();
        for switch in 0..SWITCHES {
            let from = router.target().await.unwrap();
            let to = if from == Some(blue.endpoint()) {
                &green
            } else {
                &blue
            };
            let old_workers = accepting_workers(nginx.pid());
            let asked = Instant::now();
            let receipt = router
                .route_to(&to.endpoint())
                .await
                .unwrap_or_else(|e| panic!("{mode}: switch {switch} to {}: {e}", to.color()));
            let reloaded = asked.elapsed();
            router
                .verify(&to.instance(), &receipt)
                .await
                .unwrap_or_else(|e| panic!("{mode}: switch {switch} to {}: {e}", to.color()));
            reload_to_verified.push(asked.elapsed());
            reload_took.push(reloaded);

            // Verified with the pid file means: no worker that ran before the reload accepts
            // any more (the fixed overlap only makes that likely)...
            let still = accepting_workers(nginx.pid());
            assert!(
                !watch_workers || old_workers.iter().all(|old| !still.contains(old)),
                "{mode}: after switch {switch}, old workers {old_workers:?} still accept (accepting now: {still:?})"
            );
            // ...and every new connection right after it reaches the new color.
            assert_eq!(router.target().await.unwrap(), Some(to.endpoint()));
            let seen = colors_through(&nginx, 5).await;
            assert!(
                seen.iter().all(|c| c == to.color().as_str()),
                "{mode}: after switch {switch} to {}, new requests through nginx answered {seen:?}",
                to.color()
            );
        }
        // Keep the load running a moment after the last switch, so late failures count too.
        let before_end = load.snapshot().total;
        load.wait_for(before_end + 50, Duration::from_secs(20))
            .await;
        let report = load.stop().await;

        reload_to_verified.sort();
        reload_took.sort();
        eprintln!(
            "{SWITCHES} switches {mode}: reload asked → verified: median {:?}, p90 {:?}, max {:?} (of which route_to, i.e. write + nginx -t + nginx -s reload: median {:?}, max {:?})",
            percentile(&reload_to_verified, 0.5),
            percentile(&reload_to_verified, 0.9),
            reload_to_verified[SWITCHES - 1],
            percentile(&reload_took, 0.5),
            reload_took[SWITCHES - 1],
        );
        eprintln!("load through nginx {mode}: {report}");

        assert_eq!(
            report.failed, 0,
            "{mode}: requests failed during the switches: {report}"
        );
        assert!(
            report.total >= 100,
            "{mode}: too little traffic to mean anything: {report}"
        );
        for color in ["blue", "green"] {
            assert!(
                report.by_color.get(color).copied().unwrap_or(0) > 0,
                "{mode}: no request reached {color}: {report}"
            );
        }
        assert_eq!(report.by_color.get("other"), None, "{report}");
    }
}

#[tokio::test]
async fn a_pid_file_that_names_no_nginx_master_falls_back_to_the_fixed_overlap() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let nginx = NginxHarness::start("app", &blue.endpoint()).await.unwrap();
    // As when nginx runs in a container: the pid in the file is no nginx master here (this
    // test's own process stands in for it).
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("nginx.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
    let mut config = router_config(&nginx);
    config.pid_file = Some(pid_file);
    let router = NginxRouter::new(config).unwrap();

    for to in [&green, &blue, &green] {
        let asked = Instant::now();
        let receipt = router.route_to(&to.endpoint()).await.unwrap();
        router.verify(&to.instance(), &receipt).await.unwrap();
        let took = asked.elapsed();
        // Not a timing measurement: the fallback cannot verify before its overlap has passed.
        assert!(
            took >= OLD_WORKER_OVERLAP,
            "verified after {took:?}, before the fixed overlap of {OLD_WORKER_OVERLAP:?}"
        );
        assert_eq!(colors_through(&nginx, 5).await, [to.color().as_str(); 5]);
    }
}

#[tokio::test]
async fn a_config_nginx_rejects_is_undone_byte_for_byte_and_traffic_stays_on_the_old_color() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let nginx = NginxHarness::start("app", &blue.endpoint()).await.unwrap();
    let file = nginx.upstream_file();
    let before = std::fs::read(&file).unwrap();

    // `weight=0` passes the router's pattern but not nginx: `nginx -t` rejects the new file.
    let mut config = router_config(&nginx);
    config.server_options = vec!["weight=0".into()];
    let router = NginxRouter::new(config).unwrap();
    let error = router.route_to(&green.endpoint()).await.unwrap_err();
    eprintln!("the error: {error}");

    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the previous file must come back byte for byte"
    );
    let message = &error.message;
    assert_eq!(error.kind, ComponentErrorKind::Failed, "{message}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("-t`"), "names the test command: {message}");
    assert!(
        message.contains("invalid parameter \"weight=0\""),
        "quotes nginx: {message}"
    );
    assert!(
        message.contains("the previous file was restored"),
        "{message}"
    );
    assert!(!message.contains("reloaded"), "no reload ran: {message}");

    // nginx never saw the new file: it still routes to blue, and the router still reads blue.
    assert_eq!(colors_through(&nginx, 5).await, ["blue"; 5]);
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));

    // A good router can still switch afterwards: nothing was left half done.
    let good = NginxRouter::new(router_config(&nginx)).unwrap();
    let receipt = good.route_to(&green.endpoint()).await.unwrap();
    good.verify(&green.instance(), &receipt).await.unwrap();
    assert_eq!(colors_through(&nginx, 3).await, ["green"; 3]);
}

/// Everything the file and the commands could show: the file's bytes and mtime, and whether
/// a command ran (the commands touch a marker file).
fn snapshot(dir: &Path) -> (Option<(Vec<u8>, std::time::SystemTime)>, bool) {
    let file = dir.join("upstream.conf");
    let content = std::fs::read(&file)
        .ok()
        .map(|bytes| (bytes, std::fs::metadata(&file).unwrap().modified().unwrap()));
    (content, dir.join("command-ran").exists())
}

#[tokio::test]
async fn injection_attempts_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("command-ran").display().to_string();
    let config = NginxConfig {
        upstream: "app".into(),
        upstream_file: dir.path().join("upstream.conf"),
        server_options: vec!["max_fails=0".into()],
        upstream_directives: vec![],
        test_command: vec!["touch".into(), marker.clone()],
        reload_command: vec!["touch".into(), marker],
        command_timeout: Duration::from_secs(5),
        verify: None,
        pid_file: None,
    };
    let evil = [
        ";",
        "}",
        "{",
        "\n",
        "$",
        " ",
        "\"",
        "'",
        "#",
        "; server 10.6.6.6:80",
        "\n}\nserver { listen 80; }",
    ];

    for with_file in [false, true] {
        if with_file {
            std::fs::write(
                dir.path().join("upstream.conf"),
                "upstream app {\n    server 127.0.0.1:8081;\n}\n",
            )
            .unwrap();
        }
        let before = snapshot(dir.path());

        for bad in evil {
            // Upstream names, server options and directives: refused when the router is built.
            let mut c = config.clone();
            c.upstream = format!("app{bad}");
            assert!(NginxRouter::new(c).is_err(), "upstream name {bad:?}");
            let mut c = config.clone();
            c.server_options = vec![format!("max_fails=0{bad}")];
            assert!(NginxRouter::new(c).is_err(), "server option {bad:?}");
            let mut c = config.clone();
            c.upstream_directives = vec![format!("keepalive 16{bad}")];
            assert!(NginxRouter::new(c).is_err(), "directive {bad:?}");

            // Endpoint hosts: refused by route_to before the file is touched.
            let router = NginxRouter::new(config.clone()).unwrap();
            for host in [
                format!("127.0.0.1{bad}"),
                format!("{bad}evil"),
                format!("ev{bad}il"),
            ] {
                let error = router
                    .route_to(&Endpoint::new(host.clone(), 8082))
                    .await
                    .expect_err("an injected host must be refused");
                assert_eq!(error.kind, ComponentErrorKind::Invalid, "{host:?}: {error}");
            }
        }
        assert_eq!(
            snapshot(dir.path()),
            before,
            "the file changed or a command ran (with a file before: {with_file})"
        );
    }

    // The same router does write for a clean endpoint: the refusals above were not luck.
    let router = NginxRouter::new(config).unwrap();
    router
        .route_to(&Endpoint::new("127.0.0.1", 8082))
        .await
        .unwrap();
    let (content, ran) = snapshot(dir.path());
    assert!(ran, "the commands run for a clean switch");
    let text = String::from_utf8(content.unwrap().0).unwrap();
    assert!(
        text.contains("server 127.0.0.1:8082 max_fails=0;"),
        "{text}"
    );
}

#[tokio::test]
async fn a_verification_that_never_sees_the_new_color_says_what_it_saw() {
    // Verification only needs a URL: here the blue server itself, while green is expected.
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let router = NginxRouter::new(NginxConfig {
        upstream: "app".into(),
        upstream_file: dir.path().join("upstream.conf"),
        server_options: vec![],
        upstream_directives: vec![],
        test_command: vec![],
        reload_command: vec!["true".into()],
        command_timeout: Duration::from_secs(5),
        verify: Some(NginxVerify {
            deadline: Duration::from_secs(1),
            ..NginxVerify::new(blue.url("/health"))
        }),
        pid_file: None,
    })
    .unwrap();
    // No switch happened: verification goes by the URL alone.
    let receipt = RouteReceipt::new();
    let error = router
        .verify(&green.instance(), &receipt)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ComponentErrorKind::Timeout, "{error}");
    let message = &error.message;
    assert!(message.contains("did not answer with `green`"), "{message}");
    assert!(
        message.contains("last seen: status 200: blue v1"),
        "{message}"
    );
    assert!(message.contains(&blue.url("/health")), "{message}");
    // And it passes once the URL answers for the instance.
    router.verify(&blue.instance(), &receipt).await.unwrap();
}

#[tokio::test]
async fn a_private_nginx_starts_listening_and_one_that_cannot_listen_is_refused_naming_its_log() {
    use blue_green_router::nginx::PrivateNginx;
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The port is held by this test: nginx cannot bind it and exits.
    let busy = PrivateNginx::new(dir.path(), "app", port);
    let error = busy
        .start(Duration::from_secs(20))
        .await
        .expect_err("an nginx whose port is taken was reported as started");
    let text = error.to_string();
    assert!(text.contains("error.log"), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    let kind = blue_green_core::ComponentError::from(error).kind;
    assert_eq!(kind, ComponentErrorKind::Unreachable);
    drop(taken);
    // With the port free it listens, answers, and stops with its workers.
    let nginx = PrivateNginx::new(dir.path(), "app", port);
    let master = nginx.start(Duration::from_secs(20)).await.unwrap();
    let answer = reqwest::get(nginx.url("/")).await.unwrap();
    assert_eq!(
        answer.status().as_u16(),
        502,
        "the placeholder upstream answers nothing"
    );
    master.stop(Duration::from_secs(10)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nginx still listens after stop"
    );
}

/// Polls through nginx (new connections) until `seen` holds for the colors of `n` requests in
/// a row, or 10 s pass: a reload shows once the old workers stop taking connections.
async fn wait_for_colors(nginx: &NginxHarness, n: usize, seen: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let colors = colors_through(nginx, n).await;
        if seen(&colors) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not show the change within 10 s; the last {n} answers: {colors:?}"
        );
    }
}

#[tokio::test]
async fn a_split_weights_the_two_colors_reads_back_and_route_to_ends_it() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let nginx = NginxHarness::start("app", &blue.endpoint()).await.unwrap();
    let router = NginxRouter::new(router_config(&nginx)).unwrap();
    assert!(router.can_split());
    assert_eq!(router.current_split().await.unwrap(), None);

    let split = blue_green_core::Split::new(blue.endpoint(), green.endpoint(), 20).unwrap();
    router.split(&split).await.unwrap();
    let file = std::fs::read_to_string(nginx.upstream_file()).unwrap();
    assert!(
        file.contains(" weight=80") && file.contains(" weight=20"),
        "{file}"
    );
    // The file reads back as the split, and the live target is its current.
    assert_eq!(router.current_split().await.unwrap(), Some(split.clone()));
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));

    wait_for_colors(&nginx, 20, |c| c.iter().any(|c| c == "green")).await;
    // 400 requests, each on a new connection: weighted round robin per worker gives 20%, and
    // 10% to 30% leaves room for requests an old worker still took.
    let colors = colors_through(&nginx, 400).await;
    let green_share = colors.iter().filter(|c| *c == "green").count();
    eprintln!("a 20% split through nginx: {green_share} of 400 requests went to green");
    assert!(
        (40..=120).contains(&green_share),
        "{green_share} of 400 requests went to green with a 20% split"
    );
    assert!(
        colors.iter().all(|c| c == "green" || c == "blue"),
        "{colors:?}"
    );

    // A later step replaces the split.
    let half = blue_green_core::Split::new(blue.endpoint(), green.endpoint(), 50).unwrap();
    router.split(&half).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), Some(half));

    // route_to ends the split: one server again, and all requests go to green.
    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    router.verify(&green.instance(), &receipt).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), None);
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));
    let file = std::fs::read_to_string(nginx.upstream_file()).unwrap();
    assert!(
        !file.contains("weight=") && !file.contains("split"),
        "{file}"
    );
    assert_eq!(colors_through(&nginx, 20).await, ["green"; 20]);

    // A split to an endpoint that could add a directive is refused before the file changes.
    let before = std::fs::read(nginx.upstream_file()).unwrap();
    let evil = blue_green_core::Split::new(
        green.endpoint(),
        Endpoint::new("evil;server 10.0.0.1", 80),
        10,
    )
    .unwrap();
    let error = router.split(&evil).await.unwrap_err();
    assert_eq!(error.kind, ComponentErrorKind::Invalid, "{error}");
    assert_eq!(std::fs::read(nginx.upstream_file()).unwrap(), before);
}
