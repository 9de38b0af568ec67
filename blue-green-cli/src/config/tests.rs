use super::*;

#[test]
fn header_at_finds_the_enclosing_table() {
    let text = "app = \"x\"\n[runtime]\nkind = \"docker\"\n\n[router.extra]\nk = 1\n";
    assert_eq!(header_at(text, 0), Vec::<String>::new());
    let kind = text.find("kind").unwrap();
    assert_eq!(header_at(text, kind), vec!["runtime".to_string()]);
    let k = text.find("k = 1").unwrap();
    assert_eq!(
        header_at(text, k),
        vec!["router".to_string(), "extra".to_string()]
    );
}

#[test]
fn key_at_walks_into_inline_tables() {
    let text = "[runtime]\nfiles = { blue = 1, green = \"g\" }\n";
    let at = text.find('1').unwrap();
    assert_eq!(key_at(text, at).as_deref(), Some("runtime.files.blue"));
    let at = text.find("files").unwrap();
    assert_eq!(key_at(text, at).as_deref(), Some("runtime.files"));
}

#[test]
fn lines_are_one_based() {
    let text = "a\nb\nc";
    let newlines = newline_offsets(text);
    let src = Source {
        text,
        file: Path::new("x.toml"),
        newlines: &newlines,
    };
    assert_eq!(src.line(0), 1);
    assert_eq!(src.line(2), 2);
    assert_eq!(src.line(4), 3);
    assert_eq!(src.line(99), 3);
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yml"), "").unwrap();
    let text = r#"
app = "web"
[runtime]
kind = "compose"
file = "c.yml"
service = "web"
container_port = 8080
[router]
kind = "none"
"#;
    let config = parse(text, &dir.path().join("bg.toml"), dir.path()).unwrap();
    assert_eq!(config.state_dir, dir.path().join(".blue-green"));
    match &config.runtime {
        RuntimeConfig::Compose(c) => {
            assert_eq!(
                c.files,
                blue_green_docker::ComposeFiles::Shared(dir.path().join("c.yml"))
            );
            assert_eq!(c.project, "{app}-{color}");
        }
        other => panic!("expected compose, got {other:?}"),
    }
    match &config.router {
        RouterConfig::None { target_file } => {
            assert_eq!(target_file, &dir.path().join(".blue-green/router-target"));
        }
        other => panic!("expected none, got {other:?}"),
    }
}

#[test]
fn durations_and_policies_reach_the_engine_config() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
app = "web"
state_dir = "/var/lib/bg/{app}"
[runtime]
kind = "docker"
image = "web:1"
container_port = 8080
[health]
kind = "tcp"
interval = "250ms"
timeout = "1s"
initial_delay = "2s"
healthy_threshold = 3
deadline = "2m"
[router]
kind = "nginx"
upstream = "{app}_up"
upstream_file = "/etc/nginx/conf.d/{app}.conf"
verify_url = "http://127.0.0.1/health"
[switch]
drain = "0s"
stop_timeout = "5s"
keep_previous = "running"
[timeouts]
start = "10m"
"#;
    let c = parse(text, &dir.path().join("bg.toml"), dir.path()).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/bg/web"));
    let r = &c.engine.readiness;
    assert_eq!(r.interval, std::time::Duration::from_millis(250));
    assert_eq!(r.initial_delay, std::time::Duration::from_secs(2));
    assert_eq!(r.healthy_threshold, 3);
    assert_eq!(r.deadline, std::time::Duration::from_secs(120));
    assert_eq!(c.engine.switch.drain, std::time::Duration::ZERO);
    assert_eq!(
        c.engine.switch.keep_previous,
        blue_green_core::KeepPrevious::Running
    );
    assert_eq!(c.engine.timeouts.start, std::time::Duration::from_secs(600));
    match &c.router {
        RouterConfig::Nginx(n) => {
            assert_eq!(n.upstream, "web_up");
            assert_eq!(n.upstream_file, PathBuf::from("/etc/nginx/conf.d/web.conf"));
            assert_eq!(n.test_command, vec!["nginx", "-t"]);
            assert_eq!(n.pid_file, None);
            let v = n.verify.as_ref().unwrap();
            assert_eq!(v.expect_body, "{color}");
        }
        other => panic!("expected nginx, got {other:?}"),
    }
}

#[test]
fn config_dir_is_filled_in_commands() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
app = "web"
[runtime]
kind = "docker"
image = "web:1"
container_port = 8080
[router]
kind = "nginx"
upstream = "web"
upstream_file = "nginx/upstream.conf"
test_command = ["nginx", "-p", "{config_dir}/nginx/", "-t"]
reload_command = ["nginx", "-s", "reload", "{\"json\": 1}"]
pid_file = "nginx/{app}.pid"
"#;
    let c = parse(text, &dir.path().join("bg.toml"), dir.path()).unwrap();
    let RouterConfig::Nginx(n) = &c.router else {
        panic!("expected nginx")
    };
    assert_eq!(
        n.test_command[2],
        format!("{}/nginx/", dir.path().display())
    );
    assert_eq!(n.reload_command[3], "{\"json\": 1}");
    assert_eq!(n.upstream_file, dir.path().join("nginx/upstream.conf"));
    assert_eq!(n.pid_file, Some(dir.path().join("nginx/web.pid")));
}

/// A docker + none-router config whose `[switch]` table is `switch`.
fn with_switch(switch: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"app = "web"
[runtime]
kind = "docker"
image = "web:1"
container_port = 8080
[router]
kind = "none"
[switch]
{switch}
"#
    );
    parse(&text, &dir.path().join("bg.toml"), dir.path())
}

#[test]
fn gradual_shift_and_error_rate_keys_reach_the_switch_policy() {
    let c = with_switch(
        "steps = [10, 50, 100]\nstep_wait = \"45s\"\nwatch_max_error_rate = 0.02\nwatch_min_requests = 50",
    )
    .unwrap();
    let s = &c.engine.switch;
    assert_eq!(s.steps.as_ref().unwrap().percents(), &[10, 50, 100]);
    assert_eq!(s.step_wait, std::time::Duration::from_secs(45));
    assert_eq!(
        s.watch_max_error_rate,
        Some(blue_green_core::ErrorRate::new(0.02).unwrap())
    );
    assert_eq!(s.watch_min_requests, 50);

    // Unset: no shift, a step wait of 30s, no share of errors, 20 responses.
    let d = with_switch("drain = \"1s\"").unwrap().engine.switch;
    assert_eq!(d.steps, None);
    assert_eq!(d.step_wait, std::time::Duration::from_secs(30));
    assert_eq!(d.watch_max_error_rate, None);
    assert_eq!(d.watch_min_requests, 20);
    // A whole number is a share too.
    let zero = with_switch("watch_max_error_rate = 0")
        .unwrap()
        .engine
        .switch;
    assert_eq!(
        zero.watch_max_error_rate,
        Some(blue_green_core::ErrorRate::new(0.0).unwrap())
    );
}

#[test]
fn bad_steps_and_rates_are_named_with_their_key_and_line() {
    let cases = [
        ("steps = [50, 10, 100]", "switch.steps", "strictly increase"),
        ("steps = [10, 50]", "switch.steps", "end at 100"),
        (
            "steps = [0, 100]",
            "switch.steps",
            "percentage from 1 to 100",
        ),
        ("steps = [10, 500]", "switch.steps", "500 is not a share"),
        ("steps = []", "switch.steps", "end at 100"),
        (
            "watch_max_error_rate = 1.5",
            "switch.watch_max_error_rate",
            "from 0.0 to 1.0",
        ),
        (
            "watch_min_requests = 0",
            "switch.watch_min_requests",
            "at least 1",
        ),
        ("step_wait = \"0s\"", "switch.step_wait", "longer than zero"),
        ("step_wait = \"soon\"", "switch.step_wait", "not a duration"),
    ];
    for (line, key, says) in cases {
        let err = with_switch(line).expect_err(line);
        let p = &err.problems[0];
        assert_eq!(p.key.as_deref(), Some(key), "{line}: {err:?}");
        assert_eq!(p.line, Some(9), "{line}: {err:?}");
        assert!(p.message.contains(says), "{line}: {}", p.message);
    }
}
