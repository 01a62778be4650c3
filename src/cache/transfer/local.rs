//! `type=local`: a cache in an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), the manifest tagged in `index.json` with
//! `org.opencontainers.image.ref.name`.
//!
//! Every file is written to a temp name in its final directory, fsynced and renamed;
//! `index.json` is replaced last (under a `flock` of the directory, so concurrent exports
//! do not lose each other's tags), so a reader sees the previous export or the new one,
//! never a manifest whose blobs are missing. Blobs already present (right name and size)
//! are not rewritten.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use super::{BlobDesc, CacheSink, CacheSource, OpenBlob, TransferError, MAX_MANIFEST_SIZE};
use crate::image::config::{self, MEDIA_TYPE_MANIFEST};
use crate::image::{Digest, Sha256Writer};
use crate::store::fsutil;
use crate::store::index::{empty_index, ref_name, ANNOTATION_REF_NAME};

/// Largest `index.json` read from a cache directory.
const MAX_INDEX_SIZE: u64 = 4 << 20;

/// A cache in an OCI image layout directory.
#[derive(Debug, Clone)]
pub struct LocalLayout {
    dir: PathBuf,
    tag: String,
}

impl LocalLayout {
    /// The layout at `dir`, the cache tagged `tag` in it.
    pub fn new(dir: &Path, tag: &str) -> LocalLayout {
        LocalLayout {
            dir: dir.to_path_buf(),
            tag: tag.to_string(),
        }
    }

    /// `cache DIR`, for messages.
    fn name(&self) -> String {
        format!("cache {}", self.dir.display())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    fn err(&self, what: String) -> TransferError {
        TransferError::Invalid(format!("{}: {what}", self.name()))
    }

    fn io_err(&self, what: &str, path: &Path) -> impl FnOnce(io::Error) -> TransferError {
        TransferError::io(format!("{}: {what} {}", self.name(), path.display()))
    }

    fn store_err(&self) -> impl FnOnce(crate::store::StoreError) -> TransferError {
        TransferError::store(self.name())
    }

    fn doc_err(&self, what: &str) -> impl FnOnce(config::ConfigError) -> TransferError {
        TransferError::document(format!("{}{what}", self.name()))
    }

    /// An exclusive `flock` on the directory itself (no lock file in the layout).
    fn lock_dir(&self) -> Result<nix::fcntl::Flock<File>, TransferError> {
        let mut dir = File::open(&self.dir).map_err(self.io_err("open", &self.dir))?;
        loop {
            match nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                Err((d, nix::errno::Errno::EINTR)) => dir = d,
                Err((_, e)) => return Err(self.io_err("lock", &self.dir)(e.into())),
            }
        }
    }

    /// Writes `bytes` to `dest` atomically (temp file next to it, fsync, rename).
    fn write_small(&self, dest: &Path, bytes: &[u8]) -> Result<(), TransferError> {
        let dir = dest.parent().unwrap_or(&self.dir);
        fsutil::write_atomic(dir, dest, bytes, 0o644).map_err(self.store_err())
    }

    fn read_index(&self) -> Result<Option<oci_spec::image::ImageIndex>, TransferError> {
        let path = self.dir.join("index.json");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err("open", &path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_INDEX_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(self.io_err("read", &path))?;
        if bytes.len() as u64 > MAX_INDEX_SIZE {
            return Err(self.err(format!("index.json is larger than {MAX_INDEX_SIZE} bytes")));
        }
        config::parse_index(&bytes)
            .map(Some)
            .map_err(self.doc_err(": index.json is not an OCI image index"))
    }
}

impl CacheSink for LocalLayout {
    fn describe(&self) -> String {
        self.name()
    }

    fn has_blob(&self, blob: &BlobDesc) -> Result<bool, TransferError> {
        Ok(fs::metadata(self.blob_path(&blob.digest))
            .is_ok_and(|m| m.is_file() && m.len() == blob.size))
    }

    fn put_blob(&self, blob: &BlobDesc, open: &OpenBlob<'_>) -> Result<(), TransferError> {
        let dest = self.blob_path(&blob.digest);
        let dir = dest.parent().unwrap_or(&self.dir).to_path_buf();
        fsutil::create_dir_all(&dir, 0o755).map_err(self.store_err())?;
        let (tmp, file) = fsutil::create_temp_file(&dir, ".kiln-tmp").map_err(self.store_err())?;
        let guard = fsutil::TempPath::new(tmp.clone());
        let mut w = Sha256Writer::new(BufWriter::new(file));
        let data = open().map_err(TransferError::io(format!(
            "{}: reading blob {}",
            self.name(),
            blob.digest
        )))?;
        io::copy(&mut data.take(blob.size + 1), &mut w).map_err(self.io_err("write", &tmp))?;
        let (buffered, digest, written) = w.finish();
        if digest != blob.digest || written != blob.size {
            return Err(self.err(format!(
                "blob {} changed while it was exported (got {digest} of {written} bytes)",
                blob.digest
            )));
        }
        let file = buffered
            .into_inner()
            .map_err(|e| self.io_err("write", &tmp)(e.into_error()))?;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(self.io_err("chmod", &tmp))?;
        file.sync_all().map_err(self.io_err("fsync", &tmp))?;
        drop(file);
        fsutil::rename_durable(&tmp, &dest).map_err(self.store_err())?;
        guard.disarm();
        Ok(())
    }

    fn put_manifest(&self, manifest: &[u8], desc: &BlobDesc) -> Result<(), TransferError> {
        if !self.has_blob(desc)? {
            self.put_blob(desc, &|| Ok(Box::new(manifest)))?;
        }
        let layout = self.dir.join("oci-layout");
        if !layout.is_file() {
            let body = format!(
                r#"{{"imageLayoutVersion":"{}"}}"#,
                crate::store::OCI_LAYOUT_VERSION
            );
            self.write_small(&layout, body.as_bytes())?;
        }
        // Two exports to one directory update index.json one after the other.
        let _lock = self.lock_dir()?;
        let mut index = self.read_index()?.unwrap_or_else(empty_index);
        let mut entries: Vec<_> = index
            .manifests()
            .iter()
            .filter(|e| ref_name(e) != Some(self.tag.as_str()))
            .cloned()
            .collect();
        let mut entry = config::descriptor(MEDIA_TYPE_MANIFEST, &desc.digest, desc.size);
        entry.set_artifact_type(Some(super::ARTIFACT_TYPE.into()));
        entry.set_annotations(Some(
            [(ANNOTATION_REF_NAME.to_string(), self.tag.clone())].into(),
        ));
        entries.push(entry);
        index.set_manifests(entries);
        let bytes = config::canonical_json("index", &index).map_err(self.doc_err(""))?;
        self.write_small(&self.dir.join("index.json"), &bytes)
    }
}

impl CacheSource for LocalLayout {
    fn describe(&self) -> String {
        self.name()
    }

    fn manifest(&self) -> Result<(Vec<u8>, Option<BlobDesc>), TransferError> {
        if !self.dir.is_dir() {
            return Err(self.err("no such directory".to_string()));
        }
        let index = self
            .read_index()?
            .ok_or_else(|| self.err("no index.json: not an OCI image layout".to_string()))?;
        let entry = index
            .manifests()
            .iter()
            .find(|e| ref_name(e) == Some(self.tag.as_str()))
            .ok_or_else(|| self.err(format!("no cache tagged {:?} in index.json", self.tag)))?;
        let desc = BlobDesc {
            digest: config::descriptor_digest("index", "manifests", entry)
                .map_err(self.doc_err(""))?,
            size: entry.size(),
            media_type: entry.media_type().to_string(),
        };
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(self.err(format!(
                "the cache manifest is larger than {MAX_MANIFEST_SIZE} bytes"
            )));
        }
        let mut bytes = Vec::new();
        self.open_blob(&desc)?
            .take(MAX_MANIFEST_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(TransferError::io(format!(
                "{}: reading the cache manifest",
                self.name()
            )))?;
        Ok((bytes, Some(desc)))
    }

    fn open_blob(&self, blob: &BlobDesc) -> Result<Box<dyn Read + Send>, TransferError> {
        let path = self.blob_path(&blob.digest);
        let f = File::open(&path).map_err(self.io_err("open blob", &path))?;
        Ok(Box::new(io::BufReader::new(f)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::cache::{CacheRecord, LayerRef};
    use crate::store::test_support::{layer_tar, temp_store};

    #[test]
    fn export_then_import_round_trips_and_refuses_tampering() {
        let (dir, store) = temp_store();
        let layer = layer_tar(&[("a.txt", b"A")]);
        let diff_id = store.put_blob_bytes(&layer, None).unwrap();
        let key = crate::cache::KeyBuilder::new("run").finish();
        let rec = CacheRecord {
            version: CACHE_VERSION,
            key: key.clone(),
            layers: vec![LayerRef {
                diff_id: diff_id.clone(),
                size: layer.len() as u64,
            }],
            history: vec![crate::image::spec::History {
                created_by: Some("RUN x".into()),
                ..Default::default()
            }],
            inputs: [("instruction".to_string(), "RUN x".to_string())].into(),
        };
        let out = dir.path().join("cache");
        let sink = LocalLayout::new(&out, DEFAULT_TAG);
        let art =
            CacheArtifact::new(&store, std::slice::from_ref(&rec), CacheMode::Max, &sink).unwrap();
        assert_eq!(art.layers[0].media_type, MEDIA_TYPE_LAYER_GZIP);
        let r = export(&store, &art, &sink).unwrap();
        assert_eq!((r.records, r.written, r.skipped), (1, 3, 0));
        drop(art);
        // Again: nothing compressed or rewritten.
        let art =
            CacheArtifact::new(&store, std::slice::from_ref(&rec), CacheMode::Max, &sink).unwrap();
        assert!(art.staged.is_empty());
        let r = export(&store, &art, &sink).unwrap();
        assert_eq!((r.written, r.skipped), (0, 3));
        let m = oci_spec::image::ImageIndex::from_file(out.join("index.json")).unwrap();
        assert_eq!(m.manifests().len(), 1);

        // A fresh store imports the record and its layer.
        let (_d2, other) = temp_store();
        let local = crate::cache::CacheIndex::open(&other);
        let src: std::sync::Arc<dyn CacheSource> =
            std::sync::Arc::new(LocalLayout::new(&out, DEFAULT_TAG));
        let imported = ImportedCache {
            sources: vec![ImportedSource::load(src.clone()).unwrap()],
        };
        let mut warnings = Vec::new();
        let hit = imported
            .fetch(&other, &local, &key, &mut |w| warnings.push(w))
            .unwrap();
        assert_eq!(hit.record, rec);
        assert!(other.has_blob(&diff_id) && warnings.is_empty());
        assert_eq!(local.get(&key), Some(rec.clone()));

        // A tampered layer is refused and nothing of it is stored.
        let (_d3, third) = temp_store();
        let gz = &art.layers[0].digest;
        let path = out.join("blobs/sha256").join(gz.hex());
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let local3 = crate::cache::CacheIndex::open(&third);
        assert!(imported
            .fetch(&third, &local3, &key, &mut |w| warnings.push(w))
            .is_none());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains(&out.display().to_string()),
            "{warnings:?}"
        );
        assert!(!third.has_blob(&diff_id) && local3.get(&key).is_none());

        // A tampered records blob is refused at load.
        let rpath = out.join("blobs/sha256").join(art.records.1.digest.hex());
        fs::write(&rpath, b"{\"version\":1}").unwrap();
        let e = ImportedSource::load(src).unwrap_err().to_string();
        assert!(e.contains("does not match its digest"), "{e}");
    }

    /// A record of `key` whose image is `layers` (with their sizes as stored).
    fn record(key: &str, layers: &[(&Digest, u64)]) -> CacheRecord {
        CacheRecord {
            version: CACHE_VERSION,
            key: crate::cache::KeyBuilder::new(key).finish(),
            layers: layers
                .iter()
                .map(|(d, size)| LayerRef {
                    diff_id: (*d).clone(),
                    size: *size,
                })
                .collect(),
            history: Vec::new(),
            inputs: [("platform".to_string(), key.to_string())].into(),
        }
    }

    #[test]
    fn one_export_is_the_same_whichever_step_finished_first() {
        let (dir, store) = temp_store();
        let put = |name: &str| {
            let tar = layer_tar(&[(name, name.as_bytes())]);
            (store.put_blob_bytes(&tar, None).unwrap(), tar.len() as u64)
        };
        let (a, b) = (put("stage-a"), put("stage-b"));
        // Two parallel stages' steps, each with a layer of its own, in both finishing orders.
        let first = record("a", &[(&a.0, a.1)]);
        let second = record("b", &[(&b.0, b.1)]);
        let sink = LocalLayout::new(&dir.path().join("cache"), DEFAULT_TAG);
        let one = [first.clone(), second.clone()];
        let other = [second, first];
        let art = CacheArtifact::new(&store, &one, CacheMode::Max, &sink).unwrap();
        let again = CacheArtifact::new(&store, &other, CacheMode::Max, &sink).unwrap();
        assert_eq!(again.layers, art.layers);
        assert_eq!(again.records.0, art.records.0);
        assert_eq!(again.manifest, art.manifest);
    }

    #[test]
    fn several_platforms_merge_into_one_export_every_step_once() {
        let (dir, store) = temp_store();
        let put = |name: &str| {
            let tar = layer_tar(&[(name, name.as_bytes())]);
            (store.put_blob_bytes(&tar, None).unwrap(), tar.len() as u64)
        };
        let (tools, amd, arm) = (put("tools"), put("amd64"), put("arm64"));
        // The $BUILDPLATFORM step both platforms used, then each platform's own step on it.
        let shared = record("tools", &[(&tools.0, tools.1)]);
        let amd64 = vec![
            shared.clone(),
            record("amd64", &[(&tools.0, tools.1), (&amd.0, amd.1)]),
        ];
        let arm64 = vec![
            record("arm64", &[(&tools.0, tools.1), (&arm.0, arm.1)]),
            shared.clone(),
        ];
        let merged = merge_records([amd64.clone(), arm64.clone()]);
        assert_eq!(merged.len(), 3, "the shared step is one record");
        // Whichever platform finished first, the same records in the same order.
        assert_eq!(merge_records([arm64.clone(), amd64.clone()]), merged);
        let out = dir.path().join("cache");
        let sink = LocalLayout::new(&out, DEFAULT_TAG);
        let art = CacheArtifact::new(&store, &merged, CacheMode::Max, &sink).unwrap();
        assert_eq!(art.layers.len(), 3, "each layer once");
        let r = export(&store, &art, &sink).unwrap();
        assert_eq!((r.records, r.written), (3, 5));
        let again = CacheArtifact::new(&store, &merged, CacheMode::Max, &sink).unwrap();
        assert_eq!(again.manifest, art.manifest);

        // A fresh store finds every platform's steps in the one export.
        let (_d2, other) = temp_store();
        let local = crate::cache::CacheIndex::open(&other);
        let src: std::sync::Arc<dyn CacheSource> =
            std::sync::Arc::new(LocalLayout::new(&out, DEFAULT_TAG));
        let imported = ImportedCache {
            sources: vec![ImportedSource::load(src).unwrap()],
        };
        assert_eq!(imported.sources[0].len(), 3);
        for rec in amd64.iter().chain(&arm64) {
            let hit = imported
                .fetch(&other, &local, &rec.key, &mut |w| panic!("{w}"))
                .unwrap();
            assert_eq!(&hit.record, rec);
        }
        for (d, _) in [&tools, &amd, &arm] {
            assert!(other.has_blob(d));
        }
    }

    /// Writes a hand-made cache (config and records documents as given) to `dir`.
    fn craft(dir: &Path, config_json: &str, records_json: &str, artifact_type: Option<&str>) {
        let sink = LocalLayout::new(dir, DEFAULT_TAG);
        let config_desc = desc_of(config_json.as_bytes(), MEDIA_TYPE_CACHE_CONFIG);
        let records_desc = desc_of(records_json.as_bytes(), MEDIA_TYPE_RECORDS);
        for (bytes, d) in [(config_json, &config_desc), (records_json, &records_desc)] {
            sink.put_blob(d, &|| Ok(Box::new(bytes.as_bytes())))
                .unwrap();
        }
        let oci = |d: &BlobDesc| config::descriptor(&d.media_type, &d.digest, d.size);
        let mut m = config::new_manifest(oci(&config_desc), vec![oci(&records_desc)]);
        m.set_artifact_type(artifact_type.map(Into::into));
        let bytes = config::canonical_json("manifest", &m).unwrap();
        sink.put_manifest(&bytes, &desc_of(&bytes, MEDIA_TYPE_MANIFEST))
            .unwrap();
    }

    #[test]
    fn other_versions_and_foreign_artifacts_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let load = |dir: &Path| {
            ImportedSource::load(std::sync::Arc::new(LocalLayout::new(dir, DEFAULT_TAG)))
        };
        let (cv, rv) = (CACHE_VERSION, RECORDS_VERSION);
        let cases = [
            ("old", 999, rv, Some("cache key version 999")),
            // Version 1 stored whole configs in its records; its keys never match.
            ("v1", 1, 1, Some("cache key version 1 (this kiln's is 2)")),
            ("newer", cv, rv + 1, Some("records version 3")),
            ("ok", cv, rv, None),
        ];
        for (name, key_version, records_version, refused) in cases {
            let dir = d.path().join(name);
            craft(
                &dir,
                &format!(r#"{{"cacheVersion":{key_version},"mode":"max"}}"#),
                &format!(
                    r#"{{"version":{records_version},"cacheVersion":{key_version},"records":[]}}"#
                ),
                Some(ARTIFACT_TYPE),
            );
            match refused {
                Some(why) => {
                    let e = load(&dir).unwrap_err().to_string();
                    assert!(e.contains(why), "{name}: {e}");
                }
                None => assert!(load(&dir).unwrap().is_empty()),
            }
        }
        // An ordinary image (no kiln artifactType, an OCI config) is not a cache.
        let image = d.path().join("image");
        let sink = LocalLayout::new(&image, DEFAULT_TAG);
        let cfg =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cd = desc_of(cfg, config::MEDIA_TYPE_CONFIG);
        sink.put_blob(&cd, &|| Ok(Box::new(&cfg[..]))).unwrap();
        let m = config::new_manifest(
            config::descriptor(&cd.media_type, &cd.digest, cd.size),
            vec![],
        );
        let bytes = config::canonical_json("manifest", &m).unwrap();
        sink.put_manifest(&bytes, &desc_of(&bytes, MEDIA_TYPE_MANIFEST))
            .unwrap();
        let e = load(&image).unwrap_err().to_string();
        assert!(e.contains("not a kiln cache"), "{e}");
    }

    #[test]
    fn bad_sources_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let missing = LocalLayout::new(&d.path().join("nope"), DEFAULT_TAG);
        let e = ImportedSource::load(std::sync::Arc::new(missing)).unwrap_err();
        assert!(e.to_string().contains("no such directory"), "{e}");
        fs::write(d.path().join("index.json"), b"garbage").unwrap();
        let garbage = LocalLayout::new(d.path(), DEFAULT_TAG);
        let e = ImportedSource::load(std::sync::Arc::new(garbage)).unwrap_err();
        assert!(e.to_string().contains("not an OCI image index"), "{e}");
        assert!(matches!(e, TransferError::Document { .. }), "{e:?}");
    }

    // The cause of a failed export was flattened into a string: a caller could not tell a
    // full disk from a refused cache, and the I/O error was lost as a source.
    #[test]
    fn a_failed_write_keeps_the_system_error_as_its_source() {
        let (dir, store) = temp_store();
        // The export directory is a file: its blobs/ cannot be made.
        let out = dir.path().join("not-a-dir");
        fs::write(&out, b"x").unwrap();
        let sink = LocalLayout::new(&out, DEFAULT_TAG);
        let blob = b"blob";
        let desc = desc_of(blob, MEDIA_TYPE_RECORDS);
        let e = sink
            .put_blob(&desc, &|| Ok(Box::new(&blob[..])))
            .unwrap_err();
        assert!(
            matches!(e, TransferError::Store { .. }),
            "a store/filesystem failure, not a refusal: {e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("cache {}: ", out.display())),
            "{msg}"
        );
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("the chain ends in the system error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotADirectory, "{msg}");
        assert!(msg.ends_with(&io.to_string()), "{msg}");
        drop(store);
    }
}
