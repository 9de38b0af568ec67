//! End to end without the CLI, in the blog's setup: the engine deploying the demo app as
//! compose projects (one file per color, fixed host ports, docker-compose), probing them
//! directly and switching a real nginx, while a load loop sends GET and POST requests through
//! nginx, some slow. Not one request may fail.

mod common;

use std::time::Duration;

use blue_green_core::{AppName, CancellationToken, Engine, FileStore, Release};
use blue_green_docker::{ComposeFiles, ComposeRuntime, PerColor};
use blue_green_testkit::docker::{demo_app_image, DockerCleanup};
use blue_green_testkit::load::Load;
use blue_green_testkit::nginx::NginxHarness;
use common::compose::{compose_config, per_color_file, write, ComposeDown};
use common::engine::{self as setup, timing_row, TIMING_HEADER};
use common::free_endpoints;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_blog_compose_layout_deploys_through_nginx_without_a_failed_request() {
    let cleanup = DockerCleanup::new("compose-engine").await;
    let image = demo_app_image(&cleanup).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = free_endpoints();
    let files = PerColor {
        blue: write(
            dir.path(),
            "docker-compose.blue.yml",
            &per_color_file(&image, endpoints.blue.port),
        ),
        green: write(
            dir.path(),
            "docker-compose.green.yml",
            &per_color_file(&image, endpoints.green.port),
        ),
    };
    let _down = ComposeDown(vec![
        (format!("{}-blue", cleanup.prefix()), files.blue.clone()),
        (format!("{}-green", cleanup.prefix()), files.green.clone()),
    ]);
    let mut config = compose_config(ComposeFiles::PerColor(files));
    config.endpoints = Some(endpoints);
    let app = AppName::new(cleanup.prefix()).unwrap();
    let runtime = ComposeRuntime::new(app.clone(), config).await.unwrap();

    let nginx = NginxHarness::start("demo", &setup::nowhere())
        .await
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));
    let state_dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        setup::engine_config(app),
        runtime,
        setup::probe(),
        setup::router(&nginx),
        FileStore::new(state_dir.path()),
    );
    let cancel = CancellationToken::new();

    let first = engine
        .deploy(Release::new("r0").unwrap(), &cancel)
        .await
        .unwrap_or_else(|e| panic!("first deploy: {e}\nnginx: {}", nginx.error_log()));
    let load = Load::start(setup::load_config(nginx.url("")));
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(
        warm.total >= 50 && warm.failed == 0,
        "traffic before the deploys: {warm}"
    );

    let mut rows = vec![timing_row("r0", &first)];
    let mut live = first.live.color;
    for i in 1..=4 {
        let release = format!("r{i}");
        let report = engine
            .deploy(Release::new(&release).unwrap(), &cancel)
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

    let status = engine.status().await.unwrap();
    assert_eq!(status.live, Some(live));
    let report = load.stop().await;
    println!("load during 4 compose deploys: {report}");
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
}
