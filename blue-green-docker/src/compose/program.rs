//! Which compose program drives the projects: `docker compose` (v2) or `docker-compose` (v1).

use std::ffi::OsString;
use std::io;
use std::time::Duration;

use blue_green_core::process::{Command, RunError};

use crate::config::ComposeTool;
use crate::error::Error;

/// The compose program found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeProgram {
    /// `docker compose` (the v2 plugin).
    V2,
    /// `docker-compose` (v1, or v2's standalone binary).
    V1,
}

impl ComposeProgram {
    /// The program and the arguments that come before compose's own.
    pub(super) fn argv0(&self) -> (&'static str, &'static [&'static str]) {
        match self {
            ComposeProgram::V2 => ("docker", &["compose"]),
            ComposeProgram::V1 => ("docker-compose", &[]),
        }
    }

    /// How a person would type it.
    pub fn display(&self) -> &'static str {
        match self {
            ComposeProgram::V2 => "docker compose",
            ComposeProgram::V1 => "docker-compose",
        }
    }
}

/// How long `compose version` may take.
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a compose program could not be run, as the OS said it (the source of
/// [`Error::ComposeMissing`]).
pub(super) fn start_failure(error: RunError) -> io::Error {
    match error {
        RunError::NotFound { source, .. } | RunError::Start { source, .. } => source,
        error => io::Error::other(error),
    }
}

/// Finds the compose program for `tool`: `Auto` prefers `docker compose` (v2) and falls back
/// to `docker-compose`. `path` replaces `PATH` for the lookup (for tests); `None` uses the
/// process's.
pub async fn detect(tool: ComposeTool, path: Option<OsString>) -> Result<ComposeProgram, Error> {
    let candidates: &[ComposeProgram] = match tool {
        ComposeTool::Auto => &[ComposeProgram::V2, ComposeProgram::V1],
        ComposeTool::V2 => &[ComposeProgram::V2],
        ComposeTool::V1 => &[ComposeProgram::V1],
    };
    let mut last = None;
    for candidate in candidates {
        let (program, pre) = candidate.argv0();
        let mut command = Command::new(program).args(pre).arg("version");
        if let Some(path) = &path {
            command = command.env("PATH", path);
        }
        match command.run(DETECT_TIMEOUT).await {
            Ok(output) if output.status.success() => return Ok(candidate.clone()),
            Ok(output) => {
                last = Some(io::Error::other(format!(
                    "`{} version` {}: {}",
                    candidate.display(),
                    output.status_text(),
                    output.stderr.text().trim()
                )))
            }
            Err(RunError::TimedOut { .. }) => {
                last = Some(io::Error::other(format!(
                    "`{} version` did not answer within {}s",
                    candidate.display(),
                    DETECT_TIMEOUT.as_secs()
                )))
            }
            Err(error) => last = Some(start_failure(error)),
        }
    }
    Err(Error::ComposeMissing {
        program: candidates
            .iter()
            .map(ComposeProgram::display)
            .collect::<Vec<_>>()
            .join("` or `"),
        source: last.unwrap_or_else(|| io::Error::other("no candidate")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use blue_green_core::ComponentError;

    /// A fake program named `name` in `dir` that exits 0 only for `args`.
    fn fake(dir: &Path, name: &str, args: &str) {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\n[ \"$*\" = \"{args}\" ] && {{ echo fake {name} $*; exit 0; }}\nexit 1\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn auto_detection_prefers_v2_and_falls_back_to_v1() {
        let both = tempfile::tempdir().unwrap();
        fake(both.path(), "docker", "compose version");
        fake(both.path(), "docker-compose", "version");
        let path = Some(both.path().as_os_str().to_owned());
        assert_eq!(
            detect(ComposeTool::Auto, path.clone()).await.unwrap(),
            ComposeProgram::V2
        );
        assert_eq!(
            detect(ComposeTool::V1, path).await.unwrap(),
            ComposeProgram::V1
        );

        // A docker CLI without the compose plugin: `docker compose version` fails.
        let v1_only = tempfile::tempdir().unwrap();
        fake(v1_only.path(), "docker", "version");
        fake(v1_only.path(), "docker-compose", "version");
        let path = Some(v1_only.path().as_os_str().to_owned());
        assert_eq!(
            detect(ComposeTool::Auto, path.clone()).await.unwrap(),
            ComposeProgram::V1
        );
        let err = detect(ComposeTool::V2, path).await.unwrap_err();
        assert!(err.to_string().contains("docker compose"), "{err}");

        let none = tempfile::tempdir().unwrap();
        let err = detect(ComposeTool::Auto, Some(none.path().as_os_str().to_owned()))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("install Docker Compose"), "{message}");
        let component: ComponentError = err.into();
        assert_eq!(
            component.kind,
            blue_green_core::ComponentErrorKind::Unreachable
        );
    }
}
