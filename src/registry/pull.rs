//! `kiln pull`: a reference from a registry into the store. Indexes are
//! resolved to one platform; the config is fetched and checked; layers are
//! fetched in parallel, each hashed as it streams (compressed digest and
//! size against the manifest) while it is decompressed into `<root>/tmp`
//! (uncompressed digest against the config's diffID), and only a layer
//! that passed every check is renamed into the store. An image is recorded
//! last, so an interrupted or failed pull leaves no image and no partial
//! blob; a re-run skips the layers already stored ("Already exists").

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};

use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::client::{Client, Manifest, MAX_MANIFEST_SIZE};
use super::distribution::{self, KnownBlob};
use super::error::{RegistryError, Result};
use super::{media, Compression};
use crate::common::platform::Platform;
use crate::image::config::{self, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER};
use crate::image::index_doc::{self, IndexDoc};
use crate::image::{Digest, Reference, Sha256Writer};
use crate::store::{fsutil, ImageRecord, IndexRecord, Store, Stored};

/// Largest config kiln accepts from a registry.
const MAX_CONFIG_SIZE: u64 = 32 << 20;

/// Largest uncompressed layer.
const MAX_LAYER_SIZE: u64 = 64 << 30;

/// Uncompressed bytes allowed per compressed byte once 64 MiB came out.
const MAX_RATIO: u64 = 1000;

/// Where one layer (or blob) of a transfer is; the CLI words it as Docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Queued.
    Waiting,
    /// The store has it (pull).
    AlreadyExists,
    /// Bytes received of the total.
    Downloading(u64, u64),
    /// Fetched and verified.
    PullComplete,
    /// Being compressed (push).
    Preparing,
    /// The registry has it (push).
    LayerExists,
    /// Mounted from another repository (push).
    Mounted(String),
    /// Bytes sent of the total.
    Pushing(u64, u64),
    /// Uploaded.
    Pushed,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Waiting => write!(f, "Waiting"),
            Status::AlreadyExists => write!(f, "Already exists"),
            Status::Downloading(..) => write!(f, "Downloading"),
            Status::PullComplete => write!(f, "Pull complete"),
            Status::Preparing => write!(f, "Preparing"),
            Status::LayerExists => write!(f, "Layer already exists"),
            Status::Mounted(from) => write!(f, "Mounted from {from}"),
            Status::Pushing(..) => write!(f, "Pushing"),
            Status::Pushed => write!(f, "Pushed"),
        }
    }
}

/// Receives per-layer progress: the layer's short ID (12 hex digits) and its status.
pub type Progress<'a> = &'a (dyn Fn(&str, Status) + Sync);

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to pick from an index (default: the host's).
    pub platform: Option<Platform>,
}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image in the store (for `--all-platforms`, the index's entry for the host, else
    /// the first), with the names it was pulled as.
    pub image: ImageRecord,
    /// The digest of the manifest in the registry (what `name@sha256:` names).
    pub digest: Digest,
    /// False when the store already had this image under this name.
    pub changed: bool,
    /// The index the name holds, when it holds several platforms (after a pull of one
    /// platform into a tag of others, or `--all-platforms`).
    pub index: Option<IndexRecord>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct RemotePlatform {
    architecture: String,
    os: String,
    variant: Option<String>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct RemoteDescriptor {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    urls: Option<Vec<String>>,
    platform: Option<RemotePlatform>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteIndex {
    schema_version: u32,
    media_type: Option<String>,
    manifests: Vec<RemoteDescriptor>,
    layers: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteManifest {
    schema_version: u32,
    media_type: Option<String>,
    config: RemoteDescriptor,
    #[serde(default)]
    layers: Vec<RemoteDescriptor>,
    manifests: Option<IgnoredAny>,
}

fn invalid(what: &str, reason: impl std::fmt::Display) -> RegistryError {
    RegistryError::Invalid(format!("invalid {what}: {reason}"))
}

fn is_index_type(t: &str) -> bool {
    t == media::OCI_INDEX || t == media::DOCKER_LIST
}

fn parse_index(bytes: &[u8]) -> Result<RemoteIndex> {
    let i: RemoteIndex = serde_json::from_slice(bytes).map_err(|e| invalid("index", e))?;
    if i.schema_version != 2 {
        return Err(invalid(
            "index",
            format!("schemaVersion {}", i.schema_version),
        ));
    }
    if i.layers.is_some() || i.config.is_some() {
        return Err(invalid("index", "it has layers or a config"));
    }
    if let Some(t) = &i.media_type {
        if !is_index_type(t) {
            return Err(invalid("index", format!("media type {t}")));
        }
    }
    Ok(i)
}

fn parse_manifest(bytes: &[u8], declared: &str) -> Result<RemoteManifest> {
    let m: RemoteManifest = serde_json::from_slice(bytes).map_err(|e| invalid("manifest", e))?;
    if m.schema_version != 2 {
        return Err(invalid(
            "manifest",
            format!(
                "schemaVersion {} (only schema 2 is supported)",
                m.schema_version
            ),
        ));
    }
    if m.manifests.is_some() {
        return Err(invalid("manifest", "it has both manifests and a config"));
    }
    if let Some(t) = &m.media_type {
        if t != declared {
            return Err(invalid(
                "manifest",
                format!("its mediaType {t} is not the {declared} it was served as"),
            ));
        }
    }
    if !matches!(
        m.config.media_type.as_str(),
        media::OCI_CONFIG | media::DOCKER_CONFIG
    ) {
        return Err(invalid(
            "manifest",
            format!(
                "config media type {} is not an image config (is it an artifact?)",
                m.config.media_type
            ),
        ));
    }
    for (i, l) in m.layers.iter().enumerate() {
        if Compression::of_layer_type(&l.media_type).is_none() {
            return Err(invalid(
                "manifest",
                format!("layer {i} has unsupported media type {}", l.media_type),
            ));
        }
        if l.urls.as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(invalid(
                "manifest",
                format!("layer {i} is a foreign layer (urls); kiln fetches layers only from the registry"),
            ));
        }
    }
    Ok(m)
}

/// Picks the manifest for `platform` from an index.
fn choose(index: &RemoteIndex, platform: &Platform) -> Result<RemoteDescriptor> {
    let candidates: Vec<&RemoteDescriptor> = index
        .manifests
        .iter()
        .filter(|m| m.media_type == media::OCI_MANIFEST || m.media_type == media::DOCKER_MANIFEST)
        .collect();
    let fits = |m: &&&RemoteDescriptor| {
        m.platform
            .as_ref()
            .is_some_and(|p| platform.matches(&p.os, &p.architecture, p.variant.as_deref()))
    };
    // An exact variant first (arm/v7 before an unspecified arm).
    let exact = candidates.iter().find(|m| {
        fits(m)
            && m.platform.as_ref().and_then(|p| p.variant.as_deref()) == platform.variant.as_deref()
    });
    if let Some(m) = exact.or_else(|| candidates.iter().find(fits)) {
        return Ok((*m).clone());
    }
    let available: Vec<String> = candidates
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    Err(RegistryError::NoPlatform {
        platform: platform.to_string(),
        available: if available.is_empty() {
            "no platforms".into()
        } else {
            available.join(", ")
        },
    })
}

/// Resolves a reference to one image manifest: the manifest itself, or the
/// platform's entry of an index (fetched by digest, so verified). Returns
/// the image manifest and the digest the reference names (the index's, for
/// an index — what `name@sha256:` pins).
pub fn resolve(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<(Manifest, Digest)> {
    let repo = reference.path();
    let top = client.fetch_manifest(repo, &reference.tag_or_digest())?;
    let named = top.digest.clone();
    let mut current = top;
    for _ in 0..4 {
        if !is_index_type(&current.media_type) {
            return Ok((current, named));
        }
        let index = parse_index(&current.bytes)?;
        let chosen = choose(&index, platform)?;
        current = fetch_entry(client, repo, &chosen)?;
    }
    Err(invalid("index", "indexes nested too deep"))
}

/// Hashes and counts the compressed bytes as the decompressor pulls them,
/// reports progress, and stops on Ctrl-C.
struct Tee<'a, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    total: u64,
    reported: u64,
    id: &'a str,
    progress: Progress<'a>,
    client: &'a Client,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.client.options().cancelled() {
            // Not ErrorKind::Interrupted: readers retry those.
            return Err(io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count - self.reported >= 512 << 10 || (n == 0 && self.reported != self.count) {
            self.reported = self.count;
            (self.progress)(self.id, Status::Downloading(self.count, self.total));
        }
        Ok(n)
    }
}

/// Bounds the decompressed stream (a zstd bomb) and counts it.
struct Bound<R> {
    inner: R,
    produced: u64,
    limit_hit: Option<String>,
}

impl<R: Read> Bound<R> {
    fn check(&mut self, raw: u64) -> io::Result<()> {
        let msg = if self.produced > MAX_LAYER_SIZE {
            Some(format!(
                "a layer is larger than {MAX_LAYER_SIZE} bytes uncompressed"
            ))
        } else if self.produced > 64 << 20 && self.produced / raw.max(1) > MAX_RATIO {
            Some(format!(
                "a layer decompresses more than {MAX_RATIO} times its size"
            ))
        } else {
            None
        };
        if let Some(m) = msg {
            self.limit_hit = Some(m.clone());
            return Err(io::Error::other(m));
        }
        Ok(())
    }
}

/// Fetches one layer into the store as an uncompressed blob, in phases: stream it
/// through the decompressor into a temp file, check the compressed bytes against the
/// manifest, check the uncompressed ones against the config, and adopt the file; see
/// the module documentation for the checks.
fn fetch_layer(
    store: &Store,
    client: &Client,
    repo: &str,
    desc: &KnownBlob,
    diff_id: &Digest,
    index: usize,
    progress: Progress<'_>,
) -> Result<()> {
    let id = &desc.digest.hex()[..12];
    let compression = Compression::of_layer_type(&desc.media_type)
        .ok_or_else(|| invalid("manifest", format!("layer media type {}", desc.media_type)))?;
    let reader = client.blob_reader(repo, &desc.digest)?;
    let mut tee = Tee {
        inner: reader.take(desc.size.saturating_add(1)),
        hasher: Sha256::new(),
        count: 0,
        total: desc.size,
        reported: 0,
        id,
        progress,
        client,
    };
    let (tmp, file) = fsutil::create_temp_file(&store.tmp_dir(), "pull")?;
    let guard = fsutil::TempPath::new(tmp.clone());
    let mut out = Sha256Writer::new(BufWriter::new(file));
    let copied = decompress(&mut tee, compression, desc, &mut out)?;
    if client.options().cancelled() {
        return Err(RegistryError::Interrupted);
    }
    let size = check_download(&mut tee, copied, desc, index, &tmp)?;
    let (buffered, stored, written) = out.finish();
    debug_assert_eq!(written, size);
    if stored != *diff_id {
        return Err(invalid(
            "image",
            format!(
                "layer {index} ({}) uncompressed is {stored}, but the config's diffID {index} is {diff_id}",
                desc.digest
            ),
        ));
    }
    let file = buffered.into_inner().map_err(|e| RegistryError::Io {
        op: "write",
        path: tmp.display().to_string(),
        source: e.into_error(),
    })?;
    drop(file);
    guard.disarm();
    store.adopt_blob(&tmp, diff_id, written)?;
    (progress)(id, Status::PullComplete);
    Ok(())
}

/// Streams the layer from `tee` through its decompressor into `out`, bounded by
/// [`Bound`]. The outer error is a layer kiln cannot start decoding; the inner result
/// is the copy's: the uncompressed size, or what stopped it (a failed write comes back
/// as [`io::ErrorKind::BrokenPipe`]).
fn decompress<R: Read>(
    tee: &mut Tee<'_, R>,
    compression: Compression,
    desc: &KnownBlob,
    out: &mut impl Write,
) -> Result<io::Result<u64>> {
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(tee),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(tee)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(tee)
                .map_err(|e| invalid("layer", format!("zstd: {e}")))?,
        ),
        // `of_layer_type` names no layer type for these.
        Compression::Bzip2 | Compression::Xz => {
            return Err(invalid(
                "manifest",
                format!("layer media type {}", desc.media_type),
            ))
        }
    };
    let mut bound = Bound {
        inner: decoder,
        produced: 0,
        limit_hit: None,
    };
    let mut buf = vec![0u8; 256 << 10];
    let r: io::Result<()> = loop {
        let n = match bound.inner.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        bound.produced += n as u64;
        if let Err(e) = bound.check(desc.size) {
            break Err(e);
        }
        if let Err(e) = out.write_all(&buf[..n]) {
            break Err(io::Error::new(io::ErrorKind::BrokenPipe, e));
        }
    };
    Ok(r.map(|()| bound.produced))
}

/// Checks the compressed bytes against the manifest's size and digest, then reports
/// the copy's own failure, if any. Whatever went wrong, the compressed bytes decide
/// first: a tampered or truncated blob is a digest or size mismatch, not a decoder's
/// riddle. Returns the uncompressed size.
fn check_download<R: Read>(
    tee: &mut Tee<'_, R>,
    copied: io::Result<u64>,
    desc: &KnownBlob,
    index: usize,
    tmp: &std::path::Path,
) -> Result<u64> {
    let drained = io::copy(tee, &mut io::sink());
    let raw_digest = Digest::from_hasher(std::mem::take(&mut tee.hasher));
    let registry = tee.client.registry().to_string();
    if tee.count != desc.size && (drained.is_ok() || tee.count > desc.size) {
        return Err(RegistryError::SizeMismatch {
            registry,
            what: format!("layer {index}"),
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: tee.count,
        });
    }
    if tee.count == desc.size && raw_digest != desc.digest {
        return Err(RegistryError::DigestMismatch {
            registry,
            what: format!("layer {index}"),
            expected: desc.digest.clone(),
            actual: raw_digest,
        });
    }
    match (copied, drained) {
        (Ok(n), Ok(_)) => Ok(n),
        (Err(e), _) if e.kind() == io::ErrorKind::BrokenPipe => Err(RegistryError::Io {
            op: "write",
            path: tmp.display().to_string(),
            source: e,
        }),
        (Err(e), _) | (_, Err(e)) => Err(RegistryError::ReadFailed {
            registry,
            context: format!("reading layer {index} ({})", desc.digest),
            source: e,
        }),
    }
}

/// Fetches the layers (compressed blob, diffID) of `repo` that the store
/// lacks, in parallel, each verified and stored uncompressed as described
/// in the module documentation, and records where each blob came from.
/// Public for other importers of registry content (a build cache).
pub fn pull_layers(
    store: &Store,
    client: &Client,
    repo: &str,
    layers: &[(KnownBlob, Digest)],
    progress: Progress<'_>,
) -> Result<()> {
    // Stored layers stay unreferenced until the caller records what uses them.
    let _lease = store.lease()?;
    let todo: Vec<(usize, &(KnownBlob, Digest))> = layers
        .iter()
        .enumerate()
        .filter(|(_, (blob, diff_id))| {
            let have = store.has_blob(diff_id);
            let id = &blob.digest.hex()[..12];
            progress(
                id,
                if have {
                    Status::AlreadyExists
                } else {
                    Status::Waiting
                },
            );
            !have
        })
        .collect();
    super::parallel(&todo, client.options().parallel, |(i, (blob, diff_id))| {
        fetch_layer(store, client, repo, blob, diff_id, *i, progress)
    })?;
    let source = format!("{}/{}", client.registry(), repo);
    for (blob, diff_id) in layers {
        distribution::remember(store, diff_id, blob, Some(&source));
    }
    Ok(())
}

/// Pulls `reference` into the store and names it: by its tag, or for a
/// `name@sha256:…` reference by the stored image's own digest, with the
/// registry's digest recorded so `name@sha256:…` finds it. A tag keeps the other
/// platforms it holds: the image joins them in an index, replacing the entry of its own
/// platform ([`Store::put_image_in_tag`]).
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    opts: &PullOptions,
    progress: Progress<'_>,
) -> Result<Pulled> {
    let image = super::display(reference);
    pull_inner(store, client, reference, opts, progress).map_err(|e| e.for_image("pulling", &image))
}

fn pull_inner(
    store: &Store,
    client: &Client,
    reference: &Reference,
    opts: &PullOptions,
    progress: Progress<'_>,
) -> Result<Pulled> {
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let (manifest, named) = resolve(client, reference, &platform)?;
    // Layers go into the store before any image references them.
    let _lease = store.lease()?;
    let (config_bytes, local) = fetch_image(store, client, reference.path(), &manifest, progress)?;
    let local_digest = Digest::of_bytes(&local);
    let record = match reference.digest() {
        Some(_) => {
            let name = reference.repository().with_digest(local_digest.clone());
            let before = store.resolve(&name.to_string()).ok();
            let record = store.put_image_tagged(&config_bytes, &local, &[name])?;
            let changed = before.is_none_or(|b| b.manifest_digest != local_digest);
            (record, None, changed)
        }
        None => put_in_tag(store, reference, &config_bytes, &local)?,
    };
    store.record_repo_digest(&named, &local_digest)?;
    let (image, index, changed) = record;
    Ok(Pulled {
        image,
        index,
        digest: named,
        changed,
    })
}

/// Stores a pulled image under the tag of `reference` beside the tag's other platforms;
/// returns the image (with the tag's names), the index the tag holds if it is one, and
/// whether the tag's entry for the image's platform changed.
fn put_in_tag(
    store: &Store,
    reference: &Reference,
    config_bytes: &[u8],
    local: &[u8],
) -> Result<(ImageRecord, Option<IndexRecord>, bool)> {
    let name = reference.clone().with_default_tag();
    let digest = Digest::of_bytes(local);
    let pulled_platform = {
        let c = config::parse_config(config_bytes)?;
        Platform {
            os: c.os().to_string(),
            architecture: c.architecture().to_string(),
            variant: c.variant().clone(),
        }
    };
    let before = store
        .resolve_platform(&name.to_string(), Some(&pulled_platform))
        .ok();
    let changed = before.is_none_or(|b| b.manifest_digest != digest);
    let (references, index) = match store.put_image_in_tag(config_bytes, local, &name)? {
        Stored::Image(i) => (i.references, None),
        Stored::Index(ix) => (ix.references.clone(), Some(*ix)),
    };
    let mut image = store.image_blobs(&digest)?;
    image.references = references;
    Ok((image, index, changed))
}

/// Fetches the image `manifest` names (config, then the layers the store lacks) and
/// returns its config and the store's own manifest for it (uncompressed layers). Nothing
/// is recorded: the caller holds a lease until it names the image.
fn fetch_image(
    store: &Store,
    client: &Client,
    repo: &str,
    manifest: &Manifest,
    progress: Progress<'_>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let m = parse_manifest(&manifest.bytes, &manifest.media_type)?;
    if m.config.size > MAX_CONFIG_SIZE {
        return Err(invalid("manifest", "the config is larger than 32 MiB"));
    }
    let config_bytes =
        client.fetch_blob_verified(repo, &m.config.digest, m.config.size, "config")?;
    let parsed = config::parse_config(&config_bytes)?;
    let diff_ids = config::diff_ids(&parsed)?;
    if diff_ids.len() != m.layers.len() {
        return Err(invalid(
            "image",
            format!(
                "the config lists {} diffIDs but the manifest {} layers",
                diff_ids.len(),
                m.layers.len()
            ),
        ));
    }
    let layers: Vec<(KnownBlob, Digest)> = m
        .layers
        .iter()
        .zip(&diff_ids)
        .map(|(l, d)| {
            (
                KnownBlob {
                    digest: l.digest.clone(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                    sources: Vec::new(),
                },
                d.clone(),
            )
        })
        .collect();
    pull_layers(store, client, repo, &layers, progress)?;

    let mut layers = Vec::new();
    for d in &diff_ids {
        layers.push(config::descriptor(MEDIA_TYPE_LAYER, d, store.blob_size(d)?));
    }
    let id = config::image_id(&config_bytes);
    let local = config::new_manifest(
        config::descriptor(MEDIA_TYPE_CONFIG, &id, config_bytes.len() as u64),
        layers,
    );
    Ok((config_bytes, config::canonical_json("manifest", &local)?))
}

/// Whether an index entry is a platform's image that `--all-platforms` pulls: an image
/// manifest naming a real platform (not the `unknown/unknown` of attestations).
fn is_platform_image(d: &RemoteDescriptor) -> bool {
    (d.media_type == media::OCI_MANIFEST || d.media_type == media::DOCKER_MANIFEST)
        && d.platform
            .as_ref()
            .is_some_and(|p| p.os != "unknown" && p.architecture != "unknown")
}

/// `kiln pull --all-platforms`: every platform's image of the index `reference` names,
/// stored as an index under its tag (replacing what the tag held), or under
/// `name@<the stored index's digest>` for a digest reference, with the registry's index
/// digest recorded so `name@<registry digest>` finds it. Entries that are not a
/// platform's image (attestations, nested indexes) are left out, as is a second entry for
/// a platform already taken. A reference to a single manifest is pulled as [`pull`] pulls it.
pub fn pull_all_platforms(
    store: &Store,
    client: &Client,
    reference: &Reference,
    progress: Progress<'_>,
) -> Result<Pulled> {
    let image = super::display(reference);
    pull_all_inner(store, client, reference, progress).map_err(|e| e.for_image("pulling", &image))
}

fn pull_all_inner(
    store: &Store,
    client: &Client,
    reference: &Reference,
    progress: Progress<'_>,
) -> Result<Pulled> {
    let repo = reference.path();
    let top = client.fetch_manifest(repo, &reference.tag_or_digest())?;
    if !is_index_type(&top.media_type) {
        return pull_inner(store, client, reference, &PullOptions::default(), progress);
    }
    let index = parse_index(&top.bytes)?;
    // The same `manifests`, every field of each entry kept for the stored index.
    let doc = IndexDoc::parse(&top.bytes)?;
    let _lease = store.lease()?;
    let mut entries: Vec<index_doc::Entry> = Vec::new();
    let mut taken: Vec<Platform> = Vec::new();
    for (i, entry) in index.manifests.iter().enumerate() {
        let (Some(p), Some(written)) = (&entry.platform, doc.entries.get(i)) else {
            continue;
        };
        if !is_platform_image(entry) {
            continue;
        }
        let platform = Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
        }
        .normalized();
        if taken.contains(&platform) {
            continue;
        }
        let manifest = fetch_entry(client, repo, entry)?;
        let (config_bytes, local) = fetch_image(store, client, repo, &manifest, progress)?;
        let stored = store.put_platform_image(&config_bytes, &local)?;
        // The entry keeps everything but what names the manifest (the registry's platform as
        // given, its annotations), so a push gives back the same index.
        let manifest = config::descriptor(
            config::MEDIA_TYPE_MANIFEST,
            &stored.manifest_digest,
            stored.manifest_size,
        );
        entries.push(index_doc::repoint(written, &manifest));
        taken.push(platform);
    }
    if entries.is_empty() {
        return Err(invalid("index", "it names no platform's image"));
    }
    let bytes = doc.with_entries(entries)?;
    let local_digest = Digest::of_bytes(&bytes);
    let name = match reference.digest() {
        Some(_) => reference.repository().with_digest(local_digest.clone()),
        None => reference.clone().with_default_tag(),
    };
    let before = store.resolve_stored(&name.to_string()).ok();
    let ix = store.put_index_tagged(&bytes, &[name])?;
    store.record_repo_digest(&top.digest, &ix.digest)?;
    let changed = !matches!(before, Some(Stored::Index(b)) if b.digest == ix.digest);
    let shown = ix
        .shown_manifest()
        .ok_or_else(|| invalid("index", "it names no platform's image"))?;
    let mut image = store.image_blobs(&shown)?;
    image.references = ix.references.clone();
    Ok(Pulled {
        image,
        index: Some(ix),
        digest: top.digest,
        changed,
    })
}

/// Fetches an index entry's manifest by digest (so verified) and checks its size.
fn fetch_entry(client: &Client, repo: &str, entry: &RemoteDescriptor) -> Result<Manifest> {
    if entry.size > MAX_MANIFEST_SIZE {
        return Err(invalid("index", "a manifest is larger than 4 MiB"));
    }
    let m = client.fetch_manifest(repo, entry.digest.as_str())?;
    if m.bytes.len() as u64 != entry.size {
        return Err(RegistryError::SizeMismatch {
            registry: client.registry().to_string(),
            what: "manifest".into(),
            digest: entry.digest.clone(),
            expected: entry.size,
            actual: m.bytes.len() as u64,
        });
    }
    Ok(Manifest {
        media_type: entry.media_type.clone(),
        ..m
    })
}

/// Every tag of `reference`'s repository, as references (`kiln pull -a`).
pub fn all_tags(client: &Client, reference: &Reference) -> Result<Vec<Reference>> {
    let tags = client
        .tags(reference.path())
        .map_err(|e| e.for_image("listing tags of", &reference.familiar_name()))?;
    tags.iter()
        .map(|t| Ok(reference.repository().with_tag(t)?))
        .collect()
}

/// Platforms an index lists, by its digest: for messages and tests.
pub fn index_platforms(bytes: &[u8]) -> Result<BTreeMap<String, Digest>> {
    let index = parse_index(bytes)?;
    Ok(index
        .manifests
        .iter()
        .filter_map(|m| {
            m.platform
                .as_ref()
                .map(|p| (format!("{}/{}", p.os, p.architecture), m.digest.clone()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, Option<&str>)]) -> RemoteIndex {
        let manifests: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let v = variant.map_or(String::new(), |v| format!(r#","variant":"{v}""#));
                format!(
                    r#"{{"mediaType":"{}","digest":"sha256:{}","size":1,"platform":{{"os":"{os}","architecture":"{arch}"{v}}}}}"#,
                    media::OCI_MANIFEST,
                    format!("{i}").repeat(64)
                )
            })
            .collect();
        parse_index(
            format!(
                r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                manifests.join(",")
            )
            .as_bytes(),
        )
        .unwrap()
    }

    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A registry on 127.0.0.1 serving fixed bodies by path; stopped when dropped.
    struct FakeRegistry {
        addr: String,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl FakeRegistry {
        fn serve(routes: Vec<(String, Vec<u8>)>) -> FakeRegistry {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line);
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                        Some((_, b)) => ("200 OK", b.clone()),
                        None => ("404 Not Found", Vec::new()),
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                }
            });
            FakeRegistry {
                addr,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for FakeRegistry {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(&self.addr);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Routes of a one-layer image under `r:1`, with the layer blob as `served`.
    fn image_routes(layer: &[u8], served: Vec<u8>) -> (Vec<(String, Vec<u8>)>, Digest) {
        arch_routes("amd64", layer, served)
    }

    /// [`image_routes`] of an image for `linux/<arch>`.
    fn arch_routes(arch: &str, layer: &[u8], served: Vec<u8>) -> (Vec<(String, Vec<u8>)>, Digest) {
        let layer_digest = Digest::of_bytes(layer);
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        )
        .into_bytes();
        let config_digest = Digest::of_bytes(&config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{layer_digest}","size":{}}}]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            config.len(),
            media::OCI_LAYER,
            layer.len()
        )
        .into_bytes();
        let manifest_digest = Digest::of_bytes(&manifest);
        (
            vec![
                ("/v2/r/manifests/1".into(), manifest.clone()),
                (format!("/v2/r/manifests/{manifest_digest}"), manifest),
                (format!("/v2/r/blobs/{config_digest}"), config),
                (format!("/v2/r/blobs/{layer_digest}"), served),
            ],
            manifest_digest,
        )
    }

    fn try_pull(
        routes: Vec<(String, Vec<u8>)>,
        reference: &str,
    ) -> (Result<Pulled>, Store, tempfile::TempDir) {
        let server = FakeRegistry::serve(routes);
        let (dir, store) = crate::store::test_support::temp_store();
        let client = Client::new(&server.addr, &super::super::ClientOptions::default()).unwrap();
        let r = Reference::parse(&format!("{}/{reference}", server.addr)).unwrap();
        let result = pull(&store, &client, &r, &PullOptions::default(), &|_, _| {});
        (result, store, dir)
    }

    #[test]
    fn pulls_and_verifies_every_byte() {
        let layer = crate::store::test_support::layer_tar(&[("a", b"hello")]);
        let (routes, manifest_digest) = image_routes(&layer, layer.clone());
        let (ok, store, _dir) = try_pull(routes.clone(), "r:1");
        let pulled = ok.unwrap();
        assert_eq!(pulled.digest, manifest_digest);
        assert!(store.check().unwrap().is_empty());

        // The right bytes followed by more: refused, nothing kept.
        let mut long = layer.clone();
        long.extend_from_slice(b"trailing");
        let (routes, _) = image_routes(&layer, long);
        let (err, store, _dir) = try_pull(routes, "r:1");
        let err = err.unwrap_err().to_string();
        assert!(err.contains("its descriptor says"), "{err}");
        assert!(store.list_images().unwrap().is_empty());
        assert!(store.tmp_dir().read_dir().unwrap().next().is_none());

        // A manifest asked for by digest must have that digest.
        let (mut routes, manifest_digest) = image_routes(&layer, layer.clone());
        let other = Digest::of_bytes(b"other");
        let body = routes[0].1.clone();
        routes.push((format!("/v2/r/manifests/{other}"), body));
        let (err, _store, _dir) = try_pull(routes.clone(), &format!("r@{other}"));
        let err = err.unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");
        let (ok, store, _dir) = try_pull(routes, &format!("r@{manifest_digest}"));
        let pulled = ok.unwrap();
        let by_digest = format!("{}@{manifest_digest}", pulled.image.references[0].name());
        assert_eq!(store.resolve(&by_digest).unwrap().id, pulled.image.id);
    }

    #[test]
    fn chooses_the_platform_of_an_index() {
        let i = index(&[
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "amd64", None),
            ("unknown", "unknown", None),
        ]);
        let p = |s| Platform::parse(s).unwrap();
        assert!(choose(&i, &p("linux/amd64"))
            .unwrap()
            .digest
            .hex()
            .starts_with('2'));
        assert!(choose(&i, &p("linux/arm/v7"))
            .unwrap()
            .digest
            .hex()
            .starts_with('1'));
        let err = choose(&i, &p("linux/s390x")).unwrap_err().to_string();
        assert!(err.contains("linux/arm/v7, linux/amd64"), "{err}");
    }

    #[test]
    fn refuses_ambiguous_and_foreign_documents() {
        let d = format!("sha256:{}", "a".repeat(64));
        let both = format!(
            r#"{{"schemaVersion":2,"manifests":[],"config":{{"mediaType":"{}","digest":"{d}","size":1}},"layers":[]}}"#,
            media::OCI_CONFIG
        );
        assert!(parse_manifest(both.as_bytes(), media::OCI_MANIFEST).is_err());
        assert!(parse_index(both.as_bytes()).is_err());
        let dup = format!(
            r#"{{"schemaVersion":2,"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{d}","size":1}}}}"#,
            media::OCI_CONFIG
        );
        assert!(parse_manifest(dup.as_bytes(), media::OCI_MANIFEST).is_err());
        let foreign = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{d}","size":1}},"layers":[{{"mediaType":"{}","digest":"{d}","size":1,"urls":["http://x"]}}]}}"#,
            media::OCI_CONFIG,
            media::DOCKER_FOREIGN_LAYER
        );
        let err = parse_manifest(foreign.as_bytes(), media::OCI_MANIFEST)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("foreign"), "{err}");
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:../../x","size":1}}"#;
        assert!(parse_manifest(bad_digest.as_bytes(), media::OCI_MANIFEST).is_err());
        let artifact = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.example+json","digest":"{d}","size":1}}}}"#
        );
        assert!(parse_manifest(artifact.as_bytes(), media::OCI_MANIFEST).is_err());
    }

    /// Routes of an index `r:multi` (also served by its digest, which is returned) of an
    /// amd64 and an arm64 image, an attestation manifest, and arm64 a second time.
    fn multi_routes() -> (Vec<(String, Vec<u8>)>, Digest) {
        use crate::store::test_support::layer_tar;
        let (mut routes, amd) = arch_routes("amd64", &layer_tar(&[("a", b"1")]), {
            layer_tar(&[("a", b"1")])
        });
        let (arm_routes, arm) = arch_routes("arm64", &layer_tar(&[("b", b"2")]), {
            layer_tar(&[("b", b"2")])
        });
        routes.extend(
            arm_routes
                .into_iter()
                .filter(|(p, _)| p != "/v2/r/manifests/1"),
        );
        let size = |d: &Digest| {
            routes
                .iter()
                .find(|(p, _)| *p == format!("/v2/r/manifests/{d}"))
                .map_or(1, |(_, b)| b.len())
        };
        let entry = |d: &Digest, os: &str, arch: &str| {
            format!(
                r#"{{"mediaType":"{}","digest":"{d}","size":{},"platform":{{"os":"{os}","architecture":"{arch}"}}}}"#,
                media::OCI_MANIFEST,
                size(d)
            )
        };
        // An attestation manifest (unknown/unknown), never fetched, and arm64 twice.
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{},{},{}]}}"#,
            media::OCI_INDEX,
            entry(&arm, "linux", "arm64"),
            entry(&amd, "linux", "amd64"),
            entry(&Digest::of_bytes(b"attestation"), "unknown", "unknown"),
            entry(&amd, "linux", "arm64"),
        )
        .into_bytes();
        let index_digest = Digest::of_bytes(&index);
        routes.push((format!("/v2/r/manifests/{index_digest}"), index.clone()));
        routes.push(("/v2/r/manifests/multi".into(), index));
        (routes, index_digest)
    }

    #[test]
    fn all_platforms_keeps_every_platform_image_of_an_index() {
        let (routes, index_digest) = multi_routes();
        let server = FakeRegistry::serve(routes);
        let (_dir, store) = crate::store::test_support::temp_store();
        let client = Client::new(&server.addr, &super::super::ClientOptions::default()).unwrap();
        let r = Reference::parse(&format!("{}/r:multi", server.addr)).unwrap();
        let pulled = pull_all_platforms(&store, &client, &r, &|_, _| {}).unwrap();
        assert_eq!(pulled.digest, index_digest);
        let ix = pulled.index.expect("an index");
        assert_eq!(ix.platform_list(), "linux/arm64, linux/amd64");
        assert_eq!(ix.references, vec![r.clone()]);
        let by_digest = format!("{}/r@{index_digest}", server.addr);
        assert!(matches!(
            store.resolve_stored(&by_digest).unwrap(),
            Stored::Index(i) if i.digest == ix.digest
        ));
        assert!(pulled.changed);
        let again = pull_all_platforms(&store, &client, &r, &|_, _| {}).unwrap();
        assert!(!again.changed);
        assert!(store.check().unwrap().is_empty());
        // One platform pulled into the tag replaces its entry and keeps the other.
        let one = PullOptions {
            platform: Some(Platform::parse("linux/amd64").unwrap()),
        };
        let pulled = pull(&store, &client, &r, &one, &|_, _| {}).unwrap();
        assert!(!pulled.changed);
        assert_eq!(pulled.index.expect("still an index").digest, ix.digest);
    }

    /// Regression: a pull of one platform by the registry's index digest recorded that digest
    /// as the platform's image, so `name@<index digest>` stopped naming the index that
    /// `--all-platforms` had stored (by tag or by that digest).
    #[test]
    fn one_platform_pulled_by_an_index_digest_leaves_it_naming_the_index() {
        let (routes, index_digest) = multi_routes();
        let server = FakeRegistry::serve(routes);
        let client = Client::new(&server.addr, &super::super::ClientOptions::default()).unwrap();
        let amd64 = PullOptions {
            platform: Some(Platform::parse("linux/amd64").unwrap()),
        };
        let by_digest = Reference::parse(&format!("{}/r@{index_digest}", server.addr)).unwrap();
        for first in ["r:multi".to_string(), format!("r@{index_digest}")] {
            let (_dir, store) = crate::store::test_support::temp_store();
            let all = Reference::parse(&format!("{}/{first}", server.addr)).unwrap();
            let ix = pull_all_platforms(&store, &client, &all, &|_, _| {})
                .unwrap()
                .index
                .expect("an index");
            let one = pull(&store, &client, &by_digest, &amd64, &|_, _| {}).unwrap();
            assert_eq!(one.digest, index_digest);
            assert!(
                matches!(
                    store.resolve_stored(&by_digest.to_string()).unwrap(),
                    Stored::Index(i) if i.digest == ix.digest
                ),
                "after --all-platforms {first}"
            );
            // The image pulled alone keeps its own name by digest.
            let own = by_digest
                .repository()
                .with_digest(one.image.manifest_digest.clone());
            assert_eq!(
                store.resolve(&own.to_string()).unwrap().id,
                one.image.id,
                "{first}"
            );
            // Once the index is gone, the digest names what a pull of it stores.
            for name in &ix.references {
                store.untag(name).unwrap();
            }
            pull(&store, &client, &by_digest, &amd64, &|_, _| {}).unwrap();
            assert!(
                matches!(
                    store.resolve_stored(&by_digest.to_string()).unwrap(),
                    Stored::Image(i) if i.manifest_digest == one.image.manifest_digest
                ),
                "{first}"
            );
        }
    }
}
