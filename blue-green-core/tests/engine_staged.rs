//! Staged deploys (`deploy --no-switch`, `promote`, `abort`) against the in-memory fakes on
//! tokio's paused clock: what each leaves, that both `promote` and `abort` are safe to run
//! twice, and that a kill at every step of each is repaired by the next command.

use std::sync::Arc;
use std::time::Duration;

use blue_green_core::testing::{FakeCall, FakeEngine, FakeWorld};
use blue_green_core::{
    AppName, CancellationToken, Color, Command, EngineConfig, Error, Event, InstanceState,
    KeepPrevious, Outcome, Release, Step,
};
use tokio::sync::Notify;

fn config() -> EngineConfig {
    let mut config = EngineConfig::new(AppName::new("web").unwrap());
    config.readiness.interval = Duration::from_millis(500);
    config.readiness.deadline = Duration::from_secs(5);
    config.switch.drain = Duration::from_secs(1);
    config.switch.stop_timeout = Duration::from_secs(2);
    config.switch.keep_previous = KeepPrevious::Stopped;
    config
}

fn engine(world: &FakeWorld) -> FakeEngine {
    world.engine(config()).with_hooks(Arc::new(world.hooks()))
}

fn hooks_run(world: &FakeWorld, from: usize) -> Vec<String> {
    world.calls()[from..]
        .iter()
        .filter(|c| c.call == FakeCall::Hook)
        .map(|c| c.detail.clone())
        .collect()
}

/// Blue v1 live, green v2 staged.
async fn staged_world() -> (FakeWorld, FakeEngine) {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine = engine(&world);
    let report = engine
        .stage(Release::new("v2").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.staged.color, Color::Green);
    assert_eq!(report.live, Some(Color::Blue));
    (world, engine)
}

#[tokio::test(start_paused = true)]
async fn a_staged_release_runs_ready_beside_the_live_one_and_status_shows_it() {
    let (world, engine) = staged_world().await;
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    let green = world.instances_of(Color::Green);
    assert_eq!(green.len(), 1);
    assert!(green[0].state.is_running() && green[0].ready);
    assert_eq!(world.count(FakeCall::RouteTo), 0);
    assert_eq!(
        hooks_run(&world, 0),
        ["pre_deploy, green", "pre_switch, green"]
    );
    let status = engine.status().await.unwrap();
    assert_eq!(status.live, Some(Color::Blue));
    let staged = status.staged.expect("status shows the staged color");
    assert_eq!(
        (staged.color, staged.release.id.as_str()),
        (Color::Green, "v2")
    );
    assert!(status.leftovers.is_empty(), "{:?}", status.leftovers);
    let record = world.history().pop().unwrap();
    assert_eq!(
        (record.command, record.outcome),
        (Command::Stage, Outcome::Succeeded)
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn promote_switches_to_the_staged_color_and_a_second_promote_changes_nothing() {
    let (world, engine) = staged_world().await;
    let calls = world.calls().len();
    let report = engine.promote(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.live.color, Color::Green);
    assert_eq!(report.previous, Some(Color::Blue));
    assert_eq!(world.routed_instance().unwrap().instance.release, "v2");
    // Readiness was checked again before the switch; blue was drained and stopped.
    let steps: Vec<Step> = report.steps.iter().map(|s| s.step).collect();
    assert!(
        steps.starts_with(&[Step::Reconcile, Step::Ready, Step::Switch]),
        "{steps:?}"
    );
    assert!(steps.contains(&Step::Drain) && steps.contains(&Step::Stop));
    assert!(!world.instances_of(Color::Blue)[0].state.is_running());
    assert_eq!(
        hooks_run(&world, calls),
        ["post_switch, green", "post_deploy, green"]
    );
    assert_eq!(world.saved_state().staged, None);
    assert_eq!(engine.status().await.unwrap().staged, None);

    let history = world.history().len();
    let calls = world.calls().len();
    let again = engine.promote(&CancellationToken::new()).await.unwrap();
    assert_eq!(again.live.color, Color::Green);
    assert!(again
        .warnings
        .iter()
        .any(|w| w.contains("nothing is staged")));
    assert_eq!(
        world.history().len(),
        history,
        "a no-op leaves no history line"
    );
    assert!(
        !world.calls()[calls..].iter().any(|c| matches!(
            c.call,
            FakeCall::RouteTo | FakeCall::Stop | FakeCall::Remove | FakeCall::Start
        )),
        "a second promote changed something: {:?}",
        &world.calls()[calls..]
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn abort_removes_the_staged_color_and_a_second_abort_changes_nothing() {
    let (world, engine) = staged_world().await;
    let report = engine.abort().await.unwrap();
    assert_eq!(report.removed.len(), 1);
    assert!(world.instances_of(Color::Green).is_empty());
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert_eq!(world.saved_state().staged, None);
    assert_eq!(world.history().pop().unwrap().command, Command::Abort);

    let history = world.history().len();
    let again = engine.abort().await.unwrap();
    assert!(again.removed.is_empty());
    assert!(again
        .warnings
        .iter()
        .any(|w| w.contains("nothing is staged")));
    assert_eq!(world.history().len(), history);
    // And promote has nothing to promote now.
    let promoted = engine.promote(&CancellationToken::new()).await.unwrap();
    assert_eq!(promoted.live.color, Color::Blue);
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_promote_whose_staged_color_died_fails_and_leaves_it_staged_for_abort() {
    let (world, engine) = staged_world().await;
    let green = world.instances_of(Color::Green)[0].instance.id.clone();
    world.set_instance_state(
        &green,
        InstanceState::Exited {
            code: Some(137),
            reason: None,
        },
    );
    let err = engine.promote(&CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.exit_class().code(), 1, "{err}");
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert_eq!(world.count(FakeCall::RouteTo), 0);
    assert!(world.saved_state().staged.is_some());
    // A staged color that died is no longer shown as staged, and abort still cleans it up.
    assert_eq!(engine.status().await.unwrap().staged, None);
    world.check_invariants().unwrap();
    let calls = world.calls().len();
    engine
        .down(
            blue_green_core::DownTarget::Idle,
            blue_green_core::IfLive::Refuse,
        )
        .await
        .unwrap();
    assert!(world.calls()[calls..]
        .iter()
        .any(|c| c.call == FakeCall::Remove));
    assert_eq!(world.saved_state().staged, None);
}

#[tokio::test(start_paused = true)]
async fn a_failed_readiness_recheck_leaves_the_router_and_the_staged_color() {
    let (world, engine) = staged_world().await;
    world.never_healthy("v2");
    let err = engine.promote(&CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::NotReady { .. }), "{err:?}");
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert_eq!(world.instances_of(Color::Green).len(), 1);
    assert!(engine.status().await.unwrap().staged.is_some());
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn promote_with_nothing_staged_or_live_is_a_usage_error() {
    let world = FakeWorld::new();
    let engine = engine(&world);
    let err = engine.promote(&CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.exit_class().code(), 2, "{err}");
    assert!(world.history().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_deploy_replaces_what_was_staged() {
    let (world, engine) = staged_world().await;
    let report = engine
        .deploy(Release::new("v3").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("v2 staged")),
        "{:?}",
        report.warnings
    );
    assert_eq!(world.routed_instance().unwrap().instance.release, "v3");
    assert_eq!(world.saved_state().staged, None);
    world.check_invariants().unwrap();
}

// --- kills -------------------------------------------------------------------------------

/// Runs `command` on an engine whose process "dies" as `step` starts; returns whether it died.
async fn kill_at<F, Fut, T>(world: &FakeWorld, step: Step, command: F) -> bool
where
    F: FnOnce(FakeEngine) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let died = Arc::new(Notify::new());
    let (w, signal) = (world.clone(), died.clone());
    let engine = engine(world).with_observer(Arc::new(move |e: &Event| {
        if matches!(e, Event::StepStarted { step: s, .. } if *s == step) {
            w.crash();
            signal.notify_one();
        }
    }));
    let killed = tokio::select! {
        _ = command(engine) => false,
        () = died.notified() => true,
    };
    world.revive();
    killed
}

#[tokio::test(start_paused = true)]
async fn a_kill_at_any_step_of_promote_is_repaired_by_the_next_command() {
    for step in [
        Step::Ready,
        Step::Switch,
        Step::Verify,
        Step::PostSwitch,
        Step::Drain,
        Step::Stop,
        Step::Record,
        Step::PostDeploy,
    ] {
        let (world, engine) = staged_world().await;
        let killed = kill_at(&world, step, |e| async move {
            e.promote(&CancellationToken::new()).await
        })
        .await;
        assert!(killed, "promote never reached {step}");
        world.check_invariants().unwrap();
        let status = engine.status().await.unwrap();
        if matches!(step, Step::Ready | Step::Switch) {
            assert_eq!(status.live, Some(Color::Blue), "at {step}");
            assert!(
                status.staged.is_some(),
                "green is still staged after a kill at {step}"
            );
        } else {
            assert_eq!(status.live, Some(Color::Green), "at {step}");
        }
        if step != Step::PostDeploy {
            assert!(
                status
                    .leftovers
                    .iter()
                    .any(|l| l.found.contains("interrupted `promote`")),
                "at {step}: {:?}",
                status.leftovers
            );
        }
        // The next promote repairs, and either finishes (the switch was not made: green is
        // still staged) or finds nothing left to do.
        let report = engine
            .promote(&CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("promote after a kill at {step}: {e}"));
        assert_eq!(report.live.color, Color::Green, "at {step}");
        assert_eq!(world.routed_instance().unwrap().instance.release, "v2");
        assert_eq!(world.saved_state().journal, None, "at {step}");
        assert_eq!(world.saved_state().staged, None, "at {step}");
        let status = engine.status().await.unwrap();
        assert!(
            status.leftovers.is_empty(),
            "at {step}: {:?}",
            status.leftovers
        );
        assert_eq!(status.staged, None);
        world.check_invariants().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_kill_during_abort_is_finished_by_the_next_abort() {
    for step in [Step::Stop, Step::Remove] {
        let (world, engine) = staged_world().await;
        assert!(kill_at(&world, step, |e| async move { e.abort().await }).await);
        engine.abort().await.unwrap();
        assert!(world.instances_of(Color::Green).is_empty(), "at {step}");
        assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
        let status = engine.status().await.unwrap();
        assert!(status.leftovers.is_empty() && status.staged.is_none());
        assert_eq!(world.saved_state().staged, None, "at {step}");
        world.check_invariants().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_kill_while_staging_is_undone_by_the_next_command() {
    for step in [
        Step::PreDeploy,
        Step::Start,
        Step::Ready,
        Step::PreSwitch,
        Step::Record,
    ] {
        let world = FakeWorld::new();
        world.seed_live(Color::Blue, "v1");
        let engine = engine(&world);
        assert!(
            kill_at(&world, step, |e| async move {
                e.stage(Release::new("v2").unwrap(), &CancellationToken::new())
                    .await
            })
            .await
        );
        let repaired = engine.repair().await.unwrap();
        assert!(!repaired.repaired.is_empty(), "at {step}");
        assert!(world.instances_of(Color::Green).is_empty(), "at {step}");
        assert_eq!(engine.status().await.unwrap().staged, None);
        world.check_invariants().unwrap();
    }
}
