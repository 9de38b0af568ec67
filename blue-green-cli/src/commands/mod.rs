//! Each command: read the config, build the components, call the engine, print the result.

mod explain;
pub mod proxy;
mod setup;
mod show;
mod validate;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use blue_green_core::{
    Artifact, CancellationToken, Color, DeployReport, DownTarget, IfLive, Release, ShiftSteps,
};
use blue_green_docker::{ComposeConfig, ComposeFiles};
use serde_json::json;

use crate::cli::{Cli, Command, DeployArgs};
use crate::components::{CliEngine, Components, ConcreteRuntime};
use crate::config::{self, Config, RuntimeConfig};
use crate::failure::{Failure, VALIDATE_HINT};
use crate::output::{one_line, secs, Printer};
use blue_green_cli::test_hooks::PauseHook;

use show::{history, repair_text, status_text};
use validate::validate;

/// Runs the command with its config (read before the async runtime starts, so that no file
/// is read on it) and returns the process exit code.
pub async fn run(cli: &Cli, config: Result<Config, config::ConfigError>) -> i32 {
    let printer = Printer {
        json: cli.json,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let name = command_name(&cli.command);
    let mut hints = Vec::new();
    let result = match (&cli.command, config) {
        // The proxy's commands read no config file.
        (Command::Proxy(args), _) => proxy::run(args, printer).await,
        (_, Ok(config)) => {
            let result = dispatch(cli, config.clone(), printer).await;
            if let Err(f) = &result {
                if matches!(name, "deploy" | "switch" | "rollback" | "promote") {
                    hints = explain::explain(&config, f).await;
                }
            }
            result
        }
        (_, Err(e)) => Err(Failure::Config(e)),
    };
    match result {
        Ok(()) => 0,
        Err(f) => {
            let code = f.class().code();
            let mut detail = f.detail();
            let instead = match name {
                // Its own report already went through Docker, compose and nginx one by one.
                "validate" | "proxy run" => Some(""),
                // The proxy's commands talk to a running proxy, not to Docker or nginx.
                n if n.starts_with("proxy ") => Some(
                    "; check that `blue-green proxy run` is running with this control socket (`--control`, or $BLUE_GREEN_PROXY_CONTROL)",
                ),
                _ => None,
            };
            if let Some(instead) = instead {
                detail = detail.replace(VALIDATE_HINT, instead);
            }
            for hint in &hints {
                detail.push_str(&format!("  {}\n", one_line(hint)));
            }
            printer.failure(
                name,
                code,
                &f.message(),
                &f.human_message(),
                f.json(),
                &detail,
            );
            code
        }
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Deploy(_) => "deploy",
        Command::Promote { .. } => "promote",
        Command::Abort => "abort",
        Command::Status => "status",
        Command::Repair => "repair",
        Command::Rollback => "rollback",
        Command::Switch { .. } => "switch",
        Command::Down { .. } => "down",
        Command::History { .. } => "history",
        Command::Validate { .. } => "validate",
        Command::Proxy(args) => proxy::command_name(args),
    }
}

async fn dispatch(cli: &Cli, config: Config, printer: Printer) -> Result<(), Failure> {
    match &cli.command {
        Command::Validate { config_only } => validate(&config, *config_only, printer).await,
        Command::Proxy(args) => proxy::run(args, printer).await,
        Command::History { limit } => history(&config, *limit, printer).await,
        Command::Deploy(args) => {
            let release = release_for(args, &config).await?;
            let config = with_steps(config, args.steps.as_ref());
            let engine = engine_and_runtime(&config, printer, true, true, Some(&release))
                .await?
                .0;
            let started = Instant::now();
            if args.no_switch {
                let report =
                    with_cancel(|c| async move { engine.stage(release, &c).await }).await?;
                let staged = &report.staged;
                let live = report
                    .live
                    .map(|c| format!("{c} stays live"))
                    .unwrap_or_else(|| "nothing is live".into());
                let preview = report
                    .preview
                    .as_ref()
                    .map(|p| format!(" (preview: {})", one_line(p)))
                    .unwrap_or_default();
                let human = format!(
                    "deploy --no-switch done in {}: release {} is staged in {} at {}{preview}; {live}. `blue-green promote` switches to it, `blue-green abort` removes it",
                    secs(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
                    staged.release.id,
                    staged.color,
                    staged.endpoint,
                );
                printer.success("deploy", json!({ "report": report }), &human, false);
                return Ok(());
            }
            let report = with_cancel(|c| async move { engine.deploy(release, &c).await }).await?;
            changed(printer, "deploy", &report, started);
            Ok(())
        }
        Command::Promote { steps } => {
            let config = with_steps(config, steps.as_ref());
            let engine = shifting_engine(&config, printer).await?;
            let started = Instant::now();
            let report = with_cancel(|c| async move { engine.promote(&c).await }).await?;
            changed(printer, "promote", &report, started);
            Ok(())
        }
        Command::Abort => {
            let engine = engine(&config, printer, true).await?;
            let report = engine.abort().await?;
            let human = match report.removed.first() {
                Some(inst) => format!(
                    "aborted: removed the staged {} (release {})",
                    inst.color,
                    one_line(&inst.release)
                ),
                None => "nothing is staged: nothing to abort".to_string(),
            };
            printer.success("abort", json!({ "report": report }), &human, false);
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
            let target = color.map_or(DownTarget::Idle, |c| DownTarget::Color(Color::from(c)));
            let if_live = if *force {
                IfLive::TakeDown
            } else {
                IfLive::Refuse
            };
            let report = engine.down(target, if_live).await?;
            let mut human = String::new();
            if report.removed.is_empty() {
                human.push_str("nothing to take down");
            }
            for (i, inst) in report.removed.iter().enumerate() {
                let sep = if i == 0 { "removed " } else { ", " };
                let _ = write!(
                    human,
                    "{sep}{} (release {})",
                    inst.color,
                    one_line(&inst.release)
                );
            }
            printer.success("down", json!({ "report": report }), &human, false);
            Ok(())
        }
        Command::Repair => {
            let engine = engine(&config, printer, false).await?;
            let report = engine.repair().await?;
            printer.success(
                "repair",
                json!({ "report": report }),
                &repair_text(&report),
                false,
            );
            Ok(())
        }
        Command::Status => {
            let (engine, concrete) =
                engine_and_runtime(&config, printer, false, false, None).await?;
            let status = engine.status().await?;
            // On a swarm, nodes that are not ready are where a color's tasks cannot run.
            let lost_nodes = match &concrete {
                ConcreteRuntime::Swarm(r) => {
                    Some(r.unready_nodes().await.map_err(Failure::docker)?)
                }
                _ => None,
            };
            // After a failed first deploy (nothing recorded, or something left over), the
            // upstream file may name a color that nginx never serves: ask nginx (`-T`).
            let mut unserved = None;
            if let config::RouterConfig::Nginx(n) = &config.router {
                if status.live.is_some()
                    && (status.deployment.is_none() || !status.leftovers.is_empty())
                {
                    unserved = setup::nginx(n)
                        .await
                        .into_iter()
                        .find_map(|(what, r)| match r {
                            Err(m) if what == "include" || what == "duplicate" => Some(m),
                            _ => None,
                        });
                }
            }
            let mut text = status_text(&status, unserved.as_deref());
            match &lost_nodes {
                Some(lost) if !lost.is_empty() => text.push_str(&format!(
                    "swarm    nodes not ready: {}; tasks placed on them do not run\n",
                    lost.join(", ")
                )),
                Some(_) => text.push_str("swarm    every node is ready\n"),
                None => {}
            }
            let mut answer =
                json!({ "status": status, "nginx_serves_upstream_file": unserved.is_none() });
            if let Some(lost) = &lost_nodes {
                answer["lost_nodes"] = json!(lost);
            }
            printer.success("status", answer, &text, true);
            Ok(())
        }
    }
}

/// `config` with `--steps` in place of `[switch] steps`, when given.
fn with_steps(mut config: Config, steps: Option<&ShiftSteps>) -> Config {
    if let Some(steps) = steps {
        config.engine.switch.steps = Some(steps.clone());
    }
    config
}

/// The engine of a command that may shift traffic step by step (deploy, promote).
async fn shifting_engine(config: &Config, printer: Printer) -> Result<CliEngine, Failure> {
    Ok(engine_and_runtime(config, printer, true, true, None)
        .await?
        .0)
}

async fn engine(config: &Config, printer: Printer, steps: bool) -> Result<CliEngine, Failure> {
    Ok(engine_and_runtime(config, printer, steps, false, None)
        .await?
        .0)
}

/// The engine, and the runtime as built for what the [`Runtime`](blue_green_core::Runtime)
/// trait does not say (a swarm's lost nodes). `release`: the release a deploy brings up (its
/// image is the one the release command runs in).
///
/// With `shifts` (deploy, promote) it refuses `[switch] steps` or `--steps` with a router that
/// cannot split, naming it, before anything starts (the engine refuses too, without knowing
/// the router's name).
async fn engine_and_runtime(
    config: &Config,
    printer: Printer,
    steps: bool,
    shifts: bool,
    release: Option<&Release>,
) -> Result<(CliEngine, ConcreteRuntime), Failure> {
    tracing::debug!(
        config = %config.path.display(),
        state_dir = %config.state_dir.display(),
        runtime = config.runtime.kind(),
        "building the components"
    );
    let observer = printer.observer(steps, PauseHook::from_env(config.state_dir.clone()));
    let components = Components::build(config).await?;
    if let (true, Some(steps)) = (shifts, &config.engine.switch.steps) {
        if !components.router.can_split() {
            return Err(Failure::Usage(format!(
                "a gradual shift ({steps}) needs a router that can split traffic between two colors, and the {} router cannot: deploy without steps (remove `[switch] steps` from {}, and do not pass --steps), or use a router that can split",
                config.router.kind(),
                config.path.display()
            )));
        }
    }
    let concrete = components.concrete.clone();
    Ok((
        components
            .engine_for(config, release)
            .with_observer(observer),
        concrete,
    ))
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
    eprintln!(
        "interrupted: rolling back (during a gradual shift: all traffic back to the old color; during the watch after a switch: ending the watch, the new color stays live); interrupt again to exit at once"
    );
    cancel.cancel();
    if interrupted().await.is_ok() {
        eprintln!("interrupted twice: exiting now; the next blue-green command repairs leftovers");
        // Child commands run in their own process groups, out of reach of the terminal's Ctrl-C.
        blue_green_core::process::kill_all_running();
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
    // The core's types are the only validators; here their errors get the flag's name.
    let artifact = match &args.image {
        Some(image) => {
            let artifact = Artifact::new(image.clone())
                .map_err(|e| Failure::Usage(format!("--image {}", e.message)))?;
            if let RuntimeConfig::Compose(compose) = &config.runtime {
                compose_uses_image_variable(compose).await?;
            }
            Some(artifact)
        }
        None => None,
    };
    let id = match &args.release {
        Some(r) => r.clone(),
        None => args
            .image
            .as_deref()
            .and_then(image_tag)
            .unwrap_or_else(timestamp_release),
    };
    let mut release =
        Release::new(id).map_err(|e| Failure::Usage(format!("--release {}", e.message)))?;
    release.artifact = artifact;
    Ok(release)
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
    fn release_ids() {
        assert!(Release::new(timestamp_release()).is_ok());
    }
}
