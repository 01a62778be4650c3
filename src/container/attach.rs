//! The attach protocol between the CLI and a container's monitor, over the monitor's unix
//! socket `<dir>/attach.sock`.
//!
//! Both directions carry frames: one kind byte, a big-endian `u32` length, the payload.
//! The client first sends [`Frame::Hello`] saying which streams it wants; then stdin data,
//! stdin close and terminal resizes. The monitor sends output and, when the container's
//! process ends, its exit code. A client detaches by closing the connection.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Largest payload accepted (a hostile or confused peer cannot make us allocate more).
pub const MAX_FRAME: usize = 1 << 20;

/// Which streams a client attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Streams {
    /// It sends stdin.
    pub stdin: bool,
    /// It wants stdout.
    pub stdout: bool,
    /// It wants stderr.
    pub stderr: bool,
    /// Its terminal's size (rows, columns), when it has one: a container that starts with
    /// this client attached gets its console sized before its command runs.
    pub size: Option<(u16, u16)>,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → monitor, first: the streams wanted.
    Hello(Streams),
    /// Client → monitor: bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// Client → monitor: no more stdin.
    StdinClose,
    /// Client → monitor: the terminal's size (rows, columns).
    Resize(u16, u16),
    /// Monitor → client: output on stdout (all output, with a tty).
    Stdout(Vec<u8>),
    /// Monitor → client: output on stderr.
    Stderr(Vec<u8>),
    /// Monitor → client: the process ended with this code.
    Exit(i32),
    /// Monitor → client: something went wrong.
    Error(String),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => 7,
            Frame::Stdin(_) => 0,
            Frame::Stdout(_) => 1,
            Frame::Stderr(_) => 2,
            Frame::Exit(_) => 3,
            Frame::Resize(..) => 4,
            Frame::StdinClose => 5,
            Frame::Error(_) => 6,
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Frame::Hello(s) => {
                let mut v =
                    vec![u8::from(s.stdin) | (u8::from(s.stdout) << 1) | (u8::from(s.stderr) << 2)];
                if let Some((r, c)) = s.size {
                    v.extend_from_slice(&r.to_be_bytes());
                    v.extend_from_slice(&c.to_be_bytes());
                }
                v
            }
            Frame::Stdin(d) | Frame::Stdout(d) | Frame::Stderr(d) => d.clone(),
            Frame::StdinClose => Vec::new(),
            Frame::Resize(r, c) => {
                let mut v = r.to_be_bytes().to_vec();
                v.extend_from_slice(&c.to_be_bytes());
                v
            }
            Frame::Exit(code) => code.to_be_bytes().to_vec(),
            Frame::Error(m) => m.as_bytes().to_vec(),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Writes the frame.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 5];
        match r.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut head[1..])?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "attach frame too large",
            ));
        }
        let mut p = vec![0u8; len];
        r.read_exact(&mut p)?;
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed attach frame");
        Ok(Some(match head[0] {
            7 => {
                let b = *p.first().ok_or_else(bad)?;
                let size = match p.len() {
                    1 => None,
                    5 => Some((
                        u16::from_be_bytes([p[1], p[2]]),
                        u16::from_be_bytes([p[3], p[4]]),
                    )),
                    _ => return Err(bad()),
                };
                Frame::Hello(Streams {
                    stdin: b & 1 != 0,
                    stdout: b & 2 != 0,
                    stderr: b & 4 != 0,
                    size,
                })
            }
            0 => Frame::Stdin(p),
            1 => Frame::Stdout(p),
            2 => Frame::Stderr(p),
            3 => Frame::Exit(i32::from_be_bytes(p.try_into().map_err(|_| bad())?)),
            4 if p.len() == 4 => Frame::Resize(
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ),
            5 => Frame::StdinClose,
            6 => Frame::Error(String::from_utf8_lossy(&p).into_owned()),
            _ => return Err(bad()),
        }))
    }
}

/// The socket path for a container dir, short enough for `sun_path` whatever the root's
/// length: it goes through `/proc/self/fd/<dirfd>/`. Returns the dir fd to keep open.
pub fn socket_path(dir: &Path) -> io::Result<(std::fs::File, String)> {
    let d = std::fs::File::open(dir)?;
    let p = format!("/proc/self/fd/{}/attach.sock", d.as_raw_fd());
    Ok((d, p))
}

/// Connects to a container's monitor and says which streams are wanted.
pub fn connect(dir: &Path, streams: Streams) -> io::Result<UnixStream> {
    let (_d, p) = socket_path(dir)?;
    let mut s = UnixStream::connect(p)?;
    Frame::Hello(streams).write_to(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Frame::Hello(Streams {
                stdin: true,
                stdout: true,
                stderr: false,
                size: None,
            }),
            Frame::Hello(Streams {
                stdin: false,
                stdout: true,
                stderr: true,
                size: Some((40, 100)),
            }),
            Frame::Stdin(b"ls\n".to_vec()),
            Frame::StdinClose,
            Frame::Resize(24, 80),
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-3),
            Frame::Error("bad".into()),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.write_to(&mut buf).expect("write");
        }
        let mut r = &buf[..];
        for f in &frames {
            assert_eq!(Frame::read_from(&mut r).expect("read").as_ref(), Some(f));
        }
        assert_eq!(Frame::read_from(&mut r).expect("eof"), None);
    }

    #[test]
    fn hostile_frames_are_refused() {
        let mut huge = vec![1u8];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Frame::read_from(&mut &huge[..]).is_err());
        let unknown = [9u8, 0, 0, 0, 0];
        assert!(Frame::read_from(&mut &unknown[..]).is_err());
        let short_exit = [3u8, 0, 0, 0, 1, 0];
        assert!(Frame::read_from(&mut &short_exit[..]).is_err());
        let truncated = [1u8, 0, 0, 0, 9, b'x'];
        assert!(Frame::read_from(&mut &truncated[..]).is_err());
    }
}
