//! Atomic file replacement, shared by the state store and the file-writing routers (the none
//! router here, the proxy routers of `blue-green-router`).
//!
//! A crash at any point leaves either the old content or the new one at `path`, never a mix:
//! the bytes go to a temporary file in the same directory, which is flushed to disk, renamed
//! over the target, and then the directory itself is flushed so that the rename survives a
//! power cut.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces the content of `path` with `bytes`, atomically and durably.
///
/// The parent directory must exist. An existing file keeps its permissions; a new one gets
/// `0644` (less the umask) rather than the `0600` of a temporary file, since readers such as
/// nginx may run as another user. Blocking: call it from `spawn_blocking` in async code.
/// The error is the bare I/O error; callers add which file and what to do.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, false, false).map(drop)
}

/// Replaces the content of `path` with `bytes` like [`write_atomic`], and returns the file it
/// replaced, still open, for the caller to drop once it has answered whoever waits for the
/// write.
///
/// When a rename takes the last name of a file, the kernel releases the file there and then:
/// on ext4 it frees its blocks inside the rename, about 0.1 ms here of a write that takes 0.5
/// (a switch of the proxy waits for it). Held open, the old file is released when the
/// returned value drops instead. What is on disk is the same either way.
pub fn write_atomic_holding_old(path: &Path, bytes: &[u8]) -> io::Result<Superseded> {
    replace(path, bytes, false, true)
}

/// The file a write replaced, held open (see [`write_atomic_holding_old`]); dropping it
/// releases the file, which may take a fraction of a millisecond: drop it where that does not
/// delay anyone (a blocking thread, after the answer).
#[derive(Debug)]
#[must_use = "dropping it at once releases the old file at once; hold it until after the answer"]
pub struct Superseded(#[allow(dead_code)] Option<File>);

/// Replaces the content of `path` with `bytes` like [`write_atomic`], for a file only this user
/// may read: the new file is always `0600`, whatever was there before. The temporary file is
/// created with `O_EXCL` under a random name, and the rename replaces a symlink at `path`
/// rather than following it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, true, false).map(drop)
}

/// The one atomic replacement behind both: a temporary file beside `path` (created with
/// `O_EXCL` under a random name), written, fsync'd, renamed over `path` (a symlink there is
/// replaced, not followed), and the directory fsync'd. `private` makes it `0600`; otherwise it
/// is `0644` less the umask, or keeps the mode of the regular file it replaces. `hold_old`
/// opens the file being replaced first and returns it.
fn replace(path: &Path, bytes: &[u8], private: bool, hold_old: bool) -> io::Result<Superseded> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");

    // tempfile creates the file 0600 unless told otherwise.
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    if !private {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    if !private {
        // `symlink_metadata`: the mode of a planted symlink's target must not be copied.
        if let Ok(existing) = fs::symlink_metadata(path) {
            if existing.is_file() {
                tmp.as_file().set_permissions(existing.permissions())?;
            }
        }
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let old = if hold_old { open_old(path) } else { None };
    // On error the temporary file is removed when `PersistError` drops.
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(Superseded(old))
}

/// The regular file at `path`, opened to be held, or `None` (none there, or not a regular
/// file). Without following a symlink, and without blocking on a FIFO planted there.
fn open_old(path: &Path) -> Option<File> {
    #[cfg(unix)]
    {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = File::from(rustix::fs::open(path, flags, Mode::empty()).ok()?);
        file.metadata().ok()?.is_file().then_some(file)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Flushes a directory's entries (a rename or a new file) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for syncing here; the rename is as durable as the OS makes it.
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target.conf");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(dir.path()), vec!["target.conf".to_string()]);
    }

    #[cfg(unix)]
    #[test]
    fn keeps_the_permissions_of_an_existing_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perm.conf");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_of_a_symlinks_target_is_not_copied() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o666)).unwrap();
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        let mode = fs::symlink_metadata(&link).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o022,
            0,
            "mode {mode:o} was copied from the link's target"
        );
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[cfg(unix)]
    #[test]
    fn a_private_write_is_0600_whatever_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(entries(dir.path()), vec!["state.json".to_string()]);
    }

    #[cfg(unix)]
    #[test]
    fn a_write_holding_the_old_file_releases_it_when_dropped() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.json");
        let held = write_atomic_holding_old(&path, b"first").unwrap();
        assert!(held.0.is_none(), "nothing was there to hold");
        let first = fs::metadata(&path).unwrap().ino();

        let held = write_atomic_holding_old(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(dir.path()), vec!["proxy.json".to_string()]);
        let old = held.0.as_ref().expect("the replaced file is held");
        let meta = old.metadata().unwrap();
        assert_eq!(meta.ino(), first, "it is the file that was replaced");
        assert_eq!(meta.nlink(), 0, "and it has no name left");
        drop(held);

        // A symlink or a FIFO at the path is replaced, never opened.
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let held = write_atomic_holding_old(&fifo, b"x").unwrap();
        assert!(held.0.is_none());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let held = write_atomic_holding_old(&link, b"y").unwrap();
        assert!(held.0.is_none());
        assert_eq!(
            fs::read(&path).unwrap(),
            b"second",
            "the link's target is untouched"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("file");
        assert!(write_atomic(&path, b"x").is_err());
        assert!(!path.exists());
    }
}
