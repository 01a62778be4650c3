//! `kiln push`: an image of the store to a registry. Layers are compressed
//! in parallel (gzip, or zstd on request) into `<root>/tmp`; a layer whose
//! compressed blob kiln already knows (see [`super::distribution`]) is not
//! compressed again when the registry has it or can mount it from another
//! repository. Blobs go first, the manifest last.
//!
//! [`push_manifest`] is the general form: any manifest (an image, an index,
//! an artifact such as a build-cache export) with the blobs it references.

use std::io::{BufReader, BufWriter, Read, Write};

use sha2::Digest as _;
use std::path::PathBuf;

use super::client::Client;
use super::distribution::{self, KnownBlob};
use super::error::{RegistryError, Result};
use super::parallel;
use super::pull::{Progress, Status};
use super::{media, Compression};
use crate::image::config::{self};
use crate::image::index_doc;
use crate::image::{Digest, Reference, Sha256Writer};
use crate::store::{fsutil, ImageRecord, IndexRecord, Store, Stored};

/// Opens a blob for reading from its start (called again for a retry).
pub type OpenBlob<'a> =
    Box<dyn Fn() -> std::io::Result<Box<dyn Read + Send + 'a>> + Send + Sync + 'a>;

/// A blob a manifest references, and how to read it.
pub struct BlobSource<'a> {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Reads it.
    pub open: OpenBlob<'a>,
}

impl<'a> BlobSource<'a> {
    /// A blob held in memory.
    pub fn bytes(bytes: &'a [u8]) -> BlobSource<'a> {
        BlobSource {
            digest: Digest::of_bytes(bytes),
            size: bytes.len() as u64,
            open: Box::new(move || Ok(Box::new(bytes) as Box<dyn Read + Send + 'a>)),
        }
    }

    /// A file (a blob of the store, a compressed layer in `<root>/tmp`).
    pub fn file(path: PathBuf, digest: Digest, size: u64) -> BlobSource<'a> {
        BlobSource {
            digest,
            size,
            open: Box::new(move || {
                Ok(Box::new(BufReader::new(std::fs::File::open(&path)?))
                    as Box<dyn Read + Send + 'a>)
            }),
        }
    }
}

/// How to push.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    /// Layer compression.
    pub compression: Compression,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            compression: Compression::Gzip,
        }
    }
}

/// A pushed image.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest in the registry.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
}

/// Pushes `blobs` the registry does not have (in parallel), then the
/// manifest under `reference` (a tag, or the manifest's digest); returns
/// the manifest's digest. Works for any manifest and media type: image
/// manifests, indexes, artifacts.
pub fn push_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    manifest: &[u8],
    media_type: &str,
    blobs: &[BlobSource<'_>],
    progress: Progress<'_>,
) -> Result<Digest> {
    let labelled: Vec<(&BlobSource<'_>, String)> = blobs
        .iter()
        .map(|b| (b, b.digest.hex()[..12].to_string()))
        .collect();
    push_blobs(client, repo, &labelled, progress)?;
    client.put_manifest(repo, reference, manifest, media_type)
}

/// Uploads the blobs the registry lacks, in parallel, reporting each under its label.
fn push_blobs(
    client: &Client,
    repo: &str,
    blobs: &[(&BlobSource<'_>, String)],
    progress: Progress<'_>,
) -> Result<()> {
    parallel(blobs, client.options().parallel, |(b, id)| {
        if client.has_blob(repo, &b.digest)?.is_some() {
            progress(id, Status::LayerExists);
            return Ok(());
        }
        progress(id, Status::Pushing(0, b.size));
        client.upload_blob(repo, &b.digest, b.size, &*b.open)?;
        progress(id, Status::Pushed);
        Ok(())
    })?;
    Ok(())
}

/// A layer ready for the manifest: already in the registry, or compressed
/// into a temp file to upload.
struct Prepared {
    blob: KnownBlob,
    file: Option<fsutil::TempPath>,
}

/// Finds or makes the compressed blob of one layer.
fn prepare_layer(
    store: &Store,
    client: &Client,
    repo: &str,
    diff_id: &Digest,
    compression: Compression,
    progress: Progress<'_>,
) -> Result<Prepared> {
    let id = &diff_id.hex()[..12];
    let here = format!("{}/{repo}", client.registry());
    let known: Vec<KnownBlob> = distribution::known(store, diff_id)
        .into_iter()
        .filter(|k| k.compression() == Some(compression))
        .collect();
    for k in &known {
        if client.has_blob(repo, &k.digest)? == Some(k.size) {
            progress(id, Status::LayerExists);
            distribution::remember(store, diff_id, k, Some(&here));
            return Ok(Prepared {
                blob: k.clone(),
                file: None,
            });
        }
    }
    let prefix = format!("{}/", client.registry());
    for k in &known {
        for from in k.sources.iter().filter_map(|s| s.strip_prefix(&prefix)) {
            if from != repo && client.mount_blob(repo, &k.digest, from)? {
                progress(id, Status::Mounted(from.to_string()));
                distribution::remember(store, diff_id, k, Some(&here));
                return Ok(Prepared {
                    blob: k.clone(),
                    file: None,
                });
            }
        }
    }
    progress(id, Status::Preparing);
    let (tmp, file) = fsutil::create_temp_file(&store.tmp_dir(), "push")?;
    let guard = fsutil::TempPath::new(tmp.clone());
    let write_err = |e: std::io::Error| RegistryError::Io {
        op: "compress layer into",
        path: tmp.display().to_string(),
        source: e,
    };
    let mut src = store.open_blob(diff_id)?;
    let mut enc = compression
        .writer(Sha256Writer::new(BufWriter::new(file)))
        .map_err(write_err)?;
    let mut buf = vec![0u8; 256 << 10];
    // The stored layer is checked as it is read: a corrupted store never reaches a registry.
    let mut check = sha2::Sha256::new();
    loop {
        if client.options().cancelled() {
            return Err(RegistryError::Interrupted);
        }
        let n = src.read(&mut buf).map_err(|e| RegistryError::Io {
            op: "read",
            path: format!("layer {diff_id}"),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        check.update(&buf[..n]);
        enc.write_all(&buf[..n]).map_err(write_err)?;
    }
    let actual = Digest::from_hasher(check);
    if actual != *diff_id {
        return Err(crate::store::StoreError::DigestMismatch {
            expected: diff_id.clone(),
            actual,
        }
        .into());
    }
    let (mut out, digest, size) = enc.finish().map_err(write_err)?.finish();
    out.flush().map_err(write_err)?;
    let blob = KnownBlob {
        digest,
        size,
        media_type: compression.oci_layer_type().map_err(write_err)?.to_string(),
        sources: Vec::new(),
    };
    distribution::remember(store, diff_id, &blob, None);
    Ok(Prepared {
        blob,
        file: Some(guard),
    })
}

/// Makes sure `repo` has a compressed blob of each stored layer `diff_ids`
/// (skipped when the registry has a known one, mounted from another
/// repository, or compressed in parallel and uploaded) and returns their
/// descriptors, in order. Public for other exporters of store layers (a
/// build cache); the manifest is the caller's ([`push_manifest`]).
pub fn push_layers(
    store: &Store,
    client: &Client,
    repo: &str,
    diff_ids: &[Digest],
    compression: Compression,
    progress: Progress<'_>,
) -> Result<Vec<KnownBlob>> {
    // The temp files of compressed layers must outlive a concurrent gc.
    let _lease = store.lease()?;
    let prepared = parallel(diff_ids, client.options().parallel, |d| {
        prepare_layer(store, client, repo, d, compression, progress)
    })?;
    let uploads: Vec<(BlobSource<'_>, String)> = prepared
        .iter()
        .zip(diff_ids)
        .filter_map(|(p, d)| {
            p.file.as_ref().map(|f| {
                (
                    BlobSource::file(f.path().to_path_buf(), p.blob.digest.clone(), p.blob.size),
                    d.hex()[..12].to_string(),
                )
            })
        })
        .collect();
    let labelled: Vec<(&BlobSource<'_>, String)> =
        uploads.iter().map(|(b, id)| (b, id.clone())).collect();
    push_blobs(client, repo, &labelled, progress)?;
    let here = format!("{}/{repo}", client.registry());
    for (p, d) in prepared.iter().zip(diff_ids) {
        distribution::remember(store, d, &p.blob, Some(&here));
    }
    Ok(prepared.into_iter().map(|p| p.blob).collect())
}

/// Pushes a stored image as `target` (a tag; `latest` when none).
pub fn push_image(
    store: &Store,
    client: &Client,
    image: &ImageRecord,
    target: &Reference,
    opts: &PushOptions,
    progress: Progress<'_>,
) -> Result<Pushed> {
    let shown = super::display(target);
    push_inner(store, client, image, target, opts, progress)
        .map_err(|e| e.for_image("pushing", &shown))
}

fn push_inner(
    store: &Store,
    client: &Client,
    image: &ImageRecord,
    target: &Reference,
    opts: &PushOptions,
    progress: Progress<'_>,
) -> Result<Pushed> {
    let (repo, tag) = tag_of(target)?;
    let manifest = push_image_blobs(store, client, image, &repo, opts, progress)?;
    let digest = client.put_manifest(&repo, &tag, &manifest, media::OCI_MANIFEST)?;
    Ok(Pushed {
        digest,
        size: manifest.len() as u64,
    })
}

/// The repository and tag of a push target (`latest` when it has none); a digest is refused.
fn tag_of(target: &Reference) -> Result<(String, String)> {
    if target.digest().is_some() {
        return Err(RegistryError::Invalid(
            "cannot push to a digest reference: give a tag".into(),
        ));
    }
    let target = target.clone().with_default_tag();
    let tag = target.tag().unwrap_or(crate::image::reference::DEFAULT_TAG);
    Ok((target.path().to_string(), tag.to_string()))
}

/// Pushes an image's layers (compressed) and config; returns the manifest to put.
fn push_image_blobs(
    store: &Store,
    client: &Client,
    image: &ImageRecord,
    repo: &str,
    opts: &PushOptions,
    progress: Progress<'_>,
) -> Result<Vec<u8>> {
    let blobs = push_layers(
        store,
        client,
        repo,
        &image.diff_ids,
        opts.compression,
        progress,
    )?;
    let config_bytes = store.read_blob(&image.id, "image config", 32 << 20)?;
    let manifest = config::new_manifest(
        config::descriptor(media::OCI_CONFIG, &image.id, config_bytes.len() as u64),
        blobs
            .iter()
            .map(|b| config::descriptor(&b.media_type, &b.digest, b.size))
            .collect(),
    );
    let manifest = config::canonical_json("manifest", &manifest)?;
    let config_blob = BlobSource::bytes(&config_bytes);
    push_blobs(client, repo, &[(&config_blob, String::new())], &|_, _| {})?;
    Ok(manifest)
}

/// Pushes what a name in the store stands for as `target`: an image ([`push_image`]) or an
/// index of several platforms ([`push_index`]).
pub fn push_stored(
    store: &Store,
    client: &Client,
    stored: &Stored,
    target: &Reference,
    opts: &PushOptions,
    progress: Progress<'_>,
) -> Result<Pushed> {
    match stored {
        Stored::Image(image) => push_image(store, client, image, target, opts, progress),
        Stored::Index(index) => push_index(store, client, index, target, opts, progress),
    }
}

/// Pushes a stored index of several platforms as `target`: each platform's image (its
/// blobs, then its manifest by digest), then an index naming those manifests, each entry
/// with every other field of the stored one (platform, annotations), under the tag. The
/// registry's manifests list compressed layers, so their digests (and the index's) differ
/// from the store's.
pub fn push_index(
    store: &Store,
    client: &Client,
    index: &IndexRecord,
    target: &Reference,
    opts: &PushOptions,
    progress: Progress<'_>,
) -> Result<Pushed> {
    let shown = super::display(target);
    push_index_inner(store, client, index, target, opts, progress)
        .map_err(|e| e.for_image("pushing", &shown))
}

fn push_index_inner(
    store: &Store,
    client: &Client,
    index: &IndexRecord,
    target: &Reference,
    opts: &PushOptions,
    progress: Progress<'_>,
) -> Result<Pushed> {
    let (repo, tag) = tag_of(target)?;
    let mut entries = Vec::new();
    for (i, stored) in index.doc.entries.iter().enumerate() {
        let m = index.doc.digest(i)?;
        let image = store.image_blobs(&m)?;
        let manifest = push_image_blobs(store, client, &image, &repo, opts, progress)?;
        let by_digest = Digest::of_bytes(&manifest);
        let digest =
            client.put_manifest(&repo, by_digest.as_str(), &manifest, media::OCI_MANIFEST)?;
        let pushed = config::descriptor(media::OCI_MANIFEST, &digest, manifest.len() as u64);
        // The stored entry's other fields (platform, annotations) go with it.
        entries.push(index_doc::repoint(stored, &pushed));
    }
    let bytes = index.doc.with_entries(entries)?;
    let digest = client.put_manifest(&repo, &tag, &bytes, media::OCI_INDEX)?;
    Ok(Pushed {
        digest,
        size: bytes.len() as u64,
    })
}
