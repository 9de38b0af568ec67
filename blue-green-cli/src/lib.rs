//! The library side of the `blue-green` command: what the binary shares with this package's
//! integration tests (the test hooks) and with the fuzz targets in `fuzz/` (the config file
//! reader, [`config::parse`]). Everything else lives in the binary (`src/main.rs`) and in the
//! `blue-green-*` crates it wires together.

#![forbid(unsafe_code)]

pub mod config;
pub mod test_hooks;
