//! [`Error`]: why a router could not be built.
//!
//! What goes wrong while a router works (a switch nginx rejects, a verification that never sees
//! the new color) is reported through the [`Router`](blue_green_core::Router) trait as a
//! [`ComponentError`], whose kind the engine turns into an exit class. This enum covers what
//! comes before: a config that is refused, value by value, and what the router needs from the
//! machine to exist at all. It converts into a [`ComponentError`] for callers that only speak the
//! trait's language.

use blue_green_core::ComponentError;

#[cfg(feature = "nginx")]
use crate::nginx::NginxConfigError;

/// Why a router of this crate could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Values of an [`NginxConfig`](crate::NginxConfig) are refused: every problem, each naming
    /// its field.
    #[cfg(feature = "nginx")]
    #[error("the nginx router's config is refused: {}", list(.0))]
    NginxConfig(Vec<NginxConfigError>),
    /// The HTTP client that verifies switches through nginx could not be built (the TLS or DNS
    /// setup of this machine, for example).
    #[cfg(feature = "nginx")]
    #[error("could not build the HTTP client that verifies switches through nginx: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// A [`PrivateNginx`](crate::nginx::PrivateNginx) did not start, or did not listen in time.
    #[cfg(feature = "nginx")]
    #[error("the private nginx in {} did not start: {reason}", prefix.display())]
    NginxStart {
        /// Its directory (its error log is there).
        prefix: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// The refused config values, each naming its field; empty for other errors.
    #[cfg(feature = "nginx")]
    pub fn nginx_problems(&self) -> &[NginxConfigError] {
        match self {
            Error::NginxConfig(problems) => problems,
            _ => &[],
        }
    }
}

#[cfg(feature = "nginx")]
fn list(problems: &[NginxConfigError]) -> String {
    let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
    all.join("; ")
}

impl From<Error> for ComponentError {
    /// A refused config is [`Invalid`](blue_green_core::ComponentErrorKind::Invalid) (the
    /// user's to fix); anything else [`Failed`](blue_green_core::ComponentErrorKind::Failed).
    // Without a proxy feature there is no variant, and the message goes unused.
    #[cfg_attr(not(feature = "nginx"), allow(unused_variables))]
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            #[cfg(feature = "nginx")]
            Error::NginxConfig(_) => ComponentError::invalid(message),
            #[cfg(feature = "nginx")]
            Error::HttpClient(source) => ComponentError::failed(message).with_source(source),
            #[cfg(feature = "nginx")]
            Error::NginxStart { .. } => ComponentError::unreachable(message),
        }
    }
}
