//! [`FileStore`]: state, history and lock as files in the app's state directory.

use std::path::PathBuf;

/// Keeps `state.json`, `history.jsonl` and `lock` in one directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}
