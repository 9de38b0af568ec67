//! The router calls of a gradual shift, in order, against a mockall [`MockRouter`] (the
//! runtime, probe and store are the in-memory fakes): the engine asks `can_split` before
//! anything starts, reads `current_split` when it reconciles, splits 10% then 50% from the
//! live endpoint to the new one, reads `responses` during each step's watch when a share of
//! errors is asked for, and ends the shift with `route_to`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::mocks::MockRouter;
use blue_green_core::testing::FakeWorld;
use blue_green_core::{
    AppName, CancellationToken, Color, Endpoint, Engine, EngineConfig, ErrorRate, Release,
    Responses, RouteReceipt,
};

#[tokio::test(start_paused = true)]
async fn a_shift_splits_from_the_live_endpoint_step_by_step_then_routes() {
    let world = FakeWorld::new();
    let blue = world.seed_live(Color::Blue, "v1");
    // The fake runtime's next instance answers here.
    let green = Endpoint::new("127.0.0.1", 20002);
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let target = Arc::new(Mutex::new(Some(blue.endpoint.clone())));

    let mut router = MockRouter::new();
    router.expect_can_split().return_const(true);
    let (t, log) = (target.clone(), calls.clone());
    router.expect_target().returning(move || {
        log.lock().unwrap().push("target".into());
        Ok(t.lock().unwrap().clone())
    });
    let log = calls.clone();
    router.expect_current_split().returning(move || {
        log.lock().unwrap().push("current_split".into());
        Ok(None)
    });
    let (log, live, next) = (calls.clone(), blue.endpoint.clone(), green.clone());
    router.expect_split().returning(move |split| {
        assert_eq!(
            split.current(),
            &live,
            "a split starts from the live endpoint"
        );
        assert_eq!(split.next(), &next);
        log.lock()
            .unwrap()
            .push(format!("split {}", split.percent()));
        Ok(RouteReceipt::new())
    });
    let (log, t) = (calls.clone(), target.clone());
    router.expect_route_to().returning(move |endpoint| {
        log.lock()
            .unwrap()
            .push(format!("route_to {}", endpoint.port));
        *t.lock().unwrap() = Some(endpoint.clone());
        Ok(RouteReceipt::new())
    });
    router.expect_verify().returning(|_, _| Ok(()));
    let log = calls.clone();
    router.expect_responses().returning(move |endpoint| {
        log.lock()
            .unwrap()
            .push(format!("responses {}", endpoint.port));
        Ok(Some(Responses::default()))
    });
    router.expect_in_flight().returning(|_| Ok(None));
    // After a drain by time, the engine asks what is still open to the old color.
    router.expect_open_connections().returning(|_| Ok(None));
    router.expect_cut().returning(|_| Ok(None));

    let mut config = EngineConfig::new(AppName::new("web").unwrap());
    config.readiness.interval = Duration::from_millis(500);
    config.switch.drain = Duration::from_secs(1);
    config.switch.stop_timeout = Duration::from_secs(2);
    config.switch.steps = Some("10,50,100".parse().unwrap());
    config.switch.step_wait = Duration::from_secs(1);
    config.switch.watch_max_error_rate = Some(ErrorRate::new(0.1).unwrap());
    let engine = Engine::new(
        config,
        world.runtime(),
        world.probe(),
        router,
        world.store(),
    );
    let report = engine
        .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.live.endpoint, green);

    let calls = calls.lock().unwrap().clone();
    let writes: Vec<&str> = calls
        .iter()
        .map(String::as_str)
        .filter(|c| c.starts_with("split") || c.starts_with("route_to"))
        .collect();
    assert_eq!(writes, ["split 10", "split 50", "route_to 20002"]);
    assert_eq!(calls[..2], ["target", "current_split"], "{calls:?}");
    let at = |c: &str| calls.iter().position(|x| x == c).unwrap();
    let read_between = |from: &str, to: &str| {
        calls[at(from)..at(to)]
            .iter()
            .filter(|c| *c == "responses 20002")
            .count()
    };
    // A reading at the start of each step's watch, and one per probe interval.
    assert!(read_between("split 10", "split 50") >= 2, "{calls:?}");
    assert!(read_between("split 50", "route_to 20002") >= 2, "{calls:?}");
    // (The fake world's own router is not used here, so its invariants do not apply.)
    assert!(world.instances_of(Color::Green)[0].state.is_running());
    assert!(!world.instances_of(Color::Blue)[0].state.is_running());
}
