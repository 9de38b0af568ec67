//! The gradual shift (`SwitchPolicy::steps`), the watch's share of errors and the staged
//! color's preview, against the in-memory fakes on tokio's paused clock: each step splits and
//! is watched before the switch, any failure or interrupt ends the split and removes the new
//! color, a split left by a kill is routed back by the next command, and a router that cannot
//! split is refused before anything starts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::testing::{FakeCall, FakeEngine, FakeWorld, Fault};
use blue_green_core::{
    AppName, CancellationToken, Color, ComponentErrorKind, EngineConfig, Error, ErrorRate, Event,
    KeepPrevious, Release, Responses, ShiftSteps, Step,
};
use tokio::sync::Notify;

fn config() -> EngineConfig {
    let mut config = EngineConfig::new(AppName::new("web").unwrap());
    config.readiness.interval = Duration::from_millis(500);
    config.readiness.deadline = Duration::from_secs(5);
    config.switch.drain = Duration::from_secs(1);
    config.switch.stop_timeout = Duration::from_secs(2);
    config.switch.keep_previous = KeepPrevious::Stopped;
    config.switch.steps = Some("10,50,100".parse().unwrap());
    config.switch.step_wait = Duration::from_secs(5);
    config
}

type Events = Arc<Mutex<Vec<Event>>>;

fn recording(world: &FakeWorld, config: EngineConfig) -> (FakeEngine, Events) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let engine = world
        .engine(config)
        .with_observer(Arc::new(move |e: &Event| {
            sink.lock().unwrap().push(e.clone())
        }));
    (engine, events)
}

fn splitting_world() -> FakeWorld {
    let world = FakeWorld::new();
    world.set_can_split(true);
    world.seed_live(Color::Blue, "v1");
    world
}

/// `err` is the failure of `step`.
fn assert_failed_at(err: &Error, step: Step) {
    assert!(
        matches!(err, Error::Step { step: s, .. } if *s == step),
        "not a failure at {step}: {err:?}"
    );
}

fn v2() -> Release {
    Release::new("v2").unwrap()
}

/// Traffic went back to blue v1, nothing is split, and green is gone.
fn back_on_blue(world: &FakeWorld) {
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert_eq!(world.split(), None);
    assert!(world.instances_of(Color::Green).is_empty());
    assert_eq!(world.saved_state().live.unwrap().color, Color::Blue);
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn each_step_is_split_and_watched_before_the_switch_moves_all_traffic() {
    let world = splitting_world();
    let (engine, events) = recording(&world, config());
    let began = tokio::time::Instant::now();
    let report = engine
        .deploy(v2(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Green);
    // Two waits of 5s, at the 10% and the 50% step.
    assert!(
        began.elapsed() >= Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let order: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Shifted { percent, color, .. } => Some(format!("{percent}% {color}")),
            Event::Routed { color, .. } => Some(format!("routed {color}")),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["10% green", "50% green", "routed green"]);
    assert_eq!(world.count(FakeCall::Split), 2);
    assert_eq!(world.split(), None, "the switch ended the split");
    let history = world.history();
    let steps: Vec<Step> = history
        .last()
        .unwrap()
        .steps
        .iter()
        .map(|s| s.step)
        .collect();
    assert_eq!(steps.iter().filter(|s| **s == Step::Shift).count(), 2);
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_router_that_cannot_split_is_refused_before_anything_starts() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = recording(&world, config());
    let err = engine
        .deploy(v2(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Usage { .. }), "{err:?}");
    assert_eq!(err.exit_class().code(), 2);
    assert!(err.to_string().contains("deploy without steps"), "{err}");
    assert_eq!(world.count(FakeCall::Start), 0);
    assert_eq!(
        world.count(FakeCall::List),
        0,
        "refused before the reconcile"
    );
    let promote = engine.promote(&CancellationToken::new()).await.unwrap_err();
    assert_eq!(promote.exit_class().code(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_new_color_failing_at_the_50_percent_step_goes_back_to_the_old_one() {
    let world = splitting_world();
    let (engine, _) = recording(&world, config());
    // Readiness answers at check 1; the 10% step's wait probes 10 times (checks 2..=11); the
    // 50% step's first two probes fail.
    world.fail_nth(FakeCall::Check, 12);
    world.fail_nth(FakeCall::Check, 13);
    let err = engine
        .deploy(v2(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Step {
                step: Step::Shift,
                color: Color::Green,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.exit_class().code(), 1);
    assert!(err.to_string().contains("the 50% step"), "{err}");
    assert!(err.to_string().contains("back to the old color"), "{err}");
    back_on_blue(&world);
}

#[tokio::test(start_paused = true)]
async fn a_failed_split_at_the_second_step_ends_the_first_one() {
    let world = splitting_world();
    let (engine, _) = recording(&world, config());
    world.fail_nth(FakeCall::Split, 2);
    let err = engine
        .deploy(v2(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("sending 50% of new requests to green failed"),
        "{err}"
    );
    back_on_blue(&world);
}

#[tokio::test(start_paused = true)]
async fn too_many_errors_counted_by_the_router_fail_the_step() {
    let world = splitting_world();
    let mut config = config();
    config.switch.watch_max_error_rate = Some(ErrorRate::new(0.05).unwrap());
    config.switch.watch_min_requests = 20;
    let (engine, _) = recording(&world, config);
    // 3 errors in every 10 responses: after two readings, 6 of 20.
    world.count_responses(
        "v2",
        Responses {
            total: 10,
            errors: 3,
        },
    );
    let err = engine
        .deploy(v2(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_failed_at(&err, Step::Shift);
    assert!(err.to_string().contains("6 of 20 responses"), "{err}");
    assert!(err.to_string().contains("the 10% step"), "{err}");
    back_on_blue(&world);
}

#[tokio::test(start_paused = true)]
async fn errors_under_the_threshold_or_the_minimum_do_not_fail_the_watch() {
    let world = splitting_world();
    let mut config = config();
    config.switch.watch_max_error_rate = Some(ErrorRate::new(0.05).unwrap());
    config.switch.watch_min_requests = 20;
    config.switch.watch = Duration::from_secs(5);
    let (engine, _) = recording(&world, config);
    // 1 in 40: 2.5%.
    world.count_responses(
        "v2",
        Responses {
            total: 40,
            errors: 1,
        },
    );
    let report = engine
        .deploy(v2(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Green);
    assert!(
        world.count(FakeCall::Responses) > 10,
        "it did read the counts"
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_watch_after_the_switch_fails_on_too_many_errors_too() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let mut config = config();
    config.switch.steps = None;
    config.switch.watch = Duration::from_secs(10);
    config.switch.watch_max_error_rate = Some(ErrorRate::new(0.1).unwrap());
    config.switch.watch_min_requests = 5;
    let (engine, _) = recording(&world, config);
    world.count_responses(
        "v2",
        Responses {
            total: 5,
            errors: 5,
        },
    );
    let err = engine
        .deploy(v2(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_failed_at(&err, Step::Watch);
    assert!(err.to_string().contains("watch_max_error_rate"), "{err}");
    back_on_blue(&world);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_during_a_step_goes_back_to_the_old_color() {
    let world = splitting_world();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let engine = world
        .engine(config())
        .with_observer(Arc::new(move |e: &Event| {
            if matches!(e, Event::Shifted { percent: 50, .. }) {
                trigger.cancel();
            }
        }));
    let err = engine.deploy(v2(), &cancel).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Cancelled {
                step: Step::Shift,
                ..
            }
        ),
        "{err:?}"
    );
    back_on_blue(&world);
}

#[tokio::test(start_paused = true)]
async fn a_split_left_by_a_kill_is_routed_back_by_the_next_command() {
    let world = splitting_world();
    let died = Arc::new(Notify::new());
    let (w, signal) = (world.clone(), died.clone());
    let engine = world
        .engine(config())
        .with_observer(Arc::new(move |e: &Event| {
            if matches!(e, Event::Shifted { percent: 10, .. }) {
                w.crash();
                signal.notify_one();
            }
        }));
    let go = CancellationToken::new();
    tokio::select! {
        r = engine.deploy(v2(), &go) => panic!("ended before the kill: {r:?}"),
        () = died.notified() => {}
    }
    drop(engine);
    world.revive();
    assert_eq!(
        world.saved_state().journal.map(|j| j.step),
        Some(Step::Shift)
    );
    assert_eq!(world.split().map(|s| s.percent()), Some(10));

    let engine = world.engine(config());
    let status = engine.status().await.unwrap();
    let said = format!("{:?}", status.leftovers);
    assert!(said.contains("point the router back to blue"), "{said}");
    assert_eq!(
        world.split().map(|s| s.percent()),
        Some(10),
        "status only reads"
    );

    // The next deploy repairs first: the split ends, green is drained and removed, then v3
    // goes through its own shift.
    let before = world.calls().len();
    let report = engine
        .deploy(Release::new("v3").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("pointed the router back to blue")),
        "{:?}",
        report.warnings
    );
    let after: Vec<String> = world.calls()[before..]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let routed_back = after
        .iter()
        .position(|c| c.starts_with("RouteTo(127.0.0.1:20001)"));
    let removed = after.iter().position(|c| c.starts_with("Remove(green-2)"));
    assert!(routed_back < removed && routed_back.is_some(), "{after:?}");
    assert_eq!(report.live.release.id, "v3");
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_split_without_a_journal_is_ended_by_repair() {
    let world = splitting_world();
    let green = world.seed_instance(Color::Green, "v2", blue_green_core::InstanceState::Running);
    let router = world.router();
    let blue = world.router_target().unwrap();
    blue_green_core::Router::split(
        &router,
        &blue_green_core::Split::new(blue.clone(), green.endpoint.clone(), 30).unwrap(),
    )
    .await
    .unwrap();
    let report = world.engine(config()).repair().await.unwrap();
    assert_eq!(report.live, Some(Color::Blue));
    assert_eq!(world.split(), None);
    assert_eq!(world.router_target(), Some(blue));
    assert_eq!(
        world.instances_of(Color::Green).len(),
        1,
        "nothing is removed"
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_first_deploy_with_steps_switches_at_once_and_says_so() {
    let world = FakeWorld::new();
    world.set_can_split(true);
    let (engine, _) = recording(&world, config());
    let report = engine
        .deploy(v2(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Blue);
    assert_eq!(world.count(FakeCall::Split), 0);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("nothing was live")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test(start_paused = true)]
async fn a_staged_color_is_previewed_and_its_promotion_shifts_step_by_step() {
    let world = splitting_world();
    world.set_preview_address(Some("http://preview.web.test"));
    let (engine, events) = recording(&world, config());
    let staged = engine.stage(v2(), &CancellationToken::new()).await.unwrap();
    assert_eq!(staged.preview.as_deref(), Some("http://preview.web.test"));
    assert_eq!(world.previewed(), Some(staged.staged.endpoint.clone()));
    assert_eq!(world.count(FakeCall::Split), 0, "staging does not shift");
    let status = engine.status().await.unwrap();
    assert_eq!(
        status.staged_preview.as_deref(),
        Some("http://preview.web.test")
    );

    let report = engine.promote(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.live.color, Color::Green);
    assert_eq!(world.count(FakeCall::Split), 2);
    assert_eq!(world.previewed(), None, "promote ends the preview");
    let previews: Vec<Option<String>> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Previewed { address, .. } => Some(address.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        previews,
        [Some("http://preview.web.test".to_string()), None]
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_preview_fails_the_staged_deploy_and_removes_it() {
    let world = splitting_world();
    world.fault_nth(
        FakeCall::Preview,
        1,
        Fault::Fail(ComponentErrorKind::Failed),
    );
    let (engine, _) = recording(&world, config());
    let err = engine
        .stage(v2(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert_failed_at(&err, Step::Preview);
    assert_eq!(err.exit_class().code(), 1);
    back_on_blue(&world);
    assert_eq!(world.previewed(), None);
    assert_eq!(world.saved_state().staged, None);
}

#[tokio::test(start_paused = true)]
async fn abort_ends_the_preview_and_a_second_abort_changes_nothing() {
    let world = splitting_world();
    world.set_preview_address(Some("http://preview.web.test"));
    let engine = world.engine(config());
    engine.stage(v2(), &CancellationToken::new()).await.unwrap();
    engine.abort().await.unwrap();
    assert_eq!(world.previewed(), None);
    assert!(world.instances_of(Color::Green).is_empty());
    let previews = world.count(FakeCall::Preview);
    engine.abort().await.unwrap();
    assert_eq!(world.count(FakeCall::Preview), previews);
    assert_eq!(engine.status().await.unwrap().staged_preview, None);
}

#[test]
fn steps_must_increase_stay_within_1_to_100_and_end_at_100() {
    assert!(ShiftSteps::new(vec![10, 50, 100]).is_ok());
    assert!(ShiftSteps::new(vec![100]).is_ok());
    for bad in [
        vec![],
        vec![0, 100],
        vec![50, 50, 100],
        vec![60, 20, 100],
        vec![10, 50],
        vec![10, 101],
    ] {
        assert!(ShiftSteps::new(bad.clone()).is_err(), "{bad:?}");
    }
    let err = "10,x,100".parse::<ShiftSteps>().unwrap_err();
    assert!(err.message.contains("`x`"), "{}", err.message);
}

#[tokio::test(start_paused = true)]
async fn a_staged_color_taken_down_or_undone_by_a_repair_is_no_longer_previewed() {
    // Taken down with `down`.
    let world = splitting_world();
    world.set_preview_address(Some("http://preview.web.test"));
    let engine = world.engine(config());
    engine.stage(v2(), &CancellationToken::new()).await.unwrap();
    engine
        .down(
            blue_green_core::DownTarget::Idle,
            blue_green_core::IfLive::Refuse,
        )
        .await
        .unwrap();
    assert_eq!(world.previewed(), None);

    // Killed once its preview began: the repair removes the staged color and ends the preview.
    let world = splitting_world();
    world.set_preview_address(Some("http://preview.web.test"));
    let died = Arc::new(Notify::new());
    let (w, signal) = (world.clone(), died.clone());
    let engine = world
        .engine(config())
        .with_observer(Arc::new(move |e: &Event| {
            if matches!(
                e,
                Event::Previewed {
                    address: Some(_),
                    ..
                }
            ) {
                w.crash();
                signal.notify_one();
            }
        }));
    let go = CancellationToken::new();
    tokio::select! {
        r = engine.stage(v2(), &go) => panic!("ended before the kill: {r:?}"),
        () = died.notified() => {}
    }
    drop(engine);
    world.revive();
    assert!(world.previewed().is_some());
    world.engine(config()).repair().await.unwrap();
    assert_eq!(world.previewed(), None);
    back_on_blue(&world);
}
