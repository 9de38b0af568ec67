//! Reconcile: read the saved state, the runtime's instances and the router's target; work out
//! which color is live (the router is the truth); repair what an interrupted command left, as
//! its journal says (through the recovery planner, `plan`); make the saved state agree with the
//! router.

use tokio::time::Instant;

use crate::error::Error;
use crate::events::{Command, Event, Step};
use crate::model::{Color, Instance};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{AppState, Deployment, StateStore};

use super::calls::{describe, now};
use super::plan::World;
use super::run::Run;
use super::Engine;

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
        // A split left by a gradual shift that was not finished (default: a router that
        // cannot split has none).
        let split = self
            .router_current_split()
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
            split,
            live,
            ..World::default()
        })
    }

    /// Asks the runtime for the state of the instances `which` picks, into `world.states`.
    /// Returns the first failure (the states that could be read are kept).
    pub(super) async fn look_at(
        &self,
        world: &mut World,
        which: impl Fn(&Instance) -> bool,
    ) -> Result<(), Error> {
        let mut first_error = None;
        for inst in world.instances.iter().filter(|i| which(i)) {
            match self.rt_state(inst, None).await {
                Ok(state) => {
                    world.states.insert(inst.id.clone(), state);
                }
                Err(e) if first_error.is_none() => {
                    first_error = Some(self.step_error(Step::Reconcile, inst.color, e));
                }
                Err(_) => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The saved state disagrees with the router about what is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Drift {
    /// What differs: "the saved state said blue (release v1) was live, but the router points at
    /// green instance …".
    pub(super) found: String,
    /// What is recorded to agree with the router: "green (release v2) as live".
    pub(super) record: String,
}

/// Makes `state.live` agree with the router; says what differed when it had to change it.
pub(super) fn align_live(state: &mut AppState, world: &World, app: &str) -> Option<Drift> {
    let said = match &state.live {
        Some(d) => format!("{} (release {})", d.color, d.release.id),
        None => "nothing".to_string(),
    };
    match &world.live {
        Some(inst) => {
            let agrees = state
                .live
                .as_ref()
                .is_some_and(|d| d.color == inst.color && d.endpoint == inst.endpoint);
            if agrees {
                return None;
            }
            let release = state.release_of(inst.color, &inst.release);
            let record = format!("{} (release {}) as live", inst.color, release.id);
            state.go_live(Deployment {
                color: inst.color,
                release,
                endpoint: inst.endpoint.clone(),
                since: now(),
            });
            Some(Drift {
                found: format!(
                    "the saved state said {said} was live, but the router points at {}",
                    describe(inst)
                ),
                record,
            })
        }
        None => {
            state.retire_live()?;
            let router = match &world.target {
                Some(t) => format!("points at {t}, where no instance of {app} answers"),
                None => "points nowhere".to_string(),
            };
            Some(Drift {
                found: format!("the saved state said {said} was live, but the router {router}"),
                record: "no color as live (`rollback` or `deploy` brings one up)".to_string(),
            })
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
        let loaded = eng.store_load().await.map_err(|e| eng.state_error(e))?;
        self.state = loaded.clone();
        let mut world = eng
            .observe(self.state.live.as_ref().map(|d| d.color))
            .await?;
        self.target = world.target.clone();
        if loaded.journal.is_some() || world.split.is_some() {
            // When its switch happened, the repair looks at the color it came from (to route
            // back to it, or to drain it). A state that cannot be read counts as not running.
            let switched_from = loaded
                .journal
                .as_ref()
                .filter(|j| world.live_color() == Some(j.color))
                .and_then(|j| j.from);
            if let Some(from) = switched_from {
                let _ = eng.look_at(&mut world, |i| i.color == from).await;
            }
            self.repair_journal(&world).await;
            world = eng
                .observe(self.state.live.as_ref().map(|d| d.color))
                .await?;
            self.target = world.target.clone();
        }
        if let Some(drift) = align_live(&mut self.state, &world, eng.config.app.as_str()) {
            self.note_repair(format!("{}; recorded {}", drift.found, drift.record));
        }
        // A staged color that went (promoted, removed, or a staged deploy undone) while a
        // command was interrupted may still be previewed by the router: end that preview.
        let was_staged = loaded
            .staged
            .as_ref()
            .map(|d| d.color)
            .or(loaded
                .journal
                .as_ref()
                .filter(|j| j.command == Command::Stage)
                .map(|j| j.color))
            .or(loaded
                .preview
                .as_ref()
                .map(|_| world.live_color().map_or(Color::Green, Color::other)));
        if let (Some(color), None) = (was_staged, world.staged(&self.state)) {
            let recorded = loaded.preview.clone();
            if self.end_preview(color).await {
                if let Some(address) = recorded {
                    self.note_repair(format!(
                        "ended the router's preview at {address} of a staged {color} that is gone"
                    ));
                }
            }
        }
        if self.state != loaded {
            eng.store_save(&self.state)
                .await
                .map_err(|e| eng.state_error(e))?;
        }
        Ok(world)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Release};

    fn inst(color: Color, release: &str, port: u16) -> Instance {
        Instance::new(
            color,
            release,
            format!("{color}-{port}"),
            Endpoint::new("127.0.0.1", port),
        )
    }

    fn deployed(i: &Instance) -> Deployment {
        Deployment {
            color: i.color,
            release: Release::new(i.release.clone())
                .and_then(|r| r.with_artifact(format!("app:{}", i.release)))
                .unwrap(),
            endpoint: i.endpoint.clone(),
            since: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn world(instances: Vec<Instance>, target: Option<&Instance>) -> World {
        World {
            live: target.cloned(),
            target: target.map(|i| i.endpoint.clone()),
            instances,
            ..World::default()
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
            staged: None,
            preview: None,
        };
        let warning = align_live(
            &mut state,
            &world(vec![blue.clone(), green.clone()], Some(&green)),
            "web",
        )
        .expect("a warning");
        assert!(
            warning.found.contains("router points at green"),
            "{warning:?}"
        );
        assert_eq!(warning.record, "green (release v2) as live");
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
        assert!(warning.found.contains("points nowhere"), "{warning:?}");
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
