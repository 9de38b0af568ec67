//! Staged deploys through the real `blue-green` binary against the real Docker engine (the
//! demo app in an image built here, the `none` router): `deploy --no-switch` leaves the live
//! color serving and the staged one answering at its own endpoint, `status` shows it,
//! `promote` switches to it, `abort` removes it, both are safe to run twice, and a `promote`
//! killed (SIGKILL, parked by the `test-hooks` pause hook) at each of its steps is repaired by
//! the next `promote`. Needs Docker; fails with a clear message when it is missing. Every
//! container and image carries the test's prefix and is removed on drop.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use blue_green_cli::test_hooks::{pause_marker, PAUSE_ENV};
use blue_green_testkit::docker::containers_with_prefix;

mod common;
use common::DemoApp;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_blue-green");

struct Project {
    app: DemoApp,
}

impl Project {
    async fn new(name: &str) -> Project {
        let app = DemoApp::new(name).await;
        app.write_config("\n[switch]\ndrain = \"500ms\"\n");
        Project { app }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.current_dir(self.app.dir.path())
            .env_remove("BLUE_GREEN_CONFIG")
            .env_remove(PAUSE_ENV)
            .env_remove("RUST_LOG")
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(180), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("`blue-green {}` did not end within 180s", args.join(" ")))
            .expect("run blue-green")
    }

    async fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "`blue-green {}`: {}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    async fn status(&self) -> Value {
        let out = self.ok(&["--json", "status"]).await;
        let stdout = text(&out.stdout);
        let last: Value =
            serde_json::from_str(stdout.lines().last().expect("a result line")).expect("JSON");
        last["status"].clone()
    }

    fn state_dir(&self) -> PathBuf {
        self.app.dir.path().join("state")
    }

    async fn containers(&self) -> usize {
        containers_with_prefix(self.app.cleanup.docker(), self.app.cleanup.prefix())
            .await
            .len()
    }

    /// Starts `promote` parked at `step`, waits until it is there and SIGKILLs it.
    async fn promote_killed_at(&self, step: &str) {
        let marker = pause_marker(&self.state_dir(), step);
        let mut child = self
            .command(&["promote"])
            .env(PAUSE_ENV, step)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn promote");
        let until = Instant::now() + Duration::from_secs(60);
        while !marker.exists() {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let out = child.wait_with_output().await.expect("output");
                panic!(
                    "promote ended ({status}) before step {step}: {}",
                    text(&out.stderr)
                );
            }
            assert!(
                Instant::now() < until,
                "promote did not reach {step} in 60s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.start_kill().expect("SIGKILL promote");
        let status = child.wait().await.expect("wait");
        assert_eq!(status.code(), None, "killed by a signal");
        std::fs::remove_file(&marker).expect("remove the marker");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn endpoint(v: &Value) -> String {
    format!("{}:{}", v["host"].as_str().expect("host"), v["port"])
}

/// GET http://ENDPOINT/ with busybox's wget (scripts/test installs busybox-static), its body.
async fn get(endpoint: &str) -> String {
    let out = tokio::process::Command::new("busybox")
        .args(["wget", "-qO-", &format!("http://{endpoint}/")])
        .output()
        .await
        .expect("busybox is installed (scripts/test installs busybox-static)");
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_release_is_promoted_or_aborted_and_both_are_safe_twice() {
    let p = Project::new("staged").await;
    p.ok(&["deploy", "--release", "v1"]).await;
    let out = p.ok(&["deploy", "--release", "v2", "--no-switch"]).await;
    assert!(
        text(&out.stderr).contains("is staged in green"),
        "{}",
        text(&out.stderr)
    );
    let status = p.status().await;
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(status["staged"]["color"], "green", "{status}");
    assert_eq!(status["staged"]["release"]["id"], "v2");
    // The staged color answers at its own endpoint; the router still points at blue.
    let staged_at = endpoint(&status["staged"]["endpoint"]);
    assert_eq!(get(&staged_at).await.trim(), "demo-app green v2");
    assert_ne!(endpoint(&status["router_target"]), staged_at);
    let human = text(&p.ok(&["status"]).await.stdout);
    assert!(human.contains("staged   green, release v2"), "{human}");
    assert!(human.contains("STAGED"), "{human}");

    let out = p.ok(&["promote"]).await;
    assert!(
        text(&out.stderr).contains("release v2 is live in green"),
        "{}",
        text(&out.stderr)
    );
    let status = p.status().await;
    assert_eq!(status["live"], "green");
    assert!(status["staged"].is_null(), "{status}");
    assert_eq!(endpoint(&status["router_target"]), staged_at);
    // A second promote changes nothing.
    let history = p.ok(&["--json", "history"]).await.stdout;
    let out = p.ok(&["promote"]).await;
    assert!(
        text(&out.stderr).contains("nothing is staged"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(p.ok(&["--json", "history"]).await.stdout, history);

    // Stage v3 into blue's slot, then abort it, twice.
    p.ok(&["deploy", "--release", "v3", "--no-switch"]).await;
    assert_eq!(p.status().await["staged"]["release"]["id"], "v3");
    let before_abort = p.containers().await;
    let out = p.ok(&["abort"]).await;
    assert!(
        text(&out.stderr).contains("removed the staged blue"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(p.containers().await, before_abort - 1);
    let status = p.status().await;
    assert_eq!(status["live"], "green");
    assert!(status["staged"].is_null());
    let out = p.ok(&["abort"]).await;
    assert!(
        text(&out.stderr).contains("nothing to abort"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_killed_at_any_step_is_repaired_by_the_next_promote() {
    let p = Project::new("staged-kill").await;
    p.ok(&["deploy", "--release", "v1"]).await;
    let mut live = "blue";
    for (n, step) in ["ready", "switch", "verify", "drain", "stop", "record"]
        .into_iter()
        .enumerate()
    {
        let release = format!("v{}", n + 2);
        p.ok(&["deploy", "--release", &release, "--no-switch"])
            .await;
        let staged = if live == "blue" { "green" } else { "blue" };
        p.promote_killed_at(step).await;
        // Status changes nothing and says what is left.
        let status = p.status().await;
        assert!(
            status["leftovers"]
                .as_array()
                .is_some_and(|l| !l.is_empty()),
            "after a kill at {step}: {status}"
        );
        let out = p.ok(&["promote"]).await;
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("release {release} is live in {staged}")),
            "after a kill at {step}: {stderr}"
        );
        let status = p.status().await;
        assert_eq!(status["live"], staged, "after a kill at {step}: {status}");
        assert!(
            status["staged"].is_null(),
            "after a kill at {step}: {status}"
        );
        assert!(
            status["leftovers"].as_array().is_some_and(|l| l.is_empty()),
            "after a kill at {step}: {status}"
        );
        live = staged;
    }
}
