//! Tests of the file store: they use Unix processes, pids and flock(1).

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command as ProcessCommand, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::events::{Command, Step};
use crate::model::{Color, Endpoint, Release};
use crate::state::{Deployment, JournalEntry, Outcome, StepTiming};
use crate::ComponentErrorKind;

fn this_host() -> String {
    hostname::get().unwrap().into_string().unwrap()
}

fn holder(pid: u32, command: &str) -> LockHolder {
    LockHolder {
        pid,
        host: this_host(),
        since: Some(time::macros::datetime!(2026-11-25 10:00 UTC)),
        command: command.into(),
    }
}

fn record(release: &str) -> DeployRecord {
    DeployRecord {
        command: Command::Deploy,
        release: Some(release.into()),
        from: Some(Color::Blue),
        to: Some(Color::Green),
        outcome: Outcome::Succeeded,
        error: None,
        started_at: time::macros::datetime!(2026-11-25 10:00 UTC),
        finished_at: time::macros::datetime!(2026-11-25 10:00:05 UTC),
        steps: vec![StepTiming {
            step: Step::Ready,
            color: Some(Color::Green),
            ms: 1234,
            ok: true,
        }],
        warnings: Vec::new(),
        hooks: Vec::new(),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = ProcessCommand::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[tokio::test]
async fn state_round_trips_and_a_missing_file_is_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path().join("not-yet"));
    assert_eq!(store.load().await.unwrap(), AppState::default());

    let deployment = Deployment {
        color: Color::Green,
        release: Release::new("v2").unwrap().with_artifact("app:2").unwrap(),
        endpoint: Endpoint::new("127.0.0.1", 8082),
        since: time::macros::datetime!(2026-11-25 10:00 UTC),
    };
    let state = AppState {
        live: Some(deployment.clone()),
        previous: Some(Deployment {
            color: Color::Blue,
            ..deployment
        }),
        journal: Some(JournalEntry {
            command: Command::Deploy,
            step: Step::Switch,
            color: Color::Green,
            release: Some(Release::new("v2").unwrap()),
            from: Some(Color::Blue),
            started_at: time::macros::datetime!(2026-11-25 10:00 UTC),
            pid: 42,
        }),
        staged: None,
        preview: None,
    };
    let started = Instant::now();
    store.save(&state).await.unwrap();
    println!("an atomic save of state.json took {:?}", started.elapsed());
    assert_eq!(store.load().await.unwrap(), state);
    // A second store on the same directory sees it too.
    assert_eq!(FileStore::new(store.dir()).load().await.unwrap(), state);
}

#[tokio::test]
async fn saving_leaves_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    for _ in 0..3 {
        store.save(&AppState::default()).await.unwrap();
    }
    assert_eq!(entries(tmp.path()), vec![STATE_FILE.to_string()]);
}

#[tokio::test]
async fn corrupt_state_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    fs::write(store.state_path(), b"{\"live\": {").unwrap();
    let err = store.load().await.unwrap_err();
    assert_eq!(err.kind, ComponentErrorKind::Failed);
    assert!(
        err.message
            .contains(&store.state_path().display().to_string()),
        "{err}"
    );
    assert!(err.message.contains("move it aside"), "{err}");
}

#[tokio::test]
async fn an_unusable_state_dir_is_unreachable_and_says_what_to_check() {
    let tmp = tempfile::tempdir().unwrap();
    // A regular file where the directory should be: no user, not even root, can write in it.
    let not_a_dir = tmp.path().join("state");
    fs::write(&not_a_dir, b"").unwrap();
    let store = FileStore::new(&not_a_dir);
    let err = store.save(&AppState::default()).await.unwrap_err();
    assert_eq!(err.kind, ComponentErrorKind::Unreachable);
    assert!(
        err.message
            .contains(&format!("check that state_dir {}", not_a_dir.display())),
        "{err}"
    );
    println!("{err}");
    assert!(
        err.message.contains(&not_a_dir.display().to_string()),
        "{err}"
    );
    let err = store.append_history(&record("v1")).await.unwrap_err();
    assert_eq!(err.kind, ComponentErrorKind::Unreachable);
    let err = store.lock(&holder(1, "deploy")).await.unwrap_err();
    assert!(matches!(err, LockError::Store(ref e) if e.kind == ComponentErrorKind::Unreachable));
}

#[tokio::test]
async fn history_is_appended_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path().join("new"));
    assert!(store.history().await.unwrap().is_empty());
    let started = Instant::now();
    for release in ["v1", "v2", "v3"] {
        store.append_history(&record(release)).await.unwrap();
    }
    println!(
        "3 fsync'd history appends took {:?} in all",
        started.elapsed()
    );
    let history = store.history().await.unwrap();
    assert_eq!(history, vec![record("v1"), record("v2"), record("v3")]);
    let text = fs::read_to_string(store.history_path()).unwrap();
    assert_eq!(text.lines().count(), 3);
}

#[tokio::test]
async fn a_torn_last_history_line_is_skipped_then_cut_off_by_the_next_append() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    store.append_history(&record("v1")).await.unwrap();
    store.append_history(&record("v2")).await.unwrap();
    // A crash half-way through the third append.
    let full = serde_json::to_string(&record("v3")).unwrap();
    let mut file = OpenOptions::new()
        .append(true)
        .open(store.history_path())
        .unwrap();
    file.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
    drop(file);

    assert_eq!(
        store.history().await.unwrap(),
        vec![record("v1"), record("v2")]
    );
    store.append_history(&record("v4")).await.unwrap();
    assert_eq!(
        store.history().await.unwrap(),
        vec![record("v1"), record("v2"), record("v4")]
    );
}

#[tokio::test]
async fn a_complete_but_unterminated_last_line_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    let line = serde_json::to_string(&record("v1")).unwrap();
    fs::write(store.history_path(), line).unwrap();
    assert_eq!(store.history().await.unwrap(), vec![record("v1")]);
    store.append_history(&record("v2")).await.unwrap();
    assert_eq!(
        store.history().await.unwrap(),
        vec![record("v1"), record("v2")]
    );
}

#[tokio::test]
async fn a_corrupt_line_in_the_middle_is_an_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    store.append_history(&record("v1")).await.unwrap();
    let mut file = OpenOptions::new()
        .append(true)
        .open(store.history_path())
        .unwrap();
    file.write_all(b"garbage\n").unwrap();
    drop(file);
    store.append_history(&record("v3")).await.unwrap();
    let err = store.history().await.unwrap_err();
    assert_eq!(err.kind, ComponentErrorKind::Failed);
    assert!(err.message.contains("line 2 of"), "{err}");
    assert!(
        err.message
            .contains(&store.history_path().display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_held_lock_names_its_holder_to_a_second_store() {
    let tmp = tempfile::tempdir().unwrap();
    let first = FileStore::new(tmp.path());
    let second = FileStore::new(tmp.path());
    let me = holder(std::process::id(), "deploy");
    let lock = first.lock(&me).await.unwrap();
    assert_eq!(lock.taken_over_from, None);
    match second.lock(&holder(std::process::id(), "rollback")).await {
        Err(LockError::Held(h)) => assert_eq!(h, me),
        other => panic!("expected Held, got {other:?}"),
    }
    // The same store cannot take it twice either.
    assert!(matches!(first.lock(&me).await, Err(LockError::Held(_))));
    drop(lock);
}

#[tokio::test]
async fn dropping_the_lock_releases_it_and_clears_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    let lock = store
        .lock(&holder(std::process::id(), "deploy"))
        .await
        .unwrap();
    drop(lock);
    assert_eq!(fs::read(store.lock_path()).unwrap(), b"");
    let next = holder(std::process::id(), "switch");
    let lock = FileStore::new(tmp.path()).lock(&next).await.unwrap();
    assert_eq!(lock.taken_over_from, None);
    let written: LockHolder =
        serde_json::from_slice(&fs::read(store.lock_path()).unwrap()).unwrap();
    assert_eq!(written, next);
}

#[tokio::test]
async fn a_lock_named_by_a_dead_process_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    let stale = holder(dead_pid(), "deploy");
    fs::write(store.lock_path(), serde_json::to_vec(&stale).unwrap()).unwrap();
    let lock = store
        .lock(&holder(std::process::id(), "deploy"))
        .await
        .unwrap();
    assert_eq!(lock.taken_over_from, Some(stale));
}

#[tokio::test]
async fn a_lock_named_by_another_host_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    let stale = LockHolder {
        host: format!("not-{}", this_host()),
        ..holder(std::process::id(), "deploy")
    };
    fs::write(store.lock_path(), serde_json::to_vec(&stale).unwrap()).unwrap();
    let lock = store
        .lock(&holder(std::process::id(), "deploy"))
        .await
        .unwrap();
    assert_eq!(lock.taken_over_from, Some(stale));
}

#[tokio::test]
async fn a_stale_name_of_a_live_pid_is_not_reported_as_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    let mut alive = KillOnDrop(
        ProcessCommand::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let named = holder(alive.0.id(), "deploy");
    fs::write(store.lock_path(), serde_json::to_vec(&named).unwrap()).unwrap();
    let lock = store
        .lock(&holder(std::process::id(), "deploy"))
        .await
        .unwrap();
    assert_eq!(lock.taken_over_from, None);
    drop(lock);
    alive.0.kill().unwrap();
}

/// Kills and reaps a child process, also when a test fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a child's whole process group and reaps the child, also when a test fails.
struct KillGroupOnDrop(Child);

impl KillGroupOnDrop {
    fn kill(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).unwrap();
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.0.wait();
    }
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

const CHILD_DIR_ENV: &str = "BLUE_GREEN_TEST_LOCK_CHILD_DIR";
const CHILD_READY: &str = "BLUE_GREEN_TEST_LOCKED";

/// Not a test on its own: the child process of
/// `a_lock_held_by_another_process_is_held_then_taken_over_when_it_dies`, started by
/// re-running this test binary. It takes the lock, says so, and waits to be killed.
#[test]
#[ignore = "helper process for the cross-process lock test"]
fn lock_holder_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let lock = runtime
        .block_on(FileStore::new(dir).lock(&holder(std::process::id(), "deploy")))
        .unwrap();
    // On a line of its own: libtest has already printed "test NAME ... " without a newline.
    println!("\n{CHILD_READY}");
    io::stdout().flush().unwrap();
    // The parent kills this process; the timeout only bounds a parent that died first.
    std::thread::sleep(Duration::from_secs(60));
    drop(lock);
}

#[tokio::test]
async fn a_lock_held_by_another_process_is_held_then_taken_over_when_it_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        ProcessCommand::new(exe)
            .args([
                "--ignored",
                "--exact",
                "state::file::tests::lock_holder_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let child_pid = child.0.id();
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == CHILD_READY {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the child process did not take the lock within 60s");

    let store = FileStore::new(tmp.path());
    let me = holder(std::process::id(), "deploy");
    match store.lock(&me).await {
        Err(LockError::Held(h)) => {
            assert_eq!(h.pid, child_pid);
            assert_eq!(h.command, "deploy");
        }
        other => panic!("expected the child to hold the lock, got {other:?}"),
    }

    // Killed without releasing: the kernel drops the flock, the name stays in the file.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let lock = store.lock(&me).await.unwrap();
    assert_eq!(
        lock.taken_over_from.map(|h| h.pid),
        Some(child_pid),
        "the dead child should be reported as the previous holder"
    );
}

#[tokio::test]
async fn a_lock_held_by_flock_1_without_a_name_is_reported_as_unknown() {
    // An operator (or another tool) holding the lock with util-linux flock(1) writes no name.
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    fs::create_dir_all(store.dir()).unwrap();
    // With `-o` only flock(1) itself holds the locked file, not the command it runs, so the
    // lock is free once flock(1) is reaped. Both get a process group, killed as a whole.
    let mut child = KillGroupOnDrop(
        ProcessCommand::new("flock")
            .arg("-o")
            .arg(store.lock_path())
            .args([
                "/bin/sh",
                "-c",
                "echo BLUE_GREEN_TEST_LOCKED; exec sleep 30",
            ])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock(1) from util-linux is needed for this test"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == CHILD_READY {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("flock(1) did not take the lock within 30s");

    match store.lock(&holder(std::process::id(), "deploy")).await {
        Err(LockError::Held(h)) => {
            assert_eq!(h.pid, 0);
            assert!(
                h.command.contains(&store.lock_path().display().to_string()),
                "{h}"
            );
        }
        other => panic!("expected Held, got {other:?}"),
    }
    child.kill();
    let lock = store
        .lock(&holder(std::process::id(), "deploy"))
        .await
        .unwrap();
    assert_eq!(
        lock.taken_over_from, None,
        "flock(1) left no name to report"
    );
}
