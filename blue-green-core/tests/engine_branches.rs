//! Every branch of the engine, against mockall mocks of the four traits (and, where a test is
//! about a sequence of commands, the in-memory fakes of the `testing` feature). Time is tokio's
//! paused clock: readiness intervals, deadlines and drains take no wall time, and "it gave up
//! before the deadline" is asserted on the virtual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::error::Leftovers;
use blue_green_core::testing::{FakeCall, FakeWorld};
use blue_green_core::{
    AppName, AppState, CancellationToken, Color, Command, ComponentError, DeployRecord, Deployment,
    DownTarget, Endpoint, Engine, EngineConfig, Error, Event, Health, HealthProbe, IfLive,
    Instance, InstanceState, KeepPrevious, Lock, LockError, LockHolder, Outcome, Release,
    RouteReceipt, Router, Step,
};
use mockall::predicate::eq;

// The library's own mocks (the `mocks` feature), under the short names these tests use.
use blue_green_core::mocks::{
    MockHealthProbe as MockProbe, MockRouter as MockRtr, MockRuntime as MockRt,
    MockStateStore as MockStore,
};

// --- fixtures ---------------------------------------------------------------------------

fn blue() -> Instance {
    Instance::new(
        Color::Blue,
        "v1",
        "blue-1",
        Endpoint::new("127.0.0.1", 8081),
    )
}

fn green() -> Instance {
    Instance::new(
        Color::Green,
        "v2",
        "green-1",
        Endpoint::new("127.0.0.1", 8082),
    )
}

fn deployment(inst: &Instance) -> Deployment {
    Deployment {
        color: inst.color,
        release: Release::new(inst.release.clone()).unwrap(),
        endpoint: inst.endpoint.clone(),
        since: time::macros::datetime!(2026-01-01 0:00 UTC),
    }
}

fn config() -> EngineConfig {
    let mut config = EngineConfig::new(AppName::new("web").unwrap());
    config.readiness.interval = Duration::from_secs(1);
    config.readiness.timeout = Duration::from_secs(1);
    config.readiness.deadline = Duration::from_secs(10);
    config.switch.drain = Duration::from_secs(2);
    config.switch.stop_timeout = Duration::from_secs(5);
    config
}

fn failed(message: &str) -> ComponentError {
    ComponentError::failed(message)
}

fn holder(pid: u32) -> LockHolder {
    LockHolder {
        pid,
        host: "build-box".into(),
        since: Some(time::macros::datetime!(2026-01-01 0:00 UTC)),
        command: "deploy".into(),
    }
}

/// Mocks with the plumbing every test needs (store, list, router target) backed by shared
/// cells, so that a test only states the expectations its branch is about.
struct Mocks {
    rt: MockRt,
    probe: MockProbe,
    router: MockRtr,
    store: MockStore,
    target: Arc<Mutex<Option<Endpoint>>>,
    listed: Arc<Mutex<Vec<Instance>>>,
    saved: Arc<Mutex<Vec<AppState>>>,
    history: Arc<Mutex<Vec<DeployRecord>>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Mocks {
    /// `live` is routed and recorded as live; `listed` is what the runtime lists.
    fn new(state: AppState, target: Option<Endpoint>, listed: Vec<Instance>) -> Self {
        let mut m = Mocks {
            rt: MockRt::new(),
            probe: MockProbe::new(),
            router: MockRtr::new(),
            store: MockStore::new(),
            target: Arc::new(Mutex::new(target)),
            listed: Arc::new(Mutex::new(listed)),
            saved: Arc::new(Mutex::new(Vec::new())),
            history: Arc::new(Mutex::new(Vec::new())),
            events: Arc::new(Mutex::new(Vec::new())),
        };
        m.store.expect_lock().returning(|_| Ok(Lock::new((), None)));
        let loaded = state.clone();
        m.store.expect_load().returning(move || Ok(loaded.clone()));
        let saved = m.saved.clone();
        m.store.expect_save().returning(move |s| {
            saved.lock().unwrap().push(s.clone());
            Ok(())
        });
        let history = m.history.clone();
        m.store.expect_append_history().returning(move |r| {
            history.lock().unwrap().push(r.clone());
            Ok(())
        });
        let cell = m.target.clone();
        m.router
            .expect_target()
            .returning(move || Ok(cell.lock().unwrap().clone()));
        // These tests run no gradual shift: the router never splits.
        m.router.expect_current_split().returning(|| Ok(None));
        let listed = m.listed.clone();
        m.rt.expect_list()
            .returning(move || Ok(listed.lock().unwrap().clone()));
        m.rt.expect_logs().returning(|i, _| {
            Ok(vec![
                format!("{} booting", i.release),
                "panic: no db".into(),
            ])
        });
        m
    }

    /// Blue v1 live and routed, green's slot empty.
    fn blue_live() -> Self {
        let state = AppState {
            live: Some(deployment(&blue())),
            ..AppState::default()
        };
        Mocks::new(state, Some(blue().endpoint), vec![blue()])
    }

    /// `route_to` succeeds `times` times and moves the shared target.
    fn route_ok(&mut self, endpoint: Endpoint, times: usize) {
        let cell = self.target.clone();
        self.router
            .expect_route_to()
            .with(eq(endpoint))
            .times(times)
            .returning(move |e| {
                *cell.lock().unwrap() = Some(e.clone());
                Ok(RouteReceipt::new())
            });
    }

    fn start_green(&mut self) {
        self.rt
            .expect_start()
            .withf(|c, r| *c == Color::Green && r.id == "v2")
            .times(1)
            .returning(|_, _| Ok(green()));
    }

    fn running(&mut self, inst: Instance) {
        self.rt
            .expect_state()
            .with(eq(inst))
            .returning(|_| Ok(InstanceState::Running));
    }

    fn healthy(&mut self, inst: Instance, times: usize) {
        self.probe
            .expect_check()
            .with(eq(inst))
            .times(times)
            .returning(|_| Health::Healthy);
    }

    fn removed(&mut self, inst: Instance) {
        self.rt
            .expect_stop()
            .with(eq(inst.clone()), eq(Duration::from_secs(5)))
            .times(1)
            .returning(|_, _| Ok(()));
        let listed = self.listed.clone();
        self.rt
            .expect_remove()
            .with(eq(inst))
            .times(1)
            .returning(move |gone| {
                listed.lock().unwrap().retain(|i| i != gone);
                Ok(())
            });
    }

    fn engine(self) -> (Engine<MockRt, MockProbe, MockRtr, MockStore>, Probe) {
        let events = self.events.clone();
        let engine = Engine::new(config(), self.rt, self.probe, self.router, self.store)
            .with_observer(Arc::new(move |e: &Event| {
                events.lock().unwrap().push(e.clone())
            }));
        let seen = Probe {
            target: self.target,
            saved: self.saved,
            history: self.history,
            events: self.events,
        };
        (engine, seen)
    }
}

/// What the mocks saw, kept after the engine took them.
struct Probe {
    target: Arc<Mutex<Option<Endpoint>>>,
    saved: Arc<Mutex<Vec<AppState>>>,
    history: Arc<Mutex<Vec<DeployRecord>>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Probe {
    fn target(&self) -> Option<Endpoint> {
        self.target.lock().unwrap().clone()
    }
    fn last_saved(&self) -> AppState {
        self.saved
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("state was saved")
    }
    fn outcome(&self) -> Outcome {
        self.history
            .lock()
            .unwrap()
            .last()
            .expect("history")
            .outcome
    }
    /// The `Drained` events: endpoint, elapsed ms, left, cut.
    fn drained(&self) -> Vec<(Endpoint, u64, Option<u64>, Option<u64>)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Drained {
                    endpoint,
                    elapsed_ms,
                    left,
                    cut,
                    ..
                } => Some((endpoint.clone(), *elapsed_ms, *left, *cut)),
                _ => None,
            })
            .collect()
    }

    fn warnings(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Warning { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
    fn probe_attempts(&self) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::ProbeAttempt { .. }))
            .count()
    }
}

fn go() -> CancellationToken {
    CancellationToken::new()
}

// --- deploy -----------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn first_deploy_with_nothing_live_starts_blue_and_routes_to_it() {
    let mut m = Mocks::new(AppState::default(), None, vec![]);
    m.rt.expect_start()
        .withf(|c, r| *c == Color::Blue && r.id == "v1")
        .times(1)
        .returning(|_, _| Ok(blue()));
    m.running(blue());
    m.healthy(blue(), 1);
    m.route_ok(blue().endpoint, 1);
    m.router.expect_verify().times(1).returning(|_, _| Ok(()));
    // Nothing was live: no drain, no stop.
    m.rt.expect_stop().never();
    m.router.expect_in_flight().never();
    let (engine, seen) = m.engine();

    let report = engine
        .deploy(Release::new("v1").unwrap(), &go())
        .await
        .unwrap();

    assert_eq!(report.live.color, Color::Blue);
    assert_eq!(report.previous, None);
    assert_eq!(seen.target(), Some(blue().endpoint));
    let state = seen.last_saved();
    assert_eq!(state.live.unwrap().release.id, "v1");
    assert_eq!(state.journal, None);
    assert_eq!(seen.outcome(), Outcome::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn normal_switch_drains_then_stops_the_old_color_and_records_it_as_previous() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.router
        .expect_verify()
        .withf(|i, _| *i == green())
        .times(1)
        .returning(|_, _| Ok(()));
    let mut left = vec![0u64, 1, 2];
    m.router
        .expect_in_flight()
        .with(eq(blue().endpoint))
        .times(3)
        .returning(move |_| Ok(left.pop()));
    m.rt.expect_stop()
        .with(eq(blue()), eq(Duration::from_secs(5)))
        .times(1)
        .returning(|_, _| Ok(()));
    m.rt.expect_remove().never();
    let (engine, seen) = m.engine();

    let report = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();

    assert_eq!(report.live.color, Color::Green);
    assert_eq!(report.previous, Some(Color::Blue));
    let steps: Vec<Step> = report.steps.iter().map(|s| s.step).collect();
    for step in [
        Step::Reconcile,
        Step::Start,
        Step::Ready,
        Step::Switch,
        Step::Verify,
        Step::Drain,
        Step::Stop,
        Step::Record,
    ] {
        assert!(steps.contains(&step), "{step} missing from {steps:?}");
    }
    let state = seen.last_saved();
    assert_eq!(state.live.unwrap().color, Color::Green);
    assert_eq!(state.previous.unwrap().release.id, "v1");
    assert!(seen.warnings().is_empty(), "{:?}", seen.warnings());
}

#[tokio::test(start_paused = true)]
async fn drain_ends_the_moment_nothing_is_left_in_flight_and_reports_it() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.router.expect_verify().returning(|_, _| Ok(()));
    let mut left = vec![0u64, 4];
    m.router
        .expect_in_flight()
        .with(eq(blue().endpoint))
        .times(2)
        .returning(move |_| Ok(left.pop()));
    m.router.expect_cut().never();
    m.rt.expect_stop().times(1).returning(|_, _| Ok(()));
    let (engine, seen) = m.engine();

    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();

    let drained = seen.drained();
    assert_eq!(drained.len(), 1, "{drained:?}");
    let (endpoint, elapsed_ms, left, cut) = drained[0].clone();
    assert_eq!(endpoint, blue().endpoint);
    assert_eq!((left, cut), (Some(0), None));
    // One poll interval (250 ms of paused time), not the whole drain time.
    assert!(elapsed_ms < 1000, "drain took {elapsed_ms} ms");
    assert!(seen.warnings().is_empty(), "{:?}", seen.warnings());
}

#[tokio::test(start_paused = true)]
async fn drain_out_of_time_asks_the_router_to_cut_what_is_left_and_counts_it() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.router.expect_verify().returning(|_, _| Ok(()));
    m.router
        .expect_in_flight()
        .with(eq(blue().endpoint))
        .returning(|_| Ok(Some(3)));
    m.router
        .expect_cut()
        .with(eq(blue().endpoint))
        .times(1)
        .returning(|_| Ok(Some(3)));
    m.rt.expect_stop().times(1).returning(|_, _| Ok(()));
    let (engine, seen) = m.engine();

    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();

    let drained = seen.drained();
    assert_eq!(drained.len(), 1, "{drained:?}");
    let (_, elapsed_ms, left, cut) = drained[0].clone();
    assert_eq!((left, cut), (Some(3), Some(3)));
    assert!(
        elapsed_ms >= 2000,
        "drain ended at {elapsed_ms} ms, before its 2 s deadline"
    );
    let warnings = seen.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("the router closed 3 of them")),
        "{warnings:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn probe_never_healthy_fails_at_the_deadline_and_removes_the_new_instance() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.probe
        .expect_check()
        .returning(|_| Health::Unhealthy("HTTP 503".into()));
    m.router.expect_route_to().never();
    m.removed(green());
    let (engine, seen) = m.engine();
    let began = tokio::time::Instant::now();

    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();

    // Attempts at 0s, 1s, …, 9s; the deadline is 10s.
    assert_eq!(seen.probe_attempts(), 10);
    assert_eq!(began.elapsed(), Duration::from_secs(10));
    match &err {
        Error::NotReady { color, detail, .. } => {
            assert_eq!(*color, Color::Green);
            assert_eq!(detail.last_probe.as_deref(), Some("HTTP 503"));
            assert!(detail.reason.contains("deadline"), "{}", detail.reason);
            assert!(detail.logs.iter().any(|l| l.contains("no db")));
        }
        other => panic!("expected NotReady, got {other}"),
    }
    assert_eq!(err.exit_class().code(), 1);
    assert_eq!(seen.target(), Some(blue().endpoint));
    assert_eq!(seen.last_saved().live.unwrap().color, Color::Blue);
    assert_eq!(seen.outcome(), Outcome::Failed);
}

#[tokio::test(start_paused = true)]
async fn instance_exiting_during_readiness_fails_at_once_not_at_the_deadline() {
    let mut m = Mocks::blue_live();
    m.start_green();
    let mut states = vec![
        InstanceState::Exited {
            code: Some(1),
            reason: None,
        },
        InstanceState::Running,
        InstanceState::Running,
    ];
    m.rt.expect_state()
        .with(eq(green()))
        .returning(move |_| Ok(states.pop().unwrap_or(InstanceState::Missing)));
    m.probe
        .expect_check()
        .times(2)
        .returning(|_| Health::Unhealthy("connection refused".into()));
    m.router.expect_route_to().never();
    m.removed(green());
    let (engine, seen) = m.engine();
    let began = tokio::time::Instant::now();

    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();

    // Two probes (0s, 1s), then the runtime says it exited: stop at 2s, not at the 10s deadline.
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    assert_eq!(seen.probe_attempts(), 2);
    match err {
        Error::NotReady { detail, .. } => {
            assert!(
                detail.reason.contains("exited with code 1"),
                "{}",
                detail.reason
            );
            assert_eq!(detail.last_probe.as_deref(), Some("connection refused"));
        }
        other => panic!("expected NotReady, got {other}"),
    }
    assert_eq!(seen.target(), Some(blue().endpoint));
}

#[tokio::test(start_paused = true)]
async fn healthy_threshold_needs_successes_in_a_row() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    let mut answers = vec![true, false, true, true, true];
    m.probe.expect_check().times(5).returning(move |_| {
        if answers.remove(0) {
            Health::Healthy
        } else {
            Health::Unhealthy("flap".into())
        }
    });
    m.route_ok(green().endpoint, 1);
    m.router.expect_verify().returning(|_, _| Ok(()));
    m.router.expect_in_flight().returning(|_| Ok(Some(0)));
    m.rt.expect_stop().returning(|_, _| Ok(()));
    let (engine, _seen) = m.engine();
    let mut cfg = config();
    cfg.readiness.healthy_threshold = 3;
    let engine = engine.with_config(cfg);
    let report = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();
    assert_eq!(report.live.color, Color::Green);
}

#[tokio::test(start_paused = true)]
async fn router_switch_failure_keeps_the_old_color_and_removes_the_new_one() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.router
        .expect_route_to()
        .with(eq(green().endpoint))
        .times(1)
        .returning(|_| Err(failed("nginx -t rejected the upstream file")));
    m.rt.expect_stop()
        .with(eq(blue()), mockall::predicate::always())
        .never();
    m.removed(green());
    let (engine, seen) = m.engine();

    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            Error::Step {
                step: Step::Switch,
                color: Color::Green,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nginx -t rejected"), "{err}");
    assert_eq!(seen.target(), Some(blue().endpoint));
    assert_eq!(seen.last_saved().journal, None);
}

#[tokio::test(start_paused = true)]
async fn verification_failure_routes_back_and_removes_the_new_instance() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.route_ok(blue().endpoint, 1);
    m.router
        .expect_verify()
        .times(1)
        .returning(|_, _| Err(failed("http://127.0.0.1/health answered blue")));
    // Green took live traffic between the switch and the route back: it is drained before
    // it is removed.
    m.router
        .expect_in_flight()
        .withf(|e| *e == green().endpoint)
        .times(1)
        .returning(|_| Ok(Some(0)));
    m.removed(green());
    let (engine, seen) = m.engine();

    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            Error::Step {
                step: Step::Verify,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(seen.target(), Some(blue().endpoint));
    assert_eq!(seen.last_saved().live.unwrap().color, Color::Blue);
}

#[tokio::test(start_paused = true)]
async fn verification_failure_with_nothing_to_go_back_to_is_inconsistent_and_keeps_the_routed_instance(
) {
    let mut m = Mocks::new(AppState::default(), None, vec![]);
    m.rt.expect_start().returning(|_, _| Ok(blue()));
    m.running(blue());
    m.healthy(blue(), 1);
    m.route_ok(blue().endpoint, 1);
    m.router
        .expect_verify()
        .returning(|_, _| Err(failed("no answer through the router")));
    // The router points at it and cannot point at nothing: it must not be stopped.
    m.rt.expect_stop().never();
    m.rt.expect_remove().never();
    let (engine, seen) = m.engine();

    let err = engine
        .deploy(Release::new("v1").unwrap(), &go())
        .await
        .unwrap_err();

    assert_eq!(err.exit_class().code(), 5);
    match &err {
        Error::Inconsistent {
            left: Leftovers(left),
            ..
        } => {
            assert!(left[0].contains("no earlier target"), "{left:?}")
        }
        other => panic!("expected Inconsistent, got {other}"),
    }
    assert_eq!(seen.outcome(), Outcome::Inconsistent);
}

#[tokio::test(start_paused = true)]
async fn restore_that_fails_names_what_is_left() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.router
        .expect_route_to()
        .with(eq(blue().endpoint))
        .returning(|_| Err(failed("nginx reload failed")));
    m.router
        .expect_verify()
        .returning(|_, _| Err(failed("verify failed")));
    m.rt.expect_stop().never();
    let (engine, seen) = m.engine();

    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();

    match &err {
        Error::Inconsistent { left, cause, .. } => {
            assert!(left.to_string().contains("switch blue"), "{left}");
            assert!(matches!(
                **cause,
                Error::Step {
                    step: Step::Verify,
                    ..
                }
            ));
        }
        other => panic!("expected Inconsistent, got {other}"),
    }
    // The journal stays so that the next command tries the restore again.
    assert_eq!(
        seen.last_saved().journal.map(|j| j.step),
        Some(Step::Restore)
    );
}

#[tokio::test(start_paused = true)]
async fn a_router_counting_only_open_connections_waits_the_whole_drain_and_reports_them() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.router.expect_verify().returning(|_, _| Ok(()));
    m.router
        .expect_in_flight()
        .with(eq(blue().endpoint))
        .returning(|_| Ok(None));
    // Asked once, after the drain time: such a count must not end the drain early.
    m.router
        .expect_open_connections()
        .with(eq(blue().endpoint))
        .times(1)
        .returning(|_| Ok(Some(2)));
    m.router.expect_cut().never();
    m.rt.expect_stop().times(1).returning(|_, _| Ok(()));
    let (engine, seen) = m.engine();

    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();

    let drained: Vec<Event> = seen
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Drained { .. }))
        .cloned()
        .collect();
    let [Event::Drained {
        elapsed_ms,
        left,
        cut,
        open,
        ..
    }] = drained.as_slice()
    else {
        panic!("one drain: {drained:?}")
    };
    assert_eq!((*left, *cut, *open), (None, None, Some(2)));
    assert!(
        *elapsed_ms >= 2000,
        "drain ended at {elapsed_ms} ms, before its 2 s deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_stop_of_the_old_color_still_succeeds_with_a_warning() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.router.expect_verify().returning(|_, _| Ok(()));
    m.router.expect_in_flight().returning(|_| Ok(None));
    m.router.expect_open_connections().returning(|_| Ok(None));
    m.rt.expect_stop()
        .with(eq(blue()), eq(Duration::from_secs(5)))
        .times(1)
        .returning(|_, _| Err(failed("docker: container is stuck")));
    let (engine, seen) = m.engine();
    let began = tokio::time::Instant::now();

    let report = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();

    assert_eq!(report.live.color, Color::Green);
    // A router that cannot count in-flight requests: the whole drain time is waited.
    assert!(began.elapsed() >= Duration::from_secs(2));
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("container is stuck"));
    assert!(seen.warnings()[0].contains("down blue"));
    assert_eq!(seen.target(), Some(green().endpoint));
}

#[tokio::test(start_paused = true)]
async fn keep_previous_removed_removes_the_old_color_after_stopping_it() {
    let mut m = Mocks::blue_live();
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.router.expect_verify().returning(|_, _| Ok(()));
    m.router.expect_in_flight().returning(|_| Ok(Some(0)));
    m.removed(blue());
    let (engine, _seen) = m.engine();
    let mut cfg = config();
    cfg.switch.keep_previous = KeepPrevious::Removed;
    let engine = engine.with_config(cfg);
    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_leftover_in_the_idle_slot_is_cleared_before_the_start() {
    let mut stale = green();
    stale.release = "v0".into();
    stale.id = "green-old".into();
    let state = AppState {
        live: Some(deployment(&blue())),
        ..AppState::default()
    };
    let mut m = Mocks::new(state, Some(blue().endpoint), vec![blue(), stale.clone()]);
    m.removed(stale);
    m.rt.expect_start()
        .returning(|_, _| Err(failed("image not found")));
    let (engine, seen) = m.engine();
    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Step {
                step: Step::Start,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(seen.target(), Some(blue().endpoint));
}

#[tokio::test(start_paused = true)]
async fn a_call_that_never_answers_times_out() {
    // The router never answers, the engine gives up after its
    // router timeout, on the virtual clock.
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    world.fault_nth(FakeCall::RouteTo, 1, blue_green_core::testing::Fault::Hang);
    let engine = fake_engine(&world, config());
    let began = tokio::time::Instant::now();
    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not answer within"), "{err}");
    assert!(began.elapsed() >= config().timeouts.router);
    world.check_invariants().unwrap();
    assert!(world.instances_of(Color::Green).is_empty());
}

// --- lock -------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_held_lock_fails_at_once_naming_the_holder() {
    let mut store = MockStore::new();
    store
        .expect_lock()
        .times(1)
        .returning(|_| Err(LockError::Held(holder(4242))));
    // No other call: the runtime, probe and router mocks panic if touched.
    let engine = Engine::new(
        config(),
        MockRt::new(),
        MockProbe::new(),
        MockRtr::new(),
        store,
    );
    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();
    assert_eq!(err.exit_class().code(), 3);
    assert!(err.to_string().contains("pid 4242"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_stale_lock_is_taken_over_with_a_warning() {
    let mut m = Mocks::blue_live();
    m.store.checkpoint();
    m.store
        .expect_lock()
        .returning(|_| Ok(Lock::new((), Some(holder(777)))));
    let state = AppState {
        live: Some(deployment(&blue())),
        ..AppState::default()
    };
    m.store.expect_load().returning(move || Ok(state.clone()));
    m.store.expect_save().returning(|_| Ok(()));
    m.store.expect_append_history().returning(|_| Ok(()));
    m.start_green();
    m.running(green());
    m.healthy(green(), 1);
    m.route_ok(green().endpoint, 1);
    m.router.expect_verify().returning(|_, _| Ok(()));
    m.router.expect_in_flight().returning(|_| Ok(Some(0)));
    m.rt.expect_stop().returning(|_, _| Ok(()));
    let (engine, seen) = m.engine();

    let report = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();

    assert!(
        report.warnings[0].contains("pid 777"),
        "{:?}",
        report.warnings
    );
    assert!(seen.warnings()[0].contains("took over"));
}

#[tokio::test(start_paused = true)]
async fn two_deploys_at_once_one_fails_with_locked() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine = fake_engine(&world, config());
    let cancel = go();
    let (a, b) = tokio::join!(
        engine.deploy(Release::new("v2").unwrap(), &cancel),
        engine.deploy(Release::new("v3").unwrap(), &cancel)
    );
    let locked = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(Error::Locked { .. })))
        .count();
    assert_eq!(locked, 1, "{a:?} / {b:?}");
    world.check_invariants().unwrap();
}

// --- cancellation -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cancellation_at_each_step_before_the_stop_rolls_back() {
    for step in [
        Step::Reconcile,
        Step::Clear,
        Step::Start,
        Step::Ready,
        Step::Switch,
        Step::Verify,
        Step::Drain,
    ] {
        let world = FakeWorld::new();
        let old = world.seed_live(Color::Blue, "v1");
        // A leftover in green, so that there is a clear step.
        world.seed_instance(
            Color::Green,
            "v0",
            InstanceState::Exited {
                code: Some(0),
                reason: None,
            },
        );
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let engine = fake_engine(&world, config()).with_observer(Arc::new(move |e: &Event| {
            if matches!(e, Event::StepStarted { step: s, .. } if *s == step) {
                trigger.cancel();
            }
        }));

        let err = engine
            .deploy(Release::new("v2").unwrap(), &cancel)
            .await
            .unwrap_err();

        match &err {
            Error::Cancelled { step: at, .. } => assert_eq!(*at, step),
            other => panic!("cancel at {step}: expected Cancelled, got {other}"),
        }
        assert_eq!(err.exit_class().code(), 130);
        assert_eq!(
            world.router_target(),
            Some(old.endpoint.clone()),
            "at {step}"
        );
        // What the deploy started is gone (a leftover it had not cleared yet may stay: it
        // serves nothing, and the next deploy clears it).
        assert!(
            world.instances().iter().all(|i| i.instance.release != "v2"),
            "at {step}: {:?}",
            world.instances()
        );
        world.check_invariants().unwrap();
        let state = world.saved_state();
        assert_eq!(state.live.unwrap().color, Color::Blue);
        assert_eq!(state.journal, None);
        assert_eq!(world.history().last().unwrap().outcome, Outcome::Cancelled);
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_once_the_old_color_stops_lets_the_deploy_finish() {
    for step in [Step::Stop, Step::Remove, Step::Record] {
        let world = FakeWorld::new();
        world.seed_live(Color::Blue, "v1");
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let mut cfg = config();
        cfg.switch.keep_previous = KeepPrevious::Removed;
        let engine = fake_engine(&world, cfg).with_observer(Arc::new(move |e: &Event| {
            if matches!(e, Event::StepStarted { step: s, .. } if *s == step) {
                trigger.cancel();
            }
        }));
        let report = engine
            .deploy(Release::new("v2").unwrap(), &cancel)
            .await
            .unwrap();
        assert_eq!(report.live.color, Color::Green, "at {step}");
        assert!(world.instances_of(Color::Blue).is_empty(), "at {step}");
        world.check_invariants().unwrap();
    }
}

// --- rollback ---------------------------------------------------------------------------

fn green_live_blue_previous(listed: Vec<Instance>) -> Mocks {
    let state = AppState {
        live: Some(deployment(&green())),
        previous: Some(Deployment {
            release: Release::new("v1").unwrap().with_artifact("web:1").unwrap(),
            ..deployment(&blue())
        }),
        journal: None,
        staged: None,
        preview: None,
    };
    Mocks::new(state, Some(green().endpoint), listed)
}

fn finish_rollback(m: &mut Mocks) {
    m.route_ok(blue().endpoint, 1);
    m.router
        .expect_verify()
        .withf(|i, _| *i == blue())
        .returning(|_, _| Ok(()));
    m.router.expect_in_flight().returning(|_| Ok(Some(0)));
    m.rt.expect_stop()
        .with(eq(green()), mockall::predicate::always())
        .times(1)
        .returning(|_, _| Ok(()));
}

#[tokio::test(start_paused = true)]
async fn rollback_to_a_running_previous_color_probes_and_switches() {
    let mut m = green_live_blue_previous(vec![blue(), green()]);
    m.running(blue());
    m.rt.expect_restart().never();
    m.rt.expect_start().never();
    m.healthy(blue(), 1);
    finish_rollback(&mut m);
    let (engine, seen) = m.engine();

    let report = engine.rollback(&go()).await.unwrap();

    assert_eq!(report.live.color, Color::Blue);
    assert_eq!(report.live.release.artifact.as_deref(), Some("web:1"));
    assert_eq!(seen.target(), Some(blue().endpoint));
    let state = seen.last_saved();
    assert_eq!(state.previous.unwrap().color, Color::Green);
}

#[tokio::test(start_paused = true)]
async fn rollback_to_a_stopped_previous_color_restarts_it() {
    let mut m = green_live_blue_previous(vec![blue(), green()]);
    let mut states = vec![
        InstanceState::Running,
        InstanceState::Exited {
            code: Some(0),
            reason: None,
        },
    ];
    m.rt.expect_state()
        .with(eq(blue()))
        .returning(move |_| Ok(states.pop().unwrap_or(InstanceState::Running)));
    m.rt.expect_restart()
        .with(eq(blue()))
        .times(1)
        .returning(|i| Ok(i.clone()));
    m.rt.expect_start().never();
    m.healthy(blue(), 1);
    finish_rollback(&mut m);
    let (engine, _) = m.engine();

    let report = engine.rollback(&go()).await.unwrap();
    assert_eq!(report.live.color, Color::Blue);
}

#[tokio::test(start_paused = true)]
async fn rollback_to_a_removed_previous_color_starts_its_release_afresh() {
    let mut m = green_live_blue_previous(vec![green()]);
    m.rt.expect_start()
        .withf(|c, r| *c == Color::Blue && r.id == "v1" && r.artifact.as_deref() == Some("web:1"))
        .times(1)
        .returning(|_, _| Ok(blue()));
    m.running(blue());
    m.healthy(blue(), 1);
    finish_rollback(&mut m);
    let (engine, _) = m.engine();

    let report = engine.rollback(&go()).await.unwrap();
    assert_eq!(report.live.color, Color::Blue);
}

#[tokio::test(start_paused = true)]
async fn rollback_whose_restart_never_gets_ready_stops_it_again() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine = fake_engine(&world, config());
    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();
    assert!(!world.instances_of(Color::Blue)[0].state.is_running());

    world.never_healthy("v1");
    let err = engine.rollback(&go()).await.unwrap_err();

    assert!(matches!(err, Error::NotReady { .. }), "{err}");
    assert_eq!(
        world.routed_instance().unwrap().instance.color,
        Color::Green
    );
    let blue = &world.instances_of(Color::Blue)[0];
    assert!(
        !blue.state.is_running(),
        "the restarted blue was stopped again"
    );
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn rollback_without_a_previous_deployment_is_a_usage_error() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine = fake_engine(&world, config());
    let err = engine.rollback(&go()).await.unwrap_err();
    assert_eq!(err.exit_class().code(), 2, "{err}");
}

// --- switch, down, status, history ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn switch_goes_to_a_running_color_and_leaves_the_old_one_running() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let mut cfg = config();
    cfg.switch.keep_previous = KeepPrevious::Running;
    let engine = fake_engine(&world, cfg);
    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();

    let report = engine.switch(Color::Blue, &go()).await.unwrap();

    assert_eq!(report.live.color, Color::Blue);
    assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
    assert!(world.instances_of(Color::Green)[0].state.is_running());
    let err = engine.switch(Color::Blue, &go()).await.unwrap_err();
    assert_eq!(err.exit_class().code(), 2);
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn switch_to_a_stopped_color_is_refused_saying_what_to_do() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine = fake_engine(&world, config());
    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();
    let err = engine.switch(Color::Blue, &go()).await.unwrap_err();
    assert_eq!(err.exit_class().code(), 2);
    assert!(err.to_string().contains("rollback"), "{err}");
    assert_eq!(
        world.routed_instance().unwrap().instance.color,
        Color::Green
    );
}

#[tokio::test(start_paused = true)]
async fn down_removes_the_idle_color_and_refuses_the_live_one_without_force() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine = fake_engine(&world, config());
    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();

    let err = engine
        .down(DownTarget::Color(Color::Green), IfLive::Refuse)
        .await
        .unwrap_err();
    assert_eq!(err.exit_class().code(), 2);
    assert!(err.to_string().contains("--force"), "{err}");

    let report = engine.down(DownTarget::Idle, IfLive::Refuse).await.unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].color, Color::Blue);
    assert!(world.instances_of(Color::Blue).is_empty());
    world.check_invariants().unwrap();

    let report = engine
        .down(DownTarget::Color(Color::Green), IfLive::TakeDown)
        .await
        .unwrap();
    assert_eq!(report.removed[0].color, Color::Green);
    assert!(report.warnings[0].contains("does not serve"));
    let status = engine.status().await.unwrap();
    assert_eq!(status.live, None);
    assert!(status.instances.is_empty());
}

#[tokio::test(start_paused = true)]
async fn status_reports_a_stale_state_without_fixing_it_and_repair_fixes_it() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine = fake_engine(&world, config());
    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();
    // Someone routed back to blue by hand and restarted it; the state file still says green.
    let blue = world.instances_of(Color::Blue)[0].instance.clone();
    world.set_instance_state(&blue.id, InstanceState::Running);
    world.probe().check(&blue).await;
    world.router().route_to(&blue.endpoint).await.unwrap();
    let saved_before = world.saved_state();
    let calls_before = world.calls().len();

    let status = engine.status().await.unwrap();

    assert_eq!(status.live, Some(Color::Blue));
    assert_eq!(status.router_target, Some(blue.endpoint.clone()));
    assert_eq!(status.instances.len(), 2);
    assert!(status
        .instances
        .iter()
        .any(|i| i.live && i.instance.color == Color::Blue));
    assert!(
        status.leftovers[0].found.contains("router points at"),
        "{:?}",
        status.leftovers
    );
    assert_eq!(
        status.leftovers[0].repair,
        ["record blue (release v1) as live"]
    );
    // Status only reads: the state file still says green, and nothing was saved or touched.
    assert_eq!(world.saved_state(), saved_before);
    assert!(
        world.calls()[calls_before..].iter().all(|c| !matches!(
            c.call,
            FakeCall::Save | FakeCall::Stop | FakeCall::Remove | FakeCall::RouteTo
        )),
        "{:?}",
        world.calls()
    );

    let report = engine.repair().await.unwrap();
    assert!(
        report.repaired[0].contains("router points at"),
        "{:?}",
        report.repaired
    );
    assert_eq!(report.live, Some(Color::Blue));
    assert_eq!(world.saved_state().live.unwrap().color, Color::Blue);
    assert_eq!(world.saved_state().previous.unwrap().color, Color::Green);
    assert!(engine.status().await.unwrap().leftovers.is_empty());

    // With the lock held by a command at work (its journal saved), status only reads, and
    // says its journal is work in progress, not a leftover.
    let mut at_work = world.saved_state();
    at_work.journal = Some(blue_green_core::JournalEntry {
        command: Command::Deploy,
        step: Step::Ready,
        color: Color::Green,
        release: Some(Release::new("v3").unwrap()),
        from: Some(Color::Blue),
        started_at: time::macros::datetime!(2026-01-01 0:00 UTC),
        pid: 99,
    });
    world.set_saved_state(at_work.clone());
    world.hold_lock(holder(99));
    let status = engine.status().await.unwrap();
    assert!(
        status.warnings[0].contains("only reads"),
        "{:?}",
        status.warnings
    );
    assert_eq!(status.in_progress, Some(holder(99)));
    assert!(status.leftovers.is_empty(), "{:?}", status.leftovers);
    assert_eq!(world.saved_state(), at_work);
    assert_eq!(world.lock_holder(), Some(holder(99)));
    world.release_lock();

    // Once no command holds the lock, the same journal is a leftover that repair undoes.
    let status = engine.status().await.unwrap();
    assert_eq!(status.in_progress, None);
    assert!(
        status.leftovers[0]
            .found
            .contains("interrupted `deploy` (pid 99"),
        "{:?}",
        status.leftovers
    );

    let history = engine.history().await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].command, Command::Deploy);
    assert_eq!(history[0].to, Some(Color::Green));
    assert!(history[0].steps.iter().any(|s| s.step == Step::Ready));
}

/// Blue v1 live; the saved journal of a deploy of v2 into green that died at `step`, with its
/// green instance left running.
fn interrupted_deploy(step: Step) -> (FakeWorld, Instance) {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let green = world.seed_instance(Color::Green, "v2", InstanceState::Running);
    let mut state = world.saved_state();
    state.journal = Some(blue_green_core::JournalEntry {
        command: Command::Deploy,
        step,
        color: Color::Green,
        release: Some(Release::new("v2").unwrap()),
        from: Some(Color::Blue),
        started_at: time::macros::datetime!(2026-01-01 0:00 UTC),
        pid: 4242,
    });
    world.set_saved_state(state);
    (world, green)
}

#[tokio::test(start_paused = true)]
async fn status_lists_what_an_interrupted_deploy_left_and_repair_removes_it() {
    let (world, green) = interrupted_deploy(Step::Ready);
    let engine = fake_engine(&world, config());

    let status = engine.status().await.unwrap();
    assert_eq!(status.live, Some(Color::Blue));
    assert_eq!(status.leftovers.len(), 1, "{:?}", status.leftovers);
    let left = &status.leftovers[0];
    assert!(
        left.found
            .contains("interrupted `deploy` (pid 4242, started 2026-01-01T00:00:00Z) stopped at its ready step"),
        "{left:?}"
    );
    assert!(left.repair[0].starts_with(&format!("remove green instance {}", green.id)));
    assert!(left.repair[1].contains("in the history"), "{left:?}");
    assert_eq!(
        world.instances_of(Color::Green).len(),
        1,
        "status removed nothing"
    );
    assert!(world.saved_state().journal.is_some());

    let report = engine.repair().await.unwrap();
    assert!(
        report.repaired[0].contains("removed green instance"),
        "{:?}",
        report.repaired
    );
    assert!(world.instances_of(Color::Green).is_empty());
    assert_eq!(world.saved_state().journal, None);
    let history = world.history();
    assert_eq!(
        history.len(),
        1,
        "repair leaves only the interrupted command's line"
    );
    assert_eq!(history[0].outcome, Outcome::Interrupted);
    world.check_invariants().unwrap();

    // Nothing left: a second repair changes nothing.
    let report = engine.repair().await.unwrap();
    assert!(report.repaired.is_empty(), "{:?}", report.repaired);
    assert_eq!(world.history().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_repair_that_fails_is_inconsistent_names_what_is_left_and_keeps_the_journal() {
    let (world, _) = interrupted_deploy(Step::Start);
    let engine = fake_engine(&world, config());
    world.fail_nth(FakeCall::Remove, 1);

    let err = engine.repair().await.unwrap_err();

    assert_eq!(err.exit_class().code(), 5, "{err}");
    match &err {
        Error::Inconsistent { left, .. } => {
            assert!(left.to_string().contains("run `down green`"), "{left}")
        }
        other => panic!("expected Inconsistent, got {other}"),
    }
    // The journal stays, so that status still lists it and the next repair tries again; the
    // interrupted command is not written to the history as repaired.
    assert!(world.saved_state().journal.is_some());
    assert!(world.history().is_empty());
    assert_eq!(engine.status().await.unwrap().leftovers.len(), 1);

    engine.repair().await.unwrap();
    assert!(world.instances_of(Color::Green).is_empty());
    assert_eq!(world.saved_state().journal, None);
    assert_eq!(world.history().len(), 1);
    world.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn status_with_no_journal_does_not_touch_the_lock_and_a_held_lock_does_not_stop_it() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let engine = fake_engine(&world, config());
    engine.status().await.unwrap();
    assert_eq!(world.count(FakeCall::Lock), 0);

    // A deploy starting meanwhile is never refused because of a status.
    world.hold_lock(holder(7));
    let status = engine.status().await.unwrap();
    assert_eq!(status.live, Some(Color::Blue));
    assert_eq!(world.count(FakeCall::Lock), 0);
    assert_eq!(world.lock_holder(), Some(holder(7)));
}

#[tokio::test(start_paused = true)]
async fn events_come_in_order_with_step_started_before_each_action() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let w = world.clone();
    let engine = fake_engine(&world, config()).with_observer(Arc::new(move |e: &Event| {
        // The journal for a step is saved before its StepStarted.
        if let Event::StepStarted { step, .. } = e {
            if matches!(
                step,
                Step::Start | Step::Ready | Step::Switch | Step::Verify
            ) {
                assert_eq!(w.saved_state().journal.map(|j| j.step), Some(*step));
            }
        }
        seen.lock().unwrap().push(e.clone());
    }));
    engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap();
    let events = log.lock().unwrap();
    assert!(matches!(events.first(), Some(Event::CommandStarted { .. })));
    assert!(matches!(
        events.last(),
        Some(Event::CommandFinished {
            ok: true,
            live: Some(Color::Green),
            ..
        })
    ));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Routed {
            color: Color::Green,
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ProbeAttempt {
            healthy: true,
            attempt: 1,
            ..
        }
    )));
    let json = serde_json::to_string(&events[1]).unwrap();
    assert!(json.starts_with("{\"event\":"), "{json}");
}

fn fake_engine(
    world: &FakeWorld,
    config: EngineConfig,
) -> Engine<
    blue_green_core::testing::FakeRuntime,
    blue_green_core::testing::FakeProbe,
    blue_green_core::testing::FakeRouter,
    blue_green_core::testing::FakeStore,
> {
    Engine::new(
        config,
        world.runtime(),
        world.probe(),
        world.router(),
        world.store(),
    )
}

#[test]
fn command_futures_are_send_so_a_caller_can_spawn_them() {
    fn send<T: Send>(_: &T) {}
    let world = FakeWorld::new();
    let engine = fake_engine(&world, config());
    let cancel = go();
    send(&engine.deploy(Release::new("v1").unwrap(), &cancel));
    send(&engine.rollback(&cancel));
    send(&engine.switch(Color::Blue, &cancel));
    send(&engine.down(DownTarget::Idle, IfLive::Refuse));
    send(&engine.status());
    send(&engine.repair());
    send(&engine.history());
}

#[tokio::test(start_paused = true)]
async fn a_probe_attempt_cut_short_by_the_deadline_does_not_hide_the_last_real_answer() {
    let world = FakeWorld::new();
    world.seed_live(Color::Blue, "v1");
    world.never_healthy("v2");
    // Probes every second with a 1 s timeout; the 9th starts at 8 s and hangs, and the 8.5 s
    // deadline (not the probe's own timeout) cuts it after 500 ms.
    let mut config = config();
    config.readiness.deadline = Duration::from_millis(8_500);
    world.fault_nth(FakeCall::Check, 9, blue_green_core::testing::Fault::Hang);
    let engine = fake_engine(&world, config);

    let err = engine
        .deploy(Release::new("v2").unwrap(), &go())
        .await
        .unwrap_err();

    match &err {
        Error::NotReady { detail, .. } => {
            assert_eq!(
                detail.last_probe.as_deref(),
                Some("HTTP 503 from /health"),
                "the report shows the last real answer, not the attempt the deadline cut: {err}"
            );
        }
        other => panic!("expected NotReady, got {other}"),
    }
    world.check_invariants().unwrap();
}
