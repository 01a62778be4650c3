//! Opens an untrusted, possibly compressed tar stream: detects the compression by magic bytes and guards the decompressed size.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::error::{ArchiveError, Limit};
use super::Limits;

pub use crate::image::compression::Compression;

/// Whether the 512 bytes `h` are a tar header whose checksum adds up (an all-zero block,
/// the end of an archive, is not one).
pub fn is_tar_header(h: &[u8]) -> bool {
    if h.len() < 512 || h[..512].iter().all(|&b| b == 0) {
        return false;
    }
    let digits: String = h[148..156]
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .filter(|c| *c != ' ')
        .collect();
    let Ok(want) = u64::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u64 = h[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    sum == want
}

/// Whether `r` is a tar, plain or compressed with gzip, zstd, bzip2 or xz: what it
/// decompresses to starts with a tar header. This is how BuildKit tells an archive that ADD
/// unpacks from a file it copies (a gzip file that is not a tar is copied as it is).
pub fn is_tar_stream<R: Read>(r: R) -> bool {
    let Ok((stream, _)) = open(r, &Limits::default(), true) else {
        return false;
    };
    let mut head = Vec::with_capacity(512);
    stream.take(512).read_to_end(&mut head).is_ok() && is_tar_header(&head)
}

/// Counts bytes read from the raw (compressed) input and bounds them.
///
/// The bound matters because decompressors can consume input without producing
/// output (empty gzip members, zstd skippable frames): an endless run of those
/// would never trip a limit on the decompressed side. Sitting below the
/// decompressor, this one stops it even inside its own read loop.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    max: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count.get() > self.max {
            return Err(io::Error::other(ArchiveError::LimitExceeded {
                limit: Limit::TotalSize,
                max: self.max,
            }));
        }
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed stream, hashed, counted and held to the size and ratio limits.
pub(crate) struct Guarded<'a> {
    inner: Box<dyn Read + 'a>,
    compressed: Rc<Cell<u64>>,
    produced: u64,
    hasher: Sha256,
    limits: Limits,
}

impl Guarded<'_> {
    /// Uncompressed bytes read and their sha256.
    pub(crate) fn finish(self) -> (u64, [u8; 32]) {
        (self.produced, self.hasher.finalize().into())
    }
}

impl Read for Guarded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never ask for more than the limit allows (plus one byte to detect going
        // over), so an endless stream costs at most the limit.
        let allowed = self
            .limits
            .max_total_size
            .saturating_sub(self.produced)
            .saturating_add(1);
        let want = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.produced += n as u64;
        if self.produced > self.limits.max_total_size {
            return Err(io::Error::other(ArchiveError::LimitExceeded {
                limit: Limit::TotalSize,
                max: self.limits.max_total_size,
            }));
        }
        if self.produced > self.limits.ratio_check_after
            && self.produced / self.compressed.get().max(1) > self.limits.max_compression_ratio
        {
            return Err(io::Error::other(ArchiveError::LimitExceeded {
                limit: Limit::CompressionRatio,
                max: self.limits.max_compression_ratio,
            }));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Wraps `r` in the right decompressor and the guard. bzip2 and xz, which image layers never
/// use, are read only with `bzip2_xz`.
pub(crate) fn open<'a, R: Read + 'a>(
    r: R,
    limits: &Limits,
    bzip2_xz: bool,
) -> Result<(Guarded<'a>, Compression), ArchiveError> {
    let count = Rc::new(Cell::new(0));
    // Compressed data is never much larger than what it decompresses to; the slack
    // covers headers of tiny inputs and the trailing data allowed after the tar.
    let max_raw = limits
        .max_total_size
        .saturating_add(limits.max_total_size / 64)
        .saturating_add(limits.max_trailing_bytes)
        .saturating_add(64 << 10);
    let mut raw = Counting {
        inner: r,
        count: Rc::clone(&count),
        max: max_raw,
    };
    let mut magic = Vec::with_capacity(6);
    (&mut raw)
        .take(6)
        .read_to_end(&mut magic)
        .map_err(|e| ArchiveError::io("read", "tar stream", e))?;
    let compression = Compression::detect(&magic);
    match compression {
        Compression::Bzip2 if !bzip2_xz => {
            return Err(ArchiveError::UnsupportedCompression("bzip2"))
        }
        Compression::Xz if !bzip2_xz => return Err(ArchiveError::UnsupportedCompression("xz")),
        _ => {}
    }
    let input = io::Cursor::new(magic).chain(raw);
    let inner: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(BufReader::new(input))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(BufReader::new(input))
                .map_err(|e| ArchiveError::io("start zstd decoder", "tar stream", e))?,
        ),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(BufReader::new(input))),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(
            BufReader::new(input),
        )),
    };
    Ok((
        Guarded {
            inner,
            compressed: count,
            produced: 0,
            hasher: Sha256::new(),
            limits: *limits,
        },
        compression,
    ))
}
