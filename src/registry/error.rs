//! The error type of the registry client: every way talking to a registry,
//! reading credentials or verifying what a registry sent can fail.

use crate::image::{ConfigError, Digest, DigestError, ReferenceError};
use crate::store::StoreError;

/// Why a registry operation failed. Every message names the registry, and
/// the image when there is one.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Pulling or pushing an image failed; `source` says why.
    #[error("{op} {image}: {source}")]
    Image {
        /// `pulling` or `pushing`.
        op: &'static str,
        /// The image as the user named it.
        image: String,
        /// What went wrong.
        #[source]
        source: Box<RegistryError>,
    },
    /// The registry cannot be reached (DNS, connection refused, TLS, timeout).
    #[error("registry {registry} is unreachable: {source}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The transport error.
        #[source]
        source: Box<ureq::Transport>,
    },
    /// The connection failed while a response was read.
    #[error("registry {registry} is unreachable: {context}: {source}")]
    ReadFailed {
        /// The registry host.
        registry: String,
        /// What was being read.
        context: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// 401: no or wrong credentials.
    #[error("{registry}: unauthorized: authentication required{detail} (log in with `kiln login {registry}`)")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The registry's own message, `: …`, or empty.
        detail: String,
    },
    /// 403: the credentials are not allowed to do this.
    #[error("{registry}: access denied{detail}")]
    Denied {
        /// The registry host.
        registry: String,
        /// The registry's own message, `: …`, or empty.
        detail: String,
    },
    /// 404 for a manifest.
    #[error("manifest unknown: {registry} has no manifest {reference} in repository {repository}")]
    ManifestNotFound {
        /// The registry host.
        registry: String,
        /// The repository path.
        repository: String,
        /// The tag or digest asked for.
        reference: String,
    },
    /// 404 for a blob.
    #[error("blob unknown: {registry} has no blob {digest} in repository {repository}")]
    BlobNotFound {
        /// The registry host.
        registry: String,
        /// The repository path.
        repository: String,
        /// The blob.
        digest: Digest,
    },
    /// Content whose digest is not the one asked for.
    #[error("{what} from {registry} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The registry host.
        registry: String,
        /// What was fetched (`layer`, `manifest`, `config`).
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what came.
        actual: Digest,
    },
    /// Content whose size is not the one its descriptor gives.
    #[error("{what} {digest} from {registry} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The registry host.
        registry: String,
        /// What was fetched.
        what: String,
        /// The blob.
        digest: Digest,
        /// Size the descriptor gives.
        expected: u64,
        /// Size that came (or more, for an over-long stream: descriptor + 1).
        actual: u64,
    },
    /// The registry answered something that is not what the protocol says.
    #[error("{registry} sent an invalid response: {reason}")]
    BadResponse {
        /// The registry host.
        registry: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other HTTP error status.
    #[error("{registry} answered {status} to {method} {path}{detail}")]
    Status {
        /// The registry host.
        registry: String,
        /// The HTTP status.
        status: u16,
        /// The request method.
        method: &'static str,
        /// The request path.
        path: String,
        /// The registry's own message, `: …`, or empty.
        detail: String,
    },
    /// No manifest of an index suits the wanted platform.
    #[error("no image for platform {platform} in the index (it has: {available})")]
    NoPlatform {
        /// The platform wanted.
        platform: String,
        /// What the index lists.
        available: String,
    },
    /// A manifest, index or config that is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Credentials could not be read, stored or used.
    #[error("credentials: {0}")]
    Credentials(String),
    /// A credential helper could not be run, or the credentials file not encoded.
    #[error("credentials: {context}: {source}")]
    CredentialsFailed {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An image document is not acceptable.
    #[error(transparent)]
    Document(#[from] ConfigError),
    /// An image reference is not valid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A digest is not valid.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A local file or stream failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or stream.
        path: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// Interrupted (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

/// Results of the registry client.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    /// Wraps `self` with the operation and image it happened in (once).
    pub fn for_image(self, op: &'static str, image: &str) -> RegistryError {
        match self {
            e @ RegistryError::Image { .. } => e,
            e => RegistryError::Image {
                op,
                image: image.to_string(),
                source: Box::new(e),
            },
        }
    }
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl std::fmt::Display,
) -> impl FnOnce(std::io::Error) -> RegistryError {
    let path = path.to_string();
    move |source| RegistryError::Io { op, path, source }
}
