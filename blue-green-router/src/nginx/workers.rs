//! Watching nginx's worker processes through `/proc`, so that a verification knows the moment
//! the old workers stop accepting connections instead of waiting a fixed overlap.
//!
//! On `nginx -s reload` the master starts new workers, sleeps about 100 ms and then tells the
//! old ones to quit. An old worker that gets the order sets its title to `nginx: worker process
//! is shutting down` and, in the same turn of its loop, closes its listening sockets, so it
//! accepts nothing after that title appears (nginx's `ngx_worker_process_cycle`). Once at least
//! one new worker runs and every old worker is gone or has that title, each new connection is
//! served with the new config.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessId {
    pid: u32,
    start_time: u64,
}

/// One child of the master, as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Child {
    id: ProcessId,
    /// `R`, `S`, `Z`, … from `/proc/PID/stat`.
    state: char,
    /// The command line with NULs turned into spaces: nginx's process title.
    title: String,
}

impl Child {
    fn is_gone(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x') || self.title.is_empty()
    }

    /// A worker that may still accept connections.
    fn is_accepting_worker(&self) -> bool {
        !self.is_gone()
            && self.title.contains("worker process")
            && !self.title.contains("shutting down")
    }
}

/// The workers of one nginx master just before a reload.
#[derive(Debug, Clone)]
pub(super) struct WorkerWatch {
    proc_root: PathBuf,
    master: u32,
    old: Vec<ProcessId>,
}

impl WorkerWatch {
    /// Reads the master's pid from `pid_file` and notes its accepting workers. Runs off the
    /// async runtime. The error says why the watch cannot be used (for a debug log).
    pub(super) async fn before_reload(
        proc_root: &Path,
        pid_file: &Path,
    ) -> Result<WorkerWatch, String> {
        let proc_root = proc_root.to_path_buf();
        let pid_file = pid_file.to_path_buf();
        tokio::task::spawn_blocking(move || Self::before_reload_blocking(proc_root, &pid_file))
            .await
            .map_err(|e| format!("the task reading /proc failed: {e}"))?
    }

    fn before_reload_blocking(proc_root: PathBuf, pid_file: &Path) -> Result<WorkerWatch, String> {
        let master = read_master(&proc_root, pid_file)?;
        let children = children(&proc_root, master)
            .map_err(|e| format!("cannot list the children of nginx's master {master}: {e}"))?;
        let old: Vec<ProcessId> = children
            .iter()
            .filter(|c| c.is_accepting_worker())
            .map(|c| c.id)
            .collect();
        if old.is_empty() {
            return Err(format!(
                "nginx's master {master} has no worker process that /proc shows"
            ));
        }
        Ok(WorkerWatch {
            proc_root,
            master,
            old,
        })
    }

    /// The master's pid.
    pub(super) fn master(&self) -> u32 {
        self.master
    }

    /// Waits, checking every `poll`, until a new worker runs and no old worker accepts any
    /// more; gives up at `deadline` with what it saw.
    pub(super) async fn wait(&self, deadline: Instant, poll: Duration) -> Result<(), WaitError> {
        loop {
            let watch = self.clone();
            let seen = tokio::task::spawn_blocking(move || watch.replaced())
                .await
                .map_err(|e| {
                    WaitError::Unreadable(format!("the task reading /proc failed: {e}"))
                })?;
            let why = match seen {
                Ok(Progress::Done) => return Ok(()),
                Ok(progress) => progress.describe(),
                Err(e) => {
                    return Err(WaitError::Unreadable(format!(
                        "cannot list the children of nginx's master {} after the reload: {e}",
                        self.master
                    )))
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WaitError::Timeout(why));
            }
            tokio::time::sleep(poll.min(remaining)).await;
        }
    }

    /// Where the replacement of the workers stands.
    fn replaced(&self) -> io::Result<Progress> {
        let children = children(&self.proc_root, self.master)?;
        let new_worker = children
            .iter()
            .any(|c| c.is_accepting_worker() && !self.old.contains(&c.id));
        let still_accepting: Vec<u32> = self
            .old
            .iter()
            .filter(|old| {
                children
                    .iter()
                    .any(|c| c.id == **old && c.is_accepting_worker())
            })
            .map(|old| old.pid)
            .collect();
        Ok(match (new_worker, still_accepting.is_empty()) {
            (true, true) => Progress::Done,
            (false, _) => Progress::NoNewWorker,
            (true, false) => Progress::OldStillAccepting(still_accepting),
        })
    }
}

/// Why [`WorkerWatch::wait`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WaitError {
    /// The deadline came first; what was seen last.
    Timeout(String),
    /// `/proc` could not be read (the master is gone, for example).
    Unreadable(String),
}

impl WaitError {
    #[cfg(test)]
    fn message(&self) -> &str {
        match self {
            WaitError::Timeout(m) | WaitError::Unreadable(m) => m,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Done,
    NoNewWorker,
    OldStillAccepting(Vec<u32>),
}

impl Progress {
    fn describe(&self) -> String {
        match self {
            Progress::Done => "the workers were replaced".into(),
            Progress::NoNewWorker => "nginx started no new worker process".into(),
            Progress::OldStillAccepting(pids) => {
                format!("old worker process(es) {pids:?} had not begun shutting down")
            }
        }
    }
}

/// The pid of the nginx master that `pid_file` names, once `/proc` shows that it is one here.
/// The error says why not (for a debug log or a report).
pub(super) fn read_master(proc_root: &Path, pid_file: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read the pid file {}: {e}", pid_file.display()))?;
    let master: u32 = text.trim().parse().map_err(|_| {
        format!(
            "the pid file {} does not hold a process id: {:?}",
            pid_file.display(),
            text.trim()
        )
    })?;
    let title = read_title(proc_root, master).map_err(|e| {
        format!(
            "cannot read the command line of process {master} (from {}): {e}",
            pid_file.display()
        )
    })?;
    if !title.contains("master process") {
        return Err(format!(
            "process {master} (from {}) is not an nginx master here (its command line is {title:?}); nginx may run in another pid namespace",
            pid_file.display()
        ));
    }
    Ok(master)
}

/// The pids of `master`'s worker processes that still run, the ones shutting down after a
/// reload included: those hold the long-lived connections opened before it.
pub(super) fn worker_pids(proc_root: &Path, master: u32) -> io::Result<Vec<u32>> {
    Ok(children(proc_root, master)?
        .into_iter()
        .filter(|c| !c.is_gone() && c.title.contains("worker process"))
        .map(|c| c.id.pid)
        .collect())
}

/// The command line of `pid`, NULs as spaces, trimmed; empty for a zombie.
fn read_title(proc_root: &Path, pid: u32) -> io::Result<String> {
    let bytes = std::fs::read(proc_root.join(pid.to_string()).join("cmdline"))?;
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c == '\0' { ' ' } else { c })
        .collect();
    Ok(text.trim().to_string())
}

/// `(state, ppid, start time)` from the text of `/proc/PID/stat`. The command name (field 2)
/// is in parentheses and may hold spaces and `)`, so fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<(char, u32, u64)> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start_time))
}

/// The children of `master`: from `/proc/M/task/M/children` when the kernel has it, else by
/// scanning every `/proc/PID/stat` for the parent pid. A child that exits while being read is
/// left out.
fn children(proc_root: &Path, master: u32) -> io::Result<Vec<Child>> {
    let master_dir = proc_root.join(master.to_string());
    let listed = std::fs::read_to_string(
        master_dir
            .join("task")
            .join(master.to_string())
            .join("children"),
    );
    let pids: Vec<u32> = match listed {
        Ok(text) => text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No such file: either the master is gone or the kernel lacks the list.
            std::fs::metadata(&master_dir)?;
            let mut pids = Vec::new();
            for entry in std::fs::read_dir(proc_root)? {
                let Ok(entry) = entry else { continue };
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let stat = std::fs::read_to_string(entry.path().join("stat"));
                if let Some((_, ppid, _)) = stat.ok().as_deref().and_then(parse_stat) {
                    if ppid == master {
                        pids.push(pid);
                    }
                }
            }
            pids
        }
        Err(e) => return Err(e),
    };
    let mut children = Vec::new();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Some((state, ppid, start_time)) = parse_stat(&stat) else {
            continue;
        };
        if ppid != master {
            continue;
        }
        let title = read_title(proc_root, pid).unwrap_or_default();
        children.push(Child {
            id: ProcessId { pid, start_time },
            state,
            title,
        });
    }
    Ok(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc` in a temp dir.
    struct FakeProc {
        dir: tempfile::TempDir,
        with_children_file: bool,
    }

    impl FakeProc {
        fn new(with_children_file: bool) -> Self {
            FakeProc {
                dir: tempfile::tempdir().unwrap(),
                with_children_file,
            }
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        /// Writes process `pid` with parent `ppid`, `state`, start time and title.
        fn process(&self, pid: u32, ppid: u32, state: char, start: u64, title: &str) {
            let dir = self.root().join(pid.to_string());
            std::fs::create_dir_all(dir.join("task").join(pid.to_string())).unwrap();
            // The comm field with a space and a `)` inside, as a process may name itself.
            let mut stat = format!("{pid} (ngx) x) {state} {ppid}");
            for field in 5..22 {
                stat.push_str(&format!(" {field}"));
            }
            stat.push_str(&format!(" {start} 99 100\n"));
            std::fs::write(dir.join("stat"), stat).unwrap();
            let cmdline = if title.is_empty() {
                Vec::new()
            } else {
                let mut bytes = title.replace(' ', "\0").into_bytes();
                bytes.extend_from_slice(&[0; 8]);
                bytes
            };
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
            self.list_children(ppid);
        }

        fn remove(&self, pid: u32, ppid: u32) {
            std::fs::remove_dir_all(self.root().join(pid.to_string())).unwrap();
            self.list_children(ppid);
        }

        /// Rewrites `/proc/PPID/task/PPID/children` from the fake stat files.
        fn list_children(&self, ppid: u32) {
            let parent = self.root().join(ppid.to_string());
            if !self.with_children_file || !parent.exists() {
                return;
            }
            let mut kids = Vec::new();
            for entry in std::fs::read_dir(self.root()).unwrap() {
                let entry = entry.unwrap();
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                    continue;
                };
                let (_, p, _) = parse_stat(&stat).unwrap();
                if p == ppid {
                    kids.push(entry.file_name().into_string().unwrap());
                }
            }
            let list: String = kids.iter().map(|k| format!("{k} ")).collect();
            std::fs::write(
                parent.join("task").join(ppid.to_string()).join("children"),
                list,
            )
            .unwrap();
        }

        fn pid_file(&self, pid: u32) -> PathBuf {
            let file = self.root().join(format!("nginx-{pid}.pid"));
            std::fs::write(&file, format!("{pid}\n")).unwrap();
            file
        }
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "42 (nginx: a) b) S 7 42 42 0 -1 4194624 1 2 3 4 5 6 7 8 20 0 1 0 123456 1 2";
        assert_eq!(parse_stat(text), Some(('S', 7, 123456)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    async fn a_reload_is_watched_to_the_end(with_children_file: bool) {
        let proc = FakeProc::new(with_children_file);
        proc.process(100, 1, 'S', 10, "nginx: master process /usr/sbin/nginx");
        proc.process(101, 100, 'S', 11, "nginx: worker process");
        proc.process(102, 100, 'S', 11, "nginx: cache manager process");
        proc.process(200, 1, 'S', 12, "bash");
        let pid_file = proc.pid_file(100);

        let watch = WorkerWatch::before_reload(proc.root(), &pid_file)
            .await
            .unwrap();
        assert_eq!(watch.master(), 100);
        assert_eq!(
            watch.old,
            [ProcessId {
                pid: 101,
                start_time: 11
            }]
        );
        // Right after `nginx -s reload` returns, nothing has changed yet.
        assert_eq!(watch.replaced().unwrap(), Progress::NoNewWorker);
        // A new worker runs, the old one still accepts.
        proc.process(103, 100, 'S', 20, "nginx: worker process");
        assert_eq!(
            watch.replaced().unwrap(),
            Progress::OldStillAccepting(vec![101])
        );
        // The old one shuts down: done.
        proc.process(101, 100, 'S', 11, "nginx: worker process is shutting down");
        assert_eq!(watch.replaced().unwrap(), Progress::Done);
        // Gone, a zombie, or its pid reused by a later process all count as done too.
        proc.remove(101, 100);
        assert_eq!(watch.replaced().unwrap(), Progress::Done);
        proc.process(101, 100, 'Z', 11, "");
        assert_eq!(watch.replaced().unwrap(), Progress::Done);
        proc.process(101, 100, 'S', 30, "nginx: worker process");
        assert_eq!(watch.replaced().unwrap(), Progress::Done);

        let deadline = Instant::now() + Duration::from_secs(5);
        watch
            .wait(deadline, Duration::from_millis(1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_reload_is_watched_through_the_children_list() {
        a_reload_is_watched_to_the_end(true).await;
    }

    #[tokio::test]
    async fn a_reload_is_watched_by_scanning_proc_without_the_children_list() {
        a_reload_is_watched_to_the_end(false).await;
    }

    #[tokio::test]
    async fn a_watch_that_never_ends_says_what_it_saw() {
        let proc = FakeProc::new(true);
        proc.process(100, 1, 'S', 10, "nginx: master process nginx");
        proc.process(101, 100, 'S', 11, "nginx: worker process");
        let watch = WorkerWatch::before_reload(proc.root(), &proc.pid_file(100))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(30);
        let error = watch
            .wait(deadline, Duration::from_millis(5))
            .await
            .unwrap_err();
        assert!(matches!(error, WaitError::Timeout(_)), "{error:?}");
        let error = error.message();
        assert!(error.contains("no new worker"), "{error}");

        proc.process(102, 100, 'S', 12, "nginx: worker process");
        let deadline = Instant::now() + Duration::from_millis(30);
        let error = watch
            .wait(deadline, Duration::from_millis(5))
            .await
            .unwrap_err();
        let error = error.message();
        assert!(error.contains("[101]"), "{error}");

        proc.remove(100, 1);
        let error = watch
            .wait(Instant::now(), Duration::from_millis(5))
            .await
            .unwrap_err();
        assert!(matches!(error, WaitError::Unreadable(_)), "{error:?}");
        let error = error.message();
        assert!(error.contains("master 100"), "{error}");
    }

    #[tokio::test]
    async fn no_watch_without_a_sensible_master() {
        let proc = FakeProc::new(true);
        proc.process(1, 0, 'S', 1, "/sbin/init");
        proc.process(100, 1, 'S', 10, "nginx: master process nginx");
        let root = proc.root();
        let cases = [
            (root.join("missing.pid"), "cannot read the pid file"),
            (proc.pid_file(1), "not an nginx master"),
            (proc.pid_file(4242), "cannot read the command line"),
            (proc.pid_file(100), "no worker process"),
        ];
        for (pid_file, why) in cases {
            let error = WorkerWatch::before_reload(root, &pid_file)
                .await
                .unwrap_err();
            assert!(error.contains(why), "{why}: {error}");
        }
        std::fs::write(root.join("bad.pid"), "nginx\n").unwrap();
        let error = WorkerWatch::before_reload(root, &root.join("bad.pid"))
            .await
            .unwrap_err();
        assert!(error.contains("does not hold a process id"), "{error}");
    }
}
