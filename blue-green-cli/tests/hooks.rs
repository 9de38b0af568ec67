//! Deploy hooks through the real `blue-green` binary, against the real Docker engine (the
//! demo app in an image built here, the `none` router): the `BLUE_GREEN_*` environment a hook
//! gets, its output in the progress and its outcome in the history, a failing `pre_switch`
//! hook (exit 1, blue serving as before, green removed, `on_failure` run), a failing
//! `post_switch` hook routed back with `rollback_on_post_switch_failure`, and the config
//! errors of `[hooks]`. Needs Docker; fails with a clear message when it is missing. Every
//! container and image carries the test's prefix and is removed on drop.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use blue_green_testkit::docker::containers_with_prefix;

mod common;
use common::DemoApp;
use serde_json::Value;

/// A smoke test against the new color's own endpoint, as a `pre_switch` hook would run one.
/// (busybox's wget: scripts/test installs busybox-static for the test images.)
const SMOKE: &str = r#"busybox wget -qO- "http://$BLUE_GREEN_ENDPOINT/health""#;

/// Appends what a hook was told to `hooks.log` beside the config.
fn logging(point: &str) -> String {
    format!(
        r#"echo "{point} $BLUE_GREEN_APP $BLUE_GREEN_COLOR $BLUE_GREEN_RELEASE [$BLUE_GREEN_ENDPOINT] [$BLUE_GREEN_PREVIOUS_COLOR] [$BLUE_GREEN_PREVIOUS_RELEASE]" >> hooks.log"#
    )
}

struct Project {
    app: DemoApp,
}

impl Project {
    async fn new(name: &str) -> Project {
        Project {
            app: DemoApp::new(name).await,
        }
    }

    /// Writes the config with `extra` (the `[switch]` and `[hooks]` tables) appended.
    fn write(&self, extra: &str) -> PathBuf {
        self.app.write_config(extra)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::cargo_bin("blue-green")
            .expect("binary")
            .current_dir(self.app.dir.path())
            .env_remove("BLUE_GREEN_CONFIG")
            .env_remove(blue_green_cli::test_hooks::PAUSE_ENV)
            .env_remove("RUST_LOG")
            .args(args)
            .timeout(std::time::Duration::from_secs(180))
            .output()
            .expect("run blue-green")
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.app.dir.path().join("hooks.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The result line of `--json COMMAND` (the last line on stdout).
    fn result(&self, command: &str) -> Value {
        let out = self.run(&["--json", command]);
        assert!(out.status.success(), "{command}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let last = stdout.lines().last().expect("a result line on stdout");
        serde_json::from_str(last).expect("the result line is JSON")
    }

    fn status(&self) -> Value {
        self.result("status")["status"].clone()
    }

    async fn containers(&self) -> Vec<String> {
        let mut names: Vec<String> =
            containers_with_prefix(self.app.cleanup.docker(), self.app.cleanup.prefix())
                .await
                .into_keys()
                .collect();
        names.sort();
        names
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn toml_argv(script: &str) -> String {
    format!("[\"sh\", \"-c\", {script:?}]")
}

fn hooks_table(entries: &[(&str, String)]) -> String {
    let mut t = String::from("\n[hooks]\n");
    for (point, script) in entries {
        t.push_str(&format!(
            "{point} = {{ command = {}, timeout = \"30s\" }}\n",
            toml_argv(script)
        ));
    }
    t
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_see_the_deploy_and_their_output_and_outcome_are_kept() {
    let p = Project::new("hooks-env").await;
    let app = p.app.cleanup.prefix().to_string();
    p.write(&hooks_table(&[
        (
            "pre_deploy",
            format!("{}; echo migrating; echo migrated", logging("pre_deploy")),
        ),
        ("pre_switch", format!("{}; {SMOKE}", logging("pre_switch"))),
        ("post_switch", logging("post_switch")),
        ("post_deploy", logging("post_deploy")),
        ("on_failure", logging("on_failure")),
    ]));
    let out = p.run(&["deploy", "--release", "v1"]);
    assert_exit(&out, 0, "first deploy");
    let out = p.run(&["deploy", "--release", "v2"]);
    assert_exit(&out, 0, "second deploy");
    let progress = text(&out.stderr);
    assert!(
        progress.contains("pre_deploy hook exited with code 0")
            && progress.contains("| migrating")
            && progress.contains("| migrated"),
        "the hook's output is in the progress: {progress}"
    );
    // The smoke test's answer came from green itself, before the switch.
    assert!(
        progress.contains("| green v2"),
        "pre_switch output: {progress}"
    );

    let log = p.log();
    let v2: Vec<&String> = log.iter().skip(4).collect();
    assert_eq!(log.len(), 8, "{log:?}");
    assert_eq!(
        log[0],
        format!("pre_deploy {app} blue v1 [] [] []"),
        "the first deploy has nothing before it"
    );
    assert!(v2[0].starts_with(&format!("pre_deploy {app} green v2 [] [blue] [v1]")));
    for (line, point) in v2
        .iter()
        .zip(["pre_deploy", "pre_switch", "post_switch", "post_deploy"])
    {
        assert!(line.starts_with(point), "{log:?}");
    }
    let live = &p.status()["deployment"]["endpoint"];
    let endpoint = format!(
        "{}:{}",
        live["host"].as_str().expect("the live host"),
        live["port"]
    );
    assert_eq!(
        *v2[1],
        format!("pre_switch {app} green v2 [{endpoint}] [blue] [v1]")
    );

    let history = p.result("history")["history"].clone();
    let last = history.as_array().and_then(|h| h.last()).expect("a line");
    let hooks: Vec<(String, bool)> = last["hooks"]
        .as_array()
        .expect("hooks in the history")
        .iter()
        .map(|h| {
            (
                h["hook"].as_str().unwrap().to_string(),
                h["success"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hooks,
        [
            ("pre_deploy".to_string(), true),
            ("pre_switch".to_string(), true),
            ("post_switch".to_string(), true),
            ("post_deploy".to_string(), true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_switch_hook_fails_the_deploy_and_leaves_blue_serving() {
    let p = Project::new("hooks-pre").await;
    p.write(&hooks_table(&[
        (
            "pre_switch",
            r#"if [ "$BLUE_GREEN_RELEASE" = v2 ]; then echo "smoke test: /checkout answered 500" >&2; exit 4; fi"#
                .to_string(),
        ),
        ("on_failure", logging("on_failure")),
    ]));
    assert_exit(&p.run(&["deploy", "--release", "v1"]), 0, "first deploy");
    let before = p.containers().await;
    let out = p.run(&["deploy", "--release", "v2"]);
    assert_exit(&out, 1, "deploy with a failing pre_switch hook");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pre_switch hook exited with code 4")
            && stderr.contains("smoke test: /checkout answered 500"),
        "{stderr}"
    );
    let status = p.status();
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(status["deployment"]["release"]["id"], "v1", "{status}");
    assert_eq!(p.containers().await, before, "green was removed");
    let log = p.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("on_failure"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_switch_hook_routes_back_when_asked() {
    let p = Project::new("hooks-post").await;
    p.write(&format!(
        "\n[switch]\nrollback_on_post_switch_failure = true\n{}",
        hooks_table(&[(
            "post_switch",
            r#"[ "$BLUE_GREEN_RELEASE" != v2 ] || { echo "error rate too high"; exit 1; }"#
                .to_string()
        )])
    ));
    assert_exit(&p.run(&["deploy", "--release", "v1"]), 0, "first deploy");
    let out = p.run(&["deploy", "--release", "v2"]);
    assert_exit(&out, 1, "deploy with a failing post_switch hook");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("post_switch hook exited with code 1")
            && stderr.contains("error rate too high"),
        "{stderr}"
    );
    assert!(
        stderr.contains("live traffic now goes to blue")
            && stderr.contains("live traffic went back to the old color"),
        "routed back: {stderr}"
    );
    let status = p.status();
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(status["deployment"]["release"]["id"], "v1");
    let running: Vec<&Value> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"]["state"] == "running")
        .collect();
    assert_eq!(running.len(), 1, "only blue runs: {status}");
}

fn config_error(extra: &str) -> (i32, String) {
    let dir = tempfile::Builder::new()
        .prefix("bg-hooks-cfg-")
        .tempdir()
        .expect("temp dir");
    let text = format!(
        "app = \"web\"\n\n[runtime]\nkind = \"docker\"\nimage = \"web:1\"\ncontainer_port = 8080\n\n[router]\nkind = \"none\"\n{extra}"
    );
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
fn hook_config_errors_name_the_key_and_line() {
    let (code, err) = config_error("\n[hooks]\npre_deploy = { command = [] }\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 12") && err.contains("hooks.pre_deploy.command"),
        "{err}"
    );

    let (code, err) =
        config_error("\n[hooks]\npre_switch = { command = [\"./smoke\"], timeout = \"soon\" }\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("hooks.pre_switch.timeout") && err.contains("soon"),
        "{err}"
    );

    let (code, err) = config_error("\n[hooks]\npre_launch = { command = [\"x\"] }\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pre_launch"), "{err}");

    let (code, err) = config_error("\n[switch]\nrollback_on_post_switch_failure = \"yes\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rollback_on_post_switch_failure"), "{err}");
}

#[test]
fn watch_config_errors_name_the_key_and_line() {
    let (code, err) = config_error("\n[switch]\nwatch = \"two minutes\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 12") && err.contains("switch.watch") && err.contains("two minutes"),
        "{err}"
    );
    let (code, err) = config_error("\n[switch]\nwatch = \"2m\"\nwatch_failures = 0\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 13") && err.contains("switch.watch_failures"),
        "{err}"
    );
    let (code, err) = config_error("\n[switch]\nwatch = \"2m\"\nwatch_failures = 3\n");
    assert_eq!(code, 0, "{err}");
}
