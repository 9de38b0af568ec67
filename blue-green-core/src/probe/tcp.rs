//! [`TcpProbe`]: healthy when a TCP connection to the endpoint opens within the timeout.

use std::time::Duration;

/// Connects to the instance's endpoint once per check. (Placeholder: being implemented.)
#[derive(Debug, Clone)]
pub struct TcpProbe {
    timeout: Duration,
}

impl TcpProbe {
    /// A probe whose connect attempt gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        TcpProbe { timeout }
    }

    /// The connect timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}
