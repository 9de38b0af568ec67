//! The engine's invariants (DESIGN.md) under injected failures and crashes, with the in-memory
//! fakes of the `testing` feature on tokio's paused clock:
//!
//! - a property test runs random sequences of deploy / stage (`deploy --no-switch`) / promote /
//!   abort / rollback / switch / down / status / repair, with a failure or a hang injected at a random call of the runtime, probe, router,
//!   store or a deploy hook (every hook point is configured, `rollback_on_post_switch_failure`
//!   either way, with or without a watch after the switch, with or without a gradual shift
//!   (`[switch] steps`, with a router that can split or one that cannot), with or without a
//!   share of errors counted by the router), and checks the invariants after every command:
//!   neither endpoint of a split is ever unready or stopped, and a failed command leaves no
//!   split; and that `status` never changes anything, whatever it hits;
//! - crash-recovery tests "kill the process" right after each journaled step (every call hangs
//!   from then on and the command's future is dropped), then check that `status` reports what
//!   was left without touching it, and that `repair` (or the next command) finds a consistent
//!   state and repairs it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::testing::{
    FakeCall, FakeProbe, FakeRouter, FakeRuntime, FakeStore, FakeWorld, Fault,
};
use blue_green_core::{
    AppName, AppState, CancellationToken, Color, ComponentErrorKind, DownTarget, Endpoint, Engine,
    EngineConfig, Error, ErrorRate, Event, IfLive, InstanceState, KeepPrevious, Outcome, Release,
    Responses, Status, Step,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tokio::sync::Notify;

type FakeEngine = Engine<FakeRuntime, FakeProbe, FakeRouter, FakeStore>;

/// How the switch goes, besides what is kept: `rollback_on_post_switch_failure`, a watch after
/// the switch, a gradual shift, and the watch's share of errors.
#[derive(Debug, Clone, Copy, Default)]
struct Switching {
    rollback: bool,
    watch: bool,
    steps: bool,
    error_rate: bool,
}

fn config(keep: KeepPrevious, how: Switching) -> EngineConfig {
    let mut config = EngineConfig::new(AppName::new("web").unwrap());
    config.readiness.interval = Duration::from_millis(500);
    config.readiness.timeout = Duration::from_secs(1);
    config.readiness.deadline = Duration::from_secs(5);
    config.switch.drain = Duration::from_secs(1);
    config.switch.stop_timeout = Duration::from_secs(2);
    config.switch.keep_previous = keep;
    config.switch.rollback_on_post_switch_failure = how.rollback;
    if how.watch {
        config.switch.watch = Duration::from_secs(2);
    }
    if how.steps {
        config.switch.steps = Some("10,50,100".parse().unwrap());
        config.switch.step_wait = Duration::from_secs(1);
    }
    if how.error_rate {
        config.switch.watch_max_error_rate = Some(ErrorRate::new(0.25).unwrap());
        config.switch.watch_min_requests = 4;
    }
    config
}

/// An engine over `world` with a hook at every point (a deploy runs them; faults hit them as
/// any other call).
fn engine(world: &FakeWorld, keep: KeepPrevious) -> FakeEngine {
    engine_with(world, keep, Switching::default())
}

fn engine_with(world: &FakeWorld, keep: KeepPrevious, how: Switching) -> FakeEngine {
    Engine::new(
        config(keep, how),
        world.runtime(),
        world.probe(),
        world.router(),
        world.store(),
    )
    .with_hooks(Arc::new(world.hooks()))
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// The running instances, by id.
fn running(world: &FakeWorld) -> BTreeSet<String> {
    world
        .instances()
        .into_iter()
        .filter(|i| i.state.is_running())
        .map(|i| i.instance.id)
        .collect()
}

/// The routed instance's id, if one answers at the router's target.
fn routed_id(world: &FakeWorld) -> Option<String> {
    world.routed_instance().map(|i| i.instance.id)
}

/// Everything a command can change: the instances (with their state and readiness), the
/// router's target, the saved state, the history and the lock.
#[derive(Debug, PartialEq)]
struct Snapshot {
    instances: Vec<(String, InstanceState, bool)>,
    target: Option<Endpoint>,
    state: AppState,
    history: usize,
    lock_held: bool,
}

fn snapshot(world: &FakeWorld) -> Snapshot {
    Snapshot {
        instances: world
            .instances()
            .into_iter()
            .map(|i| (i.instance.id, i.state, i.ready))
            .collect(),
        target: world.router_target(),
        state: world.saved_state(),
        history: world.history().len(),
        lock_held: world.lock_holder().is_some(),
    }
}

/// The calls that change something; `status` must make none of them.
const WRITES: [FakeCall; 9] = [
    FakeCall::Start,
    FakeCall::Stop,
    FakeCall::Restart,
    FakeCall::Remove,
    FakeCall::RouteTo,
    FakeCall::Split,
    FakeCall::Preview,
    FakeCall::Save,
    FakeCall::AppendHistory,
];

/// The calls made since the `from`th that change something.
fn writes_since(world: &FakeWorld, from: usize) -> Vec<String> {
    world.calls()[from..]
        .iter()
        .filter(|c| WRITES.contains(&c.call))
        .map(|c| c.to_string())
        .collect()
}

/// Runs `status` and checks that it changed nothing: no write call, the same instances, router
/// target, saved state and history. Returns its answer.
async fn status_only_reads(engine: &FakeEngine, world: &FakeWorld) -> Result<Status, String> {
    let before = snapshot(world);
    let calls = world.calls().len();
    let status = engine.status().await;
    let writes = writes_since(world, calls);
    if !writes.is_empty() {
        return Err(format!("status made calls that change things: {writes:?}"));
    }
    let after = snapshot(world);
    if after != before {
        return Err(format!(
            "status changed the world:\nbefore {before:?}\nafter  {after:?}"
        ));
    }
    status.map_err(|e| format!("status failed: {e}"))
}

// --- property test ------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Deploy,
    Stage,
    Promote,
    Abort,
    Rollback,
    Switch(Color),
    Down,
    Status,
    Repair,
}

#[derive(Debug, Clone)]
struct Injected {
    call: FakeCall,
    nth: u32,
    fault: Fault,
}

/// Besides a fault: the command may be cancelled (Ctrl-C) or its process killed when a step
/// starts.
#[derive(Debug, Clone, Copy)]
enum Interrupt {
    None,
    Cancel(Step),
    Crash(Step),
}

fn interrupt() -> impl Strategy<Value = Interrupt> {
    let step = proptest::sample::select(vec![
        Step::Clear,
        Step::Start,
        Step::Ready,
        Step::Switch,
        Step::Verify,
        Step::Drain,
        Step::Stop,
        Step::Remove,
        Step::Restore,
        Step::Record,
        Step::PreDeploy,
        Step::PreSwitch,
        Step::PostSwitch,
        Step::PostDeploy,
        Step::OnFailure,
        Step::Watch,
        Step::Shift,
        Step::Preview,
    ]);
    prop_oneof![
        6 => Just(Interrupt::None),
        2 => step.clone().prop_map(Interrupt::Cancel),
        2 => step.prop_map(Interrupt::Crash),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Deploy),
        2 => Just(Op::Stage),
        2 => Just(Op::Promote),
        1 => Just(Op::Abort),
        2 => Just(Op::Rollback),
        1 => prop_oneof![Just(Color::Blue), Just(Color::Green)].prop_map(Op::Switch),
        1 => Just(Op::Down),
        1 => Just(Op::Status),
        1 => Just(Op::Repair),
    ]
}

fn injected() -> impl Strategy<Value = Option<Injected>> {
    let fault = prop_oneof![
        6 => Just(Fault::Fail(ComponentErrorKind::Failed)),
        1 => Just(Fault::Fail(ComponentErrorKind::Unreachable)),
        2 => Just(Fault::Hang),
    ];
    proptest::option::weighted(
        0.7,
        (
            proptest::sample::select(FakeCall::ALL.to_vec()),
            1u32..4,
            fault,
        )
            .prop_map(|(call, nth, fault)| Injected { call, nth, fault }),
    )
}

fn keep() -> impl Strategy<Value = KeepPrevious> {
    prop_oneof![
        Just(KeepPrevious::Running),
        Just(KeepPrevious::Stopped),
        Just(KeepPrevious::Removed)
    ]
}

/// How a command ended: `Ok(Some(color))` when it made `color` live; `None` when its process
/// was "killed".
type Ended = Option<Result<Option<Color>, Error>>;

/// Runs one command on a fresh engine over `world`, cancelling it or killing it at the start of
/// the step `interrupt` names.
async fn run(
    world: &FakeWorld,
    (keep, how): (KeepPrevious, Switching),
    op: &Op,
    n: usize,
    interrupt: Interrupt,
) -> Ended {
    let cancel = CancellationToken::new();
    let died = Arc::new(Notify::new());
    let (trigger, w, signal) = (cancel.clone(), world.clone(), died.clone());
    let engine = engine_with(world, keep, how).with_observer(Arc::new(move |e: &Event| {
        if let Event::StepStarted { step, .. } = e {
            match interrupt {
                Interrupt::Cancel(at) if at == *step => trigger.cancel(),
                Interrupt::Crash(at) if at == *step => {
                    w.crash();
                    signal.notify_one();
                }
                _ => {}
            }
        }
    }));
    let command = async {
        match op {
            Op::Deploy => engine
                .deploy(Release::new(format!("v{n}")).unwrap(), &cancel)
                .await
                .map(|r| Some(r.live.color)),
            Op::Stage => engine
                .stage(Release::new(format!("v{n}")).unwrap(), &cancel)
                .await
                .map(|_| None),
            Op::Promote => engine.promote(&cancel).await.map(|r| Some(r.live.color)),
            Op::Abort => engine.abort().await.map(|_| None),
            Op::Rollback => engine.rollback(&cancel).await.map(|r| Some(r.live.color)),
            Op::Switch(color) => engine
                .switch(*color, &cancel)
                .await
                .map(|r| Some(r.live.color)),
            Op::Down => engine
                .down(DownTarget::Idle, IfLive::Refuse)
                .await
                .map(|_| None),
            Op::Status => engine.status().await.map(|_| None),
            Op::Repair => engine.repair().await.map(|r| r.live),
        }
    };
    tokio::select! {
        result = command => Some(result),
        () = died.notified() => None,
    }
}

async fn check_sequence(
    seeded: bool,
    (keep, how, can_split): (KeepPrevious, Switching, bool),
    ops: Vec<(Op, Option<Injected>, Interrupt)>,
    seen: &Mutex<Seen>,
) -> Result<(), TestCaseError> {
    let world = FakeWorld::new();
    if seeded {
        world.seed_live(Color::Blue, "v0");
    }
    world.set_can_split(can_split);
    world.set_preview_address(can_split.then_some("http://preview.web.test"));
    // Every third release answers only errors: with the share of errors watched, it fails
    // its watch (or its first step) on the router's counts alone.
    for n in 0..=8u64 {
        let errors = if n % 3 == 2 { 4 } else { 0 };
        world.count_responses(&format!("v{n}"), Responses { total: 4, errors });
    }
    let engine = engine_with(&world, keep, how);
    for (n, (op, fault, interrupt)) in ops.iter().enumerate() {
        let target_before = world.router_target();
        let routed_before = routed_id(&world);
        let running_before = running(&world);
        let snapshot_before = snapshot(&world);
        let calls_before = world.calls().len();
        if let Some(f) = fault {
            world.fault_nth(f.call, f.nth, f.fault);
        }

        let ended = run(&world, (keep, how), op, n + 1, *interrupt).await;
        world.revive();
        if let Op::Status = op {
            // Reads do not write, whatever fault it hit.
            let writes = writes_since(&world, calls_before);
            prop_assert!(writes.is_empty(), "status wrote: {:?}", writes);
            prop_assert_eq!(
                &snapshot(&world),
                &snapshot_before,
                "status changed the world"
            );
        }
        {
            let mut seen = seen.lock().unwrap();
            seen.commands += 1;
            match &ended {
                None => seen.killed += 1,
                Some(Ok(_)) => seen.succeeded += 1,
                Some(Err(Error::Inconsistent { .. })) => seen.inconsistent += 1,
                Some(Err(Error::Cancelled { .. })) => seen.cancelled += 1,
                Some(Err(_)) => seen.failed += 1,
            }
        }

        let context = format!(
            "command {n} {op:?} with {fault:?}, {interrupt:?} -> {ended:?}\ncalls: {:?}",
            world
                .calls()
                .iter()
                .rev()
                .take(30)
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
        );
        // The router only points at a running instance that passed a probe; the engine never
        // stopped or removed what the router points at; nothing was routed to an unready one.
        if let Err(broken) = world.check_invariants() {
            return Err(TestCaseError::fail(format!("{broken}\n{context}")));
        }
        prop_assert!(
            world.lock_holder().is_none(),
            "lock still held after {context}"
        );
        let Some(result) = ended else {
            // Killed mid-command: status must report what it left, and change nothing; repair
            // must repair it.
            let status = status_only_reads(&engine, &world)
                .await
                .map_err(|e| TestCaseError::fail(format!("after a kill: {e}\n{context}")))?;
            if world.saved_state().journal.is_some() {
                prop_assert!(
                    status
                        .leftovers
                        .iter()
                        .any(|l| l.found.contains("interrupted")),
                    "status did not report the leftovers of the killed command: {:?}\n{}",
                    status,
                    context
                );
            }
            if let Err(e) = engine.repair().await {
                return Err(TestCaseError::fail(format!(
                    "repair after a kill failed: {e}\n{context}"
                )));
            }
            if let Err(broken) = world.check_invariants() {
                return Err(TestCaseError::fail(format!(
                    "after the repair: {broken}\n{context}"
                )));
            }
            prop_assert_eq!(world.saved_state().journal, None, "{}", context);
            prop_assert_eq!(
                world.split(),
                None,
                "a split is left after the repair: {}",
                context
            );
            continue;
        };
        if !matches!(result, Err(Error::Inconsistent { .. })) {
            // A command that ended, well or not, leaves no split: a half-shifted app is not a
            // state to leave behind.
            prop_assert_eq!(world.split(), None, "a split is left: {}", context);
        }
        let faulted = world.calls()[calls_before..].iter().any(|c| c.faulted);
        if let (Some(previewed), false) = (world.previewed(), faulted) {
            // Without a fault (a failed end of a preview is only a warning), the router
            // previews nothing but the staged color of the saved state (whose instance may
            // have stopped since: the staged record is a hint, and so is its preview).
            let staged = world
                .saved_state()
                .staged
                .is_some_and(|s| s.endpoint == previewed);
            prop_assert!(
                staged,
                "the router previews {}, which is not staged: {}",
                previewed,
                context
            );
        }
        match &result {
            Ok(Some(color)) => {
                let routed = world.routed_instance();
                prop_assert_eq!(
                    routed.map(|i| i.instance.color),
                    Some(*color),
                    "{}",
                    context
                );
            }
            Ok(None) => {}
            Err(Error::Inconsistent { left, cause, .. }) => {
                // With one fault, the restore itself cannot fail; the ways left are a router
                // that had no target before (it cannot be pointed back at nothing), and a
                // cancel (or a release failing on the router's counts of its errors, which
                // are no fault) followed by the fault hitting the restore.
                prop_assert!(!left.0.is_empty(), "{}", context);
                // A repair is inconsistent when the fault hit one of its own actions: what it
                // could not repair is what it names.
                prop_assert!(
                    target_before.is_none()
                        || matches!(interrupt, Interrupt::Cancel(_))
                        || cause.to_string().contains("watch_max_error_rate")
                        || matches!(op, Op::Repair),
                    "inconsistent after one fault: {}",
                    context
                );
            }
            Err(_) => {
                // A failed command changed nothing that was serving, and left nothing new
                // running.
                prop_assert_eq!(&world.router_target(), &target_before, "{}", context);
                prop_assert_eq!(&routed_id(&world), &routed_before, "{}", context);
                let now = running(&world);
                prop_assert!(
                    now.is_subset(&running_before),
                    "new instances left running: {:?} (before {:?})\n{}",
                    now,
                    running_before,
                    context
                );
            }
        }
        // Without faults, status reports the live color as the router says and changes
        // nothing; when it lists no leftovers, a repair has nothing to do; after the repair the
        // saved live color is the routed one, no journal is left, and status lists nothing.
        let status = status_only_reads(&engine, &world)
            .await
            .map_err(|e| TestCaseError::fail(format!("{e}\n{context}")))?;
        prop_assert_eq!(
            status.live,
            world.routed_instance().map(|i| i.instance.color),
            "{}",
            context
        );
        let before_repair = snapshot(&world);
        let repaired = match engine.repair().await {
            Ok(r) => r,
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "repair failed: {e}\n{context}"
                )))
            }
        };
        if status.leftovers.is_empty() {
            prop_assert_eq!(
                &snapshot(&world),
                &before_repair,
                "status listed no leftovers, but repair changed something: {:?}\n{}",
                repaired,
                context
            );
            prop_assert!(repaired.repaired.is_empty(), "{:?}\n{}", repaired, context);
        }
        let status = status_only_reads(&engine, &world)
            .await
            .map_err(|e| TestCaseError::fail(format!("after repair: {e}\n{context}")))?;
        prop_assert!(
            status.leftovers.is_empty(),
            "leftovers after a repair: {:?}\n{}",
            status.leftovers,
            context
        );
        let saved = world.saved_state();
        prop_assert_eq!(saved.journal.clone(), None, "{}", context);
        prop_assert_eq!(
            saved.live.as_ref().map(|d| d.color),
            world.routed_instance().map(|i| i.instance.color),
            "{}",
            context
        );
        prop_assert_eq!(
            status.live,
            world.routed_instance().map(|i| i.instance.color)
        );
        prop_assert_eq!(repaired.live, status.live, "{}", context);
        if let Err(broken) = world.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "after status and repair: {broken}\n{context}"
            )));
        }
    }
    let mut seen = seen.lock().unwrap();
    seen.faults_hit += world.calls().iter().filter(|c| c.faulted).count();
    seen.splits += world.count(FakeCall::Split);
    Ok(())
}

/// What the property test saw, printed at its end (`--nocapture`) to show that faults hit.
#[derive(Debug, Default)]
struct Seen {
    commands: usize,
    succeeded: usize,
    failed: usize,
    cancelled: usize,
    killed: usize,
    inconsistent: usize,
    faults_hit: usize,
    /// Splits of a gradual shift made.
    splits: u32,
}

#[test]
fn invariants_hold_under_injected_failures() {
    // 256 sequences; `PROPTEST_CASES=2048` runs more (proptest's default config reads it).
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => ProptestConfig::default().cases,
        None => 256,
    };
    let mut runner = TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    });
    let seen = Mutex::new(Seen::default());
    let switching = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(rollback, watch, steps, error_rate)| Switching {
            rollback,
            watch,
            steps,
            error_rate,
        },
    );
    let strategy = (
        any::<bool>(),
        (keep(), switching, proptest::bool::weighted(0.8)),
        proptest::collection::vec((op(), injected(), interrupt()), 1..8),
    );
    let result = runner.run(&strategy, |(seeded, setup, ops)| {
        paused_runtime().block_on(check_sequence(seeded, setup, ops, &seen))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!("{:?}", seen.lock().unwrap());
}

// --- crash recovery -----------------------------------------------------------------------

/// Runs a deploy of v2 over live blue v1 and "kills the process" right after the journal of
/// `step` was written: from `StepStarted(step)` on, every call hangs, and the deploy's future
/// is dropped. Returns the world as the crash left it.
async fn crash_deploy_at(
    step: Step,
    keep: KeepPrevious,
    prepare: impl FnOnce(&FakeWorld),
) -> FakeWorld {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    // A leftover from an earlier failure in green, so that the clear step runs.
    world.seed_instance(
        Color::Green,
        "v0",
        InstanceState::Exited {
            code: Some(1),
            reason: None,
        },
    );
    prepare(&world);
    // A crash at a step of a gradual shift needs one.
    let how = Switching {
        steps: step == Step::Shift,
        ..Switching::default()
    };
    world.set_can_split(how.steps);
    let died = Arc::new(Notify::new());
    let (w, signal) = (world.clone(), died.clone());
    let engine = engine_with(&world, keep, how).with_observer(Arc::new(move |e: &Event| {
        if matches!(e, Event::StepStarted { step: s, .. } if *s == step) {
            w.crash();
            signal.notify_one();
        }
    }));
    let go = CancellationToken::new();
    tokio::select! {
        result = engine.deploy(Release::new("v2").unwrap(), &go) => {
            panic!("the deploy ended before the crash at {step}: {result:?}")
        }
        () = died.notified() => {}
    }
    // The future is dropped here, lock and all, as a killed process's would be.
    drop(engine);
    world.revive();
    let saved = world.saved_state();
    assert_eq!(
        saved.journal.map(|j| j.step),
        Some(step),
        "the journal names the step the crash happened at"
    );
    world
}

/// After a crash, `status` reports what is left and changes nothing; `repair` reconciles to a
/// consistent state; the next deploy works.
async fn check_recovery(world: &FakeWorld, step: Step, expect_live: Color) {
    let engine = engine(world, KeepPrevious::Stopped);
    let status = status_only_reads(&engine, world)
        .await
        .unwrap_or_else(|e| panic!("after a crash at {step}: {e}"));
    assert_eq!(
        status.live,
        world.routed_instance().map(|i| i.instance.color),
        "status says what the router says, after a crash at {step}"
    );
    assert_eq!(status.in_progress, None);
    assert!(
        status.leftovers.len() == 1
            && status.leftovers[0].found.contains("interrupted `deploy`")
            && status.leftovers[0]
                .found
                .contains(&format!("its {step} step"))
            && !status.leftovers[0].repair.is_empty(),
        "status lists what the crash at {step} left: {:?}",
        status.leftovers
    );
    assert!(world.saved_state().journal.is_some());

    let report = engine
        .repair()
        .await
        .unwrap_or_else(|e| panic!("repair after a crash at {step}: {e}"));
    world
        .check_invariants()
        .unwrap_or_else(|e| panic!("after a crash at {step}: {e}"));
    assert_eq!(report.live, Some(expect_live), "after a crash at {step}");
    let status = status_only_reads(&engine, world).await.unwrap();
    assert_eq!(status.live, Some(expect_live), "after a crash at {step}");
    assert!(status.leftovers.is_empty(), "{:?}", status.leftovers);
    let saved = world.saved_state();
    assert_eq!(saved.journal, None, "after a crash at {step}");
    assert_eq!(saved.live.as_ref().map(|d| d.color), Some(expect_live));
    assert!(
        report.repaired.iter().any(|w| w.contains("interrupted")),
        "the repair is reported: {:?}",
        report.repaired
    );
    let history = world.history();
    assert_eq!(
        history.last().map(|r| r.outcome),
        Some(Outcome::Interrupted)
    );
    if expect_live == Color::Blue {
        // Nothing of the interrupted deploy is left in green.
        assert!(
            world.instances_of(Color::Green).is_empty(),
            "after a crash at {step}: {:?}",
            world.instances()
        );
    }

    // And the next deploy works.
    let report = engine
        .deploy(Release::new("v3").unwrap(), &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("deploy after a crash at {step}: {e}"));
    assert_eq!(report.live.color, expect_live.other());
    world.check_invariants().unwrap();
    assert_eq!(world.routed_instance().unwrap().instance.release, "v3");
}

#[tokio::test(start_paused = true)]
async fn a_crash_before_the_switch_is_undone_by_the_next_command() {
    for step in [
        Step::Clear,
        Step::PreDeploy,
        Step::Start,
        Step::Ready,
        Step::PreSwitch,
        Step::Shift,
        Step::Switch,
    ] {
        let world = crash_deploy_at(step, KeepPrevious::Stopped, |_| {}).await;
        assert_eq!(
            world.routed_instance().unwrap().instance.color,
            Color::Blue,
            "the router was not switched yet at {step}"
        );
        check_recovery(&world, step, Color::Blue).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_the_switch_is_recorded_by_the_next_command() {
    for step in [
        Step::Verify,
        Step::PostSwitch,
        Step::Drain,
        Step::Stop,
        Step::Remove,
        Step::Record,
    ] {
        let world = crash_deploy_at(step, KeepPrevious::Removed, |_| {}).await;
        assert_eq!(
            world.routed_instance().unwrap().instance.color,
            Color::Green,
            "the router was switched before {step}"
        );
        check_recovery(&world, step, Color::Green).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_while_restoring_after_a_failed_verify_routes_back() {
    let world = crash_deploy_at(Step::Restore, KeepPrevious::Stopped, |w| {
        w.fail_nth(FakeCall::Verify, 1)
    })
    .await;
    // It died before routing back: the router still points at the unverified green.
    assert_eq!(
        world.routed_instance().unwrap().instance.color,
        Color::Green
    );
    check_recovery(&world, Step::Restore, Color::Blue).await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_during_down_is_finished_by_the_next_command() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine1 = engine(&world, KeepPrevious::Stopped);
    engine1
        .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
        .await
        .unwrap();
    for step in [Step::Stop, Step::Remove] {
        let died = Arc::new(Notify::new());
        let (w, signal) = (world.clone(), died.clone());
        let engine2 =
            engine(&world, KeepPrevious::Stopped).with_observer(Arc::new(move |e: &Event| {
                if matches!(e, Event::StepStarted { step: s, .. } if *s == step) {
                    w.crash();
                    signal.notify_one();
                }
            }));
        if world.instances_of(Color::Blue).is_empty() {
            world.seed_instance(Color::Blue, "v1", InstanceState::Running);
        }
        tokio::select! {
            r = engine2.down(DownTarget::Idle, IfLive::Refuse) => panic!("down ended before the crash: {r:?}"),
            () = died.notified() => {}
        }
        drop(engine2);
        world.revive();
        let status = status_only_reads(&engine1, &world).await.unwrap();
        assert!(
            status.leftovers[0].found.contains("interrupted `down`"),
            "{:?}",
            status.leftovers
        );
        assert!(
            !world.instances_of(Color::Blue).is_empty(),
            "status removed nothing"
        );
        let report = engine1.repair().await.unwrap();
        assert_eq!(report.live, Some(Color::Green));
        let status = status_only_reads(&engine1, &world).await.unwrap();
        assert_eq!(status.live, Some(Color::Green));
        assert!(
            world.instances_of(Color::Blue).is_empty(),
            "at {step}: {:?}",
            world.instances()
        );
        assert_eq!(world.saved_state().journal, None);
        world.check_invariants().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_between_switch_and_drain_drains_the_old_color_before_anything_stops_it() {
    for step in [Step::Verify, Step::PostSwitch, Step::Drain] {
        let world = crash_deploy_at(step, KeepPrevious::Stopped, |_| {}).await;
        let before = world.calls().len();
        let engine = engine(&world, KeepPrevious::Stopped);
        engine.status().await.unwrap();
        engine
            .deploy(Release::new("v3").unwrap(), &CancellationToken::new())
            .await
            .unwrap();
        let after: Vec<FakeCall> = world.calls()[before..].iter().map(|c| c.call).collect();
        let drained = after.iter().position(|c| *c == FakeCall::InFlight);
        let first_stop = after
            .iter()
            .position(|c| matches!(c, FakeCall::Stop | FakeCall::Remove));
        assert!(
            drained.is_some() && drained < first_stop,
            "after a crash at {step}, blue must be drained before it is stopped or removed: {after:?}"
        );
        world.check_invariants().unwrap();
    }
}
