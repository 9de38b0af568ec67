//! [`FileStore`]: state, history and lock as files in the app's private state directory.
//!
//! - The directory is created `0700` and refused when another user owns it or can write it (or
//!   a directory above it); every file is opened without following symlinks and checked to be a
//!   regular file of this user (see `state::private`). New files are `0600`.
//! - `state.json` is replaced atomically (temporary file, fsync, rename, fsync of the directory),
//!   so a crash leaves the old state or the new one. What is read from it is validated like the
//!   config (release ids, images): a tampered file is refused with an error naming it.
//! - Writes of one store are funnelled through one ordered gate: a save whose caller gave up
//!   (a timed-out future does not stop the blocking write under it) can never land after a
//!   later save.
//! - `history.jsonl` is append-only, read from the end and capped (see `state::history`).
//! - `lock` is held with `flock(2)` for the whole command and names its holder (see
//!   `state::lock`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::error::{ComponentError, LockHolder};
use crate::state::atomic::write_private;
use crate::state::lock::{try_lock, Attempt};
use crate::state::private::{self, Access};
use crate::state::{history, AppState, DeployRecord, Lock, LockError, StateStore};

const STATE_FILE: &str = "state.json";
const HISTORY_FILE: &str = "history.jsonl";
const LOCK_FILE: &str = "lock";

/// Most bytes read from `state.json` (a real one is a few kilobytes).
const MAX_STATE_BYTES: u64 = 1 << 20;

/// Keeps `state.json`, `history.jsonl` and `lock` in one private directory.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use blue_green_core::{FileStore, LockHolder, StateStore};
///
/// let store = FileStore::new(".blue-green");
/// let holder = LockHolder {
///     pid: std::process::id(),
///     host: "build-1".into(),
///     since: Some(blue_green_core::OffsetDateTime::now_utc()),
///     command: "deploy".into(),
/// };
/// let _lock = store.lock(&holder).await?; // held until dropped
/// let state = store.load().await?;
/// store.save(&state).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    writes: Arc<WriteGate>,
}

/// Orders the writes of one store (and its clones): one at a time, and a save never lands
/// after a save issued later. The ticket is taken when `save` is called; the gate is passed
/// inside the blocking write, so a write left running by a caller that timed out still waits
/// its turn, and finds out there that it is stale.
#[derive(Debug, Default)]
struct WriteGate {
    /// The last ticket handed out.
    issued: AtomicU64,
    /// The ticket of the last save that landed; held while a write runs.
    landed: Mutex<u64>,
}

impl FileStore {
    /// A store in `dir` (created `0700` on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore {
            dir: dir.into(),
            writes: Arc::default(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The saved state file, `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The history file, `history.jsonl`.
    pub fn history_path(&self) -> PathBuf {
        self.dir.join(HISTORY_FILE)
    }

    /// The lock file, `lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// Checks, without creating or changing anything, that the directory (when it exists) and
    /// the directories above it are private enough to be trusted: the check every command of
    /// the store makes first. Returns whether the directory exists.
    pub fn check_dir(&self) -> Result<bool, ComponentError> {
        private::check_dir(&self.dir, false)
    }

    /// What is too open about an existing state directory and its files (a directory others
    /// can read, a `lock` others can open and hold), one sentence each with the `chmod` that
    /// fixes it; empty when all is private. For `validate`: nothing is changed.
    pub fn loose_modes(&self) -> Vec<String> {
        private::loose_modes(&self.dir)
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, ComponentError>
where
    F: FnOnce() -> Result<T, ComponentError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ComponentError::failed(format!("the state store's {what} task did not finish: {e}"))
    })?
}

fn load_state(dir: &Path, path: &Path) -> Result<AppState, ComponentError> {
    if !private::check_dir(dir, false)? {
        return Ok(AppState::default());
    }
    let Some(file) = private::open_file(path, Access::Read)? else {
        return Ok(AppState::default());
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| private::unusable("read", path, dir, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ComponentError::failed(format!(
            "{} is not valid blue-green state: {e}; fix it, or move it aside and run the command again \
             (the live color is then taken from the router and the runtime, but the previous \
             release for rollback is forgotten)",
            path.display()
        ))
        .with_source(e)
    })
}

fn save_state(dir: &Path, path: &Path, state: &AppState) -> Result<(), ComponentError> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| {
        ComponentError::failed(format!(
            "cannot serialize the state for {}: {e}",
            path.display()
        ))
    })?;
    bytes.push(b'\n');
    private::check_dir(dir, true)?;
    write_private(path, &bytes).map_err(|e| private::unusable("write", path, dir, e))
}

#[async_trait]
impl StateStore for FileStore {
    async fn lock(&self, holder: &LockHolder) -> Result<Lock, LockError> {
        let dir = self.dir.clone();
        let path = self.lock_path();
        let holder = holder.clone();
        match blocking("lock", move || try_lock(&dir, &path, &holder)).await? {
            Attempt::Taken(guard, taken_over_from) => Ok(Lock::new(guard, taken_over_from)),
            Attempt::Held(holder) => Err(LockError::Held(holder)),
        }
    }

    async fn load(&self) -> Result<AppState, ComponentError> {
        let dir = self.dir.clone();
        let path = self.state_path();
        blocking("load", move || load_state(&dir, &path)).await
    }

    async fn save(&self, state: &AppState) -> Result<(), ComponentError> {
        let dir = self.dir.clone();
        let path = self.state_path();
        let state = state.clone();
        let gate = Arc::clone(&self.writes);
        let ticket = gate.issued.fetch_add(1, Ordering::SeqCst) + 1;
        blocking("save", move || {
            let mut landed = gate.landed.lock().unwrap_or_else(PoisonError::into_inner);
            if *landed > ticket {
                tracing::debug!(
                    path = %path.display(),
                    "a later save has landed already: dropping this one (its caller gave up on it)"
                );
                return Ok(());
            }
            save_state(&dir, &path, &state)?;
            *landed = ticket;
            Ok(())
        })
        .await
    }

    async fn append_history(&self, record: &DeployRecord) -> Result<(), ComponentError> {
        let dir = self.dir.clone();
        let path = self.history_path();
        let record = record.clone();
        let gate = Arc::clone(&self.writes);
        blocking("history append", move || {
            let _turn = gate.landed.lock().unwrap_or_else(PoisonError::into_inner);
            history::append(&dir, &path, &record)
        })
        .await
    }

    async fn history(&self) -> Result<Vec<DeployRecord>, ComponentError> {
        self.recent_history(usize::MAX).await
    }

    async fn recent_history(&self, n: usize) -> Result<Vec<DeployRecord>, ComponentError> {
        let dir = self.dir.clone();
        let path = self.history_path();
        blocking("history read", move || history::read_last(&dir, &path, n)).await
    }
}

// The tests use Unix processes, pids and flock(1).
#[cfg(all(test, unix))]
mod tests;
