//! The config file reader: any text either becomes a checked `Config` or a `ConfigError` whose
//! problems each name the file, a line inside the file, and say something; never a panic.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use blue_green_cli::config::{parse, MAX_PROBLEMS};
use libfuzzer_sys::fuzz_target;

/// A directory with the files the seed configs name, so that checks past "the file exists"
/// are reached too.
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("bg-fuzz-config-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        for name in [
            "docker-compose.yml",
            "compose.blue.yml",
            "compose.green.yml",
            "c.yml",
        ] {
            std::fs::write(dir.join(name), "services: {}\n").expect("a compose file");
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = dir();
    let file = dir.join("blue-green.toml");
    match parse(text, &file, dir) {
        Ok(config) => {
            // A config that was accepted names a valid app.
            assert!(!config.app.as_str().is_empty());
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "an error without a problem");
            assert!(error.problems.len() <= MAX_PROBLEMS + 1, "not capped");
            let lines = text.lines().count().max(1) + 1;
            for problem in &error.problems {
                assert_eq!(problem.file, file);
                assert!(!problem.message.trim().is_empty(), "{problem:?}");
                if let Some(line) = problem.line {
                    assert!(
                        line >= 1 && line <= lines,
                        "line {line} of {lines}: {problem:?}"
                    );
                }
            }
            let _ = error.to_string();
        }
    }
});
