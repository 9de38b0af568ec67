//! The state store reading what a crash, a full disk or a person left in `state.json` and
//! `history.jsonl`: it answers or errs with a message naming the file, never panics; the newest
//! `n` records are the tail of the whole history; and an append after any damage reads back as
//! the newest record.
//!
//! Input: one byte `n`, then the bytes of `state.json`, a 0xFF byte (never in UTF-8 text), and
//! the bytes of `history.jsonl` (no 0xFF byte: `state.json` only).

#![no_main]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;

use blue_green_core::{Command, DeployRecord, FileStore, Outcome, StateStore};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

struct Fixture {
    runtime: Runtime,
    store: FileStore,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // tmpfs when there is one: every append is fsync'd.
        let base = if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = tempfile::Builder::new()
            .prefix("bg-fuzz-state-")
            .tempdir_in(base)
            .expect("a temporary directory")
            .keep()
            .join("state");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let store = FileStore::new(dir);
        runtime
            .block_on(store.save(&Default::default()))
            .expect("the state directory is made");
        Fixture { runtime, store }
    })
}

fn put(path: &Path, bytes: Option<&[u8]>) {
    let _ = std::fs::remove_file(path);
    if let Some(bytes) = bytes {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .expect("a state file");
        file.write_all(bytes).expect("written");
    }
}

fn record() -> DeployRecord {
    let mut record = DeployRecord::new(
        Command::Deploy,
        Outcome::Succeeded,
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:01Z",
    );
    record.release = Some("fuzz-v1".into());
    record
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8);
    let (state, history) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let Fixture { runtime, store } = fixture();
    put(&store.state_path(), Some(state));
    put(&store.history_path(), history);
    let state_path = store.state_path().display().to_string();
    let history_path = store.history_path().display().to_string();

    runtime.block_on(async {
        if let Err(e) = store.load().await {
            assert!(e.message.contains(&state_path), "{e}");
        }
        let all = store.history().await;
        let recent = store.recent_history(n).await;
        match &all {
            Ok(all) => {
                let recent = recent.expect("the whole history reads, so its tail does");
                assert_eq!(recent.as_slice(), &all[all.len().saturating_sub(n)..]);
            }
            Err(e) => assert!(e.message.contains(&history_path), "{e}"),
        }
        let record = record();
        match store.append_history(&record).await {
            Ok(()) => {
                let newest = store
                    .recent_history(1)
                    .await
                    .unwrap_or_else(|e| panic!("the appended record does not read back: {e}"));
                assert_eq!(
                    newest,
                    vec![record],
                    "after {:?}",
                    String::from_utf8_lossy(history.unwrap_or_default())
                );
                if let Ok(all) = all {
                    let after = store
                        .history()
                        .await
                        .expect("the history read before the append");
                    assert_eq!(
                        after.len(),
                        all.len() + 1,
                        "an append lost or added records"
                    );
                }
            }
            Err(e) => assert!(e.message.contains(&history_path), "{e}"),
        }
    });
});
