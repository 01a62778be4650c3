//! Reachability from `index.json`: garbage collection deletes what it does
//! not reach, and `check` verifies what it does (and every blob's digest).
//!
//! Reachable means: every descriptor in `index.json`; for a manifest, its
//! config and layers; for an index (or Docker manifest list), its
//! manifests, recursively; and the snapshots named by the chainIDs of every
//! reachable image's diffIDs. A layer shared by two images stays as long as
//! either is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;

use oci_spec::image::{Descriptor, ImageIndex};
use serde::Deserialize;

use super::error::{io_err, Result, StoreError};
use super::images::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use super::index::ref_name;
use super::{fsutil, Store};
use crate::image::config::{self, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::image::Digest;

/// Docker's manifest media types, which other tools may leave in a layout.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How deep nested indexes are followed.
const MAX_DEPTH: usize = 8;

/// Extra things for garbage collection to keep, beyond what `index.json`
/// reaches (the build cache's layers and snapshots, say).
#[derive(Debug, Clone, Default)]
pub struct GcRoots {
    /// Blobs to keep.
    pub blobs: BTreeSet<Digest>,
    /// Snapshots (chainIDs) to keep.
    pub snapshots: BTreeSet<Digest>,
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: Vec<Digest>,
    /// Bytes those blobs held.
    pub bytes_freed: u64,
    /// Snapshots deleted.
    pub snapshots_removed: Vec<Digest>,
    /// Leftovers of interrupted work deleted from `<root>/tmp`.
    pub temp_entries_removed: usize,
}

/// Something wrong with a store, found by [`Store::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `index.json` cannot be read or parsed.
    InvalidIndex {
        /// Why.
        reason: String,
    },
    /// An `index.json` entry points at a manifest that is not stored.
    DanglingReference {
        /// The entry's `ref.name`, if it has one.
        name: Option<String>,
        /// The missing manifest.
        digest: Digest,
    },
    /// A blob something refers to is not stored.
    MissingBlob {
        /// The missing blob.
        digest: Digest,
        /// What refers to it.
        referenced_by: String,
    },
    /// A descriptor names a digest that is not sha256, which the store
    /// cannot hold.
    UnsupportedDigest {
        /// The digest as written.
        digest: String,
        /// What refers to it.
        referenced_by: String,
    },
    /// A stored blob's content does not hash to its name.
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// A stored blob's size differs from what a descriptor says.
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size in the descriptor.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// A manifest, index or config cannot be read or parsed.
    InvalidDocument {
        /// The blob.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// A file that does not belong where it is.
    StrayFile {
        /// The file.
        path: PathBuf,
    },
    /// A snapshot directory without valid metadata, files or parent.
    BrokenSnapshot {
        /// The snapshot's chainID.
        chain_id: Digest,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::InvalidIndex { reason } => write!(f, "index.json is invalid: {reason}"),
            Problem::DanglingReference { name, digest } => match name {
                Some(n) => write!(f, "image {n} points at manifest {digest}, which is missing"),
                None => write!(
                    f,
                    "an untagged image points at manifest {digest}, which is missing"
                ),
            },
            Problem::MissingBlob {
                digest,
                referenced_by,
            } => write!(f, "blob {digest} is missing (needed by {referenced_by})"),
            Problem::UnsupportedDigest {
                digest,
                referenced_by,
            } => write!(
                f,
                "{referenced_by} names {digest:?}, which is not a sha256 digest"
            ),
            Problem::CorruptBlob { digest, actual } => {
                write!(
                    f,
                    "blob {digest} is corrupt: its content hashes to {actual}"
                )
            }
            Problem::SizeMismatch {
                digest,
                expected,
                actual,
            } => write!(
                f,
                "blob {digest} is {actual} bytes, its descriptor says {expected}"
            ),
            Problem::InvalidDocument { digest, reason } => write!(f, "blob {digest}: {reason}"),
            Problem::StrayFile { path } => write!(f, "unexpected file {}", path.display()),
            Problem::BrokenSnapshot { chain_id, reason } => {
                write!(f, "snapshot {chain_id} is broken: {reason}")
            }
        }
    }
}

/// Descriptors in a manifest or index of any flavour (OCI, Docker, artifact).
#[derive(Deserialize)]
struct Children {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    blobs: Vec<Descriptor>,
}

/// The result of walking `index.json`.
#[derive(Default)]
struct Marks {
    /// Reachable blobs and the size their first descriptor gives.
    blobs: BTreeMap<Digest, u64>,
    /// Reachable snapshots.
    snapshots: BTreeSet<Digest>,
    problems: Vec<Problem>,
    /// Blobs already reported corrupt while walking.
    corrupt: BTreeSet<Digest>,
    /// Set when a manifest or index could not be read: its children are
    /// unknown, so deleting unmarked blobs could delete live ones.
    unsafe_to_sweep: Option<String>,
}

impl Marks {
    fn unsafe_problem(&mut self, p: Problem) {
        if self.unsafe_to_sweep.is_none() {
            self.unsafe_to_sweep = Some(p.to_string());
        }
        self.problems.push(p);
    }
}

impl Store {
    /// Deletes blobs and snapshots that nothing in `index.json` reaches,
    /// and clears `<root>/tmp`. See [`Store::gc_with_roots`].
    pub fn gc(&self) -> Result<GcReport> {
        self.gc_with_roots(&GcRoots::default())
    }

    /// Deletes blobs and snapshots that neither `index.json` nor `extra`
    /// reaches, and clears `<root>/tmp`.
    ///
    /// Fails with [`StoreError::Busy`] while a write, [`Lease`] or snapshot
    /// reservation is active (in any process), and with
    /// [`StoreError::UnsafeToCollect`] (deleting nothing) if a reachable
    /// manifest or index cannot be read, since what it references is then
    /// unknown.
    ///
    /// [`Lease`]: super::Lease
    pub fn gc_with_roots(&self, extra: &GcRoots) -> Result<GcReport> {
        let Some(_gc) = self.try_gc_exclusive()? else {
            return Err(StoreError::Busy {
                root: self.root().to_path_buf(),
            });
        };
        let _index = self.lock_index()?;
        let index = self.read_index()?;
        let marks = self.mark(&index);
        if let Some(problem) = marks.unsafe_to_sweep {
            return Err(StoreError::UnsafeToCollect { problem });
        }
        let mut report = GcReport::default();

        for d in self.list_blobs()? {
            if marks.blobs.contains_key(&d) || extra.blobs.contains(&d) {
                continue;
            }
            let path = self.blob_path(&d);
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            report.bytes_freed += size;
            report.blobs_removed.push(d);
        }
        if !report.blobs_removed.is_empty() {
            fsutil::fsync_dir(&self.blobs_dir())?;
        }

        for c in self.list_snapshots()? {
            if marks.snapshots.contains(&c) || extra.snapshots.contains(&c) {
                continue;
            }
            // Move the snapshot out of snapshots/ first: a crash halfway
            // through deleting must not leave a half-empty directory that
            // looks like a complete snapshot.
            let from = self.snapshots_dir().join(c.hex());
            let to = self.tmp_dir().join(fsutil::unique_name("gc-snapshot"));
            fs::rename(&from, &to).map_err(io_err("move out of the way", &from))?;
            fs::remove_dir_all(&to).map_err(io_err("remove", &to))?;
            report.snapshots_removed.push(c);
        }
        if !report.snapshots_removed.is_empty() {
            fsutil::fsync_dir(&self.snapshots_dir())?;
        }

        // Nobody else writes to tmp/ now: every writer holds the GC lock
        // shared or the index lock, and this holds both.
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))? {
            let path = entry.map_err(io_err("list", &tmp))?.path();
            let removed = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(e) => Err(e),
            };
            removed.map_err(io_err("remove", &path))?;
            report.temp_entries_removed += 1;
        }
        tracing::info!(
            blobs = report.blobs_removed.len(),
            bytes = report.bytes_freed,
            snapshots = report.snapshots_removed.len(),
            "garbage collection done"
        );
        Ok(report)
    }

    /// Verifies the store: `index.json` parses, everything it reaches is
    /// present and parses, every blob hashes to its name and has the size
    /// its descriptors give, and every snapshot has valid metadata and its
    /// parent. Reads every blob; takes no lock.
    pub fn check(&self) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        let index = match self.read_index() {
            Ok(i) => i,
            Err(e @ StoreError::CorruptMetadata { .. }) => {
                problems.push(Problem::InvalidIndex {
                    reason: e.to_string(),
                });
                ImageIndex::default()
            }
            Err(e) => return Err(e),
        };
        let marks = self.mark(&index);
        problems.extend(marks.problems);

        let dir = self.blobs_dir();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_sha256_hex(n).ok())
            else {
                problems.push(Problem::StrayFile { path });
                continue;
            };
            if marks.corrupt.contains(&d) {
                continue;
            }
            let file = fs::File::open(&path).map_err(io_err("open", &path))?;
            let (actual, size) =
                Digest::of_reader(io::BufReader::new(file)).map_err(io_err("read", &path))?;
            if actual != d {
                problems.push(Problem::CorruptBlob { digest: d, actual });
                continue;
            }
            if let Some(&expected) = marks.blobs.get(&d) {
                if expected != size {
                    problems.push(Problem::SizeMismatch {
                        digest: d,
                        expected,
                        actual: size,
                    });
                }
            }
        }

        let dir = self.snapshots_dir();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Some(c) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_sha256_hex(n).ok())
            else {
                problems.push(Problem::StrayFile { path: entry.path() });
                continue;
            };
            let broken = |reason: String| Problem::BrokenSnapshot {
                chain_id: c.clone(),
                reason,
            };
            match self.snapshot(&c) {
                Ok(Some(s)) => {
                    if !s.path.is_dir() {
                        problems.push(broken("its fs directory is missing".to_owned()));
                    }
                    if let Some(p) = &s.parent {
                        if !self.snapshots_dir().join(p.hex()).is_dir() {
                            problems.push(broken(format!("its parent snapshot {p} is missing")));
                        }
                    }
                }
                Ok(None) => problems.push(broken("snapshot.json is missing".to_owned())),
                Err(e) => problems.push(broken(e.to_string())),
            }
        }
        Ok(problems)
    }

    /// Walks everything `index.json` reaches.
    fn mark(&self, index: &ImageIndex) -> Marks {
        let mut marks = Marks::default();
        for (i, entry) in index.manifests().iter().enumerate() {
            let by = match ref_name(entry) {
                Some(n) => format!("index.json entry {n}"),
                None => format!("index.json entry {i}"),
            };
            self.mark_descriptor(entry, &by, 0, &mut marks);
        }
        marks
    }

    fn mark_descriptor(&self, desc: &Descriptor, by: &str, depth: usize, marks: &mut Marks) {
        let Ok(d) = Digest::try_from(desc.digest()) else {
            // Not a sha256 digest, so not something this store can hold.
            marks.problems.push(Problem::UnsupportedDigest {
                digest: desc.digest().to_string(),
                referenced_by: by.to_owned(),
            });
            return;
        };
        if marks.blobs.contains_key(&d) {
            return;
        }
        marks.blobs.insert(d.clone(), desc.size());
        if !self.has_blob(&d) {
            marks.problems.push(if depth == 0 {
                Problem::DanglingReference {
                    name: ref_name(desc).map(str::to_owned),
                    digest: d,
                }
            } else {
                Problem::MissingBlob {
                    digest: d,
                    referenced_by: by.to_owned(),
                }
            });
            return;
        }
        let media_type = desc.media_type().to_string();
        let is_manifest = media_type == MEDIA_TYPE_MANIFEST || media_type == DOCKER_MANIFEST;
        let is_index = media_type == MEDIA_TYPE_INDEX || media_type == DOCKER_MANIFEST_LIST;
        if !is_manifest && !is_index {
            return;
        }
        if depth >= MAX_DEPTH {
            marks.unsafe_problem(Problem::InvalidDocument {
                digest: d,
                reason: format!("indexes nested more than {MAX_DEPTH} deep"),
            });
            return;
        }
        let children: Children =
            match self
                .read_blob(&d, "manifest", MAX_MANIFEST_SIZE)
                .and_then(|bytes| {
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptMetadata {
                        path: self.blob_path(&d),
                        reason: e.to_string(),
                        source: Some(Box::new(e)),
                    })
                }) {
                Ok(c) => c,
                Err(StoreError::DigestMismatch { actual, .. }) => {
                    marks.corrupt.insert(d.clone());
                    marks.unsafe_problem(Problem::CorruptBlob { digest: d, actual });
                    return;
                }
                Err(e) => {
                    marks.unsafe_problem(Problem::InvalidDocument {
                        digest: d,
                        reason: e.to_string(),
                    });
                    return;
                }
            };
        let child_by = format!("manifest {d}");
        if let Some(c) = &children.config {
            self.mark_descriptor(c, &child_by, depth + 1, marks);
            self.mark_snapshots(c, marks);
        }
        for c in children.layers.iter().chain(&children.blobs) {
            self.mark_descriptor(c, &child_by, depth + 1, marks);
        }
        for c in &children.manifests {
            self.mark_descriptor(c, &format!("index {d}"), depth + 1, marks);
        }
    }

    /// Marks the snapshots of the image whose config `desc` describes.
    /// Problems here never make collection unsafe: snapshots can always be
    /// unpacked again from the layers.
    fn mark_snapshots(&self, desc: &Descriptor, marks: &mut Marks) {
        let media_type = desc.media_type().to_string();
        if media_type != MEDIA_TYPE_CONFIG && media_type != DOCKER_CONFIG {
            return;
        }
        let Ok(d) = Digest::try_from(desc.digest()) else {
            return;
        };
        if !self.has_blob(&d) {
            return;
        }
        let parsed = self
            .read_blob(&d, "config", MAX_CONFIG_SIZE)
            .and_then(|bytes| Ok(config::parse_config(&bytes)?));
        match parsed {
            Ok(c) => match config::diff_ids(&c) {
                Ok(ids) => marks.snapshots.extend(config::chain_ids(&ids)),
                Err(e) => marks.problems.push(Problem::InvalidDocument {
                    digest: d,
                    reason: e.to_string(),
                }),
            },
            Err(StoreError::DigestMismatch { actual, .. }) => {
                if marks.corrupt.insert(d.clone()) {
                    marks
                        .problems
                        .push(Problem::CorruptBlob { digest: d, actual });
                }
            }
            Err(e) => marks.problems.push(Problem::InvalidDocument {
                digest: d,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Reference;
    use crate::store::test_support::{put_test_image, temp_store};
    use std::os::unix::fs::PermissionsExt;

    fn corrupt(path: &std::path::Path, bytes: &[u8]) {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn gc_keeps_shared_layers_and_removes_the_rest() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"base", b"only a"], "a");
        let b = put_test_image(&store, &[b"base", b"only b"], "b");
        let orphan = store.put_blob_bytes(b"never referenced", None).unwrap();
        // Snapshots for both images' layer stacks, plus one nobody uses.
        for img in [&a, &b] {
            let mut parent = None;
            for diff_id in &img.diff_ids {
                let s = store
                    .reserve_snapshot()
                    .unwrap()
                    .commit(parent.as_ref(), diff_id)
                    .unwrap();
                parent = Some(s.chain_id);
            }
        }
        let stray = store
            .reserve_snapshot()
            .unwrap()
            .commit(None, &Digest::of_bytes(b"unused"))
            .unwrap();
        // Leftover of an interrupted write.
        fs::write(store.tmp_dir().join("blob-123-0-0"), b"partial").unwrap();

        let report = store.gc().unwrap();
        assert_eq!(report.blobs_removed, vec![orphan.clone()]);
        assert_eq!(report.bytes_freed, 16);
        assert_eq!(report.snapshots_removed, vec![stray.chain_id]);
        assert_eq!(report.temp_entries_removed, 1);

        // Removing a leaves the shared base layer for b.
        store.remove_image(&a.manifest_digest).unwrap();
        let report = store.gc().unwrap();
        let base = Digest::of_bytes(b"base");
        let only_a = Digest::of_bytes(b"only a");
        assert!(store.has_blob(&base));
        assert!(!store.has_blob(&only_a));
        assert!(!store.has_blob(&a.manifest_digest));
        assert!(!store.has_blob(&a.id));
        assert!(report.blobs_removed.contains(&only_a));
        assert_eq!(report.blobs_removed.len(), 3); // layer, config, manifest
                                                   // a's top snapshot goes; the base snapshot is shared and stays.
        assert_eq!(report.snapshots_removed, vec![a.chain_ids()[1].clone()]);
        assert!(store.snapshot(&b.chain_ids()[0]).unwrap().is_some());
        assert!(store.snapshot(&b.chain_ids()[1]).unwrap().is_some());
        assert_eq!(
            store.resolve(b.id.hex()).unwrap().manifest_digest,
            b.manifest_digest
        );
        assert!(store.check().unwrap().is_empty());
        // A second run finds nothing.
        assert_eq!(store.gc().unwrap(), GcReport::default());
    }

    #[test]
    fn gc_keeps_untagged_images_and_extra_roots() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        store
            .tag(&Reference::parse("x").unwrap(), &a.manifest_digest)
            .unwrap();
        store.untag(&Reference::parse("x").unwrap()).unwrap();
        let cached = store.put_blob_bytes(b"cache layer", None).unwrap();
        let roots = GcRoots {
            blobs: [cached.clone()].into(),
            ..GcRoots::default()
        };
        let report = store.gc_with_roots(&roots).unwrap();
        assert!(report.blobs_removed.is_empty());
        assert!(store.has_blob(&cached));
        assert!(store.image(&a.manifest_digest).unwrap().is_dangling());
    }

    #[test]
    fn gc_is_busy_while_a_lease_or_reservation_is_held() {
        let (_dir, store) = temp_store();
        let lease = store.lease().unwrap();
        assert!(matches!(store.gc(), Err(StoreError::Busy { .. })));
        drop(lease);
        let res = store.reserve_snapshot().unwrap();
        assert!(matches!(store.gc(), Err(StoreError::Busy { .. })));
        drop(res);
        store.gc().unwrap();
        // Two leases at once are fine (shared).
        let (_l1, _l2) = (store.lease().unwrap(), store.lease().unwrap());
    }

    #[test]
    fn gc_refuses_when_a_manifest_is_unreadable() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        let orphan = store.put_blob_bytes(b"orphan", None).unwrap();
        corrupt(&store.blob_path(&a.manifest_digest), b"{}");
        let err = store.gc().unwrap_err();
        assert!(matches!(err, StoreError::UnsafeToCollect { .. }), "{err:?}");
        // Nothing was deleted.
        assert!(store.has_blob(&orphan));
        assert!(store.has_blob(&Digest::of_bytes(b"a")));
    }

    #[test]
    fn check_reports_missing_corrupt_and_dangling() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"layer a"], "a");
        let b = put_test_image(&store, &[b"layer b"], "b");
        store
            .tag(&Reference::parse("b").unwrap(), &b.manifest_digest)
            .unwrap();
        assert!(store.check().unwrap().is_empty());

        // Corrupt a's layer, delete b's manifest, drop a stray file.
        let layer_a = Digest::of_bytes(b"layer a");
        corrupt(&store.blob_path(&layer_a), b"tampered");
        fs::remove_file(store.blob_path(&b.manifest_digest)).unwrap();
        fs::write(store.blobs_dir().join("not-a-digest"), b"").unwrap();
        let res = store.reserve_snapshot().unwrap();
        let s = res
            .commit(Some(&Digest::of_bytes(b"gone")), &a.diff_ids[0])
            .unwrap();

        let problems = store.check().unwrap();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            problems.contains(&Problem::CorruptBlob {
                digest: layer_a.clone(),
                actual: Digest::of_bytes(b"tampered"),
            }),
            "{text:#?}"
        );
        assert!(
            problems.contains(&Problem::DanglingReference {
                name: Some("docker.io/library/b:latest".to_owned()),
                digest: b.manifest_digest.clone(),
            }),
            "{text:#?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::StrayFile { .. })),
            "{text:#?}"
        );
        assert!(
            problems.iter().any(
                |p| matches!(p, Problem::BrokenSnapshot { chain_id, .. } if *chain_id == s.chain_id)
            ),
            "{text:#?}"
        );
        assert_eq!(problems.len(), 4, "{text:#?}");
    }

    #[test]
    fn check_reports_a_corrupt_index() {
        let (_dir, store) = temp_store();
        fs::write(store.index_path(), b"not json").unwrap();
        let problems = store.check().unwrap();
        assert!(
            matches!(problems.as_slice(), [Problem::InvalidIndex { .. }]),
            "{problems:?}"
        );
        assert!(store.gc().is_err());
    }
}
