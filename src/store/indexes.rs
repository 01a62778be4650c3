//! Image indexes kept under a tag: one name for the images of several platforms, as
//! `kiln build --platform linux/amd64,linux/arm64` makes them, `kiln pull --all-platforms`
//! keeps them, and pulls or imports of one platform after another into one tag grow them
//! ([`Store::put_image_in_tag`]).
//!
//! The tag's `index.json` entry has the OCI index media type and points at an index blob
//! whose `manifests` name one stored image per platform (each descriptor with its
//! `platform`). The platforms' images have no `index.json` entry of their own: they are
//! reachable through the index, so garbage collection keeps them while the index is named
//! and `kiln images` lists the index once, as Docker lists a manifest list. An index that
//! loses its last name is dropped from `index.json` (no dangling indexes are kept), and its
//! images go with it at the next garbage collection.

use oci_spec::image::{Descriptor, ImageIndex, PlatformBuilder};

use super::error::{Result, StoreError};
use super::images::{ImageRecord, MAX_MANIFEST_SIZE};
use super::index::{is_kiln_untagged, points_at, ref_name};
use super::Store;
use crate::common::platform::Platform;
use crate::image::config::{self, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::image::index_doc::{self, Entry, IndexDoc};
use crate::image::{Digest, Reference};

/// An index of several platforms' images kept under one or more names.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRecord {
    /// The index blob's digest (what `kiln images` shows as its ID).
    pub digest: Digest,
    /// The index blob's size.
    pub size: u64,
    /// Its names (tags and names by digest), sorted.
    pub references: Vec<Reference>,
    /// Names other tools wrote that are not Docker references.
    pub other_names: Vec<String>,
    /// The parsed index.
    pub index: ImageIndex,
    /// The index's entries and fields as stored, every one of them (what a push or an
    /// export of the index gives back; `index` lacks the platforms' `os.version` and
    /// `os.features`).
    pub doc: IndexDoc,
}

impl IndexRecord {
    /// The tagged references.
    pub fn tags(&self) -> impl Iterator<Item = &Reference> {
        self.references.iter().filter(|r| r.tag().is_some())
    }

    /// Each entry's platform (normalized) and manifest digest, in the index's order; an
    /// entry without a platform or with a bad digest is left out.
    pub fn platforms(&self) -> Vec<(Platform, Digest)> {
        self.index
            .manifests()
            .iter()
            .filter_map(|d| {
                let platform = platform_of(d.platform().as_ref()?);
                let digest = Digest::try_from(d.digest()).ok()?;
                Some((platform, digest))
            })
            .collect()
    }

    /// The manifest of the entry for `wanted` (a variant missing on either side matches).
    pub fn manifest_for(&self, wanted: &Platform) -> Option<Digest> {
        let wanted = wanted.normalized();
        self.platforms()
            .into_iter()
            .find(|(p, _)| wanted.matches(&p.os, &p.architecture, p.variant.as_deref()))
            .map(|(_, d)| d)
    }

    /// The entry that stands for the whole index where one image is shown (`kiln images`,
    /// `image inspect`): the host's, else the first.
    pub fn shown_manifest(&self) -> Option<Digest> {
        self.manifest_for(&Platform::host())
            .or_else(|| self.platforms().into_iter().next().map(|(_, d)| d))
    }

    /// The platforms it holds, comma-separated (for messages).
    pub fn platform_list(&self) -> String {
        self.platforms()
            .iter()
            .map(|(p, _)| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a name in the store stands for: one image, or an index of several platforms'.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// A single image.
    Image(Box<ImageRecord>),
    /// An index.
    Index(Box<IndexRecord>),
}

/// The index descriptor of one stored image: its manifest with its config's platform.
pub fn platform_descriptor(image: &ImageRecord) -> Descriptor {
    let mut d = config::descriptor(
        MEDIA_TYPE_MANIFEST,
        &image.manifest_digest,
        image.manifest_size,
    );
    let c = &image.config;
    let mut p = PlatformBuilder::default()
        .architecture(c.architecture().clone())
        .os(c.os().clone());
    if let Some(v) = c.variant() {
        p = p.variant(v.clone());
    }
    if let Ok(p) = p.build() {
        d.set_platform(Some(p));
    }
    d
}

/// The bytes of an OCI index naming `images` in the order given (canonical JSON, nothing
/// time-dependent: the same images always give the same index digest).
pub fn index_bytes(images: &[ImageRecord]) -> Result<Vec<u8>> {
    let mut index = super::index::empty_index();
    index.set_manifests(images.iter().map(platform_descriptor).collect());
    Ok(config::canonical_json("index", &index)?)
}

/// An index entry's platform, normalized.
fn platform_of(p: &oci_spec::image::Platform) -> Platform {
    Platform {
        os: p.os().to_string(),
        architecture: p.architecture().to_string(),
        variant: p.variant().clone(),
    }
    .normalized()
}

fn is_index_entry(e: &Descriptor) -> bool {
    e.media_type().to_string() == MEDIA_TYPE_INDEX
}

/// How often [`Store::put_image_in_tag`] tries again when another process changed the tag.
const MAX_TAG_RETRIES: usize = 16;

/// An image a tag holds, with the stored index's entry for it (every field kept, so an
/// index pulled with its entries' annotations keeps them as other platforms come and go);
/// `None` for an image the tag names alone, or one being put in.
struct Held {
    image: ImageRecord,
    entry: Option<Entry>,
}

impl Held {
    fn new(image: &ImageRecord) -> Held {
        Held {
            image: image.clone(),
            entry: None,
        }
    }
}

/// `held` with `image` in the place of the entry of its platform (appended when there is
/// none); an entry that already names `image` stays as it is. An image without a platform
/// cannot share a tag: it replaces everything.
fn merge_platform(held: Vec<Held>, image: &ImageRecord) -> Vec<Held> {
    let Some(p) = image.platform() else {
        return vec![Held::new(image)];
    };
    let mut out: Vec<Held> = Vec::with_capacity(held.len() + 1);
    let mut placed = false;
    for h in held {
        match h.image.platform() {
            Some(q) if q == p && !placed => {
                if h.image.manifest_digest == image.manifest_digest {
                    out.push(h);
                } else {
                    out.push(Held::new(image));
                }
                placed = true;
            }
            Some(q) if q != p => out.push(h),
            // A second entry of the platform, or an image without one: dropped.
            _ => {}
        }
    }
    if !placed {
        out.push(Held::new(image));
    }
    out
}

/// The bytes of the index `doc` (a held index's fields, or none) naming `merged`: each held
/// entry as stored, a new image with [`platform_descriptor`].
fn merged_index_bytes(doc: &IndexDoc, merged: &[Held]) -> Result<Vec<u8>> {
    let entries = merged
        .iter()
        .map(|h| match &h.entry {
            Some(e) => Ok(e.clone()),
            None => index_doc::entry_of(&platform_descriptor(&h.image)),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(doc.with_entries(entries)?)
}

impl Store {
    /// Stores an image's config and manifest blobs without recording it in `index.json`:
    /// a platform's image that an index will name ([`Store::put_index_tagged`]). Checked as
    /// [`Store::put_image`] checks. The caller holds a [`super::Lease`] until the index is
    /// recorded, so garbage collection cannot take the blobs in between.
    pub fn put_platform_image(
        &self,
        config_bytes: &[u8],
        manifest_bytes: &[u8],
    ) -> Result<ImageRecord> {
        let _gc = self.gc_shared()?;
        let manifest_digest = Digest::of_bytes(manifest_bytes);
        self.validate_image(&manifest_digest, config_bytes, manifest_bytes)?;
        let id = config::image_id(config_bytes);
        self.put_blob_bytes(config_bytes, Some(&id))?;
        self.put_blob_bytes(manifest_bytes, Some(&manifest_digest))?;
        self.image_blobs(&manifest_digest)
    }

    /// An image by its manifest digest, from its blobs alone (an index's entry, which has
    /// no `index.json` entry): no names.
    pub fn image_blobs(&self, manifest: &Digest) -> Result<ImageRecord> {
        self.load_record(manifest, &[])
    }

    /// Records the index `index_bytes` under `tags` in one `index.json` update. Every entry
    /// must be an OCI image manifest already stored with its config and layers, and name
    /// its platform; two entries may not name the same platform. A tag that named something
    /// else moves (that image becomes untagged, an index is dropped).
    pub fn put_index_tagged(&self, index_bytes: &[u8], tags: &[Reference]) -> Result<IndexRecord> {
        let _gc = self.gc_shared()?;
        let digest = self.store_index_blob(index_bytes)?;
        let names = tags
            .iter()
            .map(|t| super::images::reference_for_tag(t, &digest))
            .collect::<Result<Vec<_>>>()?;
        let template = config::descriptor(MEDIA_TYPE_INDEX, &digest, index_bytes.len() as u64);
        self.update_index(|entries| {
            for n in &names {
                super::images::retag(entries, &template, &n.to_string());
            }
            Ok(())
        })?;
        tracing::debug!(index = %digest, "stored image index");
        if names.is_empty() {
            // Kept only as blobs (for an export right after): nothing names it.
            return self.index_blob(&digest);
        }
        self.index_record(&digest)
    }

    /// Checks an index as [`Store::put_index_tagged`] describes and stores its blob (no
    /// `index.json` entry); returns its digest. The caller holds the gc lock shared.
    fn store_index_blob(&self, index_bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(index_bytes);
        let reject = |reason: String| StoreError::InvalidIndex {
            index: digest.clone(),
            reason,
        };
        if index_bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(reject(format!(
                "it is {} bytes, more than the {MAX_MANIFEST_SIZE} allowed",
                index_bytes.len()
            )));
        }
        let index = config::parse_index(index_bytes)?;
        let mut seen: Vec<Platform> = Vec::new();
        for (i, d) in index.manifests().iter().enumerate() {
            if d.media_type().to_string() != MEDIA_TYPE_MANIFEST {
                return Err(reject(format!(
                    "entry {i} is a {}, not an image manifest",
                    d.media_type()
                )));
            }
            let m = config::descriptor_digest("index", format!("manifests[{i}].digest"), d)?;
            let image = self
                .image_blobs(&m)
                .map_err(|e| reject(format!("entry {i} ({m}) is not a stored image: {e}")))?;
            if image.manifest_size != d.size() {
                return Err(reject(format!(
                    "entry {i} says {} bytes, the stored manifest is {}",
                    d.size(),
                    image.manifest_size
                )));
            }
            let Some(p) = d.platform() else {
                return Err(reject(format!("entry {i} names no platform")));
            };
            let p = platform_of(p);
            if seen.contains(&p) {
                return Err(reject(format!("two entries are for {p}")));
            }
            seen.push(p);
        }
        self.put_blob_bytes(index_bytes, Some(&digest))?;
        Ok(digest)
    }

    /// Stores an image under the tag `tag` beside the other platforms the tag holds, as
    /// `kiln pull --platform` and `kiln image import --platform` do: a tag that names
    /// nothing, or an image of the same platform (or of none), names the new image alone; a
    /// tag that names an image of another platform, or an index, names an index of them all
    /// afterwards, the new image replacing the entry of its platform. The images an index
    /// takes in lose kiln's untagged entries (the index keeps them). `tag` must not be a
    /// digest reference. Concurrent changes of the tag are retried, never lost.
    pub fn put_image_in_tag(
        &self,
        config_bytes: &[u8],
        manifest_bytes: &[u8],
        tag: &Reference,
    ) -> Result<Stored> {
        let _gc = self.gc_shared()?;
        let image = self.put_platform_image(config_bytes, manifest_bytes)?;
        let name = super::images::reference_for_tag(tag, &image.manifest_digest)?;
        if name.digest().is_some() {
            return Err(StoreError::DigestReferenceMismatch {
                reference: name.to_string(),
                manifest: image.manifest_digest.clone(),
            });
        }
        let name = name.to_string();
        for _ in 0..MAX_TAG_RETRIES {
            let before = self
                .read_index()?
                .manifests()
                .iter()
                .find(|e| ref_name(e) == Some(name.as_str()))
                .cloned();
            let (held, doc) = self.held_images(before.as_ref());
            let merged = merge_platform(held, &image);
            let as_index = doc.is_some() || merged.len() > 1;
            let (template, digest, children) = if as_index {
                let bytes = merged_index_bytes(&doc.unwrap_or_default(), &merged)?;
                let digest = self.store_index_blob(&bytes)?;
                let t = config::descriptor(MEDIA_TYPE_INDEX, &digest, bytes.len() as u64);
                let children = merged
                    .iter()
                    .map(|h| h.image.manifest_digest.clone())
                    .collect();
                (t, digest, children)
            } else {
                let digest = image.manifest_digest.clone();
                (platform_descriptor(&image), digest, Vec::new())
            };
            let swapped = self.update_index(|entries| {
                let now = entries.iter().find(|e| ref_name(e) == Some(name.as_str()));
                if now != before.as_ref() {
                    return Ok(false);
                }
                super::images::retag(entries, &template, &name);
                entries
                    .retain(|e| !(is_kiln_untagged(e) && children.iter().any(|c| points_at(e, c))));
                Ok(true)
            })?;
            if swapped {
                tracing::debug!(tag = %name, stored = %digest, "stored image in tag");
                return Ok(if as_index {
                    Stored::Index(Box::new(self.index_record(&digest)?))
                } else {
                    Stored::Image(Box::new(self.image(&digest)?))
                });
            }
        }
        Err(StoreError::Busy {
            root: self.root().to_path_buf(),
        })
    }

    /// The images the `index.json` entry `entry` stands for (one, or an index's with its
    /// entries), and for an index its fields; nothing for no entry or one kiln cannot read.
    fn held_images(&self, entry: Option<&Descriptor>) -> (Vec<Held>, Option<IndexDoc>) {
        let Some(e) = entry else {
            return (Vec::new(), None);
        };
        let Ok(d) = Digest::try_from(e.digest()) else {
            return (Vec::new(), None);
        };
        if !is_index_entry(e) {
            let held = self.image_blobs(&d).iter().map(Held::new).collect();
            return (held, None);
        }
        let Ok(ix) = self.index_blob(&d) else {
            return (Vec::new(), Some(IndexDoc::default()));
        };
        let mut held = Vec::new();
        for (i, d) in ix.index.manifests().iter().enumerate() {
            let Ok(m) = Digest::try_from(d.digest()) else {
                continue;
            };
            if d.platform().is_none() {
                continue;
            }
            match self.image_blobs(&m) {
                Ok(image) => held.push(Held {
                    image,
                    entry: ix.doc.entries.get(i).cloned(),
                }),
                Err(e) => {
                    tracing::warn!(manifest = %m, error = %e, "dropping an unreadable index entry")
                }
            }
        }
        let mut doc = ix.doc;
        doc.entries.clear();
        (held, Some(doc))
    }

    /// The index with digest `digest`, if `index.json` records it.
    pub fn index_record(&self, digest: &Digest) -> Result<IndexRecord> {
        let index = self.read_index()?;
        let entries: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|e| is_index_entry(e) && points_at(e, digest))
            .collect();
        if entries.is_empty() {
            return Err(StoreError::ImageNotFound {
                name: digest.to_string(),
            });
        }
        self.load_index_record(digest, &entries)
    }

    /// Whether the index `index` is named in `index.json` and has an entry for the image
    /// whose manifest is `image`.
    pub(super) fn named_index_holds(&self, index: &Digest, image: &Digest) -> bool {
        self.index_record(index)
            .is_ok_and(|ix| ix.platforms().iter().any(|(_, m)| m == image))
    }

    /// An index by digest from its blob alone (named in `index.json` or not): no names.
    pub fn index_blob(&self, digest: &Digest) -> Result<IndexRecord> {
        self.load_index_record(digest, &[])
    }

    /// Every index `index.json` names (indexes other tools left without a readable blob are
    /// logged and left out).
    pub fn list_indexes(&self) -> Result<Vec<IndexRecord>> {
        let index = self.read_index()?;
        let mut order: Vec<Digest> = Vec::new();
        for e in index.manifests().iter().filter(|e| is_index_entry(e)) {
            if let Ok(d) = Digest::try_from(e.digest()) {
                if !order.contains(&d) {
                    order.push(d);
                }
            }
        }
        let mut out = Vec::new();
        for d in order {
            let entries: Vec<&Descriptor> = index
                .manifests()
                .iter()
                .filter(|e| is_index_entry(e) && points_at(e, &d))
                .collect();
            match self.load_index_record(&d, &entries) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(index = %d, error = %e, "skipping unreadable index"),
            }
        }
        Ok(out)
    }

    fn load_index_record(&self, digest: &Digest, entries: &[&Descriptor]) -> Result<IndexRecord> {
        let bytes = self.read_blob(digest, "index", MAX_MANIFEST_SIZE)?;
        let index = config::parse_index(&bytes)?;
        let doc = IndexDoc::parse(&bytes)?;
        let (references, other_names) = super::images::names_of(entries);
        Ok(IndexRecord {
            digest: digest.clone(),
            size: bytes.len() as u64,
            references,
            other_names,
            index,
            doc,
        })
    }

    /// Finds an index by name (tag, `name@<index digest>`, another tool's name) or by its
    /// digest (`sha256:…`, 64 hex digits, or a unique prefix of 12 or more).
    fn find_index(&self, s: &str) -> Result<Option<IndexRecord>> {
        let indexes = self.list_indexes()?;
        if indexes.is_empty() {
            return Ok(None);
        }
        if let Ok(r) = Reference::parse(s) {
            let found = match r.digest() {
                Some(d) => indexes
                    .iter()
                    .find(|i| i.digest == *d && i.references.iter().any(|n| n.name() == r.name())),
                None => indexes.iter().find(|i| i.references.contains(&r)),
            };
            if let Some(i) = found {
                return Ok(Some(i.clone()));
            }
            // `name@sha256:…` with the registry's index digest, recorded by a pull.
            if let Some(local) = r.digest().and_then(|d| self.repo_digest_target(d)) {
                if let Some(i) = indexes.iter().find(|i| {
                    i.digest == local && i.references.iter().any(|n| n.name() == r.name())
                }) {
                    return Ok(Some(i.clone()));
                }
            }
        }
        if let Some(i) = indexes
            .iter()
            .find(|i| i.other_names.iter().any(|n| n == s))
        {
            return Ok(Some(i.clone()));
        }
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found: Vec<&IndexRecord> = indexes
                .iter()
                .filter(|i| i.digest.hex().starts_with(hex))
                .collect();
            if found.len() == 1 {
                return Ok(Some(found[0].clone()));
            }
        }
        Ok(None)
    }

    /// What `name_or_id` names: an image as [`Store::resolve`] finds it, else an index.
    pub fn resolve_stored(&self, name_or_id: &str) -> Result<Stored> {
        match self.resolve_image_only(name_or_id) {
            Ok(i) => Ok(Stored::Image(Box::new(i))),
            Err(e @ (StoreError::ImageNotFound { .. } | StoreError::Reference(_))) => {
                if let Some(i) = self.find_index(name_or_id)? {
                    return Ok(Stored::Index(Box::new(i)));
                }
                match self.entry_by_index_digest(name_or_id)? {
                    Some(i) => Ok(Stored::Image(Box::new(i))),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `name@<registry's index digest>` when the index that digest was pulled as is not
    /// under `name` (another repository's, or removed since) but one of its images was
    /// pulled alone as `name@…`: that image, the host's platform first. The digest keeps
    /// naming the index while the index is stored ([`Store::record_repo_digest`]).
    fn entry_by_index_digest(&self, s: &str) -> Result<Option<ImageRecord>> {
        let Ok(r) = Reference::parse(s) else {
            return Ok(None);
        };
        let Some(local) = r.digest().and_then(|d| self.repo_digest_target(d)) else {
            return Ok(None);
        };
        let Ok(ix) = self.index_blob(&local) else {
            return Ok(None);
        };
        let mut entries: Vec<Digest> = ix.manifest_for(&Platform::host()).into_iter().collect();
        entries.extend(ix.platforms().into_iter().map(|(_, m)| m));
        let images = self.list_images()?;
        Ok(entries.iter().find_map(|m| {
            images
                .iter()
                .find(|i| {
                    i.manifest_digest == *m && i.references.iter().any(|n| n.name() == r.name())
                })
                .cloned()
        }))
    }

    /// The image `name_or_id` names for `platform`: the image itself (whatever its
    /// platform: the caller checks it), or an index's entry for the platform (the host's
    /// when `None`), which is an error when the index has none.
    pub fn resolve_platform(
        &self,
        name_or_id: &str,
        platform: Option<&Platform>,
    ) -> Result<ImageRecord> {
        match self.resolve_stored(name_or_id)? {
            Stored::Image(i) => Ok(*i),
            Stored::Index(ix) => {
                let wanted = platform.cloned().unwrap_or_else(Platform::host);
                let m = ix
                    .manifest_for(&wanted)
                    .ok_or_else(|| StoreError::NoMatchingPlatform {
                        name: name_or_id.to_owned(),
                        wanted: wanted.to_string(),
                        available: ix.platform_list(),
                    })?;
                let mut rec = self.image_blobs(&m)?;
                // The entry answers to the index's names (what `kiln run` records).
                rec.references = ix.references.clone();
                Ok(rec)
            }
        }
    }

    /// Every image an index in `index.json` names, by manifest digest (no names).
    pub(crate) fn index_images(&self) -> Result<Vec<ImageRecord>> {
        let mut out: Vec<ImageRecord> = Vec::new();
        for ix in self.list_indexes()? {
            for (_, m) in ix.platforms() {
                if out.iter().any(|i| i.manifest_digest == m) {
                    continue;
                }
                match self.image_blobs(&m) {
                    Ok(i) => out.push(i),
                    Err(e) => tracing::warn!(manifest = %m, error = %e, "unreadable index entry"),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{image_bytes, temp_store};

    /// Stores an image for `platform` without an `index.json` entry.
    fn platform_image(store: &Store, platform: &str, label: &str) -> ImageRecord {
        let layer = store.put_blob_bytes(label.as_bytes(), None).unwrap();
        let (config, manifest) = image_bytes(store, &[layer], label);
        let p = Platform::parse(platform).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&config).unwrap();
        v["architecture"] = p.architecture.clone().into();
        if let Some(var) = &p.variant {
            v["variant"] = var.clone().into();
        }
        let config = serde_json::to_vec(&v).unwrap();
        let manifest = String::from_utf8(manifest).unwrap();
        let old: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let mut m = old.clone();
        m["config"]["digest"] = Digest::of_bytes(&config).to_string().into();
        m["config"]["size"] = config.len().into();
        let manifest = config::canonical_json("manifest", &m).unwrap();
        store.put_platform_image(&config, &manifest).unwrap()
    }

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn an_index_under_a_tag_resolves_per_platform_and_survives_gc() {
        let (_dir, store) = temp_store();
        let amd = platform_image(&store, "linux/amd64", "a");
        let arm = platform_image(&store, "linux/arm64", "b");
        let v7 = platform_image(&store, "linux/arm/v7", "c");
        let bytes = index_bytes(&[amd.clone(), arm.clone(), v7.clone()]).unwrap();
        let ix = store.put_index_tagged(&bytes, &[r("app:1")]).unwrap();
        assert_eq!(ix.platforms().len(), 3);
        assert_eq!(ix.platform_list(), "linux/amd64, linux/arm64, linux/arm/v7");
        // Only the index is named; its images are not listed on their own.
        assert!(store.list_images().unwrap().is_empty());
        assert_eq!(store.list_indexes().unwrap(), vec![ix.clone()]);
        let p = |s: &str| Platform::parse(s).unwrap();
        let pick = |s: &str| {
            store
                .resolve_platform("app:1", Some(&p(s)))
                .map(|i| i.manifest_digest)
        };
        assert_eq!(pick("linux/arm64").unwrap(), arm.manifest_digest);
        assert_eq!(pick("linux/arm").unwrap(), v7.manifest_digest);
        assert!(matches!(
            pick("linux/s390x"),
            Err(StoreError::NoMatchingPlatform { .. })
        ));
        assert!(matches!(
            store.resolve_stored("app:1").unwrap(),
            Stored::Index(_)
        ));
        // By the index digest, and an entry by its image ID.
        assert!(matches!(
            store.resolve_stored(ix.digest.as_str()).unwrap(),
            Stored::Index(_)
        ));
        assert_eq!(store.resolve(arm.id.as_str()).unwrap().id, arm.id);
        // The images stay through gc while the index is named, and go once it is not.
        store.gc().unwrap();
        for i in [&amd, &arm, &v7] {
            assert!(store.has_blob(&i.manifest_digest) && store.has_blob(&i.id));
        }
        store.tag(&r("app:2"), &ix.digest).unwrap();
        store.untag(&r("app:1")).unwrap();
        assert_eq!(store.list_indexes().unwrap().len(), 1);
        store.untag(&r("app:2")).unwrap();
        assert!(
            store.list_indexes().unwrap().is_empty(),
            "no dangling index"
        );
        assert!(store.read_index().unwrap().manifests().is_empty());
        store.gc().unwrap();
        assert!(!store.has_blob(&arm.manifest_digest));
    }

    #[test]
    fn an_index_of_missing_or_duplicate_platforms_is_refused() {
        let (_dir, store) = temp_store();
        let a = platform_image(&store, "linux/arm64", "a");
        let b = platform_image(&store, "linux/arm64/v8", "b");
        let bytes = index_bytes(&[a.clone(), b]).unwrap();
        let err = store.put_index_tagged(&bytes, &[r("x:1")]).unwrap_err();
        assert!(err.to_string().contains("two entries"), "{err}");
        let mut missing = a.clone();
        missing.manifest_digest = Digest::of_bytes(b"nothing");
        let bytes = index_bytes(&[missing]).unwrap();
        let err = store.put_index_tagged(&bytes, &[r("x:1")]).unwrap_err();
        assert!(err.to_string().contains("not a stored image"), "{err}");
        assert!(store.read_index().unwrap().manifests().is_empty());
    }

    /// Regression: a platform pulled or imported into a tag rebuilt the tag's index from the
    /// images' configs, dropping what the stored entries had beyond that (a pulled index's
    /// annotations, `os.version`, `os.features`) and the index's own annotations.
    #[test]
    fn a_platform_put_into_a_tag_keeps_the_other_entries_as_stored() {
        let (_dir, store) = temp_store();
        let arm = platform_image(&store, "linux/arm64", "a");
        let amd = platform_image(&store, "linux/amd64", "b");
        let amd2 = platform_image(&store, "linux/amd64", "c");
        let mut entries: Vec<serde_json::Value> = [&arm, &amd]
            .iter()
            .map(|i| serde_json::to_value(platform_descriptor(i)).unwrap())
            .collect();
        entries[0]["annotations"] = serde_json::json!({"com.example.role": "edge"});
        entries[0]["platform"]["os.features"] = serde_json::json!(["f"]);
        entries[1]["annotations"] = serde_json::json!({"com.example.role": "server"});
        let doc = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
            "annotations": {"com.example.index": "1"}, "manifests": entries});
        let bytes = config::canonical_json("index", &doc).unwrap();
        let ix = store.put_index_tagged(&bytes, &[r("app:1")]).unwrap();
        let put = |i: &ImageRecord| {
            let c = store.read_blob(&i.id, "config", 1 << 20).unwrap();
            let m = store
                .read_blob(&i.manifest_digest, "manifest", 1 << 20)
                .unwrap();
            match store.put_image_in_tag(&c, &m, &r("app:1")).unwrap() {
                Stored::Index(ix) => ix,
                Stored::Image(_) => panic!("no index"),
            }
        };
        // The image an entry names already: the index as it was.
        assert_eq!(put(&amd).digest, ix.digest);
        // Another image of a platform: a new entry for it, the other one and the index's
        // own fields as stored.
        let ix2 = put(&amd2);
        assert_eq!(ix2.doc.entries[0], ix.doc.entries[0]);
        assert_eq!(ix2.doc.other, ix.doc.other);
        assert_eq!(ix2.doc.digest(1).unwrap(), amd2.manifest_digest);
        assert!(!ix2.doc.entries[1].contains_key("annotations"));
        let stored = store.read_blob(&ix2.digest, "index", 1 << 20).unwrap();
        assert_eq!(IndexDoc::parse(&stored).unwrap(), ix2.doc);
    }

    /// Regression: a platform pulled alone by a registry's index digest took over the
    /// record of that digest, so `name@<index digest>` named one image, not the index.
    #[test]
    fn a_registry_index_digest_keeps_naming_the_stored_index() {
        let (_dir, store) = temp_store();
        let amd = platform_image(&store, "linux/amd64", "a");
        let arm = platform_image(&store, "linux/arm64", "b");
        let bytes = index_bytes(&[amd.clone(), arm.clone()]).unwrap();
        let ix = store
            .put_index_tagged(&bytes, &[r("reg.example/app:1")])
            .unwrap();
        let remote = Digest::of_bytes(b"the registry's index");
        store.record_repo_digest(&remote, &ix.digest).unwrap();
        // The amd64 image pulled alone by that digest, here and in another repository.
        let c = store.read_blob(&amd.id, "config", 1 << 20).unwrap();
        let m = store
            .read_blob(&amd.manifest_digest, "manifest", 1 << 20)
            .unwrap();
        for repo in ["reg.example/app", "reg.example/other"] {
            let name = r(&format!("{repo}@{}", amd.manifest_digest));
            store.put_image_tagged(&c, &m, &[name]).unwrap();
        }
        store
            .record_repo_digest(&remote, &amd.manifest_digest)
            .unwrap();
        assert_eq!(store.repo_digest_target(&remote), Some(ix.digest.clone()));
        assert!(matches!(
            store.resolve_stored(&format!("reg.example/app@{remote}")).unwrap(),
            Stored::Index(i) if i.digest == ix.digest
        ));
        // Where the index has no name, the digest finds the image pulled alone there.
        let other = store
            .resolve(&format!("reg.example/other@{remote}"))
            .unwrap();
        assert_eq!(other.manifest_digest, amd.manifest_digest);
        // An image the index does not hold, or any once the index is gone, is recorded.
        let v2 = platform_image(&store, "linux/amd64", "v2");
        store
            .record_repo_digest(&remote, &v2.manifest_digest)
            .unwrap();
        assert_eq!(store.repo_digest_target(&remote), Some(v2.manifest_digest));
        store.record_repo_digest(&remote, &ix.digest).unwrap();
        store.untag(&r("reg.example/app:1")).unwrap();
        store
            .record_repo_digest(&remote, &amd.manifest_digest)
            .unwrap();
        assert_eq!(store.repo_digest_target(&remote), Some(amd.manifest_digest));
    }

    #[test]
    fn images_of_other_platforms_pulled_into_one_tag_make_an_index() {
        let (_dir, store) = temp_store();
        let arm = platform_image(&store, "linux/arm64", "a");
        let amd = platform_image(&store, "linux/amd64", "b");
        let amd2 = platform_image(&store, "linux/amd64", "c");
        let bytes = |i: &ImageRecord| {
            (
                store.read_blob(&i.id, "config", 1 << 20).unwrap(),
                store
                    .read_blob(&i.manifest_digest, "manifest", 1 << 20)
                    .unwrap(),
            )
        };
        let put = |i: &ImageRecord, tag: &str| {
            let (c, m) = bytes(i);
            store.put_image_in_tag(&c, &m, &r(tag)).unwrap()
        };
        // Nothing under the tag, then the same platform again: one image.
        assert!(matches!(put(&arm, "app:1"), Stored::Image(_)));
        assert!(matches!(put(&arm, "app:1"), Stored::Image(_)));
        // Another platform: an index of both, and the first image is not left dangling.
        let Stored::Index(ix) = put(&amd, "app:1") else {
            panic!("no index")
        };
        assert_eq!(ix.platform_list(), "linux/arm64, linux/amd64");
        assert_eq!(ix.references, vec![r("app:1")]);
        assert!(store.list_images().unwrap().is_empty(), "no dangling image");
        // The same platform again replaces its entry; the index stays one per platform.
        let Stored::Index(ix2) = put(&amd2, "app:1") else {
            panic!("no index")
        };
        assert_eq!(
            ix2.platforms()
                .iter()
                .map(|(_, m)| m.clone())
                .collect::<Vec<_>>(),
            vec![arm.manifest_digest.clone(), amd2.manifest_digest.clone()]
        );
        assert_eq!(store.list_indexes().unwrap().len(), 1);
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            store.resolve_platform("app:1", Some(&p)).unwrap().id,
            amd2.id
        );
        // A tag naming one image becomes an index too; the image is not left dangling.
        let (c, m) = bytes(&arm);
        store.put_image_tagged(&c, &m, &[r("arm:1")]).unwrap();
        put(&amd, "arm:1");
        let images = store.list_images().unwrap();
        assert!(images.is_empty(), "{images:?}");
        assert_eq!(store.list_indexes().unwrap().len(), 2);
        // gc keeps every entry while the indexes name them.
        store.gc().unwrap();
        for i in [&arm, &amd, &amd2] {
            assert!(store.has_blob(&i.manifest_digest), "{}", i.manifest_digest);
        }
        assert!(store.check().unwrap().is_empty());
    }
}
