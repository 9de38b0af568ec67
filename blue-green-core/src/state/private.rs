//! The state directory is private to the user that runs blue-green, and every file in it is
//! opened without following links and checked before it is trusted.
//!
//! blue-green usually runs as root, and whoever can write its state directory controls its
//! deploys (a `state.json` names the image that `rollback` starts; a planted symlink `lock`
//! makes root truncate the file it points at). So, as sshd's `StrictModes` does:
//!
//! - the directory is created `0700`; an existing one must be owned by this user and not
//!   writable by group or others, and every directory above it must be owned by this user or
//!   root and not writable by group or others unless it is sticky (as `/tmp` is); a symlink on
//!   the way must be owned by this user or root;
//! - files are opened with `O_NOFOLLOW` and checked with `fstat` (on the open descriptor, so no
//!   one can swap the file between the check and the use): a regular file, owned by this user,
//!   not writable by group or others; new files are created `0600`.
//!
//! A refusal is a [`ComponentError::invalid`] (exit code 2: a setup to fix, nothing was done)
//! that says whose the directory or file is and what to do.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::ComponentError;

/// Mode of a new state directory.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of a new state file.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Write bits of group and others.
const GROUP_OTHER_WRITE: u32 = 0o022;
/// The sticky bit: in such a directory only an entry's owner can rename or remove it.
const STICKY: u32 = 0o1000;

/// The effective user id of this process: the owner the state directory must have.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// `uid 65534 (nobody)`: a uid with its name from `/etc/passwd` when it has one.
pub(crate) fn describe_uid(uid: u32) -> String {
    let name = fs::read_to_string("/etc/passwd").ok().and_then(|text| {
        text.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?;
            (id.parse() == Ok(uid)).then(|| name.to_string())
        })
    });
    match name {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

fn refuse(message: String) -> ComponentError {
    ComponentError::invalid(message)
}

/// An I/O error on the state directory, as a sentence with what to check.
pub(crate) fn unusable(doing: &str, path: &Path, dir: &Path, e: io::Error) -> ComponentError {
    ComponentError::unreachable(format!(
        "cannot {doing} {}: {e}; check that state_dir {} is a directory (or can be created as one) and is writable by this user",
        path.display(),
        dir.display()
    ))
    .with_source(e)
}

/// Checks the state directory and everything above it; with `create`, makes a missing one
/// (`0700`, parents too). Returns whether the directory exists (always true with `create`).
pub(crate) fn check_dir(dir: &Path, create: bool) -> Result<bool, ComponentError> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| unusable("resolve", dir, dir, e))?
            .join(dir)
    };
    match fs::symlink_metadata(&absolute) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            // Nothing is made under a parent that another user could replace.
            if let Some(existing) = absolute.ancestors().find(|a| a.symlink_metadata().is_ok()) {
                check_links(existing, dir)?;
                let real =
                    fs::canonicalize(existing).map_err(|e| unusable("resolve", dir, dir, e))?;
                check_parents(&real, dir)?;
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&absolute)
                .map_err(|e| unusable("create the state directory", dir, dir, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(unusable("read", dir, dir, e)),
    }
    check_links(&absolute, dir)?;
    let real = fs::canonicalize(&absolute).map_err(|e| unusable("resolve", dir, dir, e))?;
    let meta = fs::metadata(&real).map_err(|e| unusable("read", dir, dir, e))?;
    if !meta.is_dir() {
        return Err(unusable(
            "use",
            dir,
            dir,
            io::Error::other("it is not a directory"),
        ));
    }
    let me = euid();
    let shown = if real == absolute {
        dir.display().to_string()
    } else {
        format!("{} (that is {})", dir.display(), real.display())
    };
    if meta.uid() != me {
        return Err(refuse(format!(
            "the state directory {shown} is owned by {}, not by this user ({}): whoever owns it controls what blue-green deploys. Remove it if this user did not make it, or `chown` it to this user and `chmod 700` it, or set state_dir to a directory of this user",
            describe_uid(meta.uid()),
            describe_uid(me)
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(refuse(format!(
            "the state directory {shown} is writable by group or others (mode {mode:04o}): another user could plant files in it. Run `chmod 700 {}`",
            real.display()
        )));
    }
    if let Some(parent) = real.parent() {
        check_parents(parent, dir)?;
    }
    Ok(true)
}

/// Checks `start` and every directory above it: owned by this user or root, and not writable
/// by group or others unless sticky.
fn check_parents(start: &Path, dir: &Path) -> Result<(), ComponentError> {
    let me = euid();
    for parent in start.ancestors() {
        let meta = fs::metadata(parent).map_err(|e| unusable("read", parent, dir, e))?;
        let mode = meta.mode() & 0o7777;
        if meta.uid() != me && meta.uid() != 0 {
            return Err(refuse(format!(
                "{} above the state directory {} is owned by {}, who could replace the state directory: set state_dir to a directory whose parents belong to this user or root",
                parent.display(),
                dir.display(),
                describe_uid(meta.uid())
            )));
        }
        if mode & GROUP_OTHER_WRITE != 0 && mode & STICKY == 0 {
            return Err(refuse(format!(
                "{} above the state directory {} is writable by group or others (mode {mode:04o}) and not sticky, so another user could replace the state directory: run `chmod go-w {}`, or set state_dir elsewhere",
                parent.display(),
                dir.display(),
                parent.display()
            )));
        }
    }
    Ok(())
}

/// Refuses a path to the state directory that goes through a symlink another user owns (a
/// link planted in a shared directory such as `/tmp`).
fn check_links(absolute: &Path, dir: &Path) -> Result<(), ComponentError> {
    let me = euid();
    let mut prefix = PathBuf::new();
    for part in absolute.components() {
        prefix.push(part);
        if matches!(part, Component::RootDir | Component::Prefix(_)) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&prefix) else {
            // `..` after a missing part, and the like: canonicalize reports it.
            continue;
        };
        if meta.file_type().is_symlink() && meta.uid() != me && meta.uid() != 0 {
            return Err(refuse(format!(
                "the path of the state directory {} goes through {}, a symbolic link owned by {}: blue-green does not follow another user's links; remove it if you did not make it, or set state_dir to a real directory",
                dir.display(),
                prefix.display(),
                describe_uid(meta.uid())
            )));
        }
    }
    Ok(())
}

/// How a state file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read only; a missing file is `None`.
    Read,
    /// Read and write, created `0600` when missing.
    ReadWrite,
    /// Read and append, created `0600` when missing.
    Append,
}

/// Opens `path` in the state directory without following a symlink, and checks on the open
/// descriptor that it is a regular file owned by this user and not writable by group or
/// others. A file opened for writing that others can read is made `0600`. `Ok(None)` when
/// the file does not exist and `access` is [`Access::Read`].
pub(crate) fn open_file(path: &Path, access: Access) -> Result<Option<File>, ComponentError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut options = OpenOptions::new();
    options.read(true);
    match access {
        Access::Read => {}
        Access::ReadWrite => {
            options.write(true).create(true).truncate(false);
        }
        Access::Append => {
            options.append(true).create(true);
        }
    }
    // O_NONBLOCK: a FIFO planted in place of a file must not hang the open.
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    options.mode(FILE_MODE).custom_flags(flags.bits() as i32);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && access == Access::Read => {
            return Ok(None)
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(refuse(format!(
                "{} is a symbolic link: blue-green does not follow links in its state directory. Remove it (and find out who made it)",
                path.display()
            )))
        }
        Err(e) => return Err(unusable("open", path, dir, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| unusable("read the metadata of", path, dir, e))?;
    check_file(path, &meta)?;
    if access != Access::Read && meta.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(|e| unusable("make private", path, dir, e))?;
    }
    Ok(Some(file))
}

/// Refuses a state file that is not a regular file of this user, or that others can write.
pub(crate) fn check_file(path: &Path, meta: &fs::Metadata) -> Result<(), ComponentError> {
    if !meta.is_file() {
        return Err(refuse(format!(
            "{} is not a regular file: blue-green keeps only regular files in its state directory. Remove it (and find out who made it)",
            path.display()
        )));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(refuse(format!(
            "{} is owned by {}, not by this user ({}): blue-green does not trust a state file another user wrote. Remove it if you do not know where it came from, or `chown` it to this user",
            path.display(),
            describe_uid(meta.uid()),
            describe_uid(me)
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(refuse(format!(
            "{} is writable by group or others (mode {mode:04o}): blue-green does not trust a state file others could have changed. Check its content, then run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// What `validate` should say about the modes of an existing state directory and its files:
/// ones that others can read (a directory of an older version, `0755`, with a `lock` of
/// `0644`) still work, but let any local user hold the lock or read the history.
pub fn loose_modes(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return found;
    };
    if meta.is_dir() && meta.mode() & 0o077 != 0 {
        found.push(format!(
            "state directory {} has mode {:04o}: other users can read it and take its lock; run `chmod 700 {}`",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        ));
    }
    for name in ["state.json", "history.jsonl", "lock"] {
        let path = dir.join(name);
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if meta.is_file() && meta.mode() & 0o077 != 0 {
                found.push(format!(
                    "{} has mode {:04o}: run `chmod 600 {}` (the next command that writes it does so too)",
                    path.display(),
                    meta.mode() & 0o7777,
                    path.display()
                ));
            }
        }
    }
    found
}
