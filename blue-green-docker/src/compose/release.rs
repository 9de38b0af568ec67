//! The compose side of a [`ReleaseCommand`](crate::ReleaseCommand): `compose run` in the new
//! color's project.

use std::time::Duration;

use blue_green_core::hooks::{HookCommand, HookContext, HookOutput, HOOK_OUTPUT_LIMIT};
use blue_green_core::process::{Keep, RunError};
use blue_green_core::Release;

use super::{program, ComposeRuntime, LABEL_COMPOSE_PROJECT};
use crate::error::Error;
use crate::release::{ran_status, remove_leftovers, Removal, LABEL_ROLE, ROLE_RELEASE};

/// How long the `down` after a failed release command may take (it removes the network that
/// `compose run` created, so the slot is left as it was).
const DOWN_TIMEOUT: Duration = Duration::from_secs(60);

impl ComposeRuntime {
    /// Runs `command` once with `compose run --rm --no-deps -T` as the service of the color
    /// `context` names, in that color's project, with the file, environment and interpolation
    /// (`BLUE_GREEN_RELEASE`, `BLUE_GREEN_IMAGE`) that `up` would get, and the hook's
    /// `BLUE_GREEN_*` variables passed in with `-e`. The container is named
    /// `{project}-release` and removed in every case; after a failure the project is taken down
    /// again (the network `run` created), as a failed start leaves it.
    pub(crate) async fn run_release(
        &self,
        command: &HookCommand,
        release: &Release,
        context: &HookContext,
    ) -> Result<HookOutput, Error> {
        let color = context.color;
        let project = self.projects.get(color).clone();
        let name = format!("{project}-release");
        remove_leftovers(
            &self.docker,
            &name,
            format!("{LABEL_COMPOSE_PROJECT}={project}"),
            self.api_timeout,
        )
        .await?;

        let mut env = vec![("BLUE_GREEN_RELEASE", release.id.to_string())];
        if let Some(image) = &release.artifact {
            env.push(("BLUE_GREEN_IMAGE", image.to_string()));
        }
        let role = format!("{LABEL_ROLE}={ROLE_RELEASE}");
        let hook_env: Vec<String> = context
            .env()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut args: Vec<&str> = vec![
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "--name",
            &name,
            "--label",
            &role,
        ];
        for kv in &hook_env {
            args.extend(["-e", kv.as_str()]);
        }
        args.push(&self.config.service);
        args.extend(command.argv().iter().map(String::as_str));
        let (run, shown) = self.command(color, &args, &env);
        // The container's output is the hook's: keep as much as a hook keeps.
        let run = run.output_limit(HOOK_OUTPUT_LIMIT, Keep::End);

        let mut removal = Removal::new(&self.docker, self.api_timeout);
        removal.arm(name.clone());
        let ran = run.run(command.timeout()).await;
        let removed = removal.now().await;
        let where_ = format!(
            "service `{}` (compose project {project})",
            self.config.service
        );
        let result = match ran {
            Ok(out) => {
                let mut output = out.stdout.text().into_owned();
                let stderr = out.stderr.text();
                if !stderr.is_empty() {
                    if !output.is_empty() && !output.ends_with('\n') {
                        output.push('\n');
                    }
                    output.push_str(&stderr);
                }
                // Compose v2 names a failed pull by the registry's URL only.
                if let Some(image) = release.artifact.as_ref().map(|a| a.to_string()) {
                    if !out.status.success() && !output.contains(&image) {
                        output.push_str(&format!("\n(the release's image is {image})"));
                    }
                }
                Ok(HookOutput::new(
                    out.status.success(),
                    ran_status(command, &where_, &out.status_text()),
                    output,
                ))
            }
            Err(RunError::TimedOut { .. }) => Err(Error::ReleaseTimeout {
                command: command.argv().join(" "),
                container: format!("container {name} of {where_}"),
                timeout: command.timeout(),
            }),
            Err(error) if !error.started() => Err(Error::ComposeMissing {
                program: self.program.display().into(),
                source: program::start_failure(error),
            }),
            Err(error) => Err(Error::ComposeFailed {
                command: shown,
                status: "not waited for".into(),
                stderr: error.to_string(),
            }),
        };
        if let Err(e) = removed {
            tracing::warn!(container = %name, error = %e, "could not remove the release command's container; the next deploy removes it");
        }
        if !matches!(&result, Ok(out) if out.success)
            && !self.project_exists(&project).await.unwrap_or(true)
        {
            let down = self
                .run(color, &["down", "--timeout", "10"], &env, DOWN_TIMEOUT)
                .await;
            if let Err(down) = down {
                tracing::warn!(project, error = %down, "could not take down the project after its release command failed");
            }
        }
        result
    }
}
