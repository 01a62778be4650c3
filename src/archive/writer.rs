//! Writes deterministic layer tars from a directory tree or an explicit list of entries.
//!
//! The same tree always gives the same bytes: entries are sorted (parents before
//! children, component by component), uid/gid are numeric with empty user and group
//! names, mtimes are whole seconds (optionally clamped to `SOURCE_DATE_EPOCH`), atime
//! and ctime are never written, and PAX records appear only for what ustar cannot hold
//! (long names and links, big sizes, uids and mtimes, xattrs). The sha256 of the
//! stream (the layer's diffID) and its size are computed while writing.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::{show, ArchiveError};
use super::upper::is_overlay_xattr;

const BLOCK: usize = 512;
/// Largest value an 11-digit octal ustar size or mtime field holds (8 GiB - 1).
pub(crate) const MAX_OCTAL_11: u64 = 0o777_7777_7777;
/// Largest value a 7-digit octal ustar uid/gid/devmajor/devminor field holds.
const MAX_OCTAL_7: u64 = 0o777_7777;
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of OCI whiteout file names.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// Extended attributes of one entry: (name, value) pairs, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Sort key of a [`LayerEntry`]: (rank, component) per path component.
#[cfg(test)]
type SortKey = Vec<(u8, Vec<u8>)>;

/// Options of the layer writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterOptions {
    /// Clamp every mtime to at most this many seconds since the epoch. Pass the
    /// value of `SOURCE_DATE_EPOCH` here for reproducible layers; reading the
    /// environment is the caller's job.
    pub clamp_mtime: Option<i64>,
}

/// Digest and size of a written stream: for an uncompressed layer, its diffID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigest {
    /// sha256 of every byte written.
    pub sha256: [u8; 32],
    /// Number of bytes written.
    pub size: u64,
}

impl LayerDigest {
    /// The digest in OCI form, `sha256:<hex>`.
    pub fn diff_id(&self) -> String {
        format!("sha256:{}", crate::common::hex::encode(&self.sha256))
    }
}

/// Size of the chunks a [`LayerWriter`] writes and hashes.
const CHUNK: usize = 1 << 20;

/// A layer's output stream: gathered into 1 MiB chunks, each written whole to the inner
/// writer and then hashed. Once the stream outgrows one chunk the hashing moves to a second
/// thread (fed through a short bounded queue, buffers recycled), so hashing a big layer
/// overlaps with reading and writing it. The bytes and their digest are the same either way.
struct ChunkedOut<W> {
    inner: W,
    buf: Vec<u8>,
    fill: usize,
    written: u64,
    hasher: ChunkHasher,
}

enum ChunkHasher {
    Inline(Sha256),
    Thread {
        send: std::sync::mpsc::SyncSender<(Vec<u8>, usize)>,
        recycle: std::sync::mpsc::Receiver<Vec<u8>>,
        done: std::thread::JoinHandle<Sha256>,
    },
    /// Only while switching to a thread.
    Moved,
}

impl<W: Write> ChunkedOut<W> {
    fn new(inner: W) -> Self {
        ChunkedOut {
            inner,
            buf: Vec::new(),
            fill: 0,
            written: 0,
            hasher: ChunkHasher::Inline(Sha256::new()),
        }
    }

    /// The unfilled part of the current chunk (allocated on first use).
    fn space(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = match &self.hasher {
                ChunkHasher::Thread { recycle, .. } => recycle.try_recv().ok(),
                _ => None,
            }
            .unwrap_or_else(|| vec![0; CHUNK]);
        }
        &mut self.buf[self.fill..]
    }

    /// Copies `n` bytes (fewer at end of file) from `r`, read straight into the chunks.
    fn copy_from(&mut self, r: &mut impl Read, n: u64) -> io::Result<u64> {
        let mut copied = 0;
        while copied < n {
            let space = self.space();
            let want = space
                .len()
                .min(usize::try_from(n - copied).unwrap_or(usize::MAX));
            let got = match r.read(&mut space[..want]) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.fill += got;
            copied += got as u64;
            if self.fill == CHUNK {
                self.flush_chunk()?;
            }
        }
        Ok(copied)
    }

    /// Writes out the current chunk and hands it to the hasher.
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.fill == 0 {
            return Ok(());
        }
        let fill = std::mem::take(&mut self.fill);
        self.inner.write_all(&self.buf[..fill])?;
        self.written += fill as u64;
        if let ChunkHasher::Inline(h) = &mut self.hasher {
            if fill < CHUNK {
                h.update(&self.buf[..fill]);
                return Ok(());
            }
            // A big stream: hash on a second thread from here on.
            let ChunkHasher::Inline(mut h) =
                std::mem::replace(&mut self.hasher, ChunkHasher::Moved)
            else {
                unreachable!("matched above")
            };
            let (send, chunks) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
            let (give_back, recycle) = std::sync::mpsc::channel();
            let done = std::thread::Builder::new()
                .name("layer-hash".into())
                .spawn(move || {
                    for (chunk, len) in chunks {
                        h.update(&chunk[..len]);
                        let _ = give_back.send(chunk);
                    }
                    h
                })?;
            self.hasher = ChunkHasher::Thread {
                send,
                recycle,
                done,
            };
        }
        if let ChunkHasher::Thread { send, .. } = &self.hasher {
            let chunk = std::mem::take(&mut self.buf);
            send.send((chunk, fill))
                .map_err(|_| io::Error::other("the layer hashing thread stopped"))?;
        }
        Ok(())
    }

    /// Writes what is left and returns the inner writer with the stream's digest.
    fn finish(mut self) -> io::Result<(W, LayerDigest)> {
        self.flush_chunk()?;
        self.inner.flush()?;
        let h = match self.hasher {
            ChunkHasher::Inline(h) => h,
            ChunkHasher::Thread { send, done, .. } => {
                drop(send);
                done.join()
                    .map_err(|_| io::Error::other("the layer hashing thread panicked"))?
            }
            ChunkHasher::Moved => {
                return Err(io::Error::other(
                    "the layer hashing thread could not be started",
                ))
            }
        };
        Ok((
            self.inner,
            LayerDigest {
                sha256: h.finalize().into(),
                size: self.written,
            },
        ))
    }
}

impl<W: Write> Write for ChunkedOut<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let space = self.space();
        let n = space.len().min(data.len());
        space[..n].copy_from_slice(&data[..n]);
        self.fill += n;
        if self.fill == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One item of an explicit entry list (see [`LayerWriter::append_entries`]): the reference
/// the one-walk [`super::write_upper`] is tested against.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEntry {
    /// A file, directory, symlink, device or fifo taken from `source` on the host
    /// (never followed if it is a symlink), stored under `name` in the layer.
    Path {
        /// Name inside the layer, relative, `/`-separated, without a trailing slash.
        name: Vec<u8>,
        /// Where to read it from.
        source: std::path::PathBuf,
    },
    /// A whiteout: `name` is deleted from lower layers (written as `.wh.<base>`).
    Whiteout {
        /// Name of the deleted path inside the layer.
        name: Vec<u8>,
    },
    /// An opaque directory: everything `dir` held in lower layers is hidden
    /// (written as `<dir>/.wh..wh..opq`). An empty `dir` means the layer root.
    Opaque {
        /// The directory, relative to the layer root.
        dir: Vec<u8>,
    },
}

#[cfg(test)]
impl LayerEntry {
    /// Component-wise sort key: parents sort before children, and the opaque marker
    /// sorts before its siblings so that any extractor sees it right after its
    /// directory.
    fn sort_key(&self) -> SortKey {
        let comps = |p: &[u8]| -> SortKey {
            p.split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .map(|c| (1, c.to_vec()))
                .collect()
        };
        match self {
            LayerEntry::Path { name, .. } => comps(name),
            LayerEntry::Whiteout { name } => {
                let mut k = comps(name);
                if let Some(last) = k.last_mut() {
                    let mut wh = WHITEOUT_PREFIX.to_vec();
                    wh.extend_from_slice(&last.1);
                    last.1 = wh;
                }
                k
            }
            LayerEntry::Opaque { dir } => {
                let mut k = comps(dir);
                k.push((0, OPAQUE_MARKER.to_vec()));
                k
            }
        }
    }
}

/// Entry metadata as it goes into a header.
struct Meta {
    name: Vec<u8>,
    link: Vec<u8>,
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    dev_major: u64,
    dev_minor: u64,
    xattrs: Xattrs,
}

impl Meta {
    fn empty(name: Vec<u8>, typeflag: u8) -> Self {
        Meta {
            name,
            link: Vec::new(),
            typeflag,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Streams a deterministic layer tar into any `Write`.
///
/// Call the `append_*` methods in the order the entries should appear (or use
/// [`LayerWriter::append_tree`], which sorts), then
/// [`LayerWriter::finish`].
pub struct LayerWriter<W: Write> {
    out: ChunkedOut<W>,
    opts: WriterOptions,
    /// First layer name of each multiply-linked inode, keyed by (dev, ino).
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> LayerWriter<W> {
    /// Starts a layer written to `out`.
    pub fn new(out: W, opts: WriterOptions) -> Self {
        LayerWriter {
            out: ChunkedOut::new(out),
            opts,
            links: HashMap::new(),
        }
    }

    /// Appends everything below `dir` (not `dir` itself), sorted by name at every
    /// level. Symlinks are stored as symlinks, never followed.
    pub fn append_tree(&mut self, dir: &Path) -> Result<(), ArchiveError> {
        self.append_dir_contents(dir, b"")
    }

    fn append_dir_contents(&mut self, dir: &Path, prefix: &[u8]) -> Result<(), ArchiveError> {
        let rd = fs::read_dir(dir)
            .map_err(|e| ArchiveError::io("read directory", dir.display().to_string(), e))?;
        let mut names = Vec::new();
        for ent in rd {
            let ent =
                ent.map_err(|e| ArchiveError::io("read directory", dir.display().to_string(), e))?;
            names.push(ent.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            let source = dir.join(&n);
            let mut name = prefix.to_vec();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(n.as_bytes());
            let md = fs::symlink_metadata(&source)
                .map_err(|e| ArchiveError::io("stat", source.display().to_string(), e))?;
            self.append_with_metadata(&name, &source, &md)?;
            if md.is_dir() {
                self.append_dir_contents(&source, &name)?;
            }
        }
        Ok(())
    }

    /// Sorts `entries` (parents before children, opaque markers first among their
    /// siblings) and appends them. Meant for committing an overlay upper directory,
    /// where the caller has already turned overlay whiteouts into
    /// [`LayerEntry::Whiteout`] and [`LayerEntry::Opaque`].
    #[cfg(test)]
    pub fn append_entries(&mut self, entries: Vec<LayerEntry>) -> Result<(), ArchiveError> {
        let mut keyed: Vec<(SortKey, LayerEntry)> =
            entries.into_iter().map(|e| (e.sort_key(), e)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        for pair in keyed.windows(2) {
            if pair[0].0 == pair[1].0 {
                let name: Vec<u8> = pair[1]
                    .0
                    .iter()
                    .map(|c| c.1.as_slice())
                    .collect::<Vec<_>>()
                    .join(&b'/');
                return Err(ArchiveError::InvalidLayerName {
                    path: show(&name),
                    reason: "duplicate entry",
                });
            }
        }
        for (_, e) in keyed {
            match e {
                LayerEntry::Path { name, source } => self.append_path(&name, &source)?,
                LayerEntry::Whiteout { name } => self.append_whiteout(&name)?,
                LayerEntry::Opaque { dir } => self.append_opaque(&dir)?,
            }
        }
        Ok(())
    }

    /// Appends one host path under `name`. A regular file whose inode was already
    /// written becomes a hard link to its first name.
    pub fn append_path(&mut self, name: &[u8], source: &Path) -> Result<(), ArchiveError> {
        let md = fs::symlink_metadata(source)
            .map_err(|e| ArchiveError::io("stat", source.display().to_string(), e))?;
        self.append_with_metadata(name, source, &md)
    }

    fn append_with_metadata(
        &mut self,
        name: &[u8],
        source: &Path,
        md: &Metadata,
    ) -> Result<(), ArchiveError> {
        let xattrs = read_xattrs(source)?;
        self.append_node(name, source, md, xattrs, None)
    }

    /// Appends a path whose metadata and xattrs the caller read; a regular file's data is
    /// read from `open` when given (the file `md` describes), else from `source`.
    pub(crate) fn append_node(
        &mut self,
        name: &[u8],
        source: &Path,
        md: &Metadata,
        xattrs: Xattrs,
        open: Option<&mut File>,
    ) -> Result<(), ArchiveError> {
        let name = check_name(name)?;
        let base = name.rsplit(|&b| b == b'/').next().unwrap_or(&name);
        if base.starts_with(WHITEOUT_PREFIX) {
            // An extractor would read it as a whiteout and delete a lower file instead.
            return Err(ArchiveError::InvalidLayerName {
                path: show(&name),
                reason: "names starting with .wh. are reserved for whiteouts",
            });
        }
        let ft = md.file_type();
        let mut meta = Meta::empty(name.clone(), b'0');
        meta.mode = md.mode() & 0o7777;
        meta.uid = md.uid().into();
        meta.gid = md.gid().into();
        meta.mtime = match self.opts.clamp_mtime {
            Some(max) => md.mtime().min(max),
            None => md.mtime(),
        };
        meta.xattrs = xattrs;
        let mut data = false;
        if ft.is_dir() {
            meta.typeflag = b'5';
            meta.name.push(b'/');
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            match self.links.get(&key) {
                Some(first) if md.nlink() > 1 => {
                    meta.typeflag = b'1';
                    meta.link = first.clone();
                }
                _ => {
                    if md.nlink() > 1 {
                        self.links.insert(key, name.clone());
                    }
                    meta.size = md.len();
                    data = true;
                }
            }
        } else if ft.is_symlink() {
            meta.typeflag = b'2';
            let target = fs::read_link(source)
                .map_err(|e| ArchiveError::io("read link", source.display().to_string(), e))?;
            meta.link = target.as_os_str().as_bytes().to_vec();
        } else if ft.is_char_device() && md.rdev() == 0 {
            // Overlayfs's whiteout: as a device entry it would turn into a whiteout
            // again in every overlay snapshot, silently hiding a lower file.
            return Err(ArchiveError::InvalidLayerName {
                path: show(&name),
                reason:
                    "a 0/0 character device is an overlay whiteout; list it as LayerEntry::Whiteout",
            });
        } else if ft.is_char_device() || ft.is_block_device() {
            meta.typeflag = if ft.is_char_device() { b'3' } else { b'4' };
            let rdev = md.rdev();
            meta.dev_major = libc::major(rdev).into();
            meta.dev_minor = libc::minor(rdev).into();
        } else if ft.is_fifo() {
            meta.typeflag = b'6';
        } else {
            // Sockets cannot be represented in a tar; Docker and containerd skip them too.
            tracing::debug!(path = %source.display(), "skipping socket");
            return Ok(());
        }
        self.write_header(&meta)?;
        if data {
            match open {
                Some(f) => self.copy_open(f, source, md)?,
                None => self.copy_file(source, md)?,
            }
        }
        Ok(())
    }

    fn copy_file(&mut self, source: &Path, md: &Metadata) -> Result<(), ArchiveError> {
        let src = source.display().to_string();
        let mut f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(source)
            .map_err(|e| ArchiveError::io("open", src.clone(), e))?;
        let fmd = f
            .metadata()
            .map_err(|e| ArchiveError::io("stat", src.clone(), e))?;
        if fmd.ino() != md.ino() || fmd.dev() != md.dev() {
            return Err(ArchiveError::FileChanged {
                path: src,
                expected: md.len(),
                found: fmd.len(),
            });
        }
        self.copy_open(&mut f, source, md)
    }

    /// Copies exactly `md.len()` bytes of the open file `f`.
    fn copy_open(
        &mut self,
        f: &mut File,
        source: &Path,
        md: &Metadata,
    ) -> Result<(), ArchiveError> {
        let src = source.display().to_string();
        let expected = md.len();
        let copied = self
            .out
            .copy_from(f, expected)
            .map_err(|e| ArchiveError::io("archive", src.clone(), e))?;
        if copied != expected {
            return Err(ArchiveError::FileChanged {
                path: src,
                expected,
                found: copied,
            });
        }
        self.pad(expected)
    }

    /// Appends an OCI whiteout for `name` (`dir/.wh.base`).
    pub fn append_whiteout(&mut self, name: &[u8]) -> Result<(), ArchiveError> {
        let name = check_name(name)?;
        let (dir, base) = match name.iter().rposition(|&b| b == b'/') {
            Some(i) => (&name[..=i], &name[i + 1..]),
            None => (&name[..0], &name[..]),
        };
        let mut wh = dir.to_vec();
        wh.extend_from_slice(WHITEOUT_PREFIX);
        wh.extend_from_slice(base);
        self.write_marker(wh)
    }

    /// Appends an OCI opaque marker for `dir` (`dir/.wh..wh..opq`); an empty `dir`
    /// is the layer root.
    pub fn append_opaque(&mut self, dir: &[u8]) -> Result<(), ArchiveError> {
        let mut name = if dir.iter().all(|&b| b == b'/') {
            Vec::new()
        } else {
            let mut d = check_name(dir)?;
            d.push(b'/');
            d
        };
        name.extend_from_slice(OPAQUE_MARKER);
        self.write_marker(name)
    }

    /// Whiteouts and opaque markers are empty regular files with fixed metadata, so
    /// they do not depend on when or by whom the layer was made.
    fn write_marker(&mut self, name: Vec<u8>) -> Result<(), ArchiveError> {
        self.write_header(&Meta::empty(name, b'0'))
    }

    /// Writes the end-of-archive marker and returns the writer and the digest.
    pub fn finish(mut self) -> Result<(W, LayerDigest), ArchiveError> {
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .and_then(|_| self.out.flush())
            .map_err(|e| ArchiveError::io("write", "end of archive", e))?;
        self.out
            .finish()
            .map_err(|e| ArchiveError::io("write", "end of archive", e))
    }

    fn pad(&mut self, size: u64) -> Result<(), ArchiveError> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out
                .write_all(&[0u8; BLOCK][..BLOCK - rem])
                .map_err(|e| ArchiveError::io("write", "padding", e))?;
        }
        Ok(())
    }

    fn write_header(&mut self, m: &Meta) -> Result<(), ArchiveError> {
        let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut hdr = [0u8; BLOCK];

        // Name: plain field, else the ustar prefix/name split, else PAX.
        if m.name.len() <= 100 {
            hdr[..m.name.len()].copy_from_slice(&m.name);
        } else if let Some((prefix, rest)) = split_ustar_name(&m.name) {
            hdr[..rest.len()].copy_from_slice(rest);
            hdr[345..345 + prefix.len()].copy_from_slice(prefix);
        } else {
            pax.insert(b"path".to_vec(), m.name.clone());
            hdr[..100].copy_from_slice(&m.name[..100]);
        }
        if m.link.len() <= 100 {
            hdr[157..157 + m.link.len()].copy_from_slice(&m.link);
        } else {
            pax.insert(b"linkpath".to_vec(), m.link.clone());
            hdr[157..257].copy_from_slice(&m.link[..100]);
        }
        write_octal(&mut hdr[100..108], u64::from(m.mode));
        // Fields that do not fit are written as 0 with the real value in PAX, as Go's
        // archive/tar does; the extractor accepts a 0 ustar size only in that case.
        let uid = fit_or_pax(&mut pax, b"uid", m.uid, MAX_OCTAL_7);
        write_octal(&mut hdr[108..116], uid);
        let gid = fit_or_pax(&mut pax, b"gid", m.gid, MAX_OCTAL_7);
        write_octal(&mut hdr[116..124], gid);
        let size = fit_or_pax(&mut pax, b"size", m.size, MAX_OCTAL_11);
        write_octal(&mut hdr[124..136], size);
        let mtime = match u64::try_from(m.mtime) {
            Ok(t) if t <= MAX_OCTAL_11 => t,
            _ => {
                pax.insert(b"mtime".to_vec(), m.mtime.to_string().into_bytes());
                0
            }
        };
        write_octal(&mut hdr[136..148], mtime);
        hdr[156] = m.typeflag;
        hdr[257..263].copy_from_slice(b"ustar\0");
        hdr[263..265].copy_from_slice(b"00");
        if m.dev_major > MAX_OCTAL_7 || m.dev_minor > MAX_OCTAL_7 {
            return Err(ArchiveError::OutOfRange {
                path: show(&m.name),
                field: "device number",
                value: m.dev_major.max(m.dev_minor),
            });
        }
        write_octal(&mut hdr[329..337], m.dev_major);
        write_octal(&mut hdr[337..345], m.dev_minor);
        for (k, v) in &m.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.insert(key, v.clone());
        }

        if !pax.is_empty() {
            self.write_pax(&m.name, &pax)?;
        }
        set_checksum(&mut hdr);
        self.out
            .write_all(&hdr)
            .map_err(|e| ArchiveError::io("write", show(&m.name), e))
    }

    fn write_pax(
        &mut self,
        name: &[u8],
        records: &BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Result<(), ArchiveError> {
        let mut body = Vec::new();
        for (k, v) in records {
            body.extend_from_slice(&pax_record(k, v));
        }
        // A fixed, pid-free header name (GNU tar puts its pid here, which breaks
        // reproducibility); the name is informational only.
        let base = name
            .split(|&b| b == b'/')
            .rfind(|c| !c.is_empty())
            .unwrap_or(b"");
        let mut pname = b"PaxHeaders.0/".to_vec();
        pname.extend_from_slice(base);
        pname.truncate(100);
        let mut hdr = [0u8; BLOCK];
        hdr[..pname.len()].copy_from_slice(&pname);
        write_octal(&mut hdr[100..108], 0o644);
        write_octal(&mut hdr[108..116], 0);
        write_octal(&mut hdr[116..124], 0);
        write_octal(&mut hdr[124..136], body.len() as u64);
        write_octal(&mut hdr[136..148], 0);
        hdr[156] = b'x';
        hdr[257..263].copy_from_slice(b"ustar\0");
        hdr[263..265].copy_from_slice(b"00");
        write_octal(&mut hdr[329..337], 0);
        write_octal(&mut hdr[337..345], 0);
        set_checksum(&mut hdr);
        self.out
            .write_all(&hdr)
            .and_then(|_| self.out.write_all(&body))
            .map_err(|e| ArchiveError::io("write", show(name), e))?;
        self.pad(body.len() as u64)
    }
}

/// Writes the tree below `dir` as a layer into `out`: a shorthand for
/// [`LayerWriter::append_tree`] and [`LayerWriter::finish`].
pub fn write_tree<W: Write>(
    dir: &Path,
    out: W,
    opts: WriterOptions,
) -> Result<(W, LayerDigest), ArchiveError> {
    let mut w = LayerWriter::new(out, opts);
    w.append_tree(dir)?;
    w.finish()
}

/// Normalises a layer name: relative, no empty, `.` or `..` components, no NUL.
fn check_name(name: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let bad = |reason| ArchiveError::InvalidLayerName {
        path: show(name),
        reason,
    };
    if name.contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    let comps: Vec<&[u8]> = name
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    if comps.is_empty() {
        return Err(bad("empty name"));
    }
    if comps.iter().any(|c| *c == b"." || *c == b"..") {
        return Err(bad("contains . or .. components"));
    }
    Ok(comps.join(&b'/'))
}

/// Splits a name longer than 100 bytes into ustar prefix (≤155) and name (≤100)
/// at a `/`, keeping the name part as long as possible.
fn split_ustar_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() > 256 {
        return None;
    }
    (0..name.len())
        .filter(|&i| name[i] == b'/')
        .find(|&i| i <= 155 && name.len() - i - 1 <= 100 && i + 1 < name.len())
        .map(|i| (&name[..i], &name[i + 1..]))
}

fn fit_or_pax(pax: &mut BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8], v: u64, max: u64) -> u64 {
    if v <= max {
        v
    } else {
        pax.insert(key.to_vec(), v.to_string().into_bytes());
        0
    }
}

/// Zero-padded octal digits followed by a NUL, filling the field.
fn write_octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn set_checksum(hdr: &mut [u8; BLOCK]) {
    hdr[148..156].fill(b' ');
    let sum: u64 = hdr.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    hdr[148..156].copy_from_slice(s.as_bytes());
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts itself.
pub(crate) fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = len.to_string().into_bytes();
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Reads a path's xattrs (not following symlinks), sorted by name. Overlay's own
/// attributes (`trusted.overlay.*`, and `user.overlay.*` of `userxattr` mounts) and
/// the host's SELinux label are left out: the first would change how the layer is
/// read when its snapshot is mounted, the second is host state.
pub(crate) fn read_xattrs(path: &Path) -> Result<Xattrs, ArchiveError> {
    split_xattrs(XattrsOf { path, file: None }).map(|(_, values)| values)
}

/// Whose xattrs to read: the open `file` when given, else `path` itself (never followed);
/// `path` names it in errors either way.
#[derive(Clone, Copy)]
pub(crate) struct XattrsOf<'a> {
    /// The path.
    pub path: &'a Path,
    /// The path, open.
    pub file: Option<&'a File>,
}

impl XattrsOf<'_> {
    fn c_path(&self) -> Result<CString, ArchiveError> {
        CString::new(self.path.as_os_str().as_bytes())
            .map_err(|e| ArchiveError::io("read xattrs", self.path.display().to_string(), e))
    }

    /// The names of all xattrs (none where the filesystem has no xattrs).
    pub(crate) fn names(self) -> Result<Vec<Vec<u8>>, ArchiveError> {
        let listed = match self.file {
            Some(f) => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(f);
                // SAFETY: fd is open; buf/len describe a writable buffer (or null/0).
                xattr_call(|buf, len| unsafe { libc::flistxattr(fd, buf.cast(), len) })
            }
            None => {
                let cpath = self.c_path()?;
                // SAFETY: cpath is a valid C string; buf/len a writable buffer (or null/0).
                xattr_call(|buf, len| unsafe { libc::llistxattr(cpath.as_ptr(), buf.cast(), len) })
            }
        };
        let names = match listed {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
            Err(e) => {
                return Err(ArchiveError::io(
                    "list xattrs",
                    self.path.display().to_string(),
                    e,
                ))
            }
        };
        Ok(names
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// The value of xattr `name` (`None` if it is gone).
    pub(crate) fn value(self, name: &[u8]) -> Result<Option<Vec<u8>>, ArchiveError> {
        let shown = || self.path.display().to_string();
        let cname = CString::new(name).map_err(|e| ArchiveError::io("read xattr", shown(), e))?;
        let got = match self.file {
            Some(f) => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(f);
                // SAFETY: fd is open, cname a valid C string, buf/len a writable buffer.
                xattr_call(|buf, len| unsafe {
                    libc::fgetxattr(fd, cname.as_ptr(), buf.cast(), len)
                })
            }
            None => {
                let cpath = self.c_path()?;
                // SAFETY: valid C strings; buf/len a writable buffer (or null/0).
                xattr_call(|buf, len| unsafe {
                    libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.cast(), len)
                })
            }
        };
        match got {
            Ok(v) => Ok(Some(v)),
            // Removed between list and get.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
            Err(e) => Err(ArchiveError::io("read xattr", shown(), e)),
        }
    }
}

/// The names of overlayfs's own xattrs, and the other xattrs with their values, sorted,
/// leaving out the host's SELinux label (see [`read_xattrs`]).
pub(crate) fn split_xattrs(of: XattrsOf<'_>) -> Result<(Vec<Vec<u8>>, Xattrs), ArchiveError> {
    let mut overlay = Vec::new();
    let mut values = Vec::new();
    for name in of.names()? {
        if is_overlay_xattr(&name) {
            overlay.push(name);
        } else if name != b"security.selinux" {
            if let Some(v) = of.value(&name)? {
                values.push((name, v));
            }
        }
    }
    values.sort();
    Ok((overlay, values))
}

/// Runs an xattr call that fills a buffer: a small one first, then a size query and a
/// fill, retried if the value grew in between.
pub(crate) fn xattr_call(mut f: impl FnMut(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    // Most paths have no xattrs or a few short ones: one call into a small buffer, and the
    // size query only when that is too small.
    let mut small = [0u8; 1024];
    let n = f(small.as_mut_ptr(), small.len());
    if n >= 0 {
        return Ok(small[..n as usize].to_vec());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ERANGE) {
        return Err(e);
    }
    loop {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        let m = f(buf.as_mut_ptr(), buf.len());
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}
