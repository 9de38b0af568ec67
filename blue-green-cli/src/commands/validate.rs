//! `validate`: the config, then the environment, one check at a time; changes nothing.

use std::path::{Path, PathBuf};

use blue_green_core::FileStore;
use serde_json::json;

use blue_green_docker::ComposeFiles;

use super::setup;
use crate::components::{Components, ConcreteRuntime};
use crate::config::{Config, HealthConfig, RouterConfig, RuntimeConfig};
use crate::failure::Failure;
use crate::output::{one_line, Printer};

/// One environment check of `validate`.
struct Check {
    what: String,
    result: Result<String, String>,
}

pub(super) async fn validate(
    config: &Config,
    config_only: bool,
    printer: Printer,
) -> Result<(), Failure> {
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
                Ok(m) => println!("  ok   {:<10} {}", c.what, one_line(m)),
                Err(m) => println!("  FAIL {:<10} {}", c.what, one_line(m)),
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
        // The report is validate's answer: on stdout, as other commands print theirs.
        if printer.quiet && !printer.json {
            return Ok(());
        }
        printer.success(
            "validate",
            json!({ "checks": json_checks }),
            &format!("{human}\n"),
            true,
        );
        Ok(())
    } else {
        let lines: Vec<String> = failed
            .iter()
            .map(|c| {
                let m = c.result.as_ref().err().map_or("", |s| s);
                format!("{}: {}", c.what, one_line(m))
            })
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
        let found = match (&c.concrete, &config.runtime) {
            (ConcreteRuntime::Compose(r), RuntimeConfig::Compose(rc)) => {
                let shared = matches!(rc.files, ComposeFiles::Shared(_));
                setup::compose(r, rc.endpoints.as_ref(), shared).await
            }
            (ConcreteRuntime::Docker(r), RuntimeConfig::Docker(dc)) => {
                vec![setup::image(r, &dc.image).await]
            }
            (ConcreteRuntime::Swarm(r), _) => {
                let nodes = match r.unready_nodes().await {
                    Ok(lost) if lost.is_empty() => Ok("every node of the swarm is ready".into()),
                    Ok(lost) => Err(format!(
                        "nodes not ready: {}; tasks placed on them do not run, so a deploy may not get all its replicas",
                        lost.join(", ")
                    )),
                    Err(e) => Err(e.to_string()),
                };
                vec![("nodes".to_string(), nodes)]
            }
            _ => Vec::new(),
        };
        checks.extend(
            found
                .into_iter()
                .map(|(what, result)| Check { what, result }),
        );
    }
    let owned = config.clone();
    let file_checks = tokio::task::spawn_blocking(move || file_checks(&owned))
        .await
        .map_err(|e| Failure::Unreachable(format!("the file checks did not finish: {e}")))?;
    checks.extend(file_checks);
    match &config.router {
        RouterConfig::Nginx(n) => checks.extend(
            setup::nginx(n)
                .await
                .into_iter()
                .map(|(what, result)| Check { what, result }),
        ),
        RouterConfig::Haproxy(h) => checks.push(Check {
            what: "haproxy".into(),
            result: crate::config::check_haproxy(h).await,
        }),
        RouterConfig::Caddy(c) => checks.push(Check {
            what: "caddy".into(),
            result: crate::config::check_caddy(c).await,
        }),
        RouterConfig::Proxy(p) => checks.push(Check {
            what: "proxy".into(),
            result: p.answers(&config.app).await,
        }),
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
        if let Some(steps) = &config.engine.switch.steps {
            // `deploy` and `promote` refuse the same, before anything starts.
            checks.push(Check {
                what: "steps".into(),
                result: if c.router.can_split() {
                    Ok(format!("the {} router can shift traffic step by step ({steps})", config.router.kind()))
                } else {
                    Err(format!(
                        "[switch] steps ({steps}) need a router that can split traffic, and the {} router cannot: remove `steps`, or use a router that can split",
                        config.router.kind()
                    ))
                },
            });
        }
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
    checks.extend(loose_modes(&config.state_dir));
    checks
}

/// The state directory and its files are private (checked as every command checks them), and
/// a warning for each that others can still read (as earlier versions made them).
fn loose_modes(dir: &Path) -> Vec<Check> {
    let store = FileStore::new(dir);
    if let Err(e) = store.check_dir() {
        return vec![Check {
            what: "state".into(),
            result: Err(e.message),
        }];
    }
    store
        .loose_modes()
        .into_iter()
        .map(|m| Check {
            what: "modes".into(),
            result: Ok(format!("warning: {m}")),
        })
        .collect()
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
