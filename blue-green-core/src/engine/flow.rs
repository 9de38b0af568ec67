//! The commands that change what serves — `deploy`, `rollback`, `switch` — as one flow: bring an
//! instance up in a color, wait until it is ready, switch, verify, retire the old color, record;
//! and the restore that puts things back when a step before the end of the switch fails.

use tokio::time::Instant;

use crate::error::{ComponentError, Error, Leftovers};
use crate::events::{Event, Step};
use crate::model::{Color, Endpoint, Instance, InstanceState, Release};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{Deployment, JournalEntry, StateStore};

use super::calls::now_rfc3339;
use super::reconcile::World;
use super::run::{Run, Switched};
use super::KeepPrevious;

/// How the instance to switch to comes up.
enum Bring {
    /// Start the release afresh (deploy; rollback to a removed color).
    Start(Release),
    /// Start a stopped instance again (rollback to a stopped color).
    Restart(Instance),
    /// It is running already (switch; rollback to a color kept running).
    Existing(Instance),
}

/// What a failure does with the instance that was brought up: the opposite of [`Bring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    Remove,
    Stop,
    Leave,
}

struct Plan {
    color: Color,
    bring: Bring,
    undo: Undo,
    /// The release recorded as live on success.
    release: Release,
    /// The instance the router pointed at before, and the target itself.
    old: Option<Instance>,
    old_target: Option<Endpoint>,
    /// Drain, stop and keep the old color by policy (deploy, rollback), or leave it (switch).
    retire_old: bool,
}

fn journal_for<R, P, T, S>(
    run: &Run<'_, R, P, T, S>,
    color: Color,
    release: Option<Release>,
    from: Option<Color>,
) -> JournalEntry {
    JournalEntry {
        command: run.command,
        step: Step::Reconcile,
        color,
        release,
        from,
        started_at: run.started_at.clone(),
        pid: std::process::id(),
    }
}

fn usage<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &Run<'_, R, P, T, S>,
    message: String,
) -> Error {
    Error::Usage {
        app: run.engine.config().app.clone(),
        message,
    }
}

/// Reconciles, then fails with `Cancelled` if the token fired meanwhile.
async fn reconciled<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
) -> Result<World, Error> {
    let world = run.reconcile().await?;
    if run.cancelled() {
        return Err(run.cancelled_error(Step::Reconcile));
    }
    Ok(world)
}

pub(super) async fn deploy<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    release: Release,
) -> Result<Switched, Error> {
    let world = reconciled(run).await?;
    let from = world.live_color();
    // The idle color; with nothing live, the one that was not live last (its slot may still
    // hold the previous release, which `rollback` can bring back).
    let color = from
        .or(run.state.previous.as_ref().map(|d| d.color))
        .map_or(Color::Blue, Color::other);
    run.from = from;
    run.to = Some(color);
    run.journal = Some(journal_for(run, color, Some(release.clone()), from));

    let leftovers = world.idle_of(color);
    if !leftovers.is_empty() {
        clear(run, color, leftovers).await?;
    }
    let plan = Plan {
        color,
        bring: Bring::Start(release.clone()),
        undo: Undo::Remove,
        release,
        old: world.live.clone(),
        old_target: world.target.clone(),
        retire_old: true,
    };
    bring_up(run, plan).await
}

pub(super) async fn rollback<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
) -> Result<Switched, Error> {
    let world = reconciled(run).await?;
    let Some(previous) = run.state.previous.clone() else {
        return Err(usage(
            run,
            "there is no previous deployment to roll back to; `deploy` a release first".into(),
        ));
    };
    let from = world.live_color();
    let color = previous.color;
    if from == Some(color) {
        return Err(usage(
            run,
            format!("the previous color {color} is the live one; there is nothing to roll back to"),
        ));
    }
    run.release = Some(previous.release.id.to_string());
    run.from = from;
    run.to = Some(color);
    run.journal = Some(journal_for(
        run,
        color,
        Some(previous.release.clone()),
        from,
    ));

    // The previous release's instance, if the runtime still has it; anything else in that
    // slot is a leftover and goes.
    let mut slot = world.idle_of(color);
    let kept = slot
        .iter()
        .position(|i| i.release == previous.release.id)
        .map(|at| slot.remove(at));
    let eng = run.engine;
    let kept_state = match &kept {
        Some(inst) => Some(
            eng.rt_state(inst, None)
                .await
                .map_err(|e| eng.step_error(Step::Reconcile, color, e))?,
        ),
        None => None,
    };
    let (bring, undo) = match (kept, kept_state) {
        (Some(inst), Some(InstanceState::Running)) => (Bring::Existing(inst), Undo::Leave),
        (Some(inst), Some(InstanceState::Exited { .. })) => (Bring::Restart(inst), Undo::Stop),
        (Some(gone), _) => {
            slot.push(gone);
            (Bring::Start(previous.release.clone()), Undo::Remove)
        }
        (None, _) => (Bring::Start(previous.release.clone()), Undo::Remove),
    };
    if !slot.is_empty() {
        clear(run, color, slot).await?;
    }
    let plan = Plan {
        color,
        bring,
        undo,
        release: previous.release,
        old: world.live.clone(),
        old_target: world.target.clone(),
        retire_old: true,
    };
    bring_up(run, plan).await
}

pub(super) async fn switch<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    color: Color,
) -> Result<Switched, Error> {
    let world = reconciled(run).await?;
    let from = world.live_color();
    if from == Some(color) {
        return Err(usage(run, format!("{color} is already live")));
    }
    let eng = run.engine;
    let mut running = None;
    for inst in world.idle_of(color) {
        let state = eng
            .rt_state(&inst, None)
            .await
            .map_err(|e| eng.step_error(Step::Reconcile, color, e))?;
        if state.is_running() {
            running = Some(inst);
            break;
        }
    }
    let Some(inst) = running else {
        return Err(usage(
            run,
            format!(
                "{color} has no running instance to switch to; `rollback` starts the previous release again, `deploy` starts a new one"
            ),
        ));
    };
    let release = [run.state.previous.as_ref(), run.state.live.as_ref()]
        .into_iter()
        .flatten()
        .find(|d| d.color == color && d.release.id == inst.release)
        .map(|d| d.release.clone())
        .unwrap_or_else(|| Release::reported(&inst.release));
    run.release = Some(release.id.to_string());
    run.from = from;
    run.to = Some(color);
    run.journal = Some(journal_for(run, color, Some(release.clone()), from));
    let plan = Plan {
        color,
        bring: Bring::Existing(inst),
        undo: Undo::Leave,
        release,
        old: world.live.clone(),
        old_target: world.target.clone(),
        retire_old: false,
    };
    bring_up(run, plan).await
}

/// Removes leftovers from `color`'s slot (never what the router points at).
async fn clear<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    color: Color,
    leftovers: Vec<Instance>,
) -> Result<(), Error> {
    let eng = run.engine;
    let routed = run.target.clone();
    let result = run
        .step(Step::Clear, Some(color), true, async {
            for inst in &leftovers {
                eng.remove_unless_routed(inst, routed.as_ref())
                    .await
                    .map_err(|e| eng.step_error(Step::Clear, color, e))?;
            }
            Ok(())
        })
        .await;
    if result.is_err() {
        // Nothing was started: only the journal must go.
        run.save_final().await;
    }
    result
}

/// Start (or restart), ready, switch, verify; then drain, stop and keep the old color; record.
async fn bring_up<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    plan: Plan,
) -> Result<Switched, Error> {
    let eng = run.engine;
    let color = plan.color;
    let here = Some(color);

    let started = match &plan.bring {
        Bring::Start(release) => {
            run.step(Step::Start, here, true, async {
                eng.rt_start(color, release)
                    .await
                    .map_err(|e| eng.step_error(Step::Start, color, e))
            })
            .await
        }
        Bring::Restart(inst) => {
            run.step(Step::Start, here, true, async {
                eng.rt_restart(inst)
                    .await
                    .map_err(|e| eng.step_error(Step::Start, color, e))
            })
            .await
        }
        Bring::Existing(inst) => Ok(inst.clone()),
    };
    let inst = match started {
        Ok(inst) => inst,
        Err(e) => return Err(restore(run, &plan, None, false, e).await),
    };

    if let Err(e) = run
        .step(Step::Ready, here, true, eng.wait_ready(&inst))
        .await
    {
        return Err(restore(run, &plan, Some(&inst), false, e).await);
    }

    let switched = run
        .step(Step::Switch, here, true, async {
            eng.router_route_to(&inst.endpoint)
                .await
                .map_err(|e| eng.step_error(Step::Switch, color, e))
        })
        .await;
    let receipt = match switched {
        Ok(receipt) => receipt,
        Err(e) => return Err(restore(run, &plan, Some(&inst), true, e).await),
    };
    run.target = Some(inst.endpoint.clone());
    run.emit(Event::Routed {
        color,
        endpoint: inst.endpoint.clone(),
    });

    let verified = run
        .step(Step::Verify, here, true, async {
            eng.router_verify(&inst, &receipt)
                .await
                .map_err(|e| eng.step_error(Step::Verify, color, e))
        })
        .await;
    if let Err(e) = verified {
        return Err(restore(run, &plan, Some(&inst), true, e).await);
    }
    run.switched = true;

    if let (true, Some(old)) = (plan.retire_old, plan.old.as_ref()) {
        let old_color = old.color;
        match run
            .step(Step::Drain, Some(old_color), true, eng.drain(&old.endpoint))
            .await
        {
            Ok(warnings) => {
                for w in warnings {
                    run.warn(w);
                }
            }
            Err(e) => {
                // Cancelled while draining: the old color still runs, so go back to it.
                run.switched = false;
                return Err(restore(run, &plan, Some(&inst), true, e).await);
            }
        }
        retire(run, old, &inst).await;
    }

    // Record: the new color is live, the old one is what `rollback` goes back to.
    let began = Instant::now();
    let _ = run.write_journal(Step::Record).await;
    run.emit(Event::StepStarted {
        step: Step::Record,
        color: here,
    });
    let live = Deployment {
        color,
        release: plan.release.clone(),
        endpoint: inst.endpoint.clone(),
        since: now_rfc3339(),
    };
    if let Some(old) = run.state.live.take() {
        if old.color != color {
            run.state.previous = Some(old);
        }
    }
    run.state.live = Some(live.clone());
    run.save_final().await;
    run.end_step(Step::Record, here, began, Ok(()));
    Ok((live, plan.old.as_ref().map(|o| o.color)))
}

/// Stops the old color (unless kept running) and removes it (when so configured). Failures
/// are warnings: the new color serves already.
async fn retire<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    old: &Instance,
    new: &Instance,
) {
    let eng = run.engine;
    let keep = eng.config().switch.keep_previous;
    if keep == KeepPrevious::Running {
        return;
    }
    let routed = Some(&new.endpoint);
    let stopped = run
        .step(Step::Stop, Some(old.color), false, async {
            eng.stop_unless_routed(old, routed)
                .await
                .map_err(|e| eng.step_error(Step::Stop, old.color, e))
        })
        .await;
    if let Err(e) = stopped {
        run.warn(format!(
            "the deploy succeeded, but the old color did not stop: {e}; `down {}` takes it down",
            old.color
        ));
        return;
    }
    if keep == KeepPrevious::Removed {
        let removed = run
            .step(Step::Remove, Some(old.color), false, async {
                eng.rt_remove(old)
                    .await
                    .map_err(|e| eng.step_error(Step::Remove, old.color, e))
            })
            .await;
        if let Err(e) = removed {
            run.warn(format!(
                "the deploy succeeded, but the old color was not removed: {e}; `down {}` removes it",
                old.color
            ));
        }
    }
}

/// Puts back what was serving after `cause`: the router to its old target (when the switch may
/// have happened), the brought-up instance undone. Returns `cause`, or
/// [`Error::Inconsistent`] naming what is left when putting back failed.
async fn restore<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    plan: &Plan,
    new: Option<&Instance>,
    maybe_routed: bool,
    cause: Error,
) -> Error {
    let eng = run.engine;
    let color = plan.color;
    let began = Instant::now();
    if let Err(e) = run.write_journal(Step::Restore).await {
        run.warn(format!("could not write the journal before restoring: {e}"));
    }
    run.emit(Event::StepStarted {
        step: Step::Restore,
        color: Some(color),
    });
    let mut left = Vec::new();
    // Whether the router may point at the new instance, which then must not be taken away.
    let mut router_on_new = false;
    // Whether the router had to be sent back, i.e. the new instance took live traffic.
    let mut routed_back = false;

    if maybe_routed {
        let now = eng.router_target().await;
        if matches!(&now, Ok(t) if *t == plan.old_target) {
            run.target = plan.old_target.clone();
        } else if let Some(old) = &plan.old_target {
            let old_color = plan.old.as_ref().map_or(color.other(), |o| o.color);
            routed_back = true;
            if let Err(e) = run.route(old_color, old).await {
                router_on_new = true;
                left.push(format!(
                    "the router may still point at {color}: routing back to {old} failed: {e}; run `switch {old_color}`, or fix the router by hand"
                ));
            }
        } else {
            match now {
                Ok(None) => run.target = None,
                Ok(Some(at)) => {
                    router_on_new = new.is_some_and(|n| n.endpoint == at);
                    run.target = Some(at.clone());
                    left.push(format!(
                        "the router points at {at} and had no earlier target to go back to; the {color} instance there was kept so that the router does not point at nothing"
                    ));
                }
                Err(e) => {
                    router_on_new = true;
                    left.push(format!(
                        "could not tell where the router points ({e}); the new {color} instance was kept in case it is there"
                    ));
                }
            }
        }
    }

    if !router_on_new {
        let routed = run.target.clone();
        // The new instance served live traffic between the switch and the route back: let
        // those requests finish (and nginx's old workers let go of it) before it goes away.
        if let (true, Some(inst)) = (routed_back, new) {
            if routed.as_ref() != Some(&inst.endpoint) && plan.undo != Undo::Leave {
                match eng.drain(&inst.endpoint).await {
                    Ok(warnings) => warnings.into_iter().for_each(|w| run.warn(w)),
                    Err(e) => run.warn(format!("draining {color} before undoing it failed: {e}")),
                }
            }
        }
        let undone: Result<(), ComponentError> = match (new, plan.undo, &plan.bring) {
            (Some(inst), Undo::Remove, _) => eng.remove_unless_routed(inst, routed.as_ref()).await,
            (Some(inst), Undo::Stop, _) | (None, Undo::Stop, Bring::Restart(inst)) => {
                eng.stop_unless_routed(inst, routed.as_ref()).await
            }
            (None, Undo::Remove, _) => {
                // The start failed or was cut short: remove whatever it left in the slot.
                match eng.rt_list().await {
                    Ok(all) => {
                        let mut result = Ok(());
                        for inst in all.iter().filter(|i| {
                            i.color == color && Some(&i.endpoint) != routed.as_ref()
                        }) {
                            if let Err(e) = eng.remove_unless_routed(inst, routed.as_ref()).await
                            {
                                result = Err(e);
                            }
                        }
                        result
                    }
                    Err(e) => Err(ComponentError::new(
                        e.kind,
                        format!(
                            "could not list the instances to remove what the failed start left in {color}: {}",
                            e.message
                        ),
                    )),
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = undone {
            left.push(format!("{e}; run `down {color}` to remove it"));
        }
    }

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
        run.end_step(Step::Restore, Some(color), began, Err(&error));
    } else {
        run.save_final().await;
        run.end_step(Step::Restore, Some(color), began, Ok(()));
    }
    error
}
