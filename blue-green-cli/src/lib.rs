//! The library side of the `blue-green` command: only what the binary shares with this
//! package's integration tests, which is the test hooks. Everything else lives in the binary
//! (`src/main.rs`) and in the `blue-green-*` crates it wires together.

#![forbid(unsafe_code)]

pub mod test_hooks;
