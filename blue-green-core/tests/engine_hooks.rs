//! The deploy hooks (`pre_deploy`, `pre_switch`, `post_switch`, `post_deploy`, `on_failure`)
//! against the in-memory fakes on tokio's paused clock: when each runs, what it is told, what
//! its failure does to the deploy, and what the events and the history keep of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::async_trait;
use blue_green_core::testing::{FakeCall, FakeEngine, FakeWorld, Fault};
use blue_green_core::{
    AppName, CancellationToken, Color, ComponentError, EngineConfig, Error, Event, HookContext,
    HookOutput, HookPoint, Hooks, Outcome, Release, Step,
};

fn config(rollback_on_post_switch_failure: bool) -> EngineConfig {
    let mut config = EngineConfig::new(AppName::new("web").unwrap());
    config.readiness.interval = Duration::from_millis(500);
    config.readiness.deadline = Duration::from_secs(5);
    config.switch.drain = Duration::from_secs(1);
    config.switch.stop_timeout = Duration::from_secs(2);
    config.switch.rollback_on_post_switch_failure = rollback_on_post_switch_failure;
    config
}

/// An engine over `world` with a fake hook at every point, and the events it emitted.
fn engine(world: &FakeWorld, rollback: bool) -> (FakeEngine, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let engine = world
        .engine(config(rollback))
        .with_hooks(Arc::new(world.hooks()))
        .with_observer(Arc::new(move |e: &Event| {
            sink.lock().unwrap().push(e.clone())
        }));
    (engine, events)
}

/// The hooks that ran, in order, as the fake world saw them.
fn hooks_run(world: &FakeWorld) -> Vec<String> {
    world
        .calls()
        .into_iter()
        .filter(|c| c.call == FakeCall::Hook)
        .map(|c| c.detail)
        .collect()
}

async fn deploy(engine: &FakeEngine, release: &str) -> Result<Color, Error> {
    engine
        .deploy(Release::new(release).unwrap(), &CancellationToken::new())
        .await
        .map(|r| r.live.color)
}

/// The `n`th hook call from now (counting every hook that runs) fails: 1 is `pre_deploy`,
/// 2 `pre_switch`, 3 `post_switch`, 4 `post_deploy`.
fn fail_hook(world: &FakeWorld, n: u32) {
    world.fail_nth(FakeCall::Hook, n);
}

#[tokio::test(start_paused = true)]
async fn a_deploy_runs_its_hooks_in_order_and_records_them() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, events) = engine(&world, false);
    assert_eq!(deploy(&engine, "v2").await.unwrap(), Color::Green);
    assert_eq!(
        hooks_run(&world),
        [
            "pre_deploy, green",
            "pre_switch, green",
            "post_switch, green",
            "post_deploy, green"
        ]
    );
    world.check_invariants().unwrap();

    // Each hook is a step, with its output in a HookFinished event.
    let events = events.lock().unwrap();
    let finished: Vec<(HookPoint, bool, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::HookFinished {
                hook,
                success,
                output,
                ..
            } => Some((*hook, *success, output.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 4);
    assert_eq!(
        finished[1],
        (HookPoint::PreSwitch, true, "pre_switch ran\n".to_string())
    );
    let started: Vec<Step> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    let at = |s: Step| started.iter().position(|x| *x == s).unwrap();
    assert!(at(Step::PreDeploy) < at(Step::Start));
    assert!(at(Step::Ready) < at(Step::PreSwitch) && at(Step::PreSwitch) < at(Step::Switch));
    assert!(at(Step::Verify) < at(Step::PostSwitch) && at(Step::PostSwitch) < at(Step::Drain));
    assert!(at(Step::Record) < at(Step::PostDeploy));

    let record = world.history().pop().unwrap();
    assert_eq!(record.outcome, Outcome::Succeeded);
    let hooks: Vec<(HookPoint, bool)> = record.hooks.iter().map(|h| (h.hook, h.success)).collect();
    assert_eq!(
        hooks,
        [
            (HookPoint::PreDeploy, true),
            (HookPoint::PreSwitch, true),
            (HookPoint::PostSwitch, true),
            (HookPoint::PostDeploy, true)
        ]
    );
    assert!(record
        .steps
        .iter()
        .any(|s| s.step == Step::PreSwitch && s.ok));
}

#[tokio::test(start_paused = true)]
async fn a_failing_pre_deploy_hook_starts_nothing_and_runs_on_failure() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = engine(&world, false);
    fail_hook(&world, 1);
    let err = deploy(&engine, "v2").await.unwrap_err();
    assert_eq!(err.exit_class().code(), 1, "{err}");
    assert!(
        err.to_string()
            .contains("pre_deploy hook exited with code 1"),
        "{err}"
    );
    assert_eq!(world.count(FakeCall::Start), 0);
    assert!(world.instances_of(Color::Green).is_empty());
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert_eq!(
        hooks_run(&world),
        ["pre_deploy, green", "on_failure, green"]
    );
    assert_eq!(world.saved_state().journal, None);
    let record = world.history().pop().unwrap();
    assert_eq!(record.outcome, Outcome::Failed);
    assert_eq!(
        record
            .hooks
            .iter()
            .map(|h| (h.hook, h.success, h.status.as_str()))
            .collect::<Vec<_>>(),
        [
            (HookPoint::PreDeploy, false, "exited with code 1"),
            (HookPoint::OnFailure, true, "exited with code 0")
        ]
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_pre_switch_hook_removes_the_new_color_and_leaves_the_router() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = engine(&world, false);
    fail_hook(&world, 2);
    let err = deploy(&engine, "v2").await.unwrap_err();
    assert_eq!(err.exit_class().code(), 1, "{err}");
    assert!(
        matches!(
            &err,
            Error::Step {
                step: Step::PreSwitch,
                color: Color::Green,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(world.count(FakeCall::RouteTo), 0);
    assert!(world.instances_of(Color::Green).is_empty());
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert_eq!(hooks_run(&world).last().unwrap(), "on_failure, green");
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_post_switch_hook_is_a_warning_unless_rollback_is_asked_for() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = engine(&world, false);
    fail_hook(&world, 3);
    let report = engine
        .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Green);
    assert!(
        report.warnings.iter().any(
            |w| w.contains("post_switch hook") && w.contains("rollback_on_post_switch_failure")
        ),
        "{:?}",
        report.warnings
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_post_switch_hook_routes_back_when_asked() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = engine(&world, true);
    fail_hook(&world, 3);
    let err = deploy(&engine, "v2").await.unwrap_err();
    assert_eq!(err.exit_class().code(), 1, "{err}");
    assert!(
        matches!(
            &err,
            Error::Step {
                step: Step::PostSwitch,
                ..
            }
        ),
        "{err:?}"
    );
    // Routed to green, then back to blue, which was never stopped.
    let routes: Vec<String> = world
        .calls()
        .into_iter()
        .filter(|c| c.call == FakeCall::RouteTo)
        .map(|c| c.detail)
        .collect();
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert!(
        !world
            .calls()
            .iter()
            .any(|c| c.call == FakeCall::Stop && c.detail.starts_with("blue")),
        "blue was stopped: {:?}",
        world.calls()
    );
    assert!(world.instances_of(Color::Green).is_empty());
    assert_eq!(world.saved_state().live.unwrap().color, Color::Blue);
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_post_switch_hook_of_a_first_deploy_keeps_it_live() {
    let world = FakeWorld::new();
    let (engine, _) = engine(&world, true);
    fail_hook(&world, 3);
    let report = engine
        .deploy(Release::new("v1").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Blue);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no color before it")),
        "{:?}",
        report.warnings
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_post_deploy_or_on_failure_hook_only_warns() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = engine(&world, false);
    fail_hook(&world, 4);
    let report = engine
        .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("post_deploy hook")));

    // A failed deploy whose on_failure hook fails too still fails with its own error.
    world.never_healthy("v3");
    fail_hook(&world, 2); // pre_deploy succeeds, on_failure fails
    let err = deploy(&engine, "v3").await.unwrap_err();
    assert!(matches!(&err, Error::NotReady { .. }), "{err:?}");
    let record = world.history().pop().unwrap();
    assert!(
        record
            .warnings
            .iter()
            .any(|w| w.contains("on_failure hook")),
        "{:?}",
        record.warnings
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_hangs_is_cut_off_and_fails_the_deploy() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let (engine, _) = engine(&world, false);
    world.fault_nth(FakeCall::Hook, 2, Fault::Hang);
    let began = tokio::time::Instant::now();
    let err = deploy(&engine, "v2").await.unwrap_err();
    assert!(err.to_string().contains("pre_switch hook"), "{err}");
    assert_eq!(err.exit_class().code(), 1, "{err}");
    assert!(began.elapsed() < Duration::from_secs(60));
    assert!(world.instances_of(Color::Green).is_empty());
    world.check_invariants().unwrap();
}

/// Hooks that keep what they were told.
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<(HookPoint, HookContext)>>,
}

#[async_trait]
impl Hooks for Recording {
    fn timeout(&self, _point: HookPoint) -> Option<Duration> {
        Some(Duration::from_secs(5))
    }

    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
    ) -> Result<HookOutput, ComponentError> {
        self.seen.lock().unwrap().push((point, context.clone()));
        Ok(HookOutput::new(true, "exited with code 0", ""))
    }
}

#[tokio::test(start_paused = true)]
async fn hooks_are_told_the_release_the_colors_and_the_endpoint_once_known() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let hooks = Arc::new(Recording::default());
    let engine = world.engine(config(false)).with_hooks(hooks.clone());
    deploy(&engine, "v2").await.unwrap();
    let seen = hooks.seen.lock().unwrap().clone();
    let green = world.instances_of(Color::Green).pop().unwrap().instance;
    for (point, context) in seen.iter() {
        assert_eq!(context.app.as_str(), "web");
        assert_eq!(context.color, Color::Green);
        assert_eq!(context.release, "v2");
        assert_eq!(context.previous_color, Some(Color::Blue));
        assert_eq!(context.previous_release.as_deref(), Some("v1"));
        let expect = (*point != HookPoint::PreDeploy).then(|| green.endpoint.clone());
        assert_eq!(context.endpoint, expect, "at {point}");
    }
    assert_eq!(seen.len(), 4);

    // Rollback and switch run no hooks.
    engine.rollback(&CancellationToken::new()).await.unwrap();
    assert_eq!(hooks.seen.lock().unwrap().len(), 4);
}
