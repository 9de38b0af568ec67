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
