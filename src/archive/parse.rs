//! Parses an untrusted tar stream into validated entry headers, bounding everything it buffers.
//!
//! kiln parses tars itself instead of using `tar::Archive` because the latter reads
//! PAX headers into memory without a bound, lets a PAX `size` silently override the
//! ustar size (the TARmageddon confusion), and skips data of header-only entry types
//! differently from Go's archive/tar. Here every such case is a clear error.

use std::io::{self, Read};

use super::error::{show, ArchiveError, HeaderError, Limit};
use super::writer::{Xattrs, MAX_OCTAL_11};

const BLOCK: usize = 512;

/// Limits the parser enforces itself (the stream size is guarded below it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParseLimits {
    pub max_entries: u64,
    pub max_pax: u64,
    pub max_name: usize,
    pub max_trailing: u64,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::Hardlink => "hard link",
            Kind::Symlink => "symlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Dir => "directory",
            Kind::Fifo => "fifo",
        }
    }
}

/// A parsed, validated entry header. Its data (if `size > 0`) is read with
/// [`TarParser::read_data`] before the next call to [`TarParser::next_entry`].
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Bytes of data (0 for every kind but a file).
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub dev_major: u64,
    pub dev_minor: u64,
    pub xattrs: Xattrs,
}

/// Values from a PAX extended header that kiln uses.
#[derive(Debug, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: Xattrs,
}

/// Maps a read error of the underlying stream: limit errors raised by the guard
/// below come back as themselves, a short read is a truncated archive.
pub(crate) fn stream_error(e: io::Error, offset: u64) -> ArchiveError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return ArchiveError::Truncated { offset };
    }
    if e.get_ref().is_some_and(|inner| inner.is::<ArchiveError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(ae) = inner.downcast::<ArchiveError>() {
                return *ae;
            }
        }
        return ArchiveError::Truncated { offset };
    }
    ArchiveError::io("read", "tar stream", e)
}

/// Streaming tar parser.
pub(crate) struct TarParser<R> {
    r: R,
    offset: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    limits: ParseLimits,
    entries: u64,
    done: bool,
}

impl<R: Read> TarParser<R> {
    pub(crate) fn new(r: R, limits: ParseLimits) -> Self {
        TarParser {
            r,
            offset: 0,
            remaining: 0,
            padding: 0,
            limits,
            entries: 0,
            done: false,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.r
    }

    /// Reads the current entry's data; returns 0 at its end.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            match self.r.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(e, self.offset)),
            }
        };
        if n == 0 {
            return Err(ArchiveError::Truncated {
                offset: self.offset,
            });
        }
        self.remaining -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), ArchiveError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.read_exact(&mut buf[..want])?;
            n -= want as u64;
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ArchiveError> {
        self.r
            .read_exact(buf)
            .map_err(|e| stream_error(e, self.offset))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Reads one block; `None` on a clean end of stream at a block boundary.
    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, ArchiveError> {
        let mut b = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match self.r.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(stream_error(e, self.offset)),
            }
        }
        self.offset += got as u64;
        match got {
            0 => Ok(None),
            BLOCK => Ok(Some(b)),
            _ => Err(ArchiveError::Truncated {
                offset: self.offset,
            }),
        }
    }

    fn invalid(&self, offset: u64, reason: HeaderError) -> ArchiveError {
        ArchiveError::InvalidHeader { offset, reason }
    }

    /// Reads the data of an extension header (PAX or GNU long name) within the limit.
    fn read_extension(&mut self, hdr: &[u8; BLOCK], at: u64) -> Result<Vec<u8>, ArchiveError> {
        let size = numeric(&hdr[124..136]).map_err(|r| self.invalid(at, r))?;
        if size > self.limits.max_pax {
            return Err(ArchiveError::LimitExceeded {
                limit: Limit::PaxHeaderSize,
                max: self.limits.max_pax,
            });
        }
        // Bounded by max_pax above, which is far below usize::MAX.
        let mut data = vec![0u8; size as usize];
        self.read_exact(&mut data)?;
        self.skip(padding(size))?;
        Ok(data)
    }

    /// Advances to the next entry, skipping what is left of the current one.
    /// Returns `None` at the end of the archive.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, ArchiveError> {
        if self.done {
            return Ok(None);
        }
        let rest = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(rest)?;

        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let at = self.offset;
            let Some(hdr) = self.read_block()? else {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(self.invalid(at, HeaderError::ExtensionWithoutEntry));
                }
                // No end-of-archive blocks: accepted, like Go's archive/tar does.
                self.done = true;
                return Ok(None);
            };
            if hdr.iter().all(|&b| b == 0) {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(self.invalid(at, HeaderError::ExtensionWithoutEntry));
                }
                self.end_of_archive()?;
                return Ok(None);
            }
            verify_checksum(&hdr).map_err(|r| self.invalid(at, r))?;
            match hdr[156] {
                b'x' => {
                    if pax.is_some() {
                        return Err(self.invalid(at, HeaderError::TwoPaxHeaders));
                    }
                    let data = self.read_extension(&hdr, at)?;
                    pax = Some(parse_pax(&data).map_err(|r| self.invalid(at, r))?);
                }
                b'g' => {
                    // Global headers carry no per-entry data kiln uses; they are read
                    // (within the limit) and ignored, as Docker and containerd do.
                    let data = self.read_extension(&hdr, at)?;
                    parse_pax(&data).map_err(|r| self.invalid(at, r))?;
                }
                b'L' | b'K' => {
                    let slot = if hdr[156] == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(ArchiveError::InvalidHeader {
                            offset: at,
                            reason: HeaderError::TwoLongNames,
                        });
                    }
                    let mut data = self.read_extension(&hdr, at)?;
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    let slot = if hdr[156] == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    *slot = Some(data);
                }
                _ => {
                    let e = self.build_entry(
                        &hdr,
                        at,
                        pax.take().unwrap_or_default(),
                        long_name.take(),
                        long_link.take(),
                    )?;
                    return Ok(Some(e));
                }
            }
        }
    }

    /// Turns a file header (with the extension headers before it) into an entry, in
    /// phases: count it, take its names, its numbers and its kind, then check that
    /// they agree.
    fn build_entry(
        &mut self,
        hdr: &[u8; BLOCK],
        at: u64,
        mut pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry, ArchiveError> {
        self.count_entry()?;
        let (mut path, link) = self.names(
            hdr,
            pax.path.take().or(long_name),
            pax.linkpath.take().or(long_link),
        )?;
        let n = self.numbers(hdr, at, &pax, &path)?;
        let kind = entry_kind(hdr[156], &path)?;
        if kind != Kind::File && n.size != 0 {
            // Go's archive/tar ignores the size of header-only types while GNU tar
            // skips it: refusing is the only answer both agree with.
            return Err(self.invalid(
                at,
                HeaderError::DataOnHeaderOnlyEntry {
                    kind: kind.name(),
                    path: show(&path),
                    size: n.size,
                },
            ));
        }
        let (dev_major, dev_minor) = if matches!(kind, Kind::Char | Kind::Block) {
            let num = |range: std::ops::Range<usize>| {
                numeric(&hdr[range]).map_err(|r| self.invalid(at, r))
            };
            (num(329..337)?, num(337..345)?)
        } else {
            (0, 0)
        };
        if kind == Kind::Dir {
            while path.len() > 1 && path.ends_with(b"/") {
                path.pop();
            }
        }
        self.remaining = n.size;
        self.padding = padding(n.size);
        Ok(Entry {
            path,
            link,
            kind,
            size: n.size,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            mtime: n.mtime,
            mtime_nsec: n.mtime_nsec,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
        })
    }

    /// Counts one more entry against the limit.
    fn count_entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::LimitExceeded {
                limit: Limit::Entries,
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// The entry's name and link target: from an extension header if one gave them,
    /// else from the ustar fields; either way within the length limit and free of NULs.
    fn names(
        &self,
        hdr: &[u8; BLOCK],
        path: Option<Vec<u8>>,
        link: Option<Vec<u8>>,
    ) -> Result<(Vec<u8>, Vec<u8>), ArchiveError> {
        let path = path.unwrap_or_else(|| ustar_name(hdr));
        let link = link.unwrap_or_else(|| cstr(&hdr[157..257]).to_vec());
        for (v, reason) in [
            (&path, "name contains a NUL byte"),
            (&link, "link target contains a NUL byte"),
        ] {
            if v.len() > self.limits.max_name {
                return Err(ArchiveError::LimitExceeded {
                    limit: Limit::NameLength,
                    max: self.limits.max_name as u64,
                });
            }
            if v.contains(&0) {
                return Err(ArchiveError::UnsafePath {
                    path: show(&path),
                    reason,
                });
            }
        }
        Ok((path, link))
    }

    /// Mode, owner, size and mtime, each from the PAX header if it gave one; a PAX size
    /// must agree with the ustar size.
    fn numbers(
        &self,
        hdr: &[u8; BLOCK],
        at: u64,
        pax: &Pax,
        path: &[u8],
    ) -> Result<Numbers, ArchiveError> {
        let num =
            |range: std::ops::Range<usize>| numeric(&hdr[range]).map_err(|r| self.invalid(at, r));
        let mode = (num(100..108)? & 0o7777) as u32;
        let uid = match pax.uid {
            Some(u) => u,
            None => num(108..116)?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => num(116..124)?,
        };
        let ustar_size = num(124..136)?;
        let size = match pax.size {
            None => ustar_size,
            Some(p) if p == ustar_size => p,
            // A writer that cannot fit the size in the field writes 0 there (Go's
            // archive/tar does); anything else is two readers seeing two archives.
            Some(p) if ustar_size == 0 && p > MAX_OCTAL_11 => p,
            Some(p) => {
                return Err(ArchiveError::SizeMismatch {
                    path: show(path),
                    ustar: ustar_size,
                    pax: p,
                })
            }
        };
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => {
                let t = num(136..148)?;
                (
                    i64::try_from(t).map_err(|_| self.invalid(at, HeaderError::MtimeOutOfRange))?,
                    0,
                )
            }
        };
        Ok(Numbers {
            mode,
            uid,
            gid,
            size,
            mtime,
            mtime_nsec,
        })
    }

    /// Handles what follows the first zero block: a second zero block (or the end
    /// of the stream), then at most `max_trailing` bytes of anything, which are
    /// read (so a compressed stream is checked to its end) and ignored.
    fn end_of_archive(&mut self) -> Result<(), ArchiveError> {
        self.done = true;
        let at = self.offset;
        match self.read_block()? {
            None => return Ok(()),
            Some(b) if b.iter().all(|&x| x == 0) => {}
            // A lone zero block followed by headers: Go's archive/tar refuses it,
            // GNU tar reads on. Refusing avoids extracting a different archive than
            // another tool would show.
            Some(_) => return Err(self.invalid(at, HeaderError::DataAfterSingleZeroBlock)),
        }
        let max = self.limits.max_trailing;
        let mut buf = [0u8; 8192];
        let mut seen: u64 = 0;
        loop {
            let n = match self.r.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(e, self.offset)),
            };
            if n == 0 {
                return Ok(());
            }
            seen += n as u64;
            self.offset += n as u64;
            if seen > max {
                return Err(ArchiveError::LimitExceeded {
                    limit: Limit::TrailingData,
                    max,
                });
            }
        }
    }
}

/// The numeric fields of a header, PAX overrides applied.
struct Numbers {
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
}

/// The name in the ustar fields: `prefix/name` when the header is ustar and has a prefix.
fn ustar_name(hdr: &[u8; BLOCK]) -> Vec<u8> {
    let name = cstr(&hdr[..100]);
    let prefix = if &hdr[257..263] == b"ustar\0" {
        cstr(&hdr[345..500])
    } else {
        &[][..]
    };
    if prefix.is_empty() {
        name.to_vec()
    } else {
        let mut p = prefix.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

/// What the typeflag says the entry is; a regular-file type whose name ends in `/` is a
/// directory, as old tars wrote them.
fn entry_kind(typeflag: u8, path: &[u8]) -> Result<Kind, ArchiveError> {
    Ok(match typeflag {
        b'0' | 0 | b'7' if path.ends_with(b"/") => Kind::Dir,
        b'0' | 0 | b'7' => Kind::File,
        b'1' => Kind::Hardlink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' => Kind::Dir,
        b'6' => Kind::Fifo,
        other => {
            return Err(ArchiveError::UnsupportedEntryType {
                path: show(path),
                typeflag: char::from(other),
            })
        }
    })
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The bytes of a NUL-terminated header field.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

/// Parses an octal (space/NUL padded) or GNU base-256 numeric field.
fn numeric(field: &[u8]) -> Result<u64, HeaderError> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err(HeaderError::NegativeNumber);
            }
            let mut v: u64 = u64::from(first & 0x7f);
            for &b in &field[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or(HeaderError::NumberOverflows("base-256"))?;
            }
            return Ok(v);
        }
    }
    let mut i = 0;
    while i < field.len() && field[i] == b' ' {
        i += 1;
    }
    let mut v: u64 = 0;
    while i < field.len() && (b'0'..=b'7').contains(&field[i]) {
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(field[i] - b'0')))
            .ok_or(HeaderError::NumberOverflows("octal"))?;
        i += 1;
    }
    if field[i..].iter().any(|&b| b != b' ' && b != 0) {
        return Err(HeaderError::Numeric(
            String::from_utf8_lossy(field).into_owned(),
        ));
    }
    Ok(v)
}

fn verify_checksum(hdr: &[u8; BLOCK]) -> Result<(), HeaderError> {
    let stored = numeric(&hdr[148..156]).map_err(|r| HeaderError::ChecksumField(Box::new(r)))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in hdr.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    // Some historic writers summed signed chars; both are accepted, as GNU tar does.
    if stored == unsigned || i64::try_from(stored).ok() == Some(signed) {
        Ok(())
    } else {
        Err(HeaderError::Checksum {
            stored,
            computed: unsigned,
        })
    }
}

fn decimal(v: &[u8]) -> Result<u64, HeaderError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeaderError::PaxNumber(
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|a| a.checked_add(u64::from(d - b'0')))
            .ok_or(HeaderError::NumberOverflows("pax"))
    })
}

fn parse_mtime(v: &[u8]) -> Result<(i64, u32), HeaderError> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    let s = i64::try_from(decimal(secs)?).map_err(|_| HeaderError::PaxMtimeOutOfRange)?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(HeaderError::PaxMtime);
    }
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if neg {
        // -1.5 is 1.5 s before the epoch: -2 s + 0.5 s.
        if nsec > 0 {
            Ok((-s - 1, 1_000_000_000 - nsec))
        } else {
            Ok((-s, 0))
        }
    } else {
        Ok((s, nsec))
    }
}

fn parse_pax(data: &[u8]) -> Result<Pax, HeaderError> {
    let mut pax = Pax::default();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or(HeaderError::PaxRecord("without length"))?;
        let len = usize::try_from(decimal(&rest[..sp])?)
            .map_err(|_| HeaderError::PaxRecord("length overflows"))?;
        if len <= sp + 1 || len > rest.len() {
            return Err(HeaderError::PaxRecord("length out of bounds"));
        }
        let rec = &rest[sp + 1..len];
        rest = &rest[len..];
        let rec = rec
            .strip_suffix(b"\n")
            .ok_or(HeaderError::PaxRecord("without newline"))?;
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or(HeaderError::PaxRecord("without '='"))?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        // An empty value deletes the keyword (POSIX pax), i.e. the ustar field applies.
        let opt = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
        match key {
            b"path" => pax.path = opt(value),
            b"linkpath" => pax.linkpath = opt(value),
            b"size" => pax.size = opt(value).map(|v| decimal(&v)).transpose()?,
            b"uid" => pax.uid = opt(value).map(|v| decimal(&v)).transpose()?,
            b"gid" => pax.gid = opt(value).map(|v| decimal(&v)).transpose()?,
            b"mtime" => pax.mtime = opt(value).map(|v| parse_mtime(&v)).transpose()?,
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if name.is_empty() {
                        return Err(HeaderError::EmptyXattrName);
                    }
                    pax.xattrs.retain(|(n, _)| n != name);
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                } else if key.starts_with(b"GNU.sparse.") {
                    return Err(HeaderError::Sparse);
                }
                // Other keywords (atime, ctime, uname, gname, comment, charset, ...)
                // do not affect what is extracted.
            }
        }
    }
    Ok(pax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::writer::pax_record;

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"0000644\0"), Ok(0o644));
        assert_eq!(numeric(b"  644 \0\0"), Ok(0o644));
        assert_eq!(numeric(b"\0\0\0\0"), Ok(0));
        assert!(numeric(b"0009\0").is_err());
        assert!(numeric(b"12 3\0").is_err());
        assert_eq!(numeric(&[0x80, 0, 0, 1, 0]), Ok(256));
        assert!(numeric(&[0xff, 0xff]).is_err());
        assert!(numeric(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn pax_records() {
        let p = parse_pax(b"16 path=foo/bar\n11 size=12\n21 SCHILY.xattr.a=bc\n").unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"foo/bar"[..]));
        assert_eq!(p.size, Some(12));
        assert_eq!(p.xattrs, vec![(b"a".to_vec(), b"bc".to_vec())]);
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"9 pathx\n").is_err());
        assert!(parse_pax(b"11 size=1x\n").is_err());
        assert_eq!(
            parse_pax(&pax_record(b"GNU.sparse.major", b"1")).unwrap_err(),
            HeaderError::Sparse
        );
        assert!(parse_pax(&pax_record(b"comment", b"anything")).is_ok());
    }

    #[test]
    fn checksum_errors_say_what_is_wrong() {
        let mut h = [0u8; BLOCK];
        h[..5].copy_from_slice(b"hello");
        h[148..156].copy_from_slice(b"garbage\0");
        assert!(matches!(
            verify_checksum(&h),
            Err(HeaderError::ChecksumField(inner)) if matches!(*inner, HeaderError::Numeric(_))
        ));
        h[148..156].copy_from_slice(b"0000001\0");
        let e = verify_checksum(&h).unwrap_err();
        assert!(
            matches!(e, HeaderError::Checksum { stored: 1, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("bad checksum (stored 1, computed "),
            "{e}"
        );
    }

    #[test]
    fn pax_mtime() {
        assert_eq!(parse_mtime(b"12.5"), Ok((12, 500_000_000)));
        assert_eq!(parse_mtime(b"-1.5"), Ok((-2, 500_000_000)));
        assert_eq!(parse_mtime(b"7"), Ok((7, 0)));
        assert!(parse_mtime(b"1e9").is_err());
    }
}
