//! The command line itself: every command and flag, help text, usage errors, the lock and an
//! unreachable Docker daemon. Nothing here needs nginx; the lock and Docker tests need a Docker
//! engine only to get past connecting (they stop before anything is started).

use std::path::Path;

use assert_cmd::Command;
use blue_green_core::{FileStore, LockHolder, StateStore};
use predicates::prelude::*;

const DOCKER_CONFIG: &str = r#"app = "clitest"

[runtime]
kind = "docker"
image = "blue-green-cli-test-never-built:1"
container_port = 8080

[endpoints]
blue = "127.0.0.1:18081"
green = "127.0.0.1:18082"

[health]
kind = "tcp"
deadline = "2s"

[router]
kind = "none"
"#;

const COMPOSE_CONFIG: &str = r#"app = "clitest"

[runtime]
kind = "compose"
file = "docker-compose.yml"
service = "web"

[endpoints]
blue = "127.0.0.1:18081"
green = "127.0.0.1:18082"

[router]
kind = "none"
"#;

fn project(config: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bg-cli-")
        .tempdir()
        .expect("temp dir");
    std::fs::write(dir.path().join("blue-green.toml"), config).expect("write config");
    std::fs::write(dir.path().join("docker-compose.yml"), "services: {}\n").expect("write");
    dir
}

fn blue_green(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("blue-green").expect("binary");
    cmd.current_dir(dir)
        .env_remove("BLUE_GREEN_CONFIG")
        .env_remove(blue_green_cli::test_hooks::PAUSE_ENV)
        .env_remove("RUST_LOG");
    cmd
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let dir = project(DOCKER_CONFIG);
    let out = blue_green(dir.path()).arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "deploy",
        "status",
        "rollback",
        "switch",
        "down",
        "history",
        "validate",
        "repair",
        "--config",
        "--json",
        "--verbose",
        "--quiet",
        "Exit codes",
        "130",
    ] {
        assert!(text.contains(word), "--help should mention {word}:\n{text}");
    }
}

#[test]
fn every_command_has_help() {
    let dir = project(DOCKER_CONFIG);
    for (command, must) in [
        ("deploy", "--release"),
        ("deploy", "--image"),
        ("status", "live color"),
        ("status", "blue-green repair"),
        ("repair", "interrupted"),
        ("rollback", "previous color"),
        ("switch", "<COLOR>"),
        ("down", "--force"),
        ("history", "--limit"),
        ("validate", "--config-only"),
    ] {
        blue_green(dir.path())
            .args([command, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains(must));
    }
}

#[test]
fn version_flag() {
    let dir = project(DOCKER_CONFIG);
    blue_green(dir.path())
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors_exit_2() {
    let dir = project(DOCKER_CONFIG);
    for args in [
        &["frobnicate"][..],
        &["switch", "red"][..],
        &["switch"][..],
        &["down", "purple"][..],
        &["-v", "-q", "status"][..],
        &["history", "--limit", "many"][..],
        &["deploy", "--release"][..],
    ] {
        blue_green(dir.path()).args(args).assert().code(2);
    }
}

#[test]
fn a_bad_release_id_is_refused_before_anything_runs() {
    let dir = project(DOCKER_CONFIG);
    blue_green(dir.path())
        .args(["deploy", "--release", "v1; rm -rf /"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--release"));
    assert!(!dir.path().join(".blue-green").exists());
}

#[test]
fn image_flag_with_compose_needs_the_image_variable_in_the_files() {
    let dir = project(COMPOSE_CONFIG);
    blue_green(dir.path())
        .args(["deploy", "--image", "web:2"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("does not use it"));
    assert!(!dir.path().join(".blue-green").exists());
    // With `${BLUE_GREEN_IMAGE}` in the file the flag is accepted, and the command goes on to
    // Docker (unreachable here: exit 4).
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "services:\n  web:\n    image: ${BLUE_GREEN_IMAGE:-web:1}\n",
    )
    .expect("write");
    blue_green(dir.path())
        .args(["deploy", "--image", "web:2"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .assert()
        .code(4);
}

#[test]
fn a_bad_image_is_refused() {
    let dir = project(DOCKER_CONFIG);
    blue_green(dir.path())
        .args(["deploy", "--image", "web 2"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not an image reference"));
}

#[test]
fn config_flag_and_env_choose_the_file() {
    let dir = project(DOCKER_CONFIG);
    std::fs::create_dir(dir.path().join("deploy")).expect("mkdir");
    std::fs::rename(
        dir.path().join("blue-green.toml"),
        dir.path().join("deploy/prod.toml"),
    )
    .expect("move");
    blue_green(dir.path())
        .args(["validate", "--config-only"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("blue-green.toml"));
    blue_green(dir.path())
        .args(["-c", "deploy/prod.toml", "validate", "--config-only"])
        .assert()
        .success();
    blue_green(dir.path())
        .args(["validate", "--config", "deploy/prod.toml", "--config-only"])
        .assert()
        .success();
    blue_green(dir.path())
        .env("BLUE_GREEN_CONFIG", "deploy/prod.toml")
        .args(["validate", "--config-only"])
        .assert()
        .success();
    // The state directory defaults to beside the config file, not the working directory.
    blue_green(dir.path())
        .args([
            "-c",
            "deploy/prod.toml",
            "--json",
            "validate",
            "--config-only",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("deploy/.blue-green"));
}

#[test]
fn validate_config_only_json_and_quiet() {
    let dir = project(DOCKER_CONFIG);
    let out = blue_green(dir.path())
        .args(["--json", "validate", "--config-only"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["event"], "result");
    assert_eq!(v["command"], "validate");
    assert_eq!(v["ok"], true);
    assert_eq!(v["exit_code"], 0);

    let out = blue_green(dir.path())
        .args(["-q", "validate", "--config-only"])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn history_works_without_docker_and_writes_nothing() {
    let dir = project(DOCKER_CONFIG);
    blue_green(dir.path())
        .arg("history")
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .assert()
        .success()
        .stdout(predicate::str::contains("no deploys recorded yet"));
    let out = blue_green(dir.path())
        .args(["history", "--json", "-n", "5"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("one JSON object");
    assert_eq!(v["history"], serde_json::json!([]));
    assert!(!dir.path().join(".blue-green").exists());
}

#[test]
fn a_proxy_command_with_no_proxy_on_its_socket_exits_4_pointing_at_the_proxy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("proxy.sock");
    for args in [&["status"][..], &["pause"][..], &["maintenance", "on"][..]] {
        let out = blue_green(dir.path())
            .arg("proxy")
            .args(args)
            .arg("--control")
            .arg(&socket)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&socket.display().to_string()),
            "{args:?}: the socket is named:\n{stderr}"
        );
        assert!(
            stderr.contains("`blue-green proxy run` is running with this control socket")
                && !stderr.contains("validate"),
            "{args:?}: the hint is about the proxy, not Docker or nginx:\n{stderr}"
        );
    }
}

#[test]
fn docker_unreachable_exits_4_with_a_clear_message() {
    let dir = project(DOCKER_CONFIG);
    for args in [
        &["deploy", "--release", "v1"][..],
        &["status"][..],
        &["rollback"][..],
        &["switch", "blue"][..],
        &["down"][..],
    ] {
        let out = blue_green(dir.path())
            .args(args)
            .env("DOCKER_HOST", "unix:///nonexistent.sock")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(
            stderr.contains("/nonexistent.sock") && stderr.contains("Docker"),
            "{args:?}: the message should say Docker was not found where it looked:\n{stderr}"
        );
    }
    let out = blue_green(dir.path())
        .arg("validate")
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    // The report is validate's answer (stdout); the error that ends it is on stderr.
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(stderr.contains("/nonexistent.sock"), "{stderr}");
    assert!(!dir.path().join(".blue-green").exists());
}

#[tokio::test]
async fn a_held_lock_exits_3_naming_the_holder() {
    let dir = project(DOCKER_CONFIG);
    let store = FileStore::new(dir.path().join(".blue-green"));
    let holder = LockHolder {
        pid: std::process::id(),
        host: "lock-test-host".into(),
        since: Some(blue_green_core::OffsetDateTime::UNIX_EPOCH),
        command: "deploy".into(),
    };
    let _lock = store.lock(&holder).await.expect("take the lock");
    let path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        blue_green(&path)
            .args(["deploy", "--release", "v1"])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", std::process::id()))
            && stderr.contains("lock-test-host"),
        "the message should name the holder:\n{stderr}"
    );
}

#[test]
fn every_example_config_passes_config_validation() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&examples).expect("read examples/") {
        let config = entry.expect("entry").path().join("blue-green.toml");
        if !config.is_file() {
            continue;
        }
        // `--config-only`: the config and the files it names, not Docker or nginx, which the
        // examples' READMEs start by hand.
        let out = blue_green(&examples)
            .arg("-c")
            .arg(&config)
            .args(["validate", "--config-only"])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked.push(config);
    }
    assert!(
        checked.len() >= 2,
        "expected compose-nginx and docker-nginx, found {checked:?}"
    );
    assert!(
        !examples.join("compose-nginx/.blue-green").exists(),
        "validation must not create a state directory"
    );
}

#[test]
fn configs_shown_in_the_docs_pass_config_validation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for doc in ["README.md", "docs/configuration.md", "docs/guide.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect("read doc");
        let mut blocks = text.split("```toml\n").skip(1);
        for (i, block) in blocks.by_ref().enumerate() {
            let config = block.split("```").next().unwrap_or("");
            // Only whole files; the fragments of one table are shown for reading.
            if !(config.contains("app = ") && config.contains("[router]")) {
                continue;
            }
            let dir = project(config);
            std::fs::write(dir.path().join("docker-compose.blue.yml"), "services: {}\n")
                .expect("write");
            std::fs::write(
                dir.path().join("docker-compose.green.yml"),
                "services: {}\n",
            )
            .expect("write");
            let out = blue_green(dir.path())
                .args(["validate", "--config-only"])
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "config block {i} of {doc} does not validate:\n{}\n{config}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "only {checked} full configs found in the docs"
    );
}
