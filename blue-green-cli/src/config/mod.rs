//! The config file (`blue-green.toml`): read with serde, refused on unknown keys, checked key by
//! key, and turned into the typed [`Config`] the components are built from.
//!
//! Every error names the file, the key and the line, and says what is expected. Reading a config
//! changes nothing: no directory is created and nothing is started.

mod check;

pub use check::proxy::DEFAULT_CONTROL as DEFAULT_PROXY_CONTROL;
mod raw;

pub use check::{check_caddy, check_haproxy};

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use blue_green_core::{AppName, CommandHooks, EngineConfig, HookCommand, HttpProbeConfig};
use blue_green_docker::{ComposeConfig, DockerConfig, SwarmConfig};
use blue_green_router::caddy::CaddyConfig;
use blue_green_router::haproxy::HaproxyConfig;
use blue_green_router::NginxConfig;

/// A checked config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The app.
    pub app: AppName,
    /// Where state, history and the lock live (absolute or relative to the working directory).
    pub state_dir: PathBuf,
    /// What runs the instances.
    pub runtime: RuntimeConfig,
    /// How an instance is checked.
    pub health: HealthConfig,
    /// What routes live traffic.
    pub router: RouterConfig,
    /// Readiness, switch and timeouts for the engine.
    pub engine: EngineConfig,
    /// `[hooks]`: the programs a deploy runs at its hook points.
    pub hooks: CommandHooks,
    /// `[runtime] release_command` and `release_timeout` (docker and compose): run once per
    /// deploy in a one-off container of the new release, after the `pre_deploy` hook.
    pub release_command: Option<HookCommand>,
}

/// `[runtime]`.
#[derive(Debug, Clone)]
pub enum RuntimeConfig {
    /// `kind = "compose"`.
    Compose(ComposeConfig),
    /// `kind = "docker"`.
    Docker(DockerConfig),
    /// `kind = "swarm"`.
    Swarm(SwarmConfig),
}

impl RuntimeConfig {
    /// The kind as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            RuntimeConfig::Compose(_) => "compose",
            RuntimeConfig::Docker(_) => "docker",
            RuntimeConfig::Swarm(_) => "swarm",
        }
    }
}

/// `[health]`: one attempt's check; the timing lives in [`EngineConfig::readiness`].
#[derive(Debug, Clone)]
pub enum HealthConfig {
    /// An HTTP request to the instance's endpoint.
    Http(HttpProbeConfig),
    /// A TCP connect to the instance's endpoint.
    Tcp,
    /// A program on this machine; exit 0 is healthy.
    Command(Vec<String>),
    /// The container's own health status (`HEALTHCHECK`).
    Docker,
    /// A program run inside the container; exit 0 is healthy.
    Exec(Vec<String>),
}

/// `[router]`.
#[derive(Debug, Clone)]
pub enum RouterConfig {
    /// An nginx upstream file.
    Nginx(Box<NginxConfig>),
    /// HAProxy's runtime API: two server slots of a backend.
    Haproxy(Box<HaproxyConfig>),
    /// Caddy's admin API: the upstreams of a reverse_proxy handler.
    Caddy(Box<CaddyConfig>),
    /// blue-green's own proxy, over its control socket.
    Proxy(check::proxy::ProxyRouterConfig),
    /// Something else routes; the target is only recorded in this file.
    None {
        /// Where the target is recorded.
        target_file: PathBuf,
    },
}

impl RouterConfig {
    /// The `[router] kind` it was read from, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            RouterConfig::Nginx(_) => "nginx",
            RouterConfig::Haproxy(_) => "haproxy",
            RouterConfig::Caddy(_) => "caddy",
            RouterConfig::Proxy(_) => "proxy",
            RouterConfig::None { .. } => "none",
        }
    }
}

/// A config file that could not be used. Holds every problem found, each with its place.
#[derive(Debug)]
pub struct ConfigError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// The dotted key, for example `runtime.image`.
    pub key: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                file: file.to_path_buf(),
                line: None,
                key: None,
                message: message.into(),
            }],
        }
    }
}

/// Most problems reported for one file: a file with thousands of bad keys gets the first
/// ones and a count, not thousands of lines.
pub const MAX_PROBLEMS: usize = 50;

/// Reads and checks the config file at `path`: who may have written it, syntax, unknown keys,
/// types, values, and that the files it names exist. Touches nothing: the environment (Docker,
/// nginx) is checked by `validate`, not here.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_trusted(path)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    // Absolute paths in messages and for the runtimes, whatever the working directory.
    let dir = dir.canonicalize().unwrap_or(dir);
    parse(&text, path, &dir)
}

/// Reads the config file, refusing one that another user (other than root) owns or that group
/// or others can write: the config names the commands blue-green runs (`validate` runs the
/// router's test command) and the images it starts, usually as root, so whoever can write it
/// can run anything as root. The check is made on the open file, so the file cannot be
/// swapped between the check and the read.
fn read_trusted(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    let cannot_read = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "; pass -c PATH, or create blue-green.toml (see docs/configuration.md)"
        } else {
            ""
        };
        ConfigError::one(path, format!("cannot read the config file: {e}{hint}"))
    };
    let mut file = std::fs::File::open(path).map_err(cannot_read)?;
    let meta = file.metadata().map_err(cannot_read)?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(ConfigError::one(
            path,
            format!(
                "the config file is owned by uid {}, not by this user (uid {me}) or root: whoever can write it decides which commands and images blue-green runs. Check its content, then `chown` it to this user, or use a config file of your own",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(ConfigError::one(
            path,
            format!(
                "the config file is writable by group or others (mode {mode:04o}): whoever can write it decides which commands and images blue-green runs. Check its content, then run `chmod go-w {}`",
                path.display()
            ),
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(cannot_read)?;
    Ok(text)
}

/// Checks config `text` as if read from `file`, resolving relative paths against `dir`.
pub fn parse(text: &str, file: &Path, dir: &Path) -> Result<Config, ConfigError> {
    let newlines = newline_offsets(text);
    let source = Source {
        text,
        file,
        newlines: &newlines,
    };
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            return Err(ConfigError {
                problems: vec![source.serde_problem(&e)],
            })
        }
    };
    check::Checker::new(source, dir)
        .config(raw)
        .map_err(|e| e.capped(file))
}

/// The byte offsets of the newlines of `text`, so that a line is found by a binary search
/// rather than a scan from the start for every problem.
fn newline_offsets(text: &str) -> Vec<usize> {
    text.bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect()
}

impl ConfigError {
    /// At most [`MAX_PROBLEMS`] problems, then one that says how many more there are.
    fn capped(mut self, file: &Path) -> Self {
        if self.problems.len() > MAX_PROBLEMS {
            let more = self.problems.len() - MAX_PROBLEMS;
            self.problems.truncate(MAX_PROBLEMS);
            self.problems.push(Problem {
                file: file.to_path_buf(),
                line: None,
                key: None,
                message: format!(
                    "and {more} more problems not shown: fix the ones above and run `blue-green validate` again"
                ),
            });
        }
        self
    }
}

/// The text of the file, to turn byte spans into lines and keys.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub text: &'a str,
    pub file: &'a Path,
    /// The byte offsets of the newlines in `text`.
    pub newlines: &'a [usize],
}

impl Source<'_> {
    /// The 1-based line of byte offset `at`.
    pub fn line(&self, at: usize) -> usize {
        let at = at.min(self.text.len());
        // The number of newlines before `at`.
        self.newlines.partition_point(|&nl| nl < at) + 1
    }

    /// A problem at `span`, about `key`.
    pub fn problem(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.to_path_buf(),
            line: Some(self.line(span.start)),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// A problem from toml/serde: finds the key at the error's span and names it.
    fn serde_problem(&self, e: &toml::de::Error) -> Problem {
        let message = e.message().trim().to_string();
        let Some(span) = e.span() else {
            return Problem {
                file: self.file.to_path_buf(),
                line: None,
                key: None,
                message,
            };
        };
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let key = match missing {
            // The span is the table that lacks the field.
            Some(field) => {
                let mut path = header_at(self.text, span.start);
                if span.start == 0 && span.end >= self.text.trim_end().len() {
                    path.clear();
                }
                path.push(field.to_string());
                Some(path.join("."))
            }
            None => key_at(self.text, span.start),
        };
        let message = explain_serde_message(&message);
        Problem {
            file: self.file.to_path_buf(),
            line: Some(self.line(span.start)),
            key,
            message,
        }
    }
}

/// Adds what is expected to serde's terse messages.
fn explain_serde_message(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message}; remove it or fix its spelling (see docs/configuration.md)")
    } else if message.starts_with("missing field") {
        format!("{message}; this key is required")
    } else if message.starts_with("invalid type") {
        format!("{message}; see docs/configuration.md for the type of each key")
    } else {
        message.to_string()
    }
}

/// The `[table]` header that `at` falls under, as a path (`[]` for the top level). The header
/// line itself counts as inside its table.
fn header_at(text: &str, at: usize) -> Vec<String> {
    let at = at.min(text.len());
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    for line in text[..line_end].lines().rev() {
        let line = line.trim();
        if line.starts_with("[[") {
            return Vec::new();
        }
        if let Some(inner) = line.strip_prefix('[') {
            let name = inner.split(']').next().unwrap_or("");
            return name
                .split('.')
                .map(|p| p.trim().trim_matches('"').to_string())
                .filter(|p| !p.is_empty())
                .collect();
        }
    }
    Vec::new()
}

/// The dotted path of the key at byte `at`: the `[table]` it falls under, then the deepest key
/// (through inline tables) whose key or value covers `at`. `None` when nothing is found.
fn key_at(text: &str, at: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};

    fn walk(table: &DeTable<'_>, at: usize, path: &mut Vec<String>) {
        for (k, v) in table.iter() {
            let in_key = k.span().contains(&at);
            let in_value = v.span().contains(&at);
            if !in_key && !in_value {
                continue;
            }
            path.push(k.get_ref().to_string());
            if in_value {
                if let DeValue::Table(inner) = v.get_ref() {
                    walk(inner, at, path);
                }
            }
            return;
        }
    }

    let mut path = header_at(text, at);
    if let Ok(doc) = DeTable::parse(text) {
        let mut table = Some(doc.get_ref());
        for part in &path {
            table = table
                .and_then(|t| t.iter().find(|(k, _)| k.get_ref() == part))
                .and_then(|(_, v)| v.get_ref().as_table());
        }
        if let Some(table) = table {
            walk(table, at, &mut path);
        }
    }
    (!path.is_empty()).then(|| path.join("."))
}

#[cfg(test)]
mod tests;
