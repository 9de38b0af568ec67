//! The gradual shift on the command line: `--steps` and `[switch] steps` are checked before
//! anything starts (exit 2, naming the flag or the key and line), and a router that cannot
//! split traffic (here the `none` router) is refused by name before anything starts. The
//! shift itself runs against the engine's fakes (blue-green-core/tests/engine_shift.rs) and,
//! with real routers, in blue-green-router's tests. Needs a Docker engine only to get past
//! connecting: nothing is started.

use std::path::Path;

use assert_cmd::Command;

/// A docker runtime (its image is never built: nothing may start) and the `none` router.
const CONFIG: &str = r#"app = "shifttest"

[runtime]
kind = "docker"
image = "blue-green-cli-test-never-built:1"
container_port = 8080

[endpoints]
blue = "127.0.0.1:18091"
green = "127.0.0.1:18092"

[health]
kind = "tcp"
deadline = "2s"

[router]
kind = "none"
"#;

fn project(switch: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bg-cli-shift-")
        .tempdir()
        .expect("temp dir");
    std::fs::write(
        dir.path().join("blue-green.toml"),
        format!("{CONFIG}\n[switch]\n{switch}\n"),
    )
    .expect("write config");
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

/// Runs `args`; it must exit 2 with `says` in its error, and leave no history behind.
fn refused(dir: &Path, args: &[&str], says: &[&str]) {
    let out = blue_green(dir).args(args).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "`blue-green {}` should exit 2:\n{stderr}",
        args.join(" ")
    );
    for word in says {
        assert!(
            stderr.contains(word),
            "`blue-green {}` should say {word:?}:\n{stderr}",
            args.join(" ")
        );
    }
    assert!(
        !dir.join(".blue-green").join("history.jsonl").exists(),
        "a refused command leaves no history"
    );
}

#[test]
fn steps_with_a_router_that_cannot_split_are_refused_naming_the_router() {
    // From the config file.
    let dir = project("steps = [10, 50, 100]");
    refused(
        dir.path(),
        &["deploy", "--release", "v1"],
        &[
            "none router cannot",
            "deploy without steps",
            "10%, 50%, 100%",
        ],
    );
    refused(dir.path(), &["promote"], &["none router cannot"]);
    // `validate` says so among its environment checks.
    let out = blue_green(dir.path())
        .arg("validate")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the none router cannot"), "{stderr}");
    // From the command line, over a config without steps.
    let dir = project("drain = \"1s\"");
    refused(
        dir.path(),
        &["deploy", "--release", "v1", "--steps", "25,100"],
        &["none router cannot", "--steps"],
    );
    refused(
        dir.path(),
        &["promote", "--steps", "25,100"],
        &["none router cannot"],
    );
    // Without steps, the same config deploys as far as its (missing) image: not refused as
    // usage. That is exit 1 or 4, whichever Docker says about the image.
    let out = blue_green(dir.path())
        .args(["deploy", "--release", "v1"])
        .output()
        .expect("run");
    assert_ne!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_steps_on_the_command_line_are_usage_errors_that_say_what_to_write() {
    let dir = project("drain = \"1s\"");
    refused(
        dir.path(),
        &["deploy", "--steps", "50,10,100"],
        &["--steps", "strictly increase"],
    );
    refused(dir.path(), &["deploy", "--steps", "10,50"], &["end at 100"]);
    refused(
        dir.path(),
        &["deploy", "--steps", "10,half,100"],
        &["`half`", "10,50,100"],
    );
    refused(
        dir.path(),
        &["deploy", "--steps", "10,100", "--no-switch"],
        &["--no-switch"],
    );
}

#[test]
fn bad_switch_keys_name_their_key_and_line() {
    // [switch] is on line 19 of the file, the key on line 20.
    for (line, key, says) in [
        ("steps = [10, 50]", "switch.steps", "end at 100"),
        ("step_wait = \"0s\"", "switch.step_wait", "longer than zero"),
        (
            "watch_max_error_rate = 2.0",
            "switch.watch_max_error_rate",
            "from 0.0 to 1.0",
        ),
        (
            "watch_min_requests = -3",
            "switch.watch_min_requests",
            "at least 1",
        ),
    ] {
        let dir = project(line);
        refused(
            dir.path(),
            &["validate", "--config-only"],
            &[&format!("key `{key}`"), "line 20", says],
        );
    }
    let dir = project("steps = [10, 50, 100]\nstep_wait = \"1m\"\nwatch_max_error_rate = 0.05\nwatch_min_requests = 30");
    let out = blue_green(dir.path())
        .args(["validate", "--config-only"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
