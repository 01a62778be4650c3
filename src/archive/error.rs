//! The error type of the archive module: every way writing or extracting a layer tar can fail.

use std::fmt;
use std::io;

/// A resource limit that a tar stream can exceed; see [`crate::archive::Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Uncompressed bytes of the tar stream (headers, data and padding).
    TotalSize,
    /// Number of entries (extension headers not counted).
    Entries,
    /// Size of one PAX extended header or GNU long-name record.
    PaxHeaderSize,
    /// Length of an entry name or link target.
    NameLength,
    /// Uncompressed bytes per compressed byte.
    CompressionRatio,
    /// Bytes after the end-of-archive marker.
    TrailingData,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::TotalSize => "total uncompressed size",
            Limit::Entries => "entry count",
            Limit::PaxHeaderSize => "extended header size",
            Limit::NameLength => "name length",
            Limit::CompressionRatio => "compression ratio",
            Limit::TrailingData => "data after end of archive",
        })
    }
}

/// What is wrong with a tar header or an extended (PAX, GNU long-name) header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A numeric field is neither octal nor GNU base-256.
    #[error("invalid numeric field {0:?}")]
    Numeric(String),
    /// A base-256 numeric field is negative.
    #[error("negative base-256 number")]
    NegativeNumber,
    /// A numeric field does not fit 64 bits.
    #[error("{0} number overflows")]
    NumberOverflows(&'static str),
    /// The checksum field cannot be read: what is there is not a tar header.
    #[error("bad checksum field ({0}): not a tar archive, or a corrupt one")]
    ChecksumField(Box<HeaderError>),
    /// The checksum does not add up.
    #[error(
        "bad checksum (stored {stored}, computed {computed}): not a tar archive, or a corrupt one"
    )]
    Checksum {
        /// The checksum in the header.
        stored: u64,
        /// The sum of the header's bytes.
        computed: u64,
    },
    /// An extended header is the last thing in the archive.
    #[error("extended header without an entry")]
    ExtensionWithoutEntry,
    /// Two PAX headers precede one entry.
    #[error("two pax headers for one entry")]
    TwoPaxHeaders,
    /// Two GNU long names (or long link names) precede one entry.
    #[error("two GNU long-name headers for one entry")]
    TwoLongNames,
    /// The header's mtime does not fit a signed 64-bit number.
    #[error("mtime out of range")]
    MtimeOutOfRange,
    /// A link, directory, device or FIFO says it has data.
    #[error("{kind} {path} has data ({size} bytes)")]
    DataOnHeaderOnlyEntry {
        /// What the entry is.
        kind: &'static str,
        /// Its name.
        path: String,
        /// The size its header gives.
        size: u64,
    },
    /// A single zero block is followed by more headers.
    #[error("data after a single zero block")]
    DataAfterSingleZeroBlock,
    /// A PAX record is malformed.
    #[error("pax record {0}")]
    PaxRecord(&'static str),
    /// A PAX number (size, uid, gid, mtime) is not decimal.
    #[error("invalid pax number {0:?}")]
    PaxNumber(String),
    /// A PAX mtime has a fraction that is not decimal.
    #[error("invalid pax mtime")]
    PaxMtime,
    /// A PAX mtime does not fit a signed 64-bit number.
    #[error("pax mtime out of range")]
    PaxMtimeOutOfRange,
    /// A `SCHILY.xattr.` record without a name.
    #[error("empty xattr name")]
    EmptyXattrName,
    /// `GNU.sparse.` records.
    #[error("sparse files are not supported")]
    Sparse,
}

/// Errors from writing or extracting layer tars.
///
/// Paths in messages are lossy UTF-8 renderings of the raw tar names.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A system call or stream operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path (inside the archive or on the host) it was done to.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The stream starts with the magic bytes of a compression kiln does not read.
    #[error("unsupported compression: {0} (expected plain tar, gzip or zstd)")]
    UnsupportedCompression(&'static str),

    /// A tar header or extended header is malformed.
    #[error("invalid tar header at byte {offset}: {reason}")]
    InvalidHeader {
        /// Offset of the header in the uncompressed stream.
        offset: u64,
        /// What is wrong with it.
        #[source]
        reason: HeaderError,
    },

    /// The stream ended inside a header or an entry's data.
    #[error("tar stream truncated at byte {offset}")]
    Truncated {
        /// Offset in the uncompressed stream where data ran out.
        offset: u64,
    },

    /// A PAX `size` record disagrees with the ustar size field
    /// (the TARmageddon parser confusion, CVE-2026-33055).
    #[error("entry {path}: pax size {pax} disagrees with header size {ustar}")]
    SizeMismatch {
        /// Entry name.
        path: String,
        /// Size in the ustar header.
        ustar: u64,
        /// Size in the PAX record.
        pax: u64,
    },

    /// An entry has a type kiln refuses to extract (sparse files, volume labels, unknown flags).
    #[error("entry {path}: unsupported entry type {typeflag:?}")]
    UnsupportedEntryType {
        /// Entry name.
        path: String,
        /// The typeflag byte, as a character.
        typeflag: char,
    },

    /// A resource limit was exceeded.
    #[error("archive exceeds the {limit} limit of {max}")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// The configured maximum.
        max: u64,
    },

    /// An entry name is unsafe: it contains `..`, a NUL byte, or is otherwise unusable.
    #[error("entry {path}: unsafe name: {reason}")]
    UnsafePath {
        /// Entry name.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A hard link's target is unsafe or does not exist inside the root.
    #[error("entry {path}: invalid hard link target {target}: {reason}")]
    InvalidLinkTarget {
        /// Entry name.
        path: String,
        /// The link target as written in the archive.
        target: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A whiteout name that cannot be applied safely (`.wh..`, `.wh...`, `.wh.`).
    #[error("entry {path}: invalid whiteout")]
    InvalidWhiteout {
        /// Entry name.
        path: String,
    },

    /// The archive contains whiteouts but the caller asked for them to be refused.
    #[error("entry {path}: whiteouts are not allowed in this archive")]
    WhiteoutNotAllowed {
        /// Entry name.
        path: String,
    },

    /// Writing an overlay whiteout (a 0/0 character device) or opaque marker
    /// (`trusted.overlay.opaque`) was refused by the kernel: overlay-format
    /// extraction needs root (`trusted.*` xattrs need CAP_SYS_ADMIN).
    #[error("entry {path}: cannot create an overlay {what} without root privileges: {source}")]
    OverlayNeedsPrivilege {
        /// Entry name.
        path: String,
        /// `whiteout` or `opaque directory`.
        what: &'static str,
        /// The kernel's refusal (EPERM).
        #[source]
        source: io::Error,
    },

    /// An overlay upper directory holds something a layer tar cannot express.
    #[error("overlay upper {path}: {reason}")]
    UnsupportedOverlayUpper {
        /// Host path of the offending entry.
        path: String,
        /// Why it cannot be committed.
        reason: &'static str,
    },

    /// The archive root (`/` or `.`) appears as something other than a directory
    /// (umoci CVE-2021-29136).
    #[error("entry {path}: the root directory cannot be replaced by a {kind}")]
    RootTypeChange {
        /// Entry name.
        path: String,
        /// The entry's type.
        kind: &'static str,
    },

    /// A parent component of an entry's path exists and is not a directory.
    #[error("entry {path}: a parent component is not a directory")]
    NotADirectory {
        /// Entry name.
        path: String,
    },

    /// Resolving an entry's path inside the root went through too many symlinks.
    #[error("entry {path}: too many levels of symbolic links")]
    TooManySymlinks {
        /// Entry name.
        path: String,
    },

    /// A numeric field (uid, gid, device number) is outside what the host can represent.
    #[error("entry {path}: {field} {value} is out of range")]
    OutOfRange {
        /// Entry name.
        path: String,
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },

    /// The writer was given a name it cannot put in a layer (absolute, `..`, or a
    /// reserved `.wh.` name that extractors would read as a whiteout).
    #[error("cannot write {path} into a layer: {reason}")]
    InvalidLayerName {
        /// The name.
        path: String,
        /// Why.
        reason: &'static str,
    },

    /// A file changed size while it was being written into a layer.
    #[error(
        "{path} changed while it was being archived (expected {expected} bytes, read {found})"
    )]
    FileChanged {
        /// Host path.
        path: String,
        /// Size from lstat.
        expected: u64,
        /// Bytes actually read.
        found: u64,
    },
}

impl ArchiveError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<String>,
        source: impl Into<io::Error>,
    ) -> Self {
        ArchiveError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

/// Renders raw path bytes for messages.
pub(crate) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}
