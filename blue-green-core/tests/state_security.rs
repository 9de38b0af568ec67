//! The state directory as a local attacker sees it (issue 16): another user's directory or
//! symlinks, files others can write or lock, a tampered `state.json`, a huge history, and a
//! save that lands late. The attacker's part runs as `nobody` through `setpriv(1)`; the store's
//! part runs as the test's user (root here and in CI).

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use blue_green_core::events::{Command, Step};
use blue_green_core::{
    AppState, Color, ComponentErrorKind, DeployRecord, Deployment, Endpoint, FileStore, LockError,
    LockHolder, Outcome, Release, StateStore, StepTiming,
};

const NOBODY: u32 = 65534;

/// Runs `script` with `sh` as uid/gid 65534, without supplementary groups.
fn as_nobody(script: &str) -> std::process::Output {
    Process::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv(1) from util-linux is needed to run the attacker's part as nobody")
}

fn as_nobody_ok(script: &str) {
    let out = as_nobody(script);
    assert!(
        out.status.success(),
        "as nobody: `{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn need_root() {
    let probe = tempfile::tempfile().unwrap();
    assert_eq!(
        probe.metadata().unwrap().uid(),
        0,
        "these tests play root against a local user: run them as root (as CI does)"
    );
}

/// A test directory that `nobody` can enter, with `shared/` in it: world-writable and sticky,
/// as `/tmp` is. Dropping the first value removes it all.
fn shared_dir() -> (tempfile::TempDir, PathBuf) {
    need_root();
    let base = tempfile::Builder::new()
        .prefix("bg-sec-")
        .tempdir()
        .unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let shared = base.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    (base, shared)
}

/// A root-only file whose content must survive.
fn victim(base: &Path) -> PathBuf {
    let path = base.join("victim");
    fs::write(&path, "root's secret\nlast line without newline").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn holder(command: &str) -> LockHolder {
    LockHolder {
        pid: std::process::id(),
        host: hostname(),
        since: Some(time::macros::datetime!(2026-11-25 10:00 UTC)),
        command: command.into(),
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn record(release: &str) -> DeployRecord {
    let mut record = DeployRecord::new(
        Command::Deploy,
        Outcome::Succeeded,
        time::macros::datetime!(2026-11-25 10:00 UTC),
        time::macros::datetime!(2026-11-25 10:00:05 UTC),
    );
    record.release = Some(release.into());
    record.from = Some(Color::Blue);
    record.to = Some(Color::Green);
    record.steps = vec![StepTiming::new(Step::Ready, Some(Color::Green), 1234, true)];
    record
}

fn live(release: &str) -> AppState {
    AppState {
        live: Some(Deployment {
            color: Color::Green,
            release: Release::new(release)
                .unwrap()
                .with_artifact(format!("web:{release}"))
                .unwrap(),
            endpoint: Endpoint::new("127.0.0.1", 8082),
            since: time::macros::datetime!(2026-11-25 10:00 UTC),
        }),
        ..AppState::default()
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn assert_refused(err: &blue_green_core::ComponentError, says: &[&str]) {
    assert_eq!(err.kind, ComponentErrorKind::Invalid, "{err}");
    for s in says {
        assert!(err.message.contains(s), "the error should say {s:?}: {err}");
    }
}

fn lock_error(result: Result<blue_green_core::Lock, LockError>) -> blue_green_core::ComponentError {
    match result {
        Err(LockError::Store(e)) => e,
        other => panic!("expected the store to refuse the lock, got {other:?}"),
    }
}

#[tokio::test]
async fn a_state_dir_another_user_made_is_refused_and_its_planted_symlinks_are_not_followed() {
    let (base, shared) = shared_dir();
    let victim = victim(base.path());
    let dir = shared.join("bg-web");
    // The attacker creates the directory first and plants links to root's file.
    as_nobody_ok(&format!(
        "mkdir -m 777 {dir} && ln -s {v} {dir}/lock && ln -s {v} {dir}/history.jsonl && ln -s {v} {dir}/state.json",
        dir = dir.display(),
        v = victim.display()
    ));
    let before = fs::read(&victim).unwrap();
    let store = FileStore::new(&dir);

    let err = lock_error(store.lock(&holder("status")).await);
    assert_refused(
        &err,
        &[
            &dir.display().to_string(),
            "owned by uid 65534",
            "chmod 700",
        ],
    );
    assert_refused(
        &store.append_history(&record("v1")).await.unwrap_err(),
        &["uid 65534"],
    );
    assert_refused(&store.load().await.unwrap_err(), &["uid 65534"]);
    assert_refused(
        &store.save(&AppState::default()).await.unwrap_err(),
        &["uid 65534"],
    );
    assert_refused(&store.history().await.unwrap_err(), &["uid 65534"]);
    assert_eq!(
        fs::read(&victim).unwrap(),
        before,
        "root's file was changed"
    );
}

#[tokio::test]
async fn symlinks_in_our_own_dir_are_not_followed() {
    // However they got there (the directory is private), a link is refused, never followed.
    let (base, _) = shared_dir();
    let victim = victim(base.path());
    let before = fs::read(&victim).unwrap();
    let dir = base.path().join("state");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    for name in ["lock", "history.jsonl", "state.json"] {
        symlink(&victim, dir.join(name)).unwrap();
    }
    let store = FileStore::new(&dir);
    let err = lock_error(store.lock(&holder("deploy")).await);
    assert_refused(&err, &["lock is a symbolic link"]);
    let err = store.append_history(&record("v1")).await.unwrap_err();
    assert_refused(&err, &["history.jsonl is a symbolic link"]);
    let err = store.load().await.unwrap_err();
    assert_refused(&err, &["state.json is a symbolic link"]);
    assert_eq!(
        fs::read(&victim).unwrap(),
        before,
        "root's file was changed"
    );
    // A save replaces the link itself with a private file, and leaves the target alone.
    store.save(&live("v1")).await.unwrap();
    assert!(fs::symlink_metadata(dir.join("state.json"))
        .unwrap()
        .is_file());
    assert_eq!(mode(&dir.join("state.json")), 0o600);
    assert_eq!(mode(&victim), 0o600);
    assert_eq!(fs::read(&victim).unwrap(), before);
}

#[tokio::test]
async fn a_state_dir_others_can_write_does_not_decide_what_rollback_starts() {
    let (_base, shared) = shared_dir();
    let dir = shared.join("bg-web");
    let store = FileStore::new(&dir);
    store.save(&live("v1")).await.unwrap();
    // An admin's slip: the directory opened to everyone. A user then writes the state that
    // `rollback` would start: their image.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::remove_file(dir.join("state.json")).unwrap();
    let evil = r#"{"live":{"color":"green","release":{"id":"v1","artifact":"evil:1"},"endpoint":{"host":"127.0.0.1","port":8082},"since":"t"}}"#;
    as_nobody_ok(&format!(
        "printf '%s' '{evil}' > {}",
        dir.join("state.json").display()
    ));
    let err = store.load().await.unwrap_err();
    assert_refused(&err, &["writable by group or others", "chmod 700"]);
    // The file itself, with the directory closed again: owned by another user.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let err = store.load().await.unwrap_err();
    assert_refused(&err, &["state.json is owned by uid 65534"]);
}

#[tokio::test]
async fn a_parent_another_user_can_replace_is_refused() {
    let (_base, shared) = shared_dir();
    // nobody's own directory, world-writable and not sticky, with root's state dir in it.
    let parent = shared.join("team");
    as_nobody_ok(&format!("mkdir -m 777 {}", parent.display()));
    let store = FileStore::new(parent.join("state"));
    let err = store.save(&AppState::default()).await.unwrap_err();
    assert_refused(&err, &[&parent.display().to_string(), "owned by uid 65534"]);
    assert!(!parent.join("state").exists());
    // A link another user planted on the way is not followed either.
    let mine = shared.join("mine");
    fs::create_dir(&mine).unwrap();
    as_nobody_ok(&format!(
        "ln -s {} {}",
        mine.display(),
        shared.join("link").display()
    ));
    let store = FileStore::new(shared.join("link").join("state"));
    let err = store.save(&AppState::default()).await.unwrap_err();
    assert_refused(&err, &["symbolic link owned by uid 65534"]);
}

#[tokio::test]
async fn a_tampered_state_json_with_a_bad_release_id_or_image_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    store.save(&live("v1")).await.unwrap();
    let good = fs::read_to_string(store.state_path()).unwrap();
    for (from, to) in [
        ("\"id\": \"v1\"", "\"id\": \"v1; rm -rf /\""),
        ("\"id\": \"v1\"", "\"id\": \"-v1\""),
        ("\"artifact\": \"web:v1\"", "\"artifact\": \"--privileged\""),
        (
            "\"artifact\": \"web:v1\"",
            "\"artifact\": \"web:v1\\nok deploy done\"",
        ),
    ] {
        assert!(good.contains(from), "{good}");
        fs::write(store.state_path(), good.replace(from, to)).unwrap();
        fs::set_permissions(store.state_path(), fs::Permissions::from_mode(0o600)).unwrap();
        let err = store.load().await.unwrap_err();
        assert!(
            err.message
                .contains(&store.state_path().display().to_string()),
            "{err}"
        );
        assert!(err.message.contains("is not"), "{err}");
    }
}

#[tokio::test]
async fn state_files_are_private_and_nobody_else_can_hold_the_lock() {
    let (_base, shared) = shared_dir();
    let dir = shared.join("bg-web");
    let store = FileStore::new(&dir);
    drop(store.lock(&holder("deploy")).await.unwrap());
    store.save(&live("v1")).await.unwrap();
    store.append_history(&record("v1")).await.unwrap();
    assert_eq!(mode(&dir), 0o700);
    for name in ["lock", "state.json", "history.jsonl"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    // flock(2) works on a read-only descriptor: a user who can open the lock can block every
    // deploy. Here they cannot open it.
    let out = as_nobody(&format!("flock -n {} true", dir.join("lock").display()));
    assert!(
        !out.status.success(),
        "nobody could open and lock the lock file"
    );
    assert!(store.loose_modes().is_empty(), "{:?}", store.loose_modes());
}

#[tokio::test]
async fn the_open_lock_of_an_older_version_is_closed_when_taken() {
    let (_base, shared) = shared_dir();
    let dir = shared.join("bg-web");
    // What earlier versions left: a 0755 directory and a 0644 lock.
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("lock"), b"").unwrap();
    fs::set_permissions(dir.join("lock"), fs::Permissions::from_mode(0o644)).unwrap();
    let store = FileStore::new(&dir);
    let loose = store.loose_modes();
    assert_eq!(loose.len(), 2, "{loose:?}");
    assert!(loose[0].contains("chmod 700"), "{loose:?}");
    assert!(loose[1].contains("chmod 600"), "{loose:?}");
    let lock = store.lock(&holder("deploy")).await.unwrap();
    assert_eq!(mode(&dir.join("lock")), 0o600);
    drop(lock);
    let out = as_nobody(&format!("flock -n {} true", dir.join("lock").display()));
    assert!(
        !out.status.success(),
        "nobody could still lock the lock file"
    );
    assert!(store.lock(&holder("deploy")).await.is_ok());
}

#[test]
fn a_save_that_timed_out_never_lands_after_a_later_one() {
    // The engine gives up on a store call after its timeout, but a timed-out future does not
    // stop the blocking write under it. A big first state makes that write slow.
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    let mut slow = live("v1");
    if let Some(live) = slow.live.as_mut() {
        live.endpoint.host = "x".repeat(32 << 20);
    }
    let newer = live("v2");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let gave_up = tokio::time::timeout(Duration::from_millis(1), store.save(&slow)).await;
        assert!(gave_up.is_err(), "the slow save finished within 1 ms");
        store.save(&newer).await.unwrap();
    });
    // Dropping the runtime waits for the blocking write that was left running.
    drop(runtime);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let loaded = runtime.block_on(store.load()).unwrap();
    assert_eq!(
        loaded.live.map(|d| d.release.id.to_string()),
        Some("v2".to_string()),
        "the save that timed out landed after the later one"
    );
}

/// Bytes this process has read through read(2) and the like, from `/proc/self/io`.
fn bytes_read() -> u64 {
    let io = fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn history_n_reads_from_the_end_and_the_file_is_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    store.append_history(&record("v0")).await.unwrap();
    // A long history, written directly: 64 MiB of records, then the newest one appended.
    let line = serde_json::to_string(&record("old")).unwrap() + "\n";
    let many = line.repeat((64 << 20) / line.len());
    {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(store.history_path())
            .unwrap();
        file.write_all(many.as_bytes()).unwrap();
    }
    let before = bytes_read();
    let last = store.recent_history(1).await.unwrap();
    let read = bytes_read() - before;
    assert_eq!(last, vec![record("old")]);
    assert!(
        read < 1 << 20,
        "reading the last record of a 64 MiB history read {read} bytes"
    );
    // A whole read stops at the cap too.
    let before = bytes_read();
    let all = store.history().await.unwrap();
    let read = bytes_read() - before;
    assert!(
        read <= blue_green_core::state::history::MAX_HISTORY_BYTES + (64 << 10),
        "{read}"
    );
    assert!(!all.is_empty());

    // The next append caps the file, keeping the newest records.
    store.append_history(&record("v9")).await.unwrap();
    let size = fs::metadata(store.history_path()).unwrap().len();
    assert!(
        size <= blue_green_core::state::history::MAX_HISTORY_BYTES,
        "the history was not capped: {size} bytes"
    );
    assert_eq!(mode(&store.history_path()), 0o600);
    let newest = store.recent_history(2).await.unwrap();
    assert_eq!(newest, vec![record("old"), record("v9")]);
    assert_ne!(store.history().await.unwrap()[0], record("v0"));
}

#[tokio::test]
async fn a_corrupt_line_matters_only_when_its_records_are_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path());
    let good = serde_json::to_string(&record("v1")).unwrap() + "\n";
    let newest = serde_json::to_string(&record("v2")).unwrap() + "\n";
    for (older, which) in [(1, "line 2 of"), (2000, "line 2 from the end of")] {
        fs::write(
            store.history_path(),
            good.repeat(older) + "garbage\n" + &newest,
        )
        .unwrap();
        fs::set_permissions(store.history_path(), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(store.recent_history(1).await.unwrap(), vec![record("v2")]);
        let err = store.recent_history(5).await.unwrap_err();
        assert!(err.message.contains(which), "{err}");
    }
}

#[test]
fn nobody_is_uid_65534_here() {
    // The messages above name the attacker by uid; make sure the account exists as assumed.
    let out = as_nobody("id -u");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        NOBODY.to_string()
    );
}
