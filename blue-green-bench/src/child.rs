//! Runs one command to its end and measures it: wall time, exit code, every stdout line as it
//! arrived, and the peak resident memory from `wait4`'s rusage.
//!
//! `wait4` is used instead of `std::process::Child::wait` because only it hands back the child's
//! rusage. Linux reports in `ru_maxrss` the highest of the child and the descendants it waited
//! for, so for `blue-green` that also covers the short `nginx -t` and `nginx -s reload` it runs
//! (and `docker-compose`, with the compose runtime). It also keeps the high-water mark of the
//! memory the child had between `fork` and `exec`, a copy of this bench's own: once the bench
//! holds many load samples (a long run), `ru_maxrss` shows the bench, not the command. The
//! process's own high-water mark is therefore read as well, from `VmHWM` in
//! `/proc/PID/status`, sampled every 10 ms while it runs.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// From spawn to reaped.
    pub wall: Duration,
    /// Each stdout line and when it arrived, relative to the spawn.
    pub stdout: Vec<(Duration, String)>,
    /// All of stderr.
    pub stderr: String,
    /// Peak resident memory of the process and the children it waited for, KiB (`wait4`).
    /// It also holds the bench's own resident memory when it spawned the process: Linux keeps
    /// the high-water mark of the memory a process had before its `exec`, which for a spawned
    /// child is the parent's. In a long run, whose samples make the bench grow, this grows too;
    /// [`Finished::own_hwm_kib`] is the process's own.
    pub max_rss_kib: u64,
    /// Peak resident memory of the process alone, KiB (last `VmHWM` seen), if it was read.
    pub own_hwm_kib: Option<u64>,
    /// True when it ran past its timeout and was killed.
    pub timed_out: bool,
}

/// Runs `program` with `args` and extra `env` to its end, killing it with SIGKILL after
/// `timeout`. Blocks the calling thread: call it from `spawn_blocking`.
pub fn run_measured(
    program: &Path,
    args: &[OsString],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Finished, String> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", program.display()))?;
    let pid = child.id() as libc::pid_t;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(out) = stdout {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => lines.push((started.elapsed(), l)),
                    Err(_) => break,
                }
            }
        }
        lines
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut err) = stderr {
            let _ = err.read_to_string(&mut text);
        }
        text
    });

    // The watchdog kills the child only if the waiter has not reported it reaped.
    let (reaped_tx, reaped_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = reaped_rx.recv_timeout(timeout) {
            // SAFETY: plain syscall; the pid is our unreaped child (the waiter has not
            // reported it reaped), so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut hwm = None;
        // Stops as soon as the waiter says the child is reaped, before its pid can be reused.
        while let Err(mpsc::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_millis(10))
        {
            if let Some(kib) = vm_hwm_kib(pid) {
                hwm = Some(kib);
            }
        }
        hwm
    });

    let (status, rusage) = wait4(pid)?;
    let wall = started.elapsed();
    let _ = reaped_tx.send(());
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let own_hwm_kib = sampler.join().unwrap_or(None);
    // `child` was reaped by wait4 above; dropping it does not wait again.
    drop(child);
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    Ok(Finished {
        code,
        wall,
        stdout,
        stderr,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
        own_hwm_kib,
        timed_out,
    })
}

/// `VmHWM` of a running process, KiB; `None` once it has exited (a zombie has no memory).
fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
    status_kib(pid as u32, "VmHWM")
}

/// A memory field (`VmRSS`, `VmHWM`) of `/proc/PID/status`, KiB; `None` when the process or
/// the field is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user and system, all threads) of a running process, microseconds; `None` once it
/// is gone. From `/proc/PID/stat`, in clock ticks.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields that follow are counted
    // from its closing parenthesis. utime and stime are fields 14 and 15 of the line.
    let mut after = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = after.nth(11)?.parse().ok()?;
    let stime: u64 = after.next()?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some((utime + stime) * 1_000_000 / ticks)
}

fn wait4(pid: libc::pid_t) -> Result<(libc::c_int, libc::rusage), String> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value that wait4 overwrites.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r == pid {
            return Ok((status, rusage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waiting for process {pid} failed: {err}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_while_the_process_works() {
        let me = std::process::id();
        let before = cpu_us(me).expect("our own /proc/PID/stat is readable");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut spin = 0u64;
        // 20 ms of CPU at least: two ticks at the usual 100 Hz.
        while cpu_us(me).unwrap() < before + 20_000 {
            assert!(std::time::Instant::now() < deadline, "no CPU time counted");
            for i in 0..100_000u64 {
                spin = std::hint::black_box(spin.wrapping_add(i));
            }
        }
        assert!(cpu_us(u32::MAX).is_none(), "no such process");
    }

    #[test]
    fn measures_exit_code_lines_and_memory() {
        let args: Vec<OsString> = ["-c", "echo one; echo two; echo oops >&2; exit 7"]
            .iter()
            .map(OsString::from)
            .collect();
        let f = run_measured(Path::new("/bin/sh"), &args, &[], Duration::from_secs(10)).unwrap();
        assert_eq!(f.code, Some(7));
        let lines: Vec<&str> = f.stdout.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(f.stderr.trim(), "oops");
        assert!(f.max_rss_kib > 0);
        assert!(!f.timed_out);
    }

    #[test]
    fn samples_the_own_high_water_mark_of_a_running_process() {
        let args: Vec<OsString> = ["0.3"].iter().map(OsString::from).collect();
        let f = run_measured(Path::new("/bin/sleep"), &args, &[], Duration::from_secs(10)).unwrap();
        assert_eq!(f.code, Some(0));
        let own = f.own_hwm_kib.expect("VmHWM read while sleep ran");
        // (Not compared with wait4's figure: the kernel's RSS counters are approximate, and
        // either can come out a few pages higher.)
        assert!(own > 0);
    }

    #[test]
    fn kills_a_command_that_runs_past_its_timeout() {
        let args: Vec<OsString> = ["30"].iter().map(OsString::from).collect();
        let f = run_measured(
            Path::new("/bin/sleep"),
            &args,
            &[],
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(f.timed_out);
        assert_eq!(f.code, None);
        assert!(f.wall < Duration::from_secs(10));
    }
}
