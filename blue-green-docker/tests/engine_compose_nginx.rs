//! End to end without the CLI: the engine deploying the demo app as compose projects, probing
//! them directly and switching a real nginx, while a load loop sends GET and POST requests
//! through nginx, some slow. Not one request may fail. Each layout runs under compose v1
//! (`docker-compose`) and v2 (`docker compose`): the blog's (one file per color, fixed host
//! ports) and one file for both colors (`${BLUE_GREEN_COLOR}`, a free host port each).

mod common;

use blue_green_core::{AppName, CancellationToken, Engine, FileStore, Release};
use blue_green_docker::{ComposeFiles, ComposeRuntime, ComposeTool, PerColor};
use blue_green_testkit::docker::{demo_app_image, DockerCleanup};
use blue_green_testkit::nginx::NginxHarness;
use common::compose::{compose_config_for, per_color_file, require, tag, write, ComposeDown};
use common::engine::{self as setup, timing_row, TIMING_HEADER};
use common::free_endpoints;

/// One compose file for both colors: the color and release come from the environment, the
/// host port is picked by Docker and read back.
fn shared_file(image: &str) -> String {
    format!(
        r#"services:
  api:
    image: {image}
    environment:
      BLUE_GREEN_COLOR: ${{BLUE_GREEN_COLOR}}
      BLUE_GREEN_RELEASE: ${{BLUE_GREEN_RELEASE}}
      SIGTERM_MODE: graceful
    labels:
      example.color: ${{BLUE_GREEN_COLOR}}
    ports:
      - "127.0.0.1::8080"
"#
    )
}

#[derive(Clone, Copy)]
enum Layout {
    /// The blog's: a file per color, fixed host ports.
    PerColor,
    /// One file for both colors.
    Shared,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_blog_compose_layout_deploys_through_nginx_without_a_failed_request_v1() {
    deploys_through_nginx(ComposeTool::V1, Layout::PerColor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_blog_compose_layout_deploys_through_nginx_without_a_failed_request_v2() {
    deploys_through_nginx(ComposeTool::V2, Layout::PerColor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_compose_file_for_both_colors_deploys_through_nginx_without_a_failed_request_v1() {
    deploys_through_nginx(ComposeTool::V1, Layout::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_compose_file_for_both_colors_deploys_through_nginx_without_a_failed_request_v2() {
    deploys_through_nginx(ComposeTool::V2, Layout::Shared).await;
}

async fn deploys_through_nginx(tool: ComposeTool, layout: Layout) {
    require(tool).await;
    let name = match layout {
        Layout::PerColor => "compose-engine",
        Layout::Shared => "compose-shared-engine",
    };
    let cleanup = DockerCleanup::new(&format!("{name}-{}", tag(tool))).await;
    let image = demo_app_image(&cleanup).await;
    let dir = tempfile::tempdir().unwrap();
    let config = match layout {
        Layout::PerColor => {
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
            let mut config = compose_config_for(tool, ComposeFiles::PerColor(files));
            config.endpoints = Some(endpoints);
            config
        }
        Layout::Shared => {
            let file = write(dir.path(), "docker-compose.yml", &shared_file(&image));
            compose_config_for(tool, ComposeFiles::Shared(file))
        }
    };
    let _down = ComposeDown(
        [blue_green_core::Color::Blue, blue_green_core::Color::Green]
            .into_iter()
            .map(|c| {
                let file = match &config.files {
                    ComposeFiles::PerColor(f) => f.get(c).clone(),
                    ComposeFiles::Shared(f) => f.clone(),
                };
                (format!("{}-{c}", cleanup.prefix()), file)
            })
            .collect(),
    );
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
    let load = setup::warm_load(&nginx).await;

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
    println!("load during 4 compose deploys ({}): {report}", tag(tool));
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
