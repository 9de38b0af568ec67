//! The watch after the switch, for real: the engine deploys the demo app as Docker containers
//! behind a real nginx under steady GET/POST load, and the new release's `/health` starts
//! answering 503 five seconds after live traffic first reaches it
//! (`UNHEALTHY_AFTER_TRAFFIC_MS=5000`). The watch sees it, routes back to the old color (which
//! kept running), drains and removes the new one, and fails the deploy; not one request of the
//! users' traffic (`GET /`, slow `GET`s and `POST`s through nginx) may fail. Needs Docker and
//! nginx.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blue_green_core::{
    AppName, CancellationToken, Color, Engine, Error, Event, FileStore, Release, Step,
};
use blue_green_docker::DockerRuntime;
use blue_green_testkit::docker::{
    containers_with_prefix, demo_app_image, demo_app_image_with_env, DockerCleanup,
};
use blue_green_testkit::load::Load;
use blue_green_testkit::nginx::NginxHarness;
use common::demo_config;
use common::engine as setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_failing_after_the_switch_is_routed_back_by_the_watch_under_load() {
    let cleanup = DockerCleanup::new("engine-watch").await;
    let good = demo_app_image(&cleanup).await;
    let fading = demo_app_image_with_env(
        &cleanup,
        "fading",
        &[("UNHEALTHY_AFTER_TRAFFIC_MS", "5000")],
    )
    .await;

    let nginx = NginxHarness::start("watch", &setup::nowhere())
        .await
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));
    let app = AppName::new(cleanup.prefix()).unwrap();
    let runtime = DockerRuntime::connect(app.clone(), demo_config(&good, &[]))
        .await
        .unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let mut config = setup::engine_config(app);
    config.switch.watch = Duration::from_secs(30);
    config.switch.watch_failures = 2;

    // When the router was pointed where, as the engine says.
    let routed: Arc<Mutex<Vec<(Color, Instant)>>> = Arc::default();
    let seen = routed.clone();
    let engine = Engine::new(
        config,
        runtime,
        setup::probe(),
        setup::router(&nginx),
        FileStore::new(state_dir.path()),
    )
    .with_observer(Arc::new(move |e: &Event| {
        if let Event::Routed { color, .. } = e {
            seen.lock().unwrap().push((*color, Instant::now()));
        }
    }));
    let cancel = CancellationToken::new();
    let release = |id: &str, image: &str| {
        Release::new(id)
            .unwrap()
            .with_artifact(image.to_string())
            .unwrap()
    };

    // The first deploy has no old color to go back to: the watch does not run.
    engine
        .deploy(release("r0", &good), &cancel)
        .await
        .unwrap_or_else(|e| panic!("first deploy: {e}\nnginx: {}", nginx.error_log()));
    // The users' traffic: `/` and the slow paths (not `/health`, which is what fails: through
    // nginx it would count the app's own 503s until the route back).
    let load = Load::start(blue_green_testkit::load::LoadConfig {
        get_path: "/".into(),
        ..setup::load_config(nginx.url(""))
    });
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(
        warm.total >= 50 && warm.failed == 0,
        "traffic before: {warm}"
    );

    let began = Instant::now();
    let error = engine
        .deploy(release("r1", &fading), &cancel)
        .await
        .expect_err("a release that fails after the switch must be routed back");
    let ended = Instant::now();
    println!("deploy of the fading release: {error}");
    assert!(
        matches!(
            &error,
            Error::Step {
                step: Step::Watch,
                color: Color::Green,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.exit_class().code(), 1);
    assert!(
        error.to_string().contains("goes back to the old color"),
        "{error}"
    );

    let routes = routed.lock().unwrap().clone();
    let colors: Vec<Color> = routes.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        colors,
        [Color::Blue, Color::Green, Color::Blue],
        "switched to green, then back to blue"
    );
    let live_for = routes[2].1 - routes[1].1;
    println!(
        "green was live for {live_for:.1?} (health failing from 5 s after its first request); deploy took {:.1?}",
        ended - began
    );
    assert!(
        live_for >= Duration::from_secs(5) && live_for < Duration::from_secs(15),
        "routed back {live_for:?} after the switch"
    );

    let status = engine.status().await.unwrap();
    assert_eq!(status.live, Some(Color::Blue), "blue serves again");
    assert_eq!(
        status.deployment.as_ref().map(|d| d.release.id.as_str()),
        Some("r0")
    );
    let left = containers_with_prefix(cleanup.docker(), cleanup.prefix()).await;
    assert!(
        left.keys().all(|name| !name.contains("green")),
        "green was removed: {left:?}"
    );

    // Traffic goes on to blue after the route back.
    let after = load.snapshot();
    load.wait_for(after.total + 50, Duration::from_secs(20))
        .await;
    let report = load.stop().await;
    println!("load through the switch, the watch and the route back: {report}");
    assert_eq!(report.failed, 0, "no request may fail: {report}");
    assert!(
        report.by_color.get("green").copied().unwrap_or(0) > 0,
        "green took live traffic before it was routed back: {report}"
    );
}
