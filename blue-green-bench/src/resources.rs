//! What a long run leaves growing (the soak: `--deploys 500`): the `blue-green` command's peak
//! memory at each sample, the router's processes, their memory and open file descriptors, the
//! app's containers and networks, the state directory's size, and at the end how long
//! `blue-green history` takes over everything the run recorded.
//!
//! A sample is taken after the first deploy under load, then every `--sample-every` deploys
//! and after the last one, so that deploy 1 and deploy 500 sit in one table.

use std::path::{Path, PathBuf};

use serde::Serialize;

use blue_green_testkit::docker::{containers_with_prefix, networks_with_prefix};

use crate::child::status_kib;

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSample {
    /// The deploy just finished (1-based, under load).
    pub deploy: usize,
    /// That deploy's `blue-green` peak resident memory, KiB (its own `VmHWM`).
    pub cli_peak_rss_kib: Option<u64>,
    /// The router's processes: its main process and every descendant (nginx's workers, old
    /// ones still draining included).
    pub router_processes: usize,
    /// Their resident memory together, KiB.
    pub router_rss_kib: u64,
    /// Their open file descriptors together.
    pub router_fds: usize,
    /// Containers named after the app (both colors, any state).
    pub containers: usize,
    /// Networks named after the app.
    pub networks: usize,
    /// Bytes of every file in the state directory (state, history, lock).
    pub state_bytes: u64,
}

/// Where to look: the router's main pid, the state directory and the app's name prefix.
pub struct ResourceProbe<'a> {
    /// The router's main process (nginx's master, the proxy, HAProxy's master, Caddy).
    pub router_pid: Option<u32>,
    /// blue-green's `state_dir`.
    pub state_dir: PathBuf,
    /// The prefix every container and network of the app's starts with.
    pub prefix: String,
    /// The Docker client of the run.
    pub docker: &'a bollard::Docker,
}

impl ResourceProbe<'_> {
    /// Takes a sample after `deploy`, whose `blue-green` peaked at `cli_peak_rss_kib`.
    pub async fn sample(&self, deploy: usize, cli_peak_rss_kib: Option<u64>) -> ResourceSample {
        let pids = self.router_pid.map(process_tree).unwrap_or_default();
        ResourceSample {
            deploy,
            cli_peak_rss_kib,
            router_processes: pids.len(),
            router_rss_kib: pids.iter().filter_map(|&p| rss_kib(p)).sum(),
            router_fds: pids.iter().map(|&p| open_fds(p)).sum(),
            containers: containers_with_prefix(self.docker, &self.prefix)
                .await
                .len(),
            networks: networks_with_prefix(self.docker, &self.prefix).await.len(),
            state_bytes: dir_bytes(&self.state_dir),
        }
    }
}

/// Whether deploy `k` of `total` is sampled, one every `every`.
pub fn sampled(k: usize, total: usize, every: usize) -> bool {
    k == 1 || k == total || (every > 0 && k % every == 0)
}

/// `pid` and all its descendants, from each process's parent in `/proc/PID/stat`.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| parent_of(&stat))
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    tree
}

/// The parent pid in a `/proc/PID/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces or parentheses itself, so fields are counted after the last `)`.
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// The table: one row per sample, and the time `blue-green history` took at the end.
pub fn render(name: &str, samples: &[ResourceSample], history_ms: Option<u64>) -> String {
    let mut out = format!(
        "\n{name}: resources over the run\n\n| deploy | blue-green peak RSS | router processes | router RSS | router fds | containers | networks | state dir |\n|---|---|---|---|---|---|---|---|\n"
    );
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    for s in samples {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} KiB |\n",
            s.deploy,
            s.cli_peak_rss_kib.map_or("?".into(), mib),
            s.router_processes,
            mib(s.router_rss_kib),
            s.router_fds,
            s.containers,
            s.networks,
            s.state_bytes.div_ceil(1024),
        ));
    }
    if let Some(ms) = history_ms {
        out.push_str(&format!(
            "\n`blue-green history` over the whole run took {ms} ms.\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_the_command_name_whatever_it_holds() {
        assert_eq!(parent_of("42 (nginx) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("42 (a) b) (c) S 9 42"), Some(9));
        assert_eq!(parent_of("42 nginx S 7"), None);
    }

    #[test]
    fn the_first_the_last_and_every_nth_deploy_are_sampled() {
        let taken: Vec<usize> = (1..=25).filter(|&k| sampled(k, 25, 10)).collect();
        assert_eq!(taken, vec![1, 10, 20, 25]);
    }

    #[test]
    fn the_process_tree_of_this_test_holds_a_child_it_started() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let tree = process_tree(std::process::id());
        let found = tree.contains(&child.id());
        child.kill().ok();
        child.wait().ok();
        assert!(found, "{} not in {tree:?}", child.id());
        assert!(open_fds(std::process::id()) > 0);
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert_eq!(status_kib(std::process::id(), "VmNoSuchField"), None);
    }
}
