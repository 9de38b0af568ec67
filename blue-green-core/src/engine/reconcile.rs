//! Reconcile: read the saved state, the runtime's instances and the router's target; work out
//! which color is live (the router is the truth); repair what an interrupted command left, as
//! its journal says; make the saved state agree with the router.

use tokio::time::Instant;

use crate::error::Error;
use crate::events::{Command, Event, Step};
use crate::model::{Color, Endpoint, Instance, InstanceState, Release};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{AppState, DeployRecord, Deployment, JournalEntry, Outcome, StateStore};

use super::calls::{describe, now_rfc3339};
use super::run::Run;
use super::Engine;

/// What the world looks like after reconciling.
#[derive(Debug, Clone)]
pub(super) struct World {
    /// Every instance the runtime has for the app.
    pub(super) instances: Vec<Instance>,
    /// Where the router points.
    pub(super) target: Option<Endpoint>,
    /// The instance that answers at the router's target: the live one.
    pub(super) live: Option<Instance>,
}

impl World {
    pub(super) fn live_color(&self) -> Option<Color> {
        self.live.as_ref().map(|i| i.color)
    }

    /// The instances of `color` the router does not point at.
    pub(super) fn idle_of(&self, color: Color) -> Vec<Instance> {
        self.instances
            .iter()
            .filter(|i| i.color == color && Some(&i.endpoint) != self.target.as_ref())
            .cloned()
            .collect()
    }
}

impl<R: Runtime, P: HealthProbe, T: Router, S: StateStore> Engine<R, P, T, S> {
    /// Lists instances and asks the router where it points; `hint` picks among several
    /// instances at the target (the color recorded as live).
    pub(super) async fn observe(&self, hint: Option<Color>) -> Result<World, Error> {
        let color = hint.unwrap_or(Color::Blue);
        let instances = self
            .rt_list()
            .await
            .map_err(|e| self.step_error(Step::Reconcile, color, e))?;
        let target = self
            .router_target()
            .await
            .map_err(|e| self.step_error(Step::Reconcile, color, e))?;
        let live = target.as_ref().and_then(|t| {
            let mut at_target = instances.iter().filter(|i| &i.endpoint == t);
            let first = at_target.next()?;
            Some(
                std::iter::once(first)
                    .chain(at_target)
                    .find(|i| Some(i.color) == hint)
                    .unwrap_or(first)
                    .clone(),
            )
        });
        Ok(World {
            instances,
            target,
            live,
        })
    }
}

/// Makes `state.live` agree with the router; returns a warning when it had to change it.
pub(super) fn align_live(state: &mut AppState, world: &World, app: &str) -> Option<String> {
    match &world.live {
        Some(inst) => {
            let agrees = state
                .live
                .as_ref()
                .is_some_and(|d| d.color == inst.color && d.endpoint == inst.endpoint);
            if agrees {
                return None;
            }
            let release = [state.live.as_ref(), state.previous.as_ref()]
                .into_iter()
                .flatten()
                .find(|d| d.color == inst.color && d.release.id == inst.release)
                .map(|d| d.release.clone())
                .unwrap_or_else(|| Release::reported(&inst.release));
            let said = match &state.live {
                Some(d) => format!("{} (release {})", d.color, d.release.id),
                None => "nothing".to_string(),
            };
            if let Some(old) = state.live.take() {
                if old.color != inst.color {
                    state.previous = Some(old);
                }
            }
            state.live = Some(Deployment {
                color: inst.color,
                release,
                endpoint: inst.endpoint.clone(),
                since: now_rfc3339(),
            });
            Some(format!(
                "the saved state said {said} was live, but the router points at {}; recorded {} as live",
                describe(inst),
                inst.color
            ))
        }
        None => {
            let old = state.live.take()?;
            let router = match &world.target {
                Some(t) => format!("points at {t}, where no instance of {app} answers"),
                None => "points nowhere".to_string(),
            };
            let message = format!(
                "the saved state said {} (release {}) was live, but the router {router}; recorded no color as live (`rollback` or `deploy` brings one up)",
                old.color, old.release.id
            );
            state.previous = Some(old);
            Some(message)
        }
    }
}

impl<'e, R: Runtime, P: HealthProbe, T: Router, S: StateStore> Run<'e, R, P, T, S> {
    /// The reconcile step, under the lock: load, observe, repair an interrupted command from
    /// its journal, align the saved state with the router, save if anything changed.
    pub(super) async fn reconcile(&mut self) -> Result<World, Error> {
        let started = Instant::now();
        self.emit(Event::StepStarted {
            step: Step::Reconcile,
            color: None,
        });
        let result = self.reconcile_inner().await;
        self.end_step(Step::Reconcile, None, started, result.as_ref().map(|_| ()));
        result
    }

    async fn reconcile_inner(&mut self) -> Result<World, Error> {
        let eng = self.engine;
        let mut state = eng.store_load().await.map_err(|e| eng.state_error(e))?;
        let loaded = state.clone();
        let mut world = eng.observe(state.live.as_ref().map(|d| d.color)).await?;
        self.target = world.target.clone();
        if let Some(journal) = state.journal.take() {
            self.repair(journal, &mut state, &world).await;
            world = eng.observe(state.live.as_ref().map(|d| d.color)).await?;
            self.target = world.target.clone();
        }
        if let Some(message) = align_live(&mut state, &world, eng.config.app.as_str()) {
            self.warn(message);
        }
        if state != loaded {
            eng.store_save(&state)
                .await
                .map_err(|e| eng.state_error(e))?;
        }
        self.state = state;
        Ok(world)
    }

    /// Finishes or undoes what an interrupted command left, by its journal. Repairs that fail
    /// become warnings: the steps that follow (clearing the idle slot) try again.
    async fn repair(&mut self, journal: JournalEntry, state: &mut AppState, world: &World) {
        let eng = self.engine;
        let color = journal.color;
        let who = format!(
            "an interrupted `{}` (pid {}, started {}) stopped at its {} step",
            journal.command, journal.pid, journal.started_at, journal.step
        );
        let mut switched = journal.command != Command::Down && world.live_color() == Some(color);

        if switched && journal.step == Step::Restore {
            // It was routing back after a failure when it died: finish routing back, if the
            // color it came from still runs.
            if let Some(from) = journal.from {
                for old in world.instances.iter().filter(|i| i.color == from) {
                    if matches!(eng.rt_state(old, None).await, Ok(InstanceState::Running)) {
                        match self.route(from, &old.endpoint).await {
                            Ok(()) => {
                                self.warn(format!("{who}; routed back to {}", describe(old)));
                                switched = false;
                            }
                            Err(e) => self.warn(format!(
                                "{who}; routing back to {} failed: {e}",
                                describe(old)
                            )),
                        }
                        break;
                    }
                }
            }
        }

        let (repaired, outcome_note) = if switched {
            // The router already points at the new color: the command's switch happened.
            let inst = world.live.clone();
            if let Some(inst) = inst {
                let release = journal
                    .release
                    .clone()
                    .filter(|r| r.id == inst.release)
                    .or_else(|| {
                        state
                            .previous
                            .as_ref()
                            .filter(|d| d.color == color && d.release.id == inst.release)
                            .map(|d| d.release.clone())
                    })
                    .unwrap_or_else(|| Release::reported(&inst.release));
                if let Some(old) = state.live.take() {
                    if old.color != color {
                        state.previous = Some(old);
                    }
                }
                state.live = Some(Deployment {
                    color,
                    release,
                    endpoint: inst.endpoint.clone(),
                    since: now_rfc3339(),
                });
            }
            // Died between the switch and the end of the drain: the old color may still have
            // requests in flight (and nginx's old workers may still send it new ones for a
            // moment), so it is drained now, before anything may stop or clear it.
            let undrained = matches!(journal.step, Step::Switch | Step::Verify | Step::Drain);
            if let (true, Some(from)) = (undrained, journal.from) {
                let old: Vec<Instance> = world
                    .instances
                    .iter()
                    .filter(|i| i.color == from && Some(&i.endpoint) != world.target.as_ref())
                    .cloned()
                    .collect();
                for inst in old {
                    if !matches!(eng.rt_state(&inst, None).await, Ok(InstanceState::Running)) {
                        continue;
                    }
                    match eng.drain(&inst.endpoint).await {
                        Ok(warnings) => warnings.into_iter().for_each(|w| self.warn(w)),
                        Err(e) => self.warn(format!("draining {} failed: {e}", describe(&inst))),
                    }
                }
            }
            let old = journal
                .from
                .map(|c| {
                    let drained = if undrained { "drained and " } else { "" };
                    format!(
                        "; the old color {c} was {drained}left running (`down {c}` takes it down)"
                    )
                })
                .unwrap_or_default();
            (
                format!(
                    "{who} after switching the router to {color}; recorded {color} as live{old}"
                ),
                "interrupted after the switch; recorded as live by a later command",
            )
        } else {
            let mut done = Vec::new();
            // Not `world.idle_of`: the router may have been routed back just above.
            let idle: Vec<Instance> = world
                .instances
                .iter()
                .filter(|i| i.color == color && Some(&i.endpoint) != self.target.as_ref())
                .cloned()
                .collect();
            for inst in idle {
                let result = match journal.command {
                    Command::Deploy | Command::Down => eng
                        .remove_unless_routed(&inst, self.target.as_ref())
                        .await
                        .map(|()| "removed"),
                    Command::Rollback => eng
                        .stop_unless_routed(&inst, self.target.as_ref())
                        .await
                        .map(|()| "stopped"),
                    Command::Switch | Command::Status => continue,
                };
                match result {
                    Ok(verb) => done.push(format!("{verb} {}", describe(&inst))),
                    Err(e) => self.warn(format!("{who}; repairing it failed: {e}")),
                }
            }
            let done = if done.is_empty() {
                "nothing was left to repair".to_string()
            } else {
                done.join(", ")
            };
            (
                format!("{who}; {done}"),
                "interrupted; what it left was repaired by a later command",
            )
        };
        self.warn(repaired);

        let record = DeployRecord {
            command: journal.command,
            release: journal.release.as_ref().map(|r| r.id.to_string()),
            from: journal.from,
            to: (journal.command != Command::Down).then_some(color),
            outcome: Outcome::Interrupted,
            error: Some(format!("{outcome_note} (at its {} step)", journal.step)),
            started_at: journal.started_at.clone(),
            finished_at: now_rfc3339(),
            steps: Vec::new(),
        };
        if let Err(e) = eng.store_append(&record).await {
            self.warn(format!(
                "could not append the interrupted command to the history: {e}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(color: Color, release: &str, port: u16) -> Instance {
        Instance {
            color,
            release: release.into(),
            id: format!("{color}-{port}"),
            endpoint: Endpoint::new("127.0.0.1", port),
        }
    }

    fn deployed(i: &Instance) -> Deployment {
        Deployment {
            color: i.color,
            release: Release::new(i.release.clone())
                .and_then(|r| r.with_artifact(format!("app:{}", i.release)))
                .unwrap(),
            endpoint: i.endpoint.clone(),
            since: "t".into(),
        }
    }

    fn world(instances: Vec<Instance>, target: Option<&Instance>) -> World {
        World {
            live: target.cloned(),
            target: target.map(|i| i.endpoint.clone()),
            instances,
        }
    }

    #[test]
    fn state_that_agrees_with_the_router_is_left_alone() {
        let blue = inst(Color::Blue, "v1", 1);
        let mut state = AppState {
            live: Some(deployed(&blue)),
            ..AppState::default()
        };
        let before = state.clone();
        assert_eq!(
            align_live(&mut state, &world(vec![blue.clone()], Some(&blue)), "web"),
            None
        );
        assert_eq!(state, before);
    }

    #[test]
    fn the_router_wins_and_the_recorded_live_becomes_previous() {
        let blue = inst(Color::Blue, "v1", 1);
        let green = inst(Color::Green, "v2", 2);
        let mut state = AppState {
            live: Some(deployed(&blue)),
            previous: Some(deployed(&green)),
            journal: None,
        };
        let warning = align_live(
            &mut state,
            &world(vec![blue.clone(), green.clone()], Some(&green)),
            "web",
        )
        .expect("a warning");
        assert!(warning.contains("router points at green"), "{warning}");
        let live = state.live.unwrap();
        assert_eq!(live.color, Color::Green);
        // The artifact is kept from the record of that release.
        assert_eq!(live.release.artifact.as_deref(), Some("app:v2"));
        assert_eq!(state.previous.unwrap().color, Color::Blue);
    }

    #[test]
    fn a_router_pointing_nowhere_means_nothing_is_live() {
        let blue = inst(Color::Blue, "v1", 1);
        let mut state = AppState {
            live: Some(deployed(&blue)),
            ..AppState::default()
        };
        let warning = align_live(&mut state, &world(vec![blue], None), "web").unwrap();
        assert!(warning.contains("points nowhere"), "{warning}");
        assert_eq!(state.live, None);
        assert_eq!(state.previous.unwrap().color, Color::Blue);
    }

    #[test]
    fn idle_of_never_includes_the_routed_instance() {
        let a = inst(Color::Green, "v1", 1);
        let b = inst(Color::Green, "v0", 2);
        let w = world(vec![a.clone(), b.clone()], Some(&a));
        assert_eq!(w.idle_of(Color::Green), vec![b]);
        assert_eq!(w.live_color(), Some(Color::Green));
    }
}
