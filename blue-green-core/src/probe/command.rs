//! [`CommandProbe`]: runs an argv (never through a shell); exit 0 is healthy.

use std::time::Duration;

/// Runs a program with `BLUE_GREEN_COLOR`, `BLUE_GREEN_RELEASE` and `BLUE_GREEN_ENDPOINT` in its
/// environment. (Placeholder: being implemented.)
#[derive(Debug, Clone)]
pub struct CommandProbe {
    argv: Vec<String>,
    timeout: Duration,
}

impl CommandProbe {
    /// A probe that runs `argv` (program first) and kills it after `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        CommandProbe { argv, timeout }
    }

    /// The argv.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The kill timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}
