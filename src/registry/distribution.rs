//! What kiln remembers about the compressed form of its layers, under
//! `<root>/distribution/v1/`: for each diffID (an uncompressed layer in the
//! store), the compressed blobs known to hold it — digest, size, media type
//! and the `registry/repository`s they were seen in. Pull records what it
//! fetched; push records what it compressed and uploaded, so a re-push
//! asks the registry about the known digest (or mounts it from another
//! repository) instead of compressing again.
//!
//! ```text
//! <root>/distribution/v1/diffid/<diffid-hex>.json   {"version":1,"blobs":[{digest,size,mediaType,sources}]}
//! ```
//!
//! These are hints, never trusted for content: a blob is always verified
//! against its digest when it is fetched, and a registry is asked before a
//! known blob is skipped. A lost update (two processes recording one layer
//! at once) only costs a recompression later.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Compression;
use crate::image::Digest;
use crate::store::{fsutil, Store};

/// Format version of the records (in the directory name and each file).
const VERSION: u32 = 1;

/// Most sources remembered per blob.
const MAX_SOURCES: usize = 16;

/// One compressed blob known to hold a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownBlob {
    /// Digest of the compressed bytes.
    pub digest: Digest,
    /// Size of the compressed bytes.
    pub size: u64,
    /// Its layer media type.
    pub media_type: String,
    /// `registry/repository` names it was pulled from or pushed to.
    #[serde(default)]
    pub sources: Vec<String>,
}

impl KnownBlob {
    /// How it is compressed.
    pub fn compression(&self) -> Option<Compression> {
        Compression::of_layer_type(&self.media_type)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    version: u32,
    blobs: Vec<KnownBlob>,
}

fn record_path(store: &Store, diff_id: &Digest) -> PathBuf {
    store
        .root()
        .join("distribution")
        .join(format!("v{VERSION}"))
        .join("diffid")
        .join(format!("{}.json", diff_id.hex()))
}

fn read(store: &Store, diff_id: &Digest) -> Record {
    let path = record_path(store, diff_id);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.version == VERSION => r,
            _ => {
                tracing::debug!(path = %path.display(), "ignoring an unreadable distribution record");
                Record::default()
            }
        },
        Err(_) => Record::default(),
    }
}

/// The compressed blobs known to hold layer `diff_id`.
pub fn known(store: &Store, diff_id: &Digest) -> Vec<KnownBlob> {
    read(store, diff_id).blobs
}

/// Remembers that `blob` holds layer `diff_id`, and (when given) that it
/// is in `source` (`registry/repository`). Failures are logged, not
/// returned: the record is a hint.
pub fn remember(store: &Store, diff_id: &Digest, blob: &KnownBlob, source: Option<&str>) {
    let mut rec = read(store, diff_id);
    rec.version = VERSION;
    let entry = match rec.blobs.iter_mut().find(|b| b.digest == blob.digest) {
        Some(e) => e,
        None => {
            rec.blobs.push(KnownBlob {
                sources: Vec::new(),
                ..blob.clone()
            });
            let last = rec.blobs.len() - 1;
            &mut rec.blobs[last]
        }
    };
    for s in blob.sources.iter().map(String::as_str).chain(source) {
        if !entry.sources.iter().any(|x| x == s) {
            entry.sources.insert(0, s.to_string());
            entry.sources.truncate(MAX_SOURCES);
        }
    }
    let path = record_path(store, diff_id);
    let write = || -> crate::store::Result<()> {
        if let Some(dir) = path.parent() {
            fsutil::create_dir_all(dir, 0o755)?;
        }
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        fsutil::write_atomic(&store.tmp_dir(), &path, &bytes, 0o644)
    };
    if let Err(e) = write() {
        tracing::warn!(error = %e, "cannot record where a layer's compressed blob is");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_blobs_and_sources() {
        let (_dir, store) = crate::store::test_support::temp_store();
        let diff = Digest::of_bytes(b"layer");
        let blob = KnownBlob {
            digest: Digest::of_bytes(b"gz"),
            size: 2,
            media_type: super::super::media::OCI_LAYER_GZIP.into(),
            sources: Vec::new(),
        };
        assert!(known(&store, &diff).is_empty());
        remember(&store, &diff, &blob, Some("r/a"));
        remember(&store, &diff, &blob, Some("r/b"));
        remember(&store, &diff, &blob, Some("r/a"));
        let k = known(&store, &diff);
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].sources, vec!["r/b".to_string(), "r/a".to_string()]);
        assert_eq!(k[0].compression(), Some(Compression::Gzip));
    }
}
