//! The OCI distribution client: pulling images into the store, pushing them
//! from it, and the credentials Docker keeps in `~/.docker/config.json`.
//!
//! * [`client`]: one registry over HTTP(S): the `WWW-Authenticate` Bearer
//!   token flow and Basic auth, manifests and blobs, every byte verified.
//! * [`credentials`]: Docker's `config.json` (`auths`, `credsStore`,
//!   `credHelpers`), `kiln login` / `kiln logout`.
//! * [`pull`]: a reference into the store (indexes resolved to a platform,
//!   layers fetched in parallel and stored uncompressed).
//! * [`push`]: an image of the store to a registry (layers compressed in
//!   parallel, blobs the registry has skipped or mounted), and
//!   [`push::push_manifest`] for any manifest and blobs (cache exports).
//! * [`manifest_list`]: lists assembled from images already pushed (`kiln manifest`),
//!   kept under the store root apart from the images, pushed as one index.
//! * [`distribution`]: what kiln remembers about compressed blobs
//!   (`<root>/distribution/`): diffID ↔ compressed digest, and where each
//!   was seen.

pub mod client;
pub mod credentials;
pub mod distribution;
mod error;
pub mod manifest_list;
pub mod pull;
pub mod push;

pub use crate::image::compression::{Compression, Compressor};
pub use client::{Client, ClientOptions};
pub use error::{RegistryError, Result};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::image::Reference;

/// The host the distribution API of a reference's domain is served from
/// (`docker.io` is served by `registry-1.docker.io`).
pub fn api_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// How a reference is shown in messages: the familiar form users type.
pub fn display(reference: &Reference) -> String {
    reference.familiar_string()
}

/// Media types of manifests and indexes kiln reads from registries.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer, uncompressed.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI layer, gzip.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI layer, zstd.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker layer, gzip.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker layer, uncompressed.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker foreign layer, gzip.
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// The `Accept` header for manifest requests: every type kiln can read.
    pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
}

/// Runs `work` on every item, `parallel` at a time; the first error wins.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    parallel: usize,
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    parallel_map(items, parallel, work)
}

/// [`parallel`] with any error type.
pub(crate) fn parallel_map<T: Sync, R: Send, E: Send>(
    items: &[T],
    parallel: usize,
    work: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let error: Mutex<Option<E>> = Mutex::new(None);
    let workers = parallel.clamp(1, 16).min(items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() || error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                match work(&items[i]) {
                    Ok(r) => {
                        if let Ok(mut v) = results.lock() {
                            v[i] = Some(r);
                        }
                    }
                    Err(e) => {
                        let mut slot = error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect())
}
