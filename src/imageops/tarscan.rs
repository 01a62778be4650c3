//! Reads an untrusted outer tar (an image archive) entry by entry, with
//! bounded headers, names and sizes, and nothing written to disk.
//!
//! The headers are parsed by the archive module's hardened parser
//! ([`crate::archive`]'s `TarParser`), the one that extracts layers: extension
//! headers are read up to [`ScanLimits::max_header_size`], a PAX `size` that
//! disagrees with the header's is refused (the TARmageddon confusion,
//! CVE-2026-33055), and so are header-only entries with data and unknown entry
//! types. This module only bounds the whole stream and hands each entry's name
//! and data to a callback; names are only ever keys, never host paths.

use std::io::{self, Read};

use super::error::{ImageOpsError, Result};
use crate::archive::{ArchiveError, Limit, ParseLimits, TarKind, TarParser};

/// Limits on the outer tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanLimits {
    /// Bytes of the (uncompressed) tar stream.
    pub max_size: u64,
    /// Entries, extension headers not included.
    pub max_entries: u64,
    /// Bytes of one PAX header or GNU long name.
    pub max_header_size: u64,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file of this many bytes.
    File(u64),
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(Vec<u8>),
    /// A hard link to an earlier entry of this name.
    Hardlink(Vec<u8>),
    /// A device or a FIFO, with its typeflag.
    Other(u8),
}

/// One entry as the callback sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanEntry {
    /// The entry name, raw (PAX and GNU long names applied).
    pub name: Vec<u8>,
    /// Its kind.
    pub kind: Kind,
}

/// The input, counted and bounded: an endless stream costs at most the limit.
struct Bounded<R> {
    inner: R,
    read: u64,
    max: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let allowed = (self.max + 1).saturating_sub(self.read);
        let want = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.max {
            // The parser hands an `ArchiveError` inside an I/O error back as itself.
            return Err(io::Error::other(ArchiveError::LimitExceeded {
                limit: Limit::TotalSize,
                max: self.max,
            }));
        }
        Ok(n)
    }
}

/// The current entry's data, read through the parser.
struct EntryData<'p, R: Read>(&'p mut TarParser<R>);

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf).map_err(io::Error::other)
    }
}

fn invalid(source: ArchiveError) -> ImageOpsError {
    ImageOpsError::InvalidTar { source }
}

/// Reads every entry of the tar `reader`, calling `on_entry` with its name,
/// kind and a reader of its data (which need not be read to the end).
pub(crate) fn scan<R: Read>(
    reader: R,
    limits: &ScanLimits,
    mut on_entry: impl FnMut(&ScanEntry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let input = Bounded {
        inner: reader,
        read: 0,
        max: limits.max_size,
    };
    let mut parser = TarParser::new(
        input,
        ParseLimits {
            max_entries: limits.max_entries,
            max_pax: limits.max_header_size,
            max_name: usize::try_from(limits.max_header_size).unwrap_or(usize::MAX),
            // What follows the end of the archive is read within the stream's own bound.
            max_trailing: limits.max_size,
        },
    );
    while let Some(e) = parser.next_entry().map_err(invalid)? {
        let kind = match e.kind {
            TarKind::File => Kind::File(e.size),
            TarKind::Dir => Kind::Dir,
            TarKind::Symlink => Kind::Symlink(e.link),
            TarKind::Hardlink => Kind::Hardlink(e.link),
            TarKind::Char => Kind::Other(b'3'),
            TarKind::Block => Kind::Other(b'4'),
            TarKind::Fifo => Kind::Other(b'6'),
        };
        let entry = ScanEntry { name: e.path, kind };
        on_entry(&entry, &mut EntryData(&mut parser))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ScanLimits = ScanLimits {
        max_size: 1 << 30,
        max_entries: 1000,
        max_header_size: 1 << 20,
    };

    fn collect(bytes: &[u8], limits: &ScanLimits) -> Result<Vec<(ScanEntry, Vec<u8>)>> {
        let mut out = Vec::new();
        scan(bytes, limits, |e, r| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)
                .map_err(|e| ImageOpsError::InvalidArchive {
                    reason: e.to_string(),
                })?;
            out.push((e.clone(), data));
            Ok(())
        })?;
        Ok(out)
    }

    fn header(name: &str, typeflag: u8, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    #[test]
    fn reads_files_links_and_long_names() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/manifest.json", "d".repeat(150));
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"{}"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "a/layer.tar", "../b.tar").unwrap();
        b.append(&header("dir/", b'5', 0), &[][..]).unwrap();
        let got = collect(&b.into_inner().unwrap(), &LIMITS).unwrap();
        assert_eq!(got[0].0.name, long.as_bytes());
        assert_eq!(got[0].0.kind, Kind::File(2));
        assert_eq!(got[0].1, b"{}");
        assert_eq!(got[1].0.kind, Kind::Symlink(b"../b.tar".to_vec()));
        assert_eq!(got[2].0.kind, Kind::Dir);
    }

    #[test]
    fn refuses_oversized_extension_headers() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header("././@LongLink", b'L', 4096);
        h.set_cksum();
        b.append(&h, &vec![b'a'; 4096][..]).unwrap();
        b.append(&header("x", b'0', 0), &[][..]).unwrap();
        let small = ScanLimits {
            max_header_size: 1024,
            ..LIMITS
        };
        let err = collect(&b.into_inner().unwrap(), &small).unwrap_err();
        assert!(
            err.to_string()
                .contains("exceeds the extended header size limit of 1024"),
            "{err}"
        );
    }

    #[test]
    fn refuses_pax_size_disagreeing_with_the_header() {
        // TARmageddon: a PAX size hiding entries from one parser but not another.
        let mut b = tar::Builder::new(Vec::new());
        let record = b"11 size=10\n";
        b.append(&header("pax", b'x', record.len() as u64), &record[..])
            .unwrap();
        b.append(&header("x", b'0', 4), &b"abcd"[..]).unwrap();
        let err = collect(&b.into_inner().unwrap(), &LIMITS).unwrap_err();
        assert!(
            err.to_string()
                .contains("pax size 10 disagrees with header size 4"),
            "{err}"
        );
    }

    fn pax_size_over_zero(pax_size: u64) -> Vec<u8> {
        // The record's length counts its own digits: "9 size=4\n", "19 size=8589934592\n".
        let body = format!(" size={pax_size}\n");
        let digits = if body.len() + 1 < 10 { 1 } else { 2 };
        let record = format!("{}{body}", body.len() + digits);
        let record = record.as_bytes();
        let mut bytes = header("pax", b'x', record.len() as u64).as_bytes().to_vec();
        bytes.extend_from_slice(record);
        bytes.extend_from_slice(&vec![0u8; 512 - record.len()]);
        bytes.extend_from_slice(header("big", b'0', 0).as_bytes());
        bytes.extend_from_slice(b"abcd");
        bytes.extend_from_slice(&[0u8; 508]);
        bytes.extend_from_slice(&[0u8; 1024]);
        bytes
    }

    #[test]
    fn honours_a_pax_size_over_a_zero_header_size() {
        // Go's writer leaves the ustar size 0 when the size needs PAX (over 8 GiB).
        let big = 8u64 << 30;
        let mut seen = None;
        let err = scan(&pax_size_over_zero(big)[..], &LIMITS, |e, _| {
            seen = Some(e.kind.clone());
            Err(ImageOpsError::InvalidArchive {
                reason: "stop".into(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("stop"), "{err}");
        assert_eq!(seen, Some(Kind::File(big)));
    }

    #[test]
    fn refuses_a_small_pax_size_over_a_zero_header_size() {
        // The outer tar now goes through the layer parser: a size that fits the ustar field
        // but was left 0 there is two readers seeing two archives, as for layers.
        let err = collect(&pax_size_over_zero(4), &LIMITS).unwrap_err();
        assert!(
            err.to_string()
                .contains("pax size 4 disagrees with header size 0"),
            "{err}"
        );
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        let err = collect(&[7u8; 600], &LIMITS).unwrap_err();
        assert!(err.to_string().contains("bad checksum"), "{err}");
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("f", b'0', 1000), &[0u8; 1000][..])
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let err = collect(&bytes[..700], &LIMITS).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn bounds_entries_and_size() {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..5 {
            b.append(&header(&format!("f{i}"), b'0', 1000), &[0u8; 1000][..])
                .unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let few = ScanLimits {
            max_entries: 3,
            ..LIMITS
        };
        assert!(collect(&bytes, &few)
            .unwrap_err()
            .to_string()
            .contains("exceeds the entry count limit of 3"));
        let small = ScanLimits {
            max_size: 2000,
            ..LIMITS
        };
        assert!(collect(&bytes, &small)
            .unwrap_err()
            .to_string()
            .contains("total uncompressed size limit of 2000"));
    }
}
