//! `validate` catches the setup mistakes a newcomer makes (issue 14), before anything starts:
//! nginx not loading the upstream file, an old upstream block of the same name, a missing
//! `include`, a compose file without the configured service, an `[endpoints]` port compose does
//! not publish, and a Docker image that is not on the machine. Each case exits non-zero naming
//! the file, upstream, service, port or image, and leaves no container, state or upstream
//! file behind. Needs Debian's nginx (`/usr/sbin/nginx`), Docker and a compose program.

use std::path::Path;
use std::process::Command as Std;

use assert_cmd::Command;

const NGINX: &str = "/usr/sbin/nginx";

/// A temporary project: the config, compose files and a private nginx config.
struct Setup {
    dir: tempfile::TempDir,
    app: String,
}

impl Setup {
    /// `nginx_includes`: the lines inside nginx's `http { }` block that include upstream files
    /// (with `{dir}` for the project directory). `shop-upstream.conf` (the old script's
    /// both-colors block) and `nginx/upstream.conf` (blue-green's) are both written.
    fn new(app: &str, runtime: &str, endpoints: &str, nginx_includes: &str) -> Setup {
        assert!(
            Path::new(NGINX).exists(),
            "nginx not found at {NGINX}: install Debian's nginx-light (scripts/test does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("bg-newcomer-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("nginx")).expect("mkdir");
        std::fs::write(
            dir.path().join("nginx/upstream.conf"),
            "upstream shop {\n    server 127.0.0.1:28191;\n}\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("shop-upstream.conf"),
            "upstream shop {\n    server 127.0.0.1:28191 max_fails=3;\n    server 127.0.0.1:28192 max_fails=3;\n}\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n    access_log off;\n    client_body_temp_path {d}/tmp;\n    proxy_temp_path {d}/tmp;\n{}\n    server {{\n        listen 127.0.0.1:28999;\n        location / {{ proxy_pass http://shop; }}\n    }}\n}}\n",
                nginx_includes.replace("{dir}", &d)
            ),
        )
        .expect("write");
        for (color, port) in [("blue", 28191), ("green", 28192)] {
            std::fs::write(
                dir.path().join(format!("docker-compose.{color}.yml")),
                format!(
                    "services:\n  shop:\n    image: \"bg-newcomer-web:${{BLUE_GREEN_RELEASE}}\"\n    environment:\n      - BLUE_GREEN_COLOR\n    ports:\n      - \"127.0.0.1:{port}:8080\"\n"
                ),
            )
            .expect("write");
        }
        let config = format!(
            "app = \"{app}\"\n\n[runtime]\n{runtime}\n\n{endpoints}\n[health]\nkind = \"tcp\"\n\n[router]\nkind = \"nginx\"\nupstream = \"shop\"\nupstream_file = \"nginx/upstream.conf\"\ntest_command = [\"{NGINX}\", \"-p\", \"{d}\", \"-c\", \"{d}/nginx.conf\", \"-e\", \"{d}/error.log\", \"-t\"]\nreload_command = [\"{NGINX}\", \"-p\", \"{d}\", \"-c\", \"{d}/nginx.conf\", \"-e\", \"{d}/error.log\", \"-s\", \"reload\"]\n"
        );
        std::fs::write(dir.path().join("blue-green.toml"), config).expect("write");
        Setup {
            dir,
            app: app.into(),
        }
    }

    /// Runs `validate`: (exit code, stdout, stderr).
    fn validate(&self) -> (i32, String, String) {
        let out = Command::cargo_bin("blue-green")
            .expect("binary")
            .current_dir(self.dir.path())
            .env_remove("BLUE_GREEN_CONFIG")
            .env_remove("RUST_LOG")
            .arg("validate")
            .output()
            .expect("run validate");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Nothing was started or written: no container of either project or of the docker
    /// runtime, no state directory, and the upstream file as the test wrote it.
    fn assert_nothing_started(&self) {
        for filter in [
            format!("label=com.docker.compose.project={}-blue", self.app),
            format!("label=com.docker.compose.project={}-green", self.app),
            format!("name={}-", self.app),
        ] {
            let out = Std::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
                .expect("docker ps");
            assert!(out.status.success(), "docker ps failed: is Docker running?");
            assert!(
                out.stdout.is_empty(),
                "validate started a container ({filter})"
            );
        }
        assert!(
            !self.dir.path().join(".blue-green").exists(),
            "validate wrote state"
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.path().join("nginx/upstream.conf")).expect("read"),
            "upstream shop {\n    server 127.0.0.1:28191;\n}\n",
            "validate rewrote the upstream file"
        );
    }
}

const COMPOSE: &str =
    "kind = \"compose\"\nfiles = { blue = \"docker-compose.blue.yml\", green = \"docker-compose.green.yml\" }\nservice = \"shop\"";
const ENDPOINTS: &str = "[endpoints]\nblue = \"127.0.0.1:28191\"\ngreen = \"127.0.0.1:28192\"\n";
const OURS: &str = "    include {dir}/nginx/upstream.conf;";
const OLD: &str = "    include {dir}/shop-upstream.conf;";

fn fails_with(setup: &Setup, words: &[&str]) -> String {
    let (code, stdout, stderr) = setup.validate();
    assert_ne!(code, 0, "validate passed:\n{stdout}\n{stderr}");
    for word in words {
        assert!(
            stderr.contains(word),
            "stderr does not name `{word}`:\n{stderr}"
        );
    }
    setup.assert_nothing_started();
    stdout
}

#[test]
fn a_good_setup_passes_and_reports_on_stdout() {
    let setup = Setup::new("nc-val-good", COMPOSE, ENDPOINTS, OURS);
    let (code, stdout, stderr) = setup.validate();
    assert_eq!(code, 0, "validate failed:\n{stdout}\n{stderr}");
    for word in [
        "ok   include",
        "ok   duplicate",
        "ok   service",
        "ok   ports",
        "nothing was changed",
    ] {
        assert!(stdout.contains(word), "stdout lacks `{word}`:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    setup.assert_nothing_started();
}

#[test]
fn nginx_that_never_loads_the_upstream_file_is_caught() {
    // The migration mistake: nginx still includes the script's file, which defines `shop`.
    let setup = Setup::new("nc-val-noload", COMPOSE, ENDPOINTS, OLD);
    let stdout = fails_with(
        &setup,
        &[
            "nginx does not load",
            "nginx/upstream.conf",
            "Add `include",
            "upstream `shop` is also defined at",
            "shop-upstream.conf:1",
            "Moving from a both-colors upstream",
        ],
    );
    assert!(stdout.contains("FAIL include"), "{stdout}");
}

#[test]
fn an_old_upstream_block_beside_the_included_file_is_caught() {
    let setup = Setup::new("nc-val-dup", COMPOSE, ENDPOINTS, &format!("{OURS}\n{OLD}"));
    fails_with(
        &setup,
        &[
            "duplicate upstream",
            "upstream `shop` is defined twice",
            "shop-upstream.conf",
            "Moving from a both-colors upstream",
        ],
    );
}

#[test]
fn a_missing_include_says_what_to_add_to_which_file() {
    let setup = Setup::new("nc-val-noinc", COMPOSE, ENDPOINTS, "");
    let conf = setup.dir.path().join("nginx.conf").display().to_string();
    let upstream = setup.dir.path().join("nginx/upstream.conf");
    let upstream = std::fs::canonicalize(upstream).expect("canonical");
    fails_with(
        &setup,
        &[
            &format!("add `include {};`", upstream.display()),
            &format!("at the top of {conf}"),
        ],
    );
}

#[test]
fn a_compose_file_without_the_service_is_caught() {
    let runtime = COMPOSE.replace("service = \"shop\"", "service = \"web\"");
    let setup = Setup::new("nc-val-svc", &runtime, ENDPOINTS, OURS);
    fails_with(
        &setup,
        &[
            "has no service `web`",
            "its services: shop",
            "docker-compose.blue.yml",
            "docker-compose.green.yml",
        ],
    );
}

#[test]
fn an_endpoint_port_compose_does_not_publish_is_caught() {
    // The container's port instead of the published one.
    let endpoints = "[endpoints]\nblue = \"127.0.0.1:8080\"\ngreen = \"127.0.0.1:28192\"\n";
    let setup = Setup::new("nc-val-port", COMPOSE, endpoints, OURS);
    let stdout = fails_with(
        &setup,
        &[
            "endpoints.blue = 127.0.0.1:8080",
            "publishes port 28191 (container port 8080)",
            "set endpoints.blue = \"127.0.0.1:28191\"",
        ],
    );
    assert!(
        !stdout.contains("FAIL ports     green") && stdout.contains("ok   ports"),
        "green's port is right:\n{stdout}"
    );
}

#[test]
fn a_docker_image_that_is_not_on_the_machine_is_caught() {
    let runtime = "kind = \"docker\"\nimage = \"bg-newcomer-never-built:1\"\ncontainer_port = 8080";
    let setup = Setup::new("nc-val-img", runtime, ENDPOINTS, OURS);
    fails_with(
        &setup,
        &["image bg-newcomer-never-built:1", "is not on this machine"],
    );
}
