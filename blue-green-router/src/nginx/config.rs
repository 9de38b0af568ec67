//! [`NginxConfig`] and [`NginxVerify`], and the one check of their values:
//! [`NginxConfig::validate`], which reports every refused value with the [`NginxField`] it is
//! about.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::upstream::{check_directive, check_server_option, check_upstream_name};
use super::verify::OLD_WORKER_OVERLAP;

/// The most answers in a row a verification may ask for (at its fastest interval, about a
/// minute of requests): more is a typo, not a policy.
pub const MAX_VERIFY_SUCCESSES: u32 = 1000;

/// The placeholders a verification's expected body may hold.
const BODY_PLACEHOLDERS: [&str; 2] = ["color", "release"];

/// How [`NginxRouter`](super::NginxRouter) checks, after a reload, that requests through nginx
/// reach the new color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxVerify {
    /// URL through nginx, for example `http://127.0.0.1/health`: plain `http://`, with a host
    /// and without a user name or password.
    pub url: String,
    /// The body must contain this, after `{color}` and `{release}` are filled in (default
    /// `{color}`).
    pub expect_body: String,
    /// Answers in a row needed (1 to [`MAX_VERIFY_SUCCESSES`]); unless the router could watch
    /// nginx's workers (see [`NginxConfig::pid_file`]), the run must also last
    /// [`OLD_WORKER_OVERLAP`].
    pub successes: u32,
    /// Time between two requests, more than zero.
    pub interval: Duration,
    /// Give up after this long; more than [`OLD_WORKER_OVERLAP`].
    pub deadline: Duration,
}

impl NginxVerify {
    /// Verification of `url` with the defaults: the body contains `{color}`, 3 answers in a row,
    /// 100ms apart, within 10s.
    pub fn new(url: impl Into<String>) -> Self {
        NginxVerify {
            url: url.into(),
            expect_body: "{color}".into(),
            successes: 3,
            interval: Duration::from_millis(100),
            deadline: Duration::from_secs(10),
        }
    }
}

/// Everything [`NginxRouter`](super::NginxRouter) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxConfig {
    /// Upstream name, `[A-Za-z0-9_.-]{1,128}`.
    pub upstream: String,
    /// The file nginx includes; the router owns it.
    pub upstream_file: PathBuf,
    /// Options after `server HOST:PORT`, each `NAME=VALUE` (a-z and `_`, then A-Z, a-z, 0-9 and
    /// `.`) or a bare word, for example `max_fails=0` or `backup`.
    pub server_options: Vec<String>,
    /// Extra directives inside the upstream block: one of a fixed list of keywords
    /// (`keepalive`, `least_conn`, `zone`, …) and plain arguments, for example `keepalive 16`.
    pub upstream_directives: Vec<String>,
    /// argv of the config test, for example `["nginx", "-t"]`; empty to skip.
    pub test_command: Vec<String>,
    /// argv of the reload, for example `["nginx", "-s", "reload"]`.
    pub reload_command: Vec<String>,
    /// Timeout of each command.
    pub command_timeout: Duration,
    /// Optional verification through nginx.
    pub verify: Option<NginxVerify>,
    /// nginx's pid file (the `pid` directive), when nginx runs as a process on this machine.
    /// With it, [`Router::verify`](blue_green_core::Router::verify) waits until nginx's old
    /// workers stop accepting instead of the fixed [`OLD_WORKER_OVERLAP`] (and waits for that
    /// even without `verify`).
    pub pid_file: Option<PathBuf>,
}

impl NginxConfig {
    /// A config for upstream `upstream` in `upstream_file`, with the defaults: no server
    /// options or directives, `nginx -t` and `nginx -s reload` with a 30s timeout, no
    /// verification and no pid file.
    pub fn new(upstream: impl Into<String>, upstream_file: impl Into<PathBuf>) -> Self {
        NginxConfig {
            upstream: upstream.into(),
            upstream_file: upstream_file.into(),
            server_options: Vec::new(),
            upstream_directives: Vec::new(),
            test_command: vec!["nginx".into(), "-t".into()],
            reload_command: vec!["nginx".into(), "-s".into(), "reload".into()],
            command_timeout: Duration::from_secs(30),
            verify: None,
            pid_file: None,
        }
    }

    /// Sets the options after `server HOST:PORT` (see [`NginxConfig::server_options`]).
    pub fn with_server_options(mut self, options: Vec<String>) -> Self {
        self.server_options = options;
        self
    }

    /// Sets the extra directives inside the upstream block.
    pub fn with_upstream_directives(mut self, directives: Vec<String>) -> Self {
        self.upstream_directives = directives;
        self
    }

    /// Sets the argv of the config test (empty to skip it).
    pub fn with_test_command(mut self, argv: Vec<String>) -> Self {
        self.test_command = argv;
        self
    }

    /// Sets the argv of the reload.
    pub fn with_reload_command(mut self, argv: Vec<String>) -> Self {
        self.reload_command = argv;
        self
    }

    /// Sets the timeout of each command.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Verifies each switch through nginx.
    pub fn with_verify(mut self, verify: NginxVerify) -> Self {
        self.verify = Some(verify);
        self
    }

    /// Names nginx's pid file (see [`NginxConfig::pid_file`]).
    pub fn with_pid_file(mut self, pid_file: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(pid_file.into());
        self
    }

    /// Checks every value, so that nothing a user typed can add a directive of its own to the
    /// file, and a config nginx or the router could never use fails before any switch.
    /// Returns every problem, in field order, each naming its [`NginxField`].
    ///
    /// ```
    /// use blue_green_router::{NginxConfig, NginxField};
    ///
    /// let mut config = NginxConfig::new("web", "/etc/nginx/conf.d/web.conf");
    /// config.server_options = vec!["max_fails=0".into(), "weight=1;".into()];
    /// let problems = config.validate().unwrap_err();
    /// assert_eq!(problems[0].field, NginxField::ServerOption(1));
    /// ```
    pub fn validate(&self) -> Result<(), Vec<NginxConfigError>> {
        let mut problems = Vec::new();
        let mut refuse = |field, result: Result<(), String>| {
            if let Err(message) = result {
                problems.push(NginxConfigError { field, message });
            }
        };
        refuse(NginxField::Upstream, check_upstream_name(&self.upstream));
        refuse(NginxField::UpstreamFile, self.check_upstream_file());
        for (i, option) in self.server_options.iter().enumerate() {
            refuse(NginxField::ServerOption(i), check_server_option(option));
        }
        for (i, directive) in self.upstream_directives.iter().enumerate() {
            refuse(NginxField::UpstreamDirective(i), check_directive(directive));
        }
        refuse(
            NginxField::TestCommand,
            check_argv(&self.test_command, "test", true),
        );
        refuse(
            NginxField::ReloadCommand,
            check_argv(&self.reload_command, "reload", false),
        );
        refuse(
            NginxField::CommandTimeout,
            if self.command_timeout.is_zero() {
                Err("the nginx command timeout must be more than zero, for example 30s".into())
            } else {
                Ok(())
            },
        );
        if let Some(verify) = &self.verify {
            refuse(NginxField::VerifyUrl, check_verify_url(&verify.url));
            refuse(
                NginxField::VerifyBody,
                check_expect_body(&verify.expect_body),
            );
            refuse(
                NginxField::VerifySuccesses,
                check_successes(verify.successes),
            );
            refuse(
                NginxField::VerifyInterval,
                if verify.interval.is_zero() {
                    Err(
                        "the nginx verification interval must be more than zero, for example 100ms"
                            .into(),
                    )
                } else {
                    Ok(())
                },
            );
            refuse(
                NginxField::VerifyDeadline,
                if verify.deadline <= OLD_WORKER_OVERLAP {
                    Err(format!("the nginx verification deadline must be more than {OLD_WORKER_OVERLAP:?} (nginx's old workers take about that long to stop accepting), for example 10s"))
                } else {
                    Ok(())
                },
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn check_upstream_file(&self) -> Result<(), String> {
        if self.upstream_file.file_name().is_some() {
            Ok(())
        } else {
            Err(format!(
                "the nginx upstream file `{}` does not name a file",
                self.upstream_file.display()
            ))
        }
    }
}

/// Which value of an [`NginxConfig`] a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NginxField {
    /// [`NginxConfig::upstream`].
    Upstream,
    /// [`NginxConfig::upstream_file`].
    UpstreamFile,
    /// [`NginxConfig::server_options`], the one at this index.
    ServerOption(usize),
    /// [`NginxConfig::upstream_directives`], the one at this index.
    UpstreamDirective(usize),
    /// [`NginxConfig::test_command`].
    TestCommand,
    /// [`NginxConfig::reload_command`].
    ReloadCommand,
    /// [`NginxConfig::command_timeout`].
    CommandTimeout,
    /// [`NginxVerify::url`].
    VerifyUrl,
    /// [`NginxVerify::expect_body`].
    VerifyBody,
    /// [`NginxVerify::successes`].
    VerifySuccesses,
    /// [`NginxVerify::interval`].
    VerifyInterval,
    /// [`NginxVerify::deadline`].
    VerifyDeadline,
}

impl fmt::Display for NginxField {
    /// The field as a Rust path: `server_options[1]`, `verify.url`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NginxField::Upstream => f.write_str("upstream"),
            NginxField::UpstreamFile => f.write_str("upstream_file"),
            NginxField::ServerOption(i) => write!(f, "server_options[{i}]"),
            NginxField::UpstreamDirective(i) => write!(f, "upstream_directives[{i}]"),
            NginxField::TestCommand => f.write_str("test_command"),
            NginxField::ReloadCommand => f.write_str("reload_command"),
            NginxField::CommandTimeout => f.write_str("command_timeout"),
            NginxField::VerifyUrl => f.write_str("verify.url"),
            NginxField::VerifyBody => f.write_str("verify.expect_body"),
            NginxField::VerifySuccesses => f.write_str("verify.successes"),
            NginxField::VerifyInterval => f.write_str("verify.interval"),
            NginxField::VerifyDeadline => f.write_str("verify.deadline"),
        }
    }
}

/// One refused value of an [`NginxConfig`]: which field, and what is wrong with it and what is
/// expected. The message never quotes a URL's user name or password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct NginxConfigError {
    /// The field.
    pub field: NginxField,
    /// What is wrong and what is expected, as a sentence that stands without the field.
    pub message: String,
}

/// A command's argv: a program first (unless `empty_ok` and empty), no NUL anywhere.
fn check_argv(argv: &[String], what: &str, empty_ok: bool) -> Result<(), String> {
    let example = if what == "test" {
        "[\"nginx\", \"-t\"]"
    } else {
        "[\"nginx\", \"-s\", \"reload\"]"
    };
    match argv.first() {
        None if empty_ok => Ok(()),
        None => Err(format!(
            "the nginx router needs a {what} command: an argv array with the program first, for example {example}"
        )),
        Some(program) if program.trim().is_empty() => Err(format!(
            "the nginx {what} command starts with an empty program name; use for example {example}{}",
            if empty_ok { ", or [] to skip the test" } else { "" }
        )),
        Some(_) if argv.iter().any(|a| a.contains('\0')) => Err(format!(
            "an argument of the nginx {what} command contains a NUL character"
        )),
        Some(_) => Ok(()),
    }
}

/// A plain `http://` URL (which has a host, by the URL standard) without userinfo; only visible
/// ASCII.
fn check_verify_url(url: &str) -> Result<(), String> {
    let example = "for example http://127.0.0.1/health";
    let shown = without_userinfo(url);
    if let Some(bad) = url.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the nginx verification URL `{}` holds {bad:?}: write it without spaces, line breaks or other characters outside visible ASCII (percent-encode them), {example}",
            shown.escape_debug()
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("the nginx verification URL `{shown}` is not a URL ({e}): write a full http:// URL, {example}")
    })?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "the nginx verification URL `{shown}` must start with http:// (requests to nginx on this machine need no TLS, and this build has none), {example}"
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "the nginx verification URL `{shown}` must not hold a user name or password (they would show in logs, events and history): leave them out, and let nginx allow the check without them, {example}"
        ));
    }
    Ok(())
}

/// `url` with anything between `://` and an `@` in its authority replaced by `***`, so that a
/// message never quotes a user name or password, even of a text that is not a URL at all.
fn without_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &rest[at..]),
        None => url.to_string(),
    }
}

/// Only `{color}` and `{release}` placeholders, each closed.
fn check_expect_body(body: &str) -> Result<(), String> {
    let mut rest = body;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(
                "the expected body has an unclosed `{`: placeholders are written {color} and {release}"
                    .into(),
            );
        };
        let name = &after[..close];
        if !BODY_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{}}}` in the expected body: it understands {{color}} and {{release}}",
                name.escape_debug()
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// 1 to [`MAX_VERIFY_SUCCESSES`].
fn check_successes(successes: u32) -> Result<(), String> {
    if (1..=MAX_VERIFY_SUCCESSES).contains(&successes) {
        Ok(())
    } else {
        // Not quoted: a caller may have clamped a number of its own into a u32.
        Err(format!(
            "out of range: the nginx verification needs 1 to {MAX_VERIFY_SUCCESSES} answers in a row"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NginxConfig {
        let mut c = NginxConfig::new("web", "/tmp/upstream.conf");
        c.verify = Some(NginxVerify::new("http://127.0.0.1/health"));
        c
    }

    fn fields(c: &NginxConfig) -> Vec<NginxField> {
        c.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn a_good_config_passes() {
        assert_eq!(config().validate(), Ok(()));
        let mut c = config();
        c.test_command.clear();
        c.verify = None;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut c = config();
        c.upstream = "web;".into();
        c.server_options = vec!["max_fails=0".into(), "max_fails=a_b".into()];
        c.upstream_directives = vec!["zone a=b".into(), "keepalive 2".into(), "hash x".into()];
        c.reload_command = vec![];
        c.command_timeout = Duration::ZERO;
        let verify = c.verify.as_mut().unwrap();
        verify.url = "https://127.0.0.1/health".into();
        verify.expect_body = "{colour}".into();
        verify.successes = 0;
        verify.interval = Duration::ZERO;
        verify.deadline = Duration::from_millis(100);
        assert_eq!(
            fields(&c),
            [
                NginxField::Upstream,
                NginxField::ServerOption(1),
                NginxField::UpstreamDirective(0),
                NginxField::UpstreamDirective(2),
                NginxField::ReloadCommand,
                NginxField::CommandTimeout,
                NginxField::VerifyUrl,
                NginxField::VerifyBody,
                NginxField::VerifySuccesses,
                NginxField::VerifyInterval,
                NginxField::VerifyDeadline,
            ]
        );
        let problems = c.validate().unwrap_err();
        assert_eq!(
            problems[1].to_string().split(':').next(),
            Some("server_options[1]")
        );
    }

    #[test]
    fn commands_need_a_program_and_no_nul() {
        for (test, reload, field) in [
            (vec![""], vec!["nginx"], NginxField::TestCommand),
            (
                vec!["nginx", "a\0b"],
                vec!["nginx"],
                NginxField::TestCommand,
            ),
            (vec![], vec![" "], NginxField::ReloadCommand),
            (vec![], vec!["nginx", "\0"], NginxField::ReloadCommand),
        ] {
            let mut c = config();
            c.test_command = test.iter().map(|s| s.to_string()).collect();
            c.reload_command = reload.iter().map(|s| s.to_string()).collect();
            assert_eq!(fields(&c), [field], "{test:?} {reload:?}");
        }
    }

    #[test]
    fn verify_urls_are_plain_http_with_a_host() {
        for good in [
            "http://127.0.0.1/health",
            "http://[::1]:8080/",
            "http://app.internal/x?y=1",
        ] {
            assert_eq!(check_verify_url(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("https://127.0.0.1/health", "must start with http://"),
            ("file:///etc/passwd", "must start with http://"),
            ("127.0.0.1/health", "is not a URL"),
            ("http://", "is not a URL"),
            ("http://:80/health", "is not a URL"),
            ("http://127.0.0.1/he alth", "outside visible ASCII"),
            ("http://127.0.0.1/\nhealth", "outside visible ASCII"),
            ("http://user@127.0.0.1/health", "user name or password"),
        ] {
            let error = check_verify_url(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_password_in_a_verify_url_is_never_quoted() {
        for bad in [
            "http://user:s3cret@127.0.0.1/health",
            "https://user:s3cret@127.0.0.1/health",
            "ftp://user:s3cret@host/",
            "user:s3cret@127.0.0.1/health",
            "http://user:s3cret@127.0.0.1/a b",
            "http://s3cret@127.0.0.1/health",
        ] {
            let error = check_verify_url(bad).unwrap_err();
            assert!(!error.contains("s3cret"), "{bad:?}: {error}");
            assert!(!error.contains("user:"), "{bad:?}: {error}");
        }
        assert_eq!(without_userinfo("http://u:p@h:1/p@q"), "http://***@h:1/p@q");
        assert_eq!(without_userinfo("http://h/p@q"), "http://h/p@q");
    }

    #[test]
    fn expected_bodies_know_color_and_release() {
        assert_eq!(check_expect_body("{color} {release} ok"), Ok(()));
        assert!(check_expect_body("{colour}")
            .unwrap_err()
            .contains("{colour}"));
        assert!(check_expect_body("{color")
            .unwrap_err()
            .contains("unclosed"));
    }
}
