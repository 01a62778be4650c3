//! The build cache: stable cache keys, and the index from a step's key to its result.
//!
//! Keys are sha256 over an explicit, versioned encoding (never `#[derive(Hash)]`): every
//! field is written as a length-prefixed name and a length-prefixed value, so no two
//! different inputs encode alike. Records live in `<root>/cache/v<N>/<key-hex>.json`
//! ([`CACHE_VERSION`]), each written atomically; a record whose layers are gone from the
//! store is a miss, never an error. [`transfer`] exports records and their layers for
//! another store (`--cache-to`) and imports them (`--cache-from`).
//!
//! A record holds what its step changed, not the image state after it: the layers (the
//! list a hit must find in the store) and the history entries the step added. The config
//! is never stored: a key chains on its parent's key and covers what the step changed in
//! the config, so the config before a hit is the one the record was made on, and the
//! builder's own copy is right. A Dockerfile of n metadata lines thus writes O(n) bytes of
//! cache, not O(n²) (version 1 stored the whole config and history in every record).

pub mod explain;
pub mod prune;
pub mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::image::spec::History;
use crate::image::Digest;
use crate::store::{GcRoots, Store};

/// The version of the key encoding and of the record format; bumping it invalidates the
/// whole cache (records sit in a directory named after it; `builder prune` removes the
/// directories of older versions, whose keys can never match).
///
/// 2: records hold the history entries a step added instead of the whole config; metadata
/// keys cover the step's change instead of the whole config.
pub const CACHE_VERSION: u32 = 2;

/// Builds a cache key from named fields.
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    /// Start a key for one kind of step (`run`, `copy`, `meta`, ...).
    pub fn new(kind: &str) -> KeyBuilder {
        let mut b = KeyBuilder {
            hasher: Sha256::new(),
        };
        b.field("kiln-cache-key", CACHE_VERSION.to_string().as_bytes());
        b.field("kind", kind.as_bytes());
        b
    }

    /// Add a named byte value.
    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut KeyBuilder {
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    /// Add a named string.
    pub fn text(&mut self, name: &str, value: &str) -> &mut KeyBuilder {
        self.field(name, value.as_bytes())
    }

    /// Add a named list of strings (order matters).
    pub fn list<S: AsRef<str>>(&mut self, name: &str, values: &[S]) -> &mut KeyBuilder {
        self.field(name, (values.len() as u64).to_le_bytes().as_slice());
        for (i, v) in values.iter().enumerate() {
            self.field(&format!("{name}[{i}]"), v.as_ref().as_bytes());
        }
        self
    }

    /// Add an optional string; absent and empty encode differently.
    pub fn opt(&mut self, name: &str, value: Option<&str>) -> &mut KeyBuilder {
        match value {
            Some(v) => self.field(&format!("{name}?some"), v.as_bytes()),
            None => self.field(&format!("{name}?none"), b""),
        }
    }

    /// The finished key.
    pub fn finish(self) -> Digest {
        Digest::from_hasher(self.hasher)
    }
}

/// One layer of an image state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Digest of the uncompressed layer tar (also its blob digest in the store).
    pub diff_id: Digest,
    /// Size of the layer blob.
    pub size: u64,
}

/// What a step produced: the layers after it and the history entries it added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Record format version.
    pub version: u32,
    /// The step's key.
    pub key: Digest,
    /// All layers of the image after the step, bottom first.
    pub layers: Vec<LayerRef>,
    /// The history entries the step added (one for a filesystem step, none for the
    /// directory a WORKDIR creates, one per step for a run of metadata steps, which is
    /// recorded once under its last step's key), so a hit keeps the times of the build that
    /// made them and an unchanged rebuild gives the same image ID.
    #[serde(default)]
    pub history: Vec<History>,
    /// The inputs the key was made of, by name, for explaining a later miss.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

/// Errors of the cache index: writing a record failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Creating the record directory failed.
    #[error("build cache {path}: {source}")]
    Io {
        /// The record file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The record cannot be encoded.
    #[error("build cache {path}: {source}")]
    Encode {
        /// The record file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the record into the store failed.
    #[error("build cache {path}: {source}")]
    Store {
        /// The record file.
        path: PathBuf,
        /// The store's error.
        #[source]
        source: crate::store::StoreError,
    },
}

/// The cache index of one store.
#[derive(Debug, Clone)]
pub struct CacheIndex {
    dir: PathBuf,
    store: Store,
}

impl CacheIndex {
    /// The cache index of `store` (`<root>/cache/v<CACHE_VERSION>`).
    pub fn open(store: &Store) -> CacheIndex {
        CacheIndex {
            dir: store.root().join("cache").join(format!("v{CACHE_VERSION}")),
            store: store.clone(),
        }
    }

    pub(crate) fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// Removes the record for `key`; whether there was one.
    pub fn remove(&self, key: &Digest) -> bool {
        fs::remove_file(self.path(key)).is_ok()
    }

    /// Removes the record directories of older cache versions (their keys never match this
    /// kiln's, and their layers are no longer kept alive); how many. A newer version's
    /// directory is left alone for the kiln that wrote it.
    pub fn remove_old_versions(&self) -> usize {
        let Some(parent) = self.dir.parent() else {
            return 0;
        };
        let Ok(rd) = fs::read_dir(parent) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let old = name
                .to_str()
                .and_then(|n| n.strip_prefix('v'))
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|v| v < CACHE_VERSION);
            if old && e.file_type().is_ok_and(|t| t.is_dir()) {
                match fs::remove_dir_all(e.path()) {
                    Ok(()) => n += 1,
                    Err(err) => tracing::warn!(
                        path = %e.path().display(),
                        error = %err,
                        "cannot remove an old cache version"
                    ),
                }
            }
        }
        n
    }

    /// Removes the records that cannot be used any more (a layer left the store, or the
    /// file is unreadable); how many.
    pub fn remove_stale(&self) -> usize {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue; // temporary files of a writer
            };
            let usable = Digest::from_sha256_hex(hex)
                .ok()
                .and_then(|k| self.get(&k))
                .is_some();
            if !usable && fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// The record for `key`, if there is one whose layers are all still in the store.
    pub fn get(&self, key: &Digest) -> Option<CacheRecord> {
        let bytes = fs::read(self.path(key)).ok()?;
        let rec: CacheRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "ignoring an unreadable cache record");
                return None;
            }
        };
        if rec.version != CACHE_VERSION || &rec.key != key {
            return None;
        }
        if !rec.layers.iter().all(|l| self.store.has_blob(&l.diff_id)) {
            return None;
        }
        Some(rec)
    }

    /// Store a record (atomically; an existing record for the key is replaced).
    pub fn put(&self, rec: &CacheRecord) -> Result<(), CacheError> {
        let path = self.path(&rec.key);
        fs::create_dir_all(&self.dir).map_err(|source| CacheError::Io {
            path: path.clone(),
            source,
        })?;
        let bytes = serde_json::to_vec(rec).map_err(|source| CacheError::Encode {
            path: path.clone(),
            source,
        })?;
        crate::store::fsutil::write_atomic(&self.dir, &path, &bytes, 0o600)
            .map_err(|source| CacheError::Store { path, source })
    }

    /// Every record (unreadable ones skipped).
    pub fn records(&self) -> Vec<CacheRecord> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let hex = Path::new(&name).file_stem()?.to_str()?.to_string();
                let key = Digest::from_sha256_hex(&hex).ok()?;
                self.get(&key)
            })
            .collect()
    }

    /// What the cache keeps alive in the store: every layer blob and snapshot it refers to.
    pub fn gc_roots(&self) -> GcRoots {
        let mut blobs = BTreeSet::new();
        let mut snapshots = BTreeSet::new();
        for rec in self.records() {
            let ids: Vec<Digest> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
            snapshots.extend(crate::image::config::chain_ids(&ids));
            blobs.extend(ids);
        }
        GcRoots { blobs, snapshots }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_fields_are_unambiguous() {
        let k = |parts: &[(&str, &str)]| {
            let mut b = KeyBuilder::new("run");
            for (n, v) in parts {
                b.text(n, v);
            }
            b.finish()
        };
        assert_eq!(k(&[("a", "bc")]), k(&[("a", "bc")]));
        assert_ne!(k(&[("a", "bc")]), k(&[("ab", "c")]));
        assert_ne!(k(&[("a", "b"), ("c", "")]), k(&[("a", "bc")]));
        let mut a = KeyBuilder::new("run");
        a.opt("x", None);
        let mut b = KeyBuilder::new("run");
        b.opt("x", Some(""));
        assert_ne!(a.finish(), b.finish());
        let mut a = KeyBuilder::new("run");
        a.list("l", &["a b"]);
        let mut b = KeyBuilder::new("run");
        b.list("l", &["a", "b"]);
        assert_ne!(a.finish(), b.finish());
        assert_ne!(
            KeyBuilder::new("run").finish(),
            KeyBuilder::new("copy").finish()
        );
    }

    // Version 1 records held whole configs (gigabytes for a long Dockerfile) and can never
    // hit again: prune removes their directory, and leaves a newer kiln's alone.
    #[test]
    fn old_version_directories_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let cache = d.path().join("cache");
        for dir in ["v1/builds", "v2", "v99", "mounts-v1", "vx"] {
            std::fs::create_dir_all(cache.join(dir)).unwrap();
        }
        std::fs::write(cache.join("v1/abc.json"), b"{}").unwrap();
        let idx = CacheIndex::open(&store);
        assert_eq!(idx.remove_old_versions(), 1);
        let mut left: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["mounts-v1", "v2", "v99", "vx"]);
    }

    #[test]
    fn records_round_trip_and_missing_layers_miss() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let idx = CacheIndex::open(&store);
        let layer = store.put_blob_bytes(b"layer bytes", None).unwrap();
        let key = KeyBuilder::new("run").finish();
        let rec = CacheRecord {
            version: CACHE_VERSION,
            key: key.clone(),
            layers: vec![LayerRef {
                diff_id: layer.clone(),
                size: 11,
            }],
            history: vec![History {
                created_by: Some("RUN true".into()),
                ..Default::default()
            }],
            inputs: BTreeMap::new(),
        };
        assert!(idx.get(&key).is_none());
        idx.put(&rec).unwrap();
        assert_eq!(idx.get(&key), Some(rec.clone()));
        assert!(idx.gc_roots().blobs.contains(&layer));

        let mut gone = rec.clone();
        gone.key = KeyBuilder::new("copy").finish();
        gone.layers[0].diff_id = Digest::of_bytes(b"not stored");
        idx.put(&gone).unwrap();
        assert!(idx.get(&gone.key).is_none());

        std::fs::write(idx.path(&key), b"{garbage").unwrap();
        assert!(idx.get(&key).is_none());
    }
}
