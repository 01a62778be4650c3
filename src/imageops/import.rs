//! `kiln image import`: a rootfs tarball becomes a one-layer image, with its
//! layer unpacked as a snapshot that later steps stack as an overlay lower dir.
//!
//! The tarball (plain, gzip or zstd) goes through the hardened extractor into
//! a snapshot reservation; whiteouts are refused, since a rootfs has no layer
//! below it for them to delete from. The layer blob is then written from the
//! extracted tree with the deterministic layer writer, streamed straight into
//! the store, rather than kept as the bytes that came in:
//!
//! * the layer is exactly what the snapshot holds, so an image built on top
//!   and then exported agrees with what ran: entries the extractor refuses or
//!   normalises (absolute names, device nodes, duplicates) cannot linger in
//!   the blob for another tool to unpack differently;
//! * it is canonical: the same tree gives the same diffID whatever tool made
//!   the tarball, its entry order or its compression, and `SOURCE_DATE_EPOCH`
//!   makes it reproducible;
//! * the cost is a second read of the tree, and ownership that needs root to
//!   keep: without root the extractor cannot chown, and the layer records the
//!   importing user as owner (as a rootless import does elsewhere).
//!
//! The config follows `docker import`: the host's (or `--platform`'s) os and
//! architecture, one diffID, a history entry and a top-level `comment` of
//! `Imported from -` (or `--message`), and `--change` edits.
//!
//! A tag that already holds an image of another platform, or an index, keeps it: the
//! imported image joins it in an index, replacing the entry of its own platform
//! (`Store::put_image_in_tag`).

use std::io::Read;

use serde_json::{json, Map, Value};

use super::change::Changes;
use super::error::{ImageOpsError, Result};
use super::pipe::produce_consume;
use crate::archive::{self, ExtractOptions, ExtractStats, Limits, WriterOptions};
use crate::common::platform::Platform;
use crate::common::time::Timestamp;
use crate::image::config::{self, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER};
use crate::image::{Digest, Reference};
use crate::store::{ImageRecord, Snapshot, Store, Stored};

/// The history comment `docker import` writes when no message is given.
/// Docker names the source `-` because its CLI always streams the file.
pub const DEFAULT_MESSAGE: &str = "Imported from -";

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// `--change` instructions applied to the config.
    pub changes: Changes,
    /// `--message`: history and config comment; [`DEFAULT_MESSAGE`] if `None`.
    pub message: Option<String>,
    /// The image's creation time (now, or `SOURCE_DATE_EPOCH`).
    pub created: Timestamp,
    /// Clamp file mtimes in the layer to this (`SOURCE_DATE_EPOCH`).
    pub clamp_mtime: Option<i64>,
    /// The platform recorded in the config.
    pub platform: Platform,
    /// The name to give the image (`REPOSITORY[:TAG]`), if any.
    pub tag: Option<Reference>,
    /// Limits on the tarball.
    pub limits: Limits,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            changes: Changes::default(),
            message: None,
            created: Timestamp::now(),
            clamp_mtime: None,
            platform: Platform::host(),
            tag: None,
            limits: Limits::default(),
        }
    }
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The new image.
    pub image: ImageRecord,
    /// Its only layer, unpacked.
    pub snapshot: Snapshot,
    /// What extraction read.
    pub stats: ExtractStats,
}

/// The config of an imported image.
fn import_config(opts: &ImportOptions, diff_id: &Digest) -> Result<Vec<u8>> {
    let mut inner = Map::new();
    opts.changes.apply(&mut inner)?;
    let created = opts.created.to_rfc3339();
    let message = opts.message.as_deref().unwrap_or(DEFAULT_MESSAGE);
    let mut doc = json!({
        "architecture": opts.platform.architecture,
        "os": opts.platform.os,
        "created": created,
        "comment": message,
        "history": [{"created": created, "comment": message}],
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
    });
    if let Some(obj) = doc.as_object_mut() {
        if let Some(v) = &opts.platform.variant {
            obj.insert("variant".into(), Value::String(v.clone()));
        }
        if !inner.is_empty() {
            obj.insert("config".into(), Value::Object(inner));
        }
    }
    Ok(config::canonical_json("config", &doc)?)
}

/// Imports the rootfs tarball `reader` as a new one-layer image.
pub fn import_rootfs<R: Read>(store: &Store, reader: R, opts: &ImportOptions) -> Result<Imported> {
    if let Some(t) = &opts.tag {
        if t.digest().is_some() {
            return Err(ImageOpsError::DigestAsTag {
                reference: t.familiar_string(),
            });
        }
    }
    // Fail on bad --change before reading anything.
    let probe = Digest::of_bytes(b"");
    import_config(opts, &probe)?;

    // Nothing written below is referenced until put_image: keep GC away.
    let _lease = store.lease()?;
    let reservation = store.reserve_snapshot()?;
    let fs = reservation.path();
    let extract_opts = ExtractOptions {
        limits: opts.limits,
        whiteouts: crate::archive::WhiteoutMode::Refuse,
        ..ExtractOptions::default()
    };
    let stats = archive::extract(reader, &fs, &extract_opts)?;
    let writer_opts = WriterOptions {
        clamp_mtime: opts.clamp_mtime,
    };
    let (written, stored) = produce_consume(
        |w| Ok(archive::write_tree(&fs, w, writer_opts)?.1),
        |r| Ok(store.put_blob(r, None)?),
    )?;
    let diff_id = Digest::parse(&written.diff_id())?;
    if diff_id != stored {
        return Err(crate::store::StoreError::DigestMismatch {
            expected: diff_id,
            actual: stored,
        }
        .into());
    }
    let snapshot = reservation.commit(None, &diff_id)?;

    let config_bytes = import_config(opts, &diff_id)?;
    let manifest = config::new_manifest(
        config::descriptor(
            MEDIA_TYPE_CONFIG,
            &config::image_id(&config_bytes),
            config_bytes.len() as u64,
        ),
        vec![config::descriptor(MEDIA_TYPE_LAYER, &diff_id, written.size)],
    );
    let manifest_bytes = config::canonical_json("manifest", &manifest)?;
    // A tag keeps its other platforms: the image joins them in an index.
    let image = match &opts.tag {
        None => store.put_image(&config_bytes, &manifest_bytes)?,
        Some(t) => {
            let references = match store.put_image_in_tag(&config_bytes, &manifest_bytes, t)? {
                Stored::Image(i) => i.references,
                Stored::Index(ix) => ix.references,
            };
            let mut image = store.image_blobs(&Digest::of_bytes(&manifest_bytes))?;
            image.references = references;
            image
        }
    };
    tracing::info!(id = %image.id, layer = %diff_id, "imported rootfs");
    Ok(Imported {
        image,
        snapshot,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{layer_tar, temp_store};

    #[test]
    fn import_makes_an_image_and_its_snapshot() {
        let (_dir, store) = temp_store();
        let tar = layer_tar(&[("etc/hostname", b"kiln\n"), ("bin/tool", b"#!/bin/sh\n")]);
        let opts = ImportOptions {
            changes: Changes::parse(&["CMD [\"/bin/tool\"]".to_owned()]).unwrap(),
            created: Timestamp::from_secs(1_700_000_000),
            clamp_mtime: Some(1_700_000_000),
            tag: Some(Reference::parse("it/x:1").unwrap()),
            ..ImportOptions::default()
        };
        let a = import_rootfs(&store, &tar[..], &opts).unwrap();
        assert_eq!(a.image.diff_ids.len(), 1);
        assert_eq!(a.snapshot.chain_id, a.image.diff_ids[0]);
        assert_eq!(
            std::fs::read(a.snapshot.path.join("etc/hostname")).unwrap(),
            b"kiln\n"
        );
        let raw: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&a.image.id, "config", 1 << 20).unwrap())
                .unwrap();
        assert_eq!(raw["comment"], DEFAULT_MESSAGE);
        assert_eq!(raw["history"][0]["comment"], DEFAULT_MESSAGE);
        assert_eq!(raw["created"], "2023-11-14T22:13:20Z");
        assert_eq!(raw["config"]["Cmd"], serde_json::json!(["/bin/tool"]));
        assert_eq!(a.image.tags().count(), 1);
        // The same tree, imported again, is the same image.
        let b = import_rootfs(&store, &tar[..], &opts).unwrap();
        assert_eq!(a.image.id, b.image.id);
        assert!(store.check().unwrap().is_empty());
    }

    #[test]
    fn bad_changes_fail_before_reading() {
        let (_dir, store) = temp_store();
        let opts = ImportOptions {
            changes: Changes::parse(&["EXPOSE 99999".to_owned()]).unwrap(),
            ..ImportOptions::default()
        };
        // The reader would fail if read.
        struct Unreadable;
        impl Read for Unreadable {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                panic!("read before the changes were checked")
            }
        }
        let err = import_rootfs(&store, Unreadable, &opts).unwrap_err();
        assert!(err.to_string().contains("invalid port"), "{err}");
    }
}
