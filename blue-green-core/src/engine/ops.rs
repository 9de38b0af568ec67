//! `down` and `status`: the commands that do not switch.

use crate::error::Error;
use crate::events::{millis, Command, Event, Step};
use crate::model::{Color, Instance};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::StateStore;

use super::reconcile::align_live;
use super::run::Run;
use super::{Engine, InstanceStatus, Status};

pub(super) async fn down<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    run: &mut Run<'_, R, P, T, S>,
    color: Option<Color>,
    force: bool,
) -> Result<Vec<Instance>, Error> {
    let world = run.reconcile().await?;
    let eng = run.engine;
    let live = world.live_color();
    let colors: Vec<Color> = match (color, live) {
        (Some(c), _) => vec![c],
        (None, Some(l)) => vec![l.other()],
        (None, None) => Color::ALL.to_vec(),
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
        run.journal = Some(crate::state::JournalEntry {
            command: Command::Down,
            step: Step::Stop,
            color,
            release: None,
            from: live,
            started_at: run.started_at.clone(),
            pid: std::process::id(),
        });
        // `--force` is the one way to stop what the router points at: the user asked for it.
        let routed = if force { None } else { run.target.clone() };
        run.step(Step::Stop, Some(color), false, async {
            for inst in &doomed {
                eng.stop_unless_routed(inst, routed.as_ref())
                    .await
                    .map_err(|e| eng.step_error(Step::Stop, color, e))?;
            }
            Ok(())
        })
        .await?;
        run.step(Step::Remove, Some(color), false, async {
            for inst in &doomed {
                eng.rt_remove(inst)
                    .await
                    .map_err(|e| eng.step_error(Step::Remove, color, e))?;
            }
            Ok(())
        })
        .await?;
        if Some(color) == live {
            if let Some(old) = run.state.live.take() {
                run.state.previous = Some(old);
            }
            run.warn(format!(
                "took down the live color {color}: the router still points at it, so the app does not serve until the next `deploy` or `rollback`"
            ));
        }
        removed.extend(doomed);
    }
    run.save_final().await;
    Ok(removed)
}

pub(super) async fn status<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    engine: &Engine<R, P, T, S>,
) -> Result<Status, Error> {
    let began = tokio::time::Instant::now();
    let result = look(engine).await;
    engine.emit(Event::CommandFinished {
        command: Command::Status,
        ok: result.is_ok(),
        live: result.as_ref().ok().and_then(|s| s.live),
        elapsed_ms: millis(began.elapsed()),
    });
    result
}

async fn look<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
    engine: &Engine<R, P, T, S>,
) -> Result<Status, Error> {
    let never = tokio_util::sync::CancellationToken::new();
    let (state, world, warnings) = match engine.begin(Command::Status, None, &never).await {
        Ok(mut run) => {
            let world = run.reconcile().await?;
            let warnings = run.take_warnings();
            (run.state.clone(), world, warnings)
        }
        Err(Error::Locked { holder, .. }) => {
            // Someone else is at work: look, but touch nothing.
            let mut state = engine
                .store_load()
                .await
                .map_err(|e| engine.state_error(e))?;
            let world = engine.observe(state.live.as_ref().map(|d| d.color)).await?;
            let mut warnings = vec![format!(
                "{holder} holds the deploy lock; this status only reads, and repairs nothing"
            )];
            warnings.extend(align_live(&mut state, &world, engine.config().app.as_str()));
            (state, world, warnings)
        }
        Err(e) => return Err(e),
    };
    let mut instances = Vec::new();
    for inst in &world.instances {
        let state = engine
            .rt_state(inst, None)
            .await
            .map_err(|e| engine.step_error(Step::Reconcile, inst.color, e))?;
        instances.push(InstanceStatus {
            live: world.target.as_ref() == Some(&inst.endpoint),
            instance: inst.clone(),
            state,
        });
    }
    Ok(Status {
        app: engine.config().app.clone(),
        live: world.live_color(),
        deployment: state.live.clone(),
        router_target: world.target.clone(),
        instances,
        warnings,
    })
}
