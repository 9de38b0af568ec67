//! Compose files and cleanup for the compose tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use blue_green_docker::{ComposeConfig, ComposeFiles, ComposeTool};

/// Runs `compose down` for each project on drop (the [`DockerCleanup`] behind it removes
/// anything still left with the test's prefix).
pub struct ComposeDown(pub Vec<(String, PathBuf)>);

impl Drop for ComposeDown {
    fn drop(&mut self) {
        for (project, file) in &self.0 {
            let _ = std::process::Command::new("docker-compose")
                .args(["-p", project, "-f"])
                .arg(file)
                .args(["down", "--timeout", "1"])
                .env("BLUE_GREEN_IMAGE", "unused")
                .output();
        }
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// One color's file in the blog's layout: fixed image, fixed host port.
pub fn per_color_file(image: &str, port: u16) -> String {
    format!(
        r#"version: "3.7"
services:
  api:
    image: {image}
    environment:
      - BLUE_GREEN_COLOR
      - BLUE_GREEN_RELEASE
      - SIGTERM_MODE=graceful
    ports:
      - "127.0.0.1:{port}:8080"
"#
    )
}

/// Fails with a clear message when `tool` is not installed (compose v2 comes from
/// `scripts/install-compose-v2`, which `scripts/test` runs), so a missing version never
/// skips a test.
pub async fn require(tool: ComposeTool) {
    if let Err(e) = blue_green_docker::compose::detect(tool, None).await {
        panic!("these tests run under compose v1 and v2; {tool:?} is missing: {e}. Install v2 with scripts/install-compose-v2 (scripts/test does), v1 with Debian's docker-compose");
    }
}

/// `v1` or `v2`, for test names.
pub fn tag(tool: ComposeTool) -> &'static str {
    match tool {
        ComposeTool::V2 => "v2",
        _ => "v1",
    }
}

/// A compose config for service `api` on container port 8080, run by `tool`.
pub fn compose_config_for(tool: ComposeTool, files: ComposeFiles) -> ComposeConfig {
    ComposeConfig {
        tool,
        ..compose_config(files)
    }
}

/// A compose config for service `api` on container port 8080.
pub fn compose_config(files: ComposeFiles) -> ComposeConfig {
    ComposeConfig {
        tool: ComposeTool::Auto,
        files,
        project: "{app}-{color}".into(),
        service: "api".into(),
        endpoints: None,
        container_port: Some(8080),
        working_dir: None,
        env: BTreeMap::new(),
    }
}
