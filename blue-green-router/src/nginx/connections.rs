//! Counting the TCP connections nginx's workers hold open to an endpoint, for the drain's
//! report of what was still open to the old color when it stopped.
//!
//! nginx keeps no count a router can read, but the kernel does: `/proc/MASTER/net/tcp` and
//! `tcp6` list every TCP socket of nginx's network namespace with its state, remote address and
//! inode, and `/proc/WORKER/fd` links each worker's descriptors to those inodes. A connection
//! counts when it is `ESTABLISHED`, goes to the endpoint, and belongs to one of the master's
//! workers (the old ones shutting down after a reload included): so the app's other clients on
//! the same host are left out.
//!
//! This is a count for the report only, never a reason to end the drain early: a request whose
//! body an old worker is still reading (nginx buffers it before it connects), or one about to
//! connect, has no connection yet, so a count of 0 does not mean nothing more will reach the
//! old color. Once the drain time is over, what is left open is what the stop cuts: mostly
//! WebSockets and streams, since an old worker closes its idle keep-alive connections when it
//! is told to shut down.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use blue_green_core::{ComponentError, Endpoint};

use super::workers::{read_master, worker_pids};
use super::NginxRouter;

impl NginxRouter {
    /// [`open_to`] for this nginx, off the async runtime; `None` without a
    /// [`pid_file`](super::NginxConfig::pid_file).
    pub(super) async fn count_open(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Option<u64>, ComponentError> {
        let Some(pid_file) = self.config.pid_file.clone() else {
            return Ok(None);
        };
        let proc_root = self.proc_root.clone();
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || open_to(&proc_root, &pid_file, &endpoint))
            .await
            .map_err(|e| ComponentError::failed(format!("the task reading /proc failed: {e}")))?
            .map_err(|why| {
                ComponentError::failed(format!(
                    "cannot count nginx's connections to the old color: {why}"
                ))
            })
    }
}

/// `ESTABLISHED` in the `st` column of `/proc/net/tcp` (`01`).
const ESTABLISHED: u8 = 0x01;

/// The connections that the workers of the nginx master named by `pid_file` hold open to
/// `endpoint`. `Ok(None)` when they cannot be counted from here: the endpoint's host is a name
/// rather than an address (or `localhost`), the pid file names no nginx master that this
/// `/proc` shows (nginx in a container), or the workers' open files are another user's.
/// Blocking: run it off the async runtime.
pub(super) fn open_to(
    proc_root: &Path,
    pid_file: &Path,
    endpoint: &Endpoint,
) -> Result<Option<u64>, String> {
    let Some(addresses) = addresses_of(&endpoint.host) else {
        return Ok(None);
    };
    let Ok(master) = read_master(proc_root, pid_file) else {
        return Ok(None);
    };
    let mut inodes = HashSet::new();
    let workers = worker_pids(proc_root, master)
        .map_err(|e| format!("cannot list the workers of nginx's master {master}: {e}"))?;
    for worker in workers {
        // A worker that exits while being read holds nothing any more.
        match socket_inodes(&proc_root.join(worker.to_string()).join("fd")) {
            Ok(found) => inodes.extend(found),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Workers of another user (www-data, with blue-green not root): not countable from
            // here, which is no fault of the deploy.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                tracing::debug!(
                    "cannot count nginx's connections: worker {worker}'s open files: {e}"
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(format!(
                    "cannot read the open files of nginx's worker {worker}: {e}"
                ))
            }
        }
    }
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        let path = proc_root.join(master.to_string()).join("net").join(table);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            // A kernel without IPv6 has no tcp6.
            Err(e) if e.kind() == io::ErrorKind::NotFound && table == "tcp6" => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        // Row by row: the table lists every socket of the namespace, TIME_WAIT ones included,
        // which on a busy host is tens of thousands of rows (megabytes, read at every drain).
        for_each_row(io::BufReader::new(file), |socket| {
            if socket.state == ESTABLISHED
                && socket.remote_port == endpoint.port
                && addresses.contains(&socket.remote_ip)
                && inodes.contains(&socket.inode)
            {
                count += 1;
            }
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(Some(count))
}

/// The addresses an endpoint's host stands for, when it is an address (or `localhost`).
fn addresses_of(host: &str) -> Option<Vec<IpAddr>> {
    if host == "localhost" {
        return Some(vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]);
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| vec![ip.to_canonical()])
}

/// The inodes of the sockets among the descriptors in `fd_dir` (links `socket:[INODE]`).
fn socket_inodes(fd_dir: &Path) -> io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(fd_dir)? {
        let Ok(entry) = entry else { continue };
        // A descriptor closed since the listing has no link any more.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
        {
            inodes.push(inode);
        }
    }
    Ok(inodes)
}

/// One row of `/proc/net/tcp` or `tcp6`.
#[derive(Debug, PartialEq, Eq)]
struct Socket {
    remote_ip: IpAddr,
    remote_port: u16,
    /// The `st` column, two hex digits in the table.
    state: u8,
    inode: u64,
}

/// Each row of a `/proc/net/tcp` or `tcp6` table, read line by line and checked strictly: a
/// header starting with `sl`, then rows of at least 10 columns whose addresses, state and inode
/// parse. A row that does not is an error, not a row left out, so a changed format cannot make
/// the count 0.
fn for_each_row(mut table: impl io::BufRead, mut each: impl FnMut(Socket)) -> Result<(), String> {
    let mut line = String::new();
    let mut header = true;
    loop {
        line.clear();
        if table.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        if header {
            if line.split_whitespace().next() != Some("sl") {
                return Err(format!("unexpected header {line:?}"));
            }
            header = false;
        } else if !line.trim().is_empty() {
            each(parse_row(&line).ok_or_else(|| format!("cannot read the row {line:?}"))?);
        }
    }
    if header {
        return Err("the table is empty, without even its header".into());
    }
    Ok(())
}

fn parse_row(line: &str) -> Option<Socket> {
    let columns: Vec<&str> = line.split_whitespace().collect();
    if columns.len() < 10 || !columns[0].ends_with(':') {
        return None;
    }
    // Checked like the remote one, so a row with a broken local address is refused too.
    parse_address(columns[1])?;
    let (remote_ip, remote_port) = parse_address(columns[2])?;
    let state = columns[3];
    if state.len() != 2 || !state.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let state = u8::from_str_radix(state, 16).ok()?;
    let inode = columns[9].parse().ok()?;
    Some(Socket {
        remote_ip,
        remote_port,
        state,
        inode,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints each 32-bit word
/// of the address as a number in the host's byte order, and the port in hex.
fn parse_address(text: &str) -> Option<(IpAddr, u16)> {
    let (address, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| -> Option<[u8; 4]> {
        if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::from(word(address)?),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(address.get(i * 8..i * 8 + 8)?)?);
            }
            // An IPv4 peer of an IPv6 socket shows as ::ffff:a.b.c.d.
            IpAddr::from(bytes).to_canonical()
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel printed on this (little-endian) machine; the words are host-ordered, so
    /// a big-endian machine prints them the other way round.
    fn hex4(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    fn row(n: u32, remote: &str, state: &str, inode: u64) -> String {
        format!(
            "   {n}: {}:A3C8 {remote} {state} 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 20 4 30 10 -1",
            hex4([127, 0, 0, 1])
        )
    }

    /// Every row of `text`, or the error.
    fn parse_table(text: &str) -> Result<Vec<Socket>, String> {
        let mut rows = Vec::new();
        for_each_row(text.as_bytes(), |socket| rows.push(socket))?;
        Ok(rows)
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    #[test]
    fn rows_are_read_with_their_remote_address_state_and_inode() {
        let text = format!(
            "{HEADER}\n{}\n{}\n",
            row(0, &format!("{}:1F91", hex4([127, 0, 0, 1])), "01", 4242),
            row(1, &format!("{}:0050", hex4([10, 1, 2, 3])), "06", 7),
        );
        let sockets = parse_table(&text).unwrap();
        assert_eq!(
            sockets,
            [
                Socket {
                    remote_ip: "127.0.0.1".parse().unwrap(),
                    remote_port: 8081,
                    state: 0x01,
                    inode: 4242
                },
                Socket {
                    remote_ip: "10.1.2.3".parse().unwrap(),
                    remote_port: 80,
                    state: 0x06,
                    inode: 7
                },
            ]
        );
    }

    #[test]
    fn ipv6_addresses_and_mapped_ipv4_peers_are_read() {
        let words = |ip: Ipv6Addr| -> String {
            ip.octets()
                .chunks(4)
                .map(|w| hex4([w[0], w[1], w[2], w[3]]))
                .collect()
        };
        let (ip, port) = parse_address(&format!("{}:1F91", words(Ipv6Addr::LOCALHOST))).unwrap();
        assert_eq!((ip, port), (IpAddr::from(Ipv6Addr::LOCALHOST), 8081));
        let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
        let (ip, _) = parse_address(&format!("{}:1F91", words(mapped))).unwrap();
        assert_eq!(ip, IpAddr::from(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn a_table_in_another_format_is_an_error_not_zero() {
        assert!(parse_table("").is_err());
        assert!(parse_table("local remote\n").is_err());
        for broken in [
            row(0, "0100007F:1F9", "01", 1),
            row(0, "0100007G:1F91", "01", 1),
            row(0, "0100007F1F91", "01", 1),
            row(0, "0100007F:1F91", "1", 1),
            row(0, "0100007F:1F91", "01", 1).replace(" 1 1 0000", " x 1 0000"),
            "   0: 0100007F:A3C8 0100007F:1F91 01".to_string(),
        ] {
            let text = format!("{HEADER}\n{broken}\n");
            assert!(parse_table(&text).is_err(), "{broken}");
        }
        // An empty table (nothing open) is fine.
        assert_eq!(parse_table(&format!("{HEADER}\n")).unwrap(), []);
    }

    #[test]
    fn hosts_that_are_names_cannot_be_counted() {
        assert_eq!(addresses_of("app-blue"), None);
        assert_eq!(
            addresses_of("[::1]"),
            Some(vec![IpAddr::from(Ipv6Addr::LOCALHOST)])
        );
        assert_eq!(
            addresses_of("127.0.0.1"),
            Some(vec![IpAddr::from(Ipv4Addr::LOCALHOST)])
        );
        assert_eq!(addresses_of("localhost").map(|a| a.len()), Some(2));
    }

    #[test]
    fn without_a_master_here_nothing_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint::new("127.0.0.1", 8081);
        let missing = dir.path().join("nginx.pid");
        assert_eq!(open_to(dir.path(), &missing, &endpoint), Ok(None));
    }
}
