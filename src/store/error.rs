//! The store's error type: every way a store operation can fail.

use std::io;
use std::path::PathBuf;

use crate::image::{ConfigError, Digest, ReferenceError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem call failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done (`create`, `rename`, `read`, …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The store root is open to other users and this user cannot make it private.
    #[error("store root {path} has mode {mode:04o} (readable by other users) and belongs to uid {uid}: make it private with `chmod 0700 {path}`, or use another --root")]
    OpenRoot {
        /// The store root.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// Its owner.
        uid: u32,
    },
    /// The store was written by a newer kiln with a format this one does not know.
    #[error("store {root} has format version {found}, but this kiln only understands version {supported}: use a newer kiln, or another --root")]
    NewerFormat {
        /// The store root.
        root: PathBuf,
        /// Version found in `kiln-store-version`.
        found: u64,
        /// Version this kiln writes.
        supported: u32,
    },
    /// `kiln-store-version` does not hold a version number kiln knows.
    #[error("{path}: store format version {content:?} is not valid: expected a positive number")]
    BadFormatVersion {
        /// The version file.
        path: PathBuf,
        /// What it contains (truncated).
        content: String,
    },
    /// The `oci-layout` file names a layout version kiln does not know.
    #[error("{path}: OCI image layout version {found:?} is not supported: expected \"1.0.0\"")]
    LayoutVersion {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The version it names.
        found: String,
    },
    /// `index.json` or `oci-layout` cannot be parsed.
    #[error("{path} is corrupt: {reason}; run `kiln system check`")]
    CorruptMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The parser's error, when one found it (`reason` is its message).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Content does not hash to the digest it was announced with.
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// Content is not the size its descriptor says.
    #[error("blob {digest} has the wrong size: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size from the descriptor.
        expected: u64,
        /// Size received or found (for an over-long stream, the bytes read
        /// before stopping).
        actual: u64,
    },
    /// A blob is not in the store.
    #[error("blob {digest} is not in the store")]
    BlobNotFound {
        /// The blob.
        digest: Digest,
    },
    /// A blob read into memory is larger than the limit for its kind.
    #[error("blob {digest} is {size} bytes, more than the {limit} allowed for an image {what}")]
    BlobTooLarge {
        /// The blob.
        digest: Digest,
        /// What it was read as (`manifest`, `config`).
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A config, manifest or index is not acceptable.
    #[error(transparent)]
    Document(#[from] ConfigError),
    /// An image handed to `put_image` is inconsistent or needs blobs the store lacks.
    #[error("image {manifest} rejected: {reason}")]
    InvalidImage {
        /// The manifest digest.
        manifest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// An index handed to `put_index_tagged` is not one kiln can keep under a tag.
    #[error("image index {index} rejected: {reason}")]
    InvalidIndex {
        /// The index digest.
        index: Digest,
        /// What is wrong.
        reason: String,
    },
    /// A name holds an index of several platforms and none is the one asked for.
    #[error("image {name} has no entry for platform {wanted} (it holds {available})")]
    NoMatchingPlatform {
        /// The name looked up.
        name: String,
        /// The platform asked for (the host's unless `--platform` said otherwise).
        wanted: String,
        /// The platforms the index holds, comma-separated.
        available: String,
    },
    /// No image matches a name, ID or digest.
    #[error("no such image: {name}")]
    ImageNotFound {
        /// What was looked up.
        name: String,
    },
    /// An image ID prefix matches more than one image.
    #[error(
        "image ID prefix {prefix:?} is ambiguous: it matches {count} images; give more digits"
    )]
    AmbiguousImage {
        /// The prefix looked up.
        prefix: String,
        /// Number of images it matches.
        count: usize,
    },
    /// An image reference is not valid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A digest reference used as a tag names a different manifest.
    #[error("cannot tag image {manifest} as {reference}: the reference names another digest")]
    DigestReferenceMismatch {
        /// The reference.
        reference: String,
        /// The manifest being tagged.
        manifest: Digest,
    },
    /// Garbage collection cannot run while builds, pulls or snapshot
    /// reservations hold the store.
    #[error("store {root} is in use by a build, pull or unpack (this or another kiln process); try again when it finishes")]
    Busy {
        /// The store root.
        root: PathBuf,
    },
    /// Garbage collection refused to run because it could not tell what
    /// some image references.
    #[error("garbage collection stopped: {problem}; run `kiln system check`")]
    UnsafeToCollect {
        /// The first problem found.
        problem: String,
    },
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Builds a `map_err` closure that attaches the operation and path to an
/// I/O error.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}
