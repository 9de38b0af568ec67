//! Each command: read the config, build the components, call the engine, print the result.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use blue_green_core::{
    CancellationToken, Color, DeployReport, FileStore, Release, StateStore, Status,
};
use blue_green_docker::{ComposeConfig, ComposeFiles};
use serde_json::json;

use crate::cli::{Cli, Command, DeployArgs};
use crate::components::{CliEngine, Components};
use crate::config::{self, Config, HealthConfig, RouterConfig, RuntimeConfig};
use crate::failure::Failure;
use crate::output::{secs, PauseHook, Printer};

/// Runs the command with its config (read before the async runtime starts, so that no file
/// is read on it) and returns the process exit code.
pub async fn run(cli: &Cli, config: Result<Config, config::ConfigError>) -> i32 {
    let printer = Printer {
        json: cli.json,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let name = command_name(&cli.command);
    let result = match config {
        Ok(config) => dispatch(cli, config, printer).await,
        Err(e) => Err(Failure::Config(e)),
    };
    match result {
        Ok(()) => 0,
        Err(f) => {
            let code = f.class().code();
            printer.failure(name, code, &f.message(), f.json(), &f.detail());
            code
        }
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Deploy(_) => "deploy",
        Command::Status => "status",
        Command::Rollback => "rollback",
        Command::Switch { .. } => "switch",
        Command::Down { .. } => "down",
        Command::History { .. } => "history",
        Command::Validate { .. } => "validate",
    }
}

async fn dispatch(cli: &Cli, config: Config, printer: Printer) -> Result<(), Failure> {
    match &cli.command {
        Command::Validate { config_only } => validate(&config, *config_only, printer).await,
        Command::History { limit } => history(&config, *limit, printer).await,
        Command::Deploy(args) => {
            let release = release_for(args, &config).await?;
            let engine = engine(&config, printer, true).await?;
            let started = Instant::now();
            let report = with_cancel(|c| async move { engine.deploy(release, &c).await }).await?;
            changed(printer, "deploy", &report, started);
            Ok(())
        }
        Command::Rollback => {
            let engine = engine(&config, printer, true).await?;
            let started = Instant::now();
            let report = with_cancel(|c| async move { engine.rollback(&c).await }).await?;
            changed(printer, "rollback", &report, started);
            Ok(())
        }
        Command::Switch { color } => {
            let engine = engine(&config, printer, true).await?;
            let color = Color::from(*color);
            let started = Instant::now();
            let report = with_cancel(|c| async move { engine.switch(color, &c).await }).await?;
            changed(printer, "switch", &report, started);
            Ok(())
        }
        Command::Down { color, force } => {
            let engine = engine(&config, printer, true).await?;
            let report = engine.down(color.map(Color::from), *force).await?;
            let mut human = String::new();
            if report.removed.is_empty() {
                human.push_str("nothing to take down");
            }
            for (i, inst) in report.removed.iter().enumerate() {
                let sep = if i == 0 { "removed " } else { ", " };
                let _ = write!(human, "{sep}{} (release {})", inst.color, inst.release);
            }
            printer.success("down", json!({ "report": report }), &human, false);
            Ok(())
        }
        Command::Status => {
            let engine = engine(&config, printer, false).await?;
            let status = engine.status().await?;
            printer.success(
                "status",
                json!({ "status": status }),
                &status_text(&status),
                true,
            );
            Ok(())
        }
    }
}

async fn engine(config: &Config, printer: Printer, steps: bool) -> Result<CliEngine, Failure> {
    tracing::debug!(
        config = %config.path.display(),
        state_dir = %config.state_dir.display(),
        runtime = config.runtime.kind(),
        "building the components"
    );
    let observer = printer.observer(steps, PauseHook::from_env(config.state_dir.clone()));
    Ok(Components::build(config)
        .await?
        .engine(config)
        .with_observer(observer))
}

/// Runs `work` with a cancellation token that Ctrl-C (or SIGTERM) cancels: the engine then
/// rolls back and returns `Error::Cancelled` (exit 130). A second Ctrl-C exits at once; the
/// next command repairs what is left.
async fn with_cancel<F, Fut, T>(work: F) -> Result<T, Failure>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<T, blue_green_core::Error>>,
{
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch_signals(cancel.clone()));
    let result = work(cancel).await;
    watcher.abort();
    result.map_err(Failure::from)
}

async fn watch_signals(cancel: CancellationToken) {
    if interrupted().await.is_err() {
        return;
    }
    eprintln!("interrupted: rolling back (interrupt again to exit at once)");
    cancel.cancel();
    if interrupted().await.is_ok() {
        eprintln!("interrupted twice: exiting now; the next blue-green command repairs leftovers");
        std::process::exit(130);
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn interrupted() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

fn changed(printer: Printer, command: &str, report: &DeployReport, started: Instant) {
    let live = &report.live;
    let previous = report
        .previous
        .map(|p| format!(" (was {p})"))
        .unwrap_or_default();
    let human = format!(
        "{command} done in {}: release {} is live in {} at {}{previous}",
        secs(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        live.release.id,
        live.color,
        live.endpoint,
    );
    printer.success(command, json!({ "report": report }), &human, false);
}

// ---- deploy arguments -----------------------------------------------------------------------

async fn release_for(args: &DeployArgs, config: &Config) -> Result<Release, Failure> {
    if let Some(image) = &args.image {
        if !config::is_valid_image(image) {
            return Err(Failure::Usage(format!(
                "--image `{image}` is not an image reference: expected for example web:1.4.2 or registry.local/web@sha256:..."
            )));
        }
        if let RuntimeConfig::Compose(compose) = &config.runtime {
            compose_uses_image_variable(compose).await?;
        }
    }
    let id = match &args.release {
        Some(r) => r.clone(),
        None => args
            .image
            .as_deref()
            .and_then(image_tag)
            .unwrap_or_else(timestamp_release),
    };
    if !is_valid_release(&id) {
        return Err(Failure::Usage(format!(
            "--release `{id}` is not a valid release id: use 1 to 128 letters, digits, `_`, `.` and `-`, starting with a letter or digit (it becomes BLUE_GREEN_RELEASE and may be used in image tags)"
        )));
    }
    let release = Release::new(id);
    Ok(match &args.image {
        Some(image) => release.with_artifact(image.clone()),
        None => release,
    })
}

/// With compose, `--image` reaches the project only as `${BLUE_GREEN_IMAGE}`: refuse it when no
/// compose file uses that variable, rather than deploy the file's own image silently.
async fn compose_uses_image_variable(compose: &ComposeConfig) -> Result<(), Failure> {
    let files: Vec<&PathBuf> = match &compose.files {
        ComposeFiles::Shared(file) => vec![file],
        ComposeFiles::PerColor(p) => vec![&p.blue, &p.green],
    };
    for file in &files {
        let text = tokio::fs::read_to_string(file).await.map_err(|e| {
            Failure::Usage(format!("cannot read compose file {}: {e}", file.display()))
        })?;
        if !text.contains("BLUE_GREEN_IMAGE") {
            return Err(Failure::Usage(format!(
                "--image is passed to compose as ${{BLUE_GREEN_IMAGE}}, but {} does not use it: write `image: ${{BLUE_GREEN_IMAGE:-your-image:latest}}` in the service, or deploy without --image",
                file.display()
            )));
        }
    }
    Ok(())
}

fn is_valid_release(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && id.len() <= 128
}

/// The tag of `repo/name:tag`, if it has one (not a digest).
fn image_tag(image: &str) -> Option<String> {
    if image.contains('@') {
        return None;
    }
    let name = image.rsplit('/').next()?;
    let (_, tag) = name.split_once(':')?;
    (!tag.is_empty()).then(|| tag.to_string())
}

/// The current UTC time as `YYYYMMDDTHHMMSSZ`.
fn timestamp_release() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
}

// ---- status, history ------------------------------------------------------------------------

fn status_text(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "app      {}", s.app);
    match (&s.live, &s.deployment) {
        (Some(color), Some(d)) if d.color == *color => {
            let _ = writeln!(
                out,
                "live     {color}, release {} since {}",
                d.release.id,
                short_time(&d.since)
            );
        }
        (Some(color), _) => {
            let _ = writeln!(out, "live     {color} (no deploy of it is recorded)");
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "live     none (nothing deployed yet: run `blue-green deploy`)"
            );
        }
    }
    let target = s
        .router_target
        .as_ref()
        .map_or("nowhere".to_string(), ToString::to_string);
    let _ = writeln!(out, "router   -> {target}");
    if s.instances.is_empty() {
        let _ = writeln!(out, "instances: none");
    } else {
        let _ = writeln!(out, "instances:");
        for i in &s.instances {
            let live = if i.live { "  LIVE" } else { "" };
            let _ = writeln!(
                out,
                "  {:<6} release {:<16} {:<22} {:<20} {}{live}",
                i.instance.color,
                i.instance.release,
                i.instance.endpoint.to_string(),
                i.state.to_string(),
                short_id(&i.instance.id),
            );
        }
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// An RFC 3339 time without its fraction of a second: `2026-11-25T11:18:09Z`.
fn short_time(t: &str) -> String {
    match t.split_once('.') {
        Some((whole, rest)) => {
            let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{whole}{zone}")
        }
        None => t.to_string(),
    }
}

/// A Docker container id shortened as `docker ps` does; other ids as they are.
fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

async fn history(config: &Config, limit: Option<usize>, printer: Printer) -> Result<(), Failure> {
    // History needs only the state directory: it works while Docker or nginx are down.
    let store = FileStore::new(config.state_dir.clone());
    let mut records = store.history().await.map_err(Failure::Component)?;
    if let Some(n) = limit {
        let skip = records.len().saturating_sub(n);
        records.drain(..skip);
    }
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no deploys recorded yet\n");
    } else {
        let _ = writeln!(
            out,
            "{:<20}  {:<8} {:<16} {:<14} {:<12} {:>7}  STEPS",
            "STARTED", "COMMAND", "RELEASE", "FROM -> TO", "OUTCOME", "TIME"
        );
    }
    for r in &records {
        let total: u64 = r.steps.iter().map(|s| s.ms).sum();
        let color = |c: Option<Color>| c.map_or("-".to_string(), |c| c.to_string());
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|s| format!("{}{} {}", s.step, if s.ok { "" } else { "!" }, secs(s.ms)))
            .collect();
        let _ = writeln!(
            out,
            "{:<20}  {:<8} {:<16} {:<14} {:<12} {:>7}  {}",
            short_time(&r.started_at),
            r.command,
            r.release.as_deref().unwrap_or("-"),
            format!("{} -> {}", color(r.from), color(r.to)),
            format!("{:?}", r.outcome).to_lowercase(),
            secs(total),
            steps.join(", "),
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{:<22}error: {e}", "");
        }
    }
    printer.success("history", json!({ "history": records }), &out, true);
    Ok(())
}

// ---- validate -------------------------------------------------------------------------------

/// One environment check of `validate`.
struct Check {
    what: String,
    result: Result<String, String>,
}

async fn validate(config: &Config, config_only: bool, printer: Printer) -> Result<(), Failure> {
    let mut checks = vec![Check {
        what: "config".into(),
        result: Ok(format!(
            "{} is valid (app {}, runtime {}, state in {})",
            config.path.display(),
            config.app,
            config.runtime.kind(),
            config.state_dir.display()
        )),
    }];
    if !config_only {
        environment_checks(config, &mut checks).await?;
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| c.result.is_err()).collect();
    if !printer.json && !printer.quiet {
        for c in &checks {
            match &c.result {
                Ok(m) => eprintln!("  ok   {:<10} {m}", c.what),
                Err(m) => eprintln!("  FAIL {:<10} {m}", c.what),
            }
        }
    }
    if failed.is_empty() {
        let json_checks: Vec<_> = checks
            .iter()
            .map(|c| json!({ "check": c.what, "ok": true, "detail": c.result.as_ref().ok() }))
            .collect();
        let human = if config_only {
            "config is valid (environment not checked: --config-only)"
        } else {
            "config and environment are ready: nothing was changed"
        };
        printer.success("validate", json!({ "checks": json_checks }), human, false);
        Ok(())
    } else {
        let lines: Vec<String> = failed
            .iter()
            .map(|c| format!("{}: {}", c.what, c.result.as_ref().err().map_or("", |s| s)))
            .collect();
        Err(Failure::Unreachable(format!(
            "the environment is not ready:\n  {}",
            lines.join("\n  ")
        )))
    }
}

async fn environment_checks(config: &Config, checks: &mut Vec<Check>) -> Result<(), Failure> {
    // Building the components connects to Docker (and finds the compose tool): a failure here
    // is the first environment check.
    let components = match Components::build(config).await {
        Ok(c) => {
            checks.push(Check {
                what: config.runtime.kind().into(),
                result: Ok(c.connected.clone()),
            });
            Some(c)
        }
        Err(f) if f.class() == blue_green_core::ExitClass::Usage => return Err(f),
        Err(f) => {
            checks.push(Check {
                what: config.runtime.kind().into(),
                result: Err(f.message()),
            });
            None
        }
    };
    if let Some(c) = &components {
        let limit = config.engine.timeouts.runtime;
        let result = match tokio::time::timeout(limit, c.runtime.list()).await {
            Ok(Ok(list)) => Ok(format!(
                "{} instance(s) of {} found",
                list.len(),
                config.app
            )),
            Ok(Err(e)) => Err(e.message),
            Err(_) => Err(format!(
                "listing instances did not answer within {}s",
                limit.as_secs()
            )),
        };
        checks.push(Check {
            what: "instances".into(),
            result,
        });
    }
    let owned = config.clone();
    let file_checks = tokio::task::spawn_blocking(move || file_checks(&owned))
        .await
        .map_err(|e| Failure::Unreachable(format!("the file checks did not finish: {e}")))?;
    checks.extend(file_checks);
    match &config.router {
        RouterConfig::Nginx(n) => {
            if !n.test_command.is_empty() {
                checks.push(Check {
                    what: "nginx test".into(),
                    result: run_check_command(&n.test_command, n.command_timeout).await,
                });
            }
        }
        RouterConfig::None { target_file } => {
            let dir = target_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            checks.push(Check {
                what: "router".into(),
                result: Ok(format!(
                    "none: the target is only recorded in {} (under {})",
                    target_file.display(),
                    dir.display()
                )),
            });
        }
    }
    if let Some(c) = &components {
        let limit = config.engine.timeouts.router;
        let result = match tokio::time::timeout(limit, c.router.target()).await {
            Ok(Ok(Some(t))) => Ok(format!("routes to {t}")),
            Ok(Ok(None)) => Ok("routes nowhere yet".into()),
            Ok(Err(e)) => Err(e.message),
            Err(_) => Err(format!(
                "reading the router target did not answer within {}s",
                limit.as_secs()
            )),
        };
        checks.push(Check {
            what: "target".into(),
            result,
        });
    }
    Ok(())
}

/// The checks of `validate` that only look at files: run off the async runtime.
fn file_checks(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    if let HealthConfig::Command(argv) = &config.health {
        checks.push(Check {
            what: "health".into(),
            result: program_exists(&argv[0]),
        });
    }
    if let RouterConfig::Nginx(n) = &config.router {
        let dir = n.upstream_file.parent().unwrap_or(Path::new("."));
        checks.push(Check {
            what: "upstream".into(),
            result: if dir.is_dir() {
                Ok(format!("{} can be written in {}", n.upstream_file.display(), dir.display()))
            } else {
                Err(format!("directory {} of upstream_file does not exist; create it and include the file from your nginx config", dir.display()))
            },
        });
        if let Some(program) = n.reload_command.first() {
            checks.push(Check {
                what: "reload".into(),
                result: program_exists(program),
            });
        }
    }
    checks.push(Check {
        what: "state".into(),
        result: state_dir_check(&config.state_dir),
    });
    checks
}

fn state_dir_check(dir: &Path) -> Result<String, String> {
    if dir.is_dir() {
        return Ok(format!("{} exists", dir.display()));
    }
    let mut parent = dir.parent();
    while let Some(p) = parent {
        if p.as_os_str().is_empty() || p.is_dir() {
            return Ok(format!(
                "{} will be created on the first deploy",
                dir.display()
            ));
        }
        parent = p.parent();
    }
    Err(format!(
        "cannot find a parent directory of {}",
        dir.display()
    ))
}

/// Finds `program` the way a process spawn does: a path as is, a bare name on `PATH`.
fn program_exists(program: &str) -> Result<String, String> {
    let found = if program.contains('/') {
        Path::new(program).is_file().then(|| PathBuf::from(program))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    found
        .map(|p| format!("{program} found at {}", p.display()))
        .ok_or_else(|| {
            format!("program `{program}` was not found on PATH; install it or give its full path")
        })
}

async fn run_check_command(argv: &[String], limit: Duration) -> Result<String, String> {
    let shown = argv.join(" ");
    tracing::debug!(command = %shown, "running the router's test command");
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).kill_on_drop(true);
    match tokio::time::timeout(limit, cmd.output()).await {
        Err(_) => Err(format!(
            "`{shown}` did not finish within {}s",
            limit.as_secs()
        )),
        Ok(Err(e)) => Err(format!("cannot run `{shown}`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(format!("`{shown}` passed")),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last: Vec<&str> = stderr.lines().rev().take(3).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            Err(format!(
                "`{shown}` failed ({}): {}",
                out.status,
                last.join(" / ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("web:1.2").as_deref(), Some("1.2"));
        assert_eq!(image_tag("reg.local:5000/web:v3").as_deref(), Some("v3"));
        assert_eq!(image_tag("reg.local:5000/web"), None);
        assert_eq!(image_tag("web@sha256:abc"), None);
    }

    #[test]
    fn short_times_and_ids() {
        assert_eq!(
            short_time("2026-11-25T11:18:09.19880927Z"),
            "2026-11-25T11:18:09Z"
        );
        assert_eq!(
            short_time("2026-11-25T11:18:09+01:00"),
            "2026-11-25T11:18:09+01:00"
        );
        assert_eq!(short_id(&"a".repeat(64)), "aaaaaaaaaaaa");
        assert_eq!(short_id("web-blue"), "web-blue");
    }

    #[test]
    fn release_ids() {
        assert!(is_valid_release("v1.4.2"));
        assert!(is_valid_release(&timestamp_release()));
        for bad in ["", "-x", "a b", "a/b", "a;b", &"x".repeat(129)] {
            assert!(!is_valid_release(bad), "{bad}");
        }
    }
}
