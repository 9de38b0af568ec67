//! End to end without the CLI: the engine deploying the demo app as Docker containers
//! (DockerRuntime), probing them directly (HttpProbe) and switching a real nginx
//! (NginxRouter), while a load loop sends GET and POST requests through nginx, some of them
//! slow. Not one request may fail, neither during good deploys nor during failed ones.

mod common;

use std::time::Duration;

use blue_green_core::{
    AppName, CancellationToken, DeployReport, Endpoint, Engine, EngineConfig, Error, FileStore,
    HttpProbe, HttpProbeConfig, KeepPrevious, NginxConfig, NginxRouter, NginxVerify,
    ReadinessPolicy, Release, Step, SwitchPolicy,
};
use blue_green_docker::DockerRuntime;
use blue_green_testkit::docker::{demo_app_image, demo_app_image_with_env, DockerCleanup};
use blue_green_testkit::load::{Load, LoadConfig};
use blue_green_testkit::nginx::NginxHarness;
use common::demo_config;

/// Milliseconds of `step` in a report (summed when it ran more than once), or `-`.
fn ms(report: &DeployReport, steps: &[Step]) -> String {
    let total: Option<u64> = report
        .steps
        .iter()
        .filter(|t| steps.contains(&t.step))
        .map(|t| t.ms)
        .reduce(|a, b| a + b);
    total.map_or("-".into(), |ms| ms.to_string())
}

fn timing_row(label: &str, report: &DeployReport) -> String {
    format!(
        "{label:<8} {:<6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6}",
        report.live.color,
        ms(report, &[Step::Start]),
        ms(report, &[Step::Ready]),
        ms(report, &[Step::Switch, Step::Verify]),
        ms(report, &[Step::Drain]),
        ms(report, &[Step::Stop]),
        report.steps.iter().map(|t| t.ms).sum::<u64>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_deploys_and_two_failed_ones_through_nginx_under_load_lose_no_request() {
    let cleanup = DockerCleanup::new("engine-nginx").await;
    let good = demo_app_image(&cleanup).await;
    let crashing = demo_app_image_with_env(&cleanup, "crash", &[("CRASH_ON_START", "1")]).await;
    let sick = demo_app_image_with_env(&cleanup, "sick", &[("NEVER_HEALTHY", "1")]).await;

    // Before the first deploy nginx points at a port where nothing listens.
    let nothing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = Endpoint::new("127.0.0.1", nothing.local_addr().unwrap().port());
    drop(nothing);
    let nginx = NginxHarness::start("demo", &nowhere)
        .await
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));

    let app = AppName::new(cleanup.prefix()).unwrap();
    let runtime = DockerRuntime::connect(app.clone(), demo_config(&good, &[]))
        .await
        .unwrap();
    let probe = HttpProbe::new(HttpProbeConfig {
        path: "/health".into(),
        expect_body: Some("{color} {release}".into()),
        timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let router = NginxRouter::new(NginxConfig {
        upstream: nginx.upstream().to_string(),
        upstream_file: nginx.upstream_file(),
        server_options: vec!["max_fails=0".into()],
        upstream_directives: vec!["keepalive 16".into()],
        test_command: nginx.test_command(),
        reload_command: nginx.reload_command(),
        command_timeout: Duration::from_secs(20),
        verify: Some(NginxVerify {
            url: nginx.url("/health"),
            expect_body: "{color} {release}".into(),
            successes: 3,
            interval: Duration::from_millis(20),
            deadline: Duration::from_secs(20),
        }),
    })
    .unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(app);
    config.readiness = ReadinessPolicy {
        initial_delay: Duration::ZERO,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        healthy_threshold: 2,
        deadline: Duration::from_secs(30),
    };
    config.switch = SwitchPolicy {
        // Longer than the slowest request, so requests nginx still sends to the old color
        // finish before it is stopped.
        drain: Duration::from_secs(1),
        stop_timeout: Duration::from_secs(10),
        keep_previous: KeepPrevious::Stopped,
    };
    let engine = Engine::new(
        config.clone(),
        runtime,
        probe,
        router,
        FileStore::new(state_dir.path()),
    );
    let cancel = CancellationToken::new();

    let first = engine
        .deploy(Release::new("r0").with_artifact(good.clone()), &cancel)
        .await
        .unwrap_or_else(|e| panic!("first deploy: {e}\nnginx: {}", nginx.error_log()));

    let load = Load::start(LoadConfig {
        clients: 6,
        get_path: "/health".into(),
        post_path: Some("/slow?ms=300".into()),
        post_every: 4,
        slow_path: Some("/slow?ms=400".into()),
        slow_every: 3,
        pause: Duration::from_millis(5),
        ..LoadConfig::new(nginx.url(""))
    });
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(
        warm.total >= 50 && warm.failed == 0,
        "traffic before the deploys: {warm}"
    );

    let mut rows = vec![timing_row("r0", &first)];
    let mut live = first.live.color;
    for i in 1..=10 {
        let release = format!("r{i}");
        let report = engine
            .deploy(Release::new(&release).with_artifact(good.clone()), &cancel)
            .await
            .unwrap_or_else(|e| panic!("deploy {release}: {e}\nload: {}", load.snapshot()));
        assert_eq!(
            report.live.color,
            live.other(),
            "each deploy goes to the idle color"
        );
        assert_eq!(report.live.release.id, release);
        live = report.live.color;
        rows.push(timing_row(&release, &report));
    }
    let after_good = load.snapshot();

    // A release that crashes on start: the engine sees it exit and gives up at once.
    let error = engine
        .deploy(Release::new("crash").with_artifact(crashing), &cancel)
        .await
        .expect_err("a crashing release must not go live");
    println!("crash-on-start deploy: {error}");
    assert!(matches!(error, Error::NotReady { .. }), "{error}");

    // A release that never becomes healthy: the engine gives up at the readiness deadline.
    let mut short = config.clone();
    short.readiness.deadline = Duration::from_secs(5);
    let engine = engine.with_config(short);
    let error = engine
        .deploy(Release::new("sick").with_artifact(sick), &cancel)
        .await
        .expect_err("a never-healthy release must not go live");
    println!("never-healthy deploy: {error}");
    assert!(matches!(error, Error::NotReady { .. }), "{error}");

    let status = engine.status().await.unwrap();
    assert_eq!(status.live, Some(live), "the live color kept serving");
    assert_eq!(
        status.deployment.as_ref().map(|d| d.release.id.as_str()),
        Some("r10")
    );

    let report = load.stop().await;
    println!("load during 10 good and 2 failed deploys: {report}");
    println!("{}", report.retry_samples.join("\n"));
    println!(
        "per-deploy timings in ms (switch = switch + verify; total = every step):\n\
         release  live    start  ready  switch   drain   stop  total"
    );
    for row in &rows {
        println!("{row}");
    }
    assert_eq!(report.failed, 0, "no request may fail: {report}");
    assert!(
        report.by_color.get("blue").copied().unwrap_or(0) > 0
            && report.by_color.get("green").copied().unwrap_or(0) > 0,
        "both colors answered: {report}"
    );
    assert!(
        report.total > after_good.total,
        "traffic went on during the failed deploys: {report}"
    );
}
