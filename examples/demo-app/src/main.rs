//! `demo-app`: the small web app that the blue-green examples, tests and benchmark deploy.
//!
//! It uses the standard library only, so it builds as a static binary that runs in a
//! `FROM scratch` image:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" \
//!     cargo build --release -p demo-app --target x86_64-unknown-linux-gnu
//! ```
//!
//! # Configuration (environment)
//!
//! | variable | meaning |
//! |---|---|
//! | `PORT` | port to listen on (default 8080) |
//! | `HOST` | address to listen on (default `0.0.0.0`) |
//! | `BLUE_GREEN_COLOR`, `BLUE_GREEN_RELEASE` | shown by `/` and `/health` |
//! | `START_DELAY_MS` | wait this long before listening (a slow start) |
//! | `CRASH_ON_START=1` | print why and exit with code 1 at once |
//! | `NEVER_HEALTHY=1` | `/health` answers 503 |
//! | `UNHEALTHY_AFTER_TRAFFIC_MS` | `/health` answers 503 from this long after the first request to another path (live traffic: probes only ask `/health`), to test the watch after a switch |
//! | `SIGTERM_MODE` | `graceful` (default): stop accepting, finish in-flight requests, exit 0; `abort`: exit at once with code 143 |
//! | `IGNORE_SIGTERM=1` | ignore SIGTERM (a process that refuses to stop) |
//! | `LOG_FLOOD=1` | write 4 KiB log lines to stdout and stderr without end (about 4 MB/s together) |
//! | `CLOSE_LISTENER=1` | open the listener, close it at once, and keep running (a server whose accept loop died) |
//! | `BROKEN_ROOT=1` | `/` answers 500 while `/health` stays 200 (a health check that lies) |
//!
//! # Endpoints
//!
//! - `GET /health`: 200 with the body `{color} {release}` (503 with `NEVER_HEALTHY=1`);
//! - `GET /`: 200 with `demo-app {color} {release}`;
//! - `GET|POST /slow?ms=N`: reads the request body, sleeps N ms, then answers (POST: with the
//!   body's length);
//! - `POST /echo`: `{color} {release}` on a line, then the request body.
//!
//! Every answer carries `X-Color` and `X-Release` headers. Request bodies must come with
//! `Content-Length` (no chunked encoding), as nginx sends them.
//!
//! `demo-app --check` is a health check for images without curl (`HEALTHCHECK CMD
//! ["/demo-app", "--check"]`): it asks `http://127.0.0.1:$PORT/health` and exits 0 on a 200.
//!
//! One-off tasks, for a release command run in a container of the image (whose entrypoint is
//! the app, so the command is its arguments), instead of serving:
//!
//! - `demo-app --print-env NAME...`: prints `NAME=value` (or `NAME is not set`) per name, exits 0;
//! - `demo-app --exit CODE TEXT...`: prints the text on stderr, exits with `CODE`;
//! - `demo-app --sleep MS`: sleeps that long (ignoring SIGTERM, as a stuck migration might), exits 0.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by the SIGTERM/SIGINT handler; everything else polls it.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// How often idle connections and the accept loop look at [`SHUTDOWN`].
const POLL: Duration = Duration::from_millis(50);

/// The few libc items this program needs. Declared here instead of depending on the `libc`
/// crate so that the app has no dependencies at all; the values are Linux's.
mod sys {
    use std::os::raw::c_int;

    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;
    /// `SIG_IGN` is `(sighandler_t) 1`.
    pub const SIG_IGN: usize = 1;

    extern "C" {
        /// `signal(2)`: the handler is a function pointer, or `SIG_IGN`, passed as an address.
        pub fn signal(signum: c_int, handler: usize) -> usize;
        /// `_exit(2)`: async-signal-safe, unlike `std::process::exit`.
        pub fn _exit(status: c_int) -> !;
    }
}

extern "C" fn on_term_graceful(_signum: std::os::raw::c_int) {
    // Only an atomic store: async-signal-safe.
    SHUTDOWN.store(true, Ordering::SeqCst);
}

extern "C" fn on_term_abort(_signum: std::os::raw::c_int) {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { sys::_exit(143) }
}

#[derive(Debug, Clone)]
struct Settings {
    host: String,
    port: u16,
    color: String,
    release: String,
    start_delay: Duration,
    crash_on_start: bool,
    never_healthy: bool,
    unhealthy_after_traffic: Option<Duration>,
    sigterm: SigtermMode,
    log_flood: bool,
    close_listener: bool,
    broken_root: bool,
}

/// When the first request to a path other than `/health` came (`UNHEALTHY_AFTER_TRAFFIC_MS`).
static FIRST_TRAFFIC: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigtermMode {
    Graceful,
    Abort,
    Ignore,
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

fn settings() -> Result<Settings, String> {
    let port = match std::env::var("PORT") {
        Ok(p) => p
            .parse::<u16>()
            .map_err(|_| format!("PORT={p} is not a port number (1-65535)"))?,
        Err(_) => 8080,
    };
    let start_delay = match std::env::var("START_DELAY_MS") {
        Ok(ms) => Duration::from_millis(
            ms.parse()
                .map_err(|_| format!("START_DELAY_MS={ms} is not a number of milliseconds"))?,
        ),
        Err(_) => Duration::ZERO,
    };
    let unhealthy_after_traffic = match std::env::var("UNHEALTHY_AFTER_TRAFFIC_MS") {
        Ok(ms) => Some(Duration::from_millis(ms.parse().map_err(|_| {
            format!("UNHEALTHY_AFTER_TRAFFIC_MS={ms} is not a number of milliseconds")
        })?)),
        Err(_) => None,
    };
    let sigterm = if env_flag("IGNORE_SIGTERM") {
        SigtermMode::Ignore
    } else {
        match std::env::var("SIGTERM_MODE").as_deref() {
            Err(_) | Ok("graceful") => SigtermMode::Graceful,
            Ok("abort") => SigtermMode::Abort,
            Ok(other) => {
                return Err(format!(
                    "SIGTERM_MODE={other} is not known: use `graceful` or `abort`"
                ))
            }
        }
    };
    Ok(Settings {
        host: std::env::var("HOST").unwrap_or_else(|_| "0.0.0.0".into()),
        port,
        color: std::env::var("BLUE_GREEN_COLOR").unwrap_or_else(|_| "none".into()),
        release: std::env::var("BLUE_GREEN_RELEASE").unwrap_or_else(|_| "dev".into()),
        start_delay,
        crash_on_start: env_flag("CRASH_ON_START"),
        never_healthy: env_flag("NEVER_HEALTHY"),
        unhealthy_after_traffic,
        sigterm,
        log_flood: env_flag("LOG_FLOOD"),
        close_listener: env_flag("CLOSE_LISTENER"),
        broken_root: env_flag("BROKEN_ROOT"),
    })
}

fn main() {
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo-app: {e}");
            std::process::exit(2);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("--check") {
        std::process::exit(check(settings.port));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = task(&args) {
        std::process::exit(code);
    }
    if settings.crash_on_start {
        eprintln!("demo-app: CRASH_ON_START=1 is set, exiting with code 1 as asked");
        std::process::exit(1);
    }
    install_signal_handlers(settings.sigterm);
    if settings.log_flood {
        spawn_log_flood();
    }
    if !settings.start_delay.is_zero() {
        println!(
            "demo-app: waiting {} ms before listening (START_DELAY_MS)",
            settings.start_delay.as_millis()
        );
        sleep_unless_shutdown(settings.start_delay);
    }
    if let Err(e) = serve(Arc::new(settings)) {
        eprintln!("demo-app: {e}");
        std::process::exit(1);
    }
}

/// Runs a one-off task named by `args` (see the crate documentation); its exit code, or
/// `None` when `args` name no task.
fn task(args: &[String]) -> Option<i32> {
    let (name, rest) = args.split_first()?;
    match name.as_str() {
        "--print-env" => {
            for var in rest {
                match std::env::var(var) {
                    Ok(value) => println!("{var}={value}"),
                    Err(_) => println!("{var} is not set"),
                }
            }
            Some(0)
        }
        "--exit" => {
            let code = rest.first().and_then(|c| c.parse().ok()).unwrap_or(1);
            eprintln!("{}", rest.get(1..).unwrap_or_default().join(" "));
            Some(code)
        }
        "--sleep" => {
            let ms = rest.first().and_then(|m| m.parse().ok()).unwrap_or(0);
            println!("demo-app: sleeping {ms} ms");
            std::thread::sleep(Duration::from_millis(ms));
            Some(0)
        }
        _ => None,
    }
}

fn install_signal_handlers(mode: SigtermMode) {
    let handler = match mode {
        SigtermMode::Graceful => on_term_graceful as extern "C" fn(_) as usize,
        SigtermMode::Abort => on_term_abort as extern "C" fn(_) as usize,
        SigtermMode::Ignore => sys::SIG_IGN,
    };
    // SAFETY: the handlers only touch an atomic or call `_exit`, both async-signal-safe.
    unsafe {
        sys::signal(sys::SIGTERM, handler);
        sys::signal(sys::SIGINT, handler);
    }
}

fn sleep_unless_shutdown(total: Duration) {
    let until = Instant::now() + total;
    while Instant::now() < until && !SHUTDOWN.load(Ordering::SeqCst) {
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
}

fn serve(settings: Arc<Settings>) -> io::Result<()> {
    if SHUTDOWN.load(Ordering::SeqCst) {
        println!("demo-app: stopped before listening");
        return Ok(());
    }
    let addr = format!("{}:{}", settings.host, settings.port);
    let listener = TcpListener::bind(&addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    println!(
        "demo-app: {} {} listening on {local}",
        settings.color, settings.release
    );
    if settings.close_listener {
        drop(listener);
        println!("demo-app: closed the listener (CLOSE_LISTENER=1), still running");
        while !SHUTDOWN.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
        }
        return Ok(());
    }
    spawn_accept_waker(local);

    let in_flight = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if SHUTDOWN.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("demo-app: accept failed: {e}");
                continue;
            }
        };
        let settings = Arc::clone(&settings);
        let in_flight = Arc::clone(&in_flight);
        std::thread::spawn(move || {
            if let Err(e) = handle_connection(stream, &settings, &in_flight) {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) {
                    eprintln!("demo-app: connection error: {e}");
                }
            }
        });
    }
    drop(listener);
    println!("demo-app: SIGTERM received, no longer accepting; finishing in-flight requests");
    while in_flight.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("demo-app: all requests done, exiting");
    Ok(())
}

/// `LOG_FLOOD=1`: a release whose logs never stop, so that a test can check that nothing
/// reads them whole.
fn spawn_log_flood() {
    std::thread::spawn(|| {
        let line = format!("demo-app: LOG_FLOOD {}\n", "x".repeat(4096));
        loop {
            let _ = io::stdout().write_all(line.as_bytes());
            let _ = io::stderr().write_all(line.as_bytes());
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

/// `accept` blocks and a signal handler cannot wake it portably, so a thread watches the flag
/// and connects once to the listener to let the accept loop see it.
fn spawn_accept_waker(local: SocketAddr) {
    std::thread::spawn(move || {
        while !SHUTDOWN.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
        }
        let target = if local.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], local.port()))
        } else {
            local
        };
        let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
    });
}

/// Counts a request as in flight from its first byte until its answer is written.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    body_len: usize,
    /// The body, for `/echo` (at most [`MAX_ECHO`] bytes are kept).
    body: Vec<u8>,
}

/// Most bytes of a request body kept for `/echo`.
const MAX_ECHO: usize = 1 << 20;

fn handle_connection(
    stream: TcpStream,
    settings: &Settings,
    in_flight: &AtomicUsize,
) -> io::Result<()> {
    // A short read timeout lets an idle keep-alive connection notice a shutdown.
    stream.set_read_timeout(Some(POLL))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        // Wait for the first byte of the next request while idle.
        loop {
            match reader.fill_buf() {
                Ok([]) => return Ok(()),
                Ok(_) => break,
                Err(e) if is_timeout(&e) => {
                    if SHUTDOWN.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let _guard = InFlight::enter(in_flight);
        let request = match read_request(&mut reader)? {
            Some(r) => r,
            None => return Ok(()),
        };
        let keep_alive = request.keep_alive && !SHUTDOWN.load(Ordering::SeqCst);
        let (status, body) = respond(&request, settings);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Color: {}\r\nX-Release: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            settings.color,
            settings.release,
            if keep_alive { "keep-alive" } else { "close" },
        );
        writer.write_all(head.as_bytes())?;
        writer.write_all(body.as_bytes())?;
        writer.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads one line, retrying read timeouts (the request has started: it is finished even during
/// a shutdown).
fn read_line(reader: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> io::Result<usize> {
    let start = line.len();
    loop {
        match reader.read_until(b'\n', line) {
            Ok(_) => return Ok(line.len() - start),
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = Vec::new();
    if read_line(reader, &mut line)? == 0 {
        return Ok(None);
    }
    let request_line = String::from_utf8_lossy(&line).trim_end().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let version = parts.next().unwrap_or("HTTP/1.0").to_string();
    let mut keep_alive = version == "HTTP/1.1";
    let mut body_len = 0usize;
    loop {
        line.clear();
        if read_line(reader, &mut line)? == 0 {
            return Ok(None);
        }
        let header = String::from_utf8_lossy(&line);
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                body_len = value.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                })?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only Content-Length bodies are read; a chunked body would be mistaken for
                // the next request, so the connection is dropped instead.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunked request bodies are not supported: send Content-Length",
                ));
            } else if name.eq_ignore_ascii_case("connection") {
                if value.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    // Read the body, retrying read timeouts; keep the start of it for /echo.
    let mut left = body_len;
    let mut body = Vec::new();
    let mut buf = [0u8; 8192];
    while left > 0 {
        let want = left.min(buf.len());
        match reader.read(&mut buf[..want]) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                left -= n;
                let room = MAX_ECHO.saturating_sub(body.len());
                body.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Request {
        method,
        target,
        keep_alive,
        body_len,
        body,
    }))
}

fn respond(request: &Request, settings: &Settings) -> (&'static str, String) {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let who = format!("{} {}", settings.color, settings.release);
    if path != "/health" {
        FIRST_TRAFFIC.get_or_init(std::time::Instant::now);
    }
    let failing_since_traffic = settings
        .unhealthy_after_traffic
        .is_some_and(|after| FIRST_TRAFFIC.get().is_some_and(|t| t.elapsed() >= after));
    match (request.method.as_str(), path) {
        ("GET", "/health") => {
            if settings.never_healthy {
                (
                    "503 Service Unavailable",
                    format!("{who} unhealthy (NEVER_HEALTHY=1)"),
                )
            } else if failing_since_traffic {
                (
                    "503 Service Unavailable",
                    format!("{who} unhealthy (UNHEALTHY_AFTER_TRAFFIC_MS)"),
                )
            } else {
                ("200 OK", who)
            }
        }
        ("GET", "/") if settings.broken_root => (
            "500 Internal Server Error",
            format!("{who} broken (BROKEN_ROOT=1)\n"),
        ),
        ("GET", "/") => ("200 OK", format!("demo-app {who}\n")),
        ("GET" | "POST", "/slow") => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            // Logged so that a test can tell the request is in flight.
            println!("demo-app: {} /slow: sleeping {ms} ms", request.method);
            std::thread::sleep(Duration::from_millis(ms));
            if request.method == "POST" {
                (
                    "200 OK",
                    format!("{who} slept {ms} ms, received {} bytes\n", request.body_len),
                )
            } else {
                ("200 OK", format!("{who} slept {ms} ms\n"))
            }
        }
        ("POST", "/echo") => (
            "200 OK",
            format!("{who}\n{}", String::from_utf8_lossy(&request.body)),
        ),
        _ => ("404 Not Found", format!("{who}: no such page\n")),
    }
}

/// `--check`: GET /health on loopback; 0 when it answers 200.
fn check(port: u16) -> i32 {
    let run = || -> io::Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.1 200"))
    };
    match run() {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("demo-app --check: /health did not answer 200");
            1
        }
        Err(e) => {
            eprintln!("demo-app --check: cannot reach 127.0.0.1:{port}: {e}");
            1
        }
    }
}
