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
//! * [`distribution`]: what kiln remembers about compressed blobs
//!   (`<root>/distribution/`): diffID ↔ compressed digest, and where each
//!   was seen.

pub mod client;
pub mod credentials;
pub mod distribution;
mod error;
pub mod pull;
pub mod push;

pub use client::{Client, ClientOptions};
pub use error::{RegistryError, Result};

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

/// How a layer's blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (the default for push).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Parses `gzip`, `zstd` or `none` (`uncompressed`).
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "none" | "uncompressed" => Some(Compression::None),
            _ => None,
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The OCI layer media type of this compression.
    pub fn oci_layer_type(self) -> &'static str {
        match self {
            Compression::None => media::OCI_LAYER,
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
        }
    }

    /// The compression a layer media type declares, or `None` (the
    /// Option) when it is not a layer type kiln can read.
    pub fn of_layer_type(media_type: &str) -> Option<Compression> {
        match media_type {
            media::OCI_LAYER | media::DOCKER_LAYER => Some(Compression::None),
            "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
            media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP | media::DOCKER_FOREIGN_LAYER => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                Some(Compression::Gzip)
            }
            media::OCI_LAYER_ZSTD
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// A writer compressing into `w`; `finish` it with [`Compressor::finish`].
    pub fn writer<W: std::io::Write>(self, w: W) -> std::io::Result<Compressor<W>> {
        Ok(match self {
            Compression::None => Compressor::None(w),
            // Level 6 (flate2's default) always gives the same bytes for the
            // same input: re-pushing the same layer gives the same digest.
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }
}

/// A compressing writer of one of the [`Compression`]s.
pub enum Compressor<W: std::io::Write> {
    /// Copies through.
    None(W),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: std::io::Write> std::io::Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

impl<W: std::io::Write> Compressor<W> {
    /// Writes the end of the compressed stream and returns the inner writer.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}
