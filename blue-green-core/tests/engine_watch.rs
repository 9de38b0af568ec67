//! The watch after the switch (`SwitchPolicy::watch`) against the in-memory fakes on tokio's
//! paused clock: it keeps the old color running while it probes the new one, routes back when
//! the new one fails, keeps the new one live when interrupted, and a kill during it is
//! repaired by the next command.

use std::sync::Arc;
use std::time::Duration;

use blue_green_core::testing::{FakeCall, FakeEngine, FakeWorld};
use blue_green_core::{
    AppName, CancellationToken, Color, EngineConfig, Error, Event, KeepPrevious, Release, Step,
};
use tokio::sync::Notify;

fn config() -> EngineConfig {
    let mut config = EngineConfig::new(AppName::new("web").unwrap());
    config.readiness.interval = Duration::from_millis(500);
    config.readiness.deadline = Duration::from_secs(5);
    config.switch.drain = Duration::from_secs(1);
    config.switch.stop_timeout = Duration::from_secs(2);
    config.switch.keep_previous = KeepPrevious::Stopped;
    config.switch.watch = Duration::from_secs(10);
    config.switch.watch_failures = 2;
    config
}

fn steps_started(events: &[Event]) -> Vec<Step> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step, .. } => Some(*step),
            _ => None,
        })
        .collect()
}

fn recording(world: &FakeWorld) -> (FakeEngine, Arc<std::sync::Mutex<Vec<Event>>>) {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let engine = world
        .engine(config())
        .with_observer(Arc::new(move |e: &Event| {
            sink.lock().unwrap().push(e.clone())
        }));
    (engine, events)
}

fn blue_stopped(world: &FakeWorld) -> bool {
    world
        .calls()
        .iter()
        .any(|c| c.call == FakeCall::Stop && c.detail.starts_with("blue"))
}

#[tokio::test(start_paused = true)]
async fn a_healthy_new_color_is_watched_for_the_whole_time_before_the_old_one_is_drained() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, events) = recording(&world);
    let began = tokio::time::Instant::now();
    let report = engine
        .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Green);
    assert!(
        began.elapsed() >= Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let steps = steps_started(&events.lock().unwrap());
    let at = |s: Step| steps.iter().position(|x| *x == s).unwrap();
    assert!(at(Step::Verify) < at(Step::Watch) && at(Step::Watch) < at(Step::Drain));
    // One probe for readiness, then one every interval through the watch.
    assert!(
        world.count(FakeCall::Check) >= 20,
        "{}",
        world.count(FakeCall::Check)
    );
    assert!(blue_stopped(&world));
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_new_color_failing_during_the_watch_is_routed_back_and_removed() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = recording(&world);
    // Readiness answers healthy (check 1); the 4th and 5th checks, in the watch, fail.
    world.fail_nth(FakeCall::Check, 4);
    world.fail_nth(FakeCall::Check, 5);
    let err = engine
        .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Step {
                step: Step::Watch,
                color: Color::Green,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.exit_class().code(), 1);
    assert!(err.to_string().contains("2 probes in a row"), "{err}");
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert!(world.instances_of(Color::Green).is_empty());
    assert!(!blue_stopped(&world), "blue kept running through the watch");
    assert_eq!(world.saved_state().live.unwrap().color, Color::Blue);
    // Routed to green, then back to blue.
    assert_eq!(world.count(FakeCall::RouteTo), 2);
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_failed_probe_in_the_watch_is_not_enough() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = recording(&world);
    world.fail_nth(FakeCall::Check, 4);
    world.fail_nth(FakeCall::Check, 6);
    let report = engine
        .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Green);
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_during_the_watch_keeps_the_new_color_live() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let engine = world
        .engine(config())
        .with_observer(Arc::new(move |e: &Event| {
            if matches!(
                e,
                Event::StepStarted {
                    step: Step::Watch,
                    ..
                }
            ) {
                trigger.cancel();
            }
        }));
    let report = engine
        .deploy(Release::new("v2").unwrap(), &cancel)
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Green);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("ended by an interrupt")),
        "{:?}",
        report.warnings
    );
    assert_eq!(world.routed_instance().unwrap().instance.release, "v2");
    assert!(blue_stopped(&world), "blue is retired as usual");
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_kill_during_the_watch_records_the_new_color_and_drains_the_old_one_first() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let died = Arc::new(Notify::new());
    let (w, signal) = (world.clone(), died.clone());
    let engine = world
        .engine(config())
        .with_observer(Arc::new(move |e: &Event| {
            if matches!(
                e,
                Event::StepStarted {
                    step: Step::Watch,
                    ..
                }
            ) {
                w.crash();
                signal.notify_one();
            }
        }));
    let go = CancellationToken::new();
    tokio::select! {
        r = engine.deploy(Release::new("v2").unwrap(), &go) => {
            panic!("the deploy ended before the kill: {r:?}")
        }
        () = died.notified() => {}
    }
    drop(engine);
    world.revive();
    assert_eq!(
        world.saved_state().journal.map(|j| j.step),
        Some(Step::Watch)
    );
    let engine = world.engine(config());
    let before = world.calls().len();
    let report = engine.repair().await.unwrap();
    assert_eq!(report.live, Some(Color::Green));
    let after: Vec<FakeCall> = world.calls()[before..].iter().map(|c| c.call).collect();
    assert!(
        after.contains(&FakeCall::InFlight),
        "blue is drained: {after:?}"
    );
    assert!(engine.status().await.unwrap().leftovers.is_empty());
    world.check_invariants().unwrap();
}
