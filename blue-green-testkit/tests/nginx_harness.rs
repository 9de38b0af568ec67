//! The nginx harness cleans up after itself: a panicking test and even a killed test process
//! leave no nginx process and no temporary directory behind.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blue_green_core::{Color, Endpoint};
use blue_green_testkit::color_server::ColorServer;
use blue_green_testkit::nginx::NginxHarness;

/// The ids of the live (not zombie) processes in process group `group`.
fn group_members(group: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string() {
            members.push(pid);
        }
    }
    members
}

async fn wait_until_gone(group: u32, deadline: Duration) -> Vec<u32> {
    let until = Instant::now() + deadline;
    loop {
        let left = group_members(group);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn nginx_proxies_and_a_panicking_test_leaves_nothing_behind() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let endpoint = blue.endpoint();
    let (tx, rx) = tokio::sync::oneshot::channel::<(u32, PathBuf, Vec<u32>, String)>();
    let test = tokio::spawn(async move {
        let nginx = NginxHarness::start("app", &endpoint).await.unwrap();
        let body = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(nginx.url("/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let members = group_members(nginx.pid());
        tx.send((nginx.pid(), nginx.dir().to_path_buf(), members, body))
            .unwrap();
        panic!("a test fails while nginx runs");
    });
    assert!(test.await.unwrap_err().is_panic());
    let (pid, dir, members, body) = rx.await.unwrap();

    assert_eq!(body, "blue v1\n", "nginx proxied to the color server");
    assert!(
        members.len() >= 2 && members.contains(&pid),
        "master and a worker run in the group of {pid}: {members:?}"
    );
    assert_eq!(group_members(pid), Vec::<u32>::new(), "nginx left running");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Only does something when started by `a_killed_test_process_takes_nginx_with_it`.
#[tokio::test]
async fn child_starts_nginx_and_waits_to_be_killed() {
    if std::env::var_os("BLUE_GREEN_NGINX_CHILD").is_none() {
        return;
    }
    let nginx = NginxHarness::start("app", &Endpoint::new("127.0.0.1", 9))
        .await
        .unwrap();
    // libtest may have written "test NAME ... " on this line already.
    println!("\nnginx-pid {} {}", nginx.pid(), nginx.dir().display());
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_killed_test_process_takes_nginx_with_it() {
    // Run the test above in a child process, read nginx's pid from it, and SIGKILL it: no Drop
    // runs, so only the parent-death signal can stop nginx.
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_starts_nginx_and_waits_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BLUE_GREEN_NGINX_CHILD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let (pid, dir) = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("nginx-pid ") {
                let (pid, dir) = rest.split_once(' ').unwrap();
                return (pid.parse::<u32>().unwrap(), PathBuf::from(dir));
            }
        }
        panic!("the child test ended without starting nginx");
    })
    .await
    .expect("the child test did not start nginx within 30s");
    assert!(!group_members(pid).is_empty(), "nginx {pid} runs");

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let left = wait_until_gone(pid, Duration::from_secs(10)).await;
    // No Drop ran in the killed process, so its temporary directory is this test's to remove.
    let _ = std::fs::remove_dir_all(&dir);
    if !left.is_empty() {
        // Do not leave them behind even when this test fails.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    }
    assert_eq!(
        left,
        Vec::<u32>::new(),
        "nginx outlived the killed test process"
    );
}

#[tokio::test]
async fn test_and_reload_commands_work_on_the_harness_config() {
    let nginx = NginxHarness::start("app", &Endpoint::new("127.0.0.1", 9))
        .await
        .unwrap();
    for argv in [nginx.test_command(), nginx.reload_command()] {
        let output = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // `-s reload` only sends the signal: wait for the master to act on it.
    let until = Instant::now() + Duration::from_secs(10);
    while !nginx.error_log().contains("reconfiguring") && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        nginx.error_log().contains("reconfiguring"),
        "{}",
        nginx.error_log()
    );
}
