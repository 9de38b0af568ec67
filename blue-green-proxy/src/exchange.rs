//! One request on a connection of its own, the way the control client and a router's
//! verification talk to a proxy: the connection is driven in the caller's task, not spawned,
//! so that on a multi-threaded runtime no other thread has to wake up for each step.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::rt::{Read, Write};
use hyper::{Request, StatusCode};

/// Where an exchange failed.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The HTTP/1 handshake on the new connection.
    Handshake(hyper::Error),
    /// Sending the request or waiting for the answer's head.
    Send(hyper::Error),
    /// Reading the answer's body, or it was longer than the limit.
    Body(String),
}

/// Sends `req` over `io` (a new connection) and reads the whole answer, at most `limit` bytes
/// of body. The connection is closed when this returns.
pub(crate) async fn exchange<I, B>(
    io: I,
    req: Request<B>,
    limit: usize,
) -> Result<(StatusCode, Bytes), Failed>
where
    I: Read + Write + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(Failed::Handshake)?;
    let answer = async {
        let res = sender.send_request(req).await.map_err(Failed::Send)?;
        let status = res.status();
        let body = Limited::new(res.into_body(), limit)
            .collect()
            .await
            .map_err(|e| Failed::Body(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::pin!(answer, conn);
    let mut conn_ended = false;
    loop {
        tokio::select! {
            answer = answer.as_mut() => return answer,
            // The connection can end before the answer is taken (the server closed it after
            // answering): what it read is still delivered, and a failure shows in the answer.
            _ = conn.as_mut(), if !conn_ended => conn_ended = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blue_green_testkit::one_shot::{Close, OneShot};
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;

    /// One exchange with a server that answers `answer` and closes the connection.
    async fn exchange_with(
        answer: &'static [u8],
        limit: usize,
    ) -> Result<(StatusCode, Bytes), Failed> {
        let server = OneShot::start(answer, Close::Clean).await;
        let stream = TcpStream::connect(server.addr()).await.unwrap();
        let req = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        let got = exchange(TokioIo::new(stream), req, limit).await;
        server.finish().await;
        got
    }
    #[tokio::test]
    async fn an_answer_is_read_whole_even_when_the_server_closes_right_after_it() {
        let (status, body) = exchange_with(
            b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            1024,
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(&body[..], b"hello");
    }

    #[tokio::test]
    async fn a_close_without_an_answer_or_a_body_over_the_limit_fails() {
        let closed = exchange_with(b"", 1024).await;
        assert!(matches!(closed, Err(Failed::Send(_))), "{closed:?}");
        let long = exchange_with(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 4).await;
        assert!(matches!(long, Err(Failed::Body(_))), "{long:?}");
    }
}
