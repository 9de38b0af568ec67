//! Turns the raw file into a [`Config`]: every value is checked against what its key expects,
//! every problem is collected with its line, and keys that do not belong to the chosen kind are
//! refused. One submodule per table.

mod caddy;
mod haproxy;
mod health;
pub(crate) mod proxy;
mod router;
mod runtime;
mod swarm;

pub use caddy::check_caddy;
pub use haproxy::check_haproxy;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use blue_green_core::{
    AppName, CommandHooks, EngineConfig, ErrorRate, HookCommand, HookPoint, HttpProbeConfig,
    KeepPrevious, ReadinessPolicy, ShiftSteps, SwitchPolicy, Timeouts,
};
use regex::Regex;
use toml::Spanned;

use super::raw::{RawConfig, RawHooks, RawSwitch, RawTimeouts, Str};
use super::{Config, ConfigError, HealthConfig, Problem, Source};

fn pattern(re: &str) -> Regex {
    // The patterns below are literals, checked by the unit tests.
    Regex::new(re).unwrap_or_else(|e| panic!("bad built-in pattern {re}: {e}"))
}

static COMPOSE_PROJECT: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[a-z0-9][a-z0-9_-]*$"));
static SERVICE: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"));
static DOCKER_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"));
pub(super) static IMAGE: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$"));
static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"));
static LABEL: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$"));
static SIGNAL: LazyLock<Regex> = LazyLock::new(|| pattern(r"^(SIG[A-Z0-9+]+|[A-Z0-9+]+|[0-9]+)$"));
static METHOD: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Z]{1,16}$"));
static HOST_HEADER: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"));
static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9-]+$"));
static URL_PATH: LazyLock<Regex> = LazyLock::new(|| pattern(r"^/[\x21-\x7e]*$"));

/// How long a hook may run unless its `timeout` says otherwise: long enough for a migration.
pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

const RESERVED_ENV: [&str; 2] = ["BLUE_GREEN_COLOR", "BLUE_GREEN_RELEASE"];

/// Collects problems while building a [`Config`].
pub(super) struct Checker<'a> {
    src: Source<'a>,
    dir: &'a Path,
    problems: Vec<Problem>,
    /// `[endpoints]` is in the file (even if a value in it was refused).
    endpoints_written: bool,
    /// Where `[endpoints]` is, when it is in the file.
    endpoints_span: Option<Range<usize>>,
}

impl<'a> Checker<'a> {
    pub fn new(src: Source<'a>, dir: &'a Path) -> Self {
        Checker {
            src,
            dir,
            problems: Vec::new(),
            endpoints_written: false,
            endpoints_span: None,
        }
    }

    fn bad(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.problems.push(self.src.problem(span, key, message));
    }

    /// Checks the whole file.
    pub fn config(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let app = match AppName::new(raw.app.get_ref().clone()) {
            Ok(app) => app,
            Err(e) => {
                self.bad(raw.app.span(), "app", e.message);
                // Go on with a stand-in so that the other keys are checked too.
                AppName::new("app").map_err(|_| ConfigError {
                    problems: self.problems.clone(),
                })?
            }
        };
        let state_dir = match &raw.state_dir {
            Some(s) => {
                let filled = self.filled(s, "state_dir", &["app"], &app);
                self.path(s, "state_dir", &filled)
            }
            None => self.dir.join(".blue-green"),
        };
        self.endpoints_written = raw.endpoints.is_some();
        self.endpoints_span = raw.endpoints.as_ref().map(Spanned::span);
        let endpoints = raw
            .endpoints
            .as_ref()
            .and_then(|e| self.endpoints(e, "endpoints"));
        let runtime = self.runtime(&raw.runtime, &app, endpoints);
        let (health, readiness) = match &raw.health {
            Some(h) => self.health(h),
            None => (
                HealthConfig::Http(HttpProbeConfig::default()),
                ReadinessPolicy::default(),
            ),
        };
        if let (
            Some(super::RuntimeConfig::Swarm(_)),
            HealthConfig::Docker | HealthConfig::Exec(_),
        ) = (&runtime, &health)
        {
            // Swarm already waits for every task's HEALTHCHECK before `start` returns, and a
            // probe of one container would not speak for the others.
            let span = raw
                .health
                .as_ref()
                .and_then(|h| h.get_ref().kind.as_ref().map(Spanned::span))
                .unwrap_or_default();
            self.bad(
                span,
                "health.kind",
                "kind = \"docker\" and \"exec\" check one container, which a swarm service spread over several nodes does not have: use \"http\", \"tcp\" or \"command\" (swarm itself waits for every task's HEALTHCHECK before the probe runs)",
            );
        }
        let router = self.router(&raw.router, &app, &state_dir);
        let switch = self.switch(raw.switch.as_ref());
        let mut runtime = runtime;
        if let Some(super::RuntimeConfig::Swarm(swarm)) = &mut runtime {
            // Swarm stops a task with its own spec's grace period: it goes in at creation.
            swarm.stop_grace_period = Some(switch.stop_timeout);
        }
        let timeouts = self.timeouts(raw.timeouts.as_ref());
        let hooks = self.hooks(raw.hooks.as_ref());
        let release_command = self.release_command(raw.runtime.get_ref());

        if !self.problems.is_empty() {
            self.problems.sort_by_key(|p| p.line);
            return Err(ConfigError {
                problems: self.problems,
            });
        }
        let (Some(runtime), Some(router)) = (runtime, router) else {
            // Unreachable in practice: a `None` always comes with a problem.
            return Err(ConfigError::one(self.src.file, "the config is incomplete"));
        };
        let mut engine = EngineConfig::new(app.clone());
        engine.readiness = readiness;
        engine.switch = switch;
        engine.timeouts = timeouts;
        Ok(Config {
            path: self.src.file.to_path_buf(),
            app,
            state_dir,
            runtime,
            health,
            router,
            engine,
            hooks,
            release_command,
        })
    }

    // ---- hooks ---------------------------------------------------------------------------

    /// `[hooks]`: each point's argv (with `{config_dir}` filled in), run in the config file's
    /// directory, with its timeout (default [`DEFAULT_HOOK_TIMEOUT`]).
    fn hooks(&mut self, raw: Option<&RawHooks>) -> CommandHooks {
        let mut hooks = CommandHooks::new();
        let Some(h) = raw else { return hooks };
        let points = [
            (HookPoint::PreDeploy, &h.pre_deploy),
            (HookPoint::PreSwitch, &h.pre_switch),
            (HookPoint::PostSwitch, &h.post_switch),
            (HookPoint::PostDeploy, &h.post_deploy),
            (HookPoint::OnFailure, &h.on_failure),
        ];
        for (point, hook) in points {
            let Some(hook) = hook else { continue };
            let hook = hook.get_ref();
            let key = format!("hooks.{point}");
            let argv = self.argv(&hook.command, &format!("{key}.command"), false);
            let timeout = self.duration(
                hook.timeout.as_ref(),
                &format!("{key}.timeout"),
                DEFAULT_HOOK_TIMEOUT,
                false,
            );
            // The checks above report what `HookCommand::new` would refuse, with the line.
            if let Ok(command) = HookCommand::new(argv, timeout) {
                hooks = hooks.with(point, command.current_dir(self.dir));
            }
        }
        hooks
    }

    // ---- switch, timeouts ----------------------------------------------------------------

    fn switch(&mut self, raw: Option<&RawSwitch>) -> SwitchPolicy {
        let d = SwitchPolicy::default();
        let Some(s) = raw else { return d };
        SwitchPolicy {
            drain: self.duration(s.drain.as_ref(), "switch.drain", d.drain, true),
            stop_timeout: {
                let t = self.duration(
                    s.stop_timeout.as_ref(),
                    "switch.stop_timeout",
                    d.stop_timeout,
                    true,
                );
                // Docker and compose take the stop grace period in whole seconds: "500ms"
                // would silently become a different time.
                if let (Some(v), true) = (&s.stop_timeout, t.subsec_nanos() != 0) {
                    self.bad(
                        v.span(),
                        "switch.stop_timeout",
                        format!("`{}` is not a whole number of seconds: Docker stops containers in whole seconds (it would wait {}s); write for example \"{}s\"", v.get_ref(), t.as_secs(), t.as_secs().max(1)),
                    );
                }
                t
            },
            rollback_on_post_switch_failure: s
                .rollback_on_post_switch_failure
                .as_ref()
                .map_or(d.rollback_on_post_switch_failure, |b| *b.get_ref()),
            watch: self.duration(s.watch.as_ref(), "switch.watch", d.watch, true),
            watch_failures: match &s.watch_failures {
                None => d.watch_failures,
                Some(n) => match u32::try_from(*n.get_ref()) {
                    Ok(n) if (1..=100).contains(&n) => n,
                    _ => {
                        self.bad(
                            n.span(),
                            "switch.watch_failures",
                            format!(
                                "{} is not allowed: expected a number of probes from 1 to 100",
                                n.get_ref()
                            ),
                        );
                        d.watch_failures
                    }
                },
            },
            watch_max_error_rate: s.watch_max_error_rate.as_ref().and_then(
                |r| match ErrorRate::new(*r.get_ref()) {
                    Ok(rate) => Some(rate),
                    Err(e) => {
                        self.bad(r.span(), "switch.watch_max_error_rate", e.message);
                        None
                    }
                },
            ),
            watch_min_requests: match &s.watch_min_requests {
                None => d.watch_min_requests,
                Some(n) => match u64::try_from(*n.get_ref()) {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        self.bad(
                            n.span(),
                            "switch.watch_min_requests",
                            format!(
                                "{} is not allowed: expected a number of responses of at least 1",
                                n.get_ref()
                            ),
                        );
                        d.watch_min_requests
                    }
                },
            },
            steps: s.steps.as_ref().and_then(|list| self.steps(list)),
            step_wait: self.duration(s.step_wait.as_ref(), "switch.step_wait", d.step_wait, false),
            keep_previous: match &s.keep_previous {
                None => d.keep_previous,
                Some(k) => match k.get_ref().as_str() {
                    "running" => KeepPrevious::Running,
                    "stopped" => KeepPrevious::Stopped,
                    "removed" => KeepPrevious::Removed,
                    other => {
                        self.bad(k.span(), "switch.keep_previous", format!("unknown value `{other}`: expected \"running\" (instant rollback), \"stopped\" or \"removed\""));
                        d.keep_previous
                    }
                },
            },
        }
    }

    /// `[switch] steps`: percentages, checked by [`ShiftSteps`]; a value that is no percentage
    /// at all is named with its own line.
    fn steps(&mut self, list: &Spanned<Vec<Spanned<i64>>>) -> Option<ShiftSteps> {
        let mut percents = Vec::new();
        for p in list.get_ref() {
            match u8::try_from(*p.get_ref()) {
                Ok(n) => percents.push(n),
                Err(_) => {
                    self.bad(
                        p.span(),
                        "switch.steps",
                        format!(
                            "{} is not a share of traffic: each step is a percentage from 1 to 100, for example steps = [10, 50, 100]",
                            p.get_ref()
                        ),
                    );
                    return None;
                }
            }
        }
        match ShiftSteps::new(percents) {
            Ok(steps) => Some(steps),
            Err(e) => {
                self.bad(list.span(), "switch.steps", e.message);
                None
            }
        }
    }

    fn timeouts(&mut self, raw: Option<&RawTimeouts>) -> Timeouts {
        let d = Timeouts::default();
        let Some(t) = raw else { return d };
        Timeouts {
            start: self.duration(t.start.as_ref(), "timeouts.start", d.start, false),
            stop_margin: self.duration(
                t.stop_margin.as_ref(),
                "timeouts.stop_margin",
                d.stop_margin,
                true,
            ),
            runtime: self.duration(t.runtime.as_ref(), "timeouts.runtime", d.runtime, false),
            router: self.duration(t.router.as_ref(), "timeouts.router", d.router, false),
            store: self.duration(t.store.as_ref(), "timeouts.store", d.store, false),
        }
    }

    // ---- value helpers -------------------------------------------------------------------

    /// Refuses each key that is set, as not belonging to the chosen kind.
    fn refuse_keys(&mut self, table: &str, keys: &[(&str, Option<Range<usize>>)], only: &str) {
        for (key, span) in keys {
            if let Some(span) = span {
                self.bad(
                    span.clone(),
                    &format!("{table}.{key}"),
                    format!("`{key}` only applies to {only}; remove it"),
                );
            }
        }
    }

    fn duration(
        &mut self,
        v: Option<&Str>,
        key: &str,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(s) = v else { return default };
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.bad(
                    s.span(),
                    key,
                    "must be longer than zero, for example \"500ms\" or \"30s\"",
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.bad(s.span(), key, format!("`{}` is not a duration ({e}): write a number and a unit, for example \"500ms\", \"30s\" or \"2m\"", s.get_ref()));
                default
            }
        }
    }

    fn port(&mut self, p: &Spanned<i64>, key: &str) -> Option<u16> {
        match u16::try_from(*p.get_ref()) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                self.bad(
                    p.span(),
                    key,
                    format!(
                        "{} is not a port: expected a number from 1 to 65535",
                        p.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn matches(&mut self, s: &Str, key: &str, re: &Regex, expected: &str) -> bool {
        if re.is_match(s.get_ref()) {
            return true;
        }
        self.bad(
            s.span(),
            key,
            format!(
                "`{}` is not allowed here: expected {expected}",
                s.get_ref().escape_debug()
            ),
        );
        false
    }

    fn no_control(&mut self, s: &Str, key: &str) {
        if s.get_ref().chars().any(char::is_control) {
            self.bad(
                s.span(),
                key,
                "the value contains a control character (a line break or similar): remove it",
            );
        }
    }

    /// An argv array: at least a program unless `empty_ok`, no empty program, no NUL.
    /// `{config_dir}` becomes the config file's directory; other braces are left as they are
    /// (an argument may well be JSON).
    fn argv(&mut self, list: &Spanned<Vec<Str>>, key: &str, empty_ok: bool) -> Vec<String> {
        let argv = self.argv_filled(list);
        if argv.is_empty() && !empty_ok {
            self.bad(list.span(), key, "the command is empty: expected an argv array with the program first, for example [\"nginx\", \"-s\", \"reload\"]");
        } else if argv.first().is_some_and(|p| p.trim().is_empty()) {
            self.bad(list.span(), key, "the program (the first element) is empty");
        } else if argv.iter().any(|a| a.contains('\0')) {
            self.bad(list.span(), key, "an argument contains a NUL character");
        }
        argv
    }

    /// An argv array with `{config_dir}` filled in, unchecked (for a component that checks
    /// its own commands).
    fn argv_filled(&self, list: &Spanned<Vec<Str>>) -> Vec<String> {
        let dir = self.dir.display().to_string();
        list.get_ref()
            .iter()
            .map(|a| a.get_ref().replace("{config_dir}", &dir))
            .collect()
    }

    /// Checks that `{...}` placeholders are among `allowed`; true when they are.
    fn placeholders(&mut self, s: &Str, key: &str, allowed: &[&str]) -> bool {
        let text = s.get_ref();
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                self.bad(
                    s.span(),
                    key,
                    "an unclosed `{`: placeholders are written {name}",
                );
                return false;
            };
            let name = &after[..close];
            if !allowed.contains(&name) {
                let list: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
                self.bad(
                    s.span(),
                    key,
                    format!(
                        "unknown placeholder `{{{name}}}`: this key understands {}",
                        list.join(" and ")
                    ),
                );
                return false;
            }
            rest = &after[close + 1..];
        }
        true
    }

    /// The value with `{app}` filled in, after checking its placeholders.
    fn filled(&mut self, s: &Str, key: &str, allowed: &[&str], app: &AppName) -> String {
        self.placeholders(s, key, allowed);
        s.get_ref().replace("{app}", app.as_str())
    }

    /// `value` as a path, relative to the config file's directory.
    fn path(&mut self, s: &Str, key: &str, value: &str) -> PathBuf {
        if value.trim().is_empty() {
            self.bad(s.span(), key, "the path is empty");
        }
        let p = PathBuf::from(value);
        if p.is_absolute() {
            p
        } else {
            self.dir.join(p)
        }
    }

    fn existing_file(&mut self, s: &Str, key: &str) -> Option<PathBuf> {
        let p = self.path(s, key, s.get_ref());
        if p.is_file() {
            Some(p)
        } else {
            self.bad(s.span(), key, format!("file {} does not exist (relative paths are relative to the config file's directory)", p.display()));
            None
        }
    }
}
