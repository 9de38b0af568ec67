//! `[runtime] release_command` through the real `blue-green` binary, against the real Docker
//! engine (the demo app's image, whose entrypoint is the app: the command is its task
//! arguments; the `none` router): the command runs once per deploy in a one-off container of
//! the new release after the `pre_deploy` hook, its output is in the progress and its outcome
//! in the history; a failing one (or one whose image cannot be had) fails the deploy with exit
//! 1 and changes nothing serving; the config errors of the keys. Needs Docker; fails with a
//! clear message when it is missing. Every container and image carries the test's prefix and
//! is removed on drop.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use blue_green_testkit::docker::containers_with_prefix;
use serde_json::Value;

mod common;
use common::DemoApp;

fn run(app: &DemoApp, args: &[&str]) -> Output {
    Command::cargo_bin("blue-green")
        .expect("binary")
        .current_dir(app.dir.path())
        .env_remove("BLUE_GREEN_CONFIG")
        .env_remove(blue_green_cli::test_hooks::PAUSE_ENV)
        .env_remove("RUST_LOG")
        .args(args)
        .timeout(std::time::Duration::from_secs(180))
        .output()
        .expect("run blue-green")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {}\nstderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The result line of `--json COMMAND` (the last line on stdout).
fn result(app: &DemoApp, command: &str) -> Value {
    let out = run(app, &["--json", command]);
    assert_exit(&out, 0, command);
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().expect("a result line on stdout");
    serde_json::from_str(last).expect("the result line is JSON")
}

async fn containers(app: &DemoApp) -> Vec<String> {
    let mut names: Vec<String> = containers_with_prefix(app.cleanup.docker(), app.cleanup.prefix())
        .await
        .into_keys()
        .collect();
    names.sort();
    names
}

/// `[runtime]` keys go right after `container_port`, before `[health]`.
fn write_with_runtime_keys(app: &DemoApp, keys: &str, extra: &str) {
    let path = app.write_config(extra);
    let config = std::fs::read_to_string(&path).unwrap();
    let config = config.replacen(
        "container_port = 8080\n",
        &format!("container_port = 8080\nenv = {{ GREETING = \"hello\" }}\n{keys}\n"),
        1,
    );
    std::fs::write(&path, config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_command_runs_once_in_the_new_release_after_the_pre_deploy_hook() {
    let app = DemoApp::new("release-cli-ok").await;
    write_with_runtime_keys(
        &app,
        r#"release_command = ["--print-env", "BLUE_GREEN_COLOR", "BLUE_GREEN_RELEASE", "BLUE_GREEN_PREVIOUS_RELEASE", "GREETING"]
release_timeout = "1m""#,
        "\n[hooks]\npre_deploy = { command = [\"sh\", \"-c\", \"echo backup taken\"] }\n",
    );
    assert_exit(
        &run(&app, &["deploy", "--release", "v1"]),
        0,
        "first deploy",
    );
    let out = run(&app, &["deploy", "--release", "v2"]);
    assert_exit(&out, 0, "second deploy");
    let progress = text(&out.stderr);
    let status = format!(
        "pre_deploy hook exited with code 0, then ran the release command `--print-env BLUE_GREEN_COLOR BLUE_GREEN_RELEASE BLUE_GREEN_PREVIOUS_RELEASE GREETING` in a one-off container of image `{}`, which exited with code 0",
        app.image
    );
    assert!(progress.contains(&status), "{progress}");
    // The hook's output, then the command's, folded under the step.
    let shown: Vec<&str> = progress
        .lines()
        .filter_map(|l| l.trim().strip_prefix("| "))
        .collect();
    let at = shown
        .iter()
        .position(|l| *l == "backup taken")
        .unwrap_or_else(|| panic!("the hook's output: {progress}"));
    assert_eq!(
        shown[at + 1..at + 5],
        [
            "BLUE_GREEN_COLOR=green",
            "BLUE_GREEN_RELEASE=v2",
            "BLUE_GREEN_PREVIOUS_RELEASE=v1",
            "GREETING=hello"
        ],
        "{progress}"
    );
    assert_eq!(
        progress.matches("BLUE_GREEN_RELEASE=v2").count(),
        1,
        "ran once: {progress}"
    );

    let history = result(&app, "history")["history"].clone();
    let last = history.as_array().and_then(|h| h.last()).expect("a line");
    let hook = &last["hooks"][0];
    assert_eq!(hook["hook"], "pre_deploy", "{last}");
    assert_eq!(hook["success"], true, "{last}");
    assert!(
        hook["status"]
            .as_str()
            .is_some_and(|s| s.contains("then ran the release command")),
        "{last}"
    );
    let prefix = app.cleanup.prefix();
    assert_eq!(
        containers(&app).await,
        [format!("{prefix}-blue"), format!("{prefix}-green")],
        "the one-off containers are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_release_command_fails_the_deploy_and_changes_nothing_serving() {
    let app = DemoApp::new("release-cli-fail").await;
    app.write_config("");
    assert_exit(
        &run(&app, &["deploy", "--release", "v1"]),
        0,
        "first deploy",
    );
    let before = containers(&app).await;

    write_with_runtime_keys(
        &app,
        r#"release_command = ["--exit", "3", "migration 7 failed: column users.email already exists"]"#,
        "",
    );
    let out = run(&app, &["deploy", "--release", "v2"]);
    assert_exit(&out, 1, "deploy with a failing release command");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pre_deploy hook ran the release command `--exit 3")
            && stderr.contains("which exited with code 3")
            && stderr.contains("migration 7 failed: column users.email already exists"),
        "{stderr}"
    );
    let status = result(&app, "status")["status"].clone();
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(status["deployment"]["release"]["id"], "v1", "{status}");
    assert_eq!(
        containers(&app).await,
        before,
        "nothing else runs or is left"
    );

    // The release's image cannot be had: the deploy fails naming it, before anything starts.
    let missing = "127.0.0.1:9/app:1";
    let out = run(&app, &["deploy", "--release", "v3", "--image", missing]);
    assert_exit(&out, 1, "deploy of an image that cannot be pulled");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the release command `--exit 3")
            && stderr.contains(&format!("image `{missing}`")),
        "{stderr}"
    );
    assert_eq!(result(&app, "status")["status"]["live"], "blue");
    assert_eq!(containers(&app).await, before);
}

fn config_error(runtime: &str) -> (i32, String) {
    let dir = tempfile::Builder::new()
        .prefix("bg-release-cfg-")
        .tempdir()
        .expect("temp dir");
    let text = format!("app = \"web\"\n\n[runtime]\n{runtime}\n\n[router]\nkind = \"none\"\n");
    let path: &Path = &dir.path().join("blue-green.toml");
    std::fs::write(path, text).unwrap();
    let out = Command::cargo_bin("blue-green")
        .unwrap()
        .current_dir(dir.path())
        .env_remove("BLUE_GREEN_CONFIG")
        .args(["validate", "--config-only"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn release_command_config_errors_name_the_key_and_line() {
    let docker = "kind = \"docker\"\nimage = \"web:1\"\ncontainer_port = 8080";
    let (code, err) = config_error(&format!(
        "{docker}\nrelease_command = [\"./migrate\", \"up\"]\nrelease_timeout = \"10m\""
    ));
    assert_eq!(code, 0, "{err}");

    let (code, err) = config_error(&format!("{docker}\nrelease_command = []"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 7") && err.contains("runtime.release_command"),
        "{err}"
    );

    let (code, err) = config_error(&format!(
        "{docker}\nrelease_command = [\"./migrate\"]\nrelease_timeout = \"a while\""
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 8")
            && err.contains("runtime.release_timeout")
            && err.contains("a while"),
        "{err}"
    );

    let (code, err) = config_error(&format!("{docker}\nrelease_timeout = \"5m\""));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("runtime.release_timeout")
            && err.contains("`release_command`, which is not set"),
        "{err}"
    );

    let (code, err) = config_error(
        "kind = \"swarm\"\nimage = \"web:1\"\ncontainer_port = 8080\npublished_ports = { blue = 8081, green = 8082 }\nrelease_command = [\"./migrate\"]",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 8")
            && err.contains("runtime.release_command")
            && err.contains("only applies to kind = \"docker\" or \"compose\""),
        "{err}"
    );
}

/// One compose file for both colors, the image from `--image`.
const COMPOSE_FILE: &str = r#"services:
  api:
    image: ${BLUE_GREEN_IMAGE}
    environment:
      BLUE_GREEN_COLOR: ${BLUE_GREEN_COLOR}
      BLUE_GREEN_RELEASE: ${BLUE_GREEN_RELEASE}
      GREETING: from-compose
    ports:
      - "127.0.0.1::8080"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_runs_the_release_command_with_compose_run_v1() {
    compose_release_command("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_runs_the_release_command_with_compose_run_v2() {
    compose_release_command("v2").await;
}

async fn compose_release_command(tool: &str) {
    let app = DemoApp::new(&format!("release-cli-compose-{tool}")).await;
    let prefix = app.cleanup.prefix().to_string();
    std::fs::write(app.dir.path().join("docker-compose.yml"), COMPOSE_FILE).unwrap();
    let config = format!(
        r#"app = "{prefix}"
state_dir = "state"

[runtime]
kind = "compose"
tool = "{tool}"
file = "docker-compose.yml"
service = "api"
container_port = 8080
release_command = ["--print-env", "BLUE_GREEN_COLOR", "BLUE_GREEN_RELEASE", "GREETING"]

[health]
path = "/health"
expect_body = "{{color}} {{release}}"
interval = "100ms"
deadline = "60s"

[router]
kind = "none"
"#
    );
    std::fs::write(app.dir.path().join("blue-green.toml"), config).unwrap();
    let out = run(&app, &["deploy", "--release", "v1", "--image", &app.image]);
    assert_exit(&out, 0, "deploy");
    let progress = text(&out.stderr);
    assert!(
        progress.contains(&format!(
            "pre_deploy hook ran the release command `--print-env BLUE_GREEN_COLOR BLUE_GREEN_RELEASE GREETING` in a one-off container of service `api` (compose project {prefix}-blue), which exited with code 0"
        )),
        "{progress}"
    );
    for line in [
        "| BLUE_GREEN_COLOR=blue",
        "| BLUE_GREEN_RELEASE=v1",
        "| GREETING=from-compose",
    ] {
        assert_eq!(progress.matches(line).count(), 1, "{line}: {progress}");
    }
    let status = result(&app, "status")["status"].clone();
    assert_eq!(status["live"], "blue", "{status}");
    let left = containers(&app).await;
    assert!(
        left == [format!("{prefix}-blue-api-1")] || left == [format!("{prefix}-blue_api_1")],
        "blue's service container only, no one-off: {left:?}"
    );
}
