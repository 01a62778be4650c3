//! Filesystem steps of a build: make sure every layer of a stage has a snapshot, run a change
//! against the stage's overlay view, and commit what changed as a new layer and snapshot.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::{self, ExtractOptions, WriterOptions};
use crate::cache::LayerRef;
use crate::image::config::chain_id;
use crate::image::Digest;
use crate::store::fsutil::{self, TempPath};
use crate::store::{Store, StoreError};

use super::mount::with_overlay;

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
/// layer, or `None` when nothing changed.
pub fn change<R: Send>(
    store: &Store,
    layers: &[LayerRef],
    sources: &[Vec<LayerRef>],
    clamp_mtime: Option<i64>,
    work: impl FnOnce(&Path, &[PathBuf]) -> R + Send,
) -> Result<(R, Option<LayerRef>), FsError> {
    let lowers = lower_dirs(store, layers)?;
    let source_dirs = sources
        .iter()
        .map(|s| lower_dirs(store, s))
        .collect::<Result<Vec<_>, _>>()?;
    let res = store.reserve_snapshot()?;
    let upper = res.path();
    let scratch = scratch_dir(store)?;
    let r = with_overlay(&lowers, &upper, scratch.path(), &source_dirs, work)?;
    drop(scratch);
    if fs::read_dir(&upper)?.next().is_none() {
        return Ok((r, None));
    }
    let layer = commit_dir(store, &upper, clamp_mtime)?;
    res.commit(top_chain(layers).as_ref(), &layer.diff_id)?;
    Ok((r, Some(layer)))
}

/// Write an overlay upper dir as a layer blob into the store: overlay whiteouts become
/// `.wh.` entries and opaque directories `.wh..wh..opq`, so the cost follows what changed.
pub fn commit_dir(
    store: &Store,
    upper: &Path,
    clamp_mtime: Option<i64>,
) -> Result<LayerRef, FsError> {
    let tmp = scratch_dir(store)?;
    let path = tmp.path().join("layer.tar");
    let file = fs::File::create(&path)?;
    // The writer hands the file whole 1 MiB chunks: no buffering needed here.
    let (file, digest) =
        archive::write_upper(upper, WriteBehind::new(file), WriterOptions { clamp_mtime })?;
    // adopt_blob fsyncs before the rename.
    drop(file);
    let diff_id = Digest::parse(&digest.diff_id()).map_err(|e| FsError::Io(e.to_string()))?;
    store.adopt_blob(&path, &diff_id, digest.size)?;
    Ok(LayerRef {
        diff_id,
        size: digest.size,
    })
}

/// A new layer file whose data is handed to the disk as it is written (writeback started
/// every 8 MiB, without waiting for it), so the fsync before the layer is adopted finds
/// little left to do. The fsync still decides durability; this only starts it early.
struct WriteBehind {
    file: fs::File,
    start: u64,
    pending: u64,
}

impl WriteBehind {
    const STEP: u64 = 8 << 20;

    fn new(file: fs::File) -> WriteBehind {
        WriteBehind {
            file,
            start: 0,
            pending: 0,
        }
    }
}

impl io::Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
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

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A fresh scratch directory under the store's `tmp/`, removed when dropped.
pub(crate) fn scratch_dir(store: &Store) -> Result<TempPath, FsError> {
    let p = fsutil::create_temp_dir(&store.tmp_dir(), "work", 0o700)?;
    Ok(TempPath::new(p))
}
