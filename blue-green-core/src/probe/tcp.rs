//! [`TcpProbe`]: healthy when a TCP connection to the endpoint opens within the timeout.

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;

use crate::model::{Health, Instance};
use crate::probe::HealthProbe;

/// Connects to the instance's endpoint once per check and closes the connection at once.
///
/// It proves that something listens, not that the app answers correctly: prefer the HTTP probe
/// when the app speaks HTTP.
///
/// ```
/// use std::time::Duration;
/// use blue_green_core::TcpProbe;
///
/// let probe = TcpProbe::new(Duration::from_secs(2));
/// assert_eq!(probe.timeout(), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
pub struct TcpProbe {
    timeout: Duration,
}

impl TcpProbe {
    /// A probe whose connect attempt (name lookup included) gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        TcpProbe { timeout }
    }

    /// The connect timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[async_trait]
impl HealthProbe for TcpProbe {
    async fn check(&self, instance: &Instance) -> Health {
        let endpoint = &instance.endpoint;
        let connect = TcpStream::connect((endpoint.host.as_str(), endpoint.port));
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(_stream)) => Health::Healthy,
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Health::Unhealthy(format!(
                    "TCP connect to {endpoint}: connection refused (nothing listens there yet)"
                ))
            }
            Ok(Err(e)) => Health::Unhealthy(format!("TCP connect to {endpoint} failed: {e}")),
            Err(_) => Health::Unhealthy(format!(
                "TCP connect to {endpoint} timed out after {:?}",
                self.timeout
            )),
        }
    }
}
