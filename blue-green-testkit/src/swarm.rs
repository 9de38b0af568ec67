//! A real Docker Swarm of several nodes on this one machine, made and removed by a test.
//!
//! Each node is a `dockerd` of its own in a network namespace of its own, entered with
//! `nsenter --net=/var/run/netns/NAME` (not `ip netns exec`, which remounts /sys and loses the
//! cgroup mounts dockerd needs), with its own data root, exec root, pid file, unix socket and
//! an almost empty config file (the machine's `/etc/docker/daemon.json` names a data root of its
//! own), `--storage-driver fuse-overlayfs`. The namespaces are joined by veth pairs to a bridge
//! the test creates on a private `10.213.X.0/24`, with FORWARD accept rules for that bridge (the
//! machine's FORWARD policy is DROP). Every process of a node, the dockerd and all it starts
//! (containerd, shims, the tasks' containers, fuse-overlayfs), is kept in one cgroup of the
//! `pids` hierarchy (`--cgroup-parent` for the containers), so that [`TestSwarm::kill_node`]
//! kills a whole node at once and cleanup misses nothing.
//!
//! Nothing is pulled: the node daemons run with `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1` (a
//! task uses the node's image without asking a registry), and images reach the nodes with
//! [`TestSwarm::load_image`] (`docker save` on the machine's engine, `docker load` on a node,
//! through the API).
//!
//! Every name starts with the swarm's prefix `bgswNNNNN` (namespaces `{prefix}n1`.., bridge
//! `{prefix}br`, veths `{prefix}v1`.., cgroup `/{prefix}`, directory
//! `/tmp/bg-swarm/{prefix}`, iptables rules commented `{prefix}`). Dropping the [`TestSwarm`]
//! removes all of it, also when the test panics; [`TestSwarm::start`] first removes what a
//! killed test run left (a directory whose owner process is gone).
//!
//! [`TestDaemon`] is one such node alone, in no swarm: a private Docker daemon that a test may
//! stop and start again ([`TestDaemon::stop`], as `systemctl stop docker` does) without
//! touching the machine's own daemon, which everything else on the machine shares.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::{
    NodeState, SwarmInitRequest, SwarmJoinRequest, SwarmSpec, SwarmSpecDispatcher,
};
use bollard::query_parameters::{ImportImageOptions, ListNodesOptions, TagImageOptionsBuilder};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::{StreamExt, TryStreamExt};

/// Where the nodes' directories are made.
const ROOT: &str = "/tmp/bg-swarm";

/// How long a node's dockerd may take to answer after it is started.
const DAEMON_START: Duration = Duration::from_secs(60);

/// One node: a dockerd in its own network namespace.
pub struct SwarmNode {
    /// 1-based.
    pub index: usize,
    /// Its address on the test's bridge.
    pub address: String,
    netns: String,
    dir: PathBuf,
    cgroup: PathBuf,
    child: Option<Child>,
    /// Set once the daemon answers.
    docker: Option<Docker>,
}

impl SwarmNode {
    /// A client of this node's dockerd.
    pub fn docker(&self) -> &Docker {
        self.docker
            .as_ref()
            .expect("the node's daemon answered when it was started")
    }

    /// `unix://` address of this node's dockerd, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("sock").display())
    }

    /// The last lines of this node's dockerd log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A swarm of several nodes; node 1 is the manager, the others are workers. Removed on drop.
pub struct TestSwarm {
    prefix: String,
    nodes: Vec<SwarmNode>,
}

impl TestSwarm {
    /// Starts `nodes` node daemons and forms a swarm of them (node 1 the manager), or panics
    /// saying what failed. Must run as root (network namespaces, iptables, cgroups).
    pub async fn start(nodes: usize) -> TestSwarm {
        let swarm = TestSwarm::start_nodes(nodes, false).await;
        swarm.form().await;
        swarm
    }

    /// Starts `nodes` node daemons that form no swarm; `live_restore` is their daemon.json's
    /// `live-restore`.
    async fn start_nodes(nodes: usize, live_restore: bool) -> TestSwarm {
        assert!(nodes >= 1, "a swarm needs a node");
        let (prefix, subnet) = tokio::task::spawn_blocking(prepare_host)
            .await
            .expect("preparing the host for a test swarm");
        // From here on, a panic drops the swarm and removes what was made.
        let mut swarm = TestSwarm {
            prefix,
            nodes: Vec::new(),
        };
        for index in 1..=nodes {
            let prefix = swarm.prefix.clone();
            let node = tokio::task::spawn_blocking(move || {
                make_node(&prefix, subnet, index, live_restore)
            })
            .await
            .expect("making a swarm node");
            swarm.nodes.push(node);
        }
        for node in &mut swarm.nodes {
            node.docker = Some(wait_for_daemon(node).await);
        }
        swarm
    }

    /// The prefix of every name this swarm made.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The manager node's client.
    pub fn manager(&self) -> &Docker {
        self.nodes[0].docker()
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: usize) -> &SwarmNode {
        &self.nodes[index - 1]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[SwarmNode] {
        &self.nodes
    }

    async fn form(&self) {
        let manager = &self.nodes[0];
        let init = SwarmInitRequest {
            listen_addr: Some(format!("{}:2377", manager.address)),
            advertise_addr: Some(manager.address.clone()),
            spec: Some(SwarmSpec {
                // A lost node is noticed within seconds, not swarm's default 5s heartbeat.
                dispatcher: Some(SwarmSpecDispatcher {
                    heartbeat_period: Some(1_000_000_000),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        manager
            .docker()
            .init_swarm(init)
            .await
            .unwrap_or_else(|e| panic!("swarm init on node 1: {e}\n{}", manager.log_tail(20)));
        let swarm = manager
            .docker()
            .inspect_swarm()
            .await
            .expect("inspecting the new swarm");
        let token = swarm
            .join_tokens
            .and_then(|t| t.worker)
            .expect("the swarm's worker join token");
        for node in &self.nodes[1..] {
            let join = SwarmJoinRequest {
                listen_addr: Some(format!("{}:2377", node.address)),
                advertise_addr: Some(node.address.clone()),
                remote_addrs: Some(vec![format!("{}:2377", manager.address)]),
                join_token: Some(token.clone()),
                ..Default::default()
            };
            node.docker().join_swarm(join).await.unwrap_or_else(|e| {
                panic!(
                    "node {} joining the swarm: {e}\n{}",
                    node.index,
                    node.log_tail(20)
                )
            });
        }
        self.wait_for_ready_nodes(self.nodes.len(), Duration::from_secs(60))
            .await;
    }

    /// Waits until the manager sees `count` nodes ready, or panics with the node list.
    pub async fn wait_for_ready_nodes(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ready = self.ready_addresses().await;
            if ready.len() == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the swarm did not have {count} ready nodes within {limit:?}: ready are {ready:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The addresses of the nodes the manager sees ready.
    pub async fn ready_addresses(&self) -> Vec<String> {
        let nodes = self
            .manager()
            .list_nodes(None::<ListNodesOptions>)
            .await
            .expect("listing the swarm's nodes");
        let mut ready: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.status.as_ref())
            .filter(|s| s.state == Some(NodeState::READY))
            .filter_map(|s| s.addr.clone())
            .collect();
        ready.sort();
        ready
    }

    /// Copies `image` from `from` (the machine's engine) to every node.
    pub async fn load_image(&self, from: &Docker, image: &str) {
        let indexes: Vec<usize> = (1..=self.nodes.len()).collect();
        self.load_image_on(from, image, image, &indexes).await;
    }

    /// Copies `image` from `from` to the nodes `indexes`, tagged there as `tag` (so that one
    /// node can hold another build under the same name).
    pub async fn load_image_on(&self, from: &Docker, image: &str, tag: &str, indexes: &[usize]) {
        let tarball: Vec<u8> = from
            .export_image(image)
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .unwrap_or_else(|e| panic!("docker save {image}: {e}"));
        let tarball = bytes::Bytes::from(tarball);
        for &index in indexes {
            let node = self.node(index);
            let mut load = node.docker().import_image(
                ImportImageOptions::default(),
                bollard::body_full(tarball.clone()),
                None,
            );
            while let Some(step) = load.next().await {
                step.unwrap_or_else(|e| panic!("docker load {image} on node {index}: {e}"));
            }
            if tag != image {
                let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
                let options = TagImageOptionsBuilder::new()
                    .repo(repo)
                    .tag(version)
                    .build();
                node.docker()
                    .tag_image(image, Some(options))
                    .await
                    .unwrap_or_else(|e| panic!("docker tag {image} {tag} on node {index}: {e}"));
            }
        }
    }

    /// Kills node `index` as a power cut would: its dockerd, containerd, shims and the tasks'
    /// containers, all at once (SIGKILL to every process of its cgroup).
    pub fn kill_node(&mut self, index: usize) {
        let node = &mut self.nodes[index - 1];
        kill_cgroup(&node.cgroup);
        if let Some(mut child) = node.child.take() {
            let _ = child.wait();
        }
    }

    /// Stops node `index`'s dockerd as `systemctl stop docker` does: SIGTERM, then waits (at
    /// most 60 s) until it has exited. What it started is left to dockerd's own shutdown: with
    /// `live-restore` the containers keep running, without it dockerd stops them first.
    pub fn stop_node(&mut self, index: usize) {
        let node = &mut self.nodes[index - 1];
        let Some(mut child) = node.child.take() else {
            return;
        };
        // The child is dockerd itself: sh and nsenter exec into it.
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the dockerd of node {} did not exit within 60s of SIGTERM; its log ends:\n{}",
                node.index,
                node.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node.docker = None;
    }

    /// Starts node `index`'s dockerd again after [`kill_node`](Self::kill_node) or
    /// [`stop_node`](Self::stop_node); it rejoins
    /// the swarm by itself. Returns once its daemon answers.
    pub async fn restart_node(&mut self, index: usize) {
        let node = &mut self.nodes[index - 1];
        node.child = Some(spawn_dockerd(&node.netns, &node.dir, &node.cgroup));
        node.docker = Some(wait_for_daemon(node).await);
    }
}

impl Drop for TestSwarm {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill_cgroup(&node.cgroup);
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
        let left = teardown(&self.prefix);
        if !left.is_empty() {
            eprintln!(
                "test swarm {}: could not remove: {}",
                self.prefix,
                left.join("; ")
            );
        }
    }
}

/// One private Docker daemon alone (a [`TestSwarm`] node that forms no swarm), for a test that
/// stops and starts the daemon under a deploy. Everything it made is removed on drop.
pub struct TestDaemon {
    swarm: TestSwarm,
}

impl TestDaemon {
    /// Starts the daemon, or panics saying what failed. `live_restore` sets daemon.json's
    /// `live-restore`: the production setting that keeps the containers running while dockerd
    /// is down. Must run as root.
    pub async fn start(live_restore: bool) -> TestDaemon {
        TestDaemon {
            swarm: TestSwarm::start_nodes(1, live_restore).await,
        }
    }

    /// The daemon's node: its address on the test bridge (where ports are published for the
    /// host to reach), `DOCKER_HOST`, log.
    pub fn node(&self) -> &SwarmNode {
        self.swarm.node(1)
    }

    /// A client of the daemon (while it runs).
    pub fn docker(&self) -> &Docker {
        self.node().docker()
    }

    /// The prefix of every name this daemon's setup made.
    pub fn prefix(&self) -> &str {
        self.swarm.prefix()
    }

    /// Copies `image` from `from` (the machine's engine) to this daemon.
    pub async fn load_image(&self, from: &Docker, image: &str) {
        self.swarm.load_image(from, image).await;
    }

    /// Stops dockerd as `systemctl stop docker` does (SIGTERM) and waits until it exited.
    pub fn stop(&mut self) {
        self.swarm.stop_node(1);
    }

    /// Starts dockerd again; returns once it answers.
    pub async fn restart(&mut self) {
        self.swarm.restart_node(1).await;
    }
}

/// Removes leftovers of dead test runs, picks a unique prefix and a free subnet, and makes the
/// bridge, its FORWARD rules and the cgroup.
fn prepare_host() -> (String, u8) {
    assert!(
        rustix::process::geteuid().is_root(),
        "a test swarm needs root (network namespaces, a bridge, iptables rules, cgroups, dockerd); run the swarm tests as root"
    );
    fs::create_dir_all(ROOT).expect("creating /tmp/bg-swarm");
    clean_leftovers();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos()) as u64
        ^ (std::process::id() as u64) << 8;
    let mut prefix = String::new();
    for attempt in 0..100u64 {
        let candidate = format!("bgsw{:05}", (seed + attempt * 7919) % 100_000);
        if fs::create_dir(Path::new(ROOT).join(&candidate)).is_ok() {
            prefix = candidate;
            break;
        }
    }
    assert!(!prefix.is_empty(), "no free test swarm prefix in {ROOT}");
    let dir = Path::new(ROOT).join(&prefix);
    fs::write(dir.join("owner"), std::process::id().to_string()).expect("writing the owner file");

    let addresses = output(&["ip", "-4", "-o", "addr", "show"]);
    let subnet = (1..=250u8)
        .map(|k| (k + (seed % 250) as u8) % 250 + 1)
        .find(|k| !addresses.contains(&format!("10.213.{k}.")))
        .expect("a free 10.213.X.0/24 subnet");
    fs::write(dir.join("subnet"), subnet.to_string()).expect("writing the subnet file");

    let bridge = format!("{prefix}br");
    run(&["ip", "link", "add", &bridge, "type", "bridge"]);
    run(&[
        "ip",
        "addr",
        "add",
        &format!("10.213.{subnet}.1/24"),
        "dev",
        &bridge,
    ]);
    run(&["ip", "link", "set", &bridge, "up"]);
    for direction in ["-i", "-o"] {
        run(&[
            "iptables",
            "-I",
            "FORWARD",
            direction,
            &bridge,
            "-m",
            "comment",
            "--comment",
            &prefix,
            "-j",
            "ACCEPT",
        ]);
    }
    fs::create_dir_all(cgroup_root(&prefix)).expect("creating the test swarm's cgroup");
    (prefix, subnet)
}

/// Makes node `index`'s namespace, veth pair and directories, and starts its dockerd.
fn make_node(prefix: &str, subnet: u8, index: usize, live_restore: bool) -> SwarmNode {
    let netns = format!("{prefix}n{index}");
    let outside = format!("{prefix}v{index}");
    let inside = format!("{prefix}p{index}");
    let address = format!("10.213.{subnet}.{}", 10 + index);
    run(&["ip", "netns", "add", &netns]);
    run(&[
        "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
    ]);
    run(&[
        "ip",
        "link",
        "set",
        &outside,
        "master",
        &format!("{prefix}br"),
        "up",
    ]);
    run(&["ip", "link", "set", &inside, "netns", &netns]);
    let in_ns = |args: &[&str]| {
        let mut all = vec!["ip", "-n", netns.as_str()];
        all.extend_from_slice(args);
        run(&all);
    };
    in_ns(&["link", "set", "lo", "up"]);
    in_ns(&["link", "set", &inside, "name", "eth0"]);
    in_ns(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    in_ns(&["link", "set", "eth0", "up"]);
    in_ns(&[
        "route",
        "add",
        "default",
        "via",
        &format!("10.213.{subnet}.1"),
    ]);

    let dir = Path::new(ROOT).join(prefix).join(format!("n{index}"));
    fs::create_dir_all(&dir).expect("creating the node's directory");
    let cgroup = cgroup_root(prefix).join(format!("n{index}"));
    fs::create_dir_all(&cgroup).expect("creating the node's cgroup");
    // The containers go under the node's cgroup too; the machine's daemon.json is not read.
    let config = format!(
        "{{\"cgroup-parent\": \"/{prefix}/n{index}\", \"live-restore\": {live_restore}}}\n"
    );
    fs::write(dir.join("daemon.json"), config).expect("writing the node's daemon.json");
    let child = spawn_dockerd(&netns, &dir, &cgroup);
    SwarmNode {
        index,
        address,
        netns,
        docker: None,
        dir,
        cgroup,
        child: Some(child),
    }
}

/// Starts a dockerd in `netns`, inside `cgroup`: a shell moves itself into the cgroup and
/// then becomes nsenter, which becomes dockerd (every argument is passed as argv).
fn spawn_dockerd(netns: &str, dir: &Path, cgroup: &Path) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dockerd.log"))
        .expect("opening the node's log");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    Command::new("sh")
        .args(["-c", "echo $$ > \"$1\" && shift && exec \"$@\"", "sh"])
        .arg(cgroup.join("cgroup.procs"))
        .arg("nsenter")
        .arg(format!("--net=/var/run/netns/{netns}"))
        .arg("dockerd")
        .args(["--data-root", &path("data")])
        .args(["--exec-root", &path("exec")])
        .args(["--pidfile", &path("dockerd.pid")])
        .args(["-H", &format!("unix://{}", path("sock"))])
        .args(["--config-file", &path("daemon.json")])
        .args(["--storage-driver", "fuse-overlayfs"])
        .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the node's log"))
        .stderr(log)
        .spawn()
        .expect("cannot run sh/nsenter/dockerd for a test swarm node (is dockerd installed?)")
}

/// Waits until the node's daemon answers, and returns a client at its API version.
async fn wait_for_daemon(node: &SwarmNode) -> Docker {
    let deadline = Instant::now() + DAEMON_START;
    let socket = node.dir.join("sock").to_string_lossy().into_owned();
    loop {
        // The client checks that the socket exists, so it is made once dockerd made that.
        if let Ok(client) = Docker::connect_with_unix(&socket, 120, API_DEFAULT_VERSION) {
            if let Ok(Ok(docker)) =
                tokio::time::timeout(Duration::from_secs(5), client.negotiate_version()).await
            {
                if docker.ping().await.is_ok() {
                    return docker;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the dockerd of test swarm node {} did not answer within {DAEMON_START:?}; its log ends:\n{}",
            node.index,
            node.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn cgroup_root(prefix: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/pids").join(prefix)
}

/// SIGKILLs every process in `cgroup` and below until none is left (a process forking while
/// it is killed is caught on the next round), for up to 10s.
fn kill_cgroup(cgroup: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = cgroup_pids(cgroup);
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cgroup_pids(cgroup: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_pids(&entry.path()));
            }
        }
    }
    pids
}

/// Removes the cgroup directories under `dir`, deepest first.
fn remove_cgroup_dirs(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_dirs(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Removes every test swarm whose owner process is gone.
fn clean_leftovers() {
    let Ok(entries) = fs::read_dir(ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let prefix = entry.file_name().to_string_lossy().into_owned();
        if !prefix.starts_with("bgsw") {
            continue;
        }
        let owner = fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let left = teardown(&prefix);
            eprintln!("removed a test swarm left by a dead run: {prefix} (left: {left:?})");
        }
    }
}

/// Removes everything named after `prefix`: processes, mounts, cgroups, namespaces, links,
/// iptables rules, the directory. Returns what could not be removed.
fn teardown(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    let cgroups = cgroup_root(prefix);
    kill_cgroup(&cgroups);
    if !cgroup_pids(&cgroups).is_empty() {
        left.push(format!("processes in {}", cgroups.display()));
    }
    let dir = Path::new(ROOT).join(prefix);
    // Mounts under the nodes' directories (fuse-overlayfs layers, namespace files), deepest
    // first.
    let mut mounts: Vec<String> = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in &mounts {
        let _ = Command::new("umount").args(["-l", mount]).output();
    }
    // The containers' cgroups were made in every hierarchy.
    if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
        for hierarchy in hierarchies.flatten() {
            remove_cgroup_dirs(&hierarchy.path().join(prefix));
        }
    }
    if let Ok(namespaces) = fs::read_dir("/run/netns") {
        for ns in namespaces.flatten() {
            let name = ns.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
    }
    let bridge = format!("{prefix}br");
    let _ = Command::new("ip").args(["link", "del", &bridge]).output();
    for rule in output(&["iptables", "-S", "FORWARD"]).lines() {
        if rule.contains(&format!("--comment {prefix}")) {
            let args: Vec<&str> = rule.split_whitespace().collect();
            if args.first() == Some(&"-A") {
                let mut delete = vec!["iptables", "-D"];
                delete.extend_from_slice(&args[1..]);
                let _ = Command::new(delete[0]).args(&delete[1..]).output();
            }
        }
    }
    let still_mounted = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|m| Path::new(m).starts_with(&dir))
        });
    if still_mounted {
        left.push(format!("mounts under {}", dir.display()));
    } else if dir.exists() && fs::remove_dir_all(&dir).is_err() {
        left.push(format!("the directory {}", dir.display()));
    }
    if Path::new(&format!("/sys/class/net/{bridge}")).exists() {
        left.push(format!("the bridge {bridge}"));
    }
    left
}

/// Runs `args` (argv) and panics with its stderr if it fails.
fn run(args: &[&str]) {
    output(args);
}

/// Runs `args` (argv) and returns its stdout, or panics if it fails.
fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (install iproute2 and iptables)"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
