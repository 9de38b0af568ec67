//! A `blue-green proxy run` of the bench's own, for the throughput phase (flags of its
//! choosing, with or without a state file).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::free_port;

/// A running `blue-green proxy run`; killed on drop.
pub(crate) struct ProxyProcess {
    child: tokio::process::Child,
    /// The port it listens on, on 127.0.0.1.
    pub(crate) port: u16,
}

impl ProxyProcess {
    /// Starts the proxy with its control socket `dir/proxy.sock`, its log in `dir/proxy.log`,
    /// its routes in `dir/proxy.json` if `state`, and `extra` flags.
    pub(crate) async fn start(
        binary: &Path,
        dir: &Path,
        state: bool,
        extra: &[&str],
    ) -> Result<ProxyProcess, String> {
        let port = free_port()?;
        let socket = dir.join("proxy.sock");
        let log = std::fs::File::create(dir.join("proxy.log"))
            .map_err(|e| format!("could not create the proxy's log: {e}"))?;
        let mut command = tokio::process::Command::new(binary);
        command
            .args([
                "proxy",
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--control",
            ])
            .arg(&socket)
            .args(extra);
        if state {
            command.arg("--state").arg(dir.join("proxy.json"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start `blue-green proxy run`: {e}"))?;
        let began = std::time::Instant::now();
        while !socket.exists() {
            if began.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "`blue-green proxy run` made no control socket within 10s; see {}",
                    dir.join("proxy.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ProxyProcess { child, port })
    }

    /// The proxy's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The proxy's peak and current resident memory, KiB (`VmHWM`, `VmRSS`).
    pub(crate) fn memory_kib(&self) -> (Option<u64>, Option<u64>) {
        let Some(pid) = self.pid() else {
            return (None, None);
        };
        (
            crate::child::status_kib(pid, "VmHWM"),
            crate::child::status_kib(pid, "VmRSS"),
        )
    }
}
