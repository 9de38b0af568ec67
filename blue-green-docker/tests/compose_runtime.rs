//! ComposeRuntime with the installed compose program (docker-compose v1 here) against the real
//! engine: the blog's two-file layout and the one-file interpolated layout.

mod common;

use std::time::{Duration, Instant};

use blue_green_core::{AppName, Color, Health, HealthProbe, InstanceState, Release, Runtime};
use blue_green_docker::{
    ComposeFiles, ComposeRuntime, ComposeTool, ContainerHealthProbe, ExecProbe, PerColor,
};
use blue_green_testkit::docker::{
    containers_with_prefix, demo_app_image, networks_with_prefix, DockerCleanup,
};
use common::compose::{
    compose_config, compose_config_for, per_color_file, require, tag, write, ComposeDown,
};
use common::{free_endpoints, wait_healthy, wait_state};

/// One file for both colors: image, color and release interpolated, a free host port.
const SHARED_FILE: &str = r#"version: "3.7"
services:
  api:
    image: ${BLUE_GREEN_IMAGE}
    environment:
      BLUE_GREEN_COLOR: ${BLUE_GREEN_COLOR}
      BLUE_GREEN_RELEASE: ${BLUE_GREEN_RELEASE}
    labels:
      example.color: ${BLUE_GREEN_COLOR}
    ports:
      - "127.0.0.1::8080"
"#;

/// Deploys blue v1, then green v2 beside it, checks both, then stops and takes blue down
/// (as after a switch), then green.
async fn deploy_both_and_take_down(
    cleanup: &DockerCleanup,
    runtime: &ComposeRuntime,
    artifact: Option<&str>,
) {
    let release = |id: &str| match artifact {
        Some(image) => Release::new(id).unwrap().with_artifact(image).unwrap(),
        None => Release::new(id).unwrap(),
    };
    let blue = runtime
        .start(Color::Blue, &release("v1"))
        .await
        .expect("up blue");
    assert_eq!(blue.id, format!("{}-blue", cleanup.prefix()));
    assert_ne!(blue.endpoint.port, 0);
    assert_eq!(
        wait_healthy(&blue, Duration::from_secs(30)).await,
        "blue v1"
    );
    assert_eq!(runtime.state(&blue).await.unwrap(), InstanceState::Running);

    let green = runtime
        .start(Color::Green, &release("v2"))
        .await
        .expect("up green");
    assert_ne!(green.endpoint, blue.endpoint);
    assert_eq!(
        wait_healthy(&green, Duration::from_secs(30)).await,
        "green v2"
    );

    let listed = runtime.list().await.unwrap();
    assert_eq!(
        listed,
        vec![blue.clone(), green.clone()],
        "both projects, with their releases"
    );

    let logs = runtime.logs(&green, 5).await.unwrap();
    assert!(
        logs.iter().any(|l| l.contains("green v2 listening")),
        "{logs:?}"
    );

    // Health probes find the service container through compose's labels.
    let probe = ContainerHealthProbe::for_compose(runtime);
    let start = Instant::now();
    while probe.check(&green).await != Health::Healthy {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "green's HEALTHCHECK never passed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exec = ExecProbe::for_compose(
        runtime,
        vec!["/demo-app".into(), "--check".into()],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(exec.check(&green).await, Health::Healthy);

    // After a switch to green: blue is stopped, then taken down.
    runtime.stop(&blue, Duration::from_secs(5)).await.unwrap();
    let (state, _) = wait_state(runtime, &blue, Duration::from_secs(10), |s| !s.is_running()).await;
    assert_eq!(
        state,
        InstanceState::Exited {
            code: Some(0),
            reason: None
        }
    );
    assert_eq!(
        wait_healthy(&green, Duration::from_secs(5)).await,
        "green v2"
    );

    runtime.remove(&blue).await.unwrap();
    assert_eq!(runtime.state(&blue).await.unwrap(), InstanceState::Missing);
    assert_eq!(runtime.list().await.unwrap(), vec![green.clone()]);
    runtime.remove(&blue).await.expect("removing again is fine");

    runtime.remove(&green).await.unwrap();
    assert!(runtime.list().await.unwrap().is_empty());
    assert!(
        containers_with_prefix(cleanup.docker(), cleanup.prefix())
            .await
            .is_empty(),
        "down removed every container"
    );
}

#[tokio::test]
async fn the_blog_layout_with_a_file_per_color_deploys_and_takes_down_v1() {
    blog_layout(ComposeTool::V1).await;
}

#[tokio::test]
async fn the_blog_layout_with_a_file_per_color_deploys_and_takes_down_v2() {
    blog_layout(ComposeTool::V2).await;
}

async fn blog_layout(tool: ComposeTool) {
    require(tool).await;
    let cleanup = DockerCleanup::new(&format!("compose-blog-{}", tag(tool))).await;
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
    let mut config = compose_config_for(tool, ComposeFiles::PerColor(files));
    config.endpoints = Some(endpoints.clone());
    let runtime = ComposeRuntime::new(AppName::new(cleanup.prefix()).unwrap(), config)
        .await
        .expect("compose runtime");
    println!("compose program: {}", runtime.program().display());

    deploy_both_and_take_down(&cleanup, &runtime, None).await;
}

#[tokio::test]
async fn one_interpolated_file_serves_both_colors_v1() {
    one_interpolated_file(ComposeTool::V1).await;
}

#[tokio::test]
async fn one_interpolated_file_serves_both_colors_v2() {
    one_interpolated_file(ComposeTool::V2).await;
}

async fn one_interpolated_file(tool: ComposeTool) {
    require(tool).await;
    let cleanup = DockerCleanup::new(&format!("compose-shared-{}", tag(tool))).await;
    let image = demo_app_image(&cleanup).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "docker-compose.yml", SHARED_FILE);
    let _down = ComposeDown(vec![
        (format!("{}-blue", cleanup.prefix()), file.clone()),
        (format!("{}-green", cleanup.prefix()), file.clone()),
    ]);
    let runtime = ComposeRuntime::new(
        AppName::new(cleanup.prefix()).unwrap(),
        compose_config_for(tool, ComposeFiles::Shared(file)),
    )
    .await
    .expect("compose runtime");
    assert_eq!(runtime.program().display(), program_of(tool));

    deploy_both_and_take_down(&cleanup, &runtime, Some(&image)).await;
}

#[tokio::test]
async fn a_failing_up_reports_what_failed_v1() {
    a_failing_up_reports_what_failed(ComposeTool::V1).await;
}

#[tokio::test]
async fn a_failing_up_reports_what_failed_v2() {
    a_failing_up_reports_what_failed(ComposeTool::V2).await;
}

async fn a_failing_up_reports_what_failed(tool: ComposeTool) {
    require(tool).await;
    let cleanup = DockerCleanup::new(&format!("compose-fail-{}", tag(tool))).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "docker-compose.yml", SHARED_FILE);
    let _down = ComposeDown(vec![(format!("{}-blue", cleanup.prefix()), file.clone())]);
    let runtime = ComposeRuntime::new(
        AppName::new(cleanup.prefix()).unwrap(),
        compose_config_for(tool, ComposeFiles::Shared(file)),
    )
    .await
    .unwrap();
    assert_eq!(runtime.program().display(), program_of(tool));
    // A registry on a closed loopback port: the daemon's pull goes nowhere else.
    let missing = format!("127.0.0.1:9/{}-missing:v1", cleanup.prefix());
    let error = runtime
        .start(
            Color::Blue,
            &Release::new("v1")
                .unwrap()
                .with_artifact(missing.clone())
                .unwrap(),
        )
        .await
        .expect_err("the image does not exist and cannot be pulled");
    println!("{error}");
    assert!(error.message.contains("up -d` failed"), "{error}");
    assert!(
        error.message.contains(&missing),
        "the error names the image: {error}"
    );
    // The cause, not compose v2's warnings or progress lines.
    assert!(error.message.contains("connection refused"), "{error}");
    assert!(!error.message.contains("obsolete"), "{error}");
    assert!(
        containers_with_prefix(cleanup.docker(), cleanup.prefix())
            .await
            .is_empty()
            && networks_with_prefix(cleanup.docker(), cleanup.prefix())
                .await
                .is_empty(),
        "the failed project was taken down"
    );
}

fn program_of(tool: ComposeTool) -> &'static str {
    match tool {
        ComposeTool::V2 => "docker compose",
        _ => "docker-compose",
    }
}

/// With both versions installed (as `scripts/test` leaves the machine), `auto` picks v2, the
/// one most people run.
#[tokio::test]
async fn auto_picks_compose_v2_when_both_are_installed() {
    require(ComposeTool::V1).await;
    require(ComposeTool::V2).await;
    let program = blue_green_docker::compose::detect(ComposeTool::Auto, None)
        .await
        .unwrap();
    assert_eq!(program.display(), "docker compose");
}

#[tokio::test]
async fn bad_project_templates_and_missing_files_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "docker-compose.yml", SHARED_FILE);
    let app = AppName::new("web").unwrap();

    let mut same = compose_config(ComposeFiles::Shared(file.clone()));
    same.project = "{app}".into();
    let error = ComposeRuntime::new(app.clone(), same).await.unwrap_err();
    assert!(error.to_string().contains("put `{color}` in it"), "{error}");

    let mut bad = compose_config(ComposeFiles::Shared(file));
    bad.project = "{app} {color}".into();
    let error = ComposeRuntime::new(app.clone(), bad).await.unwrap_err();
    assert!(error.to_string().contains("is not valid"), "{error}");

    let missing = compose_config(ComposeFiles::Shared(dir.path().join("nope.yml")));
    let error = ComposeRuntime::new(app, missing).await.unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
}
