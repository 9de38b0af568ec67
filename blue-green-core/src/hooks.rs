//! Hooks: programs a deploy runs at fixed points of its life — a database migration before the
//! new color starts, a smoke test against the new color before it takes traffic, a
//! notification after it does.
//!
//! The engine decides *when* a hook runs and what a failure means ([`HookPoint`]); a [`Hooks`]
//! implementation decides *what* runs. [`CommandHooks`] runs an argv per point through the one
//! process runner ([`crate::process::Command`]: its own process group, a timeout, capped
//! output), with the deploy described in `BLUE_GREEN_*` variables ([`HookContext::env`]). The
//! test fakes implement [`Hooks`] too, so that injected hook failures reach the engine's
//! invariants.
//!
//! ```
//! use std::time::Duration;
//! use blue_green_core::hooks::{CommandHooks, HookCommand, HookPoint};
//!
//! let hooks = CommandHooks::new().with(
//!     HookPoint::PreDeploy,
//!     HookCommand::new(vec!["./migrate".into()], Duration::from_secs(300)).unwrap(),
//! );
//! // engine.with_hooks(std::sync::Arc::new(hooks))
//! # let _ = hooks;
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::ComponentError;
use crate::events::Step;
use crate::model::{AppName, Color, Endpoint};
use crate::process::{Command, Keep};
use crate::runtime::{COLOR_ENV, RELEASE_ENV};

/// Where in a deploy a hook runs, and what its failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// Before the new color starts (after the idle slot was cleared): migrations. A failure
    /// fails the deploy; nothing serving changed.
    PreDeploy,
    /// The new color is ready and answers at its own endpoint, the router does not point at
    /// it yet: smoke tests. A failure fails the deploy and removes the new color.
    PreSwitch,
    /// The router points at the new color and the switch was verified; the old color still
    /// runs (it is drained after this hook). A failure is a warning, or, with
    /// [`SwitchPolicy::rollback_on_post_switch_failure`](crate::SwitchPolicy), routes back to
    /// the old color and fails the deploy.
    PostSwitch,
    /// The deploy succeeded and was recorded. A failure is a warning.
    PostDeploy,
    /// The deploy failed (after its restore). A failure is a warning.
    OnFailure,
}

impl HookPoint {
    /// Every point, in the order a deploy reaches them.
    pub const ALL: [HookPoint; 5] = [
        HookPoint::PreDeploy,
        HookPoint::PreSwitch,
        HookPoint::PostSwitch,
        HookPoint::PostDeploy,
        HookPoint::OnFailure,
    ];

    /// The name in config files, events and messages: `pre_deploy`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::PreDeploy => "pre_deploy",
            HookPoint::PreSwitch => "pre_switch",
            HookPoint::PostSwitch => "post_switch",
            HookPoint::PostDeploy => "post_deploy",
            HookPoint::OnFailure => "on_failure",
        }
    }

    /// The engine step that runs this hook (journaled like every step).
    pub fn step(self) -> Step {
        match self {
            HookPoint::PreDeploy => Step::PreDeploy,
            HookPoint::PreSwitch => Step::PreSwitch,
            HookPoint::PostSwitch => Step::PostSwitch,
            HookPoint::PostDeploy => Step::PostDeploy,
            HookPoint::OnFailure => Step::OnFailure,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of the variable with the app's name.
pub const APP_ENV: &str = "BLUE_GREEN_APP";
/// The name of the variable with the new color's endpoint (`host:port`), once it is known.
pub const ENDPOINT_ENV: &str = "BLUE_GREEN_ENDPOINT";
/// The name of the variable with the color that was live before the deploy.
pub const PREVIOUS_COLOR_ENV: &str = "BLUE_GREEN_PREVIOUS_COLOR";
/// The name of the variable with the release that was live before the deploy.
pub const PREVIOUS_RELEASE_ENV: &str = "BLUE_GREEN_PREVIOUS_RELEASE";

/// What a hook is told about the deploy it runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HookContext {
    /// The app.
    pub app: AppName,
    /// The color the deploy brings up.
    pub color: Color,
    /// The release it brings up.
    pub release: String,
    /// Where the new color answers; `None` before it started (`pre_deploy`, and `on_failure`
    /// when the start failed).
    pub endpoint: Option<Endpoint>,
    /// The color live before the deploy, if any.
    pub previous_color: Option<Color>,
    /// The release live before the deploy, if any.
    pub previous_release: Option<String>,
}

impl HookContext {
    /// A context for a deploy of `release` to `color`, with nothing known before it.
    pub fn new(app: AppName, color: Color, release: impl Into<String>) -> Self {
        HookContext {
            app,
            color,
            release: release.into(),
            endpoint: None,
            previous_color: None,
            previous_release: None,
        }
    }

    /// The environment a hook gets: `BLUE_GREEN_APP`, `_COLOR`, `_RELEASE`, and, when known,
    /// `_ENDPOINT`, `_PREVIOUS_COLOR` and `_PREVIOUS_RELEASE` (a variable that is not known
    /// is set to the empty string, so that a hook never sees one inherited from the caller).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let or_empty = |v: Option<String>| v.unwrap_or_default();
        vec![
            (APP_ENV, self.app.to_string()),
            (COLOR_ENV, self.color.as_str().to_string()),
            (RELEASE_ENV, self.release.clone()),
            (
                ENDPOINT_ENV,
                or_empty(self.endpoint.as_ref().map(Endpoint::to_string)),
            ),
            (
                PREVIOUS_COLOR_ENV,
                or_empty(self.previous_color.map(|c| c.as_str().to_string())),
            ),
            (
                PREVIOUS_RELEASE_ENV,
                or_empty(self.previous_release.clone()),
            ),
        ]
    }
}

/// How one hook ended, when it ran to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HookOutput {
    /// Whether it succeeded (exit code 0).
    pub success: bool,
    /// How it ended, for a message: "exited with code 0".
    pub status: String,
    /// What it printed (stdout, then stderr), the end of it when it printed a lot.
    pub output: String,
}

impl HookOutput {
    /// An outcome as a [`Hooks`] implementation reports it.
    pub fn new(success: bool, status: impl Into<String>, output: impl Into<String>) -> Self {
        HookOutput {
            success,
            status: status.into(),
            output: output.into(),
        }
    }
}

/// The hooks of an app. The engine asks [`Hooks::timeout`] whether a point has a hook and how
/// long it may take (it puts its own limit a little above that around [`Hooks::run`]).
#[async_trait]
pub trait Hooks: Send + Sync {
    /// The timeout of the hook at `point`, or `None` when there is no hook there.
    fn timeout(&self, point: HookPoint) -> Option<Duration>;

    /// Runs the hook at `point` to its end. `Ok` with `success: false` is a hook that ran and
    /// failed; `Err` is one that could not be run or did not end in time.
    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
    ) -> Result<HookOutput, ComponentError>;
}

/// No hooks at all: what an engine has unless given others.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {
    fn timeout(&self, _point: HookPoint) -> Option<Duration> {
        None
    }

    async fn run(
        &self,
        point: HookPoint,
        _context: &HookContext,
    ) -> Result<HookOutput, ComponentError> {
        Err(ComponentError::invalid(format!(
            "no {point} hook is configured"
        )))
    }
}

/// How much of a hook's output is kept, per stream: the end, where a failing program says why.
/// Other [`Hooks`] implementations (a release command in a container) keep as much.
pub const HOOK_OUTPUT_LIMIT: usize = 16 * 1024;

/// One hook program: an argv (never a shell line), its timeout, its working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    argv: Vec<String>,
    timeout: Duration,
    dir: Option<PathBuf>,
}

impl HookCommand {
    /// A hook running `argv` (program first) for at most `timeout`. Refuses an empty argv, an
    /// empty program, a NUL in an argument and a zero timeout.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Result<Self, ComponentError> {
        match argv.first() {
            None => return Err(ComponentError::invalid("a hook's command is empty: give an argv with the program first, for example [\"./migrate\", \"up\"]")),
            Some(p) if p.trim().is_empty() => return Err(ComponentError::invalid("a hook's program (the first element of its command) is empty")),
            Some(_) => {}
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(ComponentError::invalid(
                "an argument of a hook's command contains a NUL character",
            ));
        }
        if timeout.is_zero() {
            return Err(ComponentError::invalid(
                "a hook's timeout must be longer than zero",
            ));
        }
        Ok(HookCommand {
            argv,
            timeout,
            dir: None,
        })
    }

    /// Runs the program in `dir` (the CLI: the config file's directory, so that `./migrate`
    /// means the script beside the config).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The argv.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Hooks that run programs, at most one per [`HookPoint`].
#[derive(Debug, Clone, Default)]
pub struct CommandHooks {
    hooks: BTreeMap<HookPoint, HookCommand>,
}

impl CommandHooks {
    /// No hooks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `command` at `point` (replacing one set before).
    pub fn with(mut self, point: HookPoint, command: HookCommand) -> Self {
        self.hooks.insert(point, command);
        self
    }

    /// The command at `point`, if any.
    pub fn get(&self, point: HookPoint) -> Option<&HookCommand> {
        self.hooks.get(&point)
    }

    /// Whether no point has a hook.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }
}

#[async_trait]
impl Hooks for CommandHooks {
    fn timeout(&self, point: HookPoint) -> Option<Duration> {
        self.hooks.get(&point).map(|h| h.timeout)
    }

    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
    ) -> Result<HookOutput, ComponentError> {
        let Some(hook) = self.hooks.get(&point) else {
            return NoHooks.run(point, context).await;
        };
        let mut command = Command::from_argv(&hook.argv)
            .ok_or_else(|| ComponentError::invalid(format!("the {point} hook is empty")))?
            .envs(context.env())
            .output_limit(HOOK_OUTPUT_LIMIT, Keep::End);
        if let Some(dir) = &hook.dir {
            command = command.current_dir(dir);
        }
        let out = command.run(hook.timeout).await.map_err(|e| {
            let mut error = ComponentError::from(e);
            error.message = format!("the {point} hook: {}", error.message);
            error
        })?;
        let mut output = out.stdout.text().into_owned();
        let stderr = out.stderr.text();
        if !stderr.is_empty() {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&stderr);
        }
        Ok(HookOutput {
            success: out.status.success(),
            status: out.status_text(),
            output,
        })
    }
}

/// Two [`Hooks`] as one: at each point, `first`'s hook, then, if it succeeded, `then`'s.
///
/// The CLI chains the user's `[hooks]` with the Docker runtimes' release command this way, so
/// that the engine keeps one `pre_deploy` step (one event, one history record, one meaning of
/// a failure) whatever runs in it. The timeout at a point is the sum of both; the output is
/// both outputs in order; the status says how each ended ("exited with code 0, then ...").
/// When `first` fails (or cannot run), `then` does not run and `first`'s result is the result.
///
/// ```
/// use std::time::Duration;
/// use blue_green_core::hooks::{Chain, CommandHooks, HookCommand, HookPoint, Hooks};
///
/// let backup = CommandHooks::new().with(
///     HookPoint::PreDeploy,
///     HookCommand::new(vec!["./backup-db".into()], Duration::from_secs(60)).unwrap(),
/// );
/// let migrate = CommandHooks::new().with(
///     HookPoint::PreDeploy,
///     HookCommand::new(vec!["./migrate".into()], Duration::from_secs(300)).unwrap(),
/// );
/// let both = Chain::new(backup, migrate);
/// assert_eq!(both.timeout(HookPoint::PreDeploy), Some(Duration::from_secs(360)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Chain<A, B> {
    first: A,
    then: B,
}

impl<A: Hooks, B: Hooks> Chain<A, B> {
    /// `first`'s hooks, each followed by `then`'s at the same point.
    pub fn new(first: A, then: B) -> Self {
        Chain { first, then }
    }
}

#[async_trait]
impl<A: Hooks, B: Hooks> Hooks for Chain<A, B> {
    fn timeout(&self, point: HookPoint) -> Option<Duration> {
        match (self.first.timeout(point), self.then.timeout(point)) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        }
    }

    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
    ) -> Result<HookOutput, ComponentError> {
        if self.first.timeout(point).is_none() {
            return self.then.run(point, context).await;
        }
        let first = self.first.run(point, context).await?;
        if !first.success || self.then.timeout(point).is_none() {
            return Ok(first);
        }
        let then = self.then.run(point, context).await?;
        let mut output = first.output;
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&then.output);
        Ok(HookOutput {
            success: then.success,
            status: format!("{}, then {}", first.status, then.status),
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> HookContext {
        let mut c = HookContext::new(AppName::new("web").unwrap(), Color::Green, "v2");
        c.endpoint = Some(Endpoint::new("127.0.0.1", 8082));
        c.previous_color = Some(Color::Blue);
        c
    }

    #[test]
    fn the_environment_names_the_deploy_and_blanks_what_is_unknown() {
        let env = context().env();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BLUE_GREEN_APP"), Some("web"));
        assert_eq!(get("BLUE_GREEN_COLOR"), Some("green"));
        assert_eq!(get("BLUE_GREEN_RELEASE"), Some("v2"));
        assert_eq!(get("BLUE_GREEN_ENDPOINT"), Some("127.0.0.1:8082"));
        assert_eq!(get("BLUE_GREEN_PREVIOUS_COLOR"), Some("blue"));
        assert_eq!(get("BLUE_GREEN_PREVIOUS_RELEASE"), Some(""));
    }

    #[test]
    fn a_hook_command_refuses_what_cannot_run() {
        let t = Duration::from_secs(1);
        assert!(HookCommand::new(vec![], t).is_err());
        assert!(HookCommand::new(vec![" ".into()], t).is_err());
        assert!(HookCommand::new(vec!["a".into(), "b\0".into()], t).is_err());
        assert!(HookCommand::new(vec!["a".into()], Duration::ZERO).is_err());
        assert!(HookCommand::new(vec!["a".into()], t).is_ok());
    }

    /// Records what ran, and answers with a fixed outcome.
    struct Fixed {
        success: bool,
        said: &'static str,
        ran: std::sync::Mutex<u32>,
    }

    impl Fixed {
        fn new(success: bool, said: &'static str) -> Self {
            Fixed {
                success,
                said,
                ran: std::sync::Mutex::new(0),
            }
        }
    }

    #[async_trait]
    impl Hooks for Fixed {
        fn timeout(&self, point: HookPoint) -> Option<Duration> {
            (point == HookPoint::PreDeploy).then_some(Duration::from_secs(10))
        }

        async fn run(
            &self,
            _point: HookPoint,
            _context: &HookContext,
        ) -> Result<HookOutput, ComponentError> {
            *self.ran.lock().unwrap() += 1;
            let code = if self.success { 0 } else { 3 };
            Ok(HookOutput::new(
                self.success,
                format!("exited with code {code}"),
                self.said,
            ))
        }
    }

    #[tokio::test]
    async fn a_chain_runs_the_second_hook_only_after_the_first_succeeded() {
        let both = Chain::new(
            Fixed::new(true, "backed up"),
            Fixed::new(false, "migration 7 failed\n"),
        );
        assert_eq!(
            both.timeout(HookPoint::PreDeploy),
            Some(Duration::from_secs(20))
        );
        assert_eq!(both.timeout(HookPoint::PostDeploy), None);
        let out = both.run(HookPoint::PreDeploy, &context()).await.unwrap();
        assert!(!out.success);
        assert_eq!(out.status, "exited with code 0, then exited with code 3");
        assert_eq!(out.output, "backed up\nmigration 7 failed\n");

        let stopped = Chain::new(Fixed::new(false, "no backup"), Fixed::new(true, "migrated"));
        let out = stopped.run(HookPoint::PreDeploy, &context()).await.unwrap();
        assert_eq!((out.success, out.output.as_str()), (false, "no backup"));
        assert_eq!(*stopped.then.ran.lock().unwrap(), 0, "the second never ran");

        // A point only one side has a hook at is that side's alone.
        let only_second = Chain::new(CommandHooks::new(), Fixed::new(true, "migrated"));
        assert_eq!(
            only_second.timeout(HookPoint::PreDeploy),
            Some(Duration::from_secs(10))
        );
        let out = only_second
            .run(HookPoint::PreDeploy, &context())
            .await
            .unwrap();
        assert_eq!(
            (out.success, out.status.as_str()),
            (true, "exited with code 0")
        );
    }
}
