//! The state file: the routes (and the mode), written atomically on every change, so that a
//! proxy killed at any moment and started again serves the same targets at once.

use std::fs;
use std::io;
use std::path::Path;

use blue_green_core::state::atomic::{write_atomic_holding_old, Superseded};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::gate::Mode;
use crate::routes::AppInfo;

/// The file's format version.
const VERSION: u32 = 1;

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedState {
    pub(crate) version: u32,
    pub(crate) mode: Mode,
    pub(crate) apps: Vec<AppInfo>,
}

impl SavedState {
    pub(crate) fn new(mode: Mode, apps: Vec<AppInfo>) -> SavedState {
        SavedState {
            version: VERSION,
            mode,
            apps,
        }
    }
}

/// Reads the state file; `None` when there is none yet. A file that is there but unreadable
/// is an error naming it, never an empty state.
pub(crate) fn load(path: &Path) -> Result<Option<SavedState>, Error> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::StateIo {
                path: path.to_path_buf(),
                action: "reading",
                source,
            })
        }
    };
    let corrupt = |message: String| Error::StateCorrupt {
        path: path.to_path_buf(),
        message,
    };
    let state: SavedState = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("not valid state JSON: {e}")))?;
    if state.version != VERSION {
        return Err(corrupt(format!(
            "format version {} is not the {VERSION} this proxy reads",
            state.version
        )));
    }
    Ok(Some(state))
}

/// Replaces the state file with `state`, with the one atomic replacement of
/// `blue-green-core` (a temporary file flushed to disk, renamed over the old one, the
/// directory flushed): a proxy killed or a machine that loses power at any moment keeps the
/// old routes or the new ones, never half. Blocking: call it from `spawn_blocking`. Returns
/// the replaced file, held open: drop it after answering (see [`write_atomic_holding_old`]).
pub(crate) fn save(path: &Path, state: &SavedState) -> Result<Superseded, Error> {
    let io_err = |source| Error::StateIo {
        path: path.to_path_buf(),
        action: "writing",
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(state)
        .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    bytes.push(b'\n');
    write_atomic_holding_old(path, &bytes).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_reads_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.json");
        assert_eq!(load(&path).unwrap(), None);
        let state = SavedState::new(
            Mode::Maintenance,
            vec![AppInfo {
                app: "web".into(),
                hosts: vec!["web.example".into()],
                target: Some("127.0.0.1:8081".into()),
                split: Some(crate::routes::SplitInfo {
                    next: "127.0.0.1:8082".into(),
                    percent: 20,
                }),
                preview: None,
            }],
        );
        drop(save(&path, &state).unwrap());
        assert_eq!(load(&path).unwrap(), Some(state));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.json");
        fs::write(&path, b"{\"version\": 1, \"apps\": [").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("corrupt"),
            "{e}"
        );
        assert!(fs::metadata(&path).unwrap().len() > 0, "left as it was");
    }
}
