//! What the HAProxy and Caddy tests share: a real server process in its own process group in
//! a temporary directory, stopped on drop (also when a test panics), and small measuring
//! helpers.

#![allow(dead_code)] // each test binary uses part of it

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blue_green_core::{Color, Endpoint};
use futures_util::{SinkExt, StreamExt};
use rustix::process::{Pid, Signal};
use tokio_tungstenite::tungstenite::Message;

/// How long a server gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A server process; SIGTERM then SIGKILL to its whole process group on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    /// Starts `program` with `args` in `dir`, its output going to `NAME.log` there, in a
    /// process group of its own, and killed by the kernel if this test process dies.
    pub fn spawn(
        name: &'static str,
        program: &str,
        args: &[&str],
        dir: &Path,
        env: &[(&str, &Path)],
    ) -> Result<Process, String> {
        let log = fs::File::create(dir.join(format!("{name}.log")))
            .map_err(|e| format!("cannot create {name}.log in {}: {e}", dir.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot share {name}.log: {e}"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        for (key, value) in env {
            command.env(key, value);
        }
        // SAFETY: the closure runs in the child between fork and exec and makes one
        // async-signal-safe system call (prctl); it allocates nothing and takes no locks.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
                    .map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        Ok(Process { child, name })
    }

    /// The process id (the group id too).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process itself.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the whole group: SIGTERM, then SIGKILL after the grace time. Idempotent.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let Some(group) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return;
        };
        // Not reaped yet, so the group id cannot have been reused.
        let _ = rustix::process::kill_process_group(group, Signal::TERM);
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "{} did not stop within {STOP_GRACE:?}: killing it",
            self.name
        );
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port (found by binding and releasing it; callers retry on a clash).
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot find a free loopback port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free loopback port: {e}"))
}

/// Waits until `ready` says so, the process exits, or `deadline` passes.
pub async fn wait_until<F, Fut>(
    process: &mut Process,
    deadline: Duration,
    log: &Path,
    mut ready: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    let name = process.name;
    let said = || {
        fs::read_to_string(log)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    loop {
        if let Some(status) = process.exited() {
            return Err(format!(
                "{name} exited ({status}) while starting; it said: {}",
                said()
            ));
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "{name} was not ready within {deadline:?}; it said: {}",
                said()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The colors that `n` requests to `url`, each on a new connection, answer.
pub async fn colors_through(url: &str, n: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..n {
        let body = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap();
        seen.push(
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    seen
}

/// The value at fraction `p` of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// A WebSocket echo server on a free loopback port that answers every text message with
/// `COLOR: message`.
pub async fn websocket_server(color: Color) -> (Endpoint, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            sessions.spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = message {
                        let answer = format!("{color}: {text}");
                        if ws.send(Message::text(answer)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (Endpoint::new("127.0.0.1", port), task)
}
