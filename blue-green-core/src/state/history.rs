//! `history.jsonl`: one [`DeployRecord`] per line, appended and fsync'd, read from the end.
//!
//! - A crash in the middle of an append leaves a torn last line; reading skips it and the next
//!   append cuts it off, so it never ends up in the middle of the file.
//! - The file is **capped**: when an append takes it over [`MAX_HISTORY_BYTES`] (4 MiB, some
//!   ten thousand deploys), the oldest records are dropped in one atomic rewrite that keeps
//!   the newest half. Nothing is rotated into a second file.
//! - Reading goes **from the end**: the last `n` records cost a few kilobytes, whatever the
//!   size of the file, and even a whole read stops after [`MAX_HISTORY_BYTES`] (a file grown
//!   past the cap by hand is read only in its newest part, with a warning).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::ComponentError;
use crate::state::atomic::{sync_dir, write_private};
use crate::state::private::{self, Access};
use crate::state::DeployRecord;

/// The size past which an append drops the oldest records.
pub const MAX_HISTORY_BYTES: u64 = 4 << 20;
/// How much of the newest history a cap keeps.
const KEEP_BYTES: u64 = MAX_HISTORY_BYTES / 2;
/// How much is read at a time from the end.
const CHUNK: u64 = 64 << 10;

fn io_error(doing: &str, path: &Path, e: io::Error) -> ComponentError {
    let dir = path.parent().unwrap_or(Path::new("."));
    private::unusable(doing, path, dir, e)
}

/// Appends `record` as one line, after cutting a torn last line; caps the file.
pub(crate) fn append(dir: &Path, path: &Path, record: &DeployRecord) -> Result<(), ComponentError> {
    let mut line = serde_json::to_vec(record).map_err(|e| {
        ComponentError::failed(format!(
            "cannot serialize a history record for {}: {e}",
            path.display()
        ))
    })?;
    line.push(b'\n');
    private::check_dir(dir, true)?;
    let existed = std::fs::symlink_metadata(path).is_ok();
    let Some(mut file) = private::open_file(path, Access::Append)? else {
        return Err(io_error(
            "open",
            path,
            io::Error::new(io::ErrorKind::NotFound, "it vanished while being opened"),
        ));
    };
    cut_torn_tail(&mut file).map_err(|e| io_error("repair the last line of", path, e))?;
    file.write_all(&line)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("append to", path, e))?;
    if !existed {
        sync_dir(dir).map_err(|e| io_error("sync", dir, e))?;
    }
    let len = file
        .metadata()
        .map_err(|e| io_error("read the size of", path, e))?
        .len();
    if len > MAX_HISTORY_BYTES {
        cap(&mut file, path, len)?;
    }
    Ok(())
}

/// Replaces the history with its newest [`KEEP_BYTES`], cut at a line boundary.
fn cap(file: &mut File, path: &Path, len: u64) -> Result<(), ComponentError> {
    let start = len - KEEP_BYTES;
    let mut kept = Vec::with_capacity(KEEP_BYTES as usize);
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_to_end(&mut kept))
        .map_err(|e| io_error("read", path, e))?;
    // The first piece is the end of a line that is dropped.
    let from = kept
        .iter()
        .position(|&b| b == b'\n')
        .map_or(kept.len(), |i| i + 1);
    tracing::info!(
        path = %path.display(),
        dropped_bytes = start + from as u64,
        "the history passed its cap: dropping its oldest records"
    );
    write_private(path, &kept[from..]).map_err(|e| io_error("rewrite", path, e))
}

/// Makes the file end at a line boundary before an append. An unterminated last line is the
/// remains of an append that crashed: a complete record just gets its newline, a torn one is cut
/// off (it was never acknowledged, and left in place it would corrupt the record appended after it).
fn cut_torn_tail(file: &mut File) -> io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the start of the unterminated line, reading from the back in chunks.
    let mut end = len;
    let mut line_start = 0;
    let mut chunk = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            line_start = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if len - line_start > MAX_HISTORY_BYTES {
        // No record is that long: it is garbage, not a record that lacks its newline.
        file.set_len(line_start)?;
        return Ok(());
    }
    file.seek(SeekFrom::Start(line_start))?;
    let mut tail = Vec::with_capacity((len - line_start) as usize);
    file.read_to_end(&mut tail)?;
    if serde_json::from_slice::<DeployRecord>(&tail).is_ok() {
        file.write_all(b"\n")?;
    } else {
        tracing::warn!(
            bytes = tail.len(),
            "cutting off a torn last line of the history (an append that was interrupted)"
        );
        file.set_len(line_start)?;
    }
    Ok(())
}

/// The newest `n` records (all of them for `usize::MAX`), oldest first, read from the end of
/// the file and never more than [`MAX_HISTORY_BYTES`] of it.
pub(crate) fn read_last(
    dir: &Path,
    path: &Path,
    n: usize,
) -> Result<Vec<DeployRecord>, ComponentError> {
    if n == 0 || !private::check_dir(dir, false)? {
        return Ok(Vec::new());
    }
    let Some(mut file) = private::open_file(path, Access::Read)? else {
        return Ok(Vec::new());
    };
    let (bytes, start) = tail_bytes(&mut file, n).map_err(|e| io_error("read", path, e))?;
    parse(&bytes, n, start == 0, path)
}

/// Reads chunks from the end until `n` whole lines (one more newline than that, plus one for a
/// torn tail) are in, the start of the file is reached, or the byte budget is spent. Returns
/// the bytes and the offset they start at.
fn tail_bytes(file: &mut File, n: usize) -> io::Result<(Vec<u8>, u64)> {
    let len = file.metadata()?.len();
    let mut start = len;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    while start > 0 && newlines <= n.saturating_add(1) {
        if len - start >= MAX_HISTORY_BYTES {
            tracing::warn!(
                bytes = len,
                "the history is larger than its cap; only its newest {MAX_HISTORY_BYTES} bytes are read"
            );
            break;
        }
        let size = CHUNK.min(start);
        start -= size;
        let mut chunk = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunks.push(chunk);
    }
    chunks.reverse();
    let mut bytes = chunks.concat();
    if start > 0 {
        // The first piece is the end of a line that was not read whole.
        let from = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        start += from as u64;
        bytes.drain(..from);
    }
    Ok((bytes, start))
}

/// Parses the newest `n` records of `bytes`, from the last line back. An unterminated last
/// line that does not parse is an append that crashed half-way, and is skipped; any other bad
/// line among those needed is an error that names it (by its number when `from_start`, else
/// counted from the end).
fn parse(
    bytes: &[u8],
    n: usize,
    from_start: bool,
    path: &Path,
) -> Result<Vec<DeployRecord>, ComponentError> {
    let pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let tail_index = pieces.len() - 1;
    let mut records = Vec::new();
    for (i, line) in pieces.iter().enumerate().rev() {
        if records.len() == n {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<DeployRecord>(line) {
            Ok(record) => records.push(record),
            Err(_) if i == tail_index => {
                tracing::warn!(
                    path = %path.display(),
                    "skipping a torn last line of the history (an append was interrupted)"
                );
            }
            Err(e) => {
                let which = if from_start {
                    format!("line {}", i + 1)
                } else {
                    format!("line {} from the end", tail_index - i)
                };
                return Err(ComponentError::failed(format!(
                    "{which} of {} is not a valid deploy record: {e}; fix or delete that line",
                    path.display()
                ))
                .with_source(e));
            }
        }
    }
    records.reverse();
    Ok(records)
}
