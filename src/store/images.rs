//! Images: adding, tagging, untagging, resolving, listing and removing the
//! images recorded in `index.json`.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, PlatformBuilder};

use super::error::{Result, StoreError};
use super::index::{entry_for, points_at, ref_name, settle};
use super::Store;
use crate::image::config::{self, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER, MEDIA_TYPE_MANIFEST};
use crate::image::reference::{self, Reference};
use crate::image::Digest;

/// Largest manifest kiln stores or reads (Docker's registry client limit).
pub(crate) const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Largest image config kiln stores or reads.
pub(crate) const MAX_CONFIG_SIZE: u64 = 32 << 20;

/// An image in the store, as `kiln images` and `kiln run` see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// The image ID: the digest of the config (what `kiln images` shows).
    pub id: Digest,
    /// The digest of the manifest.
    pub manifest_digest: Digest,
    /// The size of the manifest in bytes.
    pub manifest_size: u64,
    /// Names kiln recorded for it: tags (`docker.io/library/busybox:latest`)
    /// and names by digest (`docker.io/library/busybox@sha256:…`), sorted.
    pub references: Vec<Reference>,
    /// `ref.name` annotations written by other tools that are not full
    /// Docker references (umoci's `latest`, say), sorted.
    pub other_names: Vec<String>,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The parsed config.
    pub config: ImageConfiguration,
    /// The config's diffIDs, one per layer.
    pub diff_ids: Vec<Digest>,
}

impl ImageRecord {
    /// The platform the image's config names, normalized (`arm64/v8` is `arm64`); `None`
    /// when it names no os or architecture.
    pub fn platform(&self) -> Option<crate::common::platform::Platform> {
        let c = &self.config;
        let (os, architecture) = (c.os().to_string(), c.architecture().to_string());
        if os.is_empty() || architecture.is_empty() {
            return None;
        }
        Some(
            crate::common::platform::Platform {
                os,
                architecture,
                variant: c.variant().clone(),
            }
            .normalized(),
        )
    }

    /// The tagged references (without those recorded by digest).
    pub fn tags(&self) -> impl Iterator<Item = &Reference> {
        self.references.iter().filter(|r| r.tag().is_some())
    }

    /// True when nothing names the image (Docker's `<none>:<none>`).
    pub fn is_dangling(&self) -> bool {
        self.references.is_empty() && self.other_names.is_empty()
    }

    /// Bytes used by the config and layers (shared layers counted fully).
    pub fn size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }

    /// Layer blob digests, bottom first.
    pub fn layers(&self) -> Vec<Digest> {
        self.manifest
            .layers()
            .iter()
            .filter_map(|l| Digest::try_from(l.digest()).ok())
            .collect()
    }

    /// The chainIDs of the image's layer stack, bottom first; the last one
    /// names the snapshot of the whole filesystem.
    pub fn chain_ids(&self) -> Vec<Digest> {
        config::chain_ids(&self.diff_ids)
    }
}

/// Returns the single image in `found`, or the not-found / ambiguous error.
fn pick_one(query: &str, mut found: Vec<ImageRecord>) -> Result<ImageRecord> {
    match found.len() {
        0 => Err(StoreError::ImageNotFound {
            name: query.to_owned(),
        }),
        1 => Ok(found.remove(0)),
        count => Err(StoreError::AmbiguousImage {
            prefix: query.to_owned(),
            count,
        }),
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The reference as it is recorded for `manifest`: with a default tag if
/// it has neither tag nor digest, and only the digest if it has both.
pub(super) fn reference_for_tag(reference: &Reference, manifest: &Digest) -> Result<Reference> {
    let r = reference.clone().with_default_tag();
    match r.digest() {
        None => Ok(r),
        Some(d) if d == manifest => Ok(r.repository().with_digest(d.clone())),
        Some(_) => Err(StoreError::DigestReferenceMismatch {
            reference: r.to_string(),
            manifest: manifest.clone(),
        }),
    }
}

impl Store {
    /// Adds an image whose layer blobs are already stored: stores the config
    /// and manifest and records the image (untagged) in `index.json`.
    ///
    /// The manifest must be an OCI manifest whose config descriptor matches
    /// `config_bytes`, whose layers are all uncompressed
    /// (`application/vnd.oci.image.layer.v1.tar`), present with the declared
    /// sizes, and equal to the config's diffIDs. Adding an image that is
    /// already present changes nothing.
    pub fn put_image(&self, config_bytes: &[u8], manifest_bytes: &[u8]) -> Result<ImageRecord> {
        self.put_image_tagged(config_bytes, manifest_bytes, &[])
    }

    /// [`Store::put_image`] and [`Store::tag`] in one `index.json` update,
    /// so the image is never visible untagged (where an image prune could
    /// remove it).
    pub fn put_image_tagged(
        &self,
        config_bytes: &[u8],
        manifest_bytes: &[u8],
        tags: &[Reference],
    ) -> Result<ImageRecord> {
        let _gc = self.gc_shared()?;
        let manifest_digest = Digest::of_bytes(manifest_bytes);
        let config = self.validate_image(&manifest_digest, config_bytes, manifest_bytes)?;
        let tags = tags
            .iter()
            .map(|t| reference_for_tag(t, &manifest_digest))
            .collect::<Result<Vec<_>>>()?;

        let id = config::image_id(config_bytes);
        self.put_blob_bytes(config_bytes, Some(&id))?;
        self.put_blob_bytes(manifest_bytes, Some(&manifest_digest))?;

        let mut template = config::descriptor(
            MEDIA_TYPE_MANIFEST,
            &manifest_digest,
            manifest_bytes.len() as u64,
        );
        let mut platform = PlatformBuilder::default()
            .architecture(config.architecture().clone())
            .os(config.os().clone());
        if let Some(v) = config.variant() {
            platform = platform.variant(v.clone());
        }
        if let Ok(p) = platform.build() {
            template.set_platform(Some(p));
        }
        self.update_index(|entries| {
            for t in &tags {
                retag(entries, &template, &t.to_string());
            }
            settle(entries, &template);
            Ok(())
        })?;
        tracing::debug!(id = %id, manifest = %manifest_digest, "stored image");
        self.image(&manifest_digest)
    }

    /// Checks an image before anything of it is stored; returns its config.
    pub(super) fn validate_image(
        &self,
        manifest_digest: &Digest,
        config_bytes: &[u8],
        manifest_bytes: &[u8],
    ) -> Result<ImageConfiguration> {
        let reject = |reason: String| StoreError::InvalidImage {
            manifest: manifest_digest.clone(),
            reason,
        };
        if manifest_bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(reject(format!(
                "the manifest is {} bytes, more than the {MAX_MANIFEST_SIZE} allowed",
                manifest_bytes.len()
            )));
        }
        if config_bytes.len() as u64 > MAX_CONFIG_SIZE {
            return Err(reject(format!(
                "the config is {} bytes, more than the {MAX_CONFIG_SIZE} allowed",
                config_bytes.len()
            )));
        }
        let manifest = config::parse_manifest(manifest_bytes)?;
        let config = config::parse_config(config_bytes)?;
        // What `run` and `build` read of the config (Docker's fields too, `Healthcheck`,
        // `OnBuild`, `Shell`): an image stored here must be usable, not refused later.
        crate::image::spec::ImageSpec::from_slice(config_bytes)
            .map_err(|e| reject(format!("its config cannot be read: {e}")))?;
        let id = config::image_id(config_bytes);

        let cd = manifest.config();
        let declared = config::descriptor_digest("manifest", "config.digest", cd)?;
        if declared != id || cd.size() != config_bytes.len() as u64 {
            return Err(reject(format!(
                "its config descriptor names {declared} ({} bytes), but the config given is {id} ({} bytes)",
                cd.size(),
                config_bytes.len()
            )));
        }
        if cd.media_type().to_string() != MEDIA_TYPE_CONFIG {
            return Err(reject(format!(
                "config media type is {}, expected {MEDIA_TYPE_CONFIG}",
                cd.media_type()
            )));
        }

        let diff_ids = config::diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(reject(format!(
                "it has {} layers but its config lists {} diffIDs",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        for (i, (layer, diff_id)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
            let media_type = layer.media_type().to_string();
            if media_type != MEDIA_TYPE_LAYER {
                return Err(reject(format!(
                    "layer {i} has media type {media_type}; the store keeps layers uncompressed ({MEDIA_TYPE_LAYER})"
                )));
            }
            let digest =
                config::descriptor_digest("manifest", format!("layers[{i}].digest"), layer)?;
            if digest != *diff_id {
                return Err(reject(format!(
                    "layer {i} is {digest} but the config's diffID {i} is {diff_id}; an uncompressed layer's digest is its diffID"
                )));
            }
            match self.blob_size(&digest) {
                Ok(size) if size == layer.size() => {}
                Ok(size) => {
                    return Err(reject(format!(
                        "layer {i} ({digest}) is {size} bytes in the store, the manifest says {}",
                        layer.size()
                    )))
                }
                Err(StoreError::BlobNotFound { .. }) => {
                    return Err(reject(format!("layer {i} ({digest}) is not in the store")))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(config)
    }

    /// Names the image whose manifest is `manifest` with `reference`
    /// (`:latest` is added to a bare name). A tag that named another image
    /// moves; that image becomes untagged if it has no other name, and its
    /// manifest digest is returned. A digest reference
    /// (`name@sha256:…`) is recorded too, if it names this manifest.
    pub fn tag(&self, reference: &Reference, manifest: &Digest) -> Result<Option<Digest>> {
        let name = reference_for_tag(reference, manifest)?.to_string();
        self.update_index(|entries| {
            let template = entries
                .iter()
                .find(|e| points_at(e, manifest))
                .cloned()
                .ok_or_else(|| StoreError::ImageNotFound {
                    name: manifest.to_string(),
                })?;
            Ok(retag(entries, &template, &name))
        })
    }

    /// Removes a tag (or name by digest). The image stays, untagged if this
    /// was its last name; its manifest digest is returned.
    pub fn untag(&self, reference: &Reference) -> Result<Digest> {
        let r = reference.clone().with_default_tag();
        let name = r.to_string();
        self.update_index(|entries| {
            let removed: Vec<Descriptor> = entries
                .iter()
                .filter(|e| ref_name(e) == Some(name.as_str()))
                .cloned()
                .collect();
            let Some(first) = removed.first() else {
                return Err(StoreError::ImageNotFound {
                    name: r.familiar_string(),
                });
            };
            let digest = digest_of_entry(first)?;
            entries.retain(|e| ref_name(e) != Some(name.as_str()));
            for e in &removed {
                settle(entries, e);
            }
            Ok(digest)
        })
    }

    /// Removes the image with manifest `manifest` and all its names from
    /// `index.json`. Its blobs stay until [`Store::gc`]. Returns the names
    /// it had.
    pub fn remove_image(&self, manifest: &Digest) -> Result<Vec<String>> {
        self.update_index(|entries| {
            let names: Vec<String> = entries
                .iter()
                .filter(|e| points_at(e, manifest))
                .filter_map(|e| ref_name(e).map(str::to_owned))
                .collect();
            let before = entries.len();
            entries.retain(|e| !points_at(e, manifest));
            if entries.len() == before {
                return Err(StoreError::ImageNotFound {
                    name: manifest.to_string(),
                });
            }
            Ok(names)
        })
    }

    /// The image with manifest `manifest`, if `index.json` records it.
    pub fn image(&self, manifest: &Digest) -> Result<ImageRecord> {
        let index = self.read_index()?;
        let entries: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|e| points_at(e, manifest))
            .collect();
        if entries.is_empty() {
            return Err(StoreError::ImageNotFound {
                name: manifest.to_string(),
            });
        }
        self.load_record(manifest, &entries)
    }

    /// Every image in `index.json`, in the order first recorded. Only OCI
    /// image manifests are images; other entries (a nested index another
    /// tool wrote) are kept but not listed. Images whose manifest or config
    /// cannot be read are left out (and logged); [`Store::check`] reports
    /// them.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let index = self.read_index()?;
        let mut order: Vec<Digest> = Vec::new();
        let mut by_digest: BTreeMap<Digest, Vec<&Descriptor>> = BTreeMap::new();
        for entry in index.manifests() {
            if entry.media_type().to_string() != MEDIA_TYPE_MANIFEST {
                continue;
            }
            let Ok(d) = Digest::try_from(entry.digest()) else {
                continue;
            };
            let slot = by_digest.entry(d.clone()).or_default();
            if slot.is_empty() {
                order.push(d);
            }
            slot.push(entry);
        }
        let mut out = Vec::with_capacity(order.len());
        for d in order {
            match self.load_record(&d, &by_digest[&d]) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(manifest = %d, error = %e, "skipping unreadable image"),
            }
        }
        Ok(out)
    }

    /// Finds one image the way `docker run` / `docker rmi` do: by full image
    /// ID (`sha256:<hex>` or 64 hex digits), by reference (`busybox`,
    /// `busybox:1`, `localhost:5000/app:1`), by name and manifest digest
    /// (`busybox@sha256:…`, which must be an image recorded under that
    /// repository), by a `ref.name` another tool wrote, or by a unique
    /// prefix of the image ID (`3f5a`, `sha256:3f5a`). A prefix matching
    /// several images is an error, as is an invalid reference that
    /// matches nothing.
    ///
    /// A name that holds an index of several platforms gives the index's entry for the
    /// host's platform ([`Store::resolve_platform`] for another; [`Store::resolve_stored`]
    /// for the index itself); an image ID finds an index's entry too.
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord> {
        self.resolve_platform(name_or_id, None)
    }

    /// [`Store::resolve`] without indexes: images in `index.json`, and by ID the entries of
    /// stored indexes.
    pub(super) fn resolve_image_only(&self, name_or_id: &str) -> Result<ImageRecord> {
        let mut images = self.list_images()?;
        for i in self.index_images()? {
            if !images
                .iter()
                .any(|x| x.manifest_digest == i.manifest_digest)
            {
                images.push(i);
            }
        }
        let s = name_or_id;
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if reference::is_identifier(hex) {
            let found = images.into_iter().filter(|i| i.id.hex() == hex).collect();
            return pick_one(s, found);
        }
        let parsed = Reference::parse(s);
        if let Ok(r) = &parsed {
            let found = match r.digest() {
                Some(d) => images.iter().find(|i| {
                    i.manifest_digest == *d && i.references.iter().any(|n| n.name() == r.name())
                }),
                None => images.iter().find(|i| i.references.contains(r)),
            };
            if let Some(i) = found {
                return Ok(i.clone());
            }
        }
        if let Ok(r) = &parsed {
            // `name@sha256:…` with a registry's manifest digest, recorded by a pull.
            if let Some(local) = r.digest().and_then(|d| self.repo_digest_target(d)) {
                if let Some(i) = images.iter().find(|i| {
                    i.manifest_digest == local && i.references.iter().any(|n| n.name() == r.name())
                }) {
                    return Ok(i.clone());
                }
            }
        }
        if let Some(i) = images.iter().find(|i| i.other_names.iter().any(|n| n == s)) {
            return Ok(i.clone());
        }
        if !hex.is_empty() && is_lower_hex(hex) {
            let found: Vec<ImageRecord> = images
                .into_iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            if !found.is_empty() {
                return pick_one(s, found);
            }
        }
        match parsed {
            Err(e) => Err(e.into()),
            Ok(_) => Err(StoreError::ImageNotFound { name: s.to_owned() }),
        }
    }

    /// `<root>/distribution/v1/repodigest/<hex>`: which stored manifest a
    /// registry's manifest (or index) digest was pulled as.
    fn repo_digest_path(&self, registry_digest: &Digest) -> std::path::PathBuf {
        self.root()
            .join("distribution")
            .join("v1")
            .join("repodigest")
            .join(registry_digest.hex())
    }

    /// Records that the registry's manifest `registry_digest` was stored as
    /// the image whose manifest is `local`, so `name@<registry_digest>`
    /// resolves to it (the store keeps layers uncompressed, so its own
    /// manifest digest differs from the registry's).
    ///
    /// A registry's index digest recorded as a stored index (`pull --all-platforms`) keeps
    /// naming it when one of its platforms is pulled alone by that digest (`local` is then
    /// the index's entry for the platform): `name@<index digest>` stays the index, as in
    /// Docker, for as long as the index is named in `index.json` and has that entry.
    pub fn record_repo_digest(&self, registry_digest: &Digest, local: &Digest) -> Result<()> {
        if let Some(held) = self.repo_digest_target(registry_digest) {
            if held != *local && self.named_index_holds(&held, local) {
                tracing::debug!(registry = %registry_digest, index = %held, image = %local,
                    "the registry's digest keeps naming the stored index of the image");
                return Ok(());
            }
        }
        let path = self.repo_digest_path(registry_digest);
        if let Some(dir) = path.parent() {
            super::fsutil::create_dir_all(dir, 0o755)?;
        }
        super::fsutil::write_atomic(&self.tmp_dir(), &path, local.as_str().as_bytes(), 0o644)
    }

    /// The stored manifest a registry's digest was pulled as, if recorded.
    pub fn repo_digest_target(&self, registry_digest: &Digest) -> Option<Digest> {
        let text = std::fs::read_to_string(self.repo_digest_path(registry_digest)).ok()?;
        Digest::parse(text.trim()).ok()
    }

    /// Reads the manifest and config of one image and collects its names
    /// from its index entries.
    pub(super) fn load_record(
        &self,
        manifest_digest: &Digest,
        entries: &[&Descriptor],
    ) -> Result<ImageRecord> {
        let manifest_bytes = self.read_blob(manifest_digest, "manifest", MAX_MANIFEST_SIZE)?;
        let manifest = config::parse_manifest(&manifest_bytes)?;
        let id = config::descriptor_digest("manifest", "config.digest", manifest.config())?;
        let config_bytes = self.read_blob(&id, "config", MAX_CONFIG_SIZE)?;
        let config = config::parse_config(&config_bytes)?;
        let diff_ids = config::diff_ids(&config)?;
        let (references, other_names) = names_of(entries);
        Ok(ImageRecord {
            id,
            manifest_digest: manifest_digest.clone(),
            manifest_size: manifest_bytes.len() as u64,
            references,
            other_names,
            manifest,
            config,
            diff_ids,
        })
    }
}

/// The validated digest of an index entry (`index.json` is parsed
/// strictly, so this only fails on a file changed behind kiln's back).
fn digest_of_entry(entry: &Descriptor) -> Result<Digest> {
    Ok(config::descriptor_digest(
        "index",
        "manifests[].digest",
        entry,
    )?)
}

/// Points `name` at the manifest `template` describes, keeping whatever
/// image it named before reachable. Returns that image's manifest digest if
/// the name moved.
pub(super) fn retag(
    entries: &mut Vec<Descriptor>,
    template: &Descriptor,
    name: &str,
) -> Option<Digest> {
    let previous: Vec<Descriptor> = entries
        .iter()
        .filter(|e| ref_name(e) == Some(name))
        .cloned()
        .collect();
    let target = Digest::try_from(template.digest()).ok()?;
    if previous.len() == 1 && points_at(&previous[0], &target) {
        return None;
    }
    entries.retain(|e| ref_name(e) != Some(name));
    entries.push(entry_for(template, Some(name)));
    settle(entries, template);
    let mut moved_from = None;
    for p in &previous {
        if !points_at(p, &target) {
            settle(entries, p);
            moved_from = Digest::try_from(p.digest()).ok();
        }
    }
    moved_from
}

/// The names `entries` (index.json records of one manifest or index) give it, sorted and
/// deduplicated: references in kiln's canonical form, and every other name (another tool's
/// `latest`) verbatim.
pub(super) fn names_of(entries: &[&Descriptor]) -> (Vec<Reference>, Vec<String>) {
    let mut references = Vec::new();
    let mut other_names = Vec::new();
    for name in entries.iter().filter_map(|e| ref_name(e)) {
        match Reference::parse_normalized_named(name) {
            Ok(r) if r.to_string() == name && !r.is_name_only() => references.push(r),
            _ => other_names.push(name.to_owned()),
        }
    }
    references.sort();
    references.dedup();
    other_names.sort();
    other_names.dedup();
    (references, other_names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::is_kiln_untagged;
    use crate::store::test_support::{image_bytes, image_bytes_sized, put_test_image, temp_store};

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn put_image_records_an_untagged_image() {
        let (_dir, store) = temp_store();
        let img = put_test_image(&store, &[b"layer one"], "a");
        assert!(img.is_dangling());
        assert_eq!(img.diff_ids.len(), 1);
        let index = store.read_index().unwrap();
        assert_eq!(index.manifests().len(), 1);
        assert!(is_kiln_untagged(&index.manifests()[0]));
        let platform = index.manifests()[0].platform().clone().unwrap();
        assert_eq!(platform.os().to_string(), "linux");
        // Idempotent.
        let again = put_test_image(&store, &[b"layer one"], "a");
        assert_eq!(again, img);
        assert_eq!(store.read_index().unwrap().manifests().len(), 1);
        assert_eq!(store.list_images().unwrap(), vec![img]);
    }

    #[test]
    fn put_image_rejects_inconsistent_images() {
        let (_dir, store) = temp_store();
        let layer = store.put_blob_bytes(b"layer", None).unwrap();
        let (config, manifest) = image_bytes(&store, std::slice::from_ref(&layer), "a");

        // Config bytes that are not the ones the manifest names.
        let other_config = String::from_utf8(config.clone())
            .unwrap()
            .replace("\"a\"", "\"b\"");
        let err = store
            .put_image(other_config.as_bytes(), &manifest)
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidImage { .. }), "{err:?}");

        // A layer that is not in the store.
        let missing = Digest::of_bytes(b"never stored");
        let (config2, manifest2) = image_bytes_sized(&[(missing, 12)], "c");
        let err = store.put_image(&config2, &manifest2).unwrap_err();
        assert!(err.to_string().contains("not in the store"), "{err}");

        // Compressed layers are not what the store keeps.
        let gz = String::from_utf8(manifest.clone()).unwrap().replace(
            MEDIA_TYPE_LAYER,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        );
        let err = store.put_image(&config, gz.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("uncompressed"), "{err}");

        // Nothing was recorded, and no config or manifest blob was written.
        assert!(store.read_index().unwrap().manifests().is_empty());
        assert_eq!(store.list_blobs().unwrap(), vec![layer]);
    }

    #[test]
    fn tag_move_untag_and_remove() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        let b = put_test_image(&store, &[b"b"], "b");

        assert_eq!(store.tag(&r("web"), &a.manifest_digest).unwrap(), None);
        assert_eq!(store.tag(&r("web:v1"), &a.manifest_digest).unwrap(), None);
        let a_now = store.image(&a.manifest_digest).unwrap();
        assert_eq!(
            a_now
                .references
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>(),
            ["docker.io/library/web:latest", "docker.io/library/web:v1"]
        );
        // Tagging again changes nothing.
        assert_eq!(store.tag(&r("web"), &a.manifest_digest).unwrap(), None);
        assert_eq!(store.read_index().unwrap().manifests().len(), 3); // 2 tags + b untagged

        // Moving web:latest to b; a keeps web:v1.
        let moved = store.tag(&r("web:latest"), &b.manifest_digest).unwrap();
        assert_eq!(moved, Some(a.manifest_digest.clone()));
        assert_eq!(
            store.resolve("web").unwrap().manifest_digest,
            b.manifest_digest
        );
        // Moving web:v1 too leaves a dangling but kept.
        store.tag(&r("web:v1"), &b.manifest_digest).unwrap();
        let a_now = store.image(&a.manifest_digest).unwrap();
        assert!(a_now.is_dangling());
        assert_eq!(store.list_images().unwrap().len(), 2);

        // Untag the last names of b: it stays, dangling.
        assert_eq!(store.untag(&r("web:v1")).unwrap(), b.manifest_digest);
        assert_eq!(store.untag(&r("web")).unwrap(), b.manifest_digest);
        assert!(store.image(&b.manifest_digest).unwrap().is_dangling());
        assert!(matches!(
            store.untag(&r("web")),
            Err(StoreError::ImageNotFound { .. })
        ));

        // Remove.
        store.remove_image(&a.manifest_digest).unwrap();
        assert!(matches!(
            store.image(&a.manifest_digest),
            Err(StoreError::ImageNotFound { .. })
        ));
        assert!(matches!(
            store.remove_image(&a.manifest_digest),
            Err(StoreError::ImageNotFound { .. })
        ));
        assert_eq!(store.list_images().unwrap().len(), 1);
        // Tagging an image that is not recorded fails.
        assert!(store.tag(&r("x"), &a.manifest_digest).is_err());
    }

    #[test]
    fn put_image_tagged_names_the_image_in_one_step() {
        let (_dir, store) = temp_store();
        let layer = store.put_blob_bytes(b"l", None).unwrap();
        let (config, manifest) = image_bytes(&store, &[layer], "t");
        let img = store
            .put_image_tagged(&config, &manifest, &[r("app:1"), r("localhost:5000/app:1")])
            .unwrap();
        assert_eq!(img.references.len(), 2);
        let index = store.read_index().unwrap();
        assert_eq!(index.manifests().len(), 2);
        assert!(index.manifests().iter().all(|e| !is_kiln_untagged(e)));
    }

    #[test]
    fn resolve_by_name_id_digest_and_prefix() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        let b = put_test_image(&store, &[b"b"], "b");
        store.tag(&r("busybox"), &a.manifest_digest).unwrap();
        store
            .tag(&r("localhost:5000/x:1"), &b.manifest_digest)
            .unwrap();

        let by = |s: &str| store.resolve(s).map(|i| i.manifest_digest);
        let ok = |s: &str| store.resolve(s).ok().map(|i| i.manifest_digest);
        let (am, bm) = (
            Some(a.manifest_digest.clone()),
            Some(b.manifest_digest.clone()),
        );
        assert_eq!(ok("busybox"), am);
        assert_eq!(ok("busybox:latest"), am);
        assert_eq!(ok("docker.io/library/busybox:latest"), am);
        assert_eq!(ok("library/busybox"), am);
        assert_eq!(ok("localhost:5000/x:1"), bm);
        assert_eq!(ok(a.id.as_str()), am);
        assert_eq!(ok(a.id.hex()), am);
        assert_eq!(ok(&a.id.hex()[..12]), am);
        assert_eq!(ok(&format!("sha256:{}", &b.id.hex()[..8])), bm);
        assert_eq!(ok(&format!("busybox@{}", a.manifest_digest)), am);
        assert_eq!(ok(&format!("busybox:whatever@{}", a.manifest_digest)), am);

        // A digest under a repository the image is not recorded in.
        assert!(matches!(
            by(&format!("alpine@{}", a.manifest_digest)),
            Err(StoreError::ImageNotFound { .. })
        ));
        assert!(matches!(
            by("busybox:2"),
            Err(StoreError::ImageNotFound { .. })
        ));
        assert!(matches!(
            by(&"f".repeat(64)),
            Err(StoreError::ImageNotFound { .. })
        ));
        let err = by("Busybox").unwrap_err();
        assert!(err.to_string().contains("must be lowercase"), "{err}");
    }

    #[test]
    fn ambiguous_id_prefix_is_an_error() {
        let (_dir, store) = temp_store();
        // Make images until two IDs share a first hex digit (at most 17).
        let mut seen: BTreeMap<char, Digest> = BTreeMap::new();
        let mut shared = None;
        for i in 0..17 {
            let img = put_test_image(&store, &[b"x"], &format!("label{i}"));
            let first = img.id.hex().chars().next().unwrap();
            if let Some(other) = seen.insert(first, img.id.clone()) {
                shared = Some((first, other, img.id));
                break;
            }
        }
        let (first, one, two) = shared.expect("pigeonhole: 17 IDs share a first digit");
        let err = store.resolve(&first.to_string()).unwrap_err();
        assert!(
            matches!(err, StoreError::AmbiguousImage { count: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("ambiguous"));
        // A longer prefix of each is unique.
        let common = one
            .hex()
            .chars()
            .zip(two.hex().chars())
            .take_while(|(x, y)| x == y)
            .count();
        assert_eq!(store.resolve(&one.hex()[..=common]).unwrap().id, one);
        assert_eq!(store.resolve(&two.hex()[..=common]).unwrap().id, two);
    }

    #[test]
    fn digest_references_are_recorded_only_for_their_manifest() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        let b = put_test_image(&store, &[b"b"], "b");
        let by_digest = Reference::parse(&format!("busybox@{}", a.manifest_digest)).unwrap();
        store.tag(&by_digest, &a.manifest_digest).unwrap();
        assert!(matches!(
            store.tag(&by_digest, &b.manifest_digest),
            Err(StoreError::DigestReferenceMismatch { .. })
        ));
        let img = store
            .resolve(&format!("busybox@{}", a.manifest_digest))
            .unwrap();
        assert_eq!(img.manifest_digest, a.manifest_digest);
        assert_eq!(img.tags().count(), 0);
        assert!(!img.is_dangling());
    }

    #[test]
    fn names_from_other_tools_are_kept_and_resolvable() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        store
            .update_index(|entries| {
                let t = entries[0].clone();
                entries.push(entry_for(&t, Some("latest")));
                Ok(())
            })
            .unwrap();
        let img = store.image(&a.manifest_digest).unwrap();
        assert_eq!(img.other_names, ["latest"]);
        assert!(img.references.is_empty());
        assert_eq!(
            store.resolve("latest").unwrap().manifest_digest,
            a.manifest_digest
        );
    }

    #[test]
    fn concurrent_tagging_loses_no_update() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let m = a.manifest_digest.clone();
                std::thread::spawn(move || {
                    for j in 0..5 {
                        store.tag(&r(&format!("app:t{i}-{j}")), &m).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let img = store.image(&a.manifest_digest).unwrap();
        assert_eq!(img.tags().count(), 40);
        // Still a valid OCI index, as other tools read it.
        let index = oci_spec::image::ImageIndex::from_file(store.index_path()).unwrap();
        assert_eq!(index.manifests().len(), 40);
    }
}
