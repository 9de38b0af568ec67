//! The executor of the recovery planner (`plan`): it gathers what the planner needs to see,
//! carries the planned actions out, and reports what was done and what is left. The restore
//! after a failed command and the repair of an interrupted one both end here.

use tokio::time::Instant;

use crate::error::{ComponentError, Error, Leftovers};
use crate::events::{Event, Step};
use crate::model::{Color, Endpoint, Instance};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{DeployRecord, Deployment, Outcome, StateStore};

use super::calls::{describe, now};
use super::plan::{plan, Action, Intent, Rewind, Undo, World};
use super::run::Run;

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub(super) struct Carried {
    /// What was done, as phrases ("removed green instance …").
    pub(super) done: Vec<String>,
    /// What failed.
    pub(super) failed: Vec<Unrepaired>,
}

/// An action that failed: the thing left, and what to do about it.
#[derive(Debug)]
pub(super) struct Unrepaired {
    /// The color it concerned.
    pub(super) color: Color,
    /// What the component said.
    pub(super) source: ComponentError,
    /// What is left and what to run, as a sentence.
    pub(super) message: String,
}

/// What a command that failed or was cancelled had brought about, for its restore.
pub(super) struct Undoing<'a> {
    /// The color it brought up.
    pub(super) color: Color,
    /// What to do with what it brought up.
    pub(super) undo: Undo,
    /// The instance the router pointed at before, and the target itself.
    pub(super) old: Option<&'a Instance>,
    pub(super) old_target: Option<&'a Endpoint>,
    /// The instance it brought up (or was restarting), if known.
    pub(super) brought: Option<&'a Instance>,
    /// Whether the router may have moved: the failure came at or after the switch.
    pub(super) maybe_routed: bool,
}

impl<'e, R: Runtime, P: HealthProbe, T: Router, S: StateStore> Run<'e, R, P, T, S> {
    /// Carries out `actions` in order. A failed route skips the drains, stops and removes after
    /// it (the router may still point at what they would take away); other failures are
    /// collected and the rest goes on, except the history line of an interrupted command, which
    /// is written only once it is repaired. Stops and removes go through the guard that never
    /// takes away what the router points at.
    pub(super) async fn carry_out(&mut self, actions: &[Action]) -> Carried {
        let eng = self.engine;
        let mut carried = Carried::default();
        let mut router_unsure = false;
        for action in actions {
            let result = match action {
                Action::RouteTo { color, endpoint } => {
                    self.route(*color, endpoint).await.map_err(|e| {
                        router_unsure = true;
                        let message = format!(
                            "routing back to {color} at {endpoint} failed: {e}; the router may still point at the new instance: run `switch {color}`, or fix the router by hand"
                        );
                        (*color, e, message)
                    })
                }
                Action::Drain(_) | Action::Stop(_) | Action::Remove(_) if router_unsure => continue,
                Action::Drain(inst) => {
                    match eng.drain(&inst.endpoint).await {
                        Ok(warnings) => warnings.into_iter().for_each(|w| self.warn(w)),
                        Err(e) => self.warn(format!("draining {} failed: {e}", describe(inst))),
                    }
                    Ok(())
                }
                Action::Stop(inst) => eng
                    .stop_unless_routed(inst, self.target.as_ref())
                    .await
                    .map_err(|e| left_in(inst, e)),
                Action::Remove(inst) => {
                    let removed = eng
                        .remove_unless_routed(inst, self.target.as_ref())
                        .await
                        .map_err(|e| left_in(inst, e));
                    if removed.is_ok() {
                        self.state.unstage(inst);
                    }
                    removed
                }
                Action::RecordLive {
                    color,
                    release,
                    endpoint,
                } => {
                    self.state.go_live(Deployment {
                        color: *color,
                        release: release.clone(),
                        endpoint: endpoint.clone(),
                        since: now(),
                    });
                    Ok(())
                }
                Action::RecordInterrupted { .. } if !carried.failed.is_empty() => continue,
                Action::RecordInterrupted { journal, note } => {
                    let record = DeployRecord {
                        command: journal.command,
                        release: journal.release.as_ref().map(|r| r.id.to_string()),
                        from: journal.from,
                        to: (!matches!(
                            journal.command,
                            crate::events::Command::Down | crate::events::Command::Abort
                        ))
                        .then_some(journal.color),
                        outcome: Outcome::Interrupted,
                        error: Some(format!("{note} (at its {} step)", journal.step)),
                        started_at: journal.started_at,
                        finished_at: now(),
                        steps: Vec::new(),
                        warnings: Vec::new(),
                        hooks: Vec::new(),
                    };
                    if let Err(e) = eng.store_append(&record).await {
                        self.warn(format!(
                            "could not append the interrupted command to the history: {e}"
                        ));
                    }
                    continue;
                }
            };
            match result {
                Ok(()) => carried.done.push(action.phrase(true)),
                Err((color, source, message)) => carried.failed.push(Unrepaired {
                    color,
                    source,
                    message,
                }),
            }
        }
        carried
    }

    /// The repair of what an interrupted command left, by the journal in `self.state`. Each
    /// repair is reported as a warning. The journal is cleared once everything is repaired;
    /// when something fails it stays (so that `status` still lists it and the next command
    /// tries again), and the failures go to `self.unrepaired` (a command that goes on clears
    /// what is in its way itself).
    pub(super) async fn repair_journal(&mut self, world: &World) {
        let Some(plan) = plan(world, &self.state, &Intent::Repair) else {
            return;
        };
        let journal = self.state.journal.take();
        let carried = self.carry_out(&plan.actions).await;
        if !carried.failed.is_empty() {
            self.state.journal = journal;
        }
        let mut message = plan.found.clone();
        let done: Vec<String> = carried.done.into_iter().chain(plan.notes).collect();
        if !done.is_empty() {
            message = format!("{message}; {}", done.join(", "));
        }
        self.note_repair(message);
        for failed in carried.failed {
            self.warn(format!(
                "{}; repairing it failed: {}",
                plan.found, failed.message
            ));
            self.unrepaired.push(failed);
        }
    }

    /// Puts back what was serving after `cause`: reconcile toward the old target (route back if
    /// the router may have moved, drain what took live traffic, undo what was brought up), as
    /// the planner says. Returns `cause`, or [`Error::Inconsistent`] naming what is left when
    /// putting back failed; then the journal is kept at `restore` so that the next command tries
    /// again.
    pub(super) async fn restore(&mut self, undoing: Undoing<'_>, cause: Error) -> Error {
        let eng = self.engine;
        let color = undoing.color;
        let began = Instant::now();
        if let Err(e) = self.write_journal(Step::Restore).await {
            self.warn(format!("could not write the journal before restoring: {e}"));
        }
        self.emit(Event::StepStarted {
            step: Step::Restore,
            color: Some(color),
        });
        let mut left = Vec::new();

        // What the planner needs to see: where the router points now (when it may have moved),
        // and what the command left in its color.
        let mut target_unknown = None;
        let mut split = None;
        if undoing.maybe_routed {
            match eng.router_target().await {
                Ok(now) => self.target = now,
                Err(e) => target_unknown = Some(e.to_string()),
            }
            // A gradual shift's split: its target is still the old one, so only this tells
            // that the new color takes a share. Unknown counts as possibly split.
            match eng.router_current_split().await {
                Ok(now) => split = now,
                Err(e) => {
                    target_unknown.get_or_insert(e.to_string());
                }
            }
        }
        let instances = match undoing.brought {
            Some(inst) => vec![inst.clone()],
            // The start failed or was cut short: whatever it left in the slot goes.
            None if undoing.undo == Undo::Remove => match eng.rt_list().await {
                Ok(all) => all.into_iter().filter(|i| i.color == color).collect(),
                Err(e) => {
                    left.push(format!(
                        "could not list the instances to remove what the failed start left in {color}: {}; run `down {color}` to remove it",
                        e.message
                    ));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let world = World {
            instances,
            target: self.target.clone(),
            split,
            ..World::default()
        };
        let rewind = Rewind {
            color,
            undo: undoing.undo,
            old_target: undoing.old_target.map(|t| {
                let old_color = undoing.old.map_or(color.other(), |o| o.color);
                (old_color, t.clone())
            }),
            target_unknown,
        };
        let planned = plan(&world, &self.state, &Intent::Restore(rewind)).unwrap_or_default();
        left.extend(planned.kept);
        let carried = self.carry_out(&planned.actions).await;
        left.extend(carried.failed.into_iter().map(|f| f.message));

        let error = if left.is_empty() {
            cause
        } else {
            Error::Inconsistent {
                app: eng.config().app.clone(),
                cause: Box::new(cause),
                left: Leftovers(left),
            }
        };
        if matches!(error, Error::Inconsistent { .. }) {
            // Keep the journal (at its restore step) so that the next command tries again.
            self.end_step(Step::Restore, Some(color), began, Err(&error));
        } else {
            self.save_final().await;
            self.end_step(Step::Restore, Some(color), began, Ok(()));
        }
        error
    }
}

/// A stop or remove that failed: what is left, and what to run.
fn left_in(inst: &Instance, e: ComponentError) -> (Color, ComponentError, String) {
    let message = format!("{e}; run `down {}` to remove it", inst.color);
    (inst.color, e, message)
}
