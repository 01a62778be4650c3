//! `kiln builder prune` and the build cache's line of `kiln system df`.
//!
//! The build cache is the set of cache records (`<root>/cache/v<N>/<key>.json`) and the
//! layers and snapshots they name, which garbage collection keeps alive. A record is
//! *in use* when its layers are the bottom of some image in the store (a step of a build
//! whose image still exists); the others are *dangling* (steps of builds whose images are
//! gone or were rebuilt), which a plain prune removes, as `docker builder prune` removes
//! dangling cache; `-a` removes every record. Either removes the records of older cache
//! versions, which can never hit.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, SystemTime};

use super::{CacheIndex, CacheRecord};
use crate::common::duration::{parse_duration, DurationError};
use crate::image::Digest;
use crate::store::{GcRoots, Store};

/// One record with what prune and df need to know.
#[derive(Debug, Clone)]
pub struct RecordInfo {
    /// The record.
    pub record: CacheRecord,
    /// When it was written.
    pub written: SystemTime,
    /// Whether an image of the store was built through it.
    pub in_use: bool,
}

/// What `builder prune` removes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneFilter {
    /// `-a`: records in use too.
    pub all: bool,
    /// `--filter until=D`: only records written at least this long ago.
    pub older_than: Option<Duration>,
}

/// A `--filter` of `builder prune` that kiln does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PruneFilterError {
    /// `until=` with a value that is not a Go duration.
    #[error("invalid filter 'until={value}': {source}")]
    Until {
        /// The value given.
        value: String,
        /// Why it is not a duration.
        #[source]
        source: DurationError,
    },
    /// Another filter than `until=`.
    #[error("invalid filter {0:?}: only until=<duration> is supported")]
    Unsupported(String),
}

impl PruneFilter {
    /// Applies one `--filter` of `builder prune`: `until=<Go duration>` (`24h`, `90m`).
    pub fn add(&mut self, filter: &str) -> Result<(), PruneFilterError> {
        match filter.split_once('=') {
            Some(("until", d)) => {
                let nanos = parse_duration(d).map_err(|source| PruneFilterError::Until {
                    value: d.to_string(),
                    source,
                })?;
                self.older_than = Some(Duration::from_nanos(nanos.max(0) as u64));
                Ok(())
            }
            _ => Err(PruneFilterError::Unsupported(filter.to_string())),
        }
    }
}

/// What a prune did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// The keys of the records removed.
    pub removed: Vec<Digest>,
    /// Bytes of layers freed by the garbage collection that followed.
    pub bytes_freed: u64,
}

/// Every record of the store's cache, with its age and whether it is in use.
pub fn records(store: &Store) -> Vec<RecordInfo> {
    records_against(store, &image_layers(store))
}

/// The layers (diff IDs, bottom first) of each image in the store.
fn image_layers(store: &Store) -> Vec<Vec<Digest>> {
    store
        .list_images()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.diff_ids)
        .collect()
}

/// [`records`], with a record in use when its layers are the bottom of one of `images`.
fn records_against(store: &Store, images: &[Vec<Digest>]) -> Vec<RecordInfo> {
    let index = CacheIndex::open(store);
    index
        .records()
        .into_iter()
        .map(|record| {
            let ids: Vec<&Digest> = record.layers.iter().map(|l| &l.diff_id).collect();
            let in_use = images
                .iter()
                .any(|img| img.len() >= ids.len() && img.iter().zip(&ids).all(|(a, b)| a == *b));
            let written = fs::metadata(index.path(&record.key))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            RecordInfo {
                record,
                written,
                in_use,
            }
        })
        .collect()
}

/// Removes the records `filter` selects, then collects the layers and snapshots nothing
/// references any more (`keep`: what containers need besides images and the cache).
pub fn prune(
    store: &Store,
    filter: PruneFilter,
    keep: &GcRoots,
) -> crate::store::Result<PruneReport> {
    let index = CacheIndex::open(store);
    let now = SystemTime::now();
    let mut report = PruneReport::default();
    index.remove_old_versions();
    for info in records(store) {
        if info.in_use && !filter.all {
            continue;
        }
        if let Some(age) = filter.older_than {
            if now.duration_since(info.written).unwrap_or_default() < age {
                continue;
            }
        }
        if index.remove(&info.record.key) {
            report.removed.push(info.record.key);
        }
    }
    let mut roots = index.gc_roots();
    roots.blobs.extend(keep.blobs.iter().cloned());
    roots.snapshots.extend(keep.snapshots.iter().cloned());
    let gc = store.gc_with_roots(&roots)?;
    // Records whose layers an earlier collection removed can never hit again.
    index.remove_stale();
    report.bytes_freed = gc.bytes_freed;
    Ok(report)
}

/// The build cache's line of `system df`: records, records in use, bytes of layers only the
/// cache keeps (not part of any image), and bytes a full prune would free.
pub fn usage(store: &Store) -> (usize, usize, u64) {
    let images = image_layers(store);
    let infos = records_against(store, &images);
    let in_images: BTreeSet<&Digest> = images.iter().flatten().collect();
    let cache_only: BTreeSet<&Digest> = infos
        .iter()
        .flat_map(|i| i.record.layers.iter().map(|l| &l.diff_id))
        .filter(|d| !in_images.contains(d))
        .collect();
    let size = cache_only
        .into_iter()
        .filter_map(|d| store.blob_size(d).ok())
        .sum();
    let in_use = infos.iter().filter(|i| i.in_use).count();
    (infos.len(), in_use, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{LayerRef, CACHE_VERSION};

    fn record(store: &Store, key: &str, layers: &[&Digest]) -> CacheRecord {
        let rec = CacheRecord {
            version: CACHE_VERSION,
            key: Digest::of_bytes(key.as_bytes()),
            layers: layers
                .iter()
                .map(|d| LayerRef {
                    diff_id: (*d).clone(),
                    size: store.blob_size(d).unwrap(),
                })
                .collect(),
            history: Vec::new(),
            inputs: Default::default(),
        };
        CacheIndex::open(store).put(&rec).unwrap();
        rec
    }

    #[test]
    fn prune_removes_dangling_records_then_their_layers() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let a = store.put_blob_bytes(b"layer a", None).unwrap();
        let b = store.put_blob_bytes(b"layer b", None).unwrap();
        let old = record(&store, "old build", &[&a, &b]);
        let kept = record(&store, "kept", &[&a]);
        // No image uses either: both dangling; with an age filter nothing is old enough.
        let r = prune(
            &store,
            PruneFilter {
                all: false,
                older_than: Some(Duration::from_secs(3600)),
            },
            &GcRoots::default(),
        )
        .unwrap();
        assert!(r.removed.is_empty());
        assert_eq!(
            usage(&store),
            (
                2,
                0,
                store.blob_size(&a).unwrap() + store.blob_size(&b).unwrap()
            )
        );
        let r = prune(
            &store,
            PruneFilter::default(),
            &GcRoots {
                blobs: [a.clone()].into(),
                snapshots: Default::default(),
            },
        )
        .unwrap();
        let mut removed = r.removed.clone();
        removed.sort();
        let mut want = vec![old.key.clone(), kept.key.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(store.has_blob(&a), "kept for a container");
        assert!(!store.has_blob(&b));
        assert_eq!(r.bytes_freed, 7);
        assert_eq!(usage(&store), (0, 0, 0));
    }

    #[test]
    fn an_until_filter_that_is_no_duration_keeps_the_duration_error() {
        let mut f = PruneFilter::default();
        f.add("until=90m").unwrap();
        assert_eq!(f.older_than, Some(Duration::from_secs(5400)));
        let err = f.add("until=2d").unwrap_err();
        assert!(matches!(
            &err,
            PruneFilterError::Until { value, source: DurationError::UnknownUnit { unit, .. } }
                if value == "2d" && unit == "d"
        ));
        assert_eq!(
            err.to_string(),
            "invalid filter 'until=2d': time: unknown unit \"d\" in duration \"2d\""
        );
        assert!(std::error::Error::source(&err).is_some());
        assert!(matches!(
            f.add("dangling=true"),
            Err(PruneFilterError::Unsupported(_))
        ));
    }
}
