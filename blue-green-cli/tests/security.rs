//! The command as a local attacker meets it (issue 16): a config file or state directory
//! another user wrote, terminal escapes from a container or a file, secrets in the output, and
//! config files with thousands of problems. The attacker's part runs as `nobody` through
//! `setpriv(1)`; the command runs as the test's user (root here and in CI). The Docker tests
//! need a Docker engine (they build the demo app's image locally).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use blue_green_testkit::docker::{demo_app_image, DockerCleanup};

/// Runs `script` with `sh` as uid/gid 65534, without supplementary groups.
fn as_nobody(script: &str) {
    let out = Process::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv(1) from util-linux is needed to run the attacker's part as nobody");
    assert!(
        out.status.success(),
        "as nobody: `{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test directory that `nobody` can enter, with `shared/` in it: world-writable and sticky,
/// as `/tmp` is.
fn shared_dir() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::Builder::new()
        .prefix("bg-sec-cli-")
        .tempdir()
        .expect("temp dir");
    assert_eq!(
        fs::metadata(base.path()).unwrap().uid(),
        0,
        "these tests play root against a local user: run them as root (as CI does)"
    );
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let shared = base.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    (base, shared)
}

fn blue_green(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("blue-green").expect("binary");
    cmd.current_dir(dir)
        .env_remove("BLUE_GREEN_CONFIG")
        .env_remove("BLUE_GREEN_TEST_PAUSE_AT")
        .env_remove("RUST_LOG");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Control characters other than newline and tab: what a terminal would act on.
fn controls(out: &str) -> Vec<char> {
    out.chars()
        .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
        .collect()
}

fn docker_config(app: &str, image: &str, state_dir: &Path, health: &str) -> String {
    format!(
        r#"app = "{app}"
state_dir = {state:?}

[runtime]
kind = "docker"
image = "{image}"
container_port = 8080
env = {{ API_SECRET = "s3cret-env-value" }}

[health]
{health}
interval = "100ms"
timeout = "1s"
deadline = "2s"

[router]
kind = "none"
"#,
        state = state_dir.display().to_string(),
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("blue-green.toml");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[test]
fn a_config_another_user_wrote_is_refused_before_validate_runs_its_test_command() {
    let (base, shared) = shared_dir();
    let pwned = base.path().join("pwned");
    let config = format!(
        r#"app = "web"
state_dir = {state:?}

[runtime]
kind = "docker"
image = "web:1"
container_port = 8080

[router]
kind = "nginx"
upstream = "web"
upstream_file = {upstream:?}
test_command = ["touch", {pwned:?}]
reload_command = ["true"]
"#,
        state = base.path().join("state").display().to_string(),
        upstream = base.path().join("upstream.conf").display().to_string(),
        pwned = pwned.display().to_string(),
    );
    let path = shared.join("blue-green.toml");
    fs::write(base.path().join("config.txt"), &config).unwrap();
    as_nobody(&format!(
        "cat {} > {}",
        base.path().join("config.txt").display(),
        path.display()
    ));
    let out = blue_green(&shared)
        .args(["validate"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    assert!(stderr.contains("blue-green.toml"), "{stderr}");
    assert!(
        !pwned.exists(),
        "validate ran another user's command as root"
    );

    // The same file, once root has checked and taken it, is used: validate does run the
    // router's test command (as docs/security.md says), so the refusal above is what stops it.
    fs::remove_file(&path).unwrap();
    let mine = write_config(&shared, &config);
    blue_green(&shared)
        .args(["validate"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    assert!(
        pwned.exists(),
        "validate should have run the test command of {mine:?}"
    );

    // Group- or world-writable is refused too, whoever owns it.
    fs::set_permissions(&mine, fs::Permissions::from_mode(0o664)).unwrap();
    let out = blue_green(&shared)
        .args(["validate", "--config-only"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("writable by group or others"), "{stderr}");
    assert!(stderr.contains("chmod go-w"), "{stderr}");
}

#[test]
fn status_refuses_a_state_dir_another_user_planted_and_leaves_its_links_alone() {
    let (base, shared) = shared_dir();
    let victim = base.path().join("victim");
    fs::write(&victim, "root's data").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let state = shared.join("bg-web");
    as_nobody(&format!(
        "mkdir -m 777 {s} && ln -s {v} {s}/lock && ln -s {v} {s}/history.jsonl",
        s = state.display(),
        v = victim.display()
    ));
    let project = tempfile::tempdir().unwrap();
    write_config(
        project.path(),
        &docker_config("web", "web:1", &state, "kind = \"tcp\""),
    );
    for command in ["status", "history"] {
        let out = blue_green(project.path()).arg(command).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("owned by uid 65534") && stderr.contains("chmod 700"),
            "{command}: the error should say whose the directory is and what to do: {stderr}"
        );
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root's data");
}

#[test]
fn a_tampered_state_json_is_refused_by_rollback_naming_the_file() {
    let project = tempfile::tempdir().unwrap();
    let state = project.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let evil = r#"{"previous":{"color":"blue","release":{"id":"v1","artifact":"--privileged"},"endpoint":{"host":"127.0.0.1","port":18081},"since":"t"}}"#;
    fs::write(state.join("state.json"), evil).unwrap();
    fs::set_permissions(state.join("state.json"), fs::Permissions::from_mode(0o600)).unwrap();
    write_config(
        project.path(),
        &docker_config("web", "web:1", &state, "kind = \"tcp\""),
    );
    let out = blue_green(project.path()).arg("rollback").output().unwrap();
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&state.join("state.json").display().to_string())
            && stderr.contains("is not an image reference"),
        "{stderr}"
    );
}

#[test]
fn history_from_a_file_reaches_the_terminal_without_escapes_and_json_exactly() {
    let project = tempfile::tempdir().unwrap();
    let state = project.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let release = "v1\u{1b}]0;owned\u{7}";
    let error = "boom\r\n  ok   deploy done\u{1b}[2J\u{9b}31m";
    let record = serde_json::json!({
        "command": "deploy", "release": release, "outcome": "failed", "error": error,
        "started_at": "2026-11-25T10:00:00Z", "finished_at": "2026-11-25T10:00:05Z",
        "steps": [],
    });
    fs::write(state.join("history.jsonl"), format!("{record}\n")).unwrap();
    fs::set_permissions(
        state.join("history.jsonl"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    write_config(
        project.path(),
        &docker_config("web", "web:1", &state, "kind = \"tcp\""),
    );
    let out = blue_green(project.path())
        .args(["history"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(controls(&stdout), Vec::<char>::new(), "{stdout:?}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("  ok")),
        "a forged line: {stdout}"
    );
    assert!(stdout.contains("\\u{1b}]0;owned"), "{stdout}");
    // JSON stays exact: serde escapes, and the values come back as they were.
    let out = blue_green(project.path())
        .args(["--json", "history", "-n", "1"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    // serde escapes C0 controls; C1 (such as U+009B) are valid JSON text and stay as they are.
    assert!(!stdout.trim_end().chars().any(|c| c < ' '), "{stdout:?}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["history"][0]["release"], release);
    assert_eq!(v["history"][0]["error"], error);

    // A time with an escape in it is not a time: the line is refused, named, and nothing of it
    // reaches the terminal.
    let forged = record_with("started_at", "2026-11-25T10:00:00Z\u{1b}[1A", &record);
    fs::write(state.join("history.jsonl"), format!("{forged}\n{record}\n")).unwrap();
    let out = blue_green(project.path())
        .args(["history"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 1 of"), "{stderr}");
    assert_eq!(controls(&stderr), Vec::<char>::new(), "{stderr:?}");
}

/// `record` with `key` set to `value`.
fn record_with(key: &str, value: &str, record: &serde_json::Value) -> serde_json::Value {
    let mut record = record.clone();
    record[key] = value.into();
    record
}

#[test]
fn thousands_of_bad_keys_are_reported_quickly_and_capped() {
    let project = tempfile::tempdir().unwrap();
    let env: Vec<String> = (0..40_000)
        .map(|i| format!("\"bad name {i}\" = \"x\""))
        .collect();
    let config = format!(
        "app = \"web\"\n[runtime]\nkind = \"docker\"\nimage = \"web:1\"\ncontainer_port = 8080\nenv = {{ {} }}\n[router]\nkind = \"none\"\n",
        env.join(", ")
    );
    write_config(project.path(), &config);
    let started = Instant::now();
    let out = blue_green(project.path())
        .args(["validate", "--config-only"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    println!(
        "40,000 bad keys: {took:?}, {} lines of errors",
        stderr.lines().count()
    );
    assert!(
        stderr.lines().count() < 60,
        "{} lines of errors",
        stderr.lines().count()
    );
    assert!(stderr.contains("39950 more problems not shown"), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// Runs a deploy of the demo app that fails readiness, with `args`, and returns its output and
/// the history file's text.
fn failed_deploy(
    cleanup: &DockerCleanup,
    image: &str,
    health: &str,
    args: &[&str],
) -> (Output, String) {
    let project = tempfile::tempdir().unwrap();
    let state = project.path().join("state");
    write_config(
        project.path(),
        &docker_config(cleanup.prefix(), image, &state, health),
    );
    let out = blue_green(project.path())
        .args(args)
        .args(["deploy", "--release", "v1"])
        .output()
        .unwrap();
    let history = fs::read_to_string(state.join("history.jsonl")).unwrap_or_default();
    (out, history)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_of_runtime_env_and_probe_headers_stay_out_of_every_output() {
    let cleanup = DockerCleanup::new("sec-secrets").await;
    let image = demo_app_image(&cleanup).await;
    let health = r#"kind = "http"
path = "/no-such-page"
headers = { Authorization = "Bearer s3cret-header-value" }"#;
    for args in [&["-v"][..], &["--json"][..]] {
        let (out, history) = {
            let cleanup = &cleanup;
            let image = image.clone();
            tokio::task::block_in_place(|| failed_deploy(cleanup, &image, health, args))
        };
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            history.contains("never became ready") || history.contains("failed"),
            "{history}"
        );
        for (what, output) in [
            ("stdout", &stdout),
            ("stderr", &stderr),
            ("history", &history),
        ] {
            assert!(
                !output.contains("s3cret"),
                "{args:?}: a secret leaked to {what}:\n{output}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_output_from_a_container_reaches_the_terminal_escaped() {
    let cleanup = DockerCleanup::new("sec-escapes").await;
    let image = demo_app_image(&cleanup).await;
    // A probe whose output is the attacker's: a title, a clear-screen and a forged line.
    let health = r#"kind = "command"
command = ["sh", "-c", "printf '\\033]0;owned\\007\\033[2J\\r  ok   deploy done\\nok   switch'; exit 1"]"#;
    let (out, history) =
        tokio::task::block_in_place(|| failed_deploy(&cleanup, &image, health, &[]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deploy done"),
        "the probe output should be shown: {stderr}"
    );
    assert_eq!(controls(&stderr), Vec::<char>::new(), "{stderr:?}");
    assert!(
        !stderr.lines().any(|l| l.trim_start().starts_with("ok   deploy done")
            || l.starts_with("ok   switch")),
        "a forged line: {stderr}"
    );
    // The history keeps the text as it was (JSON escapes it), for `history` to show escaped.
    assert!(history.contains("\\u001b]0;owned"), "{history}");
}
