//! `index.json`: the record of which images the store holds and under which
//! names, read without locks and replaced atomically under the index lock.
//!
//! # Format
//!
//! `index.json` is a plain OCI image index (`schemaVersion` 2, `mediaType`
//! `application/vnd.oci.image.index.v1+json`), written as canonical JSON.
//! Its `manifests` array holds:
//!
//! * **one descriptor per tag**, annotated
//!   `org.opencontainers.image.ref.name` = the full normalised reference:
//!   `docker.io/library/busybox:latest`, `localhost:5000/app:1`, or, for a
//!   name recorded by digest, `docker.io/library/busybox@sha256:…`. An image
//!   with three tags has three descriptors with the same digest.
//! * **one descriptor per untagged image**, without `ref.name` and annotated
//!   [`ANNOTATION_UNTAGGED`] = `"true"`. Every image kiln holds is therefore
//!   reachable from `index.json`, so garbage collection (which keeps exactly
//!   what `index.json` reaches) never loses a dangling image, and the file
//!   stays the single source of truth (no second kiln index to keep in
//!   step). The marker tells kiln's own untagged entries apart from
//!   descriptors other tools wrote without a name, which kiln keeps untouched.
//!
//! Descriptors carry the image's `platform` (from its config), which OCI
//! tools use to pick an image.
//!
//! # Addressing images with OCI tools
//!
//! skopeo (containers/image) and umoci split `oci:<dir>:<ref>` at the
//! **first** `:`, so everything after the layout path is the ref name and
//! must equal the stored annotation exactly:
//!
//! ```text
//! skopeo inspect oci:/var/lib/kiln/oci:docker.io/library/busybox:latest
//! umoci unpack --image /var/lib/kiln/oci:localhost:5000/app:1 bundle
//! ```
//!
//! (the layout path itself must not contain `:`). Both tools only accept
//! names matching the OCI `ref.name` grammar, which is stricter than
//! Docker's: a Docker-valid name whose tag starts with `_`, ends with `.` or
//! `-`, or has two separators in a row (`busybox:_x`, `busybox:a__b`,
//! `busybox:a.-b`, `a---b/c`) is stored and usable by kiln but cannot be
//! named on skopeo's or umoci's command line.

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;

use super::error::{io_err, Result, StoreError};
use super::{fsutil, Store};
use crate::image::config::{self, MEDIA_TYPE_INDEX};
use crate::image::Digest;

/// The OCI annotation holding a tag's full reference.
pub const ANNOTATION_REF_NAME: &str = oci_spec::image::ANNOTATION_REF_NAME;

/// Kiln's marker on the `index.json` entry that keeps an untagged image.
pub const ANNOTATION_UNTAGGED: &str = "dev.kiln.untagged";

/// Largest `index.json` kiln reads (about 200 000 tags).
const MAX_INDEX_SIZE: u64 = 64 << 20;

/// An empty index with its media type set.
pub fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::from(MEDIA_TYPE_INDEX)));
    index
}

/// The `ref.name` annotation of an index entry.
pub fn ref_name(entry: &Descriptor) -> Option<&str> {
    entry
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

/// True for the entries kiln adds to keep an untagged image.
pub fn is_kiln_untagged(entry: &Descriptor) -> bool {
    ref_name(entry).is_none()
        && entry
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_UNTAGGED))
            .is_some_and(|v| v == "true")
}

/// True when `entry` points at `digest`.
pub(crate) fn points_at(entry: &Descriptor, digest: &Digest) -> bool {
    entry.digest().as_ref() == digest.as_str()
}

/// A new entry for the manifest `template` describes: tagged with
/// `ref_name`, or kiln's untagged marker when `None`.
pub(crate) fn entry_for(template: &Descriptor, ref_name: Option<&str>) -> Descriptor {
    let mut entry = Descriptor::new(
        template.media_type().clone(),
        template.size(),
        template.digest().clone(),
    );
    if let Some(p) = template.platform() {
        entry.set_platform(Some(p.clone()));
    }
    let annotations: HashMap<String, String> = match ref_name {
        Some(name) => [(ANNOTATION_REF_NAME.to_owned(), name.to_owned())].into(),
        None => [(ANNOTATION_UNTAGGED.to_owned(), "true".to_owned())].into(),
    };
    entry.set_annotations(Some(annotations));
    entry
}

/// Keeps the image `template` describes reachable: if no entry points at
/// it any more, adds an untagged one. Otherwise, if it has a tag, drops
/// kiln's untagged entries for it (they are redundant).
pub(crate) fn settle(entries: &mut Vec<Descriptor>, template: &Descriptor) {
    let Ok(digest) = Digest::try_from(template.digest()) else {
        return;
    };
    let tagged = entries
        .iter()
        .any(|e| points_at(e, &digest) && ref_name(e).is_some());
    if tagged {
        entries.retain(|e| !(points_at(e, &digest) && is_kiln_untagged(e)));
    } else if !entries.iter().any(|e| points_at(e, &digest))
        && template.media_type().to_string() != MEDIA_TYPE_INDEX
    {
        // An index left without a name is dropped (see `indexes`); an image is kept.
        entries.push(entry_for(template, None));
    }
}

impl Store {
    /// Reads and strictly parses `index.json` (no lock needed: it is only
    /// ever replaced by rename).
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let file = File::open(&path).map_err(io_err("open", &path))?;
        let mut bytes = Vec::new();
        file.take(MAX_INDEX_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        if bytes.len() as u64 > MAX_INDEX_SIZE {
            return Err(StoreError::CorruptMetadata {
                path,
                reason: format!("larger than {MAX_INDEX_SIZE} bytes"),
                source: None,
            });
        }
        config::parse_index(&bytes).map_err(|e| StoreError::CorruptMetadata {
            path,
            reason: e.to_string(),
            source: Some(Box::new(e)),
        })
    }

    /// Replaces `index.json` atomically. Callers hold the index lock.
    pub(crate) fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = config::canonical_json("index", index)?;
        fsutil::write_atomic(&self.tmp_dir(), &self.index_path(), &bytes, 0o644)
    }

    /// Runs `change` on the index entries under the index lock and writes
    /// the result if it changed. The lock makes concurrent updates from
    /// other threads and processes apply one after another.
    pub(crate) fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut entries = index.manifests().clone();
        let out = change(&mut entries)?;
        if entries != *index.manifests() {
            index.set_manifests(entries);
            self.write_index(&index)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::config::MEDIA_TYPE_MANIFEST;
    use crate::store::test_support::temp_store;

    fn manifest_desc(c: char) -> Descriptor {
        let d = Digest::from_sha256_hex(&c.to_string().repeat(64)).unwrap();
        config::descriptor(MEDIA_TYPE_MANIFEST, &d, 100)
    }

    #[test]
    fn settle_adds_and_removes_untagged_entries() {
        let m = manifest_desc('a');
        let mut entries = Vec::new();
        settle(&mut entries, &m);
        assert_eq!(entries.len(), 1);
        assert!(is_kiln_untagged(&entries[0]));
        entries.push(entry_for(&m, Some("docker.io/library/x:1")));
        settle(&mut entries, &m);
        assert_eq!(entries.len(), 1);
        assert_eq!(ref_name(&entries[0]), Some("docker.io/library/x:1"));
        entries.clear();
        settle(&mut entries, &m);
        assert!(is_kiln_untagged(&entries[0]));
    }

    #[test]
    fn settle_keeps_foreign_unnamed_entries() {
        let m = manifest_desc('b');
        let foreign = Descriptor::new(m.media_type().clone(), m.size(), m.digest().clone());
        let mut entries = vec![
            foreign.clone(),
            entry_for(&m, Some("docker.io/library/x:1")),
        ];
        settle(&mut entries, &m);
        assert_eq!(
            entries,
            vec![foreign, entry_for(&m, Some("docker.io/library/x:1"))]
        );
    }

    #[test]
    fn index_round_trips_through_oci_spec() {
        let (_dir, store) = temp_store();
        let m = manifest_desc('c');
        store
            .update_index(|entries| {
                entries.push(entry_for(&m, Some("docker.io/library/x:1")));
                settle(entries, &m);
                Ok(())
            })
            .unwrap();
        let parsed = ImageIndex::from_file(store.index_path()).unwrap();
        assert_eq!(parsed.manifests().len(), 1);
        assert_eq!(
            ref_name(&parsed.manifests()[0]),
            Some("docker.io/library/x:1")
        );
        assert_eq!(store.read_index().unwrap(), parsed);
    }

    #[test]
    fn index_lock_excludes_other_updaters() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let (_dir, store) = temp_store();
        let held = store.lock_index().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (store, done) = (store.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                store
                    .update_index(|entries| {
                        entries.push(entry_for(
                            &manifest_desc('d'),
                            Some("docker.io/library/x:1"),
                        ));
                        Ok(())
                    })
                    .unwrap();
                done.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !done.load(Ordering::SeqCst),
            "update ran while the lock was held"
        );
        drop(held);
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(store.read_index().unwrap().manifests().len(), 1);
    }

    #[test]
    fn corrupt_index_is_reported_not_misread() {
        let (_dir, store) = temp_store();
        std::fs::write(store.index_path(), b"{\"schemaVersion\":2,\"manifests\":[").unwrap();
        let err = store.read_index().unwrap_err();
        assert!(matches!(err, StoreError::CorruptMetadata { .. }), "{err:?}");
        assert!(err.to_string().contains("kiln system check"));
        // The parser's error is kept as the source (it was only a string).
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    }
}
