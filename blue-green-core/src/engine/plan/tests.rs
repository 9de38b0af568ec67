//! Table tests of the planner: world × saved state × intent → actions. Actions are written
//! short: `route blue :1`, `drain green-2`, `stop blue-1`, `remove green-2`, `live green v2`,
//! `history deploy`.

use super::*;
use crate::state::Deployment;

fn inst(color: Color, release: &str, n: u16) -> Instance {
    Instance::new(
        color,
        release,
        format!("{color}-{n}"),
        Endpoint::new("127.0.0.1", n),
    )
}

fn blue1() -> Instance {
    inst(Color::Blue, "v1", 1)
}
fn green2() -> Instance {
    inst(Color::Green, "v2", 2)
}
fn green3() -> Instance {
    inst(Color::Green, "v0", 3)
}

fn running() -> InstanceState {
    InstanceState::Running
}
fn exited() -> InstanceState {
    InstanceState::Exited {
        code: Some(0),
        reason: None,
    }
}

/// A world of `instances` (each with its state), the router at `target`.
fn world(instances: &[(Instance, InstanceState)], target: Option<&Instance>) -> World {
    World {
        instances: instances.iter().map(|(i, _)| i.clone()).collect(),
        target: target.map(|i| i.endpoint.clone()),
        split: None,
        live: target.cloned(),
        states: instances
            .iter()
            .map(|(i, s)| (i.id.clone(), s.clone()))
            .collect(),
    }
}

fn deployed(i: &Instance) -> Deployment {
    Deployment {
        color: i.color,
        release: Release::new(i.release.clone())
            .unwrap()
            .with_artifact(format!("app:{}", i.release))
            .unwrap(),
        endpoint: i.endpoint.clone(),
        since: time::OffsetDateTime::UNIX_EPOCH,
    }
}

/// Saved state: blue v1 live, and the journal of `command` bringing up green at `step`.
fn journaled(command: Command, step: Step) -> AppState {
    AppState {
        live: Some(deployed(&blue1())),
        previous: None,
        staged: None,
        preview: None,
        journal: Some(JournalEntry {
            command,
            step,
            color: Color::Green,
            release: (command == Command::Deploy).then(|| {
                Release::new("v2")
                    .unwrap()
                    .with_artifact("app:v2-journal")
                    .unwrap()
            }),
            from: Some(Color::Blue),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            pid: 42,
        }),
    }
}

fn short(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::RouteTo { color, endpoint } => format!("route {color} :{}", endpoint.port),
            Action::Drain(i) => format!("drain {}", i.id),
            Action::Stop(i) => format!("stop {}", i.id),
            Action::Remove(i) => format!("remove {}", i.id),
            Action::RecordLive { color, release, .. } => format!("live {color} {}", release.id),
            Action::RecordInterrupted { journal, .. } => format!("history {}", journal.command),
        })
        .collect()
}

fn repaired(world: &World, state: &AppState) -> Plan {
    plan(world, state, &Intent::Repair).expect("a journal to repair")
}

#[test]
fn repair_of_each_interrupted_command() {
    use Command::{Deploy, Down, Rollback, Switch};
    let b = blue1();
    let g = green2();
    // (command, step, instances and states, router at, expected actions)
    #[allow(clippy::type_complexity)]
    let table: Vec<(
        Command,
        Step,
        Vec<(Instance, InstanceState)>,
        Option<&Instance>,
        &[&str],
    )> = vec![
        // Not switched: undo what the command brought up in green.
        (
            Deploy,
            Step::Start,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&b),
            &["remove green-2", "history deploy"],
        ),
        (
            Deploy,
            Step::Clear,
            vec![
                (b.clone(), running()),
                (g.clone(), exited()),
                (green3(), exited()),
            ],
            Some(&b),
            &["remove green-2", "remove green-3", "history deploy"],
        ),
        (
            Deploy,
            Step::Ready,
            vec![(b.clone(), running())],
            Some(&b),
            &["history deploy"],
        ),
        (
            Rollback,
            Step::Ready,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&b),
            &["stop green-2", "history rollback"],
        ),
        (
            Switch,
            Step::Verify,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&b),
            &["history switch"],
        ),
        // A down is finished, whatever the router says, but never what it points at.
        (
            Down,
            Step::Stop,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&b),
            &["remove green-2", "history down"],
        ),
        (
            Down,
            Step::Remove,
            vec![(g.clone(), exited())],
            Some(&g),
            &["history down"],
        ),
        // Switched: record green as live; drain blue if the drain had not ended.
        (
            Deploy,
            Step::Verify,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&g),
            &["live green v2", "drain blue-1", "history deploy"],
        ),
        (
            Deploy,
            Step::Drain,
            vec![(b.clone(), exited()), (g.clone(), running())],
            Some(&g),
            &["live green v2", "history deploy"],
        ),
        (
            Deploy,
            Step::Stop,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&g),
            &["live green v2", "history deploy"],
        ),
        (
            Deploy,
            Step::Record,
            vec![(g.clone(), running())],
            Some(&g),
            &["live green v2", "history deploy"],
        ),
        // Routing back when it died: finish routing back if blue runs, drain green, undo it.
        (
            Deploy,
            Step::Restore,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&g),
            &[
                "route blue :1",
                "drain green-2",
                "remove green-2",
                "history deploy",
            ],
        ),
        (
            Rollback,
            Step::Restore,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&g),
            &[
                "route blue :1",
                "drain green-2",
                "stop green-2",
                "history rollback",
            ],
        ),
        (
            Switch,
            Step::Restore,
            vec![(b.clone(), running()), (g.clone(), running())],
            Some(&g),
            &["route blue :1", "history switch"],
        ),
        // ... but blue is gone: green stays live.
        (
            Deploy,
            Step::Restore,
            vec![(b.clone(), exited()), (g.clone(), running())],
            Some(&g),
            &["live green v2", "history deploy"],
        ),
    ];
    for (command, step, instances, target, expected) in table {
        let w = world(&instances, target);
        let state = journaled(command, step);
        let got = repaired(&w, &state);
        assert_eq!(short(&got.actions), expected, "{command} at {step}");
        assert!(
            got.found
                .contains(&format!("interrupted `{command}` (pid 42")),
            "{}",
            got.found
        );
        assert!(got.kept.is_empty(), "{command} at {step}: {:?}", got.kept);
    }
}

#[test]
fn repair_after_the_switch_keeps_the_artifact_and_says_the_old_color_stays() {
    let (b, g) = (blue1(), green2());
    let w = world(&[(b.clone(), running()), (g.clone(), running())], Some(&g));
    let got = repaired(&w, &journaled(Command::Deploy, Step::Stop));
    assert!(
        got.found.ends_with("after switching the router to green"),
        "{}",
        got.found
    );
    assert!(matches!(
        &got.actions[0],
        Action::RecordLive { release, endpoint, .. }
            if release.artifact.as_deref() == Some("app:v2-journal") && *endpoint == g.endpoint
    ));
    assert_eq!(
        got.notes,
        ["the old color blue is left as it was (`down blue` takes it down)"]
    );

    // A rollback's journal has no release: it comes from the saved state, artifact and all.
    let mut state = journaled(Command::Rollback, Step::Verify);
    state.previous = Some(deployed(&g));
    let got = repaired(&w, &state);
    assert!(matches!(
        &got.actions[0],
        Action::RecordLive { release, .. } if release.artifact.as_deref() == Some("app:v2")
    ));
}

#[test]
fn nothing_to_repair_without_a_journal_and_nothing_to_undo_is_said() {
    let b = blue1();
    let w = world(&[(b.clone(), running())], Some(&b));
    assert_eq!(plan(&w, &AppState::default(), &Intent::Repair), None);
    let got = repaired(&w, &journaled(Command::Deploy, Step::Ready));
    assert_eq!(got.notes, ["nothing was left to repair"]);
}

fn rewind(undo: Undo, old: Option<&Instance>, unknown: bool) -> Intent {
    Intent::Restore(Rewind {
        color: Color::Green,
        undo,
        old_target: old.map(|o| (o.color, o.endpoint.clone())),
        target_unknown: unknown.then(|| "the router did not answer".to_string()),
    })
}

#[test]
fn restore_is_a_reconcile_toward_the_old_target() {
    let (b, g) = (blue1(), green2());
    let none = AppState::default();
    // (what was brought up, router now, undo, old target, router unknown, expected, kept)
    #[allow(clippy::type_complexity)]
    let table: Vec<(
        Vec<Instance>,
        Option<&Instance>,
        Undo,
        Option<&Instance>,
        bool,
        &[&str],
        &str,
    )> = vec![
        // Failed before the switch: the router is where it was; only undo.
        (
            vec![g.clone()],
            Some(&b),
            Undo::Remove,
            Some(&b),
            false,
            &["remove green-2"],
            "",
        ),
        (
            vec![g.clone()],
            Some(&b),
            Undo::Stop,
            Some(&b),
            false,
            &["stop green-2"],
            "",
        ),
        (
            vec![g.clone()],
            Some(&b),
            Undo::Leave,
            Some(&b),
            false,
            &[],
            "",
        ),
        // The start failed: whatever it left in the slot.
        (
            vec![g.clone(), green3()],
            Some(&b),
            Undo::Remove,
            Some(&b),
            false,
            &["remove green-2", "remove green-3"],
            "",
        ),
        (vec![], Some(&b), Undo::Remove, Some(&b), false, &[], ""),
        // The router moved to green: route back, drain green, undo it.
        (
            vec![g.clone()],
            Some(&g),
            Undo::Remove,
            Some(&b),
            false,
            &["route blue :1", "drain green-2", "remove green-2"],
            "",
        ),
        (
            vec![g.clone()],
            Some(&g),
            Undo::Stop,
            Some(&b),
            false,
            &["route blue :1", "drain green-2", "stop green-2"],
            "",
        ),
        (
            vec![g.clone()],
            Some(&g),
            Undo::Leave,
            Some(&b),
            false,
            &["route blue :1"],
            "",
        ),
        // The router cannot say where it points: route back anyway, and drain green.
        (
            vec![g.clone()],
            Some(&b),
            Undo::Remove,
            Some(&b),
            true,
            &["route blue :1", "drain green-2", "remove green-2"],
            "",
        ),
        // Nothing to go back to.
        (
            vec![g.clone()],
            None,
            Undo::Remove,
            None,
            false,
            &["remove green-2"],
            "",
        ),
        (
            vec![g.clone()],
            Some(&g),
            Undo::Remove,
            None,
            false,
            &[],
            "no earlier target",
        ),
        (
            vec![g.clone()],
            Some(&g),
            Undo::Remove,
            None,
            true,
            &[],
            "could not tell where the router points",
        ),
    ];
    for (n, (brought, now, undo, old, unknown, expected, kept)) in table.into_iter().enumerate() {
        let w = World {
            instances: brought,
            target: now.map(|i| i.endpoint.clone()),
            ..World::default()
        };
        let got = plan(&w, &none, &rewind(undo, old, unknown)).expect("a restore always plans");
        assert_eq!(short(&got.actions), expected, "row {n}");
        match kept {
            "" => assert!(got.kept.is_empty(), "row {n}: {:?}", got.kept),
            k => assert!(
                got.kept.len() == 1 && got.kept[0].contains(k),
                "row {n}: {:?}",
                got.kept
            ),
        }
    }
}

#[test]
fn nothing_is_ever_planned_against_the_instance_the_router_ends_at() {
    // Whatever the plan, no stop or remove names the instance at the router's target after it.
    let (b, g) = (blue1(), green2());
    let commands = [
        Command::Deploy,
        Command::Rollback,
        Command::Switch,
        Command::Down,
    ];
    let steps = [
        Step::Clear,
        Step::Start,
        Step::Switch,
        Step::Verify,
        Step::Drain,
        Step::Restore,
    ];
    for target in [Some(&b), Some(&g), None] {
        for states in [
            (running(), running()),
            (exited(), running()),
            (running(), exited()),
        ] {
            let w = world(
                &[(b.clone(), states.0.clone()), (g.clone(), states.1.clone())],
                target,
            );
            for command in commands {
                for step in steps {
                    let got = repaired(&w, &journaled(command, step));
                    let mut at = w.target.clone();
                    for a in &got.actions {
                        match a {
                            Action::RouteTo { endpoint, .. } => at = Some(endpoint.clone()),
                            Action::Stop(i) | Action::Remove(i) => assert_ne!(
                                Some(&i.endpoint),
                                at.as_ref(),
                                "{command} at {step}: {:?}",
                                short(&got.actions)
                            ),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn phrases_say_what_will_be_done_and_what_was_done() {
    let g = green2();
    let remove = Action::Remove(g.clone());
    assert!(remove
        .phrase(false)
        .starts_with("remove green instance green-2 (release v2)"));
    assert!(remove
        .phrase(true)
        .starts_with("removed green instance green-2"));
    let route = Action::RouteTo {
        color: Color::Blue,
        endpoint: blue1().endpoint,
    };
    assert_eq!(
        route.phrase(false),
        "point the router back to blue at 127.0.0.1:1"
    );
}

/// `world` with the router splitting `percent` from `from` to `to`.
fn split_world(
    instances: &[(Instance, InstanceState)],
    from: &Instance,
    to: &Instance,
    percent: u8,
) -> World {
    World {
        split: Some(Split::new(from.endpoint.clone(), to.endpoint.clone(), percent).unwrap()),
        ..world(instances, Some(from))
    }
}

#[test]
fn repair_of_a_deploy_killed_mid_shift_ends_the_split_then_drains_and_removes_the_new_color() {
    let (b, g) = (blue1(), green2());
    let w = split_world(
        &[(b.clone(), running()), (g.clone(), running())],
        &b,
        &g,
        10,
    );
    let got = repaired(&w, &journaled(Command::Deploy, Step::Shift));
    assert_eq!(
        short(&got.actions),
        [
            "route blue :1",
            "drain green-2",
            "remove green-2",
            "history deploy"
        ]
    );
}

#[test]
fn repair_of_a_promote_killed_mid_shift_ends_the_split_and_leaves_the_staged_color() {
    let (b, g) = (blue1(), green2());
    let w = split_world(
        &[(b.clone(), running()), (g.clone(), running())],
        &b,
        &g,
        50,
    );
    let got = repaired(&w, &journaled(Command::Promote, Step::Shift));
    assert_eq!(short(&got.actions), ["route blue :1", "history promote"]);
}

#[test]
fn a_split_without_a_journal_goes_back_to_its_current_endpoint_and_removes_nothing() {
    let (b, g) = (blue1(), green2());
    let w = split_world(
        &[(b.clone(), running()), (g.clone(), running())],
        &b,
        &g,
        10,
    );
    let got = plan(&w, &AppState::default(), &Intent::Repair).expect("a split to repair");
    assert_eq!(short(&got.actions), ["route blue :1"]);
    assert!(got.found.contains("10% to 127.0.0.1:2"), "{}", got.found);
}

#[test]
fn restore_during_a_shift_ends_the_split_although_the_target_did_not_move() {
    let (b, g) = (blue1(), green2());
    let w = World {
        instances: vec![g.clone()],
        ..split_world(&[], &b, &g, 10)
    };
    let got = plan(
        &w,
        &AppState::default(),
        &rewind(Undo::Remove, Some(&b), false),
    )
    .unwrap();
    assert_eq!(
        short(&got.actions),
        ["route blue :1", "drain green-2", "remove green-2"]
    );
}
