//! Looks a path up across overlay layer dirs with overlayfs's merge rules (whiteouts, opaque
//! dirs, upper entries hiding lower ones), without mounting anything.
//!
//! The executor uses it before the container exists, to decide which mount targets the image
//! lacks (so the init layer provides them) and to refuse images whose mount targets are
//! symlinks or of the wrong type.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a path is in the merged view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The path does not exist (never created, or whited out).
    Absent,
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink.
    Symlink,
    /// Something else (device, fifo, socket).
    Other,
    /// A component before the last is not a directory: the path cannot exist.
    NotDir {
        /// Index of the offending component.
        at: usize,
        /// Whether that component is a symlink.
        symlink: bool,
    },
}

/// Whether `meta` is an overlay whiteout (a 0/0 character device).
pub fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether `path` (a directory) carries `trusted.overlay.opaque=y`, or `user.overlay.opaque=y`
/// as overlayfs writes it when mounted with `userxattr` (in a rootless user namespace).
pub fn is_opaque(path: &Path) -> bool {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    opaque_xattr(&cpath, c"trusted.overlay.opaque") || opaque_xattr(&cpath, c"user.overlay.opaque")
}

fn opaque_xattr(cpath: &std::ffi::CStr, name: &std::ffi::CStr) -> bool {
    let mut buf = [0u8; 4];
    // SAFETY: valid C strings and a buffer of the given size.
    let n = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Looks `rel` (components separated by `/`, no `..`) up across `layers`, top-most first.
pub fn lookup(layers: &[PathBuf], rel: &str) -> io::Result<Found> {
    let comps: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut candidates: Vec<&PathBuf> = layers.iter().collect();
    let mut prefix = PathBuf::new();
    let mut result = Found::Dir;
    for (i, comp) in comps.iter().enumerate() {
        if *comp == ".." {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "'..' in path"));
        }
        prefix.push(comp);
        let mut found: Option<Found> = None;
        let mut next = Vec::new();
        for layer in &candidates {
            let p = layer.join(&prefix);
            let meta = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(e) => return Err(e),
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if found.is_none() {
                    found = Some(Found::Dir);
                }
                next.push(*layer);
                if is_opaque(&p) {
                    break;
                }
                continue;
            }
            // A non-directory: on top it is the answer; below a directory it is hidden.
            if found.is_none() {
                found = Some(if is_whiteout(&meta) {
                    Found::Absent
                } else if ft.is_symlink() {
                    Found::Symlink
                } else if ft.is_file() {
                    Found::File
                } else {
                    Found::Other
                });
            }
            break;
        }
        let f = found.unwrap_or(Found::Absent);
        if i + 1 < comps.len() {
            match f {
                Found::Dir => {}
                Found::Absent => return Ok(Found::Absent),
                other => {
                    return Ok(Found::NotDir {
                        at: i,
                        symlink: other == Found::Symlink,
                    })
                }
            }
        }
        result = f;
        candidates = next;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_entries_hide_lower_ones() {
        let t = tempfile::tempdir().expect("tempdir");
        let top = t.path().join("top");
        let bottom = t.path().join("bottom");
        std::fs::create_dir_all(top.join("etc")).expect("mkdir");
        std::fs::create_dir_all(bottom.join("etc")).expect("mkdir");
        std::fs::create_dir_all(bottom.join("proc")).expect("mkdir");
        std::fs::write(bottom.join("etc/hosts"), "x").expect("write");
        std::os::unix::fs::symlink("/elsewhere", top.join("dev")).expect("symlink");
        std::fs::create_dir_all(bottom.join("dev")).expect("mkdir");
        std::os::unix::fs::symlink("/usr/etc", bottom.join("sys")).expect("symlink");
        let layers = vec![top, bottom];
        assert_eq!(lookup(&layers, "etc").expect("lookup"), Found::Dir);
        assert_eq!(lookup(&layers, "etc/hosts").expect("lookup"), Found::File);
        assert_eq!(
            lookup(&layers, "etc/hostname").expect("lookup"),
            Found::Absent
        );
        assert_eq!(lookup(&layers, "proc").expect("lookup"), Found::Dir);
        assert_eq!(lookup(&layers, "dev").expect("lookup"), Found::Symlink);
        assert_eq!(
            lookup(&layers, "sys/class").expect("lookup"),
            Found::NotDir {
                at: 0,
                symlink: true
            }
        );
        assert_eq!(
            lookup(&layers, "nothing/here").expect("lookup"),
            Found::Absent
        );
    }
}
