//! The commands that change what serves — `deploy`, `rollback`, `switch` — as one flow: bring an
//! instance up in a color, wait until it is ready, switch, verify, retire the old color, record.
//! When a step before the end of the switch fails, the restore (`recover`, planned by `plan`)
//! puts things back.

use tokio::time::Instant;

use crate::error::Error;
use crate::events::{Command, Event, Step};
use crate::hooks::{HookContext, HookPoint};
use crate::model::{Color, Endpoint, Instance, InstanceState, Release};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{AppState, Deployment, JournalEntry, StateStore};

use super::calls::{describe, now};
use super::plan::{Undo, World};
use super::recover::Undoing;
use super::run::{Run, Switched};
use super::shift::{refuse_unsplittable, shift};
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

/// What a command that changes what serves is about to do.
struct Switchover {
    color: Color,
    bring: Bring,
    /// What a failure does with the instance that was brought up: the opposite of `bring`.
    undo: Undo,
    /// The release recorded as live on success.
    release: Release,
    /// The instance the router pointed at before, and the target itself.
    old: Option<Instance>,
    old_target: Option<Endpoint>,
    /// Drain, stop and keep the old color by policy (deploy, rollback), or leave it (switch).
    retire_old: bool,
    /// Stop once the new instance is ready (and its `pre_switch` hook passed), and record it
    /// as staged instead of switching (`deploy --no-switch`).
    stage_only: bool,
    /// Run the `pre_switch` hook (it ran already when a staged color is promoted).
    pre_switch_hook: bool,
    /// Move traffic by `[switch] steps` when they are set (deploy and promote; a rollback or
    /// a switch goes back at once, as a way out should).
    shift: bool,
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
        started_at: run.started_at,
        pid: std::process::id(),
    }
}

pub(super) fn usage<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
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

/// `deploy` (`stage_only: false`), or `deploy --no-switch` (`stage_only: true`: start, ready
/// and `pre_switch`, then record the new color as staged and leave the router).
pub(super) async fn deploy<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    release: Release,
    stage_only: bool,
) -> Result<Switched, Error> {
    refuse_unsplittable(run)?;
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
    let app = run.engine.config().app.clone();
    run.enable_hooks(
        HookContext::new(app, color, release.id.to_string()),
        world.live.as_ref(),
    );

    if let Some((staged, _)) = run.state.staged_in(&world.instances, world.target.as_ref()) {
        run.warn(format!(
            "release {} staged in {color} is replaced by this deploy",
            staged.release.id
        ));
        let _ = run.end_preview(color).await;
    }
    // Whatever was staged in this slot goes with the clear below.
    run.state.staged = None;
    let leftovers = world.idle_of(color);
    if !leftovers.is_empty() {
        clear(run, color, leftovers).await?;
    }
    let change = Switchover {
        color,
        bring: Bring::Start(release.clone()),
        undo: Undo::Remove,
        release,
        old: world.live.clone(),
        old_target: world.target.clone(),
        retire_old: true,
        stage_only,
        pre_switch_hook: true,
        shift: true,
    };
    bring_up(run, change).await
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
    let change = Switchover {
        color,
        bring,
        undo,
        release: previous.release,
        old: world.live.clone(),
        old_target: world.target.clone(),
        retire_old: true,
        stage_only: false,
        pre_switch_hook: false,
        shift: false,
    };
    bring_up(run, change).await
}

/// `promote`: switch to the staged color (re-checking its readiness first), verify, then
/// retire the old color as a deploy does, with the deploy's `post_switch` and `post_deploy`
/// hooks. With nothing staged it changes nothing: `Ok(None)` (a second promote, or one after
/// a crash whose repair finished the first).
pub(super) async fn promote<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
) -> Result<Option<Switched>, Error> {
    refuse_unsplittable(run)?;
    let world = reconciled(run).await?;
    let Some((staged, inst)) = world.staged(&run.state) else {
        return Ok(None);
    };
    let color = staged.color;
    let from = world.live_color();
    run.release = Some(staged.release.id.to_string());
    run.from = from;
    run.to = Some(color);
    run.journal = Some(journal_for(run, color, Some(staged.release.clone()), from));
    let app = run.engine.config().app.clone();
    run.enable_hooks(
        HookContext::new(app, color, staged.release.id.to_string()),
        world.live.as_ref(),
    );
    let change = Switchover {
        color,
        bring: Bring::Existing(inst),
        // A failed promote leaves the staged color staged: `promote` again, or `abort`.
        undo: Undo::Leave,
        release: staged.release,
        old: world.live.clone(),
        old_target: world.target.clone(),
        retire_old: true,
        stage_only: false,
        pre_switch_hook: false,
        shift: true,
    };
    bring_up(run, change).await.map(Some)
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
    let release = run.state.release_of(color, &inst.release);
    run.release = Some(release.id.to_string());
    run.from = from;
    run.to = Some(color);
    run.journal = Some(journal_for(run, color, Some(release.clone()), from));
    let change = Switchover {
        color,
        bring: Bring::Existing(inst),
        undo: Undo::Leave,
        release,
        old: world.live.clone(),
        old_target: world.target.clone(),
        retire_old: false,
        stage_only: false,
        pre_switch_hook: false,
        shift: false,
    };
    bring_up(run, change).await
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
    match &result {
        Ok(()) => leftovers.iter().for_each(|inst| run.state.unstage(inst)),
        // Nothing was started: only the journal must go.
        Err(_) => run.save_final().await,
    }
    result
}

/// Start (or restart), ready, switch, verify; then drain, stop and keep the old color; record.
async fn bring_up<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    change: Switchover,
) -> Result<Switched, Error> {
    let eng = run.engine;
    let color = change.color;
    let here = Some(color);

    // `pre_deploy` runs before a release starts: not for a staged color being promoted.
    let fresh = matches!(change.bring, Bring::Start(_));
    let pre_deployed = if fresh {
        run.hook(HookPoint::PreDeploy, true).await
    } else {
        Ok(())
    };
    if let Err(e) = pre_deployed {
        // Nothing was started: only the journal must go.
        run.save_final().await;
        return Err(e);
    }
    let started = match &change.bring {
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
        Err(e) => return Err(restore(run, &change, None, false, e).await),
    };

    run.hooks_see(&inst.endpoint);
    if let Err(e) = run
        .step(Step::Ready, here, true, eng.wait_ready(&inst))
        .await
    {
        return Err(restore(run, &change, Some(&inst), false, e).await);
    }
    if change.pre_switch_hook {
        if let Err(e) = run.hook(HookPoint::PreSwitch, true).await {
            return Err(restore(run, &change, Some(&inst), false, e).await);
        }
    }
    if change.stage_only {
        // The end of `deploy --no-switch`: live traffic was not touched; a router that can
        // preview shows the staged color beside the live one.
        let previewed = run
            .step(Step::Preview, here, true, async {
                eng.router_preview(Some(&inst.endpoint))
                    .await
                    .map_err(|e| eng.step_error(Step::Preview, color, e))
            })
            .await;
        let address = match previewed {
            Ok(address) => address,
            Err(e) => {
                // The router may have begun the preview of what is about to be removed.
                let _ = run.end_preview(color).await;
                return Err(restore(run, &change, Some(&inst), false, e).await);
            }
        };
        run.emit(Event::Previewed {
            color,
            address: address.clone(),
        });
        run.state.preview = address;
        let staged = record(run, &change, &inst, |state, d| state.staged = Some(d)).await;
        return Ok((staged, change.old.as_ref().map(|o| o.color)));
    }

    if let (true, Some(old)) = (change.shift, change.old.as_ref()) {
        if let Err(e) = shift(run, color, old, &inst).await {
            return Err(restore(run, &change, Some(&inst), true, e).await);
        }
    } else if let (true, None, Some(steps)) =
        (change.shift, &change.old, &eng.config().switch.steps)
    {
        run.warn(format!(
            "nothing was live, so there is no traffic to shift step by step ({steps}): {color} takes all of it at once"
        ));
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
        Err(e) => return Err(restore(run, &change, Some(&inst), true, e).await),
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
        return Err(restore(run, &change, Some(&inst), true, e).await);
    }
    run.switched = true;
    if run.command == Command::Promote {
        // The staged color is live: its preview is not needed any more.
        let _ = run.end_preview(color).await;
    }
    if let Err(e) = run.hook(HookPoint::PostSwitch, true).await {
        // The old color still runs (it is drained after this hook): going back is possible
        // when there was one.
        let back = eng.config().switch.rollback_on_post_switch_failure
            || matches!(e, Error::Cancelled { .. });
        if back && change.old.is_some() {
            run.switched = false;
            return Err(restore(run, &change, Some(&inst), true, e).await);
        }
        run.warn(format!(
            "{e}; {color} stays live{}",
            if change.old.is_some() {
                " (`[switch] rollback_on_post_switch_failure = true` routes back instead)"
            } else {
                ": there was no color before it to go back to"
            }
        ));
    }

    // The watch: the old color still runs, so a failure can route back to it. An interrupt
    // ends the watch early and keeps the new color live: it was asked for after the switch.
    let mut interrupt_spent = false;
    let watch = !eng.config().switch.watch.is_zero() && change.retire_old;
    if let (true, Some(old)) = (watch, change.old.as_ref()) {
        let cancel = run.cancel_token();
        // Not cancellable as a step: an interrupt ends the watch itself, successfully.
        match run
            .step(Step::Watch, here, false, eng.watch(&inst, &cancel))
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                interrupt_spent = true;
                run.warn(format!(
                    "the watch was ended by an interrupt: {color} stays live, and {} is drained and retired as usual",
                    old.color
                ));
            }
            Err(e) => {
                run.switched = false;
                return Err(restore(run, &change, Some(&inst), true, e).await);
            }
        }
    }

    if let (true, Some(old)) = (change.retire_old, change.old.as_ref()) {
        let old_color = old.color;
        match run
            .step(
                Step::Drain,
                Some(old_color),
                !interrupt_spent,
                eng.drain(&old.endpoint),
            )
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
                return Err(restore(run, &change, Some(&inst), true, e).await);
            }
        }
        retire(run, old, &inst).await;
    }

    // Record: the new color is live, the old one is what `rollback` goes back to.
    let live = record(run, &change, &inst, AppState::go_live).await;
    // Recorded: nothing after this is journaled.
    run.journal = None;
    run.hook_or_warn(HookPoint::PostDeploy).await;
    Ok((live, change.old.as_ref().map(|o| o.color)))
}

/// The `record` step: saves the deployment of `inst` (by `keep`: as live, or as staged) and
/// clears the journal. A failed save is a warning (`save_final`).
async fn record<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    change: &Switchover,
    inst: &Instance,
    keep: fn(&mut AppState, Deployment),
) -> Deployment {
    let here = Some(change.color);
    let began = Instant::now();
    let _ = run.write_journal(Step::Record).await;
    run.emit(Event::StepStarted {
        step: Step::Record,
        color: here,
    });
    let deployment = Deployment {
        color: change.color,
        release: change.release.clone(),
        endpoint: inst.endpoint.clone(),
        since: now(),
    };
    keep(&mut run.state, deployment.clone());
    run.save_final().await;
    run.end_step(Step::Record, here, began, Ok(()));
    deployment
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
    let grace = eng.config().switch.stop_timeout;
    let stop_began = Instant::now();
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
    if !grace.is_zero() && stop_began.elapsed() >= grace {
        // The runtime waited out the whole grace period: the app did not exit on its stop
        // signal and was killed, every time it is stopped.
        run.warn(format!(
            "stopping {} took the whole grace period ({}s): it did not exit on its stop signal and was killed. An app that ignores SIGTERM (a shell or busybox as PID 1) does this at every stop: run it under an init (compose `init: true`, docker runtime `init = true`) or set a stop signal it handles; see docs/guide.md, \"Stopping fast\"",
            describe(old),
            grace.as_secs()
        ));
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

/// Undoes `change` after `cause` through the one recovery path (`recover`): `new` is the
/// instance brought up, if it came up.
async fn restore<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    change: &Switchover,
    new: Option<&Instance>,
    maybe_routed: bool,
    cause: Error,
) -> Error {
    let restarting = match &change.bring {
        Bring::Restart(inst) => Some(inst),
        Bring::Start(_) | Bring::Existing(_) => None,
    };
    let undoing = Undoing {
        color: change.color,
        undo: change.undo,
        old: change.old.as_ref(),
        old_target: change.old_target.as_ref(),
        brought: new.or(restarting),
        maybe_routed,
    };
    run.restore(undoing, cause).await
}
