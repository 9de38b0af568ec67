//! The release command ([`ReleaseCommand`]) against the real Docker engine: run once in a
//! one-off container of the new release's image with the color's environment, networks and the
//! hook's `BLUE_GREEN_*` variables, and removed afterwards in every case (success, failure,
//! timeout, a cancelled deploy, a leftover of an interrupted run); with compose v1 and v2 as
//! `compose run`. The one-off is the demo app's image, whose entrypoint is the app: the command
//! is its task arguments (`--print-env`, `--exit`, `--sleep`). Needs Docker and both compose
//! versions; fails with a clear message when one is missing.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blue_green_core::hooks::{HookCommand, HookContext, HookOutput, HookPoint, Hooks};
use blue_green_core::{AppName, Color, ComponentError, ComponentErrorKind, Release, Runtime};
use blue_green_docker::release::{ReleaseCommand, LABEL_ROLE, ROLE_RELEASE};
use blue_green_docker::{ComposeFiles, ComposeRuntime, ComposeTool, DockerRuntime};
use blue_green_testkit::docker::{
    containers_with_prefix, demo_app_image_with_env, networks_with_prefix, DockerCleanup,
};
use bollard::query_parameters::InspectContainerOptions;
use common::compose::{compose_config_for, require, tag, write, ComposeDown};
use common::demo_config;

/// A registry on a closed loopback port: the daemon's pull goes nowhere.
const MISSING: &str = "127.0.0.1:9/app:1";

/// The hook's view of a deploy of v2 to green, from blue v1.
fn context(app: &str) -> HookContext {
    let mut context = HookContext::new(AppName::new(app).unwrap(), Color::Green, "v2");
    context.previous_color = Some(Color::Blue);
    context.previous_release = Some("v1".into());
    context
}

fn command(argv: &[&str], timeout: Duration) -> HookCommand {
    HookCommand::new(argv.iter().map(|a| a.to_string()).collect(), timeout).unwrap()
}

/// The demo app's image with `RELEASE_MARK` baked in, so that the output tells which image ran.
async fn marked_image(cleanup: &DockerCleanup) -> String {
    demo_app_image_with_env(cleanup, "v2", &[("RELEASE_MARK", "image-of-v2")]).await
}

async fn docker_runtime(cleanup: &DockerCleanup, image: &str) -> DockerRuntime {
    let mut config = demo_config(image, &[("SHARED", "from-config")]);
    config.networks = networks(cleanup).await;
    DockerRuntime::connect(AppName::new(cleanup.prefix()).unwrap(), config)
        .await
        .expect("Docker must be running for these tests")
}

/// Two networks made for the test, which the one-off container must join.
async fn networks(cleanup: &DockerCleanup) -> Vec<String> {
    let names: Vec<String> = ["front", "back"]
        .iter()
        .map(|n| format!("{}-{n}", cleanup.prefix()))
        .collect();
    for name in &names {
        cleanup
            .docker()
            .create_network(bollard::models::NetworkCreateRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    names
}

async fn run(hooks: &ReleaseCommand, app: &str) -> Result<HookOutput, ComponentError> {
    hooks.run(HookPoint::PreDeploy, &context(app)).await
}

async fn containers(cleanup: &DockerCleanup) -> Vec<String> {
    containers_with_prefix(cleanup.docker(), cleanup.prefix())
        .await
        .into_keys()
        .collect()
}

/// Waits until the container `name` exists and runs; its labels and networks.
async fn wait_running(
    cleanup: &DockerCleanup,
    name: &str,
) -> (HashMap<String, String>, Vec<String>) {
    let start = Instant::now();
    loop {
        if let Ok(inspect) = cleanup
            .docker()
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            if inspect.state.as_ref().and_then(|s| s.running) == Some(true) {
                let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
                let networks = inspect
                    .network_settings
                    .and_then(|n| n.networks)
                    .unwrap_or_default()
                    .into_keys()
                    .collect();
                return (labels, networks);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "container {name} never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no container with the test's prefix is left.
async fn wait_gone(cleanup: &DockerCleanup) {
    let start = Instant::now();
    loop {
        let left = containers(cleanup).await;
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "containers left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_release_command_runs_once_in_a_container_of_the_new_release_and_is_removed() {
    let cleanup = DockerCleanup::new("release-ok").await;
    let app = cleanup.prefix().to_string();
    let image = marked_image(&cleanup).await;
    // The configured image cannot be had: only the release's artifact can run.
    let runtime = docker_runtime(&cleanup, MISSING).await;
    let release = Release::new("v2")
        .unwrap()
        .with_artifact(image.clone())
        .unwrap();
    let names = [
        "BLUE_GREEN_APP",
        "BLUE_GREEN_COLOR",
        "BLUE_GREEN_RELEASE",
        "BLUE_GREEN_PREVIOUS_COLOR",
        "BLUE_GREEN_PREVIOUS_RELEASE",
        "RELEASE_MARK",
        "SHARED",
    ];
    let mut argv = vec!["--print-env"];
    argv.extend(names);
    let hooks = ReleaseCommand::docker(&runtime, command(&argv, Duration::from_secs(60)))
        .for_release(&release);
    assert_eq!(
        hooks
            .timeout(HookPoint::PreDeploy)
            .map(|t| t >= Duration::from_secs(60)),
        Some(true)
    );
    assert_eq!(hooks.timeout(HookPoint::PreSwitch), None);

    let out = run(&hooks, &app).await.expect("the release command ran");
    assert!(out.success, "{out:?}");
    assert!(
        out.status
            .contains(&format!("in a one-off container of image `{image}`"))
            && out.status.ends_with("which exited with code 0"),
        "{}",
        out.status
    );
    let lines: Vec<&str> = out.output.lines().collect();
    assert_eq!(
        lines,
        [
            format!("BLUE_GREEN_APP={app}"),
            "BLUE_GREEN_COLOR=green".into(),
            "BLUE_GREEN_RELEASE=v2".into(),
            "BLUE_GREEN_PREVIOUS_COLOR=blue".into(),
            "BLUE_GREEN_PREVIOUS_RELEASE=v1".into(),
            "RELEASE_MARK=image-of-v2".into(),
            "SHARED=from-config".into(),
        ],
        "ran once, in the release's image, with the color's and the hook's environment"
    );
    assert!(
        containers(&cleanup).await.is_empty(),
        "the container is gone"
    );
    assert!(
        runtime.list().await.unwrap().is_empty(),
        "nothing of a color was started"
    );
}

#[tokio::test]
async fn a_failing_release_command_reports_its_output_and_is_removed() {
    let cleanup = DockerCleanup::new("release-fail").await;
    let app = cleanup.prefix().to_string();
    let image = marked_image(&cleanup).await;
    let runtime = docker_runtime(&cleanup, &image).await;
    let hooks = ReleaseCommand::docker(
        &runtime,
        command(
            &[
                "--exit",
                "3",
                "migration 7 failed: relation \"users\" already exists",
            ],
            Duration::from_secs(60),
        ),
    );
    let out = run(&hooks, &app).await.expect("the release command ran");
    assert!(!out.success, "{out:?}");
    assert!(
        out.status.ends_with("which exited with code 3"),
        "{}",
        out.status
    );
    assert!(
        out.output
            .contains("migration 7 failed: relation \"users\" already exists"),
        "{}",
        out.output
    );
    assert!(
        containers(&cleanup).await.is_empty(),
        "the container is gone"
    );
}

#[tokio::test]
async fn a_missing_image_fails_naming_the_image() {
    let cleanup = DockerCleanup::new("release-noimage").await;
    let app = cleanup.prefix().to_string();
    let runtime = docker_runtime(&cleanup, MISSING).await;
    let hooks = ReleaseCommand::docker(
        &runtime,
        command(&["--print-env", "X"], Duration::from_secs(60)),
    );
    let error = run(&hooks, &app).await.expect_err("no image to run");
    assert_eq!(error.kind, ComponentErrorKind::Failed, "{error}");
    assert!(
        error
            .message
            .starts_with("could not run the release command `--print-env X`: ")
            && error.message.contains(&format!("image `{MISSING}`")),
        "{error}"
    );
    assert!(containers(&cleanup).await.is_empty());
}

#[tokio::test]
async fn a_hanging_release_command_times_out_and_is_removed() {
    let cleanup = DockerCleanup::new("release-hang").await;
    let app = cleanup.prefix().to_string();
    let image = marked_image(&cleanup).await;
    let runtime = docker_runtime(&cleanup, &image).await;
    let hooks = ReleaseCommand::docker(
        &runtime,
        command(&["--sleep", "600000"], Duration::from_secs(4)),
    );
    let started = Instant::now();
    let name = format!("{app}-release");
    let (result, (labels, attached)) =
        tokio::join!(run(&hooks, &app), wait_running(&cleanup, &name));
    // While it ran: marked as the app's release task, on the color's networks.
    assert_eq!(
        labels.get(LABEL_ROLE).map(String::as_str),
        Some(ROLE_RELEASE)
    );
    assert_eq!(labels.get("blue-green.app"), Some(&app));
    assert_eq!(
        labels.get("blue-green.color"),
        None,
        "no instance of a color"
    );
    for network in networks_with_prefix(cleanup.docker(), cleanup.prefix()).await {
        assert!(attached.contains(&network), "{network} in {attached:?}");
    }
    let error = result.expect_err("it overran");
    assert_eq!(error.kind, ComponentErrorKind::Timeout, "{error}");
    assert!(
        error
            .message
            .starts_with("ran the release command `--sleep 600000` in container ")
            && error.message.contains("did not finish within 4s")
            && error.message.contains("killed and its container removed"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        containers(&cleanup).await.is_empty(),
        "the container is gone"
    );
}

#[tokio::test]
async fn a_cancelled_run_and_a_leftover_are_removed() {
    let cleanup = DockerCleanup::new("release-cancel").await;
    let app = cleanup.prefix().to_string();
    let image = marked_image(&cleanup).await;
    let runtime = docker_runtime(&cleanup, &image).await;
    let name = format!("{app}-release");

    // A deploy cancelled while the command runs drops the future.
    let hanging = ReleaseCommand::docker(
        &runtime,
        command(&["--sleep", "600000"], Duration::from_secs(600)),
    );
    let cancelled = tokio::select! {
        _ = run(&hanging, &app) => false,
        _ = wait_running(&cleanup, &name) => true,
    };
    assert!(cancelled, "the command cannot end by itself in time");
    wait_gone(&cleanup).await;

    // A run killed outright leaves its container: it is not an instance, and the next run
    // removes it before it starts its own.
    let leftover = cleanup
        .docker()
        .create_container(
            Some(
                bollard::query_parameters::CreateContainerOptionsBuilder::new()
                    .name(&name)
                    .build(),
            ),
            bollard::models::ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["--sleep".into(), "600000".into()]),
                labels: Some(HashMap::from([
                    ("blue-green.app".to_string(), app.clone()),
                    (
                        "blue-green.managed-by".to_string(),
                        "blue-green".to_string(),
                    ),
                    (LABEL_ROLE.to_string(), ROLE_RELEASE.to_string()),
                ])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(runtime.list().await.unwrap().is_empty(), "not an instance");
    let quick = ReleaseCommand::docker(
        &runtime,
        command(
            &["--print-env", "BLUE_GREEN_RELEASE"],
            Duration::from_secs(60),
        ),
    );
    let out = run(&quick, &app).await.expect("ran despite the leftover");
    assert_eq!(out.output.trim(), "BLUE_GREEN_RELEASE=v2", "{out:?}");
    assert!(
        cleanup
            .docker()
            .inspect_container(&leftover.id, None::<InspectContainerOptions>)
            .await
            .is_err(),
        "the leftover was removed"
    );
    assert!(containers(&cleanup).await.is_empty());
}

/// One file for both colors, the image interpolated, as in the compose runtime's tests.
const SHARED_FILE: &str = r#"version: "3.7"
services:
  api:
    image: ${BLUE_GREEN_IMAGE}
    environment:
      BLUE_GREEN_COLOR: ${BLUE_GREEN_COLOR}
      BLUE_GREEN_RELEASE: ${BLUE_GREEN_RELEASE}
      SHARED: from-compose
    ports:
      - "127.0.0.1::8080"
"#;

#[tokio::test]
async fn compose_runs_the_release_command_as_a_one_off_v1() {
    compose_release(ComposeTool::V1).await;
}

#[tokio::test]
async fn compose_runs_the_release_command_as_a_one_off_v2() {
    compose_release(ComposeTool::V2).await;
}

async fn compose_release(tool: ComposeTool) {
    require(tool).await;
    let cleanup = DockerCleanup::new(&format!("release-compose-{}", tag(tool))).await;
    let app = cleanup.prefix().to_string();
    let image = marked_image(&cleanup).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "docker-compose.yml", SHARED_FILE);
    let _down = ComposeDown(vec![(format!("{app}-green"), file.clone())]);
    let runtime = ComposeRuntime::new(
        AppName::new(app.clone()).unwrap(),
        compose_config_for(tool, ComposeFiles::Shared(file)),
    )
    .await
    .expect("compose runtime");
    let release = Release::new("v2")
        .unwrap()
        .with_artifact(image.clone())
        .unwrap();

    let print = ReleaseCommand::compose(
        &runtime,
        command(
            &[
                "--print-env",
                "BLUE_GREEN_APP",
                "BLUE_GREEN_COLOR",
                "BLUE_GREEN_RELEASE",
                "BLUE_GREEN_PREVIOUS_RELEASE",
                "RELEASE_MARK",
                "SHARED",
            ],
            Duration::from_secs(120),
        ),
    )
    .for_release(&release);
    let out = run(&print, &app).await.expect("compose ran");
    assert!(out.success, "{out:?}");
    assert!(
        out.status
            .contains(&format!("of service `api` (compose project {app}-green)")),
        "{}",
        out.status
    );
    for line in [
        format!("BLUE_GREEN_APP={app}"),
        "BLUE_GREEN_COLOR=green".into(),
        "BLUE_GREEN_RELEASE=v2".into(),
        "BLUE_GREEN_PREVIOUS_RELEASE=v1".into(),
        "RELEASE_MARK=image-of-v2".into(),
        "SHARED=from-compose".into(),
    ] {
        assert_eq!(
            out.output.lines().filter(|l| *l == line).count(),
            1,
            "{line} once in: {}",
            out.output
        );
    }
    assert!(containers(&cleanup).await.is_empty(), "the one-off is gone");
    assert!(runtime.list().await.unwrap().is_empty(), "nothing started");

    let failing = ReleaseCommand::compose(
        &runtime,
        command(
            &["--exit", "4", "cannot reach the database"],
            Duration::from_secs(120),
        ),
    )
    .for_release(&release);
    let out = run(&failing, &app).await.expect("compose ran");
    assert!(!out.success, "{out:?}");
    assert!(
        out.status.ends_with("which exited with code 4"),
        "{}",
        out.status
    );
    assert!(
        out.output.contains("cannot reach the database"),
        "{}",
        out.output
    );
    assert!(containers(&cleanup).await.is_empty(), "the one-off is gone");
    assert!(
        networks_with_prefix(cleanup.docker(), &app)
            .await
            .is_empty(),
        "the failed run's project was taken down"
    );

    let hanging = ReleaseCommand::compose(
        &runtime,
        command(&["--sleep", "600000"], Duration::from_secs(5)),
    )
    .for_release(&release);
    let error = run(&hanging, &app).await.expect_err("it overran");
    assert_eq!(error.kind, ComponentErrorKind::Timeout, "{error}");
    assert!(
        error.message.contains("did not finish within 5s"),
        "{error}"
    );
    wait_gone(&cleanup).await;
}
