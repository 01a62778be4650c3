//! The error type of the image commands' library: every way importing, saving, loading, listing or removing images can fail.

use std::io;

use super::change::ChangeError;
use crate::archive::ArchiveError;
use crate::image::{ConfigError, DigestError, ReferenceError};
use crate::store::StoreError;

/// Why an image operation failed. Messages name the image, file or archive
/// entry involved, Docker's wording where Docker has one.
#[derive(Debug, thiserror::Error)]
pub enum ImageOpsError {
    /// No image matches a name, ID or ID prefix.
    #[error("no such image: {name}")]
    NoSuchImage {
        /// The name as Docker shows it (`busybox:latest`).
        name: String,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A tar could not be extracted or written.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// An image config, manifest or index is not acceptable.
    #[error(transparent)]
    Document(#[from] ConfigError),
    /// An image reference is not valid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A digest is not valid.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A JSON document could not be parsed or written.
    #[error("invalid {what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Reading or writing a file or stream failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or stream.
        path: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// An image archive (`kiln load`) is not a tar the archive parser accepts.
    #[error("invalid image archive: {source}")]
    InvalidTar {
        /// What the parser refused.
        #[source]
        source: ArchiveError,
    },
    /// An image archive (`kiln load`) cannot be read.
    #[error("invalid image archive: cannot read: {source}")]
    ArchiveRead {
        /// The stream's error.
        #[source]
        source: io::Error,
    },
    /// An image archive (`kiln load`) does not decompress.
    #[error("invalid image archive: {compression}: {source}")]
    ArchiveDecompress {
        /// The compression it claims (by its magic bytes).
        compression: &'static str,
        /// The decompressor's error.
        #[source]
        source: io::Error,
    },
    /// A document of an image archive (`kiln load`) names a digest that is not valid.
    #[error("invalid image archive: {what}: {source}")]
    ArchiveDigest {
        /// Which document and field.
        what: String,
        /// What is wrong with the digest.
        #[source]
        source: DigestError,
    },
    /// An image archive (`kiln load`) is malformed, inconsistent or too large.
    #[error("invalid image archive: {reason}")]
    InvalidArchive {
        /// What is wrong.
        reason: String,
    },
    /// A `--change` instruction cannot be applied.
    #[error("invalid change {change:?}: {source}")]
    Change {
        /// The instruction as given.
        change: String,
        /// What is wrong.
        #[source]
        source: ChangeError,
    },
    /// A `--filter` is unknown or malformed.
    #[error("invalid filter '{filter}': {reason}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What is wrong.
        reason: String,
    },
    /// A `reference=` filter is not a valid pattern.
    #[error("invalid filter 'reference={pattern}': {source}")]
    ReferencePattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        #[source]
        source: super::glob::BadPattern,
    },
    /// A digest reference was given where a tag is needed.
    #[error("refusing to create a tag with a digest reference: {reference}")]
    DigestAsTag {
        /// The reference.
        reference: String,
    },
    /// An image cannot be removed (Docker's `conflict: unable to delete …`).
    #[error("conflict: {message}")]
    Conflict {
        /// Docker's explanation, naming the image.
        message: String,
    },
    /// The source of an import is not something kiln reads.
    #[error("cannot import {source_name}: {reason}")]
    ImportSource {
        /// The file, URL or `-`.
        source_name: String,
        /// Why.
        reason: String,
    },
}

/// Result alias for image operations.
pub type Result<T, E = ImageOpsError> = std::result::Result<T, E>;

/// Builds a `map_err` closure attaching an operation and a path to an I/O error.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<String>,
) -> impl FnOnce(io::Error) -> ImageOpsError {
    let path = path.into();
    move |source| ImageOpsError::Io { op, path, source }
}
