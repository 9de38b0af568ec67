//! The shell-script way, ported faithfully from the blog post's `deploy.sh` (argv, no shell):
//!
//! - nginx lists **both** colors in one upstream with `max_fails=3 fail_timeout=10s` and relies
//!   on passive health checks to skip the one that is down;
//! - `docker-compose -p app-blue -f docker-compose.blue.yml ps | grep Up` decides which color
//!   is live;
//! - `docker-compose -p … -f docker-compose.<idle>.yml up -d` starts the idle color;
//! - a fixed `sleep` (the post's 30 s, shortened here and configurable), then up to five
//!   `curl -s $CHECK_URL | grep <color>` **through the load balancer**, with a pause between;
//! - on success `docker-compose … down` the old color; otherwise `down` the new one.
//!
//! The post's script has `curl -s CHECK_URL` (without `$`), which can never succeed; the port
//! asks the URL it meant.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::report::DeployFigures;

/// The two colors, as the script names them.
pub const COLORS: [&str; 2] = ["blue", "green"];

/// How the baseline deploys.
#[derive(Debug, Clone)]
pub struct BaselineConfig {
    /// Directory for the compose files.
    pub dir: PathBuf,
    /// Compose project prefix; projects are `{prefix}-blue` and `{prefix}-green`.
    pub project_prefix: String,
    /// The app's image.
    pub image: String,
    /// The port the app listens on inside the container.
    pub container_port: u16,
    /// Host ports on 127.0.0.1 for blue and green.
    pub ports: [u16; 2],
    /// Extra environment of the app (the same as the blue-green phase gets).
    pub app_env: BTreeMap<String, String>,
    /// The health URL through nginx (the script's `CHECK_URL`).
    pub check_url: String,
    /// The fixed sleep after `up -d` (the post: 30 s).
    pub sleep: Duration,
    /// The pause between two checks (the post: 5 s).
    pub retry_pause: Duration,
    /// How many checks (the post: 5).
    pub attempts: u32,
    /// Timeout of each docker-compose call.
    pub compose_timeout: Duration,
}

/// The nginx `upstream` block of the post: both colors, passive health checks.
pub fn upstream_block(name: &str, ports: [u16; 2]) -> String {
    format!(
        "upstream {name} {{\n    server 127.0.0.1:{} max_fails=3 fail_timeout=10s;\n    server 127.0.0.1:{} max_fails=3 fail_timeout=10s;\n}}\n",
        ports[0], ports[1]
    )
}

/// The shell-script way, ready to deploy.
pub struct Baseline {
    config: BaselineConfig,
    http: reqwest::Client,
}

impl Baseline {
    /// Writes `docker-compose.blue.yml` and `docker-compose.green.yml` into `config.dir`.
    pub async fn new(config: BaselineConfig) -> Result<Baseline, String> {
        for (i, color) in COLORS.iter().enumerate() {
            let path = config.dir.join(format!("docker-compose.{color}.yml"));
            tokio::fs::write(&path, compose_file(&config, color, config.ports[i]))
                .await
                .map_err(|e| format!("could not write {}: {e}", path.display()))?;
        }
        // curl -s: no proxy, and a timeout so that a hung answer cannot hang the script.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("could not build an HTTP client: {e}"))?;
        Ok(Baseline { config, http })
    }

    fn project(&self, color: &str) -> String {
        format!("{}-{color}", self.config.project_prefix)
    }

    fn file(&self, color: &str) -> PathBuf {
        self.config.dir.join(format!("docker-compose.{color}.yml"))
    }

    /// `docker-compose -p {project} -f {file} {args…}` with `BLUE_GREEN_RELEASE` for the file's
    /// interpolation. Returns stdout; a non-zero exit is an error with stderr.
    async fn compose(&self, color: &str, args: &[&str], release: &str) -> Result<String, String> {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-p")
            .arg(self.project(color))
            .arg("-f")
            .arg(self.file(color))
            .args(args)
            .env("BLUE_GREEN_RELEASE", release)
            .current_dir(&self.config.dir)
            .kill_on_drop(true);
        let what = format!(
            "docker-compose -p {} -f {} {}",
            self.project(color),
            self.file(color).display(),
            args.join(" ")
        );
        let out = tokio::time::timeout(self.config.compose_timeout, cmd.output())
            .await
            .map_err(|_| {
                format!(
                    "`{what}` did not finish within {:?}",
                    self.config.compose_timeout
                )
            })?
            .map_err(|e| format!("could not run `{what}` (is docker-compose installed?): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`{what}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The script's `APP_BLUE=$(docker-compose -p app-blue … ps | grep Up)`.
    async fn blue_is_up(&self) -> Result<bool, String> {
        let out = self.compose("blue", &["ps"], "none").await?;
        Ok(out.lines().any(|l| l.contains("Up")))
    }

    /// Starts `release` in blue and waits (directly, outside of any measurement) until it
    /// answers: the post's starting point, "blue is up".
    pub async fn start_first(&self, release: &str, deadline: Duration) -> Result<(), String> {
        self.compose("blue", &["up", "-d"], release).await?;
        let until = Instant::now() + deadline;
        loop {
            if self.check("blue").await {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!(
                    "the baseline's first release did not answer `blue` at {} within {deadline:?}",
                    self.config.check_url
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `curl -s $CHECK_URL | grep {color}`.
    async fn check(&self, color: &str) -> bool {
        match self.http.get(&self.config.check_url).send().await {
            Ok(r) => r.text().await.is_ok_and(|body| body.contains(color)),
            Err(_) => false,
        }
    }

    /// One run of `deploy.sh` for `release`.
    pub async fn deploy(&self, release: &str) -> DeployFigures {
        let started = Instant::now();
        let mut figures = DeployFigures {
            release: release.to_string(),
            ..DeployFigures::default()
        };
        let result = self.deploy_steps(release, started, &mut figures).await;
        figures.wall_ms = millis(started.elapsed());
        match result {
            Ok(found) => figures.ok = found,
            Err(e) => figures.error = Some(e),
        }
        if !figures.ok && figures.error.is_none() {
            figures.error = Some("the new color never answered through nginx".into());
        }
        figures
    }

    async fn deploy_steps(
        &self,
        release: &str,
        started: Instant,
        figures: &mut DeployFigures,
    ) -> Result<bool, String> {
        let (new, old) = if self.blue_is_up().await? {
            ("green", "blue")
        } else {
            ("blue", "green")
        };
        self.compose(new, &["up", "-d"], release).await?;
        tokio::time::sleep(self.config.sleep).await;
        let mut found = false;
        // As in the script, the pause follows every check that missed, the last one too.
        for _ in 0..self.config.attempts {
            if self.check(new).await {
                found = true;
                break;
            }
            tokio::time::sleep(self.config.retry_pause).await;
        }
        figures.ready_ms = Some(millis(started.elapsed()));
        let stop_started = Instant::now();
        let down = if found { old } else { new };
        self.compose(down, &["down"], release).await?;
        figures.stop_ms = Some(millis(stop_started.elapsed()));
        Ok(found)
    }

    /// `down` both colors; used at the end and on error. Reports what it could not remove.
    pub async fn tear_down(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for color in COLORS {
            if let Err(e) = self.compose(color, &["down", "-t", "2"], "none").await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

fn compose_file(config: &BaselineConfig, color: &str, port: u16) -> String {
    let mut env = String::new();
    for (k, v) in &config.app_env {
        env.push_str(&format!("      {k}: {}\n", yaml_string(v)));
    }
    format!(
        "version: \"3.7\"\nservices:\n  app:\n    image: {}\n    ports:\n      - \"127.0.0.1:{port}:{}\"\n    environment:\n      BLUE_GREEN_COLOR: {color}\n      BLUE_GREEN_RELEASE: \"${{BLUE_GREEN_RELEASE}}\"\n{env}",
        yaml_string(&config.image),
        config.container_port,
    )
}

/// A YAML double-quoted string (JSON strings are valid YAML).
fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_lists_both_colors_with_passive_checks() {
        let block = upstream_block("app", [8081, 8082]);
        assert!(block.contains("server 127.0.0.1:8081 max_fails=3 fail_timeout=10s;"));
        assert!(block.contains("server 127.0.0.1:8082 max_fails=3 fail_timeout=10s;"));
    }

    #[test]
    fn compose_file_quotes_values() {
        let config = BaselineConfig {
            dir: PathBuf::from("/tmp"),
            project_prefix: "p".into(),
            image: "demo-app:bench".into(),
            container_port: 8080,
            ports: [1, 2],
            app_env: BTreeMap::from([("A".to_string(), "x: \"y\"".to_string())]),
            check_url: String::new(),
            sleep: Duration::ZERO,
            retry_pause: Duration::ZERO,
            attempts: 1,
            compose_timeout: Duration::ZERO,
        };
        let file = compose_file(&config, "green", 9);
        assert!(file.contains("image: \"demo-app:bench\""));
        assert!(file.contains("\"127.0.0.1:9:8080\""));
        assert!(file.contains("BLUE_GREEN_COLOR: green"));
        assert!(file.contains("A: \"x: \\\"y\\\"\""));
    }
}
