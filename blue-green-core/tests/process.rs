//! `process::Command` against real processes: exit codes, captured output, the timeout that
//! terminates the whole process group, cancellation, and the errors for what cannot start.

use std::path::Path;
use std::time::{Duration, Instant};

use blue_green_core::process::{Command, Keep, RunError};
use blue_green_core::{ComponentError, ComponentErrorKind};

/// Whether `pid` is gone or a zombie (killed, waiting for a parent that may not reap it).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the `(comm)` field, which may itself hold spaces or parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_until_dead(pid: u32, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    is_dead(pid)
}

/// Kills the listed pids when the test ends, also when it fails half-way.
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

/// Waits until the command under test wrote its pids to `path` (written atomically).
async fn read_pids(path: &Path, deadline: Duration) -> Vec<u32> {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
        }
        assert!(
            Instant::now() < end,
            "the command never wrote {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_all_dead(pids: &[u32], what: &str) {
    for pid in pids {
        assert!(
            wait_until_dead(*pid, Duration::from_secs(10)),
            "{what}: pid {pid} is still running (pids: {pids:?})"
        );
    }
}

fn sh(script: &str) -> Command {
    Command::new("/bin/sh").arg("-c").arg(script)
}

/// A shell that starts a background child, which starts a grandchild, writes the three pids to
/// `$0` and waits. `prelude` runs first in every shell (for example `trap '' TERM`).
fn family(prelude: &str, pids: &Path) -> Command {
    let script = format!(
        r#"{prelude}
/bin/sh -c '{prelude}
/bin/sleep 300 & echo "$$ $!" > "$0.inner"; wait' "$0" &
while [ ! -s "$0.inner" ]; do /bin/sleep 0.02; done
echo "$$ $(cat "$0.inner")" > "$0.tmp" && mv "$0.tmp" "$0"
wait"#
    );
    sh(&script).arg(pids)
}

#[tokio::test]
async fn exit_codes_and_both_outputs_are_reported() {
    let output = sh("echo out; echo err >&2; exit 3")
        .run(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(!output.status.success());
    assert_eq!(output.status_text(), "exited with code 3");
    assert_eq!(output.stdout.text(), "out\n");
    assert_eq!(output.stderr.text(), "err\n");
    assert!(!output.stdout.is_truncated());

    let output = Command::new("true")
        .run(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.status_text(), "exited with code 0");

    let output = sh("kill -9 $$").run(Duration::from_secs(10)).await.unwrap();
    assert_eq!(output.status_text(), "was killed by signal 9");
}

#[tokio::test]
async fn output_beyond_the_limit_is_dropped_keeping_the_start_or_the_end() {
    // 1 MB on stdout, far more than a pipe holds: the command must not block on it.
    let script = "i=0; while [ $i -lt 1000 ]; do printf '%01000d\\n' $i; i=$((i+1)); done | head -c 1000000; echo tail-marker";
    let started = Instant::now();
    let output = sh(script)
        .output_limit(1000, Keep::Start)
        .run(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(output.status.success(), "{}", output.status_text());
    assert_eq!(output.stdout.bytes.len(), 1000);
    assert!(output.stdout.text().starts_with("0000"));
    assert_eq!(output.stdout.dropped, 1_000_000 + 12 - 1000);
    assert!(output.stdout.is_truncated());

    let output = sh(script)
        .output_limit(1000, Keep::End)
        .run(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(output.stdout.bytes.len(), 1000);
    assert!(
        output.stdout.text().ends_with("tail-marker\n"),
        "{}",
        output.stdout.text()
    );
    assert_eq!(output.stdout.dropped, 1_000_000 + 12 - 1000);
    println!("two runs writing 1 MB each took {:?}", started.elapsed());
}

#[tokio::test]
async fn arguments_environment_and_directory_are_passed_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    // Were this run through a shell, `;` would start a second command creating the marker.
    let output = Command::new("/bin/echo")
        .arg(format!("hello; touch {}", marker.display()))
        .run(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        output.stdout.text(),
        format!("hello; touch {}\n", marker.display())
    );
    assert!(!marker.exists());

    let output = sh(r#"echo "$GREETING $OTHER"; pwd"#)
        .env("GREETING", "hi")
        .envs([("OTHER", "there")])
        .current_dir(dir.path())
        .run(Duration::from_secs(10))
        .await
        .unwrap();
    let pwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        output.stdout.text(),
        format!("hi there\n{}\n", pwd.display())
    );
}

#[tokio::test]
async fn a_path_in_the_environment_is_the_one_searched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bg-fake-tool");
    std::fs::write(&fake, "#!/bin/sh\necho fake tool\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = Command::new("bg-fake-tool")
        .env("PATH", dir.path())
        .run(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(output.stdout.text(), "fake tool\n");
}

#[tokio::test]
async fn a_missing_program_is_named_and_never_started() {
    let error = Command::new("/nonexistent/bg-check")
        .arg("--quick")
        .run(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(error, RunError::NotFound { .. }), "{error:?}");
    assert!(!error.started());
    assert_eq!(error.program(), "/nonexistent/bg-check");
    let message = error.to_string();
    assert!(message.contains("`/nonexistent/bg-check`"), "{message}");
    assert!(message.contains("no such program"), "{message}");
    let component: ComponentError = error.into();
    assert_eq!(component.kind, ComponentErrorKind::Unreachable);

    // A name looked up in PATH, too.
    let error = Command::new("bg-no-such-program-anywhere")
        .run(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("bg-no-such-program-anywhere"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_working_directory_is_named_not_blamed_on_the_program() {
    let error = Command::new("true")
        .current_dir("/nonexistent/bg-dir")
        .run(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(error, RunError::Start { .. }), "{error:?}");
    assert!(!error.started());
    let message = error.to_string();
    assert!(message.contains("/nonexistent/bg-dir"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test]
async fn the_timeout_terminates_the_whole_group_and_reaps_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let started = Instant::now();
    let error = family("", &pids_file)
        .run(Duration::from_millis(1500))
        .await
        .unwrap_err();
    let took = started.elapsed();
    let pids = read_pids(&pids_file, Duration::from_secs(1)).await;
    let _cleanup = KillOnDrop(pids.clone());
    println!("a 1.5s timeout returned after {took:?}; pids {pids:?}");
    assert!(matches!(error, RunError::TimedOut { .. }), "{error:?}");
    assert!(error.started());
    assert!(
        error.to_string().contains("did not finish within 1.5s"),
        "{error}"
    );
    let component: ComponentError = error.into();
    assert_eq!(component.kind, ComponentErrorKind::Timeout);
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    // The shells and sleep exit on SIGTERM: no need to wait for the grace.
    assert!(
        took < Duration::from_millis(1500) + Duration::from_secs(2),
        "{took:?}"
    );
    // The command was our child: reaped before `run` returned, not even a zombie.
    assert!(
        !Path::new(&format!("/proc/{}", pids[0])).exists(),
        "the command (pid {}) was not reaped",
        pids[0]
    );
    assert_all_dead(&pids, "after the timeout");
}

#[tokio::test]
async fn the_timeout_sends_sigterm_first_so_the_command_can_clean_up() {
    let dir = tempfile::tempdir().unwrap();
    let cleaned = dir.path().join("cleaned");
    let pid_file = dir.path().join("pid");
    let script = r#"trap 'echo done > "$0"; exit 0' TERM
/bin/sleep 300 & echo $! > "$1.tmp" && mv "$1.tmp" "$1"; wait"#;
    let error = sh(script)
        .args([&cleaned, &pid_file])
        .kill_grace(Duration::from_secs(5))
        .run(Duration::from_millis(500))
        .await
        .unwrap_err();
    let pids = read_pids(&pid_file, Duration::from_secs(1)).await;
    let _cleanup = KillOnDrop(pids.clone());
    assert!(matches!(error, RunError::TimedOut { .. }), "{error:?}");
    assert_all_dead(&pids, "after the timeout");
    assert_eq!(
        std::fs::read_to_string(&cleaned).unwrap_or_default(),
        "done\n",
        "the command's TERM handler did not run"
    );
}

#[tokio::test]
async fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let started = Instant::now();
    let error = family(r#"trap "" TERM"#, &pids_file)
        .kill_grace(Duration::from_millis(700))
        .run(Duration::from_millis(1000))
        .await
        .unwrap_err();
    let took = started.elapsed();
    let pids = read_pids(&pids_file, Duration::from_secs(1)).await;
    let _cleanup = KillOnDrop(pids.clone());
    println!("timeout 1s + grace 0.7s returned after {took:?}");
    assert!(matches!(error, RunError::TimedOut { .. }), "{error:?}");
    assert!(took >= Duration::from_millis(1700), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_all_dead(&pids, "after the grace");
}

#[tokio::test]
async fn dropping_the_run_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let command = family("", &pids_file);
    let mut run = Box::pin(command.run(Duration::from_secs(120)));
    let deadline = Instant::now() + Duration::from_secs(20);
    // Run it until the whole family is up, then drop it, as a cancelled deploy does.
    loop {
        tokio::select! {
            result = &mut run => panic!("the command finished early: {result:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if pids_file.exists() {
            break;
        }
        assert!(Instant::now() < deadline, "the command never started");
    }
    drop(run);
    let pids = read_pids(&pids_file, Duration::from_secs(1)).await;
    let _cleanup = KillOnDrop(pids.clone());
    assert_all_dead(&pids, "after the run was dropped");
}

#[tokio::test]
async fn what_the_command_leaves_in_its_group_is_killed_when_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The background sleep keeps stdout open: without the kill, reading it would take 300s.
    let started = Instant::now();
    let output = sh(r#"/bin/sleep 300 & echo $! > "$0.tmp" && mv "$0.tmp" "$0"; echo bye"#)
        .arg(&pid_file)
        .run(Duration::from_secs(60))
        .await
        .unwrap();
    let pids = read_pids(&pid_file, Duration::from_secs(1)).await;
    let _cleanup = KillOnDrop(pids.clone());
    assert!(output.status.success());
    assert_eq!(output.stdout.text(), "bye\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_all_dead(&pids, "after the command exited");
}

// `Command::spawn`: a long-lived service in its own group.

#[tokio::test]
async fn a_service_runs_until_stopped_and_sigterm_ends_it_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let service = family("", &pids_file).spawn().await.unwrap();
    let pids = read_pids(&pids_file, Duration::from_secs(10)).await;
    let _cleanup = KillOnDrop(pids.clone());
    assert_eq!(pids[0], service.id(), "the leader is the spawned shell");
    assert_eq!(service.exit_status(), None, "it stopped on its own");
    let status = service.stop(Duration::from_secs(30)).await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(15),
        "not ended by SIGTERM: {status:?}"
    );
    assert_eq!(service.exit_status(), Some(status));
    assert_all_dead(&pids, "after stop");
}

#[tokio::test]
async fn a_service_that_ignores_sigterm_is_killed_after_the_grace_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let service = family(r#"trap "" TERM"#, &pids_file).spawn().await.unwrap();
    let pids = read_pids(&pids_file, Duration::from_secs(10)).await;
    let _cleanup = KillOnDrop(pids.clone());
    let status = service.stop(Duration::from_millis(300)).await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "not killed: {status:?}");
    assert_all_dead(&pids, "after the grace");
}

#[tokio::test]
async fn a_service_that_exits_reports_its_code_and_takes_its_group_along() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let script = r#"/bin/sleep 300 & echo "$$ $!" > "$0.tmp" && mv "$0.tmp" "$0"; exit 3"#;
    let service = sh(script).arg(&pids_file).spawn().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), service.exited())
        .await
        .expect("the service did not exit");
    let pids = read_pids(&pids_file, Duration::from_secs(1)).await;
    let _cleanup = KillOnDrop(pids.clone());
    assert_eq!(status.code(), Some(3));
    assert_eq!(service.exit_status().and_then(|s| s.code()), Some(3));
    assert_all_dead(&pids, "after the leader exited");
    // Stopping what has exited answers at once with how it exited.
    assert_eq!(service.stop(Duration::from_secs(30)).await.code(), Some(3));
}

#[tokio::test]
async fn dropping_a_service_kills_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let service = family("", &pids_file).spawn().await.unwrap();
    let pids = read_pids(&pids_file, Duration::from_secs(10)).await;
    let _cleanup = KillOnDrop(pids.clone());
    drop(service);
    assert_all_dead(&pids, "after the service was dropped");
}

#[tokio::test]
async fn a_service_that_cannot_start_is_named() {
    let error = Command::new("/nonexistent/blue-green-service")
        .spawn()
        .await
        .unwrap_err();
    assert!(matches!(error, RunError::NotFound { .. }), "{error:?}");
    assert!(error
        .to_string()
        .contains("/nonexistent/blue-green-service"));
}
