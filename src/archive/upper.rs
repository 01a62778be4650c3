//! Writes an overlayfs upper directory as a layer: the commit of a build step.
//!
//! A RUN step runs on an overlay mount whose upper dir receives everything the
//! step changed: new and copied-up files as themselves, deletions as whiteouts
//! and replaced directories as opaque directories. [`write_upper`] turns that
//! into a layer with OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`); one walk of
//! the upper dir, whatever the size of the layers below it: a step's commit costs what
//! it changed, not the size of the image.
//! `upper_entries`, which lists the same as entries for the generic sorting
//! writer, is the reference the tests hold it to.
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

use std::ffi::CStr;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use super::error::ArchiveError;
use super::writer::{split_xattrs, LayerDigest, LayerWriter, WriterOptions, Xattrs, XattrsOf};

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
#[cfg(test)]
pub fn upper_entries(upper: &Path) -> Result<Vec<super::writer::LayerEntry>, ArchiveError> {
    use super::writer::LayerEntry;
    use std::os::unix::fs::FileTypeExt;
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
            attrs.refuse_partial(&source)?;
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
            if attrs
                .value(
                    XattrsOf {
                        path: &source,
                        file: None,
                    },
                    b"opaque",
                )?
                .as_deref()
                == Some(b"y")
            {
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

/// Writes the overlay upper directory `upper` as a layer into `out`: its files,
/// directories and links as themselves, whiteouts as `.wh.<name>` and opaque
/// directories with `.wh..wh..opq` first among their children, parents before
/// children and siblings by name, in one depth-first walk that works relative to open directories: a stat, an open
/// and one xattr listing per file or directory, whatever the depth. Overlay
/// xattrs are not written.
pub fn write_upper<W: Write>(
    upper: &Path,
    out: W,
    opts: WriterOptions,
) -> Result<(W, LayerDigest), ArchiveError> {
    write_upper_over(upper, None, out, opts)
}

/// [`write_upper`], leaving out what the step did not change: `base` is the merged view of
/// the layers below (read-only). Overlayfs copies a file up whole when it is opened for
/// writing, linked or chowned; where the copy is the same as below (type, mode, owner,
/// device, capabilities, size and mtime, and the content when the mtimes have no
/// nanoseconds), it is not written again, as BuildKit's overlay differ decides. So `RUN ln
/// /bin/busybox /x` adds `/x` alone, as a file. An opaque directory with nothing below to
/// hide gets no opaque marker.
pub fn write_upper_over<W: Write>(
    upper: &Path,
    base: Option<&Path>,
    out: W,
    opts: WriterOptions,
) -> Result<(W, LayerDigest), ArchiveError> {
    let mut w = LayerWriter::new(out, opts);
    let mut top = Frame::open(upper.to_path_buf(), Vec::new())?;
    top.base = base.and_then(|b| open_base_dir(None, b.as_os_str()));
    let mut frames = vec![top];
    while let Some(frame) = frames.last_mut() {
        let Some(child) = frame.children.pop() else {
            frames.pop();
            continue;
        };
        let source = frame.path.join(&child.name);
        let shown = || source.display().to_string();
        let mut name = frame.name.clone();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(child.name.as_bytes());
        let kind = child.st.st_mode & SFlag::S_IFMT.bits();
        if child.whiteout {
            w.append_whiteout(&name)?;
            continue;
        }
        let is_dir = kind == SFlag::S_IFDIR.bits();
        if !is_dir {
            if let Some(b) = &frame.base {
                if same_as_base(b, &child, &source) {
                    continue;
                }
            }
        }
        if kind != SFlag::S_IFREG.bits() && !is_dir {
            w.append_path(&name, &source)?;
            continue;
        }
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | if is_dir {
                OFlag::O_DIRECTORY
            } else {
                OFlag::O_NONBLOCK
            };
        let fd = openat(
            frame.dir(),
            frame.at(&child.name).as_os_str(),
            flags,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::io("open", shown(), io::Error::from(e)))?;
        let mut file = fs::File::from(fd);
        let md = file
            .metadata()
            .map_err(|e| ArchiveError::io("stat", shown(), e))?;
        if md.ino() != child.st.st_ino || md.dev() != child.st.st_dev {
            return Err(ArchiveError::FileChanged {
                path: shown(),
                expected: child.st.st_size as u64,
                found: md.len(),
            });
        }
        let (attrs, xattrs) = fd_xattrs(&file, &source)?;
        attrs.refuse_partial(&source)?;
        if !is_dir {
            w.append_node(&name, &source, &md, xattrs, Some(&mut file))?;
            continue;
        }
        w.append_node(&name, &source, &md, xattrs, None)?;
        let opaque = attrs
            .value(
                XattrsOf {
                    path: &source,
                    file: Some(&file),
                },
                b"opaque",
            )?
            .as_deref()
            == Some(b"y");
        let below = match &frame.base {
            Some(b) => open_base_dir(Some(b), &child.name),
            None => None,
        };
        // Without a base, every opaque marker is kept: there may be something below.
        let hides_something = frame.base.is_none() || below.as_ref().is_some_and(has_entries);
        if opaque && hides_something {
            w.append_opaque(&name)?;
        }
        // Deep trees keep only the first levels' directories open (and compare with the
        // base only there); nothing below an opaque directory shows through from the base.
        let keep_fd = frames.len() < 64;
        let mut next = Frame::open_at(source, name, keep_fd.then_some(file))?;
        next.base = below.filter(|_| keep_fd && !opaque);
        frames.push(next);
    }
    w.finish()
}

/// A directory being written: its children in reverse order of the layer, so the next
/// one is popped from the end.
struct Frame {
    path: PathBuf,
    name: Vec<u8>,
    fd: Option<fs::File>,
    children: Vec<Child>,
    /// The same directory in the base (the layers below), when it is a real directory there.
    base: Option<fs::File>,
}

/// Opens `name` in the base directory `dir` (or the base root by path) as a directory,
/// never through a symlink.
fn open_base_dir(dir: Option<&fs::File>, name: &std::ffi::OsStr) -> Option<fs::File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match dir {
        Some(d) => openat(d.as_fd(), name, flags, Mode::empty()),
        None => nix::fcntl::open(name, flags, Mode::empty()),
    };
    fd.ok().map(fs::File::from)
}

/// Whether a directory has any entry.
fn has_entries(dir: &fs::File) -> bool {
    let Ok(d) = nix::dir::Dir::openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    ) else {
        return true;
    };
    let mut d = d;
    let any = d
        .iter()
        .flatten()
        .any(|e| !matches!(e.file_name().to_bytes(), b"." | b".."));
    any
}

/// Whether the upper entry `child` (not a directory) is the same as the entry of that name
/// in the base directory `base`, by BuildKit's overlay differ's rule (see
/// [`write_upper_over`]).
fn same_as_base(base: &fs::File, child: &Child, upper_path: &Path) -> bool {
    if child.whiteout {
        return false;
    }
    let Ok(b) = fstatat(
        base.as_fd(),
        child.name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) else {
        return false;
    };
    let u = &child.st;
    if (b.st_mode, b.st_uid, b.st_gid, b.st_rdev) != (u.st_mode, u.st_uid, u.st_gid, u.st_rdev)
        || b.st_size != u.st_size
        || b.st_mtime != u.st_mtime
    {
        return false;
    }
    let kind = u.st_mode & SFlag::S_IFMT.bits();
    let regular = kind == SFlag::S_IFREG.bits();
    let open = |dir: Option<&fs::File>| -> Option<fs::File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match dir {
            Some(d) => openat(d.as_fd(), child.name.as_os_str(), flags, Mode::empty()),
            None => nix::fcntl::open(upper_path, flags, Mode::empty()),
        };
        fd.ok().map(fs::File::from)
    };
    if regular {
        let (Some(bf), Some(uf)) = (open(Some(base)), open(None)) else {
            return false;
        };
        let cap = |f: &fs::File| {
            XattrsOf {
                path: upper_path,
                file: Some(f),
            }
            .value(b"security.capability")
        };
        match (cap(&bf), cap(&uf)) {
            (Ok(x), Ok(y)) if x == y => {}
            _ => return false,
        }
        if b.st_mtime_nsec == 0 && u.st_mtime_nsec == 0 {
            return u.st_size == 0 || same_content(bf, uf);
        }
        return b.st_mtime_nsec == u.st_mtime_nsec;
    }
    if b.st_mtime_nsec == 0 && u.st_mtime_nsec == 0 {
        if kind == SFlag::S_IFLNK.bits() {
            let ut = nix::fcntl::readlinkat(nix::fcntl::AT_FDCWD, upper_path).ok();
            let bt = nix::fcntl::readlinkat(base.as_fd(), child.name.as_os_str()).ok();
            return ut.is_some() && ut == bt;
        }
        return true;
    }
    b.st_mtime_nsec == u.st_mtime_nsec
}

/// Whether two files have the same bytes.
fn same_content(mut a: fs::File, mut b: fs::File) -> bool {
    use std::io::Read;
    let (mut x, mut y) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = match a.read(&mut x) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if b.read_exact(&mut y[..n]).is_err() {
            return false;
        }
        if x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y[..1]).is_ok_and(|m| m == 0);
        }
    }
}

struct Child {
    key: Vec<u8>,
    name: std::ffi::OsString,
    st: FileStat,
    whiteout: bool,
}

impl Frame {
    fn open(path: PathBuf, name: Vec<u8>) -> Result<Frame, ArchiveError> {
        let fd = fs::File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| ArchiveError::io("open", path.display().to_string(), e))?;
        Frame::open_at(path, name, Some(fd))
    }

    /// Lists the directory and stats its children (relative to `fd` when given).
    fn open_at(path: PathBuf, name: Vec<u8>, fd: Option<fs::File>) -> Result<Frame, ArchiveError> {
        let mut frame = Frame {
            path,
            name,
            fd,
            children: Vec::new(),
            base: None,
        };
        let shown = || frame.path.display().to_string();
        let rd = fs::read_dir(&frame.path)
            .map_err(|e| ArchiveError::io("read directory", shown(), e))?;
        let mut children = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| ArchiveError::io("read directory", shown(), e))?;
            let n = ent.file_name();
            let st = fstatat(
                frame.dir(),
                frame.at(&n).as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| {
                ArchiveError::io(
                    "stat",
                    frame.path.join(&n).display().to_string(),
                    io::Error::from(e),
                )
            })?;
            let kind = st.st_mode & SFlag::S_IFMT.bits();
            // A 0/0 device, or an empty file with the overlay.whiteout xattr (honoured by
            // the kernel only on an empty file).
            let whiteout = is_whiteout_device(&st)
                || (kind == SFlag::S_IFREG.bits()
                    && st.st_size == 0
                    && OverlayAttrs::read(&frame.path.join(&n))?.has(b"whiteout"));
            let key = if whiteout {
                [super::writer::WHITEOUT_PREFIX, n.as_bytes()].concat()
            } else {
                n.as_bytes().to_vec()
            };
            children.push(Child {
                key,
                name: n,
                st,
                whiteout,
            });
        }
        children.sort_by(|a, b| b.key.cmp(&a.key));
        frame.children = children;
        Ok(frame)
    }

    /// The directory to look names up in: its fd, or the current directory when it is
    /// looked up by full path.
    fn dir(&self) -> std::os::fd::BorrowedFd<'_> {
        match &self.fd {
            Some(f) => f.as_fd(),
            None => nix::fcntl::AT_FDCWD,
        }
    }

    /// `name` as [`Frame::dir`] resolves it.
    fn at(&self, name: &std::ffi::OsStr) -> PathBuf {
        match &self.fd {
            Some(_) => PathBuf::from(name),
            None => self.path.join(name),
        }
    }
}

/// The xattrs of an open file or directory, in one listing: its overlay xattrs (names)
/// and the others with their values, sorted, as [`super::writer::read_xattrs`] gives them.
fn fd_xattrs(f: &fs::File, path: &Path) -> Result<(OverlayAttrs, Xattrs), ArchiveError> {
    let (overlay, values) = split_xattrs(XattrsOf {
        path,
        file: Some(f),
    })?;
    Ok((OverlayAttrs(overlay), values))
}

/// The overlay xattrs of one path: full names, without values.
struct OverlayAttrs(Vec<Vec<u8>>);

impl OverlayAttrs {
    /// Lists `path`'s overlay xattrs (one `llistxattr`; most entries have none,
    /// so values are only read when asked for).
    fn read(path: &Path) -> Result<OverlayAttrs, ArchiveError> {
        let names = XattrsOf { path, file: None }.names()?;
        Ok(OverlayAttrs(
            names.into_iter().filter(|n| is_overlay_xattr(n)).collect(),
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

    /// Refuses a path whose content is partly in a lower layer, where a layer tar cannot
    /// point.
    fn refuse_partial(&self, path: &Path) -> Result<(), ArchiveError> {
        let refuse = |reason| ArchiveError::UnsupportedOverlayUpper {
            path: path.display().to_string(),
            reason,
        };
        if self.has(b"redirect") {
            return Err(refuse(
                "renamed directory (redirect_dir=on): its content is in a lower layer; mount without redirect_dir",
            ));
        }
        if self.has(b"metacopy") {
            return Err(refuse(
                "metadata-only copy-up (metacopy=on): its data is in a lower layer; mount without metacopy",
            ));
        }
        Ok(())
    }

    /// The value of overlay xattr `key` on `of`, if set.
    fn value(&self, of: XattrsOf<'_>, key: &[u8]) -> Result<Option<Vec<u8>>, ArchiveError> {
        match self.find(key) {
            Some(name) => of.value(name),
            None => Ok(None),
        }
    }
}
