//! [`OneShot`]: a server on loopback for one connection that reads one request head, writes a
//! fixed answer (or none) and closes, cleanly or with a reset: what a client does when a server
//! answers oddly or goes away mid-exchange.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the server ends the connection after its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// A plain close (FIN).
    Clean,
    /// A reset (`SO_LINGER` 0): the client reads `Connection reset by peer`.
    Reset,
}

/// The server; [`OneShot::finish`] waits for its one connection to be done.
pub struct OneShot {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl OneShot {
    /// Starts it: for one connection, reads a request head, writes `answer` (possibly empty)
    /// and closes the connection as `close` says.
    pub async fn start(answer: &'static [u8], close: Close) -> OneShot {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accepting the client");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("reading the request");
                assert!(n > 0, "the client closed before sending its request");
                head.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer).await.expect("writing the answer");
            if close == Close::Reset {
                stream.set_zero_linger().expect("setting SO_LINGER");
            }
        });
        OneShot { addr, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the connection has been served and closed; panics with the server's
    /// assertion if it failed.
    pub async fn finish(self) {
        self.task.await.expect("the one-shot server failed");
    }
}
