//! Lists an overlayfs upper directory as layer entries: the commit of a build step.
//!
//! A RUN step runs on an overlay mount whose upper dir receives everything the
//! step changed: new and copied-up files as themselves, deletions as whiteouts
//! and replaced directories as opaque directories. [`upper_entries`] turns that
//! into [`LayerEntry`]s, which the writer emits as OCI whiteouts (`.wh.<name>`,
//! `.wh..wh..opq`); one walk of the upper dir, whatever the size of the layers
//! below it (DESIGN.md §5).
//!
//! Overlayfs's formats, as read here (Documentation/filesystems/overlayfs.rst):
//! * a whiteout is a 0/0 character device, or (Linux 6.7+ "xattr whiteouts") a
//!   zero-size regular file with the `overlay.whiteout` xattr;
//! * a directory is opaque when its `overlay.opaque` xattr is `y` (`x` only
//!   flags a directory holding xattr whiteouts);
//! * the xattrs are `trusted.overlay.*` on a mount made by root and
//!   `user.overlay.*` on a `userxattr` mount; both are read.
//!
//! Renamed directories (`redirect_dir=on`) and metadata-only copy-ups
//! (`metacopy=on`) keep part of their content in the lower layers, where a
//! layer tar cannot point; they are refused rather than committed incomplete.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{FileStat, SFlag};

use super::error::ArchiveError;
use super::writer::{xattr_call, LayerDigest, LayerEntry, LayerWriter, WriterOptions};

/// The xattr that makes a directory opaque on an overlay mounted by root.
pub(crate) const TRUSTED_OPAQUE: &CStr = c"trusted.overlay.opaque";

/// Namespaces of overlayfs's own xattrs: mounts by root, `userxattr` mounts.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Whether `name` is one of overlayfs's own xattrs, which describe how a layer
/// is stacked and are never image content.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether `st` is overlayfs's whiteout: a character device numbered 0/0.
pub(crate) fn is_whiteout_device(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFCHR.bits() && st.st_rdev == 0
}

/// Lists the overlay upper directory `upper` as layer entries, in no particular
/// order ([`LayerWriter::append_entries`] sorts them):
///
/// * files, directories, symlinks, devices and fifos as [`LayerEntry::Path`];
/// * whiteouts as [`LayerEntry::Whiteout`], never as device entries;
/// * an opaque directory as [`LayerEntry::Opaque`] plus its own `Path` entry.
///
/// `upper` itself is not listed: overlayfs never makes its root opaque, and a
/// layer carries no entry for `/`. Symlinks are never followed.
pub fn upper_entries(upper: &Path) -> Result<Vec<LayerEntry>, ArchiveError> {
    let mut out = Vec::new();
    let mut pending: Vec<(PathBuf, Vec<u8>)> = vec![(upper.to_path_buf(), Vec::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let shown = || dir.display().to_string();
        let rd = fs::read_dir(&dir).map_err(|e| ArchiveError::io("read directory", shown(), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| ArchiveError::io("read directory", shown(), e))?;
            let source = ent.path();
            let mut name = prefix.clone();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(ent.file_name().as_bytes());
            let md = fs::symlink_metadata(&source)
                .map_err(|e| ArchiveError::io("stat", source.display().to_string(), e))?;
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                out.push(LayerEntry::Whiteout { name });
                continue;
            }
            if !(ft.is_dir() || ft.is_file()) {
                out.push(LayerEntry::Path { name, source });
                continue;
            }
            let attrs = OverlayAttrs::read(&source)?;
            let refuse = |reason| ArchiveError::UnsupportedOverlayUpper {
                path: source.display().to_string(),
                reason,
            };
            if attrs.has(b"redirect") {
                return Err(refuse(
                    "renamed directory (redirect_dir=on): its content is in a lower layer; mount without redirect_dir",
                ));
            }
            if attrs.has(b"metacopy") {
                return Err(refuse(
                    "metadata-only copy-up (metacopy=on): its data is in a lower layer; mount without metacopy",
                ));
            }
            if ft.is_file() {
                // The kernel honours the xattr only on an empty file; otherwise it
                // is an ordinary file.
                if md.len() == 0 && attrs.has(b"whiteout") {
                    out.push(LayerEntry::Whiteout { name });
                } else {
                    out.push(LayerEntry::Path { name, source });
                }
                continue;
            }
            if attrs.value(&source, b"opaque")?.as_deref() == Some(b"y") {
                out.push(LayerEntry::Opaque { dir: name.clone() });
            }
            out.push(LayerEntry::Path {
                name: name.clone(),
                source: source.clone(),
            });
            pending.push((source, name));
        }
    }
    Ok(out)
}

/// Writes the overlay upper directory `upper` as a layer into `out`:
/// [`upper_entries`], [`LayerWriter::append_entries`] and
/// [`LayerWriter::finish`]. Overlay xattrs are not written.
pub fn write_upper<W: Write>(
    upper: &Path,
    out: W,
    opts: WriterOptions,
) -> Result<(W, LayerDigest), ArchiveError> {
    let entries = upper_entries(upper)?;
    let mut w = LayerWriter::new(out, opts);
    w.append_entries(entries)?;
    w.finish()
}

/// The overlay xattrs of one path: full names, without values.
struct OverlayAttrs(Vec<Vec<u8>>);

impl OverlayAttrs {
    /// Lists `path`'s overlay xattrs (one `llistxattr`; most entries have none,
    /// so values are only read when asked for).
    fn read(path: &Path) -> Result<OverlayAttrs, ArchiveError> {
        let cpath = c_path(path)?;
        let names = match xattr_call(|buf, len| {
            // SAFETY: cpath is a valid C string; buf/len describe a writable buffer (or null/0).
            unsafe { libc::llistxattr(cpath.as_ptr(), buf.cast(), len) }
        }) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
            Err(e) => {
                return Err(ArchiveError::io(
                    "list xattrs",
                    path.display().to_string(),
                    e,
                ))
            }
        };
        Ok(OverlayAttrs(
            names
                .split(|&b| b == 0)
                .filter(|n| is_overlay_xattr(n))
                .map(<[u8]>::to_vec)
                .collect(),
        ))
    }

    /// The full name of overlay xattr `key` (`opaque`, `whiteout`, ...), in
    /// whichever namespace it is set.
    fn find(&self, key: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|n| {
                OVERLAY_XATTR_PREFIXES
                    .iter()
                    .any(|p| n.strip_prefix(*p) == Some(key))
            })
            .map(Vec::as_slice)
    }

    fn has(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// The value of overlay xattr `key` on `path`, if set.
    fn value(&self, path: &Path, key: &[u8]) -> Result<Option<Vec<u8>>, ArchiveError> {
        let Some(name) = self.find(key) else {
            return Ok(None);
        };
        let shown = || path.display().to_string();
        let cpath = c_path(path)?;
        let cname = CString::new(name).map_err(|e| ArchiveError::io("read xattr", shown(), e))?;
        match xattr_call(|buf, len| {
            // SAFETY: valid C strings; buf/len describe a writable buffer (or null/0).
            unsafe { libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        }) {
            Ok(v) => Ok(Some(v)),
            // Removed between list and get.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
            Err(e) => Err(ArchiveError::io("read xattr", shown(), e)),
        }
    }
}

fn c_path(path: &Path) -> Result<CString, ArchiveError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| ArchiveError::io("read xattrs", path.display().to_string(), e))
}
