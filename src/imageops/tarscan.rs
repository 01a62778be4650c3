//! Reads an untrusted outer tar (an image archive) entry by entry, with
//! bounded headers, names and sizes, and nothing written to disk.
//!
//! This is a small tar reader of its own rather than the `tar` crate's,
//! because the crate reads GNU long names and PAX headers into memory
//! whatever their size, and in its raw mode (which would avoid that) it
//! ignores PAX `size` records, which Go's writer relies on for entries over
//! 8 GiB (their ustar size field is then 0). Here, extension headers are
//! read up to [`ScanLimits::max_header_size`], a PAX `size` is honoured when
//! the header's size is 0 or equal, and any other disagreement is refused
//! (the TARmageddon confusion, CVE-2026-33055: parsers honouring one or the
//! other would see different archives). Each entry's name and data go to a
//! callback; names are only ever keys, never host paths.

use std::io::{self, Read};

use super::error::{ImageOpsError, Result};

/// Size of a tar block.
const BLOCK: u64 = 512;

/// Limits on the outer tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanLimits {
    /// Bytes of the (uncompressed) tar stream.
    pub max_size: u64,
    /// Entries, extension headers included.
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
    /// Anything else (devices, FIFOs, sparse files), with its typeflag.
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

fn bad(reason: impl Into<String>) -> ImageOpsError {
    ImageOpsError::InvalidArchive {
        reason: reason.into(),
    }
}

/// The input, counted and bounded: an endless stream costs at most the limit.
struct Input<R> {
    inner: R,
    read: u64,
    max: u64,
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let allowed = (self.max + 1).saturating_sub(self.read);
        let want = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(io::Error::other(format!(
                "the archive is larger than the {} bytes allowed",
                self.max
            )));
        }
        Ok(n)
    }
}

fn io_bad(e: io::Error) -> ImageOpsError {
    bad(format!("cannot read the tar stream: {e}"))
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end before the first byte.
fn read_block<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(bad("the tar stream is truncated inside a header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_bad(e)),
        }
    }
    Ok(true)
}

/// Skips `n` bytes of input.
fn skip<R: Read>(r: &mut R, n: u64) -> Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(io_bad)?;
    if copied != n {
        return Err(bad("the tar stream is truncated inside an entry"));
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// A NUL-terminated string field.
fn field(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// A numeric field: octal (space/NUL padded) or GNU base-256.
fn number(b: &[u8]) -> Option<u64> {
    if let Some((&first, rest)) = b.split_first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return None; // negative
            }
            let mut v: u64 = u64::from(first & 0x7f);
            for &c in rest {
                v = v.checked_mul(256)?.checked_add(u64::from(c))?;
            }
            return Some(v);
        }
    }
    let s = field(b);
    let s: Vec<u8> = s.iter().copied().filter(|&c| c != b' ').collect();
    if s.is_empty() {
        return Some(0);
    }
    s.iter().try_fold(0u64, |acc, &c| {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        acc.checked_mul(8)?.checked_add(u64::from(c - b'0'))
    })
}

fn checksum_ok(h: &[u8; 512]) -> bool {
    let Some(want) = number(&h[148..156]) else {
        return false;
    };
    let unsigned: u64 = h
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
    // Some old writers summed signed bytes; Go accepts either.
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed)
}

/// The name of a header: ustar prefix joined when the magic says POSIX ustar.
fn header_name(h: &[u8; 512]) -> Vec<u8> {
    let name = field(&h[0..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = field(&h[345..500]);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(name);
            return full;
        }
    }
    name.to_vec()
}

/// Reads an extension header's data (and its padding), refusing one over the limit.
fn read_header_data<R: Read>(r: &mut R, size: u64, max: u64, what: &str) -> Result<Vec<u8>> {
    if size > max {
        return Err(bad(format!(
            "a {what} of {size} bytes is larger than the {max} allowed"
        )));
    }
    let mut data = vec![0u8; size as usize];
    if size > 0 && !read_block(r, &mut data)? {
        return Err(bad(
            "the tar stream is truncated inside an extension header",
        ));
    }
    skip(r, padding(size))?;
    Ok(data)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

#[derive(Default)]
struct Pending {
    gnu_name: Option<Vec<u8>>,
    gnu_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.gnu_name.is_none()
            && self.gnu_link.is_none()
            && self.pax_path.is_none()
            && self.pax_link.is_none()
            && self.pax_size.is_none()
    }
}

/// PAX records: `"%d %s=%s\n"`, the length counting the whole record.
fn parse_pax(data: &[u8], pending: &mut Pending) -> Result<()> {
    let malformed = || bad("malformed PAX header");
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ').ok_or_else(malformed)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(malformed());
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(malformed)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pending.pax_path = Some(value.to_vec()),
            b"linkpath" => pending.pax_link = Some(value.to_vec()),
            b"size" => {
                let v = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| bad("malformed PAX size"))?;
                pending.pax_size = Some(v);
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// Reads every entry of the tar `reader`, calling `on_entry` with its name,
/// kind and a reader of its data (which need not be read to the end).
pub(crate) fn scan<R: Read>(
    reader: R,
    limits: &ScanLimits,
    mut on_entry: impl FnMut(&ScanEntry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut input = Input {
        inner: reader,
        read: 0,
        max: limits.max_size,
    };
    let mut pending = Pending::default();
    let mut count = 0u64;
    let mut h = [0u8; 512];
    loop {
        if !read_block(&mut input, &mut h)? {
            break;
        }
        if h.iter().all(|&b| b == 0) {
            // End of archive; whatever follows (a second zero block, record
            // padding) is not read.
            break;
        }
        count += 1;
        if count > limits.max_entries {
            return Err(bad(format!("more than {} entries", limits.max_entries)));
        }
        if !checksum_ok(&h) {
            return Err(bad(format!(
                "tar header {count} has a bad checksum: not a tar archive, or corrupt"
            )));
        }
        let header_size = number(&h[124..136]).ok_or_else(|| bad("malformed tar size field"))?;
        let typeflag = h[156];
        let max = limits.max_header_size;
        match typeflag {
            b'x' => {
                let data = read_header_data(&mut input, header_size, max, "PAX header")?;
                parse_pax(&data, &mut pending)?;
                continue;
            }
            b'g' => {
                read_header_data(&mut input, header_size, max, "PAX global header")?;
                continue;
            }
            b'L' => {
                let data = read_header_data(&mut input, header_size, max, "GNU long name")?;
                pending.gnu_name = Some(trim_nul(data));
                continue;
            }
            b'K' => {
                let data = read_header_data(&mut input, header_size, max, "GNU long link name")?;
                pending.gnu_link = Some(trim_nul(data));
                continue;
            }
            _ => {}
        }
        let p = std::mem::take(&mut pending);
        let size = match p.pax_size {
            None => header_size,
            // Go writes 0 in the ustar field when the size needs PAX.
            Some(pax) if header_size == 0 || header_size == pax => pax,
            Some(pax) => {
                return Err(bad(format!(
                    "an entry's PAX size ({pax}) disagrees with its header size ({header_size})"
                )))
            }
        };
        let name = p.pax_path.or(p.gnu_name).unwrap_or_else(|| header_name(&h));
        let link = p
            .pax_link
            .or(p.gnu_link)
            .unwrap_or_else(|| field(&h[157..257]).to_vec());
        // Links, directories and devices carry no data whatever their size field says.
        let (kind, data_size) = match typeflag {
            b'0' | 0 | b'7' => (Kind::File(size), size),
            b'5' => (Kind::Dir, 0),
            b'2' => (Kind::Symlink(link), 0),
            b'1' => (Kind::Hardlink(link), 0),
            b'3' | b'4' | b'6' => (Kind::Other(typeflag), 0),
            other => (Kind::Other(other), size),
        };
        let mut data = (&mut input).take(data_size);
        on_entry(&ScanEntry { name, kind }, &mut data)?;
        let left = data.limit();
        skip(&mut input, left + padding(data_size))?;
    }
    if !pending.is_empty() {
        return Err(bad(
            "the archive ends with an extension header but no entry",
        ));
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
            r.read_to_end(&mut data).unwrap();
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
        assert!(err.to_string().contains("GNU long name"), "{err}");
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
        assert!(err.to_string().contains("PAX size"), "{err}");
    }

    #[test]
    fn honours_a_pax_size_over_a_zero_header_size() {
        // Go's writer leaves the ustar size 0 when the size needs PAX (> 8 GiB).
        let record = b"9 size=4\n";
        let mut bytes = header("pax", b'x', record.len() as u64).as_bytes().to_vec();
        bytes.extend_from_slice(record);
        bytes.extend_from_slice(&[0u8; 512 - 9]);
        let mut h = header("big", b'0', 0);
        h.set_cksum();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(b"abcd");
        bytes.extend_from_slice(&[0u8; 508]);
        bytes.extend_from_slice(header("next", b'0', 0).as_bytes());
        bytes.extend_from_slice(&[0u8; 1024]);
        let got = collect(&bytes, &LIMITS).unwrap();
        assert_eq!(got[0].0.kind, Kind::File(4));
        assert_eq!(got[0].1, b"abcd");
        assert_eq!(got[1].0.name, b"next");
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
            .contains("more than 3 entries"));
        let small = ScanLimits {
            max_size: 2000,
            ..LIMITS
        };
        assert!(collect(&bytes, &small)
            .unwrap_err()
            .to_string()
            .contains("larger than the 2000"));
    }
}
