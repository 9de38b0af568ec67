//! The switch as a transaction: read the file as it is, write the new one atomically, run the
//! test command and the reload command, and on any failure put the previous file back byte for
//! byte (reloading again if the failed reload may have gone through). Also reading back where
//! the file routes now.

use std::io;
use std::path::Path;

use blue_green_core::state::atomic::write_atomic;
use blue_green_core::{ComponentError, Endpoint, RouteReceipt, Split};

use super::command::run;
use super::upstream::{parse_routing, render, render_split, Routing};
use super::verify::Reloaded;
use super::NginxRouter;

impl NginxRouter {
    /// Where the upstream file routes now; `None` when there is no file (or no upstream block).
    /// During a split, the split's current endpoint.
    pub(super) async fn read_target(&self) -> Result<Option<Endpoint>, ComponentError> {
        Ok(self.read_routing().await?.map(|r| r.target().clone()))
    }

    /// The split the upstream file holds, if any.
    pub(super) async fn read_split(&self) -> Result<Option<Split>, ComponentError> {
        Ok(match self.read_routing().await? {
            Some(Routing::Split(split)) => Some(split),
            _ => None,
        })
    }

    /// What the upstream file routes to now; `None` when there is no file, no upstream block,
    /// or only the placeholder written before the first deploy.
    async fn read_routing(&self) -> Result<Option<Routing>, ComponentError> {
        let text = match tokio::fs::read_to_string(self.file()).await {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ComponentError::unreachable(format!(
                    "cannot read the nginx upstream file {}: {e}",
                    self.file().display()
                ))
                .with_source(e))
            }
        };
        let routing = parse_routing(&text, &self.config.upstream).map_err(|why| {
            ComponentError::failed(format!(
                "cannot tell where nginx routes: the upstream file {} {why}; route again (for example `blue-green switch`) to rewrite it",
                self.file().display()
            ))
        })?;
        // The placeholder written before the first deploy routes nowhere.
        let (host, port) = super::private::PLACEHOLDER_SERVER;
        Ok(routing.filter(|r| !matches!(r, Routing::One(t) if t.host == host && t.port == port)))
    }

    /// Writes, tests and reloads the file that routes to `endpoint` (ending any split); on
    /// error nginx still routes as before. The receipt carries nginx's workers as they were
    /// before the reload.
    pub(super) async fn switch(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        // Everything is checked before the file is touched.
        let content = render(&self.config, endpoint)?;
        self.apply(content, &format!("routing to {endpoint}")).await
    }

    /// Writes, tests and reloads the file that splits new requests as `split` says, the same
    /// transaction as a switch.
    pub(super) async fn switch_split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
        let content = render_split(&self.config, split)?;
        let what = format!(
            "sending {}% to {} and the rest to {}",
            split.percent(),
            split.next(),
            split.current()
        );
        self.apply(content, &what).await
    }

    /// The transaction: write `content`, test, reload, restore on failure. `what` completes
    /// "(…)" in errors: what the new file does.
    async fn apply(&self, content: String, what: &str) -> Result<RouteReceipt, ComponentError> {
        let _switching = self.switching.lock().await;
        let file = self.file().display().to_string();

        let previous = match tokio::fs::read(self.file()).await {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ComponentError::unreachable(format!(
                    "cannot read the nginx upstream file {file} before switching: {e}"
                ))
                .with_source(e))
            }
        };
        write_file(self.file(), content.into_bytes())
            .await
            .map_err(|e| {
                ComponentError::unreachable(format!(
                    "cannot write the nginx upstream file {file}: {e}; nothing was changed"
                ))
            })?;

        if !self.config.test_command.is_empty() {
            if let Err(failure) = run(&self.config.test_command, self.config.command_timeout).await
            {
                let restored = self.restore(&previous).await;
                return Err(failure.into_error(
                    format!("rejected the new upstream file {file} ({what})"),
                    restored,
                    false,
                ));
            }
        }

        // Before the reload: once `nginx -s reload` returns, the master may already have
        // started new workers.
        let watch = self.watch_workers().await;
        if let Err(failure) = run(&self.config.reload_command, self.config.command_timeout).await {
            // With no nginx running, a second reload fails the same way; nginx reads the
            // restored file when it starts again.
            let down = failure.nginx_is_down();
            let failure = failure.unreachable_if_nginx_is_down();
            let restored = self.restore(&previous).await;
            // The reload may have gone through before failing (or timing out): reload again so
            // that nginx runs the restored file, not the new one.
            let reloaded = match &restored {
                Ok(_) if failure.started && !down => {
                    run(&self.config.reload_command, self.config.command_timeout)
                        .await
                        .map_err(|again| again.detail)
                }
                _ => Ok(()),
            };
            let restored = match (restored, reloaded) {
                (Ok(done), Ok(())) => Ok(done),
                (Ok(done), Err(why)) => Err(format!(
                    "{done}, but reloading nginx with it failed too: {why}"
                )),
                (Err(why), _) => Err(why),
            };
            return Err(failure.into_error(
                format!("failed after writing the new upstream file {file} ({what})"),
                restored,
                !down,
            ));
        }
        Ok(watch.map_or_else(RouteReceipt::new, |w| RouteReceipt::with(Reloaded(w))))
    }

    fn file(&self) -> &Path {
        &self.config.upstream_file
    }

    /// Puts `previous` back (or removes the file if there was none), and says what it did.
    async fn restore(&self, previous: &Option<Vec<u8>>) -> Result<&'static str, String> {
        match previous {
            Some(bytes) => write_file(self.file(), bytes.clone())
                .await
                .map(|()| "the previous file was restored")
                .map_err(|e| format!("restoring the previous file failed too ({e})")),
            None => match tokio::fs::remove_file(self.file()).await {
                Ok(()) => Ok("the new file was removed again (there was none before)"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Ok("the new file was removed again (there was none before)")
                }
                Err(e) => Err(format!("removing the new file failed ({e})")),
            },
        }
    }
}

/// Writes `bytes` to `path` atomically, off the async runtime.
async fn write_file(path: &Path, bytes: Vec<u8>) -> io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| io::Error::other(format!("the writing task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use blue_green_core::{ComponentErrorKind, Router};

    use super::*;
    use crate::nginx::NginxConfig;

    fn config(dir: &Path) -> NginxConfig {
        let mut c = NginxConfig::new("web_app-1.x", dir.join("upstream.conf"));
        c.server_options = vec!["max_fails=0".into()];
        c.test_command = vec![];
        c.reload_command = vec!["true".into()];
        c.command_timeout = Duration::from_secs(5);
        c
    }

    #[tokio::test]
    async fn a_failing_test_command_restores_the_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.test_command = vec![
            "sh".into(),
            "-c".into(),
            "echo 'config is bad' >&2; exit 1".into(),
        ];
        let router = NginxRouter::new(c).unwrap();
        let file = dir.path().join("upstream.conf");
        let before = b"upstream web_app-1.x { server 127.0.0.1:1; }  # hand\n".to_vec();
        std::fs::write(&file, &before).unwrap();
        let error = router
            .route_to(&Endpoint::new("127.0.0.1", 2))
            .await
            .unwrap_err();
        assert_eq!(std::fs::read(&file).unwrap(), before);
        assert!(error.message.contains("config is bad"), "{error}");
        assert!(error.message.starts_with("`sh -c "), "{error}");
        assert!(
            error.message.contains("previous file was restored"),
            "{error}"
        );
        assert!(
            error.message.contains(&file.display().to_string()),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_failing_reload_without_a_previous_file_removes_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.reload_command = vec!["false".into()];
        let router = NginxRouter::new(c).unwrap();
        let error = router
            .route_to(&Endpoint::new("127.0.0.1", 2))
            .await
            .unwrap_err();
        assert!(!dir.path().join("upstream.conf").exists());
        assert!(error.message.contains("`false` failed"), "{error}");
        assert!(error.message.contains("removed again"), "{error}");
        assert_eq!(router.target().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_missing_program_is_unreachable_and_a_slow_one_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.reload_command = vec!["/nonexistent/nginx".into(), "-s".into(), "reload".into()];
        let router = NginxRouter::new(c).unwrap();
        let error = router
            .route_to(&Endpoint::new("127.0.0.1", 2))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ComponentErrorKind::Unreachable, "{error}");
        assert!(error.message.contains("was not found"), "{error}");

        let mut c = config(dir.path());
        c.test_command = vec!["sleep".into(), "5".into()];
        c.command_timeout = Duration::from_millis(200);
        let router = NginxRouter::new(c).unwrap();
        let error = router
            .route_to(&Endpoint::new("127.0.0.1", 2))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ComponentErrorKind::Timeout, "{error}");
        assert!(
            error.message.contains("did not finish within 200ms"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_reload_that_finds_no_nginx_running_is_unreachable_and_restores_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("upstream.conf");
        let before = b"upstream web_app-1.x { server 127.0.0.1:1; }\n".to_vec();
        for said in [
            "nginx: [alert] kill(4242, 1) failed (3: No such process)",
            "nginx: [error] open() \"/run/nginx.pid\" failed (2: No such file or directory)",
            "nginx: [error] config is bad",
        ] {
            std::fs::write(&file, &before).unwrap();
            let mut c = config(dir.path());
            c.reload_command = vec![
                "sh".into(),
                "-c".into(),
                format!("echo '{said}' >&2; exit 1"),
            ];
            let router = NginxRouter::new(c).unwrap();
            let error = router
                .route_to(&Endpoint::new("127.0.0.1", 2))
                .await
                .unwrap_err();
            assert_eq!(std::fs::read(&file).unwrap(), before, "{said}");
            let down = !said.contains("config is bad");
            let kind = if down {
                ComponentErrorKind::Unreachable
            } else {
                ComponentErrorKind::Failed
            };
            assert_eq!(error.kind, kind, "{error}");
            assert_eq!(
                error
                    .message
                    .contains("nginx is not running: start it again"),
                down,
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn a_good_switch_writes_the_file_and_target_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let router = NginxRouter::new(config(dir.path())).unwrap();
        assert_eq!(router.target().await.unwrap(), None);
        router
            .route_to(&Endpoint::new("127.0.0.1", 8082))
            .await
            .unwrap();
        assert_eq!(
            router.target().await.unwrap(),
            Some(Endpoint::new("127.0.0.1", 8082))
        );
        std::fs::write(dir.path().join("upstream.conf"), "garbage {").unwrap();
        let error = router.target().await.unwrap_err();
        assert!(error.message.contains("upstream.conf"), "{error}");
    }
}
