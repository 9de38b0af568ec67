//! Why a command failed, and its exit code (DESIGN.md: 1 failed, 2 config or usage, 3 locked,
//! 4 unreachable, 5 inconsistent, 130 cancelled).

use blue_green_core::{ComponentError, ComponentErrorKind, ExitClass};
use serde_json::{json, Value};

use crate::config::ConfigError;
use crate::output::{one_line, terminal_text};

/// A failed command.
/// The hint under an error of class unreachable. Commands for which `validate` is no help
/// (`validate` itself, the proxy's commands) replace its second half
/// ([`VALIDATE_HINT`]).
pub(crate) const UNREACHABLE_HINT: &str =
    "nothing was changed; `blue-green validate` checks Docker, compose and nginx one by one";

/// The part of [`UNREACHABLE_HINT`] that sends the user to `validate`.
pub(crate) const VALIDATE_HINT: &str =
    "; `blue-green validate` checks Docker, compose and nginx one by one";

#[derive(Debug)]
pub enum Failure {
    /// The config file is wrong.
    Config(ConfigError),
    /// The command line is wrong.
    Usage(String),
    /// Something the command needs cannot be reached.
    Unreachable(String),
    /// Building a component failed.
    Component(ComponentError),
    /// The engine failed.
    Engine(Box<blue_green_core::Error>),
}

impl Failure {
    /// A Docker or compose error, with the kind the core gives it.
    pub fn docker(e: blue_green_docker::Error) -> Self {
        Failure::Component(e.into())
    }

    /// The exit class.
    pub fn class(&self) -> ExitClass {
        match self {
            Failure::Config(_) | Failure::Usage(_) => ExitClass::Usage,
            Failure::Unreachable(_) => ExitClass::Unreachable,
            Failure::Component(e) => match e.kind {
                ComponentErrorKind::Unreachable => ExitClass::Unreachable,
                ComponentErrorKind::Invalid => ExitClass::Usage,
                // Timeout, Failed, and kinds a later core may add.
                _ => ExitClass::Failed,
            },
            Failure::Engine(e) => e.exit_class(),
        }
    }

    /// The one-line message.
    pub fn message(&self) -> String {
        match self {
            Failure::Config(e) => match e.problems.len() {
                1 => e.to_string(),
                n if n > crate::config::MAX_PROBLEMS => format!(
                    "the config file has more than {} problems:\n{e}",
                    crate::config::MAX_PROBLEMS
                ),
                n => format!("the config file has {n} problems:\n{e}"),
            },
            Failure::Usage(m) | Failure::Unreachable(m) => m.clone(),
            Failure::Component(e) => e.message.clone(),
            Failure::Engine(e) => e.to_string(),
        }
    }

    /// The message for people: text from outside in it (a probe's reason, a lock holder's
    /// name) cannot add lines or send escapes. Errors of the engine and its components are one
    /// line; config and environment problems are one a line.
    pub fn human_message(&self) -> String {
        match self {
            Failure::Component(_) | Failure::Engine(_) => one_line(&self.message()).into_owned(),
            _ => terminal_text(&self.message()).into_owned(),
        }
    }

    /// More for people: the last probe and log lines of an instance that never got ready, and
    /// what to do next.
    pub fn detail(&self) -> String {
        let mut out = String::new();
        if let Failure::Engine(e) = self {
            if let blue_green_core::Error::NotReady { color, detail, .. } = e.as_ref() {
                // The message already ends with the last probe; the logs are what it lacks.
                if detail.logs.is_empty() {
                    out.push_str(&format!("  the {color} instance left no log lines\n"));
                } else {
                    out.push_str(&format!(
                        "  log lines of {color} ({}, from its start and its end; runs of alike lines folded):\n",
                        detail.logs.len()
                    ));
                    for line in &detail.logs {
                        out.push_str(&format!("    | {}\n", one_line(line)));
                    }
                }
            }
        }
        // A watch or post_switch hook failure came after the switch: the old color, which kept
        // running, serves again.
        let after_switch = matches!(
            self,
            Failure::Engine(e) if matches!(
                e.as_ref(),
                blue_green_core::Error::Step {
                    step: blue_green_core::Step::Watch | blue_green_core::Step::PostSwitch,
                    ..
                }
            )
        );
        // A failure at a step of a gradual shift: the new color had a share of live traffic.
        let mid_shift = matches!(
            self,
            Failure::Engine(e) if matches!(
                e.as_ref(),
                blue_green_core::Error::Step { step: blue_green_core::Step::Shift, .. }
                    | blue_green_core::Error::Cancelled { step: blue_green_core::Step::Shift, .. }
            )
        );
        let hint = match self.class() {
            ExitClass::Failed if mid_shift => {
                "all live traffic went back to the old color, which kept running; the new one was drained and removed"
            }
            ExitClass::Cancelled if mid_shift => {
                "cancelled during the gradual shift: all live traffic went back to the old color; the new one was drained and removed"
            }
            ExitClass::Failed if after_switch => {
                "live traffic went back to the old color, which kept running; the new one was removed"
            }
            ExitClass::Failed => "nothing that was serving changed",
            ExitClass::Usage if matches!(self, Failure::Config(_)) => {
                "nothing was started or written; fix the config and run `blue-green validate`"
            }
            ExitClass::Usage => "nothing was started or written",
            ExitClass::Locked => "",
            ExitClass::Unreachable
                if matches!(
                    self,
                    Failure::Engine(e) if matches!(e.as_ref(), blue_green_core::Error::Inconsistent { .. })
                ) =>
            {
                "live traffic did not move; once it answers again, the next command removes what is left (`blue-green status` shows it)"
            }
            ExitClass::Unreachable => UNREACHABLE_HINT,
            ExitClass::Inconsistent => {
                "run `blue-green status` to see what is left; the next command repairs leftovers it can"
            }
            ExitClass::Cancelled => "cancelled; what the deploy started was removed",
        };
        if !hint.is_empty() {
            out.push_str(&format!("  {hint}\n"));
        }
        out
    }

    /// Fields for the `--json` result object.
    pub fn json(&self) -> Value {
        match self {
            Failure::Config(e) => json!({
                "class": "usage",
                "problems": e.problems.iter().map(|p| json!({
                    "file": p.file.display().to_string(),
                    "line": p.line,
                    "key": p.key,
                    "message": p.message,
                })).collect::<Vec<_>>(),
            }),
            Failure::Engine(e) => match e.as_ref() {
                blue_green_core::Error::NotReady { detail, .. } => json!({
                    "class": self.class(),
                    "reason": detail.reason,
                    "last_probe": detail.last_probe,
                    "logs": detail.logs,
                }),
                _ => json!({ "class": self.class() }),
            },
            _ => json!({ "class": self.class() }),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<blue_green_core::Error> for Failure {
    fn from(e: blue_green_core::Error) -> Self {
        Failure::Engine(Box::new(e))
    }
}
