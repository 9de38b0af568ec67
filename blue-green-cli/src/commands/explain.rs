//! After a failed deploy, switch or rollback: the setup checks of `validate` that can tell the
//! cause in plain words (probes refused on a port compose does not publish; nginx not loading
//! the upstream file, or an old upstream block of the same name). Read-only, like `validate`.

use blue_green_core::{Color, ExitClass, Step};
use blue_green_docker::ComposeFiles;

use super::setup;
use crate::components::{Components, ConcreteRuntime};
use crate::config::{Config, RouterConfig, RuntimeConfig};
use crate::failure::Failure;

/// Sentences that explain `failure`, one a line; empty when the checks find nothing wrong.
pub(super) async fn explain(config: &Config, failure: &Failure) -> Vec<String> {
    let Failure::Engine(error) = failure else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(color) = refused_probes(error) {
        out.extend(refused_port(config, color).await);
    }
    let verify_failed = failure.class() == ExitClass::Inconsistent
        || matches!(
            innermost(error),
            blue_green_core::Error::Step {
                step: Step::Verify,
                ..
            }
        );
    if verify_failed {
        if let RouterConfig::Nginx(n) = &config.router {
            for (what, result) in setup::nginx(n).await {
                if let Err(message) = result {
                    out.push(format!(
                        "the cause: nginx is not serving {} ({what}): {message}",
                        n.upstream_file.display()
                    ));
                }
            }
        }
    }
    out
}

/// The error an inconsistent state started from.
fn innermost(error: &blue_green_core::Error) -> &blue_green_core::Error {
    match error {
        blue_green_core::Error::Inconsistent { cause, .. } => innermost(cause),
        other => other,
    }
}

/// The color whose readiness probes were refused, if that is why it never became ready.
fn refused_probes(error: &blue_green_core::Error) -> Option<Color> {
    match innermost(error) {
        blue_green_core::Error::NotReady { color, detail, .. } => {
            let refused = |s: &str| s.to_ascii_lowercase().contains("refused");
            (refused(&detail.reason) || detail.last_probe.as_deref().is_some_and(refused))
                .then_some(*color)
        }
        _ => None,
    }
}

/// With compose and fixed `[endpoints]`: the port compose publishes when it is not the
/// endpoint's.
async fn refused_port(config: &Config, color: Color) -> Vec<String> {
    let RuntimeConfig::Compose(rc) = &config.runtime else {
        return Vec::new();
    };
    let Some(endpoints) = &rc.endpoints else {
        return Vec::new();
    };
    let Ok(components) = Components::build(config).await else {
        return Vec::new();
    };
    let ConcreteRuntime::Compose(r) = &components.concrete else {
        return Vec::new();
    };
    let shared = matches!(rc.files, ComposeFiles::Shared(_));
    setup::compose(r, Some(endpoints), shared)
        .await
        .into_iter()
        .filter_map(|(what, result)| match result {
            Err(m) if what == "ports" && m.contains(&format!("endpoints.{color} ")) => Some(
                format!("the probes of {color} were refused because nothing listens there: {m}"),
            ),
            _ => None,
        })
        .collect()
}
