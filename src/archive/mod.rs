//! Layer tars: deterministic writing of layers and hardened extraction of untrusted tars.
//!
//! * [`LayerWriter`] / [`write_tree`]: a directory tree → a byte-for-byte
//!   reproducible tar, hashed (diffID) while it streams.
//! * [`extract()`]: a plain, gzip or zstd tar from anywhere (a registry, `docker
//!   load`, `ADD`, `import`) → a directory, with OCI whiteouts applied to the tree
//!   below or written in overlayfs's format ([`WhiteoutMode`]), and no way for an
//!   entry to write, chmod, link or delete outside that directory.
//! * [`write_upper`]: an overlay upper dir (what a RUN step
//!   changed) → a layer, overlay whiteouts turned into OCI ones.

mod confined;
mod error;
mod extract;
mod parse;
mod stream;
mod upper;
mod writer;

#[cfg(test)]
mod tests;

pub(crate) use confined::open_dir;
pub use error::{ArchiveError, HeaderError, Limit};
pub use extract::{extract, extract_under, ExtractOptions, ExtractStats, WhiteoutMode};
pub(crate) use parse::{Kind as TarKind, ParseLimits, TarParser};
pub use stream::{is_tar_header, is_tar_stream, Compression};
#[cfg(test)]
pub use upper::upper_entries;
pub use upper::{write_upper, write_upper_over};
pub(crate) use writer::read_xattrs;
#[cfg(test)]
pub use writer::LayerEntry;
pub use writer::{
    write_tree, LayerDigest, LayerWriter, WriterOptions, Xattrs, OPAQUE_MARKER, WHITEOUT_PREFIX,
};

/// Resource limits for extracting an untrusted tar. Each one exceeded is an
/// [`ArchiveError::LimitExceeded`] naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Uncompressed bytes of the whole tar stream.
    pub max_total_size: u64,
    /// Entries in the archive.
    pub max_entries: u64,
    /// Bytes of one PAX extended header or GNU long-name record (1 MiB).
    pub max_pax_header_size: u64,
    /// Bytes of an entry name or link target (64 KiB).
    pub max_name_len: usize,
    /// Uncompressed bytes per compressed byte, checked once `ratio_check_after`
    /// bytes were produced. gzip cannot exceed about 1032:1; zstd can, so the
    /// default catches zstd bombs early while the total size limit bounds all.
    pub max_compression_ratio: u64,
    /// Uncompressed bytes before the ratio is checked.
    pub ratio_check_after: u64,
    /// Bytes after the end-of-archive marker that are read and ignored (GNU tar
    /// pads to 10 KiB records); more is an error, and never read further.
    pub max_trailing_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_size: 64 << 30,
            max_entries: 4_000_000,
            max_pax_header_size: 1 << 20,
            max_name_len: 64 << 10,
            max_compression_ratio: 1000,
            ratio_check_after: 64 << 20,
            max_trailing_bytes: 1 << 20,
        }
    }
}
