//! [`Error`]: everything the proxy, its control socket, its state file and its router can report.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// An error of `blue-green-proxy`. Each message is a sentence that names the address, file, app
/// or endpoint involved and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen address could not be bound.
    #[error("could not listen on {addr}: {source}; is another process using that port?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// The control socket could not be set up.
    #[error("control socket {path}: {message}")]
    ControlSocket {
        /// The socket's path.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },

    /// The state file could not be read or written.
    #[error("state file {path}: {action}: {source}")]
    StateIo {
        /// The file.
        path: PathBuf,
        /// What the proxy was doing ("reading", "writing").
        action: &'static str,
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// The state file exists but is not a state file the proxy can read. It is left as it is.
    #[error("state file {path} is corrupt: {message}; fix or remove it (the proxy never empties it silently)")]
    StateCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A compare-and-set of an app's target found another target than the one expected.
    #[error("app {app}: expected its target to be {}, but it is {}; someone else changed it, read it again", show(.expected), show(.current))]
    Conflict {
        /// The app.
        app: String,
        /// The target the caller expected.
        expected: Option<String>,
        /// The target the proxy has.
        current: Option<String>,
    },

    /// A change was refused because the proxy is handing its sockets over to a new process
    /// (`blue-green proxy run --take-over`); the new process takes it a moment later.
    #[error("the proxy is being replaced by a new process (blue-green proxy run --take-over) and takes no changes during the handover; retry in a moment")]
    HandingOver,

    /// A take-over (`blue-green proxy run --take-over`) could not get the running proxy's
    /// sockets; the running proxy serves on as before.
    #[error("taking over from the proxy on control socket {path}: {message}")]
    TakeOver {
        /// The running proxy's control socket.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },

    /// A request to the proxy was refused before anything changed (a bad app name, host, endpoint
    /// or body).
    #[error("{0}")]
    Invalid(String),

    /// The control socket could not be reached.
    #[error("could not reach the proxy's control socket {path}: {source}; is `blue-green proxy run` running with --control {path}?")]
    ControlUnreachable {
        /// The socket's path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },

    /// The control socket did not answer in time.
    #[error("the proxy's control socket {path} did not answer {what} within {secs:.1}s")]
    ControlTimeout {
        /// The socket's path.
        path: PathBuf,
        /// The request.
        what: String,
        /// The time allowed, in seconds.
        secs: f64,
    },

    /// The control socket answered with an error.
    #[error("the proxy refused {what} (HTTP {status}): {message}")]
    ControlRefused {
        /// The request.
        what: String,
        /// The HTTP status of the answer.
        status: u16,
        /// The proxy's message.
        message: String,
    },

    /// The control socket answered something that is not the proxy's JSON.
    #[error("the proxy's answer to {what} could not be read: {message}")]
    ControlProtocol {
        /// The request.
        what: String,
        /// What was wrong.
        message: String,
    },
}

fn show(target: &Option<String>) -> String {
    match target {
        Some(t) => t.clone(),
        None => "no target".to_string(),
    }
}
