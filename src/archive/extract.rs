//! Extracts untrusted layer and rootfs tars into a directory so that no entry can act outside it.
//!
//! Every entry is created with `*at` calls relative to a parent directory fd that
//! was resolved inside the root (see [`super::confined`]); the final component is
//! never followed: an existing symlink in the way is replaced, not written through,
//! so a directory entry over a symlink never chmods the symlink's target
//! (RUSTSEC-2026-0067). Symlink targets are stored verbatim: they are data, and the
//! confined walk makes them harmless for every later entry.
//!
//! Whiteouts are applied in one of three ways ([`WhiteoutMode`]): deleted from the
//! tree below (a merged rootfs), written in overlayfs's own format (a snapshot
//! that is one overlay lower dir), or refused (a rootfs tar). Overlay metadata
//! xattrs (`trusted.overlay.*`, `user.overlay.*`) in an archive are never set:
//! in a snapshot they would let a layer redirect or hide other layers' files.
//!
//! Setuid binaries and world-writable directories of an image are extracted as the
//! image has them. The caller must therefore keep the extraction root inside a
//! directory other host users cannot traverse (kiln's store keeps `snapshots/`
//! mode 0700); [`ExtractOptions::root_mode`] can also restrict the root itself.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstat, futimens, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::confined::{self, clear_lower, ino, is_dir, open_dir, remove_all, stat_at, Ino, Root};
use super::error::{show, ArchiveError};
use super::parse::{Entry, Kind, ParseLimits, TarParser};
use super::stream::{self, Compression};
use super::upper::{is_overlay_xattr, is_whiteout_device, TRUSTED_OPAQUE};
use super::writer::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use super::Limits;

/// What an extraction does with OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Delete what they name in the target directory, which holds the layers
    /// below: the result is the merged tree. Only lower content is removed; a
    /// whiteout of a path this archive itself created is ignored, as OCI says.
    #[default]
    Apply,
    /// Write them in overlayfs's format, for a snapshot that is mounted as one
    /// overlay lower dir above the snapshots of the layers below: `dir/.wh.name`
    /// becomes a 0/0 character device `dir/name`, `dir/.wh..wh..opq` the xattr
    /// `trusted.overlay.opaque=y` on `dir`. Extract into an empty directory.
    /// Needs root: `trusted.*` xattrs need CAP_SYS_ADMIN (whiteout devices alone
    /// work unprivileged since Linux 5.8); without it, the first entry that
    /// needs it fails with [`ArchiveError::OverlayNeedsPrivilege`].
    ///
    /// A directory entry that replaces a non-directory of the same archive is
    /// made opaque too, since in [`WhiteoutMode::Apply`] that non-directory would
    /// have deleted the lower directory first. Overlayfs ignores the opaque
    /// xattr on a layer's root: see [`ExtractStats::opaque_root`].
    Overlay,
    /// Refuse them with [`ArchiveError::WhiteoutNotAllowed`]: a rootfs tar
    /// (`docker import`) has no lower layers, and a literal `.wh.` file would
    /// later be read as a whiteout.
    Refuse,
}

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Resource limits.
    pub limits: Limits,
    /// Apply the archive's uid/gid (default: on). Only honoured when running as
    /// root; otherwise everything belongs to the extracting user.
    pub same_owner: bool,
    /// Create character and block devices (only honoured when running as root).
    /// When off, device entries are skipped with a warning.
    pub allow_devices: bool,
    /// What to do with OCI whiteouts (default: [`WhiteoutMode::Apply`]).
    pub whiteouts: WhiteoutMode,
    /// Mode for the root directory after extraction, overriding any `./` entry in
    /// the archive. `Some(0o700)` keeps other host users from reaching setuid
    /// files when the root's parent does not already do so.
    pub root_mode: Option<u32>,
    /// Give every entry this uid and gid instead of the archive's (`ADD --chown` of a local
    /// archive). Only honoured when running as root.
    pub owner: Option<(u32, u32)>,
    /// Also read bzip2- and xz-compressed tars (ADD of a local archive, as BuildKit does);
    /// image layers are plain, gzip or zstd only.
    pub bzip2_xz: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            limits: Limits::default(),
            same_owner: true,
            allow_devices: false,
            whiteouts: WhiteoutMode::Apply,
            root_mode: None,
            owner: None,
            bzip2_xz: false,
        }
    }
}

/// What an extraction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractStats {
    /// Entries read (extension headers not counted), whiteouts and skipped ones included.
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub file_bytes: u64,
    /// Uncompressed bytes of the tar stream read, trailing data included.
    pub stream_bytes: u64,
    /// sha256 of those uncompressed bytes: the layer's diffID.
    pub stream_sha256: [u8; 32],
    /// Compression detected.
    pub compression: Compression,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Device entries skipped.
    pub skipped_devices: u64,
    /// The archive marks its root opaque (`.wh..wh..opq` at the top): nothing of
    /// the layers below is visible. Overlayfs ignores that marker on a lower
    /// dir's root, so a snapshot extracted with [`WhiteoutMode::Overlay`] must be
    /// mounted without the snapshots below it.
    pub opaque_root: bool,
}

/// Extracts the tar (plain, gzip or zstd, detected by magic bytes) read from
/// `reader` into the existing directory `root`, handling OCI whiteouts as
/// [`ExtractOptions::whiteouts`] says.
///
/// On error, the root may hold part of the archive; the caller extracts into a
/// temporary directory and discards it on failure.
pub fn extract<R: Read>(
    reader: R,
    root: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats, ArchiveError> {
    extract_root(reader, &Root::open(root)?, opts)
}

/// Extracts the tar read from `reader` into the directory `dest` of the tree `root`
/// (ADD of a local archive into an image). `dest` is resolved inside `root`: a symlink on
/// the way, absolute or relative, leads to a directory of `root`, never out of it, and
/// missing directories are created 0755. The archive's entries are then confined to that
/// directory.
pub fn extract_under<R: Read>(
    reader: R,
    root: &Path,
    dest: &str,
    opts: &ExtractOptions,
) -> Result<ExtractStats, ArchiveError> {
    let comps: Vec<&[u8]> = dest
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let top = Root::open(root)?;
    let owner = opts
        .owner
        .filter(|_| opts.same_owner && nix::unistd::geteuid().is_root());
    let sub = top.subdir(&comps, dest.as_bytes(), owner)?;
    extract_root(reader, &sub, opts)
}

fn extract_root<R: Read>(
    reader: R,
    root: &Root,
    opts: &ExtractOptions,
) -> Result<ExtractStats, ArchiveError> {
    let (stream, compression) = stream::open(reader, &opts.limits, opts.bzip2_xz)?;
    let limits = ParseLimits {
        max_entries: opts.limits.max_entries,
        max_pax: opts.limits.max_pax_header_size,
        max_name: opts.limits.max_name_len,
        max_trailing: opts.limits.max_trailing_bytes,
    };
    let mut parser = TarParser::new(stream, limits);
    let mut x = Extractor {
        root,
        opts,
        is_root: nix::unistd::geteuid().is_root(),
        touched: HashSet::new(),
        deferred: Vec::new(),
        last_parent: None,
        stats: ExtractStats {
            entries: 0,
            file_bytes: 0,
            stream_bytes: 0,
            stream_sha256: [0; 32],
            compression,
            whiteouts: 0,
            skipped_devices: 0,
            opaque_root: false,
        },
    };
    while let Some(entry) = parser.next_entry()? {
        x.stats.entries += 1;
        x.apply(&mut parser, &entry)?;
    }
    x.finish_dirs()?;
    if let Some(mode) = opts.root_mode {
        let fd = root.open_self()?;
        fchmod(&fd, Mode::from_bits_truncate(mode))
            .map_err(|e| ArchiveError::io("chmod", "/", e))?;
    }
    let (bytes, sha) = parser.into_inner().finish();
    x.stats.stream_bytes = bytes;
    x.stats.stream_sha256 = sha;
    Ok(x.stats)
}

/// Splits an entry name into components inside the root. Leading `/` and `.`
/// components are dropped (absolute names are rebased onto the root, as GNU tar
/// does); `..` anywhere is refused rather than resolved, so no name can point
/// above the directory it appears to be in.
fn components<'a>(path: &'a [u8], what: &'static str) -> Result<Vec<&'a [u8]>, &'static str> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(what),
            c => out.push(c),
        }
    }
    Ok(out)
}

struct Extractor<'r> {
    root: &'r Root,
    opts: &'r ExtractOptions,
    is_root: bool,
    /// Inodes this extraction created or wrote, which opaque markers and whiteouts
    /// must leave alone: they only hide what lower layers had.
    touched: HashSet<Ino>,
    /// Directories whose mode and mtime are set at the end, after their children
    /// were created (which changes the mtime, and may need write permission).
    deferred: Vec<(Vec<Vec<u8>>, u32, TimeSpec)>,
    /// The parent directory of the last regular file and its path: the next file in the
    /// same directory (the common case) needs no new walk from the root. Any other kind of
    /// entry, which could replace a directory, drops it.
    last_parent: Option<(Vec<Vec<u8>>, OwnedFd)>,
    stats: ExtractStats,
}

/// Where xattrs, owner and times go.
enum Target<'a> {
    /// An open file or directory.
    Fd(BorrowedFd<'a>),
    /// A name in a directory, not followed (symlinks, devices, fifos).
    At(BorrowedFd<'a>, &'a [u8]),
}

impl Extractor<'_> {
    /// One entry, in phases: check its name, then hand the root's own entry and
    /// whiteouts to their handlers, find the parent directory (reused from the last file
    /// when it is the same), and create the node.
    fn apply<R: Read>(&mut self, parser: &mut TarParser<R>, e: &Entry) -> Result<(), ArchiveError> {
        let comps = components(&e.path, "name contains a .. component").map_err(|reason| {
            ArchiveError::UnsafePath {
                path: show(&e.path),
                reason,
            }
        })?;
        // Taken for every entry, so that any entry but a file drops it.
        let cached = self.take_cached_parent(e, &comps);
        let Some((name, parent_comps)) = comps.split_last() else {
            return self.apply_root(e);
        };
        if name.starts_with(WHITEOUT_PREFIX) {
            return match self.opts.whiteouts {
                WhiteoutMode::Refuse => Err(ArchiveError::WhiteoutNotAllowed {
                    path: show(&e.path),
                }),
                WhiteoutMode::Apply => self.whiteout(e, parent_comps, name),
                WhiteoutMode::Overlay => self.overlay_whiteout(e, parent_comps, name),
            };
        }
        let parent = match cached {
            Some(fd) => fd,
            None => self
                .root
                .resolve_dir(parent_comps, Some(&mut self.touched), &e.path)?
                .ok_or_else(|| ArchiveError::NotADirectory {
                    path: show(&e.path),
                })?,
        };
        let p = parent.as_fd();
        match e.kind {
            Kind::File => {
                self.write_file(parser, p, name, e)?;
                let path = parent_comps.iter().map(|c| c.to_vec()).collect();
                self.last_parent = Some((path, parent));
            }
            Kind::Dir => self.make_dir(p, name, &comps, e)?,
            Kind::Symlink => self.make_symlink(p, name, e)?,
            Kind::Hardlink => self.hardlink(p, name, e)?,
            Kind::Char | Kind::Block => self.make_device(p, name, e)?,
            Kind::Fifo => {
                self.clear_slot(p, name, e)?;
                mknodat(p, *name, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|x| ArchiveError::io("create fifo", show(&e.path), x))?;
                self.finish_node(Target::At(p, name), e, true)?;
            }
        }
        Ok(())
    }

    /// The parent directory of the last file, if the regular file `e` (split into
    /// `comps`) is in the same one. The cache is emptied either way.
    fn take_cached_parent(&mut self, e: &Entry, comps: &[&[u8]]) -> Option<OwnedFd> {
        match self.last_parent.take() {
            Some((c, fd))
                if e.kind == Kind::File
                    && c.len() == comps.len().saturating_sub(1)
                    && c.iter().zip(comps).all(|(a, b)| a.as_slice() == *b) =>
            {
                Some(fd)
            }
            _ => None,
        }
    }

    /// A regular file: created afresh (never written through what was there), its data
    /// copied from the archive, then its metadata.
    fn write_file<R: Read>(
        &mut self,
        parser: &mut TarParser<R>,
        p: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
    ) -> Result<(), ArchiveError> {
        self.clear_slot(p, name, e)?;
        let fd = openat(
            p,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|x| ArchiveError::io("create", show(&e.path), x))?;
        let mut f = File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = parser.read_data(&mut buf)?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n])
                .map_err(|x| ArchiveError::io("write", show(&e.path), x))?;
            self.stats.file_bytes += n as u64;
        }
        // Writing clears setuid bits and security.capability, and chown
        // clears setuid bits: owner, then mode, then xattrs.
        self.finish_node(Target::Fd(f.as_fd()), e, true)
    }

    /// A directory: an existing one is kept, anything else in its place replaced. Its
    /// final mode and mtime wait for [`Self::finish_dirs`].
    fn make_dir(
        &mut self,
        p: BorrowedFd<'_>,
        name: &[u8],
        comps: &[&[u8]],
        e: &Entry,
    ) -> Result<(), ArchiveError> {
        let err = |op, x: Errno| ArchiveError::io(op, show(&e.path), x);
        let fd = match stat_at(p, name, &e.path)? {
            Some(st) if is_dir(&st) => open_dir(p, name).map_err(|x| err("open", x))?,
            existing => {
                if existing.is_some() {
                    // Replace whatever is there (a symlink to the host, say)
                    // instead of following it.
                    unlinkat(p, name, UnlinkatFlags::NoRemoveDir).map_err(|x| err("remove", x))?;
                }
                mkdirat(p, name, Mode::from_bits_truncate(0o700))
                    .map_err(|x| err("create directory", x))?;
                let fd = open_dir(p, name).map_err(|x| err("open", x))?;
                if existing.is_some() && self.opts.whiteouts == WhiteoutMode::Overlay {
                    // The replaced non-directory came from this archive and,
                    // applied, would have deleted a lower directory here: the
                    // lower directory's content must stay hidden.
                    set_opaque(fd.as_fd(), e)?;
                }
                fd
            }
        };
        // A rootless extractor still needs to create the children.
        let now_mode = if self.is_root { e.mode } else { e.mode | 0o700 };
        self.set_owner(Target::Fd(fd.as_fd()), e)?;
        fchmod(&fd, Mode::from_bits_truncate(now_mode)).map_err(|x| err("chmod", x))?;
        self.set_xattrs(Target::Fd(fd.as_fd()), e)?;
        self.touch(fd.as_fd(), e)?;
        self.deferred.push((
            comps.iter().map(|c| c.to_vec()).collect(),
            e.mode,
            TimeSpec::new(e.mtime, i64::from(e.mtime_nsec)),
        ));
        Ok(())
    }

    /// A symlink, its target stored verbatim (never resolved here).
    fn make_symlink(
        &mut self,
        p: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
    ) -> Result<(), ArchiveError> {
        if e.link.is_empty() {
            return Err(ArchiveError::UnsafePath {
                path: show(&e.path),
                reason: "symlink with an empty target",
            });
        }
        self.clear_slot(p, name, e)?;
        symlinkat(e.link.as_slice(), p, name)
            .map_err(|x| ArchiveError::io("create symlink", show(&e.path), x))?;
        self.finish_node(Target::At(p, name), e, false)
    }

    /// A character or block device: created only as root and when allowed, else
    /// skipped with a warning.
    fn make_device(
        &mut self,
        p: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
    ) -> Result<(), ArchiveError> {
        if !(self.opts.allow_devices && self.is_root) {
            tracing::warn!(path = %show(&e.path), "skipping device node");
            self.stats.skipped_devices += 1;
            return Ok(());
        }
        let (major, minor) = (
            self.dev_part(e, e.dev_major)?,
            self.dev_part(e, e.dev_minor)?,
        );
        let kind = if e.kind == Kind::Char {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        self.clear_slot(p, name, e)?;
        mknodat(
            p,
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            libc::makedev(major, minor),
        )
        .map_err(|x| ArchiveError::io("create device", show(&e.path), x))?;
        self.finish_node(Target::At(p, name), e, true)
    }

    /// Whether `fd` is the extraction root.
    fn is_root_dir(&self, fd: BorrowedFd<'_>, e: &Entry) -> Result<bool, ArchiveError> {
        let st = |fd| fstat(fd).map_err(|x| ArchiveError::io("stat", show(&e.path), x));
        Ok(ino(&st(fd)?) == ino(&st(self.root.fd())?))
    }

    fn dev_part(&self, e: &Entry, v: u64) -> Result<u32, ArchiveError> {
        u32::try_from(v).map_err(|_| ArchiveError::OutOfRange {
            path: show(&e.path),
            field: "device number",
            value: v,
        })
    }

    /// The archive's own entry for `/` or `.`: only a directory may stand there
    /// (umoci CVE-2021-29136); its metadata applies to the root.
    fn apply_root(&mut self, e: &Entry) -> Result<(), ArchiveError> {
        if e.kind != Kind::Dir {
            return Err(ArchiveError::RootTypeChange {
                path: show(&e.path),
                kind: e.kind.name(),
            });
        }
        let fd = self.root.open_self()?;
        self.set_owner(Target::Fd(fd.as_fd()), e)?;
        let now_mode = if self.is_root { e.mode } else { e.mode | 0o700 };
        fchmod(&fd, Mode::from_bits_truncate(now_mode))
            .map_err(|x| ArchiveError::io("chmod", "/", x))?;
        self.set_xattrs(Target::Fd(fd.as_fd()), e)?;
        self.deferred.push((
            Vec::new(),
            e.mode,
            TimeSpec::new(e.mtime, i64::from(e.mtime_nsec)),
        ));
        Ok(())
    }

    /// Makes room for a new non-directory at `name`: whatever is there is removed
    /// (a directory recursively), never followed or written through, so a file that
    /// is also hard-linked elsewhere is not modified either.
    fn clear_slot(&self, p: BorrowedFd<'_>, name: &[u8], e: &Entry) -> Result<(), ArchiveError> {
        match stat_at(p, name, &e.path)? {
            None => Ok(()),
            Some(st) if is_dir(&st) => remove_all(p, name, &e.path),
            Some(_) => unlinkat(p, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|x| ArchiveError::io("remove", show(&e.path), x)),
        }
    }

    fn hardlink(&mut self, p: BorrowedFd<'_>, name: &[u8], e: &Entry) -> Result<(), ArchiveError> {
        let bad = |reason| ArchiveError::InvalidLinkTarget {
            path: show(&e.path),
            target: show(&e.link),
            reason,
        };
        let tcomps = components(&e.link, "target contains a .. component").map_err(bad)?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(bad("target is the root directory"));
        };
        // The target's parents resolve inside the root; its last component is not
        // followed, so a link to a symlink links the symlink itself (as linkat does).
        let tdir = self
            .root
            .resolve_dir(tparent, None, &e.path)?
            .ok_or_else(|| bad("target does not exist"))?;
        let tst =
            stat_at(tdir.as_fd(), tname, &e.path)?.ok_or_else(|| bad("target does not exist"))?;
        if is_dir(&tst) {
            return Err(bad("target is a directory"));
        }
        if self.opts.whiteouts == WhiteoutMode::Overlay && is_whiteout_device(&tst) {
            // Applied, the whiteout would have left nothing to link to; linked, it
            // would hide a second lower path.
            return Err(bad("target does not exist"));
        }
        if let Some(st) = stat_at(p, name, &e.path)? {
            if ino(&st) == ino(&tst) {
                return Ok(());
            }
        }
        self.clear_slot(p, name, e)?;
        linkat(&tdir, *tname, p, name, AtFlags::empty())
            .map_err(|x| ArchiveError::io("create hard link", show(&e.path), x))?;
        // Owner, mode and times belong to the shared inode: a link entry does not
        // change them.
        self.touched.insert(ino(&tst));
        Ok(())
    }

    /// Applies a whiteout entry to the merged tree below ([`WhiteoutMode::Apply`]).
    fn whiteout(
        &mut self,
        e: &Entry,
        parent_comps: &[&[u8]],
        name: &[u8],
    ) -> Result<(), ArchiveError> {
        let marker = Marker::parse(e, name)?;
        // A whiteout's parent resolves inside the root like any path; if it does not
        // exist there is nothing to hide.
        let Some(dir) = self.root.resolve_dir(parent_comps, None, &e.path)? else {
            return Ok(());
        };
        let target = match marker {
            Marker::Opaque => {
                let fd = open_dir(dir.as_fd(), b".")
                    .map_err(|x| ArchiveError::io("open", show(&e.path), x))?;
                self.stats.opaque_root |= self.is_root_dir(fd.as_fd(), e)?;
                clear_lower(fd, &self.touched, &e.path)?;
                self.stats.whiteouts += 1;
                return Ok(());
            }
            Marker::Aufs => return Ok(()),
            Marker::Whiteout(target) => target,
        };
        match stat_at(dir.as_fd(), target, &e.path)? {
            None => {}
            Some(st) if self.touched.contains(&ino(&st)) => {
                // OCI: a whiteout only hides lower layers, never its own layer's files.
                tracing::warn!(path = %show(&e.path), "whiteout of a path from the same layer ignored");
            }
            Some(_) => remove_all(dir.as_fd(), target, &e.path)?,
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Writes a whiteout entry in overlayfs's format ([`WhiteoutMode::Overlay`]).
    fn overlay_whiteout(
        &mut self,
        e: &Entry,
        parent_comps: &[&[u8]],
        name: &[u8],
    ) -> Result<(), ArchiveError> {
        let marker = Marker::parse(e, name)?;
        if let Marker::Aufs = marker {
            return Ok(());
        }
        // Unlike Apply, a missing parent is created (as for any entry): the
        // directory may exist only in lower layers, and overlayfs looks for the
        // whiteout at the same path in this one.
        let dir = self
            .root
            .resolve_dir(parent_comps, Some(&mut self.touched), &e.path)?
            .ok_or_else(|| ArchiveError::NotADirectory {
                path: show(&e.path),
            })?;
        let target = match marker {
            Marker::Opaque => {
                let fd = open_dir(dir.as_fd(), b".")
                    .map_err(|x| ArchiveError::io("open", show(&e.path), x))?;
                set_opaque(fd.as_fd(), e)?;
                self.stats.whiteouts += 1;
                // Also when reached through a symlink to `/`.
                self.stats.opaque_root |= self.is_root_dir(fd.as_fd(), e)?;
                return Ok(());
            }
            Marker::Aufs => return Ok(()),
            Marker::Whiteout(target) => target,
        };
        let p = dir.as_fd();
        if let Some(st) = stat_at(p, target, &e.path)? {
            if self.touched.contains(&ino(&st)) {
                // OCI: a whiteout only hides lower layers, never its own layer's files.
                tracing::warn!(path = %show(&e.path), "whiteout of a path from the same layer ignored");
                return Ok(());
            }
            // Not from this archive (the root was not empty): replaced, never
            // followed, like the slot of any new entry.
            self.clear_slot(p, target, e)?;
        }
        // Mode 0 and device 0/0, as overlayfs makes its own whiteouts.
        mknodat(
            p,
            target,
            SFlag::S_IFCHR,
            Mode::empty(),
            libc::makedev(0, 0),
        )
        .map_err(|x| match x {
            Errno::EPERM => ArchiveError::OverlayNeedsPrivilege {
                path: show(&e.path),
                what: "whiteout",
                source: x.into(),
            },
            x => ArchiveError::io("create whiteout", show(&e.path), x),
        })?;
        self.set_owner(Target::At(p, target), e)?;
        let ts = TimeSpec::new(e.mtime, i64::from(e.mtime_nsec));
        utimensat(p, target, &ts, &ts, UtimensatFlags::NoFollowSymlink)
            .map_err(|x| ArchiveError::io("set times", show(&e.path), x))?;
        if let Some(st) = stat_at(p, target, &e.path)? {
            self.touched.insert(ino(&st));
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Owner, mode (unless a symlink), xattrs and times of a fresh non-directory.
    fn finish_node(
        &mut self,
        t: Target<'_>,
        e: &Entry,
        with_mode: bool,
    ) -> Result<(), ArchiveError> {
        self.set_owner(self.same(&t), e)?;
        if with_mode {
            self.set_mode(self.same(&t), e)?;
        }
        self.set_xattrs(self.same(&t), e)?;
        let ts = TimeSpec::new(e.mtime, i64::from(e.mtime_nsec));
        let r = match t {
            Target::Fd(fd) => {
                let r = futimens(fd, &ts, &ts);
                self.touch(fd, e)?;
                r
            }
            Target::At(dir, name) => {
                let r = utimensat(dir, name, &ts, &ts, UtimensatFlags::NoFollowSymlink);
                if let Some(st) = stat_at(dir, name, &e.path)? {
                    self.touched.insert(ino(&st));
                }
                r
            }
        };
        r.map_err(|x| ArchiveError::io("set times", show(&e.path), x))
    }

    fn same<'a>(&self, t: &Target<'a>) -> Target<'a> {
        match t {
            Target::Fd(fd) => Target::Fd(*fd),
            Target::At(d, n) => Target::At(*d, n),
        }
    }

    fn touch(&mut self, fd: BorrowedFd<'_>, e: &Entry) -> Result<(), ArchiveError> {
        let st = fstat(fd).map_err(|x| ArchiveError::io("stat", show(&e.path), x))?;
        self.touched.insert(ino(&st));
        Ok(())
    }

    fn set_owner(&self, t: Target<'_>, e: &Entry) -> Result<(), ArchiveError> {
        if !(self.opts.same_owner && self.is_root) {
            return Ok(());
        }
        // u32::MAX is chown's "leave unchanged", not an owner.
        let id = |v: u64, field| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or(ArchiveError::OutOfRange {
                    path: show(&e.path),
                    field,
                    value: v,
                })
        };
        let (uid, gid) = match self.opts.owner {
            Some((u, g)) => (Uid::from_raw(u), Gid::from_raw(g)),
            None => (
                Uid::from_raw(id(e.uid, "uid")?),
                Gid::from_raw(id(e.gid, "gid")?),
            ),
        };
        match t {
            Target::Fd(fd) => fchown(fd, Some(uid), Some(gid)),
            Target::At(dir, name) => fchownat(
                dir,
                name,
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
        }
        .map_err(|x| ArchiveError::io("chown", show(&e.path), x))
    }

    fn set_mode(&self, t: Target<'_>, e: &Entry) -> Result<(), ArchiveError> {
        let mode = Mode::from_bits_truncate(e.mode);
        match t {
            Target::Fd(fd) => {
                fchmod(fd, mode).map_err(|x| ArchiveError::io("chmod", show(&e.path), x))
            }
            Target::At(dir, name) => {
                let cname =
                    CString::new(name).map_err(|x| ArchiveError::io("chmod", show(&e.path), x))?;
                // SAFETY: dir is a valid fd and cname a valid C string. glibc
                // implements AT_SYMLINK_NOFOLLOW with fchmodat2 or an O_PATH fd, so
                // a symlink put there meanwhile is refused, not followed.
                let r = unsafe {
                    libc::fchmodat(
                        confined::raw(dir),
                        cname.as_ptr(),
                        mode.bits(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                };
                if r == 0 {
                    return Ok(());
                }
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ENOTSUP) {
                    return Err(ArchiveError::io("chmod", show(&e.path), err));
                }
                // glibc < 2.32 has no AT_SYMLINK_NOFOLLOW for fchmodat. Only fifos
                // and devices get here, just created by this extraction in a root
                // no one else writes to: check it is still not a symlink, then chmod.
                match stat_at(dir, name, &e.path)? {
                    Some(st) if !confined::is_symlink(&st) => nix::sys::stat::fchmodat(
                        dir,
                        name,
                        mode,
                        nix::sys::stat::FchmodatFlags::FollowSymlink,
                    )
                    .map_err(|x| ArchiveError::io("chmod", show(&e.path), x)),
                    _ => Err(ArchiveError::io("chmod", show(&e.path), err)),
                }
            }
        }
    }

    /// Sets xattrs; EPERM and ENOTSUP (a rootless extractor setting `trusted.*`,
    /// a filesystem without user xattrs) are warnings, as in Docker.
    fn set_xattrs(&self, t: Target<'_>, e: &Entry) -> Result<(), ArchiveError> {
        for (k, v) in &e.xattrs {
            if is_overlay_xattr(k) {
                tracing::warn!(path = %show(&e.path), xattr = %show(k), "overlay xattr in archive not set");
                continue;
            }
            let ck = CString::new(k.as_slice())
                .map_err(|x| ArchiveError::io("set xattr", show(&e.path), x))?;
            let r = match t {
                // SAFETY: valid fd, C string and buffer.
                Target::Fd(fd) => unsafe {
                    libc::fsetxattr(
                        confined::raw(fd),
                        ck.as_ptr(),
                        v.as_ptr().cast(),
                        v.len(),
                        0,
                    )
                },
                Target::At(dir, name) => {
                    // The directory fd is confined; its /proc path reaches exactly it,
                    // and lsetxattr does not follow `name`.
                    let mut p = format!("/proc/self/fd/{}/", confined::raw(dir)).into_bytes();
                    p.extend_from_slice(name);
                    let cp = CString::new(p)
                        .map_err(|x| ArchiveError::io("set xattr", show(&e.path), x))?;
                    // SAFETY: valid C strings and buffer.
                    unsafe {
                        libc::lsetxattr(cp.as_ptr(), ck.as_ptr(), v.as_ptr().cast(), v.len(), 0)
                    }
                }
            };
            if r != 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::ENOENT) => {
                        tracing::warn!(path = %show(&e.path), xattr = %show(k), error = %err, "xattr not set");
                    }
                    _ => return Err(ArchiveError::io("set xattr", show(&e.path), err)),
                }
            }
        }
        Ok(())
    }

    /// Sets directory modes and mtimes, children first.
    fn finish_dirs(&mut self) -> Result<(), ArchiveError> {
        for (comps, mode, ts) in self.deferred.iter().rev() {
            let shown = comps.join(&b'/');
            let fd: OwnedFd = match comps.split_last() {
                None => self.root.open_self()?,
                Some((name, parents)) => {
                    let parents: Vec<&[u8]> = parents.iter().map(|c| c.as_slice()).collect();
                    let Some(dir) = self.root.resolve_dir(&parents, None, &shown)? else {
                        continue;
                    };
                    match stat_at(dir.as_fd(), name, &shown)? {
                        Some(st) if is_dir(&st) => {}
                        // Replaced or removed by a later entry.
                        _ => continue,
                    }
                    open_dir(dir.as_fd(), name)
                        .map_err(|x| ArchiveError::io("open", show(&shown), x))?
                }
            };
            if !self.is_root {
                fchmod(&fd, Mode::from_bits_truncate(*mode))
                    .map_err(|x| ArchiveError::io("chmod", show(&shown), x))?;
            }
            futimens(&fd, ts, ts).map_err(|x| ArchiveError::io("set times", show(&shown), x))?;
        }
        Ok(())
    }
}

/// What a `.wh.`-prefixed entry name means.
enum Marker<'a> {
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// Another `.wh..wh.` name: AUFS bookkeeping (`.wh..wh.plnk`, ...), skipped
    /// as Docker does.
    Aufs,
    /// `.wh.<name>`: `<name>` is deleted.
    Whiteout(&'a [u8]),
}

impl<'a> Marker<'a> {
    /// Reads the last component `name` of entry `e`, which starts with `.wh.`.
    /// `.wh.`, `.wh..` and `.wh...` are refused: they would name the directory
    /// itself or its parent.
    fn parse(e: &Entry, name: &'a [u8]) -> Result<Marker<'a>, ArchiveError> {
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ArchiveError::InvalidWhiteout {
                path: show(&e.path),
            });
        }
        if name == OPAQUE_MARKER {
            return Ok(Marker::Opaque);
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            tracing::warn!(path = %show(&e.path), "skipping AUFS metadata entry");
            return Ok(Marker::Aufs);
        }
        Ok(Marker::Whiteout(target))
    }
}

/// Whether this process runs in a user namespace other than the host's (kiln's rootless
/// mode; see `executor::isolation`, which this layer may not import).
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// Marks the open directory `fd` opaque for overlayfs. Unlike other xattrs a
/// refusal is an error: without it, lower content would show through.
fn set_opaque(fd: BorrowedFd<'_>, e: &Entry) -> Result<(), ArchiveError> {
    // SAFETY: valid fd, C string and buffer.
    let r = unsafe {
        libc::fsetxattr(
            confined::raw(fd),
            TRUSTED_OPAQUE.as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // In kiln's rootless user namespace no `trusted.*` xattr can be set, and overlayfs is
    // mounted with `userxattr` there: it reads `user.overlay.opaque` instead.
    if err.raw_os_error() == Some(libc::EPERM) && in_user_namespace() {
        // SAFETY: valid fd, C string and buffer.
        let r = unsafe {
            libc::fsetxattr(
                confined::raw(fd),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        if r == 0 {
            return Ok(());
        }
    }
    Err(match err.raw_os_error() {
        Some(libc::EPERM) => ArchiveError::OverlayNeedsPrivilege {
            path: show(&e.path),
            what: "opaque directory",
            source: err,
        },
        _ => ArchiveError::io("set opaque xattr", show(&e.path), err),
    })
}
