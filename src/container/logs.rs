//! The container log: `<dir>/log.json`, one JSON object per line, as Docker's json-file
//! driver writes it: `{"log":"text\n","stream":"stdout","time":"2026-01-02T03:04:05.123456789Z"}`.
//!
//! Output is split at newlines; a line longer than 16 KiB is cut into entries without the
//! trailing newline (Docker's partial messages), so a process that never prints a newline
//! cannot make the monitor buffer without bound.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest entry before a line is split.
pub const MAX_ENTRY: usize = 16 * 1024;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The text, with its newline if it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// Appends a stream's output to the log, one entry per line.
#[derive(Debug)]
pub struct Writer {
    file: fs::File,
    pending: [Vec<u8>; 2],
}

impl Writer {
    /// Opens (creating) `<dir>/log.json` for appending.
    pub fn open(dir: &Path) -> io::Result<Writer> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("log.json"))?;
        Ok(Writer {
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Logs bytes from stream 1 (stdout) or 2 (stderr).
    pub fn write(&mut self, stream: u8, data: &[u8]) {
        let i = usize::from(stream == 2);
        self.pending[i].extend_from_slice(data);
        let mut start = 0;
        let buf = std::mem::take(&mut self.pending[i]);
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = (start + pos + 1).min(start + MAX_ENTRY);
            self.entry(stream, &buf[start..end]);
            start = end;
        }
        while buf.len() - start >= MAX_ENTRY {
            self.entry(stream, &buf[start..start + MAX_ENTRY]);
            start += MAX_ENTRY;
        }
        self.pending[i] = buf[start..].to_vec();
    }

    /// Logs whatever is buffered without a newline (the process exited).
    pub fn flush(&mut self) {
        for (i, stream) in [(0usize, 1u8), (1, 2)] {
            let rest = std::mem::take(&mut self.pending[i]);
            if !rest.is_empty() {
                self.entry(stream, &rest);
            }
        }
    }

    fn entry(&mut self, stream: u8, text: &[u8]) {
        let e = Entry {
            log: String::from_utf8_lossy(text).into_owned(),
            stream: if stream == 2 { "stderr" } else { "stdout" }.into(),
            time: super::now(),
        };
        if let Ok(mut line) = serde_json::to_vec(&e) {
            line.push(b'\n');
            // One write per entry: with O_APPEND, readers never see a torn line in the
            // middle of the file. A full disk loses log lines, never the container.
            let _ = self.file.write_all(&line);
        }
    }
}

/// Reads a log incrementally.
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Reader {
    /// A reader at the start of `<dir>/log.json`.
    pub fn new(dir: &Path) -> Reader {
        Reader {
            path: dir.join("log.json"),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The entries appended since the last call (a missing log has none).
    pub fn next_entries(&mut self) -> io::Result<Vec<Entry>> {
        let mut f = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let line = &self.partial[start..start + pos];
            if let Ok(e) = serde_json::from_slice::<Entry>(line) {
                out.push(e);
            }
            start += pos + 1;
        }
        self.partial.drain(..start);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_entries_and_long_lines_are_split() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = Writer::open(dir.path()).expect("open");
        let mut r = Reader::new(dir.path());
        w.write(1, b"hello\nwor");
        w.write(2, b"oops\n");
        let got = r.next_entries().expect("read");
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].log.as_str(), got[0].stream.as_str()),
            ("hello\n", "stdout")
        );
        assert_eq!(
            (got[1].log.as_str(), got[1].stream.as_str()),
            ("oops\n", "stderr")
        );
        w.write(1, b"ld\n");
        w.write(1, &vec![b'x'; MAX_ENTRY + 10]);
        w.flush();
        let got = r.next_entries().expect("read");
        assert_eq!(got[0].log, "world\n");
        assert_eq!(got[1].log.len(), MAX_ENTRY);
        assert_eq!(got[2].log.len(), 10);
        assert!(r.next_entries().expect("read").is_empty());
        // Timestamps are RFC 3339 with nanoseconds, as Docker's.
        assert!(
            got[0].time.ends_with('Z') && got[0].time.contains('.'),
            "{}",
            got[0].time
        );
    }
}
