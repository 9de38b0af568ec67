//! The `lock` file: held with `flock(2)` (through `fs4`) for the whole command, and naming its
//! holder as JSON. The kernel releases the lock when the holder dies, but the name stays in the
//! file: the next command takes the lock and reports the dead holder.
//!
//! The file is opened like every state file (no symlink followed, a regular `0600` file of
//! this user). After `flock` succeeds, the locked file is compared (device and inode) with what
//! the path names now: a file renamed away and replaced between the open and the lock would
//! otherwise let two commands each hold "the" lock. On a mismatch the lock is taken again.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs4::FileExt;

use crate::error::{ComponentError, LockHolder};
use crate::state::private::{self, Access};

/// How long a second command waits for the lock's holder to write its name, when it found the
/// lock taken but the file still empty (the holder is between `flock` and its write).
const HOLDER_WRITE_GRACE: Duration = Duration::from_secs(1);

/// How many times the lock is taken again when its file was replaced in the meantime.
const REPLACED_RETRIES: usize = 5;

fn io_error(doing: &str, path: &Path, e: io::Error) -> ComponentError {
    let dir = path.parent().unwrap_or(Path::new("."));
    private::unusable(doing, path, dir, e)
}

/// The held `lock` file. Dropping it clears the holder's name, then unlocks.
///
/// The release runs synchronously in `drop` (a truncate of a few bytes): deferring it to a
/// background task would let the next command see the lock still taken, or a stale name after
/// the runtime shuts down.
#[derive(Debug)]
pub(crate) struct LockGuard {
    file: File,
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(e) = self.file.set_len(0) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not clear the lock holder");
        }
        if let Err(e) = FileExt::unlock(&self.file) {
            // Closing the file (right after this) releases the lock anyway.
            tracing::warn!(path = %self.path.display(), error = %e, "could not unlock");
        }
    }
}

/// What one try to take the lock found.
pub(crate) enum Attempt {
    /// Taken; with the previous holder when its process was gone.
    Taken(LockGuard, Option<LockHolder>),
    /// Someone holds it.
    Held(LockHolder),
}

/// Tries to take the lock once (no waiting for a holder to finish).
pub(crate) fn try_lock(
    dir: &Path,
    path: &Path,
    holder: &LockHolder,
) -> Result<Attempt, ComponentError> {
    try_lock_with(dir, path, holder, &mut || {})
}

/// [`try_lock`], running `before_flock` between the open and the `flock` (the window that the
/// inode comparison closes; tests replace the file there).
pub(crate) fn try_lock_with(
    dir: &Path,
    path: &Path,
    holder: &LockHolder,
    before_flock: &mut dyn FnMut(),
) -> Result<Attempt, ComponentError> {
    private::check_dir(dir, true)?;
    for _ in 0..REPLACED_RETRIES {
        // A fresh open file description every time: flock(2) locks belong to it, so two
        // stores in one process exclude each other just like two processes do.
        let Some(mut file) = private::open_file(path, Access::ReadWrite)? else {
            continue;
        };
        before_flock();
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Ok(Attempt::Held(read_live_holder(&mut file, path)));
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io_error("lock", path, e)),
        }
        if !still_named_by(&file, path) {
            tracing::warn!(
                path = %path.display(),
                "the lock file was replaced while it was being locked; taking it again"
            );
            // Dropping the file unlocks it.
            continue;
        }
        return take(file, path, holder).map(|(guard, previous)| Attempt::Taken(guard, previous));
    }
    Err(ComponentError::invalid(format!(
        "the lock file {} was replaced {REPLACED_RETRIES} times while it was being locked: something else is renaming or deleting files in the state directory; stop it, then run the command again",
        path.display()
    )))
}

/// Whether `path` still names the open `file` (same device and inode).
fn still_named_by(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// Writes `holder` into the locked file; returns the guard and the previous holder if its
/// process is gone.
fn take(
    mut file: File,
    path: &Path,
    holder: &LockHolder,
) -> Result<(LockGuard, Option<LockHolder>), ComponentError> {
    let previous = read_holder(&mut file).map_err(|e| io_error("read the lock file", path, e))?;
    let guard = LockGuard {
        file,
        path: path.to_path_buf(),
    };
    let json = serde_json::to_vec(holder).map_err(|e| {
        ComponentError::failed(format!(
            "cannot serialize the lock holder for {}: {e}",
            path.display()
        ))
    })?;
    write_holder(&guard.file, &json).map_err(|e| io_error("write the lock holder to", path, e))?;
    let taken_over_from = previous.filter(|prev| {
        let gone = holder_is_gone(prev);
        if !gone {
            // The flock was free, so it does not hold the lock: its pid was probably reused.
            tracing::warn!(
                path = %path.display(),
                previous = %prev,
                "the lock file named a holder whose pid is alive but that did not hold the lock"
            );
        }
        gone
    });
    Ok((guard, taken_over_from))
}

fn write_holder(mut file: &File, json: &[u8]) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(json)?;
    file.sync_all()
}

/// Most bytes of a holder's name read from the lock file (a name is some 200 bytes).
const MAX_HOLDER_BYTES: u64 = 64 << 10;

/// The holder named in the lock file, if any (an empty or unreadable name is none).
fn read_holder(file: &mut File) -> io::Result<Option<LockHolder>> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    if (&mut *file)
        .take(MAX_HOLDER_BYTES)
        .read_to_string(&mut text)
        .is_err()
    {
        return Ok(None);
    }
    Ok(serde_json::from_str(&text).ok())
}

/// The holder of a lock someone else holds. It writes its name right after taking the lock, so
/// an empty file gets a short grace; after that, the holder is reported as unknown.
fn read_live_holder(file: &mut File, path: &Path) -> LockHolder {
    let deadline = Instant::now() + HOLDER_WRITE_GRACE;
    loop {
        if let Ok(Some(holder)) = read_holder(file) {
            return holder;
        }
        if Instant::now() >= deadline {
            return LockHolder {
                pid: 0,
                host: "an unknown host".into(),
                since: None,
                command: format!(
                    "a process that did not write its name into {} (see `fuser {}`)",
                    path.display(),
                    path.display()
                ),
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a holder named in a lock file we could lock is gone. On this host that is a pid check;
/// a holder on another host (a shared state dir) cannot be checked, and since the lock was free
/// it is taken to be gone.
fn holder_is_gone(holder: &LockHolder) -> bool {
    // Spelled as the engine spells its own host, so that the two compare equal.
    let here = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-host".to_string());
    if holder.host != here {
        return true;
    }
    if holder.pid == std::process::id() {
        // A lock of this very process that was released without clearing its name.
        return false;
    }
    !pid_is_alive(holder.pid)
}

fn pid_is_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        // It exists, but belongs to another user.
        Err(rustix::io::Errno::PERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(command: &str) -> LockHolder {
        LockHolder {
            pid: std::process::id(),
            host: "here".into(),
            since: Some(time::macros::datetime!(2026-11-25 10:00 UTC)),
            command: command.into(),
        }
    }

    #[test]
    fn a_lock_file_replaced_between_open_and_flock_is_locked_again() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let mut replaced = 0;
        // `mv lock lock.old; touch lock` right after our open: the file we would lock is no
        // longer the one a second command opens.
        let mut replace = || {
            if replaced == 0 {
                std::fs::rename(&path, tmp.path().join("lock.old")).unwrap();
                std::fs::write(&path, b"").unwrap();
            }
            replaced += 1;
        };
        let Attempt::Taken(guard, _) =
            try_lock_with(tmp.path(), &path, &holder("deploy"), &mut replace).unwrap()
        else {
            panic!("the lock should be free");
        };
        assert_eq!(replaced, 2, "the lock should have been taken a second time");
        assert!(still_named_by(&guard.file, &path));
        match try_lock(tmp.path(), &path, &holder("rollback")).unwrap() {
            Attempt::Held(h) => assert_eq!(h.command, "deploy"),
            Attempt::Taken(..) => panic!("two commands hold the lock at once"),
        }
    }

    #[test]
    fn a_lock_file_replaced_every_time_is_an_error_not_a_loop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let mut replace = || {
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, b"").unwrap();
        };
        let err = match try_lock_with(tmp.path(), &path, &holder("deploy"), &mut replace) {
            Err(e) => e,
            Ok(_) => panic!("expected an error"),
        };
        assert!(err.message.contains("was replaced"), "{err}");
    }
}
