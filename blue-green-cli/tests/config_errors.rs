//! Malformed and dangerous config files: each one is refused with exit code 2, a message that
//! names the file, the key and the line, and nothing is started or written (no state directory,
//! no upstream file). Docker is pointed at a missing socket, so that a config wrongly accepted
//! could not start anything either (it would exit 4, failing the test).

use std::path::Path;

use assert_cmd::Command;

/// A valid compose + nginx config; the cases below change one line of it.
const BASE: &str = r#"app = "web"

[runtime]
kind = "compose"
files = { blue = "blue.yml", green = "green.yml" }
service = "web"

[endpoints]
blue = "127.0.0.1:8081"
green = "127.0.0.1:8082"

[health]
kind = "http"
path = "/health"
interval = "200ms"
deadline = "30s"

[router]
kind = "nginx"
upstream = "web"
upstream_file = "nginx/web-upstream.conf"
test_command = ["true"]
reload_command = ["true"]

[switch]
drain = "1s"
keep_previous = "stopped"
"#;

/// `BASE` with line `n` (1-based) replaced by `text` (which may hold several lines).
fn replace(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines[n - 1] = text;
    lines.join("\n") + "\n"
}

/// `BASE` with `text` inserted after line `n`.
fn insert_after(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines.insert(n, text);
    lines.join("\n") + "\n"
}

/// A project directory with the compose files the base config names.
fn project(config: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bg-cli-config-")
        .tempdir()
        .expect("temp dir");
    std::fs::write(dir.path().join("blue.yml"), "services: {}\n").expect("write");
    std::fs::write(dir.path().join("green.yml"), "services: {}\n").expect("write");
    std::fs::write(dir.path().join("blue-green.toml"), config).expect("write");
    dir
}

fn blue_green(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("blue-green").expect("binary");
    cmd.current_dir(dir)
        .env("DOCKER_HOST", "unix:///nonexistent-blue-green-test.sock")
        .env_remove("BLUE_GREEN_CONFIG")
        .env_remove("BLUE_GREEN_TEST_PAUSE_AT");
    cmd
}

/// Runs `deploy` and `validate` on `config`; both must exit 2 naming `key` and `line`, and leave
/// nothing behind.
fn refused(config: &str, key: &str, line: usize) {
    let dir = project(config);
    for args in [&["deploy", "--release", "t1"][..], &["validate"][..]] {
        let out = blue_green(dir.path()).args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "`{}` should exit 2 for key {key}; stderr:\n{stderr}\nconfig:\n{config}",
            args.join(" ")
        );
        assert!(
            stderr.contains("blue-green.toml"),
            "the message should name the file:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("key `{key}`")),
            "the message should name key `{key}`:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("line {line}")),
            "the message should name line {line} for key `{key}`:\n{stderr}"
        );
        assert!(
            !dir.path().join(".blue-green").exists(),
            "a refused config must not create the state directory"
        );
        assert!(
            !dir.path().join("nginx").exists(),
            "a refused config must not write the upstream file"
        );
    }
}

#[test]
fn the_base_config_is_valid() {
    let dir = project(BASE);
    blue_green(dir.path())
        .args(["validate", "--config-only"])
        .assert()
        .code(0);
    assert!(!dir.path().join(".blue-green").exists());
}

#[test]
fn unknown_top_level_key() {
    refused(&insert_after(1, r#"colour = "blue""#), "colour", 2);
}

#[test]
fn unknown_key_in_a_table() {
    refused(&insert_after(16, "retries = 3"), "health.retries", 17);
}

#[test]
fn wrong_type() {
    refused(&replace(6, "service = 3"), "runtime.service", 6);
}

#[test]
fn wrong_type_inside_an_inline_table() {
    refused(
        &replace(5, r#"files = { blue = 1, green = "green.yml" }"#),
        "runtime.files.blue",
        5,
    );
}

#[test]
fn bad_duration() {
    refused(&replace(15, r#"interval = "fast""#), "health.interval", 15);
}

#[test]
fn zero_interval() {
    refused(&replace(15, r#"interval = "0s""#), "health.interval", 15);
}

#[test]
fn empty_app_name() {
    refused(&replace(1, r#"app = """#), "app", 1);
}

#[test]
fn app_name_with_a_slash() {
    refused(&replace(1, r#"app = "web/../etc""#), "app", 1);
}

#[test]
fn app_name_with_a_semicolon() {
    refused(&replace(1, r#"app = "web;rm -rf""#), "app", 1);
}

#[test]
fn app_name_in_capitals() {
    refused(&replace(1, r#"app = "Web""#), "app", 1);
}

#[test]
fn port_out_of_range() {
    refused(
        &replace(10, r#"green = "127.0.0.1:70000""#),
        "endpoints.green",
        10,
    );
}

#[test]
fn port_zero() {
    refused(&replace(9, r#"blue = "127.0.0.1:0""#), "endpoints.blue", 9);
}

#[test]
fn endpoint_without_a_port() {
    refused(&replace(9, r#"blue = "localhost""#), "endpoints.blue", 9);
}

#[test]
fn both_colors_on_one_endpoint() {
    refused(
        &replace(10, r#"green = "127.0.0.1:8081""#),
        "endpoints.green",
        10,
    );
}

#[test]
fn missing_compose_file() {
    refused(
        &replace(5, r#"files = { blue = "nope.yml", green = "green.yml" }"#),
        "runtime.files.blue",
        5,
    );
}

#[test]
fn both_file_and_files() {
    refused(&insert_after(5, r#"file = "blue.yml""#), "runtime.files", 5);
}

#[test]
fn missing_required_key_for_the_runtime_kind() {
    refused(&replace(6, ""), "runtime.service", 3);
}

#[test]
fn docker_key_in_a_compose_runtime() {
    refused(&insert_after(6, r#"image = "web:1""#), "runtime.image", 7);
}

#[test]
fn container_port_out_of_range() {
    refused(
        &insert_after(6, "container_port = 70000"),
        "runtime.container_port",
        7,
    );
}

#[test]
fn reserved_environment_variable() {
    refused(
        &insert_after(6, r#"env = { BLUE_GREEN_COLOR = "red" }"#),
        "runtime.env.BLUE_GREEN_COLOR",
        7,
    );
}

#[test]
fn compose_project_without_color() {
    refused(
        &insert_after(6, r#"project = "{app}""#),
        "runtime.project",
        7,
    );
}

#[test]
fn unknown_runtime_kind() {
    refused(&replace(4, r#"kind = "kubernetes""#), "runtime.kind", 4);
}

#[test]
fn unknown_health_kind() {
    refused(&replace(13, r#"kind = "grpc""#), "health.kind", 13);
}

#[test]
fn exec_health_without_a_command() {
    refused(
        &replace(13, r#"kind = "exec""#).replace("path = \"/health\"\n", ""),
        "health.command",
        13,
    );
}

#[test]
fn health_path_without_a_slash() {
    refused(&replace(14, r#"path = "health check""#), "health.path", 14);
}

#[test]
fn status_code_out_of_range() {
    refused(
        &insert_after(14, "expect_status = 999"),
        "health.expect_status",
        15,
    );
}

#[test]
fn unknown_placeholder() {
    refused(
        &insert_after(14, r#"expect_body = "{colour}""#),
        "health.expect_body",
        15,
    );
}

#[test]
fn header_value_with_a_line_break() {
    refused(
        &insert_after(14, r#"headers = { X-Probe = "a\r\nHost: evil" }"#),
        "health.headers.X-Probe",
        15,
    );
}

#[test]
fn command_health_with_an_empty_command() {
    refused(
        &replace(13, "kind = \"command\"\ncommand = []").replace("path = \"/health\"\n", ""),
        "health.command",
        14,
    );
}

#[test]
fn healthy_threshold_zero() {
    refused(
        &insert_after(16, "healthy_threshold = 0"),
        "health.healthy_threshold",
        17,
    );
}

#[test]
fn unknown_router_kind() {
    refused(&replace(19, r#"kind = "traefik""#), "router.kind", 19);
}

#[test]
fn nginx_upstream_with_a_semicolon() {
    refused(
        &replace(20, r#"upstream = "web; server 10.0.0.1:80""#),
        "router.upstream",
        20,
    );
}

#[test]
fn nginx_upstream_with_a_brace() {
    refused(
        &replace(20, r#"upstream = "web} server {""#),
        "router.upstream",
        20,
    );
}

#[test]
fn nginx_server_option_with_a_semicolon() {
    refused(
        &insert_after(21, r#"server_options = ["max_fails=0;"]"#),
        "router.server_options",
        22,
    );
}

#[test]
fn nginx_directive_that_adds_another() {
    refused(
        &insert_after(
            21,
            r#"upstream_directives = ["keepalive 16; include /etc/passwd"]"#,
        ),
        "router.upstream_directives",
        22,
    );
}

#[test]
fn empty_reload_command() {
    refused(
        &replace(23, "reload_command = []"),
        "router.reload_command",
        23,
    );
}

#[test]
fn reload_command_as_a_shell_string() {
    refused(
        &replace(23, r#"reload_command = "nginx -s reload""#),
        "router.reload_command",
        23,
    );
}

#[test]
fn verify_url_that_is_not_http() {
    refused(
        &insert_after(21, r#"verify_url = "file:///etc/passwd""#),
        "router.verify_url",
        22,
    );
}

// The next four passed the CLI's own patterns once and were refused only when the router was
// built, against the whole `[router]` table: now the router's config type is the one check, and
// each names its own key and line.

#[test]
fn verify_url_over_https() {
    refused(
        &insert_after(21, r#"verify_url = "https://127.0.0.1/health""#),
        "router.verify_url",
        22,
    );
}

#[test]
fn nginx_server_option_with_a_word_for_a_number() {
    refused(
        &insert_after(21, r#"server_options = ["max_fails=a_b"]"#),
        "router.server_options",
        22,
    );
}

#[test]
fn nginx_zone_directive_with_an_equals_sign() {
    refused(
        &insert_after(21, r#"upstream_directives = ["zone a=b"]"#),
        "router.upstream_directives",
        22,
    );
}

#[test]
fn nginx_hash_directive() {
    refused(
        &insert_after(21, r#"upstream_directives = ["hash x"]"#),
        "router.upstream_directives",
        22,
    );
}

#[test]
fn every_router_problem_is_reported_at_once_on_its_own_line() {
    let config = insert_after(
        21,
        r#"verify_url = "https://127.0.0.1/health"
server_options = ["max_fails=a_b"]
upstream_directives = [
    "keepalive 16",
    "zone a=b",
    "hash x",
]
command_timeout = "0s""#,
    );
    let dir = project(&config);
    let out = blue_green(dir.path())
        .arg("validate")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("5 problems"), "{stderr}");
    for (line, key, says) in [
        (22, "router.verify_url", "must start with http://"),
        (23, "router.server_options", "`max_fails=a_b`"),
        (26, "router.upstream_directives", "`zone a=b`"),
        (27, "router.upstream_directives", "`hash x`"),
        (29, "router.command_timeout", "more than zero"),
    ] {
        let wanted = format!("line {line}, key `{key}`: ");
        let problem = stderr
            .lines()
            .find(|l| l.contains(&wanted))
            .unwrap_or_else(|| panic!("no problem at {wanted}:\n{stderr}"));
        assert!(problem.contains(says), "{problem}");
    }
    assert!(
        !stderr.contains("key `router`:"),
        "no problem may fall back to the whole table:\n{stderr}"
    );
}

#[test]
fn verify_url_with_a_password_is_refused_and_never_shown() {
    let secret = "s3cret-Pa55";
    let config = insert_after(
        21,
        &format!(r#"verify_url = "http://deployer:{secret}@127.0.0.1/health""#),
    );
    refused(&config, "router.verify_url", 22);
    let dir = project(&config);
    let runs: [&[&str]; 5] = [
        &["validate"],
        &["-v", "validate"],
        &["--json", "validate"],
        &["-v", "deploy", "--release", "t1"],
        &["--json", "deploy", "--release", "t1"],
    ];
    for args in runs {
        let out = blue_green(dir.path()).args(args).output().expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let said = format!("{stdout}{stderr}");
        assert!(
            said.contains("router.verify_url") && said.contains("user name or password"),
            "{args:?} should name the key and say why:\n{said}"
        );
        assert!(
            !said.contains(secret) && !said.contains("deployer"),
            "{args:?} shows the user name or password:\n{said}"
        );
    }
    assert!(!dir.path().join(".blue-green").exists());
}

#[test]
fn unknown_keep_previous() {
    refused(
        &replace(27, r#"keep_previous = "forever""#),
        "switch.keep_previous",
        27,
    );
}

#[test]
fn syntax_error() {
    refused(&replace(3, "[runtime"), "runtime", 3);
}

#[test]
fn missing_router_table() {
    let config: String = BASE
        .lines()
        .enumerate()
        .filter(|(i, _)| !(17..=22).contains(i))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    refused(&config, "router", 1);
}

#[test]
fn every_problem_is_reported_at_once() {
    let config = replace(1, r#"app = "a;b""#).replace(r#"interval = "200ms""#, r#"interval = "x""#);
    let dir = project(&config);
    let out = blue_green(dir.path())
        .arg("validate")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains("key `app`") && stderr.contains("key `health.interval`"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_a_usage_error() {
    let dir = project(BASE);
    let out = blue_green(dir.path())
        .args(["-c", "nope.toml", "status"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
    assert!(!dir.path().join(".blue-green").exists());
}

#[test]
fn config_errors_in_json_name_key_and_line() {
    let dir = project(&replace(15, r#"interval = "fast""#));
    let out = blue_green(dir.path())
        .args(["--json", "validate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a result line");
    let v: serde_json::Value = serde_json::from_str(last).expect("json");
    assert_eq!(v["event"], "result");
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 2);
    assert_eq!(v["problems"][0]["key"], "health.interval");
    assert_eq!(v["problems"][0]["line"], 15);
}
