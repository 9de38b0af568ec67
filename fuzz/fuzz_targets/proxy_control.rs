//! The built-in proxy's control API, over its real Unix socket: any request (method, path and
//! body) gets an HTTP answer, and every answer with a body is JSON; a request never takes
//! the control server down.
//!
//! Input: `METHOD PATH`, a newline, then the body. The request is sent with a correct
//! `Content-Length` and `Connection: close`.

#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use blue_green_proxy::{Proxy, ProxyConfig};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

struct Fixture {
    _runtime: Runtime,
    _proxy: Proxy,
    socket: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = tempfile::Builder::new()
            .prefix("bg-fuzz-control-")
            .tempdir_in(base)
            .expect("a temporary directory")
            .keep();
        let socket = dir.join("control.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let config = ProxyConfig::new(["127.0.0.1:0".parse().expect("an address")])
            .with_control(&socket)
            .with_state_file(dir.join("proxy.json"));
        let proxy = runtime
            .block_on(Proxy::start(config))
            .expect("the proxy starts");
        Fixture {
            _runtime: runtime,
            _proxy: proxy,
            socket,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let fixture = fixture();
    let mut request = Vec::with_capacity(data.len() + 128);
    request.extend_from_slice(line);
    request.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: control\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body);

    let mut stream = UnixStream::connect(&fixture.socket).expect("the control socket accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a timeout");
    // The server may answer and close before reading a body it does not want.
    let _ = stream.write_all(&request);
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset && !answer.is_empty(),
            "no answer within 20s: {e} after {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 "),
        "not an HTTP answer: {text:?}"
    );
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !payload.is_empty() {
        assert!(
            serde_json::from_str::<serde_json::Value>(payload).is_ok(),
            "an answer that is not JSON: {head}\n\n{payload}"
        );
    }
});
