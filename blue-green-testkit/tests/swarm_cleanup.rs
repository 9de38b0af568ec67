//! The test swarm cleans up after itself: dropping it removes its processes, bridge, network
//! namespaces, iptables rules, cgroups and directory, and starting one first removes what a
//! test run that died left behind (a swarm directory whose owner process is gone).

use std::path::Path;
use std::process::Command;

use blue_green_testkit::swarm::TestSwarm;

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run a command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn forward_rules_with(comment: &str) -> usize {
    let out = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .expect("iptables -S");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("--comment {comment}")))
        .count()
}

/// What is left on the machine of the swarm with `prefix`, in words (empty: nothing).
fn left_of(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    if Path::new(&format!("/tmp/bg-swarm/{prefix}")).exists() {
        left.push("its directory".to_string());
    }
    if Path::new(&format!("/sys/class/net/{prefix}br")).exists() {
        left.push("its bridge".into());
    }
    if Path::new(&format!("/run/netns/{prefix}n1")).exists() {
        left.push("its network namespace".into());
    }
    if Path::new(&format!("/sys/fs/cgroup/pids/{prefix}")).exists() {
        left.push("its cgroup".into());
    }
    if forward_rules_with(prefix) > 0 {
        left.push("its FORWARD rules".into());
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.contains(&format!("/tmp/bg-swarm/{prefix}/")) {
        left.push("mounts".into());
    }
    left
}

#[tokio::test]
async fn a_dead_runs_swarm_is_removed_at_the_next_start_and_a_dropped_one_leaves_nothing() {
    // What a killed test run leaves: a directory whose owner is gone, a bridge, a namespace, a
    // FORWARD rule and a cgroup, all named with its prefix.
    let mut gone = Command::new("true").spawn().expect("run true");
    let dead_pid = gone.id();
    gone.wait().expect("true exits");
    // Real prefixes are `bgsw` and digits: a letter keeps this one apart from any live swarm.
    let dead = format!("bgswd{:04}", dead_pid % 10_000);
    std::fs::create_dir_all(format!("/tmp/bg-swarm/{dead}/n1")).expect("mkdir");
    std::fs::write(format!("/tmp/bg-swarm/{dead}/owner"), dead_pid.to_string()).expect("owner");
    run(&["ip", "link", "add", &format!("{dead}br"), "type", "bridge"]);
    run(&["ip", "netns", "add", &format!("{dead}n1")]);
    run(&[
        "iptables",
        "-I",
        "FORWARD",
        "-i",
        &format!("{dead}br"),
        "-m",
        "comment",
        "--comment",
        &dead,
        "-j",
        "ACCEPT",
    ]);
    std::fs::create_dir_all(format!("/sys/fs/cgroup/pids/{dead}/n1")).expect("cgroup");
    assert_eq!(left_of(&dead).len(), 5, "the fake leftovers are in place");

    let swarm = TestSwarm::start(1).await;
    assert_eq!(
        left_of(&dead),
        Vec::<String>::new(),
        "the dead run's swarm was removed"
    );
    let prefix = swarm.prefix().to_string();
    assert!(
        !left_of(&prefix).is_empty(),
        "the new swarm exists while it runs"
    );
    let dockerd = std::fs::read_to_string(format!("/tmp/bg-swarm/{prefix}/n1/dockerd.pid"))
        .expect("the node's dockerd pid file");
    let dockerd = dockerd.trim().to_string();
    drop(swarm);
    assert_eq!(left_of(&prefix), Vec::<String>::new(), "nothing is left");
    assert!(
        !Path::new(&format!("/proc/{dockerd}")).exists()
            || std::fs::read_to_string(format!("/proc/{dockerd}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the node's dockerd ({dockerd}) is gone"
    );
}
