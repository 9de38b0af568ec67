//! Docker-native probes against real containers of the demo app.

mod common;

use std::time::{Duration, Instant};

use blue_green_core::{AppName, Color, Health, HealthProbe, Instance, Release, Runtime};
use blue_green_docker::{ContainerHealthProbe, DockerRuntime, ExecProbe};
use blue_green_testkit::docker::{
    demo_app_image, demo_app_image_without_healthcheck, DockerCleanup,
};
use common::{demo_config, wait_healthy};

async fn start(
    cleanup: &DockerCleanup,
    image: &str,
    env: &[(&str, &str)],
) -> (DockerRuntime, Instance) {
    let runtime = DockerRuntime::connect(
        AppName::new(cleanup.prefix()).unwrap(),
        demo_config(image, env),
    )
    .await
    .unwrap();
    let instance = runtime
        .start(Color::Blue, &Release::new("v1").unwrap())
        .await
        .unwrap();
    (runtime, instance)
}

/// Checks until `want` or the deadline; every answer seen, in order.
async fn check_until(
    probe: &dyn HealthProbe,
    instance: &Instance,
    deadline: Duration,
    want: impl Fn(&Health) -> bool,
) -> Vec<Health> {
    let start = Instant::now();
    let mut seen: Vec<Health> = Vec::new();
    loop {
        let health = probe.check(instance).await;
        let done = want(&health);
        if seen.last() != Some(&health) {
            seen.push(health);
        }
        if done {
            println!("after {:?}: {seen:?}", start.elapsed());
            return seen;
        }
        assert!(
            start.elapsed() < deadline,
            "not reached within {deadline:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn container_health_follows_the_image_healthcheck() {
    let cleanup = DockerCleanup::new("health-ok").await;
    let image = demo_app_image(&cleanup).await;
    let (runtime, instance) = start(&cleanup, &image, &[("START_DELAY_MS", "1500")]).await;
    let probe = ContainerHealthProbe::for_docker(&runtime);

    let seen = check_until(
        &probe,
        &instance,
        Duration::from_secs(30),
        Health::is_healthy,
    )
    .await;
    assert_eq!(seen.last(), Some(&Health::Healthy));
    if let Some(Health::Unhealthy(first)) = seen.first() {
        assert!(
            first.contains("starting"),
            "before it passes, the check is starting: {first}"
        );
    }

    runtime
        .stop(&instance, Duration::from_secs(5))
        .await
        .unwrap();
    match probe.check(&instance).await {
        Health::Unhealthy(reason) => assert!(reason.contains("not running"), "{reason}"),
        Health::Healthy => panic!("a stopped container is not healthy"),
    }
}

#[tokio::test]
async fn container_health_reports_a_failing_healthcheck_as_unhealthy() {
    let cleanup = DockerCleanup::new("health-bad").await;
    let image = demo_app_image(&cleanup).await;
    let (runtime, instance) = start(&cleanup, &image, &[("NEVER_HEALTHY", "1")]).await;
    let probe = ContainerHealthProbe::for_docker(&runtime);

    let seen = check_until(
        &probe,
        &instance,
        Duration::from_secs(30),
        |h| matches!(h, Health::Unhealthy(r) if r.contains("reports unhealthy")),
    )
    .await;
    assert!(!seen.contains(&Health::Healthy), "{seen:?}");
    let Some(Health::Unhealthy(reason)) = seen.last() else {
        unreachable!()
    };
    assert!(
        reason.contains("did not answer 200"),
        "the reason carries the check's output: {reason}"
    );
}

#[tokio::test]
async fn container_health_without_a_healthcheck_says_so() {
    let cleanup = DockerCleanup::new("health-none").await;
    let image = demo_app_image_without_healthcheck(&cleanup).await;
    let (runtime, instance) = start(&cleanup, &image, &[]).await;
    wait_healthy(&instance, Duration::from_secs(20)).await;
    let probe = ContainerHealthProbe::for_docker(&runtime);
    match probe.check(&instance).await {
        Health::Unhealthy(reason) => assert!(reason.contains("has no HEALTHCHECK"), "{reason}"),
        Health::Healthy => panic!("without a HEALTHCHECK there is no health status"),
    }
}

#[tokio::test]
async fn exec_probe_runs_a_command_in_the_container() {
    let cleanup = DockerCleanup::new("exec").await;
    let image = demo_app_image(&cleanup).await;
    let (runtime, instance) = start(&cleanup, &image, &[]).await;
    wait_healthy(&instance, Duration::from_secs(20)).await;
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let timeout = Duration::from_secs(5);

    let check = ExecProbe::for_docker(&runtime, argv(&["/demo-app", "--check"]), timeout).unwrap();
    assert_eq!(check.check(&instance).await, Health::Healthy);

    let missing = ExecProbe::for_docker(&runtime, argv(&["/no-such-program"]), timeout).unwrap();
    match missing.check(&instance).await {
        Health::Unhealthy(reason) => {
            println!("{reason}");
            assert!(reason.contains("no-such-program"), "{reason}")
        }
        Health::Healthy => panic!("a missing program is not healthy"),
    }

    assert!(ExecProbe::for_docker(&runtime, vec![], timeout).is_err());

    // A never-healthy app: the check exits 1 and says why.
    runtime
        .stop(&instance, Duration::from_secs(5))
        .await
        .unwrap();
    runtime.remove(&instance).await.unwrap();
    let (_, sick) = start(&cleanup, &image, &[("NEVER_HEALTHY", "1")]).await;
    wait_for_listen(&sick).await;
    match check.check(&sick).await {
        Health::Unhealthy(reason) => {
            println!("{reason}");
            assert!(reason.contains("exited with code 1"), "{reason}");
            assert!(reason.contains("did not answer 200"), "{reason}");
        }
        Health::Healthy => panic!("NEVER_HEALTHY answers 503"),
    }

    // Reasons reach the terminal, the log, the NDJSON events and the history: they name the
    // program only, never its arguments (which may hold a token).
    let secret = "--api-token=s3cret-exec-token";
    for argv in [
        argv(&["/demo-app", "--check", secret]),
        argv(&["/no-such-program", secret]),
    ] {
        let probe = ExecProbe::for_docker(&runtime, argv.clone(), timeout).unwrap();
        match probe.check(&sick).await {
            Health::Unhealthy(reason) => {
                println!("{reason}");
                assert!(reason.contains(&argv[0]), "{reason}");
                assert!(!reason.contains("s3cret"), "the token leaked: {reason}");
            }
            Health::Healthy => panic!("{argv:?} is not healthy"),
        }
    }
}

/// Waits until the app answers at all (any status).
async fn wait_for_listen(instance: &Instance) {
    let start = Instant::now();
    while common::get(&instance.endpoint, "/").await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never listened",
            instance.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
