//! The nouns every other module speaks: colors, releases, endpoints, instances and their states.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ComponentError;

/// One of the two slots an app runs in. At most one color is live at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// The blue slot.
    Blue,
    /// The green slot.
    Green,
}

impl Color {
    /// Both colors, blue first.
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    /// The other color: the idle slot when `self` is live.
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// The lowercase name, as used in names, labels and environment variables.
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Color {
    type Err = ComponentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            other => Err(ComponentError::invalid(format!(
                "`{other}` is not a color: expected `blue` or `green`"
            ))),
        }
    }
}

/// What to deploy: a release id (a version, a commit) and, optionally, the artifact that carries
/// it (an image reference, a path). The runtime decides what the artifact means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The release id shown in status and history, and passed as `BLUE_GREEN_RELEASE`.
    pub id: String,
    /// The runtime-specific artifact, for example a Docker image; `None` means the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
}

impl Release {
    /// A release with the runtime's default artifact.
    pub fn new(id: impl Into<String>) -> Self {
        Release {
            id: id.into(),
            artifact: None,
        }
    }

    /// The same release with an explicit artifact (for example `--image app:1.2`).
    pub fn with_artifact(mut self, artifact: impl Into<String>) -> Self {
        self.artifact = Some(artifact.into());
        self
    }
}

/// Where an instance answers: a host (name or IP) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = ComponentError;

    /// Parses `host:port` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ComponentError::invalid(format!(
                "`{s}` is not an endpoint: expected HOST:PORT, for example 127.0.0.1:8081"
            ))
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
            (host, port)
        } else {
            s.rsplit_once(':').ok_or_else(bad)?
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(Endpoint::new(host, port))
    }
}

/// One running (or once-started) copy of a release in a color, as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The slot it runs in.
    pub color: Color,
    /// The release id it runs.
    pub release: String,
    /// The runtime's own id for it (a container id, a compose project, a pid).
    pub id: String,
    /// Where it answers; probes go here directly, and the router sends traffic here.
    pub endpoint: Endpoint,
}

/// What the runtime says about an instance right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceState {
    /// Running (it may not be ready yet: readiness is the probe's business).
    Running,
    /// It ran and stopped.
    Exited {
        /// The exit code, when the runtime knows it.
        code: Option<i64>,
        /// Why, when the runtime knows more than the code (for example "killed: out of memory").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The runtime has no such instance.
    Missing,
}

impl InstanceState {
    /// True when the instance is running.
    pub fn is_running(&self) -> bool {
        matches!(self, InstanceState::Running)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceState::Running => f.write_str("running"),
            InstanceState::Exited { code, reason } => {
                f.write_str("exited")?;
                if let Some(code) = code {
                    write!(f, " with code {code}")?;
                }
                if let Some(reason) = reason {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            InstanceState::Missing => f.write_str("missing"),
        }
    }
}

/// The answer of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "health", content = "reason", rename_all = "snake_case")]
pub enum Health {
    /// The instance answered as expected.
    Healthy,
    /// It did not; the reason says what was seen (connect error, status, body, timeout).
    Unhealthy(String),
}

impl Health {
    /// True for [`Health::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// A validated app name: `[a-z0-9][a-z0-9_-]{0,62}`. It goes into container names, compose
/// project names, file names and labels, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    /// Checks `name` against the pattern.
    pub fn new(name: impl Into<String>) -> Result<Self, ComponentError> {
        let name = name.into();
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !first_ok || !rest_ok || name.len() > 63 {
            return Err(ComponentError::invalid(format!(
                "`{name}` is not a valid app name: use 1 to 63 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit"
            )));
        }
        Ok(AppName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AppName {
    type Error = ComponentError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AppName::new(value)
    }
}

impl From<AppName> for String {
    fn from(value: AppName) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_other_flips() {
        assert_eq!(Color::Blue.other(), Color::Green);
        assert_eq!(Color::Green.other(), Color::Blue);
        assert_eq!("green".parse::<Color>().unwrap(), Color::Green);
        assert!("red".parse::<Color>().is_err());
    }

    #[test]
    fn endpoint_parses_v4_v6_and_refuses_junk() {
        assert_eq!(
            "127.0.0.1:8081".parse::<Endpoint>().unwrap(),
            Endpoint::new("127.0.0.1", 8081)
        );
        let v6: Endpoint = "[::1]:80".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:80");
        for bad in ["", "host", ":80", "h:0", "h:99999", "h:x"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn app_name_pattern() {
        assert!(AppName::new("study-pot").is_ok());
        assert!(AppName::new("a").is_ok());
        for bad in ["", "-a", "A", "a/b", "a;b", "a b", &"x".repeat(64)] {
            assert!(AppName::new(bad).is_err(), "{bad} should be refused");
        }
    }
}
