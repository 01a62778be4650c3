//! Layers on disk: make sure every layer of a stack has a snapshot, run a change against the
//! stack's overlay view, and commit what changed as a new layer and snapshot.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::{self, ExtractOptions, WriterOptions};
use crate::cache::LayerRef;
use crate::image::config::chain_id;
use crate::image::Digest;
use crate::store::fsutil::{self, TempPath};
use crate::store::{Store, StoreError};

use super::overlay::with_overlay;
use crate::executor::unpriv::WorkRoot;

/// The file in a snapshot's directory (beside `fs/`) listing the files a direct COPY wrote,
/// with their content hashes: what a later COPY may hard-link.
pub(crate) const INDEX_FILE: &str = "copy-index.json";

/// Errors of a filesystem step.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing a layer failed.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// Anything else on the host.
    #[error("{0}")]
    Io(String),
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> Self {
        FsError::Io(e.to_string())
    }
}

/// The snapshot directories of `layers` (bottom first), unpacking any layer that has none
/// yet (an image loaded from an archive, say). Returned top-most first, as overlayfs wants.
pub fn lower_dirs(store: &Store, layers: &[LayerRef]) -> Result<Vec<PathBuf>, FsError> {
    let mut parent: Option<Digest> = None;
    let mut out = Vec::with_capacity(layers.len());
    for l in layers {
        let chain = chain_id(parent.as_ref(), &l.diff_id);
        let snap = match store.snapshot(&chain)? {
            Some(s) => s,
            None => {
                let res = store.reserve_snapshot()?;
                let blob = store.open_blob(&l.diff_id)?;
                // One layer per snapshot, in overlayfs's own format: whiteouts become 0/0
                // devices and opaque markers xattrs, so the stack mounts to the right tree.
                let opts = ExtractOptions {
                    whiteouts: archive::WhiteoutMode::Overlay,
                    ..Default::default()
                };
                let stats = archive::extract(io::BufReader::new(blob), &res.path(), &opts)?;
                if stats.opaque_root && parent.is_some() {
                    // Overlayfs ignores an opaque marker on a lower layer's root.
                    return Err(FsError::Io(format!(
                        "layer {} hides everything below it (an opaque root), which overlayfs cannot stack",
                        l.diff_id
                    )));
                }
                res.commit(parent.as_ref(), &l.diff_id)?
            }
        };
        out.push(snap.path);
        parent = Some(chain);
    }
    out.reverse();
    Ok(out)
}

/// The chainID of the top of `layers`.
pub fn top_chain(layers: &[LayerRef]) -> Option<Digest> {
    let mut parent: Option<Digest> = None;
    for l in layers {
        parent = Some(chain_id(parent.as_ref(), &l.diff_id));
    }
    parent
}

/// A change made on top of a stage's layers: `work` gets the merged root (lower layers plus
/// the new upper dir) and the read-only roots of `sources`, and writes into the merged root;
/// what it changed becomes a new layer, committed as a blob and a snapshot. Returns the new
/// layer, an empty one when nothing changed (WORKDIR: BuildKit's mkdir is a layer even over
/// an existing directory).
pub fn change<R: Send>(
    store: &Store,
    layers: &[LayerRef],
    sources: &[Vec<LayerRef>],
    clamp_mtime: Option<i64>,
    work: impl FnOnce(&Path, &[PathBuf]) -> R + Send,
) -> Result<(R, Option<LayerRef>), FsError> {
    change_then(
        store,
        layers,
        sources,
        clamp_mtime,
        true,
        |merged, roots, _| work(merged, roots),
        |r, _| Ok((r, None)),
    )
}

/// [`change`] in two parts: `work` runs on the mounted overlay (and also gets the lower
/// dirs, top-most first) and must only read the `sources` (in the unprivileged mode their
/// files are the snapshots' own, hard-linked); `then`, after the overlay is unmounted, may
/// write into the upper dir itself (a COPY written straight into the layer) and return a
/// file to keep beside the snapshot ([`INDEX_FILE`]). Nothing changed gives no layer unless
/// `empty_is_layer`.
pub(crate) fn change_then<R: Send, T>(
    store: &Store,
    layers: &[LayerRef],
    sources: &[Vec<LayerRef>],
    clamp_mtime: Option<i64>,
    empty_is_layer: bool,
    work: impl FnOnce(&Path, &[PathBuf], &[PathBuf]) -> R + Send,
    then: impl FnOnce(R, &Path) -> Result<(T, Option<Vec<u8>>), FsError>,
) -> Result<(T, Option<LayerRef>), FsError> {
    let lowers = lower_dirs(store, layers)?;
    let source_dirs = sources
        .iter()
        .map(|s| lower_dirs(store, s))
        .collect::<Result<Vec<_>, _>>()?;
    let res = store.reserve_snapshot()?;
    let upper = res.path();
    let scratch = scratch_dir(store)?;
    let (t, index) = if crate::executor::unpriv::enabled() {
        // No overlay: a working root that the steps around this change share.
        let merged = scratch.path().join("merged");
        let mut root = WorkRoot::obtain(&lowers, &merged, &store.tmp_dir())?;
        // The sources are only read (COPY --from): hard links to their layers' files.
        let r = super::overlay::with_source_copies(scratch.path(), &source_dirs, true, |roots| {
            work(root.path(), roots, &lowers)
        })?;
        root.diff_into(&upper)?;
        let (t, index) = then(r, &upper)?;
        root.park(&upper, index.is_some());
        (t, index)
    } else {
        let r = with_overlay(&lowers, &upper, scratch.path(), &source_dirs, |m, roots| {
            work(m, roots, &lowers)
        })?;
        drop(scratch);
        then(r, &upper)?
    };
    if !empty_is_layer && fs::read_dir(&upper)?.next().is_none() {
        return Ok((t, None));
    }
    let layer = commit_dir(store, &upper, clamp_mtime)?;
    if let Some(bytes) = index {
        res.write_beside(INDEX_FILE, &bytes)?;
    }
    res.commit(top_chain(layers).as_ref(), &layer.diff_id)?;
    Ok((t, Some(layer)))
}

/// Write an overlay upper dir as a layer blob into the store: overlay whiteouts become
/// `.wh.` entries and opaque directories `.wh..wh..opq`, so the cost follows what changed.
pub fn commit_dir(
    store: &Store,
    upper: &Path,
    clamp_mtime: Option<i64>,
) -> Result<LayerRef, FsError> {
    commit_dir_over(store, upper, None, clamp_mtime)
}

/// [`commit_dir`] for a RUN step's upper dir over the snapshots `lowers` (top-most first):
/// files overlayfs copied up but the step left as they were are not written again (see
/// [`archive::write_upper_over`]), as BuildKit's differ does. The lowers are compared
/// through a read-only overlay of them that only this call sees.
pub fn commit_run_dir(
    store: &Store,
    upper: &Path,
    lowers: &[PathBuf],
    clamp_mtime: Option<i64>,
) -> Result<LayerRef, FsError> {
    // Without mounts (the unprivileged mode) the upper dir holds only what changed already.
    if lowers.is_empty() || crate::executor::unpriv::enabled() {
        return commit_dir(store, upper, clamp_mtime);
    }
    let scratch = scratch_dir(store)?;
    let empty = scratch.path().join("upper");
    let work = scratch.path().join("overlay");
    fs::create_dir_all(&empty)?;
    fs::create_dir_all(&work)?;
    let committed = with_overlay(&[], &empty, &work, &[lowers.to_vec()], |_, roots| {
        commit_dir_over(
            store,
            upper,
            roots.first().map(PathBuf::as_path),
            clamp_mtime,
        )
    });
    match committed {
        Ok(layer) => layer,
        // Without a view of the lowers the layer is still right, only larger: everything
        // overlayfs copied up is written.
        Err(_) => commit_dir(store, upper, clamp_mtime),
    }
}

fn commit_dir_over(
    store: &Store,
    upper: &Path,
    base: Option<&Path>,
    clamp_mtime: Option<i64>,
) -> Result<LayerRef, FsError> {
    let tmp = scratch_dir(store)?;
    let path = tmp.path().join("layer.tar");
    let file = fs::File::create(&path)?;
    // The writer hands the file whole 1 MiB chunks: no buffering needed here.
    let out = Offload::new(WriteBehind::new(file))?;
    let (out, digest) = archive::write_upper_over(upper, base, out, WriterOptions { clamp_mtime })?;
    // adopt_blob fsyncs before the rename.
    drop(out.finish()?);
    let diff_id = Digest::parse(&digest.diff_id()).map_err(|e| FsError::Io(e.to_string()))?;
    store.adopt_blob(&path, &diff_id, digest.size)?;
    Ok(LayerRef {
        diff_id,
        size: digest.size,
    })
}

use std::io::Write as _;

/// A new layer file written around the page cache where the filesystem allows it
/// (`O_DIRECT`, from a page-aligned buffer): a layer is written once and read rarely, and
/// filling fresh page-cache pages is what made a big commit slow (a 256 MiB layer took
/// ~0.8 s on a VM that hands back free memory, ~0.15 s direct). Where `O_DIRECT` is refused
/// (tmpfs, say), it writes through the page cache and starts writeback every 8 MiB, so the
/// fsync before the layer is adopted finds little left. Either way the fsync decides
/// durability; the bytes are the same.
struct WriteBehind {
    file: fs::File,
    /// Direct mode: the aligned buffer and how much of it is filled.
    direct: Option<(AlignedBuf, usize)>,
    start: u64,
    pending: u64,
}

/// A zeroed, page-aligned heap buffer of [`AlignedBuf::LEN`] bytes.
struct AlignedBuf(std::ptr::NonNull<u8>);

impl AlignedBuf {
    const LEN: usize = 1 << 20;
    const ALIGN: usize = 4096;

    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(Self::LEN, Self::ALIGN).expect("a valid layout")
    }

    fn new() -> Option<AlignedBuf> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(Self::layout()) };
        std::ptr::NonNull::new(p).map(AlignedBuf)
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: we own LEN initialised bytes at this pointer.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), Self::LEN) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), Self::layout()) }
    }
}

// SAFETY: the buffer is plain memory owned by one writer at a time.
unsafe impl Send for AlignedBuf {}

impl WriteBehind {
    const STEP: u64 = 8 << 20;
    /// Direct writes go in multiples of this (the common logical block size).
    const BLOCK: usize = 4096;

    fn new(file: fs::File) -> WriteBehind {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        let direct = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) == 0
        };
        WriteBehind {
            file,
            direct: if direct {
                AlignedBuf::new().map(|b| (b, 0))
            } else {
                None
            },
            start: 0,
            pending: 0,
        }
    }

    /// Leaves direct mode (a refused direct write, or the unaligned tail): what is
    /// buffered is written through the page cache.
    fn leave_direct(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let Some((mut buf, fill)) = self.direct.take() else {
            return Ok(());
        };
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT);
            }
        }
        self.file.write_all(&buf.as_mut()[..fill])
    }

    /// Writes the buffer's first `len` bytes (a multiple of BLOCK) directly.
    fn write_direct(&mut self, len: usize) -> io::Result<()> {
        let Some((buf, fill)) = self.direct.as_mut() else {
            return Ok(());
        };
        let data = &buf.as_mut()[..len];
        match self.file.write_all(data) {
            Ok(()) => {
                let rest = *fill - len;
                buf.as_mut().copy_within(len..len + rest, 0);
                *fill = rest;
                Ok(())
            }
            // Refused for this file after all: nothing of this buffer was written.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.leave_direct(),
            Err(e) => Err(e),
        }
    }

    fn write_buffered(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pending += n as u64;
        if self.pending >= Self::STEP {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor and range; SYNC_FILE_RANGE_WRITE only starts
            // writeback. A failure is harmless: the fsync later flushes everything.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.start as libc::off64_t,
                    self.pending as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.start += self.pending;
            self.pending = 0;
        }
        Ok(n)
    }
}

impl io::Write for WriteBehind {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some((buf, fill)) = self.direct.as_mut() else {
            return self.write_buffered(data);
        };
        let n = (AlignedBuf::LEN - *fill).min(data.len());
        buf.as_mut()[*fill..*fill + n].copy_from_slice(&data[..n]);
        *fill += n;
        if *fill == AlignedBuf::LEN {
            self.write_direct(AlignedBuf::LEN)?;
        }
        Ok(n)
    }

    /// Called once the stream is complete: the whole blocks go directly, an unaligned
    /// tail through the page cache.
    fn flush(&mut self) -> io::Result<()> {
        if let Some((_, fill)) = &self.direct {
            let whole = fill - fill % Self::BLOCK;
            if whole > 0 {
                self.write_direct(whole)?;
            }
            self.leave_direct()?;
        }
        self.file.flush()
    }
}

/// Writes on a second thread, so the walk that reads the layer's files never waits for
/// the disk (the hashing has a thread of its own).
struct Offload {
    send: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    recycle: std::sync::mpsc::Receiver<Vec<u8>>,
    done: Option<std::thread::JoinHandle<io::Result<WriteBehind>>>,
}

impl Offload {
    fn new(mut w: WriteBehind) -> io::Result<Offload> {
        let (send, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (give_back, recycle) = std::sync::mpsc::channel();
        let done = std::thread::Builder::new()
            .name("layer-write".into())
            .spawn(move || {
                for chunk in chunks {
                    w.write_all(&chunk)?;
                    let _ = give_back.send(chunk);
                }
                w.flush()?;
                Ok(w)
            })?;
        Ok(Offload {
            send: Some(send),
            recycle,
            done: Some(done),
        })
    }

    /// Waits for everything to be written; the file, or the first write error.
    fn finish(mut self) -> io::Result<fs::File> {
        self.join().map(|w| w.file)
    }

    fn join(&mut self) -> io::Result<WriteBehind> {
        drop(self.send.take());
        match self.done.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the layer writing thread panicked")),
            None => Err(io::Error::other("the layer file was already closed")),
        }
    }
}

impl io::Write for Offload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut chunk = self.recycle.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(data);
        let sent = self.send.as_ref().map(|s| s.send(chunk));
        match sent {
            Some(Ok(())) => Ok(data.len()),
            // The thread stopped: its error says why.
            _ => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the layer writing thread stopped"))),
        }
    }

    /// [`Offload::finish`] does the real flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// A fresh scratch directory under the store's `tmp/`, removed when dropped.
pub(crate) fn scratch_dir(store: &Store) -> Result<TempPath, FsError> {
    let p = fsutil::create_temp_dir(&store.tmp_dir(), "work", 0o700)?;
    Ok(TempPath::new(p))
}

#[cfg(test)]
mod write_tests {
    use super::*;
    use std::io::Write;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// Direct or buffered, whole chunks, odd-sized writes and an unaligned tail all land
    /// byte for byte.
    #[test]
    fn layer_files_get_exactly_the_bytes_written() {
        let d = tempfile::tempdir().unwrap();
        let data = pattern(3 * AlignedBuf::LEN + 12_345);
        for force_buffered in [false, true] {
            let p = d.path().join(format!("layer-{force_buffered}"));
            let mut w = WriteBehind::new(fs::File::create(&p).unwrap());
            if force_buffered {
                w.leave_direct().unwrap();
                w.direct = None;
            }
            let mut off = 0;
            for step in [1usize, 511, 4096, 70_000, AlignedBuf::LEN, 3]
                .iter()
                .cycle()
            {
                if off >= data.len() {
                    break;
                }
                let end = (off + step).min(data.len());
                let mut part = &data[off..end];
                while !part.is_empty() {
                    let n = w.write(part).unwrap();
                    part = &part[n..];
                }
                off = end;
            }
            w.flush().unwrap();
            drop(w);
            assert_eq!(fs::read(&p).unwrap(), data, "buffered: {force_buffered}");
        }
    }
}
