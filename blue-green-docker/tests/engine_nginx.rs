//! End to end without the CLI: the engine deploying the demo app as Docker containers
//! (DockerRuntime), probing them directly (HttpProbe) and switching a real nginx
//! (NginxRouter), while a load loop sends GET and POST requests through nginx, some of them
//! slow. Not one request may fail, neither during good deploys nor during failed ones.

mod common;

use std::time::Duration;

use blue_green_core::{AppName, CancellationToken, Engine, Error, FileStore, Release};
use blue_green_docker::DockerRuntime;
use blue_green_testkit::docker::{demo_app_image, demo_app_image_with_env, DockerCleanup};
use blue_green_testkit::nginx::NginxHarness;
use common::demo_config;
use common::engine::{self as setup, timing_row, TIMING_HEADER};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_deploys_and_two_failed_ones_through_nginx_under_load_lose_no_request() {
    let cleanup = DockerCleanup::new("engine-nginx").await;
    let good = demo_app_image(&cleanup).await;
    let crashing = demo_app_image_with_env(&cleanup, "crash", &[("CRASH_ON_START", "1")]).await;
    let sick = demo_app_image_with_env(&cleanup, "sick", &[("NEVER_HEALTHY", "1")]).await;

    // Before the first deploy nginx points at a port where nothing listens.
    let nowhere = setup::nowhere();
    let nginx = NginxHarness::start("demo", &nowhere)
        .await
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));

    let app = AppName::new(cleanup.prefix()).unwrap();
    let runtime = DockerRuntime::connect(app.clone(), demo_config(&good, &[]))
        .await
        .unwrap();
    let probe = setup::probe();
    let router = setup::router(&nginx);
    let state_dir = tempfile::tempdir().unwrap();
    let config = setup::engine_config(app);
    let engine = Engine::new(
        config.clone(),
        runtime,
        probe,
        router,
        FileStore::new(state_dir.path()),
    );
    let cancel = CancellationToken::new();

    let first = engine
        .deploy(
            Release::new("r0")
                .unwrap()
                .with_artifact(good.clone())
                .unwrap(),
            &cancel,
        )
        .await
        .unwrap_or_else(|e| panic!("first deploy: {e}\nnginx: {}", nginx.error_log()));

    let load = setup::warm_load(&nginx).await;

    let mut rows = vec![timing_row("r0", &first)];
    let mut live = first.live.color;
    for i in 1..=10 {
        let release = format!("r{i}");
        let report = engine
            .deploy(
                Release::new(&release)
                    .unwrap()
                    .with_artifact(good.clone())
                    .unwrap(),
                &cancel,
            )
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
        .deploy(
            Release::new("crash")
                .unwrap()
                .with_artifact(crashing)
                .unwrap(),
            &cancel,
        )
        .await
        .expect_err("a crashing release must not go live");
    println!("crash-on-start deploy: {error}");
    assert!(matches!(error, Error::NotReady { .. }), "{error}");

    // A release that never becomes healthy: the engine gives up at the readiness deadline.
    let mut short = config.clone();
    short.readiness.deadline = Duration::from_secs(5);
    let engine = engine.with_config(short);
    let error = engine
        .deploy(
            Release::new("sick").unwrap().with_artifact(sick).unwrap(),
            &cancel,
        )
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
    println!("{TIMING_HEADER}");
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
