//! An exportable build cache (`kiln build --cache-to` / `--cache-from`): the cache records
//! of a build and the layers they name, as an OCI artifact any OCI image layout or registry
//! stores.
//!
//! # Format
//!
//! One OCI image manifest (`application/vnd.oci.image.manifest.v1+json`) with
//! `artifactType` [`ARTIFACT_TYPE`]:
//!
//! * `config`: a small JSON document of media type [`MEDIA_TYPE_CACHE_CONFIG`]
//!   (`{"cacheVersion":1,"mode":"min"}`);
//! * `layers[0]`: the records blob, media type [`MEDIA_TYPE_RECORDS`]: a versioned JSON
//!   document ([`RecordsDoc`]) listing, for each step's cache key, the layers of the image
//!   after the step (diffID, blob digest, size, media type), the history entries the step
//!   added and the inputs the key was made of;
//! * `layers[1..]`: every layer blob the records name, once each, as uncompressed tars
//!   (`application/vnd.oci.image.layer.v1.tar`, blob digest = diffID).
//!
//! # The transport seam
//!
//! Export and import work on an in-memory [`CacheArtifact`] and go through two traits, so
//! another transport plugs in without touching the build: [`CacheSink`] (where an export is
//! written: has/put blob, then put the manifest last) and [`CacheSource`] (where an import is
//! read: the manifest, then blobs on demand). Every byte read from a source is verified
//! against its digest and size here, never by the transport. [`local`] is the OCI image
//! layout directory transport (`type=local`), [`registry`] the OCI distribution one
//! (`type=registry`): the same artifact, byte for byte, in either.
//!
//! # Several platforms
//!
//! A build of several platforms exports one artifact per destination, as BuildKit exports
//! one cache manifest for all platforms of a build: the records of every platform's steps
//! ([`merge_records`]). The platform is part of every step's key, so the platforms' records
//! never collide, and a step they share (a `FROM --platform=$BUILDPLATFORM` stage that reads
//! no target ARG) has one key and is one record. The format is the one above: an importer
//! finds each platform's steps by key as it finds one platform's.
//!
//! Which gzip blob holds a layer is remembered in the store's `distribution/` records, shared
//! with `kiln push` and pulls: a layer the destination (or, for a registry, another
//! repository it can mount from) already has is neither compressed nor sent again.

pub mod local;
pub mod registry;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{CacheIndex, CacheRecord, LayerRef, CACHE_VERSION};
use crate::image::config::{self, MEDIA_TYPE_LAYER, MEDIA_TYPE_MANIFEST};
use crate::image::{Digest, Sha256Writer};
use crate::store::{fsutil, Lease, Store};

/// `artifactType` of a kiln cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";
/// Media type of the manifest's config blob.
pub const MEDIA_TYPE_CACHE_CONFIG: &str = "application/vnd.kiln.cache.config.v1+json";
/// Media type of the records blob.
pub const MEDIA_TYPE_RECORDS: &str = "application/vnd.kiln.cache.records.v1+json";
/// Version of the records document (2: history entries instead of the whole config).
pub const RECORDS_VERSION: u32 = 2;

/// Largest cache manifest kiln reads.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest records blob kiln reads.
pub const MAX_RECORDS_SIZE: u64 = 64 << 20;
/// Largest config blob kiln reads.
const MAX_CONFIG_SIZE: u64 = 64 << 10;

/// An error of a cache transfer, worded for the user (it names the cache). The variants
/// with a `source` keep it, so the whole chain shows ("cache /dir: write /dir/blobs/…: No
/// space left on device") and a caller can tell an I/O failure from a refused cache.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A flag, or what a cache holds, is not what kiln accepts (a bad spec, a cache of
    /// another version, a blob that does not match its digest, …).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the cache and the file.
        context: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The local store failed.
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: Box<crate::store::StoreError>,
    },
    /// A registry failed (or the transfer was interrupted).
    #[error("{context}: {source}")]
    Registry {
        /// The cache.
        context: String,
        /// The registry client's error.
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    /// A registry reference does not parse.
    #[error("{context}: {source}")]
    Reference {
        /// The flag and its value.
        context: String,
        /// What is wrong with the reference.
        #[source]
        source: Box<crate::image::ReferenceError>,
    },
    /// An image document (manifest, index, descriptor) is malformed or cannot be encoded.
    #[error("{context}: {source}")]
    Document {
        /// Which document, of which cache.
        context: String,
        /// What is wrong with it.
        #[source]
        source: Box<crate::image::ConfigError>,
    },
    /// A layer fetched from a cache was refused by the store (its bytes do not check out).
    #[error("{source}: refusing it")]
    LayerRefused {
        /// The store's error.
        #[source]
        source: Box<crate::store::StoreError>,
    },
    /// A step of the transfer failed; `source` says how.
    #[error("{context}: {source}")]
    Context {
        /// The step (the cache, the layer).
        context: String,
        /// What failed in it.
        #[source]
        source: Box<TransferError>,
    },
}

impl TransferError {
    /// An [`TransferError::Io`] with `context`, for `map_err`.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TransferError {
        let context = context.into();
        move |source| TransferError::Io { context, source }
    }

    /// A [`TransferError::Store`] with `context`, for `map_err`.
    pub(crate) fn store(
        context: impl Into<String>,
    ) -> impl FnOnce(crate::store::StoreError) -> TransferError {
        let context = context.into();
        move |source| TransferError::Store {
            context,
            source: Box::new(source),
        }
    }

    /// A [`TransferError::Document`] with `context`, for `map_err`.
    pub(crate) fn document(
        context: impl Into<String>,
    ) -> impl FnOnce(crate::image::ConfigError) -> TransferError {
        let context = context.into();
        move |source| TransferError::Document {
            context,
            source: Box::new(source),
        }
    }

    /// This error as the cause of a step named `context`.
    pub(crate) fn context(self, context: impl Into<String>) -> TransferError {
        TransferError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The innermost transfer error (through [`TransferError::Context`]), to match a kind.
    pub fn innermost(&self) -> &TransferError {
        match self {
            TransferError::Context { source, .. } => source.innermost(),
            e => e,
        }
    }
}

/// `mode=` of `--cache-to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Only the steps of the final image's stage (and the stages it is `FROM`).
    #[default]
    Min,
    /// Every step of every stage built.
    Max,
}

impl CacheMode {
    fn as_str(self) -> &'static str {
        match self {
            CacheMode::Min => "min",
            CacheMode::Max => "max",
        }
    }
}

/// `--cache-to`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTo {
    /// `type=local,dest=DIR`: an OCI image layout directory.
    Local {
        /// The directory.
        dest: std::path::PathBuf,
        /// The tag in its `index.json`.
        tag: String,
        /// min or max.
        mode: CacheMode,
    },
    /// `type=registry,ref=R`.
    Registry {
        /// The reference the cache is pushed to.
        reference: String,
        /// min or max.
        mode: CacheMode,
    },
}

impl CacheTo {
    /// min or max.
    pub fn mode(&self) -> CacheMode {
        match self {
            CacheTo::Local { mode, .. } | CacheTo::Registry { mode, .. } => *mode,
        }
    }

    /// The sink this export writes to (no request is made yet). `cancel` (Ctrl-C) stops a
    /// registry transfer.
    pub fn sink(
        &self,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<Box<dyn CacheSink>, TransferError> {
        match self {
            CacheTo::Local { dest, tag, .. } => Ok(Box::new(local::LocalLayout::new(dest, tag))),
            CacheTo::Registry { reference, .. } => Ok(Box::new(registry::RegistryCache::new(
                "--cache-to",
                reference,
                true,
                cancel,
            )?)),
        }
    }
}

/// `--cache-from`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFrom {
    /// `type=local,src=DIR`.
    Local {
        /// The directory.
        src: std::path::PathBuf,
        /// The tag in its `index.json`.
        tag: String,
    },
    /// `type=registry,ref=R`.
    Registry {
        /// The reference the cache is pulled from.
        reference: String,
    },
}

impl CacheFrom {
    /// The source this import reads from (no request is made yet). `cancel` (Ctrl-C) stops
    /// a registry transfer.
    pub fn source(
        &self,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<Arc<dyn CacheSource>, TransferError> {
        match self {
            CacheFrom::Local { src, tag } => Ok(Arc::new(local::LocalLayout::new(src, tag))),
            CacheFrom::Registry { reference } => Ok(Arc::new(registry::RegistryCache::new(
                "--cache-from",
                reference,
                false,
                cancel,
            )?)),
        }
    }
}

/// Tag a local cache gets when `tag=` is not given.
pub const DEFAULT_TAG: &str = "latest";

/// A `--cache-to` or `--cache-from` value kiln cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} {spec:?}: {problem}")]
pub struct CacheSpecError {
    /// The flag.
    pub flag: &'static str,
    /// Its value.
    pub spec: String,
    /// What is wrong with it.
    pub problem: String,
}

fn spec_err(flag: &'static str, spec: &str, problem: String) -> CacheSpecError {
    CacheSpecError {
        flag,
        spec: spec.to_string(),
        problem,
    }
}

fn fields(flag: &'static str, spec: &str) -> Result<BTreeMap<String, String>, CacheSpecError> {
    let mut out = BTreeMap::new();
    for field in spec.split(',') {
        let Some((k, v)) = field.split_once('=') else {
            return Err(spec_err(
                flag,
                spec,
                format!("expected KEY=VALUE fields, got {field:?}"),
            ));
        };
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(spec_err(flag, spec, format!("{k} given twice")));
        }
    }
    Ok(out)
}

fn take_nonempty(
    f: &mut BTreeMap<String, String>,
    key: &str,
    flag: &'static str,
    spec: &str,
) -> Result<String, CacheSpecError> {
    match f.remove(key) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(spec_err(flag, spec, format!("{key}= is required"))),
    }
}

fn no_more(
    f: &BTreeMap<String, String>,
    flag: &'static str,
    spec: &str,
) -> Result<(), CacheSpecError> {
    match f.keys().next() {
        Some(k) => Err(spec_err(flag, spec, format!("unknown field {k:?}"))),
        None => Ok(()),
    }
}

/// Parses `--cache-to type=local,dest=DIR[,mode=min|max][,tag=T]` or
/// `type=registry,ref=R[,mode=...]`.
pub fn parse_cache_to(spec: &str) -> Result<CacheTo, CacheSpecError> {
    const FLAG: &str = "--cache-to";
    let mut f = fields(FLAG, spec)?;
    let mode = match f.remove("mode").as_deref() {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(other) => {
            return Err(spec_err(
                FLAG,
                spec,
                format!("mode={other}: expected min or max"),
            ))
        }
    };
    let kind = take_nonempty(&mut f, "type", FLAG, spec)?;
    let out = match kind.as_str() {
        "local" => CacheTo::Local {
            dest: take_nonempty(&mut f, "dest", FLAG, spec)?.into(),
            tag: f.remove("tag").unwrap_or_else(|| DEFAULT_TAG.to_string()),
            mode,
        },
        "registry" => CacheTo::Registry {
            reference: take_nonempty(&mut f, "ref", FLAG, spec)?,
            mode,
        },
        other => {
            return Err(spec_err(
                FLAG,
                spec,
                format!("type={other}: expected local or registry"),
            ))
        }
    };
    no_more(&f, FLAG, spec)?;
    Ok(out)
}

/// Parses `--cache-from type=local,src=DIR[,tag=T]` or `type=registry,ref=R`; a value
/// without any `=` is a registry reference, `type=registry,ref=VALUE`, as in BuildKit.
pub fn parse_cache_from(spec: &str) -> Result<CacheFrom, CacheSpecError> {
    const FLAG: &str = "--cache-from";
    if !spec.is_empty() && !spec.contains('=') {
        return Ok(CacheFrom::Registry {
            reference: spec.to_string(),
        });
    }
    let mut f = fields(FLAG, spec)?;
    let kind = take_nonempty(&mut f, "type", FLAG, spec)?;
    let out = match kind.as_str() {
        "local" => CacheFrom::Local {
            src: take_nonempty(&mut f, "src", FLAG, spec)?.into(),
            tag: f.remove("tag").unwrap_or_else(|| DEFAULT_TAG.to_string()),
        },
        "registry" => CacheFrom::Registry {
            reference: take_nonempty(&mut f, "ref", FLAG, spec)?,
        },
        other => {
            return Err(spec_err(
                FLAG,
                spec,
                format!("type={other}: expected local or registry"),
            ))
        }
    };
    no_more(&f, FLAG, spec)?;
    Ok(out)
}

/// A blob of the artifact: what a descriptor says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDesc {
    /// Its digest (of the bytes as stored and sent).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
}

/// Opens a blob to send, from its start.
pub type OpenBlob<'a> = dyn Fn() -> std::io::Result<Box<dyn Read + Send + 'a>> + 'a;

/// Where a cache export is written (a local layout, a registry). The exporter calls
/// `has_blob`/`put_blob` for every blob (several at once, up to [`CacheSink::parallel`]),
/// then `put_manifest` once, last.
pub trait CacheSink: Sync {
    /// The destination, for messages (`cache /dir`, `registry host/repo:tag`).
    fn describe(&self) -> String;
    /// True when the destination already holds this blob (it is then not sent again).
    fn has_blob(&self, blob: &BlobDesc) -> Result<bool, TransferError>;
    /// Store one blob. `open` gives a reader from the start of the blob (again, if the
    /// transport must resend), yielding `blob.size` bytes hashing to `blob.digest`.
    fn put_blob(&self, blob: &BlobDesc, open: &OpenBlob<'_>) -> Result<(), TransferError>;
    /// Publish the manifest (after all its blobs), under the destination's tag.
    fn put_manifest(&self, manifest: &[u8], desc: &BlobDesc) -> Result<(), TransferError>;
    /// Makes the destination hold `blob` without sending it, from one of `sources` (the
    /// `registry/repository` names kiln saw it in); true when it did. By default it cannot.
    fn mount_blob(&self, _blob: &BlobDesc, _sources: &[String]) -> Result<bool, TransferError> {
        Ok(false)
    }
    /// The `registry/repository` its blobs are in, when another repository of the same
    /// registry can mount them from it.
    fn blob_source(&self) -> Option<String> {
        None
    }
    /// How many blobs it takes at once.
    fn parallel(&self) -> usize {
        1
    }
}

/// Where a cache import is read from. The transport only fetches bytes; the importer
/// verifies every one of them against the digest and size it asked for.
pub trait CacheSource: Send + Sync {
    /// The source, for messages.
    fn describe(&self) -> String;
    /// The cache manifest's bytes, and its descriptor when the transport knows it (a tag in
    /// `index.json`; a registry's `Docker-Content-Digest`), to verify them against.
    fn manifest(&self) -> Result<(Vec<u8>, Option<BlobDesc>), TransferError>;
    /// A blob's bytes as a stream (not yet verified).
    fn open_blob(&self, blob: &BlobDesc) -> Result<Box<dyn Read + Send>, TransferError>;
    /// The `registry/repository` its blobs are in (see [`CacheSink::blob_source`]).
    fn blob_source(&self) -> Option<String> {
        None
    }
}

/// One layer as the records blob lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedLayer {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub diff_size: u64,
    /// Digest of the blob carrying it in the artifact.
    pub digest: Digest,
    /// Size of that blob.
    pub size: u64,
    /// Media type of that blob ([`MEDIA_TYPE_LAYER_GZIP`] or [`MEDIA_TYPE_LAYER`]).
    pub media_type: String,
}

/// One step's record in the records blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedRecord {
    /// The step's cache key.
    pub key: Digest,
    /// All layers of the image after the step, bottom first.
    pub layers: Vec<ExportedLayer>,
    /// The history entries the step added.
    #[serde(default)]
    pub history: Vec<crate::image::spec::History>,
    /// The inputs the key was made of.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

/// The records blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordsDoc {
    /// [`RECORDS_VERSION`].
    pub version: u32,
    /// The [`CACHE_VERSION`] of the keys; records of another version never match.
    pub cache_version: u32,
    /// The records.
    pub records: Vec<ExportedRecord>,
}

/// A whole cache export in memory: the small documents' bytes, and the layer blobs (gzip
/// files staged in the store's `tmp/`, or known to be at the destination already).
#[derive(Debug)]
pub struct CacheArtifact {
    /// The manifest's bytes (canonical JSON).
    pub manifest: Vec<u8>,
    /// The manifest's descriptor.
    pub manifest_desc: BlobDesc,
    /// The config blob's bytes and descriptor.
    pub config: (Vec<u8>, BlobDesc),
    /// The records blob's bytes and descriptor.
    pub records: (Vec<u8>, BlobDesc),
    /// The layer blobs, in manifest order.
    pub layers: Vec<BlobDesc>,
    /// The layer each of `layers` holds.
    layer_diff_ids: Vec<Digest>,
    /// The compressed layers the destination lacked, staged under the store's `tmp/`
    /// (removed when the artifact is dropped).
    staged: HashMap<Digest, fsutil::TempPath>,
    /// Keeps garbage collection off the staged files.
    _lease: Lease,
}

/// Media type of a gzip-compressed layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn desc_of(bytes: &[u8], media_type: &str) -> BlobDesc {
    BlobDesc {
        digest: Digest::of_bytes(bytes),
        size: bytes.len() as u64,
        media_type: media_type.to_string(),
    }
}

fn encode_err(what: &str) -> impl FnOnce(config::ConfigError) -> TransferError {
    TransferError::document(format!("encoding the cache {what}"))
}

/// Whether `media_type` is a gzip layer (OCI's or Docker's: the bytes are the same kind).
fn is_gzip_layer(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_LAYER_GZIP || media_type == crate::registry::media::DOCKER_LAYER_GZIP
}

/// A gzip blob of layer `diff_id` that `sink` holds already, or has just mounted from where
/// kiln saw it (a push, a pull, an earlier export or import: the store's
/// `distribution/` records), so the layer is neither compressed nor sent again.
fn known_at_sink(
    store: &Store,
    sink: &dyn CacheSink,
    diff_id: &Digest,
) -> Result<Option<BlobDesc>, TransferError> {
    let known: Vec<_> = crate::registry::distribution::known(store, diff_id)
        .into_iter()
        .filter(|k| is_gzip_layer(&k.media_type))
        .collect();
    let desc = |k: &crate::registry::distribution::KnownBlob| BlobDesc {
        digest: k.digest.clone(),
        size: k.size,
        media_type: MEDIA_TYPE_LAYER_GZIP.to_string(),
    };
    for k in &known {
        if sink.has_blob(&desc(k))? {
            return Ok(Some(desc(k)));
        }
    }
    for k in &known {
        if sink.mount_blob(&desc(k), &k.sources)? {
            return Ok(Some(desc(k)));
        }
    }
    Ok(None)
}

/// Records that the gzip blob `desc` holds layer `diff_id` (and is in `source`, a
/// `registry/repository`), for later exports and pushes.
fn remember_gzip(store: &Store, diff_id: &Digest, desc: &BlobDesc, source: Option<&str>) {
    let blob = crate::registry::distribution::KnownBlob {
        digest: desc.digest.clone(),
        size: desc.size,
        media_type: MEDIA_TYPE_LAYER_GZIP.to_string(),
        sources: Vec::new(),
    };
    crate::registry::distribution::remember(store, diff_id, &blob, source);
}

/// Compresses the store's layer `diff_id` into a temp file under the store's `tmp/`.
fn compress_layer(
    store: &Store,
    diff_id: &Digest,
) -> Result<(BlobDesc, fsutil::TempPath), TransferError> {
    let context = || format!("compressing layer {diff_id}");
    let mut src = std::io::BufReader::new(
        store
            .open_blob(diff_id)
            .map_err(TransferError::store(context()))?,
    );
    let (tmp, file) = fsutil::create_temp_file(&store.tmp_dir(), "cache-gz")
        .map_err(TransferError::store(context()))?;
    let guard = fsutil::TempPath::new(tmp);
    let hashed = Sha256Writer::new(std::io::BufWriter::new(file));
    let mut gz = flate2::write::GzEncoder::new(hashed, flate2::Compression::default());
    std::io::copy(&mut src, &mut gz).map_err(TransferError::io(context()))?;
    let hashed = gz.finish().map_err(TransferError::io(context()))?;
    let (buffered, digest, size) = hashed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| TransferError::io(context())(e.into_error()))?;
    file.sync_all().map_err(TransferError::io(context()))?;
    let desc = BlobDesc {
        digest,
        size,
        media_type: MEDIA_TYPE_LAYER_GZIP.to_string(),
    };
    Ok((desc, guard))
}

impl CacheArtifact {
    /// The artifact for `records`, to be written to `sink`. Layers are gzip-compressed;
    /// one the sink already holds (by the digest it compressed to last time) is not
    /// compressed again. The records, and so the layers (each where a record first names
    /// it), are in key order whatever order `records` is in: the steps of parallel stages
    /// finish in any order, and an unchanged build must give the same manifest.
    pub fn new(
        store: &Store,
        records: &[CacheRecord],
        mode: CacheMode,
        sink: &dyn CacheSink,
    ) -> Result<CacheArtifact, TransferError> {
        let lease = store
            .lease()
            .map_err(TransferError::store("exporting the cache"))?;
        let mut layers = Vec::new();
        let mut layer_diff_ids = Vec::new();
        let mut by_diff: HashMap<Digest, BlobDesc> = HashMap::new();
        let mut staged = HashMap::new();
        let mut exported = Vec::new();
        let mut records: Vec<&CacheRecord> = records.iter().collect();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        for rec in records {
            let mut ls = Vec::new();
            for l in &rec.layers {
                if !by_diff.contains_key(&l.diff_id) {
                    let blob = match known_at_sink(store, sink, &l.diff_id)? {
                        Some(d) => d,
                        None => {
                            let (d, file) = compress_layer(store, &l.diff_id)?;
                            remember_gzip(store, &l.diff_id, &d, None);
                            staged.insert(d.digest.clone(), file);
                            d
                        }
                    };
                    layers.push(blob.clone());
                    layer_diff_ids.push(l.diff_id.clone());
                    by_diff.insert(l.diff_id.clone(), blob);
                }
                let blob = &by_diff[&l.diff_id];
                ls.push(ExportedLayer {
                    diff_id: l.diff_id.clone(),
                    diff_size: l.size,
                    digest: blob.digest.clone(),
                    size: blob.size,
                    media_type: blob.media_type.clone(),
                });
            }
            exported.push(ExportedRecord {
                key: rec.key.clone(),
                layers: ls,
                history: rec.history.clone(),
                inputs: rec.inputs.clone(),
            });
        }
        let doc = RecordsDoc {
            version: RECORDS_VERSION,
            cache_version: CACHE_VERSION,
            records: exported,
        };
        let records_bytes =
            config::canonical_json("records", &doc).map_err(encode_err("records"))?;
        let records_desc = desc_of(&records_bytes, MEDIA_TYPE_RECORDS);
        let config_bytes = config::canonical_json(
            "cache config",
            &serde_json::json!({"cacheVersion": CACHE_VERSION, "mode": mode.as_str()}),
        )
        .map_err(encode_err("config"))?;
        let config_desc = desc_of(&config_bytes, MEDIA_TYPE_CACHE_CONFIG);
        let oci = |d: &BlobDesc| config::descriptor(&d.media_type, &d.digest, d.size);
        let mut manifest = config::new_manifest(
            oci(&config_desc),
            std::iter::once(&records_desc)
                .chain(&layers)
                .map(oci)
                .collect(),
        );
        manifest.set_artifact_type(Some(ARTIFACT_TYPE.into()));
        let manifest_bytes =
            config::canonical_json("manifest", &manifest).map_err(encode_err("manifest"))?;
        Ok(CacheArtifact {
            manifest_desc: desc_of(&manifest_bytes, MEDIA_TYPE_MANIFEST),
            manifest: manifest_bytes,
            config: (config_bytes, config_desc),
            records: (records_bytes, records_desc),
            layers,
            layer_diff_ids,
            staged,
            _lease: lease,
        })
    }

    /// The bytes of one of its blobs, to send (config, records or a layer).
    pub fn open_blob(&self, desc: &BlobDesc) -> std::io::Result<Box<dyn Read + Send + '_>> {
        for (bytes, d) in [&self.config, &self.records] {
            if d.digest == desc.digest {
                return Ok(Box::new(&bytes[..]));
            }
        }
        if desc.digest == self.manifest_desc.digest {
            return Ok(Box::new(&self.manifest[..]));
        }
        let staged = self.staged.get(&desc.digest).ok_or_else(|| {
            std::io::Error::other(format!(
                "blob {} is not staged for export (the destination had it)",
                desc.digest
            ))
        })?;
        let f = std::fs::File::open(staged.path()).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", staged.path().display()))
        })?;
        Ok(Box::new(std::io::BufReader::new(f)))
    }
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Records exported.
    pub records: usize,
    /// Blobs written.
    pub written: usize,
    /// Blobs the destination already had.
    pub skipped: usize,
}

/// The records of a build of several platforms for one export: each platform's selection
/// (by the export's [`CacheMode`]), a record the platforms share (same key) once. They are in
/// key order, so the artifact is the same whichever platform finished first.
pub fn merge_records<I>(per_platform: I) -> Vec<CacheRecord>
where
    I: IntoIterator<Item = Vec<CacheRecord>>,
{
    let mut by_key = BTreeMap::new();
    for rec in per_platform.into_iter().flatten() {
        by_key.entry(rec.key.clone()).or_insert(rec);
    }
    by_key.into_values().collect()
}

/// Writes `artifact` to `sink`: every blob the sink lacks, then the manifest. The store
/// remembers where its layers' blobs now are (a registry repository), so a push of the image
/// mounts them instead of sending them again.
pub fn export(
    store: &Store,
    artifact: &CacheArtifact,
    sink: &dyn CacheSink,
) -> Result<ExportReport, TransferError> {
    let mut report = ExportReport::default();
    let blobs: Vec<&BlobDesc> = [&artifact.config.1, &artifact.records.1]
        .into_iter()
        .chain(&artifact.layers)
        .collect();
    let written = crate::registry::parallel_map(&blobs, sink.parallel(), |desc| {
        if sink.has_blob(desc)? {
            return Ok(false);
        }
        sink.put_blob(desc, &|| artifact.open_blob(desc))?;
        Ok(true)
    })?;
    report.written = written.iter().filter(|w| **w).count();
    report.skipped = written.len() - report.written;
    sink.put_manifest(&artifact.manifest, &artifact.manifest_desc)?;
    if let Some(source) = sink.blob_source() {
        for (desc, diff_id) in artifact.layers.iter().zip(&artifact.layer_diff_ids) {
            remember_gzip(store, diff_id, desc, Some(&source));
        }
    }
    report.records = serde_json::from_slice::<RecordsDoc>(&artifact.records.0)
        .map(|d| d.records.len())
        .unwrap_or_default();
    Ok(report)
}

/// Reads a small blob from `source`, at most `limit` bytes, and checks its digest and size.
fn read_verified(
    source: &dyn CacheSource,
    desc: &BlobDesc,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>, TransferError> {
    let name = source.describe();
    if desc.size > limit {
        return Err(TransferError::Invalid(format!(
            "{name}: the {what} is {} bytes, more than the {limit} kiln reads",
            desc.size
        )));
    }
    let mut bytes = Vec::new();
    source
        .open_blob(desc)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(TransferError::io(format!(
            "{name}: reading the {what} {}",
            desc.digest
        )))?;
    check_bytes(&name, what, &bytes, desc)?;
    Ok(bytes)
}

fn check_bytes(name: &str, what: &str, bytes: &[u8], desc: &BlobDesc) -> Result<(), TransferError> {
    let actual = Digest::of_bytes(bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(TransferError::Invalid(format!(
            "{name}: the {what} does not match its digest (expected {} of {} bytes, got {actual} \
             of {} bytes): refusing it",
            desc.digest,
            desc.size,
            bytes.len()
        )));
    }
    Ok(())
}

/// The records of one imported cache, and where their layers are read from.
pub struct ImportedSource {
    source: Arc<dyn CacheSource>,
    records: HashMap<Digest, ExportedRecord>,
}

impl std::fmt::Debug for ImportedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedSource")
            .field("source", &self.source.describe())
            .field("records", &self.records.len())
            .finish()
    }
}

impl ImportedSource {
    /// Reads and checks the manifest and the records blob of `source` (layers are read only
    /// when a step hits).
    pub fn load(source: Arc<dyn CacheSource>) -> Result<ImportedSource, TransferError> {
        let name = source.describe();
        let bad = |why: String| TransferError::Invalid(format!("{name}: not a kiln cache: {why}"));
        let bad_doc = || TransferError::document(format!("{name}: not a kiln cache"));
        let (bytes, desc) = source.manifest()?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(bad(format!(
                "the manifest is larger than {MAX_MANIFEST_SIZE} bytes"
            )));
        }
        if let Some(desc) = &desc {
            check_bytes(&name, "cache manifest", &bytes, desc)?;
        }
        let manifest = config::parse_manifest(&bytes).map_err(bad_doc())?;
        let ours = manifest.artifact_type().as_ref().map(|t| t.to_string())
            == Some(ARTIFACT_TYPE.to_string())
            || manifest.config().media_type().to_string() == MEDIA_TYPE_CACHE_CONFIG;
        if !ours {
            return Err(bad(format!(
                "the manifest's artifactType is not {ARTIFACT_TYPE}"
            )));
        }
        let records_desc = manifest
            .layers()
            .iter()
            .find(|l| l.media_type().to_string() == MEDIA_TYPE_RECORDS)
            .ok_or_else(|| bad(format!("no {MEDIA_TYPE_RECORDS} blob in the manifest")))?;
        let records_desc = BlobDesc {
            digest: config::descriptor_digest("manifest", "layers", records_desc)
                .map_err(bad_doc())?,
            size: records_desc.size(),
            media_type: MEDIA_TYPE_RECORDS.to_string(),
        };
        let config_desc = BlobDesc {
            digest: config::descriptor_digest("manifest", "config", manifest.config())
                .map_err(bad_doc())?,
            size: manifest.config().size(),
            media_type: manifest.config().media_type().to_string(),
        };
        // The config is small and says which cache version the keys are.
        let config_bytes = read_verified(&*source, &config_desc, "cache config", MAX_CONFIG_SIZE)?;
        let config_version = serde_json::from_slice::<serde_json::Value>(&config_bytes)
            .ok()
            .and_then(|v| v.get("cacheVersion").and_then(|n| n.as_u64()));
        // Keys of another version never match this kiln's: nothing in it can be used (and
        // its records, of another format, are not read).
        let other_version = |v: u64| {
            TransferError::Invalid(format!(
                "{name}: made with cache key version {v} (this kiln's is {CACHE_VERSION}): none \
                 of its steps can match"
            ))
        };
        match config_version {
            Some(v) if v != u64::from(CACHE_VERSION) => return Err(other_version(v)),
            _ => {}
        }
        let records_bytes =
            read_verified(&*source, &records_desc, "cache records", MAX_RECORDS_SIZE)?;
        let doc: RecordsDoc = serde_json::from_slice(&records_bytes)
            .map_err(|e| bad(format!("the records blob: {e}")))?;
        if doc.version != RECORDS_VERSION {
            return Err(bad(format!(
                "records version {} (this kiln reads {RECORDS_VERSION})",
                doc.version
            )));
        }
        if doc.cache_version != CACHE_VERSION || config_version != Some(u64::from(CACHE_VERSION)) {
            return Err(other_version(u64::from(doc.cache_version)));
        }
        let records = doc
            .records
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect();
        Ok(ImportedSource { source, records })
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when it holds no usable record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The source, for messages.
    pub fn describe(&self) -> String {
        self.source.describe()
    }
}

/// Every `--cache-from` source of a build.
#[derive(Debug, Default)]
pub struct ImportedCache {
    sources: Vec<ImportedSource>,
}

/// A step answered from an imported cache.
#[derive(Debug, Clone)]
pub struct ImportedHit {
    /// The record, now also in the local cache.
    pub record: CacheRecord,
    /// Which cache answered, for the progress line.
    pub source: String,
}

impl ImportedCache {
    /// Loads every source; one that cannot be read is reported through `warn` and skipped
    /// (the build goes on without it, as BuildKit does).
    pub fn load(
        specs: &[CacheFrom],
        cancel: Option<&Arc<AtomicBool>>,
        warn: &mut dyn FnMut(String),
    ) -> ImportedCache {
        let mut sources = Vec::new();
        for spec in specs {
            match spec.source(cancel).and_then(ImportedSource::load) {
                Ok(s) => sources.push(s),
                Err(e) => warn(format!("--cache-from: {e}; building without it")),
            }
        }
        ImportedCache { sources }
    }

    /// True when no source was loaded.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The record for `key` from the first source that has it and whose layers all check
    /// out. Layers the store lacks are fetched (verified against their digest and size) and
    /// the record is added to the local cache, so the next build hits locally. A source
    /// whose blob is missing or does not match is reported through `warn` and the next is
    /// tried; `None` when no source can answer.
    pub fn fetch(
        &self,
        store: &Store,
        local: &CacheIndex,
        key: &Digest,
        warn: &mut dyn FnMut(String),
    ) -> Option<ImportedHit> {
        for src in &self.sources {
            let Some(rec) = src.records.get(key) else {
                continue;
            };
            match import_record(store, local, src, rec) {
                Ok(record) => {
                    return Some(ImportedHit {
                        record,
                        source: src.describe(),
                    })
                }
                Err(e) => warn(format!("{e}; building the step instead")),
            }
        }
        None
    }
}

/// Counts and hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Fetches one layer from `source` into the store: the blob's bytes are checked against
/// its digest and size, and the uncompressed tar against its diffID and size, before
/// anything is kept.
fn fetch_layer(
    store: &Store,
    source: &dyn CacheSource,
    l: &ExportedLayer,
) -> Result<(), TransferError> {
    let desc = BlobDesc {
        digest: l.digest.clone(),
        size: l.size,
        media_type: l.media_type.clone(),
    };
    let refuse = |e: String| TransferError::Invalid(format!("{e}: refusing it"));
    let refused = |source| TransferError::LayerRefused {
        source: Box::new(source),
    };
    let mut hashed = HashingReader {
        inner: source.open_blob(&desc)?.take(l.size.saturating_add(1)),
        hasher: sha2::Sha256::default(),
        count: 0,
    };
    match l.media_type.as_str() {
        MEDIA_TYPE_LAYER if l.digest == l.diff_id && l.size == l.diff_size => store
            .put_blob_sized(&mut hashed, &l.diff_id, l.diff_size)
            .map_err(refused)?,
        MEDIA_TYPE_LAYER_GZIP => {
            let mut gz = flate2::read::GzDecoder::new(&mut hashed);
            store
                .put_blob_sized(&mut gz, &l.diff_id, l.diff_size)
                .map_err(refused)?;
            // The tar is right (its diffID checked out); the blob must be too, to the end.
            std::io::copy(&mut hashed, &mut std::io::sink()).map_err(TransferError::io(
                "reading the layer's compressed blob to its end",
            ))?;
        }
        other => {
            return Err(TransferError::Invalid(format!(
                "media type {other} (with diffID {}), which kiln does not import",
                l.diff_id
            )))
        }
    }
    let digest = Digest::from_hasher(hashed.hasher);
    if digest != l.digest || hashed.count != l.size {
        return Err(refuse(format!(
            "the blob does not match its digest (got {digest} of {} bytes, expected {} bytes)",
            hashed.count, l.size
        )));
    }
    if l.media_type == MEDIA_TYPE_LAYER_GZIP {
        // A later export or push of this layer uses (or mounts) this blob without
        // compressing it again.
        remember_gzip(store, &l.diff_id, &desc, source.blob_source().as_deref());
    }
    Ok(())
}

fn import_record(
    store: &Store,
    local: &CacheIndex,
    src: &ImportedSource,
    rec: &ExportedRecord,
) -> Result<CacheRecord, TransferError> {
    let name = src.describe();
    let _lease = store.lease().map_err(TransferError::store(name.clone()))?;
    let mut layers = Vec::new();
    for l in &rec.layers {
        if !store.has_blob(&l.diff_id) {
            fetch_layer(store, &*src.source, l)
                .map_err(|e| e.context(format!("{name}: layer {}", l.digest)))?;
            tracing::debug!(layer = %l.digest, cache = %name, "imported a cached layer");
        }
        layers.push(LayerRef {
            diff_id: l.diff_id.clone(),
            size: l.diff_size,
        });
    }
    let record = CacheRecord {
        version: CACHE_VERSION,
        key: rec.key.clone(),
        layers,
        history: rec.history.clone(),
        inputs: rec.inputs.clone(),
    };
    if let Err(e) = local.put(&record) {
        tracing::warn!(error = %e, "cannot record an imported cache entry locally");
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_reject_garbage() {
        assert_eq!(
            parse_cache_to("type=local,dest=/c,mode=max").unwrap(),
            CacheTo::Local {
                dest: "/c".into(),
                tag: DEFAULT_TAG.into(),
                mode: CacheMode::Max
            }
        );
        assert_eq!(
            parse_cache_to("type=local,dest=/c").unwrap().mode(),
            CacheMode::Min
        );
        assert_eq!(
            parse_cache_to("type=registry,ref=localhost:5000/c:1").unwrap(),
            CacheTo::Registry {
                reference: "localhost:5000/c:1".into(),
                mode: CacheMode::Min
            }
        );
        assert_eq!(
            parse_cache_from("type=local,src=/c,tag=x").unwrap(),
            CacheFrom::Local {
                src: "/c".into(),
                tag: "x".into()
            }
        );
        for bad in [
            "type=local",
            "dest=/c",
            "type=s3,dest=/c",
            "type=local,dest=/c,mode=all",
            "type=local,dest=/c,color=red",
            "type=local,dest=/c,dest=/d",
            "/c",
        ] {
            assert!(parse_cache_to(bad).is_err(), "{bad}");
        }
        assert!(parse_cache_from("type=local,dest=/c").is_err());
        // BuildKit's shorthand: a bare reference is a registry cache.
        for r in ["127.0.0.1:5000/c:1", "busybox", "ghcr.io/o/app@sha256:abc"] {
            assert_eq!(
                parse_cache_from(r).unwrap(),
                CacheFrom::Registry {
                    reference: r.into()
                }
            );
        }
        assert!(parse_cache_from("").is_err());
        let sink = parse_cache_to("type=registry,ref=127.0.0.1:5000/c:main,mode=max")
            .unwrap()
            .sink(None)
            .unwrap();
        assert_eq!(sink.describe(), "registry 127.0.0.1:5000/c:main");
        let source = parse_cache_from("type=registry,ref=127.0.0.1:5000/c")
            .unwrap()
            .source(None)
            .unwrap();
        assert_eq!(source.describe(), "registry 127.0.0.1:5000/c:latest");
    }
}
