//! Snapshots: unpacked layers under `snapshots/<chainid-hex>/`, built in
//! `tmp/` and published by a single rename, so a snapshot directory that
//! exists is always complete.
//!
//! A snapshot directory holds `fs/`, the layer's files (what the executor
//! stacks as an overlay lower dir), and `snapshot.json`, which records the
//! format version, the chainID, the layer's diffID and the parent chainID.
//! Keeping the files one level down leaves room for that metadata and lets
//! `fs/` carry the layer root's own mode and owner.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{io_err, Result, StoreError};
use super::fsutil::{self, TempPath};
use super::lock::LockGuard;
use super::Store;
use crate::image::config::chain_id;
use crate::image::Digest;

/// Version of the `snapshot.json` format.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Name of the metadata file in a snapshot directory.
const META_FILE: &str = "snapshot.json";

/// Name of the directory holding the layer's files.
const FS_DIR: &str = "fs";

/// Largest `snapshot.json` kiln reads.
const MAX_META_SIZE: u64 = 64 << 10;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SnapshotMeta {
    version: u32,
    chain_id: Digest,
    diff_id: Digest,
    parent: Option<Digest>,
}

/// A committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The chainID naming the filesystem made by this layer and its parents.
    pub chain_id: Digest,
    /// The diffID of this layer.
    pub diff_id: Digest,
    /// The chainID of the layers below, if any.
    pub parent: Option<Digest>,
    /// The layer's files: `<root>/snapshots/<chainid-hex>/fs`.
    pub path: PathBuf,
}

/// A snapshot being built in `<root>/tmp`. Fill [`path`](Self::path), then
/// [`commit`](Self::commit); dropping it uncommitted removes the work.
/// Garbage collection waits while a reservation exists.
#[derive(Debug)]
pub struct SnapshotReservation {
    store: Store,
    // Field order matters: the directory is removed before the GC lock is
    // released.
    dir: TempPath,
    _gc: LockGuard,
}

impl SnapshotReservation {
    /// The directory to unpack the layer into.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(FS_DIR)
    }

    /// Writes `name` beside `fs/` (metadata about the layer's files, such as the index of a
    /// COPY written straight into it). Flushed and published with the snapshot.
    pub fn write_beside(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.path().join(name);
        fs::write(&path, bytes).map_err(io_err("write", &path))
    }

    /// Publishes the snapshot as the layer `diff_id` stacked on the
    /// snapshot `parent` (a chainID), under the chainID the OCI spec
    /// derives from them. Everything written is flushed to disk first. If
    /// the snapshot already exists (another process committed the same
    /// layer first), this work is discarded and the existing one returned.
    pub fn commit(self, parent: Option<&Digest>, diff_id: &Digest) -> Result<Snapshot> {
        let chain = chain_id(parent, diff_id);
        let meta = SnapshotMeta {
            version: SNAPSHOT_FORMAT_VERSION,
            chain_id: chain.clone(),
            diff_id: diff_id.clone(),
            parent: parent.cloned(),
        };
        let dir = self.dir.path().to_path_buf();
        let meta_path = dir.join(META_FILE);
        let bytes =
            serde_json::to_vec(&meta).map_err(|e| io_err("encode", &meta_path)(e.into()))?;
        fs::write(&meta_path, bytes).map_err(io_err("write", &meta_path))?;
        // One syncfs flushes the whole unpacked tree, far cheaper than an
        // fsync per file, before the rename makes the snapshot visible.
        let handle = File::open(&dir).map_err(io_err("open", &dir))?;
        nix::unistd::syncfs(&handle).map_err(|e| io_err("syncfs", &dir)(e.into()))?;
        drop(handle);

        let dest = self.store.snapshots_dir().join(chain.hex());
        match fs::rename(&dir, &dest) {
            Ok(()) => {
                self.dir.disarm();
                fsutil::fsync_dir(&self.store.snapshots_dir())?;
                tracing::debug!(chain_id = %chain, "committed snapshot");
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                tracing::debug!(chain_id = %chain, "snapshot already committed elsewhere");
            }
            Err(e) => return Err(io_err("rename into place", dest)(e)),
        }
        self.store.snapshot(&chain)?.ok_or_else(|| StoreError::Io {
            op: "find committed snapshot",
            path: self.store.snapshots_dir().join(chain.hex()),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }
}

impl Store {
    /// Starts building a snapshot in `<root>/tmp`.
    pub fn reserve_snapshot(&self) -> Result<SnapshotReservation> {
        let gc = self.gc_shared()?;
        let dir = fsutil::create_temp_dir(&self.tmp_dir(), "snapshot", 0o700)?;
        let guard = TempPath::new(dir.clone());
        let fs_dir = dir.join(FS_DIR);
        fs::create_dir(&fs_dir).map_err(io_err("create directory", &fs_dir))?;
        Ok(SnapshotReservation {
            store: self.clone(),
            dir: guard,
            _gc: gc,
        })
    }

    /// The directory a snapshot's files are (or would be) in.
    pub fn snapshot_path(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(chain_id.hex()).join(FS_DIR)
    }

    /// The committed snapshot with `chain_id`, if there is one.
    pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<Snapshot>> {
        let dir = self.snapshots_dir().join(chain_id.hex());
        let meta_path = dir.join(META_FILE);
        let file = match File::open(&meta_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", meta_path)(e)),
        };
        let corrupt = |reason: String| StoreError::CorruptMetadata {
            path: meta_path.clone(),
            reason,
            source: None,
        };
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(file, MAX_META_SIZE), &mut bytes)
            .map_err(io_err("read", &meta_path))?;
        let meta: SnapshotMeta =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptMetadata {
                path: meta_path.clone(),
                reason: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        if meta.version != SNAPSHOT_FORMAT_VERSION {
            return Err(corrupt(format!(
                "snapshot format version {} is not {SNAPSHOT_FORMAT_VERSION}",
                meta.version
            )));
        }
        if meta.chain_id != *chain_id {
            return Err(corrupt(format!(
                "it names chainID {}, but lives under {chain_id}",
                meta.chain_id
            )));
        }
        Ok(Some(Snapshot {
            chain_id: meta.chain_id,
            diff_id: meta.diff_id,
            parent: meta.parent,
            path: dir.join(FS_DIR),
        }))
    }

    /// The chainIDs of all directories under `snapshots/` (committed
    /// snapshots; names that are not digests are skipped).
    pub fn list_snapshots(&self) -> Result<Vec<Digest>> {
        let dir = self.snapshots_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_sha256_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::config::chain_ids;
    use crate::store::test_support::temp_store;

    fn is_empty(p: &std::path::Path) -> bool {
        fs::read_dir(p).unwrap().next().is_none()
    }

    #[test]
    fn commit_publishes_under_the_chain_id() {
        let (_dir, store) = temp_store();
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        let res = store.reserve_snapshot().unwrap();
        fs::write(res.path().join("hello"), b"hi").unwrap();
        let bottom = res.commit(None, &a).unwrap();
        assert_eq!(bottom.chain_id, a);
        assert_eq!(fs::read(bottom.path.join("hello")).unwrap(), b"hi");

        let res = store.reserve_snapshot().unwrap();
        let top = res.commit(Some(&bottom.chain_id), &b).unwrap();
        assert_eq!(top.chain_id, chain_ids(&[a.clone(), b.clone()])[1]);
        assert_eq!(top.parent.as_ref(), Some(&a));
        assert_eq!(top.path, store.snapshot_path(&top.chain_id));
        assert_eq!(store.snapshot(&top.chain_id).unwrap(), Some(top.clone()));
        let mut all = vec![a, top.chain_id];
        all.sort();
        assert_eq!(store.list_snapshots().unwrap(), all);
        assert!(is_empty(&store.tmp_dir()));
    }

    #[test]
    fn dropped_reservation_leaves_nothing() {
        let (_dir, store) = temp_store();
        let res = store.reserve_snapshot().unwrap();
        fs::create_dir_all(res.path().join("a/b")).unwrap();
        fs::write(res.path().join("a/b/c"), b"x").unwrap();
        drop(res);
        assert!(is_empty(&store.tmp_dir()));
        assert!(is_empty(&store.snapshots_dir()));
    }

    #[test]
    fn second_commit_of_the_same_layer_keeps_the_first() {
        let (_dir, store) = temp_store();
        let d = Digest::of_bytes(b"layer");
        let first = store.reserve_snapshot().unwrap();
        let second = store.reserve_snapshot().unwrap();
        fs::write(first.path().join("f"), b"1").unwrap();
        fs::write(second.path().join("f"), b"2").unwrap();
        let s1 = first.commit(None, &d).unwrap();
        let s2 = second.commit(None, &d).unwrap();
        assert_eq!(s1, s2);
        assert_eq!(fs::read(s1.path.join("f")).unwrap(), b"1");
        assert!(is_empty(&store.tmp_dir()));
    }

    #[test]
    fn missing_snapshot_is_none() {
        let (_dir, store) = temp_store();
        assert_eq!(store.snapshot(&Digest::of_bytes(b"nope")).unwrap(), None);
    }
}
