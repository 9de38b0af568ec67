//! Bytes and listening sockets over the handover's Unix stream: the sockets ride on a short
//! message with `SCM_RIGHTS` (rustix's safe `sendmsg`/`recvmsg`), the rest is plain bytes.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Listening sockets one handover carries at most (one per `--listen`, and the control socket).
const MAX_SOCKETS: usize = 64;

/// One byte: a step of the exchange.
pub(super) async fn read_byte(stream: &UnixStream) -> Result<u8, String> {
    let mut b = [0u8; 1];
    read_exact(stream, &mut b).await?;
    Ok(b[0])
}

/// Fills `buf`; the other side closing first is an error.
pub(super) async fn read_exact(stream: &UnixStream, buf: &mut [u8]) -> Result<(), String> {
    let mut got = 0;
    while got < buf.len() {
        stream
            .readable()
            .await
            .map_err(|e| format!("reading failed: {e}"))?;
        match stream.try_read(&mut buf[got..]) {
            Ok(0) => return Err("the other process closed the connection".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("reading failed: {e}")),
        }
    }
    Ok(())
}

/// Writes all of `bytes`.
pub(super) async fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> Result<(), String> {
    while !bytes.is_empty() {
        stream
            .writable()
            .await
            .map_err(|e| format!("writing failed: {e}"))?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("writing failed: {e}")),
        }
    }
    Ok(())
}

/// Sends `bytes` (a few) with `fds` attached (`SCM_RIGHTS`).
pub(super) async fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8; 4],
    fds: &[BorrowedFd<'_>],
) -> Result<(), String> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(std::io::Error::other("the sockets do not fit one message"));
            }
            rustix::net::sendmsg(
                stream,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(std::io::Error::from)
        })
        .await
        .map_err(|e| format!("sending the sockets failed: {e}"))?;
    // The fds ride on the first byte; the rest, if the kernel took less, goes plainly.
    write_all(stream, &bytes[sent..]).await
}

/// Receives the 4 bytes [`send_with_fds`] sent, and the sockets attached to them.
pub(super) async fn recv_with_fds(stream: &UnixStream) -> Result<([u8; 4], Vec<OwnedFd>), String> {
    let mut bytes = [0u8; 4];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut fds = Vec::new();
    let got = stream
        .async_io(Interest::READABLE, || {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = rustix::net::recvmsg(
                stream,
                &mut [IoSliceMut::new(&mut bytes)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            if msg.flags.contains(ReturnFlags::CTRUNC) {
                return Err(std::io::Error::other(
                    "more sockets came than one handover carries",
                ));
            }
            Ok(msg.bytes)
        })
        .await
        .map_err(|e| format!("receiving the sockets failed: {e}"))?;
    if got == 0 {
        return Err("the running proxy closed the connection before sending its sockets".into());
    }
    if fds.is_empty() {
        return Err("the running proxy sent no sockets".into());
    }
    read_exact(stream, &mut bytes[got..]).await?;
    Ok((bytes, fds))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::os::fd::AsFd;

    use super::*;

    #[tokio::test]
    async fn sockets_pass_over_a_unix_stream_with_their_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [l1.local_addr().unwrap(), l2.local_addr().unwrap()];
        send_with_fds(&a, &7u32.to_be_bytes(), &[l1.as_fd(), l2.as_fd()])
            .await
            .unwrap();
        let (bytes, fds) = recv_with_fds(&b).await.unwrap();
        assert_eq!(u32::from_be_bytes(bytes), 7);
        let got: Vec<SocketAddr> = fds
            .into_iter()
            .map(|fd| std::net::TcpListener::from(fd).local_addr().unwrap())
            .collect();
        assert_eq!(got, addrs, "the same listening sockets, in order");
    }
}
