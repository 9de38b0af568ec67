//! DockerRuntime against the real Docker engine, with the demo app built into a `FROM scratch`
//! image by the test (no registry is used).

mod common;

use std::time::{Duration, Instant};

use blue_green_core::{AppName, Color, ComponentErrorKind, InstanceState, Release, Runtime};
use blue_green_docker::docker::{LABEL_APP, LABEL_COLOR, LABEL_MANAGED_BY, LABEL_RELEASE};
use blue_green_docker::DockerRuntime;
use blue_green_testkit::docker::{containers_with_prefix, demo_app_image, DockerCleanup};
use common::{demo_config, free_endpoints, wait_healthy, wait_state};

async fn runtime(
    cleanup: &DockerCleanup,
    config: blue_green_docker::DockerConfig,
) -> DockerRuntime {
    DockerRuntime::connect(AppName::new(cleanup.prefix()).unwrap(), config)
        .await
        .expect("connect to Docker")
}

/// The host PID of container `id`'s main process.
async fn app_pid(cleanup: &DockerCleanup, id: &str) -> i64 {
    let inspect = cleanup
        .docker()
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .expect("inspect the container");
    inspect
        .state
        .and_then(|s| s.pid)
        .filter(|pid| *pid > 0)
        .expect("a running container has a PID")
}

#[tokio::test]
async fn starts_a_release_that_answers_then_stops_and_removes_it() {
    let cleanup = DockerCleanup::new("lifecycle").await;
    let image = demo_app_image(&cleanup).await;
    let runtime = runtime(&cleanup, demo_config(&image, &[("GREETING", "hi")])).await;

    let instance = runtime
        .start(Color::Blue, &Release::new("v1").unwrap())
        .await
        .expect("start blue");
    assert_eq!(instance.color, Color::Blue);
    assert_eq!(instance.release, "v1");
    assert_ne!(instance.endpoint.port, 0, "a free host port was published");
    assert_eq!(
        wait_healthy(&instance, Duration::from_secs(20)).await,
        "blue v1"
    );
    assert_eq!(
        runtime.state(&instance).await.unwrap(),
        InstanceState::Running
    );

    let name = format!("{}-blue", cleanup.prefix());
    let containers = containers_with_prefix(cleanup.docker(), cleanup.prefix()).await;
    let labels = containers
        .get(&name)
        .expect("container named {app}-{color}");
    assert_eq!(labels[LABEL_APP], cleanup.prefix());
    assert_eq!(labels[LABEL_COLOR], "blue");
    assert_eq!(labels[LABEL_RELEASE], "v1");
    assert_eq!(labels[LABEL_MANAGED_BY], "blue-green");

    let logs = runtime.logs(&instance, 10).await.unwrap();
    assert!(
        logs.iter().any(|l| l.contains("listening")),
        "log tail: {logs:?}"
    );

    // The stop ends once the app's process has exited, not when Docker has also taken the
    // container's network down: the process must be gone when it returns.
    let pid = app_pid(&cleanup, &instance.id).await;
    let process = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(
        process.exists(),
        "the app runs as {} in this PID namespace",
        process.display()
    );
    let started = Instant::now();
    runtime
        .stop(&instance, Duration::from_secs(10))
        .await
        .unwrap();
    println!("graceful stop took {:?}", started.elapsed());
    assert!(
        !process.exists(),
        "the app's process {pid} has exited when the stop returns"
    );
    assert_eq!(
        runtime.state(&instance).await.unwrap(),
        InstanceState::Exited {
            code: Some(0),
            reason: None
        },
        "the demo app exits 0 on SIGTERM"
    );
    // Stopping again is not an error.
    runtime
        .stop(&instance, Duration::from_secs(1))
        .await
        .unwrap();

    runtime.remove(&instance).await.unwrap();
    assert_eq!(
        runtime.state(&instance).await.unwrap(),
        InstanceState::Missing
    );
    assert!(runtime.list().await.unwrap().is_empty());
    runtime
        .remove(&instance)
        .await
        .expect("removing a missing instance is fine");
}

#[tokio::test]
async fn publishes_on_the_configured_endpoint_and_restarts_a_stopped_instance() {
    let cleanup = DockerCleanup::new("fixed-port").await;
    let image = demo_app_image(&cleanup).await;
    let mut config = demo_config(&image, &[]);
    let endpoints = free_endpoints();
    config.endpoints = Some(endpoints.clone());
    let runtime = runtime(&cleanup, config).await;

    let green = runtime
        .start(
            Color::Green,
            &Release::new("v2")
                .unwrap()
                .with_artifact(image.clone())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(green.endpoint, endpoints.green);
    assert_eq!(
        wait_healthy(&green, Duration::from_secs(20)).await,
        "green v2"
    );

    runtime.stop(&green, Duration::from_secs(5)).await.unwrap();
    assert!(!runtime.state(&green).await.unwrap().is_running());
    let again = runtime.restart(&green).await.unwrap();
    assert_eq!(again.id, green.id);
    assert_eq!(again.endpoint, endpoints.green);
    assert_eq!(
        wait_healthy(&again, Duration::from_secs(20)).await,
        "green v2"
    );
}

#[tokio::test]
async fn a_release_that_crashes_on_start_is_reported_as_exited() {
    let cleanup = DockerCleanup::new("crash").await;
    let image = demo_app_image(&cleanup).await;
    let runtime = runtime(&cleanup, demo_config(&image, &[("CRASH_ON_START", "1")])).await;

    let started = Instant::now();
    let instance = runtime
        .start(Color::Green, &Release::new("bad").unwrap())
        .await
        .unwrap();
    let (state, _) = wait_state(&runtime, &instance, Duration::from_secs(15), |s| {
        !s.is_running()
    })
    .await;
    println!(
        "crash reported as `{state}` {:?} after start was called",
        started.elapsed()
    );
    assert_eq!(
        state,
        InstanceState::Exited {
            code: Some(1),
            reason: None
        }
    );
    let logs = runtime.logs(&instance, 5).await.unwrap();
    assert!(
        logs.iter().any(|l| l.contains("CRASH_ON_START")),
        "the log tail says why: {logs:?}"
    );
}

#[tokio::test]
async fn a_host_port_in_use_is_a_clear_error_and_leaves_nothing() {
    let cleanup = DockerCleanup::new("port-taken").await;
    let image = demo_app_image(&cleanup).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = demo_config(&image, &[]);
    let mut endpoints = free_endpoints();
    endpoints.blue.port = port;
    config.endpoints = Some(endpoints);
    let runtime = runtime(&cleanup, config).await;

    let error = runtime
        .start(Color::Blue, &Release::new("v1").unwrap())
        .await
        .expect_err("the port is taken");
    println!("{error}");
    assert_eq!(error.kind, ComponentErrorKind::Failed);
    assert!(
        error
            .message
            .contains(&format!("port {port} is already in use")),
        "{error}"
    );
    assert!(
        runtime.list().await.unwrap().is_empty(),
        "the failed container was removed"
    );
    drop(taken);
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error() {
    let cleanup = DockerCleanup::new("no-image").await;
    let runtime = runtime(&cleanup, demo_config("unused:latest", &[])).await;
    let missing = format!("{}-missing:v9", cleanup.prefix());

    let error = runtime
        .start(
            Color::Blue,
            &Release::new("v9")
                .unwrap()
                .with_artifact(missing.clone())
                .unwrap(),
        )
        .await
        .expect_err("the image does not exist");
    println!("{error}");
    assert!(
        error
            .message
            .contains(&format!("image `{missing}` was not found locally")),
        "{error}"
    );
    assert!(error.message.contains("pulling it failed"), "{error}");
    assert!(runtime.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn list_finds_a_container_left_by_an_earlier_run() {
    let cleanup = DockerCleanup::new("leftover").await;
    let image = demo_app_image(&cleanup).await;
    let earlier = runtime(&cleanup, demo_config(&image, &[])).await;
    let left = earlier
        .start(Color::Green, &Release::new("v7").unwrap())
        .await
        .unwrap();
    drop(earlier);

    let later = runtime(&cleanup, demo_config(&image, &[])).await;
    let found = later.list().await.unwrap();
    assert_eq!(
        found,
        vec![left.clone()],
        "same color, release, id and endpoint"
    );

    // Another app's containers are not ours.
    let other_app = DockerRuntime::connect(
        AppName::new(format!("{}-other", cleanup.prefix())).unwrap(),
        demo_config(&image, &[]),
    )
    .await
    .unwrap();
    assert!(other_app.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn stop_kills_a_release_that_ignores_sigterm_after_the_grace_period() {
    let cleanup = DockerCleanup::new("grace").await;
    let image = demo_app_image(&cleanup).await;
    let runtime = runtime(&cleanup, demo_config(&image, &[("IGNORE_SIGTERM", "1")])).await;
    let instance = runtime
        .start(Color::Blue, &Release::new("stubborn").unwrap())
        .await
        .unwrap();
    wait_healthy(&instance, Duration::from_secs(20)).await;

    let grace = Duration::from_secs(2);
    let started = Instant::now();
    runtime.stop(&instance, grace).await.unwrap();
    let took = started.elapsed();
    println!("stop with a {grace:?} grace period of a process that ignores SIGTERM took {took:?}");
    assert_eq!(
        runtime.state(&instance).await.unwrap(),
        InstanceState::Exited {
            code: Some(137),
            reason: None
        },
        "killed (SIGKILL) once the grace period was over"
    );
    assert!(
        took >= grace - Duration::from_millis(500),
        "it was given its grace period"
    );
}

/// Starts the demo app with `env`, sends a 1.5 s request, stops the container once the app has
/// the request, and returns what the client got and the container's exit state.
async fn stop_during_a_slow_request(
    cleanup: &DockerCleanup,
    image: &str,
    env: &[(&str, &str)],
) -> (Result<(u16, String), String>, InstanceState) {
    let runtime = runtime(cleanup, demo_config(image, env)).await;
    let instance = runtime
        .start(Color::Blue, &Release::new("v1").unwrap())
        .await
        .unwrap();
    wait_healthy(&instance, Duration::from_secs(20)).await;

    let endpoint = instance.endpoint.clone();
    let request = tokio::spawn(async move { common::get(&endpoint, "/slow?ms=1500").await });
    let start = Instant::now();
    while !runtime
        .logs(&instance, 20)
        .await
        .unwrap()
        .iter()
        .any(|l| l.contains("/slow: sleeping"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the slow request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runtime
        .stop(&instance, Duration::from_secs(10))
        .await
        .unwrap();
    let answer = request.await.unwrap();
    (answer, runtime.state(&instance).await.unwrap())
}

#[tokio::test]
async fn a_graceful_app_finishes_in_flight_requests_on_stop_and_an_aborting_one_does_not() {
    let cleanup = DockerCleanup::new("sigterm").await;
    let image = demo_app_image(&cleanup).await;

    let (answer, state) = stop_during_a_slow_request(&cleanup, &image, &[]).await;
    println!("graceful: {answer:?}, {state}");
    assert_eq!(answer, Ok((200, "blue v1 slept 1500 ms\n".to_string())));
    assert_eq!(
        state,
        InstanceState::Exited {
            code: Some(0),
            reason: None
        }
    );

    let cleanup = DockerCleanup::new("sigterm-abort").await;
    let image = demo_app_image(&cleanup).await;
    let (answer, state) =
        stop_during_a_slow_request(&cleanup, &image, &[("SIGTERM_MODE", "abort")]).await;
    println!("abort: {answer:?}, {state}");
    assert!(answer.is_err(), "the request was cut: {answer:?}");
    assert_eq!(
        state,
        InstanceState::Exited {
            code: Some(143),
            reason: None
        }
    );
}

#[tokio::test]
async fn networks_restart_policy_stop_signal_env_and_labels_reach_the_container() {
    let cleanup = DockerCleanup::new("settings").await;
    let image = demo_app_image(&cleanup).await;
    let networks: Vec<String> = ["front", "back"]
        .iter()
        .map(|n| format!("{}-{n}", cleanup.prefix()))
        .collect();
    for name in &networks {
        cleanup
            .docker()
            .create_network(bollard::models::NetworkCreateRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut config = demo_config(
        &image,
        &[("GREETING", "hi"), ("BLUE_GREEN_COLOR", "spoofed")],
    );
    config.networks = networks.clone();
    config.restart_policy = Some("on-failure".into());
    config.stop_signal = Some("SIGINT".into());
    config.labels.insert("team".into(), "web".into());
    let runtime = runtime(&cleanup, config).await;
    let instance = runtime
        .start(Color::Green, &Release::new("v3").unwrap())
        .await
        .unwrap();
    assert_eq!(
        wait_healthy(&instance, Duration::from_secs(20)).await,
        "green v3"
    );

    let inspect = cleanup
        .docker()
        .inspect_container(
            &instance.id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let attached: Vec<String> = inspect
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_keys()
        .collect();
    for name in &networks {
        assert!(attached.contains(name), "attached to {name}: {attached:?}");
    }
    let host = inspect.host_config.unwrap();
    assert_eq!(
        host.restart_policy.and_then(|r| r.name),
        Some(bollard::models::RestartPolicyNameEnum::ON_FAILURE)
    );
    let config = inspect.config.unwrap();
    assert_eq!(config.stop_signal.as_deref(), Some("SIGINT"));
    let env = config.env.unwrap_or_default();
    assert!(env.contains(&"GREETING=hi".to_string()), "{env:?}");
    assert!(
        env.contains(&"BLUE_GREEN_COLOR=green".to_string()),
        "{env:?}"
    );
    assert!(
        env.contains(&"BLUE_GREEN_RELEASE=v3".to_string()),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|e| e.contains("spoofed")),
        "ours win: {env:?}"
    );
    assert_eq!(
        config
            .labels
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("web")
    );

    // SIGINT is a graceful stop for the demo app too.
    runtime
        .stop(&instance, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        runtime.state(&instance).await.unwrap(),
        InstanceState::Exited {
            code: Some(0),
            reason: None
        }
    );
}
