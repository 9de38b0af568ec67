//! The compose runtime stops everything a compose command started, not just the program it ran:
//! `docker compose` runs the `docker-compose` plugin as a child, which would otherwise go on
//! creating containers after a timed-out or cancelled `up` (and after the engine cleared the
//! slot). A fake compose program stands in for it here: `up` starts a long-lived child and
//! hangs. The fakes are found through `PATH` in the runtime's configured environment.
//!
//! Needs the Docker daemon (the runtime connects to it) and a compose program to detect.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blue_green_core::Endpoint;
use blue_green_core::{AppName, Color, ComponentErrorKind, Release, Runtime};
use blue_green_docker::{ComposeConfig, ComposeFiles, ComposeRuntime, ComposeTool, PerColor};

/// `up` starts a child that lives for 300s (as `docker` starts the compose plugin), writes its
/// own pid and the child's to `$BG_FAKE_PIDS`, and waits; anything else succeeds at once.
const FAKE_COMPOSE: &str = r#"#!/bin/sh
PATH=/usr/bin:/bin
case " $* " in
  *" up "*)
    /bin/sleep 300 &
    echo "$$ $!" > "$BG_FAKE_PIDS.tmp" && mv "$BG_FAKE_PIDS.tmp" "$BG_FAKE_PIDS"
    wait
    ;;
  *) exit 0 ;;
esac
"#;

struct Fake {
    dir: tempfile::TempDir,
    pids: PathBuf,
}

impl Fake {
    /// A temp dir with the fake as `docker` and `docker-compose` and a compose file.
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        for name in ["docker", "docker-compose"] {
            let path = dir.path().join(name);
            std::fs::write(&path, FAKE_COMPOSE).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.path().join("docker-compose.yml"), "services: {}\n").unwrap();
        let pids = dir.path().join("pids");
        Fake { dir, pids }
    }

    async fn runtime(&self, command_timeout: Duration) -> ComposeRuntime {
        let config = ComposeConfig {
            tool: ComposeTool::Auto,
            files: ComposeFiles::Shared(self.dir.path().join("docker-compose.yml")),
            project: "{app}-{color}".into(),
            service: "api".into(),
            endpoints: Some(PerColor {
                blue: Endpoint::new("127.0.0.1", 1),
                green: Endpoint::new("127.0.0.1", 2),
            }),
            container_port: None,
            working_dir: None,
            env: BTreeMap::from([
                // The compose program is looked up in this PATH: the fakes.
                ("PATH".to_string(), self.dir.path().display().to_string()),
                ("BG_FAKE_PIDS".to_string(), self.pids.display().to_string()),
            ]),
        };
        ComposeRuntime::new(AppName::new("bgtest-fake-compose").unwrap(), config)
            .await
            .expect("the compose runtime needs the Docker daemon and a compose program to detect")
            .with_command_timeout(command_timeout)
    }

    /// The pids the fake wrote: its own and its child's.
    fn read_pids(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.pids)
            .unwrap_or_else(|e| {
                panic!(
                    "the fake compose did not write {}: {e}",
                    self.pids.display()
                )
            })
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    }
}

/// Kills the listed pids when the test ends, also when it fails.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
    }
}

/// Whether `pid` is gone or a zombie (killed, waiting for a parent that may not reap it).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn assert_all_dead(pids: &[u32], when: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    for pid in pids {
        while !is_dead(*pid) {
            assert!(
                Instant::now() < end,
                "{when}, pid {pid} of the fake compose (pids {pids:?}: the program, its child) is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait_for_file(path: &Path, deadline: Duration) {
    let end = Instant::now() + deadline;
    while !path.exists() {
        assert!(Instant::now() < end, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_timed_out_up_leaves_no_process_of_compose_running() {
    let fake = Fake::new();
    let runtime = fake.runtime(Duration::from_millis(1500)).await;
    let error = runtime
        .start(Color::Blue, &Release::new("v1").unwrap())
        .await
        .expect_err("the fake `up` never finishes");
    wait_for_file(&fake.pids, Duration::from_secs(1));
    let pids = fake.read_pids();
    let _cleanup = KillOnDrop(pids.clone());
    println!("{error}");
    assert_eq!(error.kind, ComponentErrorKind::Timeout, "{error}");
    assert!(error.message.contains("up -d"), "{error}");
    assert_all_dead(&pids, "after `up` timed out");
}

#[tokio::test]
async fn a_cancelled_up_leaves_no_process_of_compose_running() {
    let fake = Fake::new();
    let runtime = fake.runtime(Duration::from_secs(120)).await;
    let release = Release::new("v1").unwrap();
    let mut start = Box::pin(runtime.start(Color::Blue, &release));
    // Run `up` until the fake has started its child, then drop it, as Ctrl-C does.
    let end = Instant::now() + Duration::from_secs(20);
    while !fake.pids.exists() {
        tokio::select! {
            result = &mut start => panic!("the fake `up` finished: {result:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        assert!(Instant::now() < end, "the fake compose never started");
    }
    drop(start);
    let pids = fake.read_pids();
    let _cleanup = KillOnDrop(pids.clone());
    assert_all_dead(&pids, "after the start was dropped");
}
