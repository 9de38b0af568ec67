//! `down`, `repair` and `status`: the commands that do not switch.

use crate::error::{Error, LockHolder};
use crate::events::{millis, Command, Event, Step};
use crate::model::{Color, Instance};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{LockError, Outcome, StateStore};

use super::calls::within;
use super::plan::{plan, Intent};
use super::reconcile::align_live;
use super::run::{this_process, Run};
use super::{Engine, InstanceStatus, Leftover, Status};

pub(super) async fn down<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    target: super::DownTarget,
    force: bool,
) -> Result<Vec<Instance>, Error> {
    use super::DownTarget;
    let world = run.reconcile().await?;
    let eng = run.engine;
    let live = world.live_color();
    let colors: Vec<Color> = match (target, live) {
        (DownTarget::Color(c), _) => vec![c],
        (DownTarget::Idle, Some(l)) => vec![l.other()],
        (DownTarget::Idle, None) | (DownTarget::All, _) => Color::ALL.to_vec(),
    };
    if let Some(l) = live.filter(|l| colors.contains(l)) {
        if !force {
            return Err(Error::Usage {
                app: eng.config().app.clone(),
                message: format!(
                    "{l} is live: taking it down would stop the app from serving; `down {}` takes down the idle color, and `--force` takes down the live one anyway",
                    l.other()
                ),
            });
        }
    }
    run.from = colors.first().copied().filter(|_| colors.len() == 1);
    let mut removed = Vec::new();
    for color in colors {
        let doomed: Vec<Instance> = world
            .instances
            .iter()
            .filter(|i| i.color == color)
            .cloned()
            .collect();
        if doomed.is_empty() {
            continue;
        }
        let staged_here = run.state.staged.as_ref().is_some_and(|s| s.color == color);
        take_down(run, Command::Down, color, &doomed, force, live).await?;
        if staged_here {
            // The staged color went with it: so does its preview.
            let _ = run.end_preview(color).await;
        }
        if Some(color) == live {
            run.state.retire_live();
            run.warn(format!(
                "took down the live color {color}: the router still points at it, so the app does not serve until the next `deploy` or `rollback`"
            ));
        }
        removed.extend(doomed);
    }
    run.save_final().await;
    Ok(removed)
}

/// Stops and removes `doomed` (the instances of `color`), journaled as `command`: `down` and
/// `abort`. Only with `force` may it stop what the router points at.
async fn take_down<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    command: Command,
    color: Color,
    doomed: &[Instance],
    force: bool,
    live: Option<Color>,
) -> Result<(), Error> {
    let eng = run.engine;
    run.journal = Some(crate::state::JournalEntry {
        command,
        step: Step::Stop,
        color,
        release: None,
        from: live,
        started_at: run.started_at,
        pid: std::process::id(),
    });
    // `--force` is the one way to stop what the router points at: the user asked for it.
    let routed = if force { None } else { run.target.clone() };
    run.step(Step::Stop, Some(color), false, async {
        for inst in doomed {
            eng.stop_unless_routed(inst, routed.as_ref())
                .await
                .map_err(|e| eng.step_error(Step::Stop, color, e))?;
        }
        Ok(())
    })
    .await?;
    run.step(Step::Remove, Some(color), false, async {
        for inst in doomed {
            eng.rt_remove(inst)
                .await
                .map_err(|e| eng.step_error(Step::Remove, color, e))?;
        }
        Ok(())
    })
    .await?;
    for inst in doomed {
        run.state.unstage(inst);
    }
    Ok(())
}

/// `abort`: stops and removes the staged color (never what the router points at) and forgets
/// it. With nothing staged it changes nothing (`None`): a second abort, or one after a crash
/// whose repair finished the first.
pub(super) async fn abort<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
) -> Result<Option<Vec<Instance>>, Error> {
    let world = run.reconcile().await?;
    let Some((staged, _)) = world.staged(&run.state) else {
        return Ok(None);
    };
    let color = staged.color;
    run.release = Some(staged.release.id.to_string());
    run.from = Some(color);
    // The router stops previewing it before it goes away.
    let _ = run.end_preview(color).await;
    let doomed = world.idle_of(color);
    take_down(
        run,
        Command::Abort,
        color,
        &doomed,
        false,
        world.live_color(),
    )
    .await?;
    run.state.staged = None;
    run.save_final().await;
    Ok(Some(doomed))
}

/// `repair`: reconcile under the lock (which repairs what an interrupted command left and makes
/// the saved state agree with the router); a repair that failed makes it inconsistent.
pub(super) async fn repair<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
) -> Result<Option<Color>, Error> {
    let world = run.reconcile().await?;
    let mut failed = std::mem::take(&mut run.unrepaired).into_iter();
    let Some(first) = failed.next() else {
        return Ok(world.live_color());
    };
    let mut left = vec![first.message];
    left.extend(failed.map(|f| f.message));
    Err(Error::Inconsistent {
        app: run.engine.config().app.clone(),
        cause: Box::new(
            run.engine
                .step_error(Step::Reconcile, first.color, first.source),
        ),
        left: crate::error::Leftovers(left),
    })
}

pub(super) async fn status<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    engine: &Engine<R, P, T, S>,
    observer: &dyn crate::events::Observer,
) -> Result<Status, Error> {
    let began = tokio::time::Instant::now();
    observer.on_event(&Event::CommandStarted {
        app: engine.config().app.to_string(),
        command: Command::Status,
        release: None,
    });
    let result = look(engine).await;
    observer.on_event(&Event::CommandFinished {
        command: Command::Status,
        ok: result.is_ok(),
        live: result.as_ref().ok().and_then(|s| s.live),
        elapsed_ms: millis(began.elapsed()),
    });
    result
}

/// Reads the saved state, the runtime and the router, and works out what a repair would do;
/// changes nothing.
async fn look<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    engine: &Engine<R, P, T, S>,
) -> Result<Status, Error> {
    let app = engine.config().app.clone();
    let state = engine
        .store_load()
        .await
        .map_err(|e| engine.state_error(e))?;
    let mut world = engine.observe(state.live.as_ref().map(|d| d.color)).await?;
    // Every instance is shown with its state (and the plan may depend on them).
    engine.look_at(&mut world, |_| true).await?;

    let mut warnings = Vec::new();
    let mut in_progress = None;
    // A journal whose command recorded its own end in the history was left by a command that
    // failed and said so (exit 5), not by one that was interrupted.
    let mut ended_on_its_own = false;
    if let Some(journal) = &state.journal {
        // A journal is a leftover only when no command is at work: look at the lock.
        match engine.look_at_lock().await {
            Ok(LockSeen::Free { left_by: None }) => {
                ended_on_its_own = matches!(
                    engine.store.recent_history(1).await.as_deref(),
                    Ok([last]) if last.started_at == journal.started_at
                        && last.outcome == Outcome::Inconsistent
                );
            }
            Ok(LockSeen::Free {
                left_by: Some(gone),
            }) => warnings.push(format!(
                "the deploy lock names {gone}, whose process is gone: it was interrupted"
            )),
            Ok(LockSeen::Held(holder)) => {
                warnings.push(format!(
                    "{holder} holds the deploy lock and is at its {} step; this status only reads",
                    journal.step
                ));
                in_progress = Some(holder);
            }
            Err(e) => warnings.push(format!(
                "could not tell whether a command is at work ({e}); if none is, what is listed as left over is"
            )),
        }
    }
    let mut leftovers = Vec::new();
    if in_progress.is_none() {
        if let Some(plan) = plan(&world, &state, &Intent::Repair) {
            let said = |text: String| {
                if ended_on_its_own {
                    text.replacen("an interrupted `", "a failed `", 1).replacen(
                        "the interrupted `",
                        "the failed `",
                        1,
                    )
                } else {
                    text
                }
            };
            leftovers.push(Leftover {
                found: said(plan.found),
                repair: plan
                    .actions
                    .iter()
                    .map(|a| said(a.phrase(false)))
                    .chain(plan.notes)
                    .collect(),
            });
        } else if let Some(drift) = align_live(&mut state.clone(), &world, app.as_str()) {
            leftovers.push(Leftover {
                found: drift.found,
                repair: vec![format!("record {}", drift.record)],
            });
        }
    }

    let mut instances = Vec::new();
    for inst in &world.instances {
        let Some(state) = world.states.get(&inst.id) else {
            continue;
        };
        instances.push(InstanceStatus {
            live: world.target.as_ref() == Some(&inst.endpoint),
            instance: inst.clone(),
            state: state.clone(),
        });
    }
    let staged = state
        .staged_in(
            world.instances.iter().filter(|i| world.runs(i)),
            world.target.as_ref(),
        )
        .map(|(d, _)| d.clone());
    let staged_preview = staged.as_ref().and(state.preview.clone());
    if let (None, Some(address), None) = (&in_progress, &state.preview, world.staged(&state)) {
        // A preview whose end failed (or was cut short by a kill): the next command ends it.
        leftovers.push(Leftover {
            found: format!("the router still previews a staged color that is gone, at {address}"),
            repair: vec!["end the router's preview".to_string()],
        });
    }
    Ok(Status {
        app,
        live: world.live_color(),
        deployment: state.live.clone(),
        router_target: world.target.clone(),
        staged,
        staged_preview,
        instances,
        leftovers,
        in_progress,
        warnings,
    })
}

/// What a look at the deploy lock found.
enum LockSeen {
    /// Nobody holds it; `left_by` names a holder whose process is gone.
    Free { left_by: Option<LockHolder> },
    /// A command holds it.
    Held(LockHolder),
}

impl<R: Runtime, P: HealthProbe, T: Router, S: StateStore> Engine<R, P, T, S> {
    /// Whether anyone holds the deploy lock: it takes the lock for an instant and gives it back
    /// at once (a store can only tell by trying). `status` asks only when it found a journal,
    /// to tell a command at work from an interrupted one.
    async fn look_at_lock(&self) -> Result<LockSeen, crate::error::ComponentError> {
        let me = this_process(Command::Status);
        let peek = async {
            match self.store.lock(&me).await {
                Ok(lock) => Ok(LockSeen::Free {
                    left_by: lock.taken_over_from.clone(),
                }),
                Err(LockError::Held(holder)) => Ok(LockSeen::Held(holder)),
                Err(LockError::Store(e)) => Err(e),
            }
        };
        within(
            self.config.timeouts.store,
            "the state store telling who holds the deploy lock",
            peek,
        )
        .await
    }
}
