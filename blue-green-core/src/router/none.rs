//! [`NoneRouter`]: for setups where something else routes; it only records the target.

use std::path::PathBuf;

/// Records the target in a file (so that `target()` survives restarts). (Placeholder.)
#[derive(Debug, Clone)]
pub struct NoneRouter {
    path: PathBuf,
}

impl NoneRouter {
    /// A router that records its target in `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        NoneRouter { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}
