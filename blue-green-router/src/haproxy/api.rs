//! HAProxy's runtime API: one command per connection on the admin socket (a `stats socket`
//! with `level admin`), answered in text and then closed by HAProxy.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blue_green_core::ComponentError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The most of an answer that is read; `show` answers for one backend are a few KiB.
const ANSWER_LIMIT: u64 = 4 << 20;
/// How much of an answer an error quotes.
const QUOTE_LIMIT: usize = 300;

/// A client of one admin socket.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeApi {
    socket: PathBuf,
    timeout: Duration,
}

impl RuntimeApi {
    /// A client of `socket`; every command must be answered within `timeout`.
    pub(crate) fn new(socket: PathBuf, timeout: Duration) -> Self {
        RuntimeApi { socket, timeout }
    }

    /// The socket's path.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one command line and returns HAProxy's answer. The command is built by the
    /// router from checked names only; a line break or `;` in it (which would start another
    /// command) is refused here too, before anything is sent.
    pub(crate) async fn send(&self, command: &str) -> Result<String, ComponentError> {
        if command.is_empty()
            || command
                .chars()
                .any(|c| c.is_control() || c == ';' || c == '#')
        {
            return Err(ComponentError::invalid(format!(
                "refusing to send `{}` to HAProxy: a runtime command is one line without `;`, `#` or control characters",
                command.escape_debug()
            )));
        }
        let socket = self.socket.display();
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| connect_error(&self.socket, e))?;
            let io = |e: io::Error| {
                ComponentError::unreachable(format!(
                    "HAProxy's admin socket {socket} broke off during `{command}`: {e}"
                ))
            };
            stream
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(io)?;
            let mut answer = Vec::new();
            (&mut stream)
                .take(ANSWER_LIMIT)
                .read_to_end(&mut answer)
                .await
                .map_err(io)?;
            Ok::<_, ComponentError>(String::from_utf8_lossy(&answer).into_owned())
        };
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                ComponentError::timeout(format!(
                    "HAProxy did not answer `{command}` on {socket} within {:?}",
                    self.timeout
                ))
            })??;
        if answer.starts_with("Permission denied") {
            return Err(ComponentError::failed(format!(
                "HAProxy refused `{command}` on {socket}: permission denied; the socket needs `level admin` (for example `stats socket {socket} mode 600 level admin` in the global section)"
            )));
        }
        if answer.starts_with("Unknown command") {
            return Err(ComponentError::failed(format!(
                "HAProxy does not know `{command}` ({}); blue-green needs HAProxy 2.0 or later",
                quote(&answer)
            )));
        }
        tracing::trace!(%command, answer = %quote(&answer), "HAProxy runtime API");
        Ok(answer)
    }

    /// Sends a command whose success is an empty answer (`set server … state`, `set weight`,
    /// `shutdown sessions`); anything else is HAProxy saying no, quoted in the error.
    pub(crate) async fn expect_empty(&self, command: &str) -> Result<(), ComponentError> {
        let answer = self.send(command).await?;
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(refused(command, &answer))
        }
    }
}

/// The error for a command HAProxy answered with a complaint.
pub(crate) fn refused(command: &str, answer: &str) -> ComponentError {
    ComponentError::failed(format!("HAProxy refused `{command}`: {}", quote(answer)))
}

/// An answer on one line, cut to [`QUOTE_LIMIT`] characters.
pub(crate) fn quote(answer: &str) -> String {
    let one_line = answer.trim().replace('\n', " | ");
    if one_line.chars().count() > QUOTE_LIMIT {
        let cut: String = one_line.chars().take(QUOTE_LIMIT).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

fn connect_error(socket: &Path, e: io::Error) -> ComponentError {
    let socket = socket.display();
    let why = match e.kind() {
        io::ErrorKind::NotFound => format!(
            "HAProxy's admin socket {socket} does not exist: is HAProxy running, with `stats socket {socket} level admin` in its global section?"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "cannot open HAProxy's admin socket {socket}: permission denied; run blue-green as a user that may (see `mode` and `user` of the stats socket)"
        ),
        io::ErrorKind::ConnectionRefused => format!(
            "nothing listens on HAProxy's admin socket {socket} (a socket file left by a stopped HAProxy?)"
        ),
        _ => format!("cannot connect to HAProxy's admin socket {socket}: {e}"),
    };
    ComponentError::unreachable(why).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_with_a_second_line_or_a_semicolon_is_never_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let api = RuntimeApi::new(path, Duration::from_secs(1));
        for bad in [
            "show stat\nset server a/b state maint",
            "show stat; set server a/b state maint",
            "show stat\r",
            "show stat # x",
            "",
        ] {
            let error = api.send(bad).await.unwrap_err();
            assert_eq!(
                error.kind,
                blue_green_core::ComponentErrorKind::Invalid,
                "{error}"
            );
        }
        // Nothing connected.
        let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        assert!(accepted.is_err(), "a refused command must not connect");
    }

    #[tokio::test]
    async fn a_missing_socket_says_how_to_set_one_up() {
        let api = RuntimeApi::new("/nonexistent/haproxy.sock".into(), Duration::from_secs(1));
        let error = api.send("show info").await.unwrap_err();
        assert_eq!(error.kind, blue_green_core::ComponentErrorKind::Unreachable);
        assert!(error.message.contains("level admin"), "{error}");
    }

    #[tokio::test]
    async fn a_silent_haproxy_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let hold = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
        let api = RuntimeApi::new(path, Duration::from_millis(100));
        let error = api.send("show info").await.unwrap_err();
        assert_eq!(error.kind, blue_green_core::ComponentErrorKind::Timeout);
        assert!(error.message.contains("within 100ms"), "{error}");
        hold.abort();
    }
}
