//! `kiln image load`: image archives into the store, every blob verified.
//!
//! Accepted, plain or gzip/zstd compressed as a whole:
//!
//! * **docker-archive** (`manifest.json` listing `Config`, `RepoTags`,
//!   `Layers`): what `docker save` writes (the legacy `<id>/layer.tar`
//!   layout of Docker before 25, symlinked duplicate layers included, and
//!   the `blobs/sha256/…` paths of Docker 25 and later), `podman save
//!   --format docker-archive` and `skopeo copy … docker-archive:`;
//! * **OCI archive** (an OCI image layout: `oci-layout`, `index.json`,
//!   `blobs/sha256/…`): `podman save --format oci-archive`, `skopeo copy …
//!   oci-archive:`, and what `kiln image save` writes. When an archive has
//!   both (Docker 25+, kiln), `manifest.json` is used, as `docker load` does.
//!
//! The archive is hostile input. It is read once, as a stream: entry names
//! are only keys (a `../x` name cannot reach the disk), JSON documents are
//! kept in memory within [`LoadLimits`], and anything that looks like a layer
//! (a tar, gzip or zstd stream) is decompressed straight into the store as
//! an uncompressed blob while its raw bytes are hashed. Nothing becomes an
//! image until every check passed: configs and manifests hash to the
//! digests that name them, layers to their descriptors' digests and sizes,
//! and every uncompressed layer to its config's diffID. Layers of a failed
//! load stay as unreferenced blobs until the next garbage collection
//! (`kiln image prune`, `kiln rmi`).
//!
//! Images get kiln's own manifest (uncompressed layers, the store's rule),
//! so their image ID, the config digest, is kept but the manifest digest
//! may differ from the archive's.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::rc::Rc;

use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::error::{ImageOpsError, Result};
use super::tarscan::{self, Kind, ScanLimits};
use crate::archive::ArchiveError;
use crate::common::platform::Platform;
use crate::image::config::{self, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER};
use crate::image::{Digest, Reference};
use crate::store::{ImageRecord, Store, StoreError};

/// Limits on an archive being loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Bytes of the archive's tar stream (after decompressing the whole).
    pub max_archive_size: u64,
    /// Entries in the archive.
    pub max_entries: u64,
    /// Bytes of one PAX header or GNU long name.
    pub max_header_size: u64,
    /// Bytes of one JSON document (manifest, index, config) kept in memory.
    pub max_document_size: u64,
    /// Bytes of all documents kept in memory.
    pub max_documents_total: u64,
    /// Uncompressed bytes of one layer.
    pub max_layer_size: u64,
    /// Uncompressed bytes per compressed byte of a layer, checked once
    /// `ratio_check_after` bytes came out (gzip cannot exceed about 1032:1;
    /// zstd can, which is what this catches early).
    pub max_compression_ratio: u64,
    /// Uncompressed bytes of a layer before its ratio is checked.
    pub ratio_check_after: u64,
    /// Images in one archive.
    pub max_images: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_archive_size: 64 << 30,
            max_entries: 1_000_000,
            max_header_size: 1 << 20,
            max_document_size: 32 << 20,
            max_documents_total: 256 << 20,
            max_layer_size: 64 << 30,
            max_compression_ratio: 1000,
            ratio_check_after: 64 << 20,
            max_images: 10_000,
        }
    }
}

/// One image the archive held, now in the store.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The image.
    pub image: ImageRecord,
    /// The names the archive gave it.
    pub tags: Vec<Reference>,
    /// Names that moved to this image from another: (name, old image ID).
    pub replaced: Vec<(Reference, Digest)>,
}

fn bad(reason: impl Into<String>) -> ImageOpsError {
    ImageOpsError::InvalidArchive {
        reason: reason.into(),
    }
}

/// A read error of the archive stream: what the tar parser refused comes back as itself.
fn read_err(e: io::Error) -> ImageOpsError {
    if e.get_ref().is_some_and(|inner| inner.is::<ArchiveError>()) {
        if let Some(Ok(source)) = e.into_inner().map(|i| i.downcast::<ArchiveError>()) {
            return ImageOpsError::InvalidTar { source: *source };
        }
        return bad("cannot read the tar stream");
    }
    ImageOpsError::ArchiveRead { source: e }
}

// ---------------------------------------------------------------------------
// Reading the archive.

/// What a regular file in the archive turned out to be.
#[derive(Debug, Clone)]
enum Content {
    /// A small document, kept as read.
    Memory(Vec<u8>),
    /// A layer, decompressed into the store.
    Layer {
        raw: Digest,
        raw_size: u64,
        stored: Digest,
        stored_size: u64,
    },
    /// Not kept: neither a layer nor a document within the limits.
    Skipped { size: u64, why: &'static str },
    /// Looked like a layer but could not be read as one.
    Broken(String),
}

#[derive(Debug, Clone)]
enum Item {
    File(Content),
    Link(Option<String>),
    Dir,
    Other,
}

/// The archive's entries by normalised name.
#[derive(Default)]
struct Entries {
    items: HashMap<String, Item>,
    memory: u64,
}

/// Normalises an archive name (or a link target, relative to `base`):
/// `./a//b/` → `a/b`; `..` is resolved lexically, and one that climbs above
/// the archive root makes the name invalid. Names are only keys here, never
/// paths on the host.
fn normalize(base: &str, name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    let mut parts: Vec<&str> = if name.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|c| !c.is_empty()).collect()
    };
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn parent(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(p, _)| p)
}

impl Entries {
    /// Follows links from `name` to a regular file: its final name and content.
    fn file(&self, name: &str) -> Result<(String, &Content)> {
        let mut current = normalize("", name.as_bytes())
            .ok_or_else(|| bad(format!("{name:?} is not a valid path in the archive")))?;
        for _ in 0..16 {
            match self.items.get(&current) {
                Some(Item::File(c)) => return Ok((current, c)),
                Some(Item::Link(Some(t))) => current = t.clone(),
                Some(Item::Link(None)) => {
                    return Err(bad(format!("{name} is a link that leaves the archive")))
                }
                Some(Item::Dir) | Some(Item::Other) => {
                    return Err(bad(format!("{name} is not a regular file")))
                }
                None => return Err(bad(format!("{name} is missing from the archive"))),
            }
        }
        Err(bad(format!("{name}: too many levels of links")))
    }

    fn has_file(&self, name: &str) -> bool {
        self.file(name).is_ok()
    }

    /// A JSON document's bytes.
    fn document(&self, name: &str, what: &str) -> Result<&[u8]> {
        match self.file(name)? {
            (_, Content::Memory(bytes)) => Ok(bytes),
            (_, Content::Skipped { size, why }) => Err(bad(format!(
                "{what} {name} ({size} bytes) was not kept: {why}"
            ))),
            (_, Content::Layer { .. }) | (_, Content::Broken(_)) => {
                Err(bad(format!("{what} {name} is not a JSON document")))
            }
        }
    }

    /// A layer: (final name, raw digest, raw size, uncompressed digest, uncompressed size).
    fn layer(&self, name: &str) -> Result<(String, Digest, u64, Digest, u64)> {
        match self.file(name)? {
            (
                n,
                Content::Layer {
                    raw,
                    raw_size,
                    stored,
                    stored_size,
                },
            ) => Ok((n, raw.clone(), *raw_size, stored.clone(), *stored_size)),
            (_, Content::Broken(why)) => Err(bad(format!("layer {name} cannot be read: {why}"))),
            (_, Content::Memory(_)) | (_, Content::Skipped { .. }) => Err(bad(format!(
                "layer {name} is not a tar, gzip or zstd stream"
            ))),
        }
    }
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    Gzip,
    Zstd,
    Tar,
    Bzip2,
    Xz,
    Other,
}

fn sniff(head: &[u8]) -> Sniff {
    use crate::archive::Compression as C;
    match C::detect(head) {
        C::Gzip => Sniff::Gzip,
        C::Zstd => Sniff::Zstd,
        C::Bzip2 => Sniff::Bzip2,
        C::Xz => Sniff::Xz,
        C::None if head.len() == 512 && is_tar_header(head) => Sniff::Tar,
        C::None => Sniff::Other,
    }
}

/// A zero block (an empty tar) or a header whose checksum is right.
fn is_tar_header(h: &[u8]) -> bool {
    h.iter().all(|&b| b == 0) || crate::archive::is_tar_header(h)
}

/// Hashes and counts the raw bytes of a layer as the decompressor pulls them.
struct RawTee<R> {
    inner: R,
    hasher: Sha256,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for RawTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Why reading a layer stopped, when it did.
#[derive(Default)]
struct Stop {
    limit: Option<String>,
    decode: Option<String>,
}

/// The decompressed layer stream: bounded in size and ratio, and telling
/// decompression failures apart from the store's own.
struct Guard<'a> {
    inner: Box<dyn Read + 'a>,
    produced: u64,
    raw: Rc<Cell<u64>>,
    limits: &'a LoadLimits,
    stop: Rc<RefCell<Stop>>,
}

impl Read for Guard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.stop.borrow_mut().decode = Some(e.to_string());
                return Err(e);
            }
        };
        self.produced += n as u64;
        let over = if self.produced > self.limits.max_layer_size {
            Some(format!(
                "a layer is larger than the {} bytes allowed uncompressed",
                self.limits.max_layer_size
            ))
        } else if self.produced > self.limits.ratio_check_after
            && self.produced / self.raw.get().max(1) > self.limits.max_compression_ratio
        {
            Some(format!(
                "a layer decompresses more than {} times its size",
                self.limits.max_compression_ratio
            ))
        } else {
            None
        };
        if let Some(msg) = over {
            self.stop.borrow_mut().limit = Some(msg.clone());
            return Err(io::Error::other(msg));
        }
        Ok(n)
    }
}

/// Decompresses a layer-looking file into the store.
fn store_layer(
    store: &Store,
    head: Vec<u8>,
    rest: &mut dyn Read,
    kind: Sniff,
    limits: &LoadLimits,
) -> Result<Content> {
    let count = Rc::new(Cell::new(0));
    let mut raw = RawTee {
        inner: io::Cursor::new(head).chain(rest),
        hasher: Sha256::new(),
        count: Rc::clone(&count),
    };
    let stop = Rc::new(RefCell::new(Stop::default()));
    let put = {
        let inner: Box<dyn Read + '_> = match kind {
            Sniff::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut raw)),
            Sniff::Zstd => match zstd::stream::read::Decoder::new(&mut raw) {
                Ok(d) => Box::new(d),
                Err(e) => return Ok(Content::Broken(format!("zstd: {e}"))),
            },
            _ => Box::new(&mut raw),
        };
        let mut guard = Guard {
            inner,
            produced: 0,
            raw: Rc::clone(&count),
            limits,
            stop: Rc::clone(&stop),
        };
        let put = store.put_blob(&mut guard, None);
        put.map(|d| (d, guard.produced))
    };
    let stop = std::mem::take(&mut *stop.borrow_mut());
    match put {
        Ok((stored, stored_size)) => {
            // The decompressor may stop before the end (trailing bytes):
            // the raw digest covers the whole file.
            io::copy(&mut raw, &mut io::sink()).map_err(read_err)?;
            Ok(Content::Layer {
                raw: Digest::from_hasher(raw.hasher),
                raw_size: count.get(),
                stored,
                stored_size,
            })
        }
        Err(_) if stop.limit.is_some() => Err(bad(stop.limit.unwrap_or_default())),
        Err(_) if stop.decode.is_some() => Ok(Content::Broken(stop.decode.unwrap_or_default())),
        Err(e) => Err(e.into()),
    }
}

/// Reads one regular file of the archive.
fn read_file(
    store: &Store,
    data: &mut dyn Read,
    size: u64,
    entries: &mut Entries,
    limits: &LoadLimits,
) -> Result<Content> {
    let mut head = Vec::with_capacity(512);
    data.take(512).read_to_end(&mut head).map_err(read_err)?;
    match sniff(&head) {
        k @ (Sniff::Gzip | Sniff::Zstd | Sniff::Tar) => store_layer(store, head, data, k, limits),
        Sniff::Bzip2 => Ok(Content::Broken(
            "bzip2-compressed layers are not supported".into(),
        )),
        Sniff::Xz => Ok(Content::Broken(
            "xz-compressed layers are not supported".into(),
        )),
        Sniff::Other => {
            if size > limits.max_document_size {
                return Ok(Content::Skipped {
                    size,
                    why: "too large for a JSON document and not a layer",
                });
            }
            if entries.memory + size > limits.max_documents_total {
                return Ok(Content::Skipped {
                    size,
                    why: "the archive's documents exceed the memory limit",
                });
            }
            let mut bytes = head;
            data.read_to_end(&mut bytes).map_err(read_err)?;
            entries.memory += bytes.len() as u64;
            Ok(Content::Memory(bytes))
        }
    }
}

/// Opens the archive stream, decompressing a gzip or zstd archive.
fn open_archive<'a, R: Read + 'a>(reader: R) -> Result<Box<dyn Read + 'a>> {
    let mut reader = io::BufReader::new(reader);
    let head = io::BufRead::fill_buf(&mut reader)
        .map_err(read_err)?
        .to_vec();
    if head.is_empty() {
        return Err(bad("the archive is empty"));
    }
    Ok(match sniff(&head) {
        Sniff::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Sniff::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(
            |source| ImageOpsError::ArchiveDecompress {
                compression: "zstd",
                source,
            },
        )?),
        Sniff::Bzip2 => {
            return Err(bad(
                "bzip2-compressed archives are not supported: decompress it first",
            ))
        }
        Sniff::Xz => {
            return Err(bad(
                "xz-compressed archives are not supported: decompress it first",
            ))
        }
        _ => Box::new(reader),
    })
}

fn read_archive<R: Read>(store: &Store, reader: R, limits: &LoadLimits) -> Result<Entries> {
    let mut entries = Entries::default();
    let scan_limits = ScanLimits {
        max_size: limits.max_archive_size,
        max_entries: limits.max_entries,
        max_header_size: limits.max_header_size,
    };
    tarscan::scan(open_archive(reader)?, &scan_limits, |e, data| {
        let Some(name) = normalize("", &e.name) else {
            tracing::debug!(name = %String::from_utf8_lossy(&e.name), "ignoring an entry with an invalid name");
            return Ok(());
        };
        let item = match &e.kind {
            Kind::File(size) => Item::File(read_file(store, data, *size, &mut entries, limits)?),
            Kind::Symlink(t) => Item::Link(normalize(parent(&name), t)),
            Kind::Hardlink(t) => Item::Link(normalize("", t)),
            Kind::Dir => Item::Dir,
            Kind::Other(_) => Item::Other,
        };
        entries.items.insert(name, item);
        Ok(())
    })?;
    Ok(entries)
}

// ---------------------------------------------------------------------------
// Interpreting it.

/// Uncompressed layers: (diffID, size), bottom first.
type Layers = Vec<(Digest, u64)>;

/// An image checked and ready to record.
struct Prepared {
    config: Vec<u8>,
    layers: Layers,
    tags: Vec<Reference>,
}

/// If `name` is named by a digest (`blobs/sha256/<hex>`, `<hex>.json`,
/// `<hex>.tar`), that digest.
fn digest_in_name(name: &str) -> Option<Digest> {
    let (dir, base) = name.rsplit_once('/').unwrap_or(("", name));
    if dir == "blobs/sha256" || dir.ends_with("/blobs/sha256") {
        return Digest::from_sha256_hex(base).ok();
    }
    let stem = base
        .strip_suffix(".json")
        .or_else(|| base.strip_suffix(".tar"))?;
    Digest::from_sha256_hex(stem).ok()
}

/// Reads a config, checking it against the digest its name or descriptor gives.
fn read_config(entries: &Entries, path: &str, want: Option<&Digest>) -> Result<Vec<u8>> {
    let (final_name, _) = entries.file(path)?;
    let bytes = entries.document(path, "config")?.to_vec();
    let id = config::image_id(&bytes);
    for expected in want.into_iter().cloned().chain(digest_in_name(&final_name)) {
        if expected != id {
            return Err(bad(format!(
                "config {path} does not match its digest: expected {expected}, got {id}"
            )));
        }
    }
    config::parse_config(&bytes)?;
    Ok(bytes)
}

/// Checks one layer against its config's diffID (and its descriptor).
fn check_layer(
    entries: &Entries,
    path: &str,
    index: usize,
    diff_id: &Digest,
    descriptor: Option<(&Digest, u64)>,
) -> Result<(Digest, u64)> {
    let (final_name, raw, raw_size, stored, stored_size) = entries.layer(path)?;
    if let Some(named) = digest_in_name(&final_name) {
        if named != raw {
            return Err(bad(format!(
                "layer {path} does not match its digest: expected {named}, got {raw}"
            )));
        }
    }
    if let Some((digest, size)) = descriptor {
        if *digest != raw {
            return Err(bad(format!(
                "layer {path} does not match its descriptor: expected {digest}, got {raw}"
            )));
        }
        if size != raw_size {
            return Err(bad(format!(
                "layer {path} is {raw_size} bytes, its descriptor says {size}"
            )));
        }
    }
    if stored != *diff_id {
        return Err(bad(format!(
            "layer {index} ({path}) uncompressed is {stored}, but the config's diffID {index} is {diff_id}"
        )));
    }
    Ok((stored, stored_size))
}

fn diff_ids_of(config_bytes: &[u8]) -> Result<Vec<Digest>> {
    let parsed = config::parse_config(config_bytes)?;
    Ok(config::diff_ids(&parsed)?)
}

/// A name from an archive: a full reference with a tag (`busybox:latest`,
/// `localhost/app:1`). A bare tag (`latest`, as Docker writes in
/// `org.opencontainers.image.ref.name`) names no repository and is skipped.
fn archive_name(name: &str) -> Option<Reference> {
    let r = Reference::parse_normalized_named(name).ok()?;
    (r.tag().is_some() && r.digest().is_none()).then_some(r)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn docker_archive(entries: &Entries, limits: &LoadLimits) -> Result<Vec<Prepared>> {
    let bytes = entries.document("manifest.json", "manifest.json")?;
    let items: Vec<DockerArchiveItem> =
        serde_json::from_slice(bytes).map_err(|source| ImageOpsError::Json {
            what: "manifest.json",
            source,
        })?;
    if items.len() > limits.max_images {
        return Err(bad(format!("more than {} images", limits.max_images)));
    }
    let mut out = Vec::new();
    for item in items {
        let config = read_config(entries, &item.config, None)?;
        let diff_ids = diff_ids_of(&config)?;
        if diff_ids.len() != item.layers.len() {
            return Err(bad(format!(
                "config {} lists {} diffIDs but manifest.json lists {} layers",
                item.config,
                diff_ids.len(),
                item.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (i, (path, diff_id)) in item.layers.iter().zip(&diff_ids).enumerate() {
            layers.push(check_layer(entries, path, i, diff_id, None)?);
        }
        let mut tags = Vec::new();
        for t in item.repo_tags.unwrap_or_default() {
            let r = Reference::parse_normalized_named(&t)?;
            if r.digest().is_some() {
                return Err(bad(format!("RepoTags entry {t} is not a tag")));
            }
            tags.push(r.with_default_tag());
        }
        out.push(Prepared {
            config,
            layers,
            tags,
        });
    }
    Ok(out)
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct ForeignPlatform {
    architecture: String,
    os: String,
    variant: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct ForeignDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Option<Vec<String>>,
    platform: Option<ForeignPlatform>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl ForeignDescriptor {
    fn digest(&self, what: &str) -> Result<Digest> {
        Digest::parse(&self.digest).map_err(|source| ImageOpsError::ArchiveDigest {
            what: what.to_owned(),
            source,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForeignIndex {
    schema_version: u32,
    media_type: Option<String>,
    manifests: Vec<ForeignDescriptor>,
    layers: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForeignManifest {
    schema_version: u32,
    media_type: Option<String>,
    config: ForeignDescriptor,
    #[serde(default)]
    layers: Vec<ForeignDescriptor>,
    manifests: Option<IgnoredAny>,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

fn is_layer_type(t: &str) -> bool {
    matches!(
        t,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// A document blob of an OCI layout, checked against its descriptor.
fn layout_blob<'e>(entries: &'e Entries, desc: &ForeignDescriptor, what: &str) -> Result<&'e [u8]> {
    let d = desc.digest(what)?;
    let bytes = entries.document(&blob_path(&d), what)?;
    let actual = Digest::of_bytes(bytes);
    if actual != d {
        return Err(bad(format!(
            "{what} {d} does not match its digest (got {actual})"
        )));
    }
    if bytes.len() as u64 != desc.size {
        return Err(bad(format!(
            "{what} {d} is {} bytes, its descriptor says {}",
            bytes.len(),
            desc.size
        )));
    }
    Ok(bytes)
}

/// The image manifests a top-level `index.json` entry stands for: itself,
/// or the one of a nested index present in the archive (the host's
/// platform if several are).
fn manifests_of(
    entries: &Entries,
    desc: &ForeignDescriptor,
    depth: usize,
) -> Result<Vec<ForeignDescriptor>> {
    match desc.media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(vec![desc.clone()]),
        OCI_INDEX | DOCKER_LIST => {
            if depth >= 4 {
                return Err(bad("indexes nested too deep"));
            }
            let bytes = layout_blob(entries, desc, "index")?;
            let index = parse_foreign_index(bytes)?;
            let present: Vec<&ForeignDescriptor> = index
                .manifests
                .iter()
                .filter(|m| {
                    m.digest("index entry")
                        .is_ok_and(|d| entries.has_file(&blob_path(&d)))
                })
                .collect();
            let chosen: Vec<&ForeignDescriptor> = if present.len() > 1 {
                let host = Platform::host();
                present
                    .into_iter()
                    .filter(|m| {
                        m.platform.as_ref().is_some_and(|p| {
                            host.matches(&p.os, &p.architecture, p.variant.as_deref())
                        })
                    })
                    .take(1)
                    .collect()
            } else {
                present
            };
            let mut out = Vec::new();
            for m in chosen {
                out.extend(manifests_of(entries, m, depth + 1)?);
            }
            Ok(out)
        }
        other => {
            tracing::debug!(
                media_type = other,
                "skipping a non-image entry of index.json"
            );
            Ok(Vec::new())
        }
    }
}

fn parse_foreign_index(bytes: &[u8]) -> Result<ForeignIndex> {
    let index: ForeignIndex =
        serde_json::from_slice(bytes).map_err(|source| ImageOpsError::Json {
            what: "image index",
            source,
        })?;
    if index.schema_version != 2 {
        return Err(bad(format!(
            "index schemaVersion is {}, expected 2",
            index.schema_version
        )));
    }
    if index.layers.is_some() || index.config.is_some() {
        return Err(bad(
            "an index has layers or a config, which belong to a manifest",
        ));
    }
    if let Some(t) = &index.media_type {
        if t != OCI_INDEX && t != DOCKER_LIST {
            return Err(bad(format!("index has media type {t}")));
        }
    }
    Ok(index)
}

fn oci_image(entries: &Entries, desc: &ForeignDescriptor) -> Result<(Vec<u8>, Layers)> {
    let bytes = layout_blob(entries, desc, "manifest")?;
    let m: ForeignManifest =
        serde_json::from_slice(bytes).map_err(|source| ImageOpsError::Json {
            what: "image manifest",
            source,
        })?;
    if m.schema_version != 2 {
        return Err(bad(format!(
            "manifest schemaVersion is {}, expected 2",
            m.schema_version
        )));
    }
    if m.manifests.is_some() {
        return Err(bad(
            "a manifest has a manifests list, which belongs to an index",
        ));
    }
    if let Some(t) = &m.media_type {
        if t != &desc.media_type {
            return Err(bad(format!(
                "manifest has media type {t}, its descriptor says {}",
                desc.media_type
            )));
        }
    }
    if !matches!(
        m.config.media_type.as_str(),
        MEDIA_TYPE_CONFIG | DOCKER_CONFIG
    ) {
        return Err(bad(format!(
            "manifest's config has media type {}, not an image config",
            m.config.media_type
        )));
    }
    let config_digest = m.config.digest("config")?;
    let config = read_config(entries, &blob_path(&config_digest), Some(&config_digest))?;
    if config.len() as u64 != m.config.size {
        return Err(bad(format!(
            "config {config_digest} is {} bytes, its descriptor says {}",
            config.len(),
            m.config.size
        )));
    }
    let diff_ids = diff_ids_of(&config)?;
    if diff_ids.len() != m.layers.len() {
        return Err(bad(format!(
            "config {config_digest} lists {} diffIDs but its manifest lists {} layers",
            diff_ids.len(),
            m.layers.len()
        )));
    }
    let mut layers = Vec::new();
    for (i, (l, diff_id)) in m.layers.iter().zip(&diff_ids).enumerate() {
        if !is_layer_type(&l.media_type) {
            return Err(bad(format!(
                "layer {i} has media type {}, not an image layer",
                l.media_type
            )));
        }
        let d = l.digest("layer")?;
        if l.urls.as_ref().is_some_and(|u| !u.is_empty()) && !entries.has_file(&blob_path(&d)) {
            return Err(bad(format!(
                "layer {i} ({d}) is a foreign layer that the archive does not include"
            )));
        }
        layers.push(check_layer(
            entries,
            &blob_path(&d),
            i,
            diff_id,
            Some((&d, l.size)),
        )?);
    }
    Ok((config, layers))
}

fn oci_archive(entries: &Entries, limits: &LoadLimits) -> Result<Vec<Prepared>> {
    if let Ok(layout) = entries.document("oci-layout", "oci-layout") {
        #[derive(Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let l: Layout = serde_json::from_slice(layout).map_err(|source| ImageOpsError::Json {
            what: "oci-layout",
            source,
        })?;
        if l.version != "1.0.0" {
            return Err(bad(format!(
                "OCI layout version {:?} is not supported: expected \"1.0.0\"",
                l.version
            )));
        }
    }
    let index = parse_foreign_index(entries.document("index.json", "index.json")?)?;
    let mut by_manifest: Vec<(Digest, Prepared)> = Vec::new();
    for top in &index.manifests {
        let names: Vec<Reference> = top
            .annotations
            .iter()
            .flat_map(|a| {
                a.get("io.containerd.image.name")
                    .and_then(|n| archive_name(n))
                    .or_else(|| {
                        a.get(oci_spec::image::ANNOTATION_REF_NAME)
                            .and_then(|n| archive_name(n))
                    })
            })
            .collect();
        for desc in manifests_of(entries, top, 0)? {
            let d = desc.digest("manifest")?;
            if let Some((_, p)) = by_manifest.iter_mut().find(|(m, _)| *m == d) {
                p.tags.extend(names.iter().cloned());
                continue;
            }
            if by_manifest.len() >= limits.max_images {
                return Err(bad(format!("more than {} images", limits.max_images)));
            }
            let (config, layers) = oci_image(entries, &desc)?;
            by_manifest.push((
                d,
                Prepared {
                    config,
                    layers,
                    tags: names.clone(),
                },
            ));
        }
    }
    Ok(by_manifest.into_iter().map(|(_, p)| p).collect())
}

/// Loads every image of the archive `reader` into the store; see the
/// module documentation for the formats and checks.
pub fn load<R: Read>(store: &Store, reader: R, limits: &LoadLimits) -> Result<Vec<LoadedImage>> {
    // Layers go into the store before any image references them.
    let _lease = store.lease()?;
    let entries = read_archive(store, reader, limits)?;
    let prepared = if entries.has_file("manifest.json") {
        docker_archive(&entries, limits)?
    } else if entries.has_file("index.json") {
        oci_archive(&entries, limits)?
    } else if entries.has_file("repositories") {
        return Err(bad(
            "it has no manifest.json: archives from Docker before 1.10 are not supported",
        ));
    } else {
        return Err(bad(
            "it has neither manifest.json (docker-archive) nor index.json (OCI layout)",
        ));
    };
    if prepared.is_empty() {
        return Err(bad("it holds no image"));
    }

    // Merge duplicates (one config listed twice) so each image is put once.
    let mut merged: Vec<Prepared> = Vec::new();
    for p in prepared {
        match merged
            .iter_mut()
            .find(|m| m.config == p.config && m.layers == p.layers)
        {
            Some(m) => m.tags.extend(p.tags),
            None => merged.push(p),
        }
    }
    let before = store.list_images()?;
    let mut out = Vec::new();
    for mut p in merged {
        p.tags.sort();
        p.tags.dedup();
        let id = config::image_id(&p.config);
        let manifest = config::new_manifest(
            config::descriptor(MEDIA_TYPE_CONFIG, &id, p.config.len() as u64),
            p.layers
                .iter()
                .map(|(d, size)| config::descriptor(MEDIA_TYPE_LAYER, d, *size))
                .collect(),
        );
        let manifest = config::canonical_json("manifest", &manifest)?;
        let replaced = p
            .tags
            .iter()
            .filter_map(|t| {
                before
                    .iter()
                    .find(|i| i.references.contains(t) && i.id != id)
                    .map(|i| (t.clone(), i.id.clone()))
            })
            .collect();
        let image = store
            .put_image_tagged(&p.config, &manifest, &p.tags)
            .map_err(|e| match e {
                StoreError::InvalidImage { reason, .. } => bad(reason),
                other => other.into(),
            })?;
        out.push(LoadedImage {
            image,
            tags: p.tags,
            replaced,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_names_without_escaping() {
        let cases: &[(&str, &[u8], Option<&str>)] = &[
            ("", b"./manifest.json", Some("manifest.json")),
            ("", b"/blobs//sha256/x/", Some("blobs/sha256/x")),
            ("a", b"../b.tar", Some("b.tar")),
            ("a/b", b"../../c", Some("c")),
            ("", b"../etc/passwd", None),
            ("a", b"../../x", None),
            ("a", b"/abs", Some("abs")),
            ("", b"\xff", None),
        ];
        for (base, name, want) in cases {
            assert_eq!(
                normalize(base, name).as_deref(),
                *want,
                "{base} {:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn names_by_digest_are_recognised() {
        let hex = "a".repeat(64);
        for name in [
            format!("blobs/sha256/{hex}"),
            format!("{hex}.json"),
            format!("{hex}.tar"),
            format!("x/{hex}.tar"),
        ] {
            assert!(digest_in_name(&name).is_some(), "{name}");
        }
        for name in [
            format!("{hex}/layer.tar"),
            "manifest.json".into(),
            format!("blobs/sha512/{hex}"),
        ] {
            assert!(digest_in_name(&name).is_none(), "{name}");
        }
    }

    #[test]
    fn archive_names_need_a_repository_and_tag() {
        assert_eq!(
            archive_name("busybox:latest").map(|r| r.to_string()),
            Some("docker.io/library/busybox:latest".into())
        );
        assert_eq!(
            archive_name("localhost/kiln/bb:1").map(|r| r.to_string()),
            Some("localhost/kiln/bb:1".into())
        );
        assert!(archive_name("latest").is_none());
        assert!(archive_name("v1.0").is_none());
        assert!(archive_name(&format!("busybox@sha256:{}", "a".repeat(64))).is_none());
    }

    #[test]
    fn sniffs_layers_and_documents() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Sniff::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Sniff::Zstd);
        assert_eq!(sniff(&[0u8; 512]), Sniff::Tar);
        assert_eq!(sniff(b"{\"a\":1}"), Sniff::Other);
        let mut h = tar::Header::new_ustar();
        h.set_path("x").unwrap();
        h.set_cksum();
        assert_eq!(sniff(h.as_bytes()), Sniff::Tar);
        let mut broken = h.as_bytes().to_vec();
        broken[0] = b'y';
        assert_eq!(sniff(&broken), Sniff::Other);
    }

    use crate::store::test_support::{layer_tar, temp_store};

    enum E<'a> {
        File(&'a str, Vec<u8>),
        Link(&'a str, &'a str),
    }

    fn archive(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match e {
                E::File(name, data) => {
                    h.set_size(data.len() as u64);
                    // Raw names, `..` included: tar::Builder would refuse them.
                    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, &data[..]).unwrap();
                }
                E::Link(name, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_link_name(target).unwrap();
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// A config for one layer, and the layer.
    fn image() -> (Vec<u8>, Vec<u8>) {
        let layer = layer_tar(&[("hello", b"hi")]);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            Digest::of_bytes(&layer)
        );
        (config.into_bytes(), layer)
    }

    fn manifest_json(config: &str, layer: &str) -> Vec<u8> {
        format!(r#"[{{"Config":"{config}","RepoTags":["it/x:1"],"Layers":["{layer}"]}}]"#)
            .into_bytes()
    }

    // A truncated entry was reported as a string ("cannot read: …"); the tar parser's error
    // now comes through as itself, so a caller can tell a truncated archive by its kind.
    #[test]
    fn a_truncated_entry_is_the_tar_parsers_error() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1000);
        h.set_mode(0o644);
        b.append_data(&mut h, "manifest.json", &[b'x'; 1000][..])
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let (_dir, store) = temp_store();
        let err = load(&store, &bytes[..700], &LoadLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ImageOpsError::InvalidTar {
                    source: ArchiveError::Truncated { .. }
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("invalid image archive: tar stream truncated"),
            "{err}"
        );
    }

    fn load_err(bytes: &[u8], limits: &LoadLimits) -> String {
        let (_dir, store) = temp_store();
        let err = load(&store, bytes, limits).unwrap_err().to_string();
        assert!(store.list_images().unwrap().is_empty(), "{err}");
        err
    }

    #[test]
    fn loads_legacy_layout_with_symlinked_layer() {
        let (config, layer) = image();
        let id = Digest::of_bytes(&config);
        let bytes = archive(&[
            E::File("aaa/layer.tar", layer.clone()),
            E::Link("bbb/layer.tar", "../aaa/layer.tar"),
            E::File(&format!("{}.json", id.hex()), config.clone()),
            E::File(
                "manifest.json",
                manifest_json(&format!("{}.json", id.hex()), "bbb/layer.tar"),
            ),
        ]);
        let (_dir, store) = temp_store();
        let loaded = load(&store, &bytes[..], &LoadLimits::default()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].image.id, id);
        assert_eq!(loaded[0].tags[0].to_string(), "docker.io/it/x:1");
        assert!(store.check().unwrap().is_empty());
    }

    /// `load` stored configs that `run` then could not read: Docker's `"Env": null` (which
    /// must work) and a `Healthcheck` oci-spec does not look at (which must be refused).
    #[test]
    fn load_stores_only_configs_run_can_read() {
        let layer = layer_tar(&[("hello", b"hi")]);
        let with = |extra: &str| {
            format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{{extra}}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
                Digest::of_bytes(&layer)
            )
            .into_bytes()
        };
        let archive_of = |config: &[u8]| {
            let name = format!("{}.json", Digest::of_bytes(config).hex());
            archive(&[
                E::File("l/layer.tar", layer.clone()),
                E::File(&name, config.to_vec()),
                E::File("manifest.json", manifest_json(&name, "l/layer.tar")),
            ])
        };
        let nulls = with(r#""Env":null,"User":null,"Cmd":null,"WorkingDir":null"#);
        let (_dir, store) = temp_store();
        let loaded = load(&store, &archive_of(&nulls)[..], &LoadLimits::default()).unwrap();
        let bytes = store
            .read_blob(&loaded[0].image.id, "config", 1 << 20)
            .unwrap();
        let spec = crate::image::spec::ImageSpec::from_slice(&bytes).unwrap();
        assert!(spec.config.env.is_empty() && spec.config.user.is_empty());

        let bad = with(r#""Healthcheck":{"Interval":"5s"}"#);
        let err = load_err(&archive_of(&bad), &LoadLimits::default());
        assert!(err.contains("its config cannot be read"), "{err}");
    }

    #[test]
    fn refuses_hostile_and_inconsistent_archives() {
        let (config, layer) = image();
        let id = Digest::of_bytes(&config);
        let cfg = format!("{}.json", id.hex());
        let limits = LoadLimits::default();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // Names climbing out of the archive are never resolved.
            (
                archive(&[
                    E::File("../layer.tar", layer.clone()),
                    E::File(&cfg, config.clone()),
                    E::File("manifest.json", manifest_json(&cfg, "../layer.tar")),
                ]),
                "not a valid path",
            ),
            (
                archive(&[
                    E::Link("l.tar", "../../etc/passwd"),
                    E::File(&cfg, config.clone()),
                    E::File("manifest.json", manifest_json(&cfg, "l.tar")),
                ]),
                "leaves the archive",
            ),
            (
                archive(&[
                    E::Link("a.tar", "b.tar"),
                    E::Link("b.tar", "a.tar"),
                    E::File(&cfg, config.clone()),
                    E::File("manifest.json", manifest_json(&cfg, "a.tar")),
                ]),
                "too many levels",
            ),
            // A config whose name is not its digest.
            (
                archive(&[
                    E::File("l.tar", layer.clone()),
                    E::File(&format!("{}.json", "a".repeat(64)), config.clone()),
                    E::File(
                        "manifest.json",
                        manifest_json(&format!("{}.json", "a".repeat(64)), "l.tar"),
                    ),
                ]),
                "does not match its digest",
            ),
            // A layer that is not the config's diffID.
            (
                archive(&[
                    E::File("l.tar", layer_tar(&[("other", b"x")])),
                    E::File(&cfg, config.clone()),
                    E::File("manifest.json", manifest_json(&cfg, "l.tar")),
                ]),
                "diffID",
            ),
            (
                archive(&[
                    E::File(&cfg, config.clone()),
                    E::File("manifest.json", manifest_json(&cfg, "missing.tar")),
                ]),
                "missing from the archive",
            ),
            // A JSON document used as a layer.
            (
                archive(&[
                    E::File(&cfg, config.clone()),
                    E::File("manifest.json", manifest_json(&cfg, &cfg)),
                ]),
                "not a tar, gzip or zstd stream",
            ),
            // Repeated keys are refused, not resolved one way or the other.
            (
                archive(&[
                    E::File("l.tar", layer.clone()),
                    E::File(&cfg, config.clone()),
                    E::File(
                        "manifest.json",
                        format!(r#"[{{"Config":"{cfg}","Config":"x","Layers":["l.tar"]}}]"#)
                            .into_bytes(),
                    ),
                ]),
                "duplicate field",
            ),
            (
                archive(&[E::File("hello.txt", b"hello".to_vec())]),
                "neither manifest.json",
            ),
        ];
        for (bytes, want) in cases {
            let err = load_err(&bytes, &limits);
            assert!(err.contains(want), "want {want:?}: {err}");
        }
    }

    #[test]
    fn bounds_documents_and_decompression() {
        let (config, _) = image();
        let id = Digest::of_bytes(&config);
        let cfg = format!("{}.json", id.hex());
        // The documents do not fit the memory budget.
        let small = LoadLimits {
            max_documents_total: 100,
            ..LoadLimits::default()
        };
        let bytes = archive(&[
            E::File(&cfg, config.clone()),
            E::File("manifest.json", manifest_json(&cfg, "l.tar")),
        ]);
        let err = load_err(&bytes, &small);
        assert!(err.contains("memory limit"), "{err}");
        // A gzip bomb: 64 MiB of zeros in a few kB, against tight limits.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &vec![0u8; 64 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        let tight = LoadLimits {
            ratio_check_after: 1 << 20,
            ..LoadLimits::default()
        };
        let bytes = archive(&[E::File("bomb.tar.gz", bomb.clone())]);
        let err = load_err(&bytes, &tight);
        assert!(err.contains("decompresses more than"), "{err}");
        let capped = LoadLimits {
            max_layer_size: 1 << 20,
            ..LoadLimits::default()
        };
        let err = load_err(&bytes, &capped);
        assert!(err.contains("larger than the 1048576 bytes"), "{err}");
    }
}
