//! `kiln image save`: images out of the store as one tar that is both a
//! docker-archive and an OCI image layout, as Docker 25 and later write it.
//!
//! ```text
//! blobs/sha256/<hex>   layers, configs and manifests, each once
//! index.json           OCI index: one entry per name (annotated with
//!                      io.containerd.image.name and the tag as
//!                      org.opencontainers.image.ref.name), one per unnamed image
//! manifest.json        docker-archive: [{"Config", "RepoTags", "Layers"}]
//! oci-layout           {"imageLayoutVersion":"1.0.0"}
//! ```
//!
//! `docker load` reads `manifest.json` (all versions); `podman load` and
//! `skopeo` read the OCI layout (podman falls back to `manifest.json` when
//! the index holds several images). Layers are written as the store keeps
//! them, uncompressed (`application/vnd.oci.image.layer.v1.tar`): every
//! loader accepts that, and compressing is left to the transport. The tar is
//! deterministic: entries in a fixed order, mtime 0, root-owned, no user
//! names. Every blob is verified against its digest while it is copied.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::error::{io_err, ImageOpsError, Result};
use crate::image::compression::Compression;
use crate::image::config::{self, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::image::index_doc;
use crate::image::{Digest, Reference};
use crate::store::{ImageRecord, IndexRecord, Store, StoreError};

/// The annotation containerd and Docker use for an image's full name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// One image to save, with the names it is saved under.
#[derive(Debug, Clone)]
pub struct SaveItem {
    /// The image.
    pub image: ImageRecord,
    /// Its tags in the archive (none when saved by ID).
    pub tags: Vec<Reference>,
}

/// Finds what `docker save NAME...` would save: a `name:tag` saves that
/// tag; a bare repository name saves every tag of that repository (or, if
/// it has none, the image whose ID starts with it); an ID or a digest
/// reference saves the image without a name. Images named twice are saved
/// once, with all their names.
pub fn resolve_for_save(store: &Store, names: &[String]) -> Result<Vec<SaveItem>> {
    let mut out: Vec<SaveItem> = Vec::new();
    let mut add = |image: ImageRecord, tag: Option<Reference>| {
        let slot = match out.iter_mut().position(|i| i.image.id == image.id) {
            Some(p) => &mut out[p],
            None => {
                out.push(SaveItem {
                    image,
                    tags: Vec::new(),
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        if let Some(t) = tag {
            if !slot.tags.contains(&t) {
                slot.tags.push(t);
            }
        }
    };
    for name in names {
        match Reference::parse_normalized_named(name) {
            Ok(r) if r.is_name_only() => {
                let images = store.list_images()?;
                let mut found = false;
                for image in images {
                    let tags: Vec<Reference> = image
                        .tags()
                        .filter(|t| t.repository() == r)
                        .cloned()
                        .collect();
                    for t in tags {
                        found = true;
                        add(image.clone(), Some(t));
                    }
                }
                if !found {
                    add(super::resolve(store, name)?, None);
                }
            }
            Ok(r) if r.digest().is_none() => {
                let image = super::resolve(store, name)?;
                add(image, Some(r));
            }
            _ => add(super::resolve(store, name)?, None),
        }
    }
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveItem {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// A header for a deterministic entry.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Hashes what it reads.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

fn write_err(e: io::Error) -> ImageOpsError {
    io_err("write", "the image archive")(e)
}

/// Writes a file entry.
fn append<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
    b.append_data(&mut h, name, data).map_err(write_err)
}

/// Copies a stored blob into the archive, verifying it on the way.
fn append_blob<W: Write>(store: &Store, b: &mut tar::Builder<W>, d: &Digest) -> Result<()> {
    let size = store.blob_size(d)?;
    let file = store.open_blob(d)?;
    let mut reader = Hashing {
        inner: file.take(size),
        hasher: Sha256::new(),
        count: 0,
    };
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    b.append_data(&mut h, blob_name(d), &mut reader)
        .map_err(write_err)?;
    let actual = Digest::from_hasher(reader.hasher);
    if reader.count != size {
        return Err(StoreError::SizeMismatch {
            digest: d.clone(),
            expected: size,
            actual: reader.count,
        }
        .into());
    }
    if actual != *d {
        return Err(StoreError::DigestMismatch {
            expected: d.clone(),
            actual,
        }
        .into());
    }
    Ok(())
}

/// A layer compressed for an archive, in a temp file of the store.
struct Packed {
    file: crate::store::fsutil::TempPath,
    digest: Digest,
    size: u64,
}

/// Compresses one stored layer into `<root>/tmp`.
fn pack(store: &Store, layer: &Digest, compression: Compression) -> Result<Packed> {
    let (tmp, file) = crate::store::fsutil::create_temp_file(&store.tmp_dir(), "save")?;
    let guard = crate::store::fsutil::TempPath::new(tmp.clone());
    let err = |e: io::Error| io_err("compress a layer into", tmp.display().to_string())(e);
    let mut src = Hashing {
        inner: store.open_blob(layer)?,
        hasher: Sha256::new(),
        count: 0,
    };
    let mut enc = compression
        .writer(crate::image::Sha256Writer::new(io::BufWriter::new(file)))
        .map_err(err)?;
    io::copy(&mut src, &mut enc).map_err(err)?;
    let actual = Digest::from_hasher(src.hasher);
    if actual != *layer {
        return Err(StoreError::DigestMismatch {
            expected: layer.clone(),
            actual,
        }
        .into());
    }
    let (mut w, digest, size) = enc.finish().map_err(err)?.finish();
    w.flush().map_err(err)?;
    Ok(Packed {
        file: guard,
        digest,
        size,
    })
}

/// Writes `items` as an image archive to `out` and returns it.
pub fn save<W: Write>(store: &Store, items: &[SaveItem], out: W) -> Result<W> {
    save_compressed(store, items, out, Compression::None)
}

/// [`save`] with the layers compressed (gzip or zstd, in parallel): each
/// image gets a manifest listing the compressed layers, which is what the
/// archive's `index.json` points at; image IDs (configs) are unchanged.
pub fn save_compressed<W: Write>(
    store: &Store,
    items: &[SaveItem],
    out: W,
    compression: Compression,
) -> Result<W> {
    // The temp files of compressed layers must outlive a concurrent gc.
    let _lease = store.lease()?;
    let packed = pack_all(store, items, compression)?;
    let mut archive = ArchiveWriter::new(out)?;
    for item in items {
        let (manifest, layers) = if compression == Compression::None {
            archive.write_stored(store, &item.image)?
        } else {
            archive.write_compressed(store, &item.image, &packed, compression)?
        };
        archive.name(item, &manifest, layers);
    }
    archive.finish()
}

/// Writes a stored index of several platforms as an image archive under `tags`: every
/// platform's image, the index (what `index.json` names, so OCI tools and Docker's
/// containerd image store load every platform), and in `manifest.json` the host's image
/// (else the first) under the tags, which is what `docker load` with Docker's classic image
/// store reads: that store keeps one platform under a name.
pub fn save_index<W: Write>(
    store: &Store,
    index: &IndexRecord,
    tags: &[Reference],
    out: W,
    compression: Compression,
) -> Result<W> {
    let _lease = store.lease()?;
    let mut items = Vec::new();
    for i in 0..index.doc.entries.len() {
        let m = index.doc.digest(i)?;
        items.push(SaveItem {
            image: store.image_blobs(&m)?,
            tags: Vec::new(),
        });
    }
    let packed = pack_all(store, &items, compression)?;
    let mut archive = ArchiveWriter::new(out)?;
    let host = crate::common::platform::Platform::host();
    let mut entries = Vec::new();
    let mut layer_lists = Vec::new();
    for (item, stored) in items.iter().zip(&index.doc.entries) {
        let (manifest, layers) = if compression == Compression::None {
            archive.write_stored(store, &item.image)?
        } else {
            archive.write_compressed(store, &item.image, &packed, compression)?
        };
        // The stored entry's other fields (platform, annotations) go with it.
        entries.push(index_doc::repoint(stored, &manifest));
        layer_lists.push(layers);
    }
    let docker = items
        .iter()
        .position(|i| crate::imageops::platform::suits(&i.image, &host))
        .unwrap_or(0);
    let bytes = if compression == Compression::None {
        store.read_blob(&index.digest, "index", super::MAX_MANIFEST_SIZE)?
    } else {
        index.doc.with_entries(entries)?
    };
    let digest = Digest::of_bytes(&bytes);
    if archive.written.insert(digest.clone()) {
        append(&mut archive.b, &blob_name(&digest), &bytes)?;
    }
    let desc = config::descriptor(MEDIA_TYPE_INDEX, &digest, bytes.len() as u64);
    if let (Some(item), Some(layers)) = (items.get(docker), layer_lists.get(docker)) {
        let item = SaveItem {
            image: item.image.clone(),
            tags: tags.to_vec(),
        };
        archive.name(&item, &desc, layers.clone());
    }
    archive.finish()
}

/// Compresses every layer of `items` once, in parallel (nothing for
/// [`Compression::None`]).
fn pack_all(
    store: &Store,
    items: &[SaveItem],
    compression: Compression,
) -> Result<BTreeMap<Digest, Packed>> {
    use rayon::prelude::*;
    if compression == Compression::None {
        return Ok(BTreeMap::new());
    }
    let unique: BTreeSet<Digest> = items.iter().flat_map(|i| i.image.layers()).collect();
    unique
        .into_par_iter()
        .map(|d| pack(store, &d, compression).map(|p| (d, p)))
        .collect()
}

/// The archive being written: its tar, the blobs already in it (each is written
/// once), and the entries of `index.json` and `manifest.json` gathered on the way.
struct ArchiveWriter<W: Write> {
    b: tar::Builder<W>,
    written: BTreeSet<Digest>,
    index_entries: Vec<oci_spec::image::Descriptor>,
    docker_items: Vec<DockerArchiveItem>,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts the tar with the blob directories.
    fn new(out: W) -> Result<Self> {
        let mut b = tar::Builder::new(out);
        b.mode(tar::HeaderMode::Deterministic);
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, dir, io::empty()).map_err(write_err)?;
        }
        Ok(ArchiveWriter {
            b,
            written: BTreeSet::new(),
            index_entries: Vec::new(),
            docker_items: Vec::new(),
        })
    }

    /// Writes an image's blobs as the store keeps them; returns its manifest's
    /// descriptor and its layers.
    fn write_stored(
        &mut self,
        store: &Store,
        image: &ImageRecord,
    ) -> Result<(oci_spec::image::Descriptor, Vec<Digest>)> {
        let layers = image.layers();
        for d in layers.iter().chain([&image.id, &image.manifest_digest]) {
            if self.written.insert(d.clone()) {
                append_blob(store, &mut self.b, d)?;
            }
        }
        let manifest = config::descriptor(
            MEDIA_TYPE_MANIFEST,
            &image.manifest_digest,
            image.manifest_size,
        );
        Ok((manifest, layers))
    }

    /// Writes an image's compressed layers (from `packed`), its config and a new
    /// manifest listing those layers; returns that manifest's descriptor and the
    /// compressed layers.
    fn write_compressed(
        &mut self,
        store: &Store,
        image: &ImageRecord,
        packed: &BTreeMap<Digest, Packed>,
        compression: Compression,
    ) -> Result<(oci_spec::image::Descriptor, Vec<Digest>)> {
        let mut layers = image.layers();
        let mut descriptors = Vec::new();
        for d in &mut layers {
            let p = packed
                .get(d)
                .ok_or_else(|| StoreError::BlobNotFound { digest: d.clone() })?;
            if self.written.insert(p.digest.clone()) {
                let file = std::fs::File::open(p.file.path())
                    .map_err(io_err("read", p.file.path().display().to_string()))?;
                let mut h = header(tar::EntryType::Regular, 0o644, p.size);
                self.b
                    .append_data(&mut h, blob_name(&p.digest), file.take(p.size))
                    .map_err(write_err)?;
            }
            descriptors.push(config::descriptor(
                compression.oci_layer_type().map_err(write_err)?,
                &p.digest,
                p.size,
            ));
            *d = p.digest.clone();
        }
        if self.written.insert(image.id.clone()) {
            append_blob(store, &mut self.b, &image.id)?;
        }
        let manifest = config::new_manifest(
            config::descriptor(
                config::MEDIA_TYPE_CONFIG,
                &image.id,
                image.manifest.config().size(),
            ),
            descriptors,
        );
        let bytes = config::canonical_json("manifest", &manifest)?;
        let digest = Digest::of_bytes(&bytes);
        if self.written.insert(digest.clone()) {
            append(&mut self.b, &blob_name(&digest), &bytes)?;
        }
        let manifest = config::descriptor(MEDIA_TYPE_MANIFEST, &digest, bytes.len() as u64);
        Ok((manifest, layers))
    }

    /// Lists the image in `index.json` (once per tag, or once unnamed) and in
    /// `manifest.json`.
    fn name(
        &mut self,
        item: &SaveItem,
        manifest: &oci_spec::image::Descriptor,
        layers: Vec<Digest>,
    ) {
        if item.tags.is_empty() {
            self.index_entries.push(manifest.clone());
        }
        for t in &item.tags {
            let mut e = manifest.clone();
            let mut annotations = std::collections::HashMap::new();
            annotations.insert(ANNOTATION_IMAGE_NAME.to_owned(), t.to_string());
            if let Some(tag) = t.tag() {
                annotations.insert(
                    oci_spec::image::ANNOTATION_REF_NAME.to_owned(),
                    tag.to_owned(),
                );
            }
            e.set_annotations(Some(annotations));
            self.index_entries.push(e);
        }
        self.docker_items.push(DockerArchiveItem {
            config: blob_name(&item.image.id),
            repo_tags: (!item.tags.is_empty())
                .then(|| item.tags.iter().map(Reference::familiar_string).collect()),
            layers: layers.iter().map(blob_name).collect(),
        });
    }

    /// Writes `index.json`, `manifest.json` and `oci-layout`, and ends the tar.
    fn finish(mut self) -> Result<W> {
        let mut index = oci_spec::image::ImageIndex::default();
        index.set_media_type(Some(oci_spec::image::MediaType::from(MEDIA_TYPE_INDEX)));
        index.set_manifests(self.index_entries);
        append(
            &mut self.b,
            "index.json",
            &config::canonical_json("index", &index)?,
        )?;
        let manifest_json =
            serde_json::to_vec(&self.docker_items).map_err(|source| ImageOpsError::Json {
                what: "manifest.json",
                source,
            })?;
        append(&mut self.b, "manifest.json", &manifest_json)?;
        append(
            &mut self.b,
            "oci-layout",
            format!(
                r#"{{"imageLayoutVersion":"{}"}}"#,
                crate::store::OCI_LAYOUT_VERSION
            )
            .as_bytes(),
        )?;
        self.b.into_inner().map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageops::load::{load, LoadLimits};
    use crate::store::test_support::{layer_tar, put_test_image, temp_store};

    #[test]
    fn compressed_archives_load_back_with_the_same_ids() {
        let (_dir, store) = temp_store();
        let layer = layer_tar(&[("a", b"hello hello hello hello")]);
        let image = put_test_image(&store, &[&layer], "z");
        let tag: Reference = "it/z:1".parse().unwrap();
        for c in [Compression::Gzip, Compression::Zstd] {
            let items = [SaveItem {
                image: image.clone(),
                tags: vec![tag.clone()],
            }];
            let bytes = save_compressed(&store, &items, Vec::new(), c).unwrap();
            let mut a = tar::Archive::new(&bytes[..]);
            let mut layer_types = Vec::new();
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) {
                    if let Some(l) = v["layers"].as_array() {
                        layer_types.push(l[0]["mediaType"].as_str().unwrap().to_string());
                    }
                }
            }
            assert_eq!(layer_types, vec![c.oci_layer_type().unwrap().to_string()]);
            let (_d2, other) = temp_store();
            let loaded = load(&other, &bytes[..], &LoadLimits::default()).unwrap();
            assert_eq!(loaded[0].image.id, image.id);
            assert!(store.tmp_dir().read_dir().unwrap().next().is_none());
        }
    }

    #[test]
    fn save_then_load_keeps_ids_names_and_shared_layers() {
        let (_dir, store) = temp_store();
        let shared = layer_tar(&[("shared", b"s")]);
        let a = put_test_image(&store, &[&shared, &layer_tar(&[("a", b"a")])], "a");
        let b = put_test_image(&store, &[&shared], "b");
        store
            .tag(&Reference::parse("it/a:1").unwrap(), &a.manifest_digest)
            .unwrap();
        let items =
            resolve_for_save(&store, &["it/a:1".to_owned(), b.id.short().to_owned()]).unwrap();
        assert_eq!(items.len(), 2);
        let bytes = save(&store, &items, Vec::new()).unwrap();
        // The shared layer is written once.
        let names: Vec<String> = tar::Archive::new(&bytes[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        let blobs = names.iter().filter(|n| n.len() == 13 + 64).count();
        assert_eq!(blobs, 4 + 2, "{names:?}");
        // Deterministic.
        assert_eq!(save(&store, &items, Vec::new()).unwrap(), bytes);

        let (_dir2, other) = temp_store();
        let loaded = load(&other, &bytes[..], &LoadLimits::default()).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].image.id, a.id);
        assert_eq!(loaded[0].tags[0].to_string(), "docker.io/it/a:1");
        assert_eq!(loaded[1].image.id, b.id);
        assert!(loaded[1].tags.is_empty());
        assert!(other.check().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_blob_fails_the_save() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[&layer_tar(&[("a", b"a")])], "a");
        let path = store.blob_path(&a.layers()[0]);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::write(&path, vec![b'x'; len]).unwrap();
        let items = resolve_for_save(&store, &[a.id.to_string()]).unwrap();
        let err = save(&store, &items, Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("does not match its digest"),
            "{err}"
        );
    }
}
