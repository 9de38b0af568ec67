//! Errors: [`ComponentError`] is what a runtime, probe, router or store reports; [`Error`] is what
//! the engine reports, with the app, color and step it happened at, and an [`ExitClass`].

use std::fmt;

use serde::Serialize;

use crate::events::Step;
use crate::model::{AppName, Color};

/// What kind of failure a component (runtime, router, store) hit. The engine uses it to pick the
/// exit class: an unreachable Docker daemon is not the same as a container that failed to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ComponentErrorKind {
    /// The environment could not be reached: Docker daemon, nginx, a command not installed.
    Unreachable,
    /// The input was refused before anything was touched (a bad name, endpoint, option).
    Invalid,
    /// The call did not answer within its timeout.
    Timeout,
    /// Anything else: the component was reached and said no.
    Failed,
}

/// An error reported by an implementation of [`Runtime`](crate::Runtime),
/// [`Router`](crate::Router) or [`StateStore`](crate::StateStore). The message is a sentence a
/// user can act on; the engine adds which app, color and step.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ComponentError {
    /// The kind, which decides the exit class.
    pub kind: ComponentErrorKind,
    /// What happened and, where it helps, what to do.
    pub message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    origin: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ComponentError {
    /// An error of `kind` with a message.
    pub fn new(kind: ComponentErrorKind, message: impl Into<String>) -> Self {
        ComponentError {
            kind,
            message: message.into(),
            source: None,
            origin: None,
        }
    }

    /// The environment could not be reached.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ComponentErrorKind::Unreachable, message)
    }

    /// Input refused before anything was touched.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ComponentErrorKind::Invalid, message)
    }

    /// A call that did not answer in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ComponentErrorKind::Timeout, message)
    }

    /// The component was reached and refused or failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ComponentErrorKind::Failed, message)
    }

    /// Attaches the underlying error (kept as the `source()` chain, not repeated in the message).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Keeps the component's own typed error, whose text is already the message, so that a
    /// caller can match it with [`ComponentError::origin`]. Unlike
    /// [`with_source`](Self::with_source) it is not part of the `source()` chain (an error
    /// report would print the same sentence twice).
    pub fn with_origin(mut self, origin: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.origin = Some(Box::new(origin));
        self
    }

    /// The component's own typed error of type `E`, if it kept one (with
    /// [`with_origin`](Self::with_origin) or as the source). For example, the Docker runtime's
    /// port conflict:
    ///
    /// ```ignore
    /// if let blue_green_core::Error::Step { source, .. } = &error {
    ///     if let Some(blue_green_docker::Error::PortInUse { port, .. }) = source.origin() {
    ///         eprintln!("port {port} is taken");
    ///     }
    /// }
    /// ```
    pub fn origin<E: std::error::Error + 'static>(&self) -> Option<&E> {
        [self.origin.as_deref(), self.source.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|e| e.downcast_ref::<E>())
    }
}

/// The exit classes of DESIGN.md, shared by the engine and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitClass {
    /// 1: the command failed and nothing serving changed.
    Failed,
    /// 2: bad config or usage.
    Usage,
    /// 3: another command holds the app's lock.
    Locked,
    /// 4: the environment (Docker, router, state dir) is unreachable.
    Unreachable,
    /// 5: the command failed and the previous state could not be fully restored.
    Inconsistent,
    /// 130: cancelled by the user (Ctrl-C) and rolled back.
    Cancelled,
}

impl ExitClass {
    /// The process exit code for this class.
    pub fn code(self) -> i32 {
        match self {
            ExitClass::Failed => 1,
            ExitClass::Usage => 2,
            ExitClass::Locked => 3,
            ExitClass::Unreachable => 4,
            ExitClass::Inconsistent => 5,
            ExitClass::Cancelled => 130,
        }
    }
}

/// Who holds an app's deploy lock; named in the [`Error::Locked`] message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LockHolder {
    /// Process id of the holder.
    pub pid: u32,
    /// Host name of the holder.
    pub host: String,
    /// When it took the lock (saved as RFC 3339); `None` when the lock file does not say.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<time::OffsetDateTime>,
    /// The command it runs, for example `deploy`.
    pub command: String,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` (pid {} on {}, since {})",
            self.command,
            self.pid,
            self.host,
            self.since
                .map_or_else(|| "an unknown time".into(), crate::state::short_time)
        )
    }
}

/// What is left after a failed restore: each line names a thing a person must look at. The
/// detail of [`Error::Inconsistent`]; read it with [`Leftovers::items`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftovers(pub Vec<String>);

impl Leftovers {
    /// What is left, one sentence per thing a person must look at.
    pub fn items(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// Why a new instance never became ready: the detail of [`Error::NotReady`] (re-exported at
/// the crate root as `NotReadyDetail`, so that it does not read like the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotReady {
    /// A sentence: "exited with code 1 after 0.4s" or "not healthy within 60s".
    pub reason: String,
    /// The last probe result, if a probe ran.
    pub last_probe: Option<String>,
    /// The instance's last log lines (may be empty when the runtime has none).
    pub logs: Vec<String>,
}

/// `cause`'s message without the `{app}: ` it starts with: an error that wraps another names
/// the app once.
fn without_app(cause: &Error, app: &AppName) -> String {
    let text = cause.to_string();
    match text.strip_prefix(&format!("{app}: ")) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

impl NotReady {
    /// A sentence: why it never became ready.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The last probe result, if a probe ran.
    pub fn last_probe(&self) -> Option<&str> {
        self.last_probe.as_deref()
    }

    /// The instance's last log lines (empty when the runtime has none).
    pub fn logs(&self) -> &[String] {
        &self.logs
    }
}

/// An error of the engine. Each variant names the app, and where it applies the color and step,
/// and maps to an [`ExitClass`] with [`Error::exit_class`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input to a command (for example `switch` to a color that is not running).
    #[error("{app}: {message}")]
    Usage {
        /// The app.
        app: AppName,
        /// What was wrong and what to do.
        message: String,
    },

    /// Another command holds the app's lock.
    #[error("{app}: another command holds the deploy lock: {holder}; wait for it to finish, or if that process is gone, run the command again (a lock whose holder has exited is taken over)")]
    Locked {
        /// The app.
        app: AppName,
        /// Who holds it.
        holder: LockHolder,
    },

    /// A step failed; nothing that was serving changed.
    #[error("{app}: {step} of {color} failed: {source}")]
    Step {
        /// The app.
        app: AppName,
        /// The color the step acted on.
        color: Color,
        /// The step.
        step: Step,
        /// What the component said.
        #[source]
        source: ComponentError,
    },

    /// The new instance never became ready; it was removed and the live color kept serving.
    #[error("{app}: release {release} in {color} never became ready: {}{}", .detail.reason, .detail.last_probe.as_ref().map(|p| format!("; last probe: {p}")).unwrap_or_default())]
    NotReady {
        /// The app.
        app: AppName,
        /// The color it was started in.
        color: Color,
        /// The release id.
        release: String,
        /// Reason, last probe and logs.
        detail: NotReady,
    },

    /// The command was cancelled (Ctrl-C) and rolled back.
    #[error("{app}: cancelled during {step}; rolled back, nothing serving changed")]
    Cancelled {
        /// The app.
        app: AppName,
        /// The step that was running.
        step: Step,
    },

    /// The command failed and restoring the previous state failed too.
    #[error("{app}: {}; restoring the previous state failed, left: {left}", without_app(.cause, .app))]
    Inconsistent {
        /// The app.
        app: AppName,
        /// The first failure.
        cause: Box<Error>,
        /// What a person must look at.
        left: Leftovers,
    },

    /// The state store could not be read or written.
    #[error("{app}: state store: {source}")]
    State {
        /// The app.
        app: AppName,
        /// What the store said.
        #[source]
        source: ComponentError,
    },
}

impl Error {
    /// The exit class of DESIGN.md for this error.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Error::Usage { .. } => ExitClass::Usage,
            Error::Locked { .. } => ExitClass::Locked,
            Error::Step { source, .. } | Error::State { source, .. } => match source.kind {
                ComponentErrorKind::Unreachable => ExitClass::Unreachable,
                ComponentErrorKind::Invalid => ExitClass::Usage,
                ComponentErrorKind::Timeout | ComponentErrorKind::Failed => ExitClass::Failed,
            },
            Error::NotReady { .. } => ExitClass::Failed,
            Error::Cancelled { .. } => ExitClass::Cancelled,
            // The environment went away before live traffic moved (Docker stopped while the
            // new color started): the leftovers cannot be removed until it is back, and the
            // next command removes them then; what serves did not change, so the class is the
            // environment's, not a half-done switch.
            Error::Inconsistent { cause, .. } if cause.unreachable_before_switch() => {
                ExitClass::Unreachable
            }
            Error::Inconsistent { .. } => ExitClass::Inconsistent,
        }
    }

    /// True for an unreachable component at a step before the router is touched.
    fn unreachable_before_switch(&self) -> bool {
        matches!(
            self,
            Error::Step {
                step: Step::Lock
                    | Step::Reconcile
                    | Step::Clear
                    | Step::PreDeploy
                    | Step::Start
                    | Step::Ready
                    | Step::PreSwitch,
                source,
                ..
            } if source.kind == ComponentErrorKind::Unreachable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_classes_follow_the_design() {
        let app = AppName::new("web").unwrap();
        let step = |kind| Error::Step {
            app: app.clone(),
            color: Color::Blue,
            step: Step::Start,
            source: ComponentError::new(kind, "x"),
        };
        assert_eq!(step(ComponentErrorKind::Unreachable).exit_class().code(), 4);
        assert_eq!(step(ComponentErrorKind::Failed).exit_class().code(), 1);
        assert_eq!(step(ComponentErrorKind::Invalid).exit_class().code(), 2);
        let locked = Error::Locked {
            app: app.clone(),
            holder: LockHolder {
                pid: 42,
                host: "h".into(),
                since: None,
                command: "deploy".into(),
            },
        };
        assert_eq!(locked.exit_class().code(), 3);
        assert!(locked.to_string().contains("pid 42"));
        let inc = Error::Inconsistent {
            app: app.clone(),
            cause: Box::new(step(ComponentErrorKind::Failed)),
            left: Leftovers(vec!["router points at nothing".into()]),
        };
        assert_eq!(inc.exit_class().code(), 5);
        // Unreachable before the switch: the environment's class; after it: still 5.
        let unreachable_at = |step_name| Error::Inconsistent {
            app: app.clone(),
            cause: Box::new(Error::Step {
                app: app.clone(),
                color: Color::Green,
                step: step_name,
                source: ComponentError::unreachable("cannot reach the Docker daemon"),
            }),
            left: Leftovers(vec!["green may hold a container".into()]),
        };
        assert_eq!(unreachable_at(Step::Start).exit_class().code(), 4);
        assert_eq!(unreachable_at(Step::Verify).exit_class().code(), 5);
        assert_eq!(unreachable_at(Step::Stop).exit_class().code(), 5);
        // The app is named once, not once for each error that wraps another.
        let text = inc.to_string();
        assert!(
            text.starts_with(&format!("{app}: start of blue failed")),
            "{text}"
        );
        assert_eq!(text.matches(&format!("{app}:")).count(), 1, "{text}");
    }
}
