//! What the lifecycle tests (`hooks`, `staged`) share: one app as a config file in a
//! temporary directory, run by the Docker runtime with the demo app's image and the `none`
//! router.

use std::path::PathBuf;

use blue_green_testkit::docker::{demo_app_image, DockerCleanup};

/// An app of the demo image, its directory (config and `state/` in it) and the cleanup of
/// its containers and image.
pub struct DemoApp {
    pub dir: tempfile::TempDir,
    pub image: String,
    pub cleanup: DockerCleanup,
}

impl DemoApp {
    /// Builds the image (named after the test) and a directory; writes no config yet.
    pub async fn new(name: &str) -> DemoApp {
        let cleanup = DockerCleanup::new(name).await;
        let image = demo_app_image(&cleanup).await;
        let dir = tempfile::Builder::new()
            .prefix(&format!("bg-{name}-"))
            .tempdir()
            .expect("temp dir");
        DemoApp {
            dir,
            image,
            cleanup,
        }
    }

    /// Writes `blue-green.toml`: the docker runtime, a quick HTTP readiness, the `none`
    /// router, then `extra` (more tables).
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let text = format!(
            r#"app = "{app}"
state_dir = "state"

[runtime]
kind = "docker"
image = "{image}"
container_port = 8080

[health]
kind = "http"
path = "/health"
expect_body = "{{color}} {{release}}"
interval = "100ms"
timeout = "1s"
deadline = "30s"

[router]
kind = "none"
{extra}"#,
            app = self.cleanup.prefix(),
            image = self.image,
        );
        let path = self.dir.path().join("blue-green.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }
}
