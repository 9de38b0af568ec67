//! What the engine remembers between commands: the [`StateStore`] trait, the saved
//! [`AppState`] with its journal, the deploy [`DeployRecord`] history, and the lock.

pub mod atomic;
pub mod file;
pub mod history;
mod lock;
mod private;

use std::any::Any;
use std::sync::Arc;
use time::OffsetDateTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{ComponentError, LockHolder};
use crate::events::{Command, Step};
use crate::hooks::HookPoint;
use crate::model::{Color, Endpoint, Instance, Release};

/// A release that is (or was) live in a color.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its color.
    pub color: Color,
    /// The release, with its artifact so that a removed color can be started again.
    pub release: Release,
    /// Where it answered.
    pub endpoint: Endpoint,
    /// When it went live (saved as RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// `t` in UTC to the second, as RFC 3339 (`2026-11-25T10:00:00Z`): how messages and the CLI
/// show the saved times (the files keep the full precision).
pub fn short_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The step a command was at, written before the step runs. A journal left behind means the
/// command did not finish; the next command reconciles from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The command.
    pub command: Command,
    /// The step about to run.
    pub step: Step,
    /// The color the command brings up (or takes down, for `down`).
    pub color: Color,
    /// The release being deployed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    /// The color that was live when the command began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Color>,
    /// When the command began (saved as RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The process that wrote it.
    pub pid: u32,
}

/// The app's saved state (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    /// The live deployment, as last recorded. The router has the final word on which color is
    /// live; this keeps the release and history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Deployment>,
    /// The deployment before it, the target of `rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Deployment>,
    /// The unfinished command, if one was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalEntry>,
    /// The release `deploy --no-switch` started and readied in the idle color, waiting for
    /// `promote` or `abort`. Only a hint: it counts while an instance of that release runs
    /// in that color and the router does not point at it ([`AppState::staged_in`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Deployment>,
    /// Where the router previews the staged color ([`Router::preview`]), when it has a
    /// preview: shown with the staged color while it stands.
    ///
    /// [`Router::preview`]: crate::Router::preview
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

impl AppState {
    /// The release recorded for `release_id` in `color` (as live or as previous), so that its
    /// artifact is kept when the engine records it again; a bare release of that id when neither
    /// records it (the runtime's own default artifact then applies).
    pub fn release_of(&self, color: Color, release_id: &str) -> Release {
        [self.live.as_ref(), self.previous.as_ref()]
            .into_iter()
            .chain([self.staged.as_ref()])
            .flatten()
            .find(|d| d.color == color && d.release.id == release_id)
            .map_or_else(|| Release::reported(release_id), |d| d.release.clone())
    }

    /// Records `deployment` as live. The deployment live before becomes `previous` (what
    /// `rollback` goes back to), unless it was in the same color: a color replaced by a newer
    /// release of itself is not something to go back to.
    pub fn go_live(&mut self, deployment: Deployment) {
        if self
            .staged
            .as_ref()
            .is_some_and(|s| s.color == deployment.color)
        {
            // What was staged there is live now, or was replaced.
            self.staged = None;
        }
        if let Some(old) = self.live.take() {
            if old.color != deployment.color {
                self.previous = Some(old);
            }
        }
        self.live = Some(deployment);
    }

    /// The staged deployment, if it still stands: an instance of its release runs in its
    /// color (`running` says which instances run) and is not `routed`.
    pub fn staged_in<'i>(
        &self,
        running: impl IntoIterator<Item = &'i Instance>,
        routed: Option<&Endpoint>,
    ) -> Option<(&Deployment, &'i Instance)> {
        let staged = self.staged.as_ref()?;
        running
            .into_iter()
            .find(|i| {
                i.color == staged.color
                    && i.release == staged.release.id
                    && Some(&i.endpoint) != routed
            })
            .map(|i| (staged, i))
    }

    /// Forgets the staged deployment if `removed` was its instance.
    pub fn unstage(&mut self, removed: &Instance) {
        if self
            .staged
            .as_ref()
            .is_some_and(|s| s.color == removed.color && s.release.id == removed.release)
        {
            self.staged = None;
        }
    }

    /// Records that nothing is live: the live deployment, if any, becomes `previous`, so that
    /// `rollback` can bring it back. Returns it.
    pub fn retire_live(&mut self) -> Option<&Deployment> {
        let old = self.live.take()?;
        self.previous = Some(old);
        self.previous.as_ref()
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Done.
    Succeeded,
    /// Failed; everything was put back.
    Failed,
    /// Cancelled; everything was put back.
    Cancelled,
    /// Failed, and putting things back failed too.
    Inconsistent,
    /// Interrupted (the process died); found and repaired by a later command.
    Interrupted,
}

impl Outcome {
    /// The outcome as one word, as in the history file: `succeeded`, `failed`, `cancelled`,
    /// `inconsistent`, `interrupted`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Inconsistent => "inconsistent",
            Outcome::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long one step took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepTiming {
    /// The step.
    pub step: Step,
    /// The color it acted on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    /// Milliseconds.
    pub ms: u64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// One line of the history: a command that changed (or tried to change) what serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeployRecord {
    /// The command.
    pub command: Command,
    /// The release it brought up, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The color live before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Color>,
    /// The color it brought up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Color>,
    /// How it ended.
    pub outcome: Outcome,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it began (saved as RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When it ended (saved as RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Each step and its time.
    #[serde(default)]
    pub steps: Vec<StepTiming>,
    /// What the command warned about (an old color that had to be killed, a drain cut
    /// short): kept, so that a slow deploy can be explained later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The hooks the command ran and how each ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRecord>,
}

/// How one hook of a command ended, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HookRecord {
    /// Which hook.
    pub hook: HookPoint,
    /// Whether it succeeded.
    pub success: bool,
    /// How it ended: "exited with code 2", "did not finish within 5s and was killed".
    pub status: String,
}

impl HookRecord {
    /// A record of `hook`.
    pub fn new(hook: HookPoint, success: bool, status: impl Into<String>) -> Self {
        HookRecord {
            hook,
            success,
            status: status.into(),
        }
    }
}

impl DeployRecord {
    /// How long the command took.
    pub fn duration(&self) -> time::Duration {
        self.finished_at - self.started_at
    }

    /// A record of `command` that ended with `outcome`, with no release, colors, error or steps
    /// (set the public fields for those). For stores and tests: the engine writes the records.
    pub fn new(
        command: Command,
        outcome: Outcome,
        started_at: OffsetDateTime,
        finished_at: OffsetDateTime,
    ) -> Self {
        DeployRecord {
            command,
            release: None,
            from: None,
            to: None,
            outcome,
            error: None,
            started_at,
            finished_at,
            steps: Vec::new(),
            warnings: Vec::new(),
            hooks: Vec::new(),
        }
    }
}

impl StepTiming {
    /// `step` on `color` took `ms` milliseconds and succeeded (`ok`) or not.
    pub fn new(step: Step, color: Option<Color>, ms: u64, ok: bool) -> Self {
        StepTiming {
            step,
            color,
            ms,
            ok,
        }
    }
}

/// A held lock; dropping it releases the lock.
pub struct Lock {
    /// The previous holder, when its process was gone and the lock was taken over.
    pub taken_over_from: Option<LockHolder>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl Lock {
    /// A lock that releases when `guard` is dropped.
    pub fn new(guard: impl Any + Send + Sync, taken_over_from: Option<LockHolder>) -> Self {
        Lock {
            taken_over_from,
            _guard: Box::new(guard),
        }
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("taken_over_from", &self.taken_over_from)
            .finish_non_exhaustive()
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// A live process holds it.
    #[error("the deploy lock is held by {0}")]
    Held(LockHolder),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ComponentError),
}

/// Where the engine keeps state, history and the lock for one app. [`FileStore`](file::FileStore)
/// keeps them in a directory; another store (a database, a key-value service) implements this
/// with the re-exported [`async_trait`](crate::async_trait) attribute:
///
/// ```
/// use std::sync::Mutex;
/// use blue_green_core::{AppState, ComponentError, DeployRecord, Lock, LockError, LockHolder, StateStore};
///
/// /// State in memory: one process, no real lock.
/// #[derive(Default)]
/// struct InMemory { state: Mutex<AppState>, history: Mutex<Vec<DeployRecord>> }
///
/// #[blue_green_core::async_trait]
/// impl StateStore for InMemory {
///     async fn lock(&self, _holder: &LockHolder) -> Result<Lock, LockError> {
///         Ok(Lock::new((), None))
///     }
///     async fn load(&self) -> Result<AppState, ComponentError> {
///         Ok(self.state.lock().unwrap().clone())
///     }
///     async fn save(&self, state: &AppState) -> Result<(), ComponentError> {
///         *self.state.lock().unwrap() = state.clone();
///         Ok(())
///     }
///     async fn append_history(&self, record: &DeployRecord) -> Result<(), ComponentError> {
///         self.history.lock().unwrap().push(record.clone());
///         Ok(())
///     }
///     async fn history(&self) -> Result<Vec<DeployRecord>, ComponentError> {
///         Ok(self.history.lock().unwrap().clone())
///     }
/// }
/// ```
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Takes the app's lock for the whole command, or says who holds it. A lock whose holder
    /// process is gone is taken over, and the old holder is returned in
    /// [`Lock::taken_over_from`].
    async fn lock(&self, holder: &LockHolder) -> Result<Lock, LockError>;

    /// Reads the saved state; a store that was never written gives the default.
    async fn load(&self) -> Result<AppState, ComponentError>;

    /// Replaces the saved state, atomically: a crash leaves the old or the new state, never half.
    async fn save(&self, state: &AppState) -> Result<(), ComponentError>;

    /// Appends one record to the history.
    async fn append_history(&self, record: &DeployRecord) -> Result<(), ComponentError>;

    /// The history, oldest first.
    async fn history(&self) -> Result<Vec<DeployRecord>, ComponentError>;

    /// The newest `n` records of the history, oldest first. The default reads the whole
    /// history; a store that can read from the end (as [`file::FileStore`] does) should, so
    /// that `history -n 1` costs the same whatever the size of the history.
    async fn recent_history(&self, n: usize) -> Result<Vec<DeployRecord>, ComponentError> {
        let mut records = self.history().await?;
        let skip = records.len().saturating_sub(n);
        records.drain(..skip);
        Ok(records)
    }
}

macro_rules! forward_store {
    ($ty:ty) => {
        #[async_trait]
        impl<T: StateStore + ?Sized> StateStore for $ty {
            async fn lock(&self, holder: &LockHolder) -> Result<Lock, LockError> {
                (**self).lock(holder).await
            }
            async fn load(&self) -> Result<AppState, ComponentError> {
                (**self).load().await
            }
            async fn save(&self, state: &AppState) -> Result<(), ComponentError> {
                (**self).save(state).await
            }
            async fn append_history(&self, record: &DeployRecord) -> Result<(), ComponentError> {
                (**self).append_history(record).await
            }
            async fn history(&self) -> Result<Vec<DeployRecord>, ComponentError> {
                (**self).history().await
            }
            async fn recent_history(&self, n: usize) -> Result<Vec<DeployRecord>, ComponentError> {
                (**self).recent_history(n).await
            }
        }
    };
}

forward_store!(Box<T>);
forward_store!(Arc<T>);

#[cfg(test)]
mod tests {
    #[test]
    fn a_history_line_reads_its_times_and_writes_them_back_as_rfc3339() {
        let line = r#"{"command":"deploy","release":"v2","outcome":"succeeded","started_at":"2026-11-25T10:00:00Z","finished_at":"2026-11-25T10:00:05.5Z"}"#;
        let record: DeployRecord = serde_json::from_str(line).unwrap();
        assert_eq!(record.outcome.to_string(), "succeeded");
        assert_eq!(record.started_at.unix_timestamp(), 1_795_600_800);
        assert_eq!(record.duration(), time::Duration::milliseconds(5500));
        let back = serde_json::to_value(&record).unwrap();
        assert_eq!(back["finished_at"], "2026-11-25T10:00:05.5Z");
        assert_eq!(short_time(record.finished_at), "2026-11-25T10:00:05Z");
        let paris = record.started_at.to_offset(time::macros::offset!(+1));
        assert_eq!(short_time(paris), "2026-11-25T10:00:00Z");
    }

    #[test]
    fn a_history_line_whose_time_is_not_rfc3339_is_refused() {
        let line = r#"{"command":"deploy","outcome":"failed","started_at":"yesterday","finished_at":"2026-11-25T10:00:05Z"}"#;
        let error = serde_json::from_str::<DeployRecord>(line).unwrap_err();
        assert!(error.is_data(), "{error}");
    }

    use super::*;

    fn deployed(color: Color, release: &str) -> Deployment {
        Deployment {
            color,
            release: Release::new(release)
                .unwrap()
                .with_artifact(format!("app:{release}"))
                .unwrap(),
            endpoint: Endpoint::new("127.0.0.1", if color == Color::Blue { 1 } else { 2 }),
            since: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn release_of_keeps_the_recorded_artifact_or_gives_a_bare_release() {
        let state = AppState {
            live: Some(deployed(Color::Green, "v2")),
            previous: Some(deployed(Color::Blue, "v1")),
            journal: None,
            staged: None,
            preview: None,
        };
        assert_eq!(
            state.release_of(Color::Blue, "v1").artifact.as_deref(),
            Some("app:v1")
        );
        assert_eq!(
            state.release_of(Color::Blue, "v9"),
            Release::new("v9").unwrap()
        );
        assert_eq!(
            state.release_of(Color::Green, "v1"),
            Release::new("v1").unwrap()
        );
    }

    #[test]
    fn going_live_moves_the_other_color_to_previous_but_not_the_same_one() {
        let mut state = AppState {
            live: Some(deployed(Color::Blue, "v1")),
            ..AppState::default()
        };
        state.go_live(deployed(Color::Green, "v2"));
        assert_eq!(state.live, Some(deployed(Color::Green, "v2")));
        assert_eq!(state.previous, Some(deployed(Color::Blue, "v1")));
        // A newer release in the same color is not something to roll back to.
        state.go_live(deployed(Color::Green, "v3"));
        assert_eq!(state.previous, Some(deployed(Color::Blue, "v1")));

        assert_eq!(state.retire_live(), Some(&deployed(Color::Green, "v3")));
        assert_eq!(state.live, None);
        assert_eq!(state.retire_live(), None);
        assert_eq!(state.previous, Some(deployed(Color::Green, "v3")));
    }
}
