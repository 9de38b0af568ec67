//! The nouns every other module speaks: colors, releases, endpoints, instances and their states.

use std::collections::BTreeMap;
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
        // `pad`, so that a width (`{:<6}`) lines colors up in tables.
        f.pad(self.as_str())
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
/// it (an image reference). The runtime decides what the artifact means.
///
/// Both parts are validated types: a release comes from the command line, from the runtime's
/// labels or from `state.json`, and goes into environment variables, labels and commands, so
/// it is checked wherever it is built, deserialization included (a `state.json` with a bad
/// release id or image is refused, not deployed).
///
/// ```
/// use blue_green_core::Release;
/// let release = Release::new("v1.4.2")?.with_artifact("registry.local/web:1.4.2")?;
/// assert_eq!(release.id, "v1.4.2");
/// assert!(Release::new("-rf").is_err());
/// # Ok::<(), blue_green_core::ComponentError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The release id shown in status and history, and passed as `BLUE_GREEN_RELEASE`.
    pub id: ReleaseId,
    /// The runtime-specific artifact, for example a Docker image; `None` means the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
}

impl Release {
    /// A release with the runtime's default artifact; refuses an id that is not a valid
    /// [`ReleaseId`].
    pub fn new(id: impl Into<String>) -> Result<Self, ComponentError> {
        Ok(Release {
            id: ReleaseId::new(id)?,
            artifact: None,
        })
    }

    /// The same release with an explicit artifact (for example `--image app:1.2`); refuses one
    /// that is not a valid [`Artifact`].
    pub fn with_artifact(mut self, artifact: impl Into<String>) -> Result<Self, ComponentError> {
        self.artifact = Some(Artifact::new(artifact)?);
        Ok(self)
    }

    /// The release of an instance the runtime reports, by the id in its label. The engine
    /// wrote that label from a valid id; one that is not (a container labelled by hand) is
    /// cleaned by [`ReleaseId::lossy`] rather than refused, so that the instance can still be
    /// reconciled.
    pub(crate) fn reported(id: &str) -> Self {
        Release {
            id: ReleaseId::lossy(id),
            artifact: None,
        }
    }
}

/// Generates the string newtype plumbing shared by [`ReleaseId`] and [`Artifact`].
macro_rules! checked_string {
    ($ty:ident) => {
        impl $ty {
            /// The value as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = ComponentError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = ComponentError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $ty::new(value)
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> Self {
                value.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $ty {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$ty> for String {
            fn eq(&self, other: &$ty) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$ty> for str {
            fn eq(&self, other: &$ty) -> bool {
                self == other.0
            }
        }
    };
}

/// Most characters in a release id: a Docker tag's limit, since ids are used as image tags.
const MAX_RELEASE_ID: usize = 128;

/// A validated release id: 1 to 128 ASCII letters, digits, `_`, `.` and `-`, starting with a
/// letter or digit. It becomes `BLUE_GREEN_RELEASE`, a container label and often an image tag,
/// and is shown in the terminal, so nothing else (no `/`, space, `;` or control character, no
/// leading `-` that a program would read as an option) is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseId(String);

impl ReleaseId {
    /// Checks `id` against the pattern.
    pub fn new(id: impl Into<String>) -> Result<Self, ComponentError> {
        let id = id.into();
        let mut chars = id.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !first_ok || !rest_ok || id.len() > MAX_RELEASE_ID {
            return Err(ComponentError::invalid(format!(
                "`{}` is not a valid release id: use 1 to 128 letters, digits, `_`, `.` and `-`, starting with a letter or digit (it becomes BLUE_GREEN_RELEASE and may be used in image tags)",
                shown(&id)
            )));
        }
        Ok(ReleaseId(id))
    }

    /// `id` if it is valid; otherwise the nearest valid id: every other character becomes `_`,
    /// a first character that is not a letter or digit gets an `x` before it, and the result
    /// is cut to 128 characters (`unknown` for an empty id).
    pub fn lossy(id: &str) -> Self {
        if let Ok(valid) = ReleaseId::new(id) {
            return valid;
        }
        let mut cleaned: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(MAX_RELEASE_ID)
            .collect();
        if cleaned.is_empty() {
            cleaned.push_str("unknown");
        } else if !cleaned.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            cleaned.insert(0, 'x');
            cleaned.truncate(MAX_RELEASE_ID);
        }
        ReleaseId(cleaned)
    }
}

checked_string!(ReleaseId);

/// Most characters in an artifact: Docker's limit for an image reference.
const MAX_ARTIFACT: usize = 255;

/// A validated artifact reference, such as a Docker image (`web:1.4.2`,
/// `registry.local:5000/team/web@sha256:...`): 1 to 255 ASCII letters, digits, `.`, `_`, `/`,
/// `:`, `@` and `-`, starting with a letter or digit, without `..`. It is passed to the runtime
/// and shown in the terminal, so it can neither be read as an option nor climb out of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Artifact(String);

impl Artifact {
    /// Checks `artifact` against the pattern.
    pub fn new(artifact: impl Into<String>) -> Result<Self, ComponentError> {
        let artifact = artifact.into();
        let mut chars = artifact.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '@' | '-'));
        if !first_ok || !rest_ok || artifact.len() > MAX_ARTIFACT || artifact.contains("..") {
            return Err(ComponentError::invalid(format!(
                "`{}` is not an image reference: expected for example web:1.4.2 or registry.local/web@sha256:... (up to 255 letters, digits, `.`, `_`, `/`, `:`, `@` and `-`, starting with a letter or digit)",
                shown(&artifact)
            )));
        }
        Ok(Artifact(artifact))
    }
}

checked_string!(Artifact);

/// A refused value as it may be shown in a message: control characters escaped, cut to a
/// length that fits a line.
fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > 200 {
        out.push_str("...");
    }
    out
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
        // A host with a `:` is an IPv6 address; any other is a name or an IPv4 address of
        // `[A-Za-z0-9._-]`. Anything else would not read back from what `Display` writes
        // (found by fuzzing: `a]:b:80`) and no router could use it.
        let host_ok = if host.contains(':') {
            host.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        if !host_ok {
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
///
/// Built with [`Instance::new`] (the type may gain fields); a runtime keeps its own data about
/// the instance (a pid and start time, a container id, a service version) in [`Instance::meta`],
/// which is saved with the state, so that [`Runtime::list`](crate::Runtime::list) can recover
/// what it started without files of its own.
///
/// ```
/// use blue_green_core::{Color, Endpoint, Instance};
///
/// let instance = Instance::new(Color::Blue, "v1", "pid-4242", Endpoint::new("127.0.0.1", 8081))
///     .with_meta("pid", "4242");
/// assert_eq!(instance.meta.get("pid").map(String::as_str), Some("4242"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Instance {
    /// The slot it runs in.
    pub color: Color,
    /// The release id it runs.
    pub release: String,
    /// The runtime's own id for it (a container id, a compose project, a pid).
    pub id: String,
    /// Where it answers; probes go here directly, and the router sends traffic here.
    pub endpoint: Endpoint,
    /// The runtime's own data about the instance, opaque to the engine (which only carries and
    /// saves it). Empty for runtimes that keep none; state files written before this field
    /// existed load with it empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl Instance {
    /// An instance of `release` in `color`, known to its runtime as `id`, answering at
    /// `endpoint`, with no runtime data.
    pub fn new(
        color: Color,
        release: impl Into<String>,
        id: impl Into<String>,
        endpoint: Endpoint,
    ) -> Self {
        Instance {
            color,
            release: release.into(),
            id: id.into(),
            endpoint,
            meta: BTreeMap::new(),
        }
    }

    /// Adds one entry of the runtime's own data (see [`Instance::meta`]).
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }
}

/// What the runtime says about an instance right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
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
    #[test]
    fn an_instance_saved_before_meta_existed_still_loads_and_meta_round_trips() {
        let old = r#"{"color":"blue","release":"v1","id":"web-blue","endpoint":{"host":"127.0.0.1","port":8081}}"#;
        let instance: Instance = serde_json::from_str(old).unwrap();
        assert_eq!(
            instance,
            Instance::new(
                Color::Blue,
                "v1",
                "web-blue",
                Endpoint::new("127.0.0.1", 8081)
            )
        );
        assert_eq!(serde_json::to_string(&instance).unwrap(), old);
        let with = instance.with_meta("pid", "42");
        let back: Instance = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back.meta.get("pid").map(String::as_str), Some("42"));
    }

    use super::*;

    #[test]
    fn a_color_takes_the_width_it_is_given() {
        assert_eq!(format!("[{:<6}]", Color::Blue), "[blue  ]");
        assert_eq!(format!("[{:<6}]", Color::Green), "[green ]");
        assert_eq!(Color::Green.to_string(), "green");
    }

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

    /// Regression (fuzz target `router_input`): a host that `Display` cannot write back, such
    /// as `[a]b]:80` or `a?b:80`, was taken; every endpoint taken must read back as itself.
    #[test]
    fn endpoint_hosts_that_do_not_read_back_are_refused() {
        for bad in [
            "3?4q&:qq]:3?4q&:34",
            "[a]b]:80",
            "[[a]:80",
            "a b:80",
            "a/b:80",
            "[x:y]:80",
            "a:b:80",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} should be refused");
        }
        for good in [
            "127.0.0.1:8081",
            "[::1]:80",
            "::1:80",
            "app_blue-1.internal:8080",
            "[fe80::1:2]:443",
        ] {
            let endpoint: Endpoint = good.parse().unwrap();
            assert_eq!(endpoint.to_string().parse::<Endpoint>().unwrap(), endpoint);
        }
    }

    #[test]
    fn release_ids_and_artifacts_are_checked() {
        assert!(Release::new("v1.4.2").is_ok());
        assert!(Release::new("20261125T101500Z").is_ok());
        for bad in [
            "",
            "-x",
            ".x",
            "../x",
            "a b",
            "a/b",
            "a;b",
            "a\nb",
            "a\u{1b}[2J",
            &"x".repeat(129),
        ] {
            assert!(Release::new(bad).is_err(), "{bad:?} should be refused");
        }
        let release = Release::new("v1").unwrap();
        assert!(release
            .clone()
            .with_artifact("registry.local:5000/web@sha256:ab12")
            .is_ok());
        for bad in [
            "",
            "-web",
            "web:1 2",
            "web;rm",
            "a/../b",
            "web\n",
            &"x".repeat(256),
        ] {
            assert!(
                release.clone().with_artifact(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn a_bad_release_id_or_artifact_is_refused_when_deserialized() {
        let ok: Release = serde_json::from_str(r#"{"id":"v1","artifact":"web:1"}"#).unwrap();
        assert_eq!(ok.id, "v1");
        assert_eq!(ok.artifact.as_deref(), Some("web:1"));
        for bad in [
            r#"{"id":"-v1"}"#,
            r#"{"id":"v1","artifact":"--privileged"}"#,
        ] {
            let err = serde_json::from_str::<Release>(bad).unwrap_err();
            assert!(err.to_string().contains("is not"), "{err}");
        }
    }

    #[test]
    fn a_reported_release_id_is_cleaned_not_refused() {
        assert_eq!(ReleaseId::lossy("v1"), "v1");
        assert_eq!(ReleaseId::lossy("a b/c"), "a_b_c");
        assert_eq!(ReleaseId::lossy("-x"), "x-x");
        assert_eq!(ReleaseId::lossy(""), "unknown");
        assert_eq!(ReleaseId::lossy(&"é".repeat(300)).len(), 128);
        for odd in ["-x", "\u{1b}]0;t\u{7}", &"y".repeat(300)] {
            assert!(
                ReleaseId::new(ReleaseId::lossy(odd).as_str()).is_ok(),
                "{odd:?}"
            );
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
