//! One command in progress: the lock it holds, the state it works on, the journal it writes
//! before each step, the events and step timings it emits, and the history line it leaves.

use std::future::Future;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, LockHolder};
use crate::events::{millis, Command, Event, Step};
use crate::hooks::HookContext;
use crate::model::{Color, Endpoint, Instance};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{
    AppState, DeployRecord, Deployment, HookRecord, JournalEntry, Lock, LockError, Outcome,
    StateStore, StepTiming,
};

use super::calls::now;
use super::recover::Unrepaired;
use super::{DeployReport, DownReport, Engine, RepairReport, StageReport};

/// What a command that changes what serves returns to [`Run::finish_switch`]: the deployment
/// now live and the color live before.
pub(super) type Switched = (Deployment, Option<Color>);

pub(super) struct Run<'e, R, P, T, S> {
    pub(super) engine: &'e Engine<R, P, T, S>,
    pub(super) command: Command,
    cancel: CancellationToken,
    began: Instant,
    pub(super) started_at: time::OffsetDateTime,
    steps: Vec<StepTiming>,
    warnings: Vec<String>,
    /// What reconcile repaired (also among the warnings).
    repaired: Vec<String>,
    /// Repairs that failed; `repair` reports them, other commands go on (their own steps
    /// clear what is in their way).
    pub(super) unrepaired: Vec<Unrepaired>,
    /// The saved state as this command sees it (reconciled, then changed step by step).
    pub(super) state: AppState,
    /// When set, every step saves `state` with this journal entry (its step filled in) first.
    pub(super) journal: Option<JournalEntry>,
    /// Where the engine knows the router points: never stop or remove what answers there.
    pub(super) target: Option<Endpoint>,
    /// Once the router points at the new instance and it is verified, failures no longer roll
    /// back: they become warnings.
    pub(super) switched: bool,
    /// For the history line.
    pub(super) release: Option<String>,
    pub(super) from: Option<Color>,
    pub(super) to: Option<Color>,
    /// What hooks are told; `None` for a command that runs no hooks.
    pub(super) hook_context: Option<HookContext>,
    /// The hooks run so far and how each ended, for the history line.
    pub(super) hooks: Vec<HookRecord>,
    /// Whether the command leaves a history line: not when it found nothing to do (a second
    /// `promote` or `abort`).
    pub(super) record_history: bool,
    _lock: Lock,
}

impl<R: Runtime, P: HealthProbe, T: Router, S: StateStore> Engine<R, P, T, S> {
    /// Starts a command: emits `CommandStarted`, takes the lock (a held lock fails at once).
    pub(super) async fn begin<'e>(
        &'e self,
        command: Command,
        release: Option<String>,
        cancel: &CancellationToken,
    ) -> Result<Run<'e, R, P, T, S>, Error> {
        let began = Instant::now();
        self.emit(Event::CommandStarted {
            app: self.config.app.to_string(),
            command,
            release: release.clone(),
        });
        let lock = match self.take_lock(command).await {
            Ok(lock) => lock,
            Err(error) => {
                self.emit(Event::CommandFinished {
                    command,
                    ok: false,
                    live: None,
                    elapsed_ms: millis(began.elapsed()),
                });
                return Err(error);
            }
        };
        let mut run = Run {
            engine: self,
            command,
            cancel: cancel.clone(),
            began,
            started_at: now(),
            steps: Vec::new(),
            warnings: Vec::new(),
            repaired: Vec::new(),
            unrepaired: Vec::new(),
            state: AppState::default(),
            journal: None,
            target: None,
            switched: false,
            release,
            from: None,
            to: None,
            hook_context: None,
            hooks: Vec::new(),
            record_history: true,
            _lock: lock,
        };
        if let Some(old) = run._lock.taken_over_from.clone() {
            run.warn(format!(
                "took over the deploy lock from {old}, whose process is gone"
            ));
        }
        Ok(run)
    }

    /// Takes the lock as one step (not journaled: the journal is read under the lock).
    pub(super) async fn take_lock(&self, command: Command) -> Result<Lock, Error> {
        let started = Instant::now();
        self.emit(Event::StepStarted {
            step: Step::Lock,
            color: None,
        });
        let holder = this_process(command);
        let result = match tokio::time::timeout(
            self.config.timeouts.store,
            self.store.lock(&holder),
        )
        .await
        {
            Ok(Ok(lock)) => Ok(lock),
            Ok(Err(LockError::Held(holder))) => Err(Error::Locked {
                app: self.config.app.clone(),
                holder,
            }),
            Ok(Err(LockError::Store(source))) => Err(self.state_error(source)),
            Err(_) => Err(
                self.state_error(crate::error::ComponentError::timeout(format!(
                    "the state store did not grant the deploy lock within {:?}",
                    self.config.timeouts.store
                ))),
            ),
        };
        let elapsed_ms = millis(started.elapsed());
        self.emit(match &result {
            Ok(_) => Event::StepFinished {
                step: Step::Lock,
                color: None,
                elapsed_ms,
            },
            Err(e) => Event::StepFailed {
                step: Step::Lock,
                color: None,
                elapsed_ms,
                error: e.to_string(),
            },
        });
        result
    }
}

/// This process, running `command`, as the lock names its holder.
pub(super) fn this_process(command: Command) -> LockHolder {
    LockHolder {
        pid: std::process::id(),
        host: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown-host".to_string()),
        since: Some(now()),
        command: command.as_str().to_string(),
    }
}

impl<'e, R: Runtime, P: HealthProbe, T: Router, S: StateStore> Run<'e, R, P, T, S> {
    pub(super) fn emit(&self, event: Event) {
        self.engine.emit(event);
    }

    /// Records and emits a warning: something a person should know that did not fail the
    /// command.
    pub(super) fn warn(&mut self, message: String) {
        self.emit(Event::Warning {
            message: message.clone(),
        });
        self.warnings.push(message);
    }

    /// Records and emits (as a warning) something reconcile repaired.
    pub(super) fn note_repair(&mut self, message: String) {
        self.repaired.push(message.clone());
        self.warn(message);
    }

    /// The command's cancellation token, for a step that handles an interrupt itself.
    pub(super) fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub(super) fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub(super) fn cancelled_error(&self, step: Step) -> Error {
        Error::Cancelled {
            app: self.engine.config.app.clone(),
            step,
        }
    }

    /// Saves the state with the journal at `step`, if this command journals. Before the switch
    /// a failed save fails the step (nothing may run unjournaled); after it, it is a warning.
    pub(super) async fn write_journal(&mut self, step: Step) -> Result<(), Error> {
        let Some(entry) = self.journal.as_mut() else {
            return Ok(());
        };
        entry.step = step;
        self.state.journal = Some(entry.clone());
        match self.engine.store_save(&self.state).await {
            Ok(()) => Ok(()),
            Err(source) if self.switched => {
                self.warn(format!(
                    "could not write the journal before {step}: {source}; continuing, the next command will reconcile"
                ));
                Ok(())
            }
            Err(source) => Err(self.engine.state_error(source)),
        }
    }

    /// Runs one step: journal, `StepStarted`, the action (against cancellation when
    /// `cancellable`), timing, `StepFinished` or `StepFailed`.
    pub(super) async fn step<V>(
        &mut self,
        step: Step,
        color: Option<Color>,
        cancellable: bool,
        action: impl Future<Output = Result<V, Error>>,
    ) -> Result<V, Error> {
        let started = Instant::now();
        if cancellable && self.cancelled() {
            let error = self.cancelled_error(step);
            self.end_step(step, color, started, Err(&error));
            return Err(error);
        }
        if let Err(error) = self.write_journal(step).await {
            self.end_step(step, color, started, Err(&error));
            return Err(error);
        }
        self.emit(Event::StepStarted { step, color });
        let result = if cancellable {
            let cancel = self.cancel.clone();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(self.cancelled_error(step)),
                result = action => result,
            }
        } else {
            action.await
        };
        self.end_step(step, color, started, result.as_ref().map(|_| ()));
        result
    }

    pub(super) fn end_step(
        &mut self,
        step: Step,
        color: Option<Color>,
        started: Instant,
        result: Result<(), &Error>,
    ) {
        let ms = millis(started.elapsed());
        self.steps.push(StepTiming {
            step,
            color,
            ms,
            ok: result.is_ok(),
        });
        self.emit(match result {
            Ok(()) => Event::StepFinished {
                step,
                color,
                elapsed_ms: ms,
            },
            Err(e) => Event::StepFailed {
                step,
                color,
                elapsed_ms: ms,
                error: e.to_string(),
            },
        });
    }

    /// Routes the router to `endpoint` (of `color`), emitting `Routed` on success.
    pub(super) async fn route(
        &mut self,
        color: Color,
        endpoint: &Endpoint,
    ) -> Result<(), crate::error::ComponentError> {
        // Routing back is not verified (the old target served until the switch), so the
        // receipt is not needed.
        self.engine.router_route_to(endpoint).await?;
        self.target = Some(endpoint.clone());
        self.emit(Event::Routed {
            color,
            endpoint: endpoint.clone(),
        });
        Ok(())
    }

    /// Ends the router's preview of a staged `color` that went (promoted, aborted, replaced,
    /// or undone by a repair), and forgets its address. A failure is a warning: a preview
    /// is not live traffic, and the next staged deploy replaces it.
    /// The address stays recorded when that fails, so that the next command tries again.
    /// Returns whether it ended.
    pub(super) async fn end_preview(&mut self, color: Color) -> bool {
        match self.engine.router_preview(None).await {
            Ok(_) => {
                self.state.preview = None;
                self.emit(Event::Previewed {
                    color,
                    address: None,
                });
                true
            }
            Err(e) => {
                self.warn(format!(
                    "could not end the router's preview of the staged {color}: {e}; the next command tries again"
                ));
                false
            }
        }
    }

    /// Saves the state without the journal; a failure is a warning (the router is the truth
    /// for what is live, and the next command reconciles). A preview recorded for a staged
    /// color that is gone (promoted, switched to, replaced, removed) is ended first, whichever
    /// way it went.
    pub(super) async fn save_final(&mut self) {
        if self.state.staged.is_none() && self.state.preview.is_some() {
            let color = self.to.or(self.from).unwrap_or(Color::Green);
            let _ = self.end_preview(color).await;
        }
        self.state.journal = None;
        if let Err(e) = self.engine.store_save(&self.state).await {
            self.warn(format!(
                "could not save the state: {e}; the next command will reconcile it from the router and runtime"
            ));
        }
    }

    fn outcome_of(error: &Error) -> Outcome {
        match error {
            Error::Cancelled { .. } => Outcome::Cancelled,
            Error::Inconsistent { .. } => Outcome::Inconsistent,
            _ => Outcome::Failed,
        }
    }

    /// Appends the history line (commands that were refused as bad usage leave none, and
    /// `repair` leaves the lines of the interrupted commands it repaired instead), emits
    /// `CommandFinished`, and releases the lock.
    async fn finish<V>(&mut self, result: &Result<V, Error>) {
        let (outcome, error) = match result {
            Ok(_) => (Outcome::Succeeded, None),
            Err(e) => (Self::outcome_of(e), Some(e.to_string())),
        };
        let usage = matches!(result, Err(Error::Usage { .. }));
        if !usage && self.record_history && self.command != Command::Repair {
            let record = DeployRecord {
                command: self.command,
                release: self.release.clone(),
                from: self.from,
                to: self.to,
                outcome,
                error,
                started_at: self.started_at,
                finished_at: now(),
                steps: self.steps.clone(),
                warnings: self.warnings.clone(),
                hooks: self.hooks.clone(),
            };
            if let Err(e) = self.engine.store_append(&record).await {
                self.warn(format!("could not append to the history: {e}"));
            }
        }
        self.emit(Event::CommandFinished {
            command: self.command,
            ok: result.is_ok(),
            live: self.target_color(),
            elapsed_ms: millis(self.began.elapsed()),
        });
    }

    /// The color live now, as far as this command knows.
    fn target_color(&self) -> Option<Color> {
        self.state
            .live
            .as_ref()
            .filter(|d| self.target.as_ref() == Some(&d.endpoint))
            .map(|d| d.color)
    }

    pub(super) async fn finish_switch(
        mut self,
        result: Result<Switched, Error>,
    ) -> Result<DeployReport, Error> {
        self.finish(&result).await;
        let (live, previous) = result?;
        Ok(DeployReport {
            live,
            previous,
            steps: std::mem::take(&mut self.steps),
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    pub(super) async fn finish_stage(
        mut self,
        result: Result<Switched, Error>,
    ) -> Result<StageReport, Error> {
        self.finish(&result).await;
        let (staged, live) = result?;
        Ok(StageReport {
            staged,
            preview: self.state.preview.clone(),
            live,
            steps: std::mem::take(&mut self.steps),
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// A promote that found nothing staged reports the live deployment, unchanged, and leaves
    /// no history line.
    pub(super) async fn finish_promote(
        mut self,
        result: Result<Option<Switched>, Error>,
    ) -> Result<DeployReport, Error> {
        let result = match result {
            Ok(None) => match self.state.live.clone() {
                Some(live) => {
                    self.record_history = false;
                    self.warn(format!(
                        "nothing is staged: {} (release {}) stays live; `deploy --no-switch` stages a release",
                        live.color, live.release.id
                    ));
                    Ok((live, self.state.previous.as_ref().map(|d| d.color)))
                }
                None => Err(Error::Usage {
                    app: self.engine.config().app.clone(),
                    message: "nothing is staged and nothing is live: `deploy --no-switch` stages a release".into(),
                }),
            },
            Ok(Some(switched)) => Ok(switched),
            Err(e) => Err(e),
        };
        self.finish_switch(result).await
    }

    pub(super) async fn finish_abort(
        mut self,
        result: Result<Option<Vec<Instance>>, Error>,
    ) -> Result<DownReport, Error> {
        if let Ok(None) = result {
            self.record_history = false;
            self.warn("nothing is staged: there is nothing to abort".into());
        }
        self.finish_down(result.map(Option::unwrap_or_default))
            .await
    }

    pub(super) async fn finish_repair(
        mut self,
        result: Result<Option<Color>, Error>,
    ) -> Result<RepairReport, Error> {
        self.finish(&result).await;
        let repaired = std::mem::take(&mut self.repaired);
        let mut warnings = std::mem::take(&mut self.warnings);
        warnings.retain(|w| !repaired.contains(w));
        Ok(RepairReport {
            live: result?,
            repaired,
            warnings,
        })
    }

    pub(super) async fn finish_down(
        mut self,
        result: Result<Vec<Instance>, Error>,
    ) -> Result<DownReport, Error> {
        self.finish(&result).await;
        Ok(DownReport {
            removed: result?,
            warnings: std::mem::take(&mut self.warnings),
        })
    }
}
