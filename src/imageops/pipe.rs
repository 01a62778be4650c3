//! Streams bytes a writer produces on one thread to a reader on another, so
//! a layer tar being written can go straight into the store's blob writer
//! without a temporary copy.
//!
//! The reader sees end-of-stream only when the producer finished
//! successfully; if the producer fails or panics, the reader gets an error,
//! so a truncated layer is never stored as if it were complete.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::error::{ImageOpsError, Result};

/// Bytes per message.
const CHUNK: usize = 256 << 10;

/// Messages in flight (so at most about 2 MiB buffered).
const DEPTH: usize = 8;

enum Msg {
    Data(Vec<u8>),
    End,
}

/// The producing end: a buffered `Write` whose chunks go to the reader.
pub(crate) struct PipeWriter {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Msg::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the blob writer stopped"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send_buf()?;
        self.tx
            .send(Msg::End)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the blob writer stopped"))
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The consuming end.
pub(crate) struct PipeReader {
    rx: Receiver<Msg>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
    /// Set when the producer went away without finishing.
    producer_failed: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Msg::End) => self.ended = true,
                Err(_) => {
                    self.producer_failed = true;
                    return Err(io::Error::other("the layer writer stopped before the end"));
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `produce` on a new thread, writing into a pipe, while `consume`
/// reads the pipe on this one. Returns both results; when both fail, the
/// error that caused the other is returned.
pub(crate) fn produce_consume<T, U, P, C>(produce: P, consume: C) -> Result<(T, U)>
where
    T: Send,
    P: FnOnce(&mut PipeWriter) -> Result<T> + Send,
    C: FnOnce(&mut PipeReader) -> Result<U>,
{
    let (tx, rx) = sync_channel(DEPTH);
    let mut reader = PipeReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
        ended: false,
        producer_failed: false,
    };
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut w = PipeWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            let out = produce(&mut w)?;
            w.finish().map_err(|source| ImageOpsError::Io {
                op: "stream",
                path: "layer".to_owned(),
                source,
            })?;
            Ok(out)
        });
        let consumed = consume(&mut reader);
        // Unblock a producer still sending: it then fails with BrokenPipe.
        let producer_failed = reader.producer_failed;
        drop(reader);
        let produced = match producer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (produced, consumed) {
            (Ok(t), Ok(u)) => Ok((t, u)),
            (Err(p), Err(_)) if producer_failed => Err(p),
            (_, Err(c)) => Err(c),
            (Err(p), Ok(_)) => Err(p),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_everything_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (n, got) = produce_consume(
            |w| {
                for part in data.chunks(7777) {
                    w.write_all(part).unwrap();
                }
                Ok(data.len())
            },
            |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v).unwrap();
                Ok(v)
            },
        )
        .unwrap();
        assert_eq!(n, data.len());
        assert_eq!(got, data);
    }

    #[test]
    fn a_failed_producer_is_an_error_not_an_end() {
        let err = produce_consume(
            |w| {
                w.write_all(&[1u8; 600_000]).unwrap();
                Err::<(), _>(ImageOpsError::InvalidArchive {
                    reason: "producer broke".into(),
                })
            },
            |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v).map_err(|source| ImageOpsError::Io {
                    op: "read",
                    path: "pipe".into(),
                    source,
                })?;
                Ok(v)
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("producer broke"), "{err}");
    }

    #[test]
    fn a_failed_consumer_stops_the_producer() {
        let err = produce_consume(
            |w| {
                loop {
                    w.write_all(&[0u8; 4096])
                        .map_err(|source| ImageOpsError::Io {
                            op: "write",
                            path: "pipe".into(),
                            source,
                        })?;
                }
                #[allow(unreachable_code)]
                Ok(())
            },
            |r| {
                let mut buf = [0u8; 10];
                r.read_exact(&mut buf).unwrap();
                Err::<(), _>(ImageOpsError::InvalidArchive {
                    reason: "consumer broke".into(),
                })
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("consumer broke"), "{err}");
    }
}
