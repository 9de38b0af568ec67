//! The recovery planner: from what the engine sees (the [`World`]), what it saved (the
//! [`AppState`] and its journal) and what it wants (the [`Intent`]), the list of [`Action`]s that
//! puts things right.
//!
//! It is pure — no I/O, no clock — so that every rule is a table test (`tests.rs`); the
//! executor in `recover.rs` carries the actions out, as a kube-rs reconciler acts on what it
//! computed from the world. One planner serves three callers:
//!
//! - the **restore** after a failed or cancelled command: reconcile toward the old target (route
//!   back if the router moved, drain what took live traffic, undo what the command brought up);
//! - the **repair** of what an interrupted command left, by its journal: the same rewind when the
//!   command had not switched (or was routing back), or finishing it when it had;
//! - **status**, which shows the repair's plan as leftovers without carrying it out.

use std::collections::BTreeMap;

use crate::events::{Command, Step};
use crate::model::{Color, Endpoint, Instance, InstanceState, Release};
use crate::router::Split;
use crate::state::{AppState, Deployment, JournalEntry};

use super::calls::describe;

#[cfg(test)]
mod tests;

/// What the engine sees: the runtime's instances, where the router points, and the state of the
/// instances a plan depends on.
#[derive(Debug, Clone, Default)]
pub(super) struct World {
    /// Every instance the runtime has for the app.
    pub(super) instances: Vec<Instance>,
    /// Where the router points.
    pub(super) target: Option<Endpoint>,
    /// The traffic split in place, if any: a gradual shift a command did not finish (its
    /// `current` is the target, and its `next` takes a share of live traffic too).
    pub(super) split: Option<Split>,
    /// The instance that answers at the router's target: the live one.
    pub(super) live: Option<Instance>,
    /// The runtime's answer for the instances it was asked about, by instance id (not every
    /// instance: only those whose state a plan or a report depends on).
    pub(super) states: BTreeMap<String, InstanceState>,
}

impl World {
    pub(super) fn live_color(&self) -> Option<Color> {
        self.live.as_ref().map(|i| i.color)
    }

    /// The instances of `color` the router does not point at: the only ones the engine may
    /// stop or remove.
    pub(super) fn idle_of(&self, color: Color) -> Vec<Instance> {
        idle(&self.instances, color, self.target.as_ref())
    }

    /// The staged deployment of `state` and its instance, if it still stands here (its
    /// instance is in the runtime's list and not routed).
    pub(super) fn staged(&self, state: &AppState) -> Option<(Deployment, Instance)> {
        state
            .staged_in(&self.instances, self.target.as_ref())
            .map(|(d, i)| (d.clone(), i.clone()))
    }

    /// Whether `instance` takes a share of live traffic through a split.
    fn takes_a_share(&self, instance: &Instance) -> bool {
        self.split
            .as_ref()
            .is_some_and(|s| s.next() == &instance.endpoint)
    }

    /// The route back from a split in place: all traffic to its `current` endpoint.
    fn end_split(&self, fallback: Color) -> Option<Action> {
        let split = self.split.as_ref()?;
        let color_at = |e: &Endpoint| {
            self.instances
                .iter()
                .find(|i| &i.endpoint == e)
                .map(|i| i.color)
        };
        let color = color_at(split.current())
            .or_else(|| color_at(split.next()).map(Color::other))
            .unwrap_or(fallback);
        Some(Action::RouteTo {
            color,
            endpoint: split.current().clone(),
        })
    }

    /// Whether the runtime said `instance` runs (`false` when it was not asked).
    pub(super) fn runs(&self, instance: &Instance) -> bool {
        self.states
            .get(&instance.id)
            .is_some_and(InstanceState::is_running)
    }
}

fn idle(instances: &[Instance], color: Color, target: Option<&Endpoint>) -> Vec<Instance> {
    instances
        .iter()
        .filter(|i| i.color == color && Some(&i.endpoint) != target)
        .cloned()
        .collect()
}

/// What undoing a command does with what it brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undo {
    /// Stop and remove it (a deploy's new instance; a down being finished).
    Remove,
    /// Stop it, and keep it for the next rollback (a rollback that restarted a stopped color).
    Stop,
    /// Leave it running (a switch; a rollback to a color that was running).
    Leave,
}

impl Undo {
    /// What the repair of an interrupted `command` does with the instances of its color: a
    /// deploy's are removed, a rollback's are stopped (the next rollback can start them again),
    /// a switch started nothing, a down is finished. A staged deploy is undone like a deploy,
    /// an abort finished like a down; a promote leaves the staged color staged.
    pub(super) fn of_interrupted(command: Command) -> Undo {
        match command {
            Command::Deploy | Command::Stage | Command::Down | Command::Abort => Undo::Remove,
            Command::Rollback => Undo::Stop,
            // A promote started nothing: before its switch, the staged color stays staged.
            Command::Switch | Command::Promote | Command::Status | Command::Repair => Undo::Leave,
        }
    }
}

/// A command that failed or was cancelled, to be put back as it was.
#[derive(Debug, Clone)]
pub(super) struct Rewind {
    /// The color the command brought up.
    pub(super) color: Color,
    /// What to do with what it brought up.
    pub(super) undo: Undo,
    /// Where the router pointed before the command, and the color answering there.
    pub(super) old_target: Option<(Color, Endpoint)>,
    /// The router could not say where it points now (only when the switch may have happened).
    pub(super) target_unknown: Option<String>,
}

/// Why the planner runs.
#[derive(Debug, Clone)]
pub(super) enum Intent {
    /// Put back what served before a command that failed or was cancelled. The world holds
    /// what the command brought up, and where the router points now (or pointed, when the
    /// switch had not begun).
    Restore(Rewind),
    /// Repair what the interrupted command of the saved journal left.
    Repair,
}

/// One thing the executor does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Point the router at `endpoint`, where `color` answers. When it fails, the drains, stops
    /// and removes after it are skipped: the router may still point at what they take away.
    RouteTo {
        /// The color answering there.
        color: Color,
        /// The endpoint.
        endpoint: Endpoint,
    },
    /// Let the requests in flight to this instance finish: it took live traffic until now.
    Drain(Instance),
    /// Stop it (never what the router points at).
    Stop(Instance),
    /// Stop and remove it (never what the router points at).
    Remove(Instance),
    /// Record this release in `color`, answering at `endpoint`, as live; the recorded live
    /// deployment becomes `previous`.
    RecordLive {
        /// The color.
        color: Color,
        /// The release, with its artifact where one is recorded.
        release: Release,
        /// Where it answers.
        endpoint: Endpoint,
    },
    /// Append the interrupted command to the history, with outcome `interrupted` and `note`.
    RecordInterrupted {
        /// Its journal.
        journal: JournalEntry,
        /// What became of it.
        note: &'static str,
    },
}

impl Action {
    /// The action as a phrase: what will be done, or (`done`) what was done.
    pub(super) fn phrase(&self, done: bool) -> String {
        let verb = |will: &str, did: &str| if done { did } else { will }.to_string();
        match self {
            Action::RouteTo { color, endpoint } => {
                format!(
                    "{} the router back to {color} at {endpoint}",
                    verb("point", "pointed")
                )
            }
            Action::Drain(i) => format!("{} {}", verb("drain", "drained"), describe(i)),
            Action::Stop(i) => format!("{} {}", verb("stop", "stopped"), describe(i)),
            Action::Remove(i) => format!("{} {}", verb("remove", "removed"), describe(i)),
            Action::RecordLive { color, release, .. } => format!(
                "{} {color} (release {}) as live",
                verb("record", "recorded"),
                release.id
            ),
            Action::RecordInterrupted { journal, .. } => format!(
                "{} the interrupted `{}` in the history",
                verb("record", "recorded"),
                journal.command
            ),
        }
    }
}

/// The planner's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// What was found, as a sentence (for a repair: the interrupted command and where it
    /// stopped); empty for a restore.
    pub(super) found: String,
    /// What to do, in order.
    pub(super) actions: Vec<Action>,
    /// What the actions leave as it is on purpose, for the person reading.
    pub(super) notes: Vec<String>,
    /// What the plan cannot put right, each with what a person should do; a restore with any of
    /// these ends [`Error::Inconsistent`](crate::Error::Inconsistent).
    pub(super) kept: Vec<String>,
}

/// Works out the actions for `intent` on `world`, with the saved `state` (whose journal a
/// repair reads). `None` when there is nothing to do: no journal to repair.
pub(super) fn plan(world: &World, state: &AppState, intent: &Intent) -> Option<Plan> {
    match intent {
        Intent::Restore(rewind) => Some(restore(world, rewind)),
        Intent::Repair => match &state.journal {
            Some(journal) => Some(repair(world, state, journal)),
            None => world
                .split
                .as_ref()
                .map(|split| unfinished_shift(world, split)),
        },
    }
}

/// A split that no journal explains (the journal could not be written, or a person split by
/// hand): all traffic goes back to its `current` endpoint, the live one; nothing is removed.
fn unfinished_shift(world: &World, split: &Split) -> Plan {
    Plan {
        found: format!(
            "the router splits traffic: {}% to {} and the rest to {}, a gradual shift that no command is finishing",
            split.percent(),
            split.next(),
            split.current()
        ),
        actions: world.end_split(Color::Blue).into_iter().collect(),
        notes: vec![format!(
            "the instance at {} is left running (`down` takes it down)",
            split.next()
        )],
        kept: Vec::new(),
    }
}

/// A restore: back to the old target if the router moved, then undo.
fn restore(world: &World, r: &Rewind) -> Plan {
    let mut plan = Plan::default();
    let back = match (&r.old_target, &r.target_unknown) {
        // A split in place is ended too: its target is still the old one, but the new color
        // takes a share.
        (Some((color, endpoint)), unknown) => {
            (unknown.is_some() || world.target.as_ref() != Some(endpoint) || world.split.is_some())
                .then(|| Action::RouteTo {
                    color: *color,
                    endpoint: endpoint.clone(),
                })
        }
        (None, Some(e)) => {
            plan.kept.push(format!(
                "could not tell where the router points ({e}); the new {} instance was kept in case it is there",
                r.color
            ));
            return plan;
        }
        (None, None) => {
            if let Some(at) = &world.target {
                plan.kept.push(format!(
                    "the router points at {at} and had no earlier target to go back to; the {} instance there was kept so that the router does not point at nothing",
                    r.color
                ));
            }
            None
        }
    };
    plan.actions = rewind(world, r.color, r.undo, back, r.target_unknown.is_some());
    plan
}

/// Routes back (when `back` is set), drains what took live traffic, and undoes the instances
/// of `color` that the router does not point at once it is back.
fn rewind(
    world: &World,
    color: Color,
    undo: Undo,
    back: Option<Action>,
    target_unknown: bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let target_after = match &back {
        Some(Action::RouteTo { endpoint, .. }) => Some(endpoint.clone()),
        _ => world.target.clone(),
    };
    let routing_back = back.is_some();
    actions.extend(back);
    if undo == Undo::Leave {
        return actions;
    }
    for inst in idle(&world.instances, color, target_after.as_ref()) {
        // It served live traffic until the route back: let those requests finish (and nginx's
        // old workers let go of it) before it goes away.
        let took_traffic = target_unknown
            || world.target.as_ref() == Some(&inst.endpoint)
            || world.takes_a_share(&inst);
        if routing_back && took_traffic {
            actions.push(Action::Drain(inst.clone()));
        }
        actions.push(match undo {
            Undo::Stop => Action::Stop(inst),
            Undo::Remove | Undo::Leave => Action::Remove(inst),
        });
    }
    actions
}

/// The repair of an interrupted command, by its journal.
fn repair(world: &World, state: &AppState, journal: &JournalEntry) -> Plan {
    let color = journal.color;
    let mut plan = Plan {
        found: format!(
            "an interrupted `{}` (pid {}, started {}) stopped at its {} step",
            journal.command,
            journal.pid,
            crate::state::short_time(journal.started_at),
            journal.step
        ),
        ..Plan::default()
    };
    let undo = Undo::of_interrupted(journal.command);
    let switched = journal.command.routes() && world.live_color() == Some(color);

    // It was routing back after a failure when it died: finish routing back, if the color it
    // came from still runs.
    let back = (switched && journal.step == Step::Restore)
        .then_some(journal.from)
        .flatten()
        .and_then(|from| {
            world
                .instances
                .iter()
                .find(|i| i.color == from && world.runs(i))
        });

    if let (true, None) = (switched, back) {
        // The router points at the command's color: its switch happened, and that instance
        // passed readiness before it. Record it as live.
        finish(world, state, journal, &mut plan);
    } else {
        // Killed half-way through a gradual shift: the split goes first.
        let back = back
            .map(|old| Action::RouteTo {
                color: old.color,
                endpoint: old.endpoint.clone(),
            })
            .or_else(|| world.end_split(color.other()));
        plan.actions = rewind(world, color, undo, back, false);
        if plan.actions.is_empty() {
            plan.notes.push("nothing was left to repair".into());
        }
        plan.actions.push(Action::RecordInterrupted {
            journal: journal.clone(),
            note: "interrupted; what it left was repaired by a later command",
        });
    }
    plan
}

/// The interrupted command had switched: record its color as live, and drain the old color if
/// it died before the drain ended.
fn finish(world: &World, state: &AppState, journal: &JournalEntry, plan: &mut Plan) {
    let color = journal.color;
    plan.found = format!("{} after switching the router to {color}", plan.found);
    if let Some(inst) = &world.live {
        let release = journal
            .release
            .clone()
            .filter(|r| r.id == inst.release)
            .unwrap_or_else(|| state.release_of(color, &inst.release));
        plan.actions.push(Action::RecordLive {
            color,
            release,
            endpoint: inst.endpoint.clone(),
        });
    }
    // Died between the switch and the end of the drain: the old color may still have requests
    // in flight (and nginx's old workers may still send it new ones for a moment), so it is
    // drained now, before anything may stop or clear it.
    let undrained = matches!(
        journal.step,
        Step::Switch | Step::Verify | Step::PostSwitch | Step::Watch | Step::Drain
    );
    if let Some(from) = journal.from {
        if undrained {
            for inst in world.idle_of(from).into_iter().filter(|i| world.runs(i)) {
                plan.actions.push(Action::Drain(inst));
            }
        }
        plan.notes.push(format!(
            "the old color {from} is left as it was (`down {from}` takes it down)"
        ));
    }
    plan.actions.push(Action::RecordInterrupted {
        journal: journal.clone(),
        note: "interrupted after the switch; recorded as live by a later command",
    });
}
