//! The copy-based root filesystem, for hosts where overlayfs cannot be mounted: copy the
//! layers into a fresh dir, remember what was there, and after the step write the difference
//! into an upper dir in overlay's format (whiteouts, opaque dirs), so the rest of kiln cannot
//! tell the two apart.
//!
//! Change detection uses inode number, generation and ctime, which a step cannot set back (unlike mtime,
//! which `touch -r` or archive extraction can). A directory that was removed and recreated
//! has a new inode and becomes opaque. Hard links between new files are copied as separate
//! files. Extended attributes are copied on a best-effort basis.
//!
//! Cost: one `lstat` per entry for the index and for the diff; file contents are read only
//! for what changed. The generation needs an open and an `ioctl`, so it is read only for
//! entries whose ctime is recent ([`RECENT`]): a file deleted and recreated with the same
//! inode number has the old ctime only if both fall in one tick of the filesystem's clock,
//! and every change a step makes comes after the index was taken, so an entry whose ctime
//! is older than that margin cannot be confused with a recreated one.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::layers::{is_opaque, is_whiteout};

/// What the copied root held before the step, per path.
#[derive(Debug, Default)]
pub struct Manifest {
    entries: HashMap<PathBuf, Stamp>,
    /// The names in each directory (sorted), as of its stamp in `entries`.
    children: HashMap<PathBuf, Vec<std::ffi::OsString>>,
    /// When the walk that made the index started (nanoseconds since the epoch).
    taken: i128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    /// The inode's generation, read for recently changed entries only (see the module
    /// docs): a deleted and recreated file can get the same inode number (and, within the
    /// filesystem's coarse clock tick, the same ctime), never the same generation on
    /// filesystems that keep one (ext4, btrfs, xfs, tmpfs).
    generation: Option<u64>,
    fmt: u32,
    ctime: i64,
    ctime_nsec: i64,
}

/// How recent a ctime must be, at the time of the index or the diff, for the generation
/// to be read too: far above the tick of the clock filesystems stamp inodes with (a jiffy,
/// at most 10 ms). A ctime with no nanoseconds may come from a filesystem that keeps whole
/// seconds only: [`RECENT_COARSE`] then.
pub const RECENT: std::time::Duration = std::time::Duration::from_millis(50);

/// [`RECENT`] for ctimes in whole seconds.
pub const RECENT_COARSE: std::time::Duration = std::time::Duration::from_secs(3);

impl Stamp {
    /// Whether the ctime is older than `at` by more than the clock's tick can hide: any
    /// change made after `at` gives another ctime.
    fn settled_before(&self, at: i128) -> bool {
        let window = if self.ctime_nsec == 0 {
            RECENT_COARSE
        } else {
            RECENT
        };
        let ctime = i128::from(self.ctime) * 1_000_000_000 + i128::from(self.ctime_nsec);
        ctime < at - window.as_nanos() as i128
    }

    /// Whether this entry is the same inode as `prev` (not deleted and recreated).
    fn same_inode(&self, prev: &Stamp) -> bool {
        self.ino == prev.ino
            && self.fmt == prev.fmt
            && match (self.generation, prev.generation) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Whether nothing changed since `prev`.
    fn unchanged(&self, prev: &Stamp) -> bool {
        self.same_inode(prev) && self.ctime == prev.ctime && self.ctime_nsec == prev.ctime_nsec
    }
}

/// `FS_IOC_GETVERSION`: `_IOR('v', 1, long)`.
const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;

pub(crate) fn generation(path: &Path, m: &fs::Metadata) -> u64 {
    // Symlinks cannot be opened for an ioctl; their inode number and ctime must do.
    if m.file_type().is_symlink() || !(m.is_file() || m.is_dir()) {
        return 0;
    }
    let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    else {
        return 0;
    };
    let mut g: libc::c_long = 0;
    use std::os::fd::AsRawFd;
    // SAFETY: FS_IOC_GETVERSION writes one long through the pointer given.
    let r = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            FS_IOC_GETVERSION,
            &mut g as *mut libc::c_long,
        )
    };
    if r == 0 {
        g as u64
    } else {
        0
    }
}

/// The stamp of `path` as of `now` (nanoseconds since the epoch): with the generation if
/// its ctime is recent, or if `prev` has one and the inode number is the same (only the
/// generation can tell a recreated inode from the old one then).
fn stamp(path: &Path, m: &fs::Metadata, now: i128, prev: Option<&Stamp>) -> Stamp {
    let ctime = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
    let window = if m.ctime_nsec() == 0 {
        RECENT_COARSE
    } else {
        RECENT
    };
    let recent = ctime >= now - window.as_nanos() as i128;
    let ambiguous = prev.is_some_and(|p| p.generation.is_some() && p.ino == m.ino());
    let wants_generation = recent || ambiguous;
    Stamp {
        ino: m.ino(),
        generation: wants_generation.then(|| generation(path, m)),
        fmt: m.mode() & libc::S_IFMT,
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    }
}

/// Now, in nanoseconds since the epoch (what [`stamp`] measures recency against).
fn recent_from() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

pub(super) fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies owner, mode, extended attributes and times of `src` to `dst` (not following
/// symlinks).
pub(super) fn copy_meta(src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    copy_xattrs(src, dst);
    let times = [
        libc::timespec {
            tv_sec: meta.atime() as libc::time_t,
            tv_nsec: meta.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: meta.mtime() as libc::time_t,
            tv_nsec: meta.mtime_nsec() as _,
        },
    ];
    let c = cpath(dst)?;
    // SAFETY: valid C string and a two-element timespec array.
    let ret = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn copy_xattrs(src: &Path, dst: &Path) {
    let (Ok(s), Ok(d)) = (cpath(src), cpath(dst)) else {
        return;
    };
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return;
    }
    names.truncate(n as usize);
    let mut value = vec![0u8; 64 * 1024];
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        // overlay's own bookkeeping is not content.
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        // SAFETY: valid C strings and buffer.
        let len = unsafe {
            libc::lgetxattr(
                s.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        // SAFETY: valid C strings and a buffer of len bytes.
        unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                len as usize,
                0,
            )
        };
    }
}

/// Creates a copy of a non-directory `src` at `dst` (which must not exist).
pub(super) fn copy_nondir(
    src: &Path,
    dst: &Path,
    meta: &fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_file() && meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            return fs::hard_link(first, dst);
        }
    }
    if ft.is_file() {
        let mut from = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)?;
        let mut to: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(dst)?;
        io::copy(&mut from, &mut to)?;
        links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() {
            return Ok(());
        }
        let c = cpath(dst)?;
        // SAFETY: valid C string.
        let ret = unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    copy_meta(src, dst, meta)
}

/// Builds a root in `dest` (an empty dir) from `layers`, top-most first, applying whiteouts
/// and opaque dirs as overlayfs would. Gives the number of entries copied.
pub fn build_root(layers: &[PathBuf], dest: &Path) -> io::Result<usize> {
    place_layers(layers, dest, false)
}

/// [`build_root`] for a view nothing writes to (the source of a `COPY --from` in the
/// unprivileged mode): its directories are made, but its other entries are hard links to
/// the layers' own (a copy where a link cannot be made). The caller must only read it:
/// writing a file of it would change a snapshot of the store.
pub fn link_root(layers: &[PathBuf], dest: &Path) -> io::Result<usize> {
    place_layers(layers, dest, true)
}

fn place_layers(layers: &[PathBuf], dest: &Path, link: bool) -> io::Result<usize> {
    let mut count = 0;
    for layer in layers.iter().rev() {
        count += apply_dir(layer, dest, Path::new(""), &mut Placed::new(link))?;
    }
    Ok(count)
}

/// How [`apply_dir`] places non-directories: the copies made so far (by the source's device
/// and inode, so hard links stay links), or links to the layer's own entries.
pub(super) struct Placed {
    copies: HashMap<(u64, u64), PathBuf>,
    link: bool,
}

impl Placed {
    /// Nothing placed yet; `link`: non-directories are linked, not copied.
    pub(super) fn new(link: bool) -> Placed {
        Placed {
            copies: HashMap::new(),
            link,
        }
    }
}

pub(super) fn apply_dir(
    layer: &Path,
    dest: &Path,
    rel: &Path,
    links: &mut Placed,
) -> io::Result<usize> {
    let mut count = 0;
    for name in sorted_names(&layer.join(rel))? {
        count += 1;
        let r = rel.join(&name);
        let s = layer.join(&r);
        let d = dest.join(&r);
        let meta = fs::symlink_metadata(&s)?;
        if is_whiteout(&meta) {
            remove_any(&d)?;
            continue;
        }
        if meta.is_dir() {
            match fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() => {
                    if is_opaque(&s) {
                        for child in sorted_names(&d)? {
                            remove_any(&d.join(child))?;
                        }
                    }
                }
                Ok(_) => {
                    remove_any(&d)?;
                    fs::create_dir(&d)?;
                }
                Err(_) => fs::create_dir(&d)?,
            }
            count += apply_dir(layer, dest, &r, links)?;
            // After the children, so the directory's mtime is the layer's.
            copy_meta(&s, &d, &meta)?;
        } else {
            remove_any(&d)?;
            if !(links.link && fs::hard_link(&s, &d).is_ok()) {
                copy_nondir(&s, &d, &meta, &mut links.copies)?;
            }
        }
    }
    Ok(count)
}

/// Records what `root` holds now.
pub fn record(root: &Path) -> io::Result<Manifest> {
    let taken = recent_from();
    let mut m = Manifest {
        taken,
        ..Manifest::default()
    };
    record_dir(root, Path::new(""), &mut m, taken)?;
    Ok(m)
}

fn record_dir(root: &Path, rel: &Path, m: &mut Manifest, recent: i128) -> io::Result<()> {
    let names = sorted_names(&root.join(rel))?;
    m.children.insert(rel.to_path_buf(), names.clone());
    for name in names {
        let r = rel.join(&name);
        let full = root.join(&r);
        let meta = fs::symlink_metadata(&full)?;
        m.entries
            .insert(r.clone(), stamp(&full, &meta, recent, None));
        if meta.is_dir() {
            record_dir(root, &r, m, recent)?;
        }
    }
    Ok(())
}

impl Manifest {
    /// Forgets `rel` and everything below it.
    pub fn forget(&mut self, rel: &Path) {
        self.entries.retain(|p, _| !p.starts_with(rel));
        self.children.retain(|p, _| !p.starts_with(rel));
    }

    /// Records `rel` (and what is below it) as `root` holds it now, replacing what the
    /// index had there; a missing `rel` is forgotten.
    pub fn refresh(&mut self, root: &Path, rel: &Path) -> io::Result<()> {
        self.forget(rel);
        let full = root.join(rel);
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let recent = recent_from();
        self.entries
            .insert(rel.to_path_buf(), stamp(&full, &meta, recent, None));
        if meta.is_dir() {
            record_dir(root, rel, self, recent)?;
        }
        Ok(())
    }

    /// Records only the entry `rel` itself (a directory whose ctime changed), if it exists.
    pub fn restamp(&mut self, root: &Path, rel: &Path) -> io::Result<()> {
        let full = root.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) => {
                let s = stamp(&full, &meta, recent_from(), None);
                self.entries.insert(rel.to_path_buf(), s);
                if meta.is_dir() && self.children.contains_key(rel) {
                    self.children
                        .insert(rel.to_path_buf(), sorted_names(&full)?);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.entries.remove(rel);
                self.children.remove(rel);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

struct Diff<'a> {
    root: &'a Path,
    upper: &'a Path,
    before: &'a Manifest,
    /// Paths (relative) whose subtree is not part of the step's changes: mount stand-ins of
    /// the unprivileged mode (`/dev` nodes, `/etc/hosts`, `RUN --mount` copies).
    skip: &'a dyn Fn(&Path) -> bool,
    seen: HashSet<PathBuf>,
    /// The index of the root as the diff found it (what the next step on this root starts
    /// from): every entry walked, with its stamp now.
    after: Manifest,
    recent: i128,
    /// Directories that replaced an earlier one (opaque): their old children need no whiteouts.
    replaced: HashSet<PathBuf>,
    links: HashMap<(u64, u64), PathBuf>,
}

/// Writes what changed in `root` since `before` into `upper`, in overlay's format.
pub fn diff_into_upper(root: &Path, before: &Manifest, upper: &Path) -> io::Result<()> {
    diff_into_upper_tracking(root, before, upper, &|_| false).map(drop)
}

/// [`diff_into_upper`], leaving out every path for which `skip` is true (and everything
/// below it: neither its content nor its deletion reaches `upper`), and giving the index of
/// `root` as it is now (without the skipped paths): the `before` of a next step on the same
/// root, with no second walk.
pub fn diff_into_upper_tracking(
    root: &Path,
    before: &Manifest,
    upper: &Path,
    skip: &dyn Fn(&Path) -> bool,
) -> io::Result<Manifest> {
    let now = recent_from();
    let mut d = Diff {
        root,
        upper,
        before,
        skip,
        seen: HashSet::new(),
        after: Manifest {
            taken: now,
            ..Manifest::default()
        },
        recent: now,
        replaced: HashSet::new(),
        links: HashMap::new(),
    };
    d.dir(Path::new(""), false)?;
    let mut deleted: Vec<&PathBuf> = before
        .entries
        .keys()
        .filter(|p| !d.seen.contains(*p) && !p.ancestors().any(skip))
        .collect();
    deleted.sort();
    for p in deleted {
        let parent = p.parent().unwrap_or(Path::new(""));
        let parent_kept = parent.as_os_str().is_empty()
            || (d.seen.contains(parent) && !d.replaced.contains(parent));
        if !parent_kept || d.replaced.iter().any(|r| p.starts_with(r)) {
            continue;
        }
        d.ensure_parents(p)?;
        make_whiteout(&upper.join(p))?;
    }
    Ok(d.after)
}

/// Overlayfs refuses to create its own whiteouts (a 0/0 character device) in an overlay
/// mount: an upper dir on the container's own overlay root (a store inside `docker run`
/// without a volume) cannot hold a deletion.
fn make_whiteout(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C string; a 0/0 character device is overlay's whiteout.
    let ret = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
    if ret == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EPERM) {
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot record a deletion as a whiteout at {} ({e}); is the store on overlayfs? \
                 put it on a volume (docker run -v kiln-store:/var/lib/kiln)",
                path.display()
            ),
        ));
    }
    Err(e)
}

/// Marks `dir` opaque: `trusted.overlay.opaque`, or where `trusted.*` xattrs need a
/// capability kiln lacks (`CAP_SYS_ADMIN`, the unprivileged mode), `user.overlay.opaque`,
/// which kiln's upper-dir readers accept too.
fn set_opaque(dir: &Path) -> io::Result<()> {
    let c = cpath(dir)?;
    for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        // SAFETY: valid C strings and a one-byte value.
        let ret = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        if ret == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    Err(io::Error::last_os_error())
}

impl Diff<'_> {
    fn ensure_parents(&self, rel: &Path) -> io::Result<()> {
        let mut prefix = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for comp in comps.iter().take(comps.len().saturating_sub(1)) {
            prefix.push(comp);
            let u = self.upper.join(&prefix);
            if fs::symlink_metadata(&u).is_err() {
                fs::create_dir(&u)?;
                let src = self.root.join(&prefix);
                copy_meta(&src, &u, &fs::symlink_metadata(&src)?)?;
            }
        }
        Ok(())
    }

    /// The names in the directory `rel`: the index's when the directory is unchanged since
    /// a ctime the step cannot have shared (creating, removing or renaming an entry changes
    /// the directory's ctime), so only the entries themselves need a `stat`; otherwise read.
    fn names(&self, rel: &Path, force: bool) -> io::Result<Vec<std::ffi::OsString>> {
        let known = (!force && !rel.as_os_str().is_empty())
            .then(|| {
                let prev = self.before.entries.get(rel)?;
                let now = self.after.entries.get(rel)?;
                let settled = now.unchanged(prev) && prev.settled_before(self.before.taken);
                settled.then(|| self.before.children.get(rel))?
            })
            .flatten();
        match known {
            Some(names) => Ok(names.clone()),
            None => sorted_names(&self.root.join(rel)),
        }
    }

    fn dir(&mut self, rel: &Path, force: bool) -> io::Result<()> {
        let names = self.names(rel, force)?;
        self.after.children.insert(rel.to_path_buf(), names.clone());
        for name in names {
            let r = rel.join(&name);
            let src = self.root.join(&r);
            if (self.skip)(&r) {
                continue;
            }
            let meta = match fs::symlink_metadata(&src) {
                Ok(m) => m,
                // Gone since the names were read: a deletion.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            self.seen.insert(r.clone());
            let prev = self.before.entries.get(&r).copied();
            let now = stamp(&src, &meta, self.recent, prev.as_ref());
            self.after.entries.insert(r.clone(), now);
            let is_new = prev.is_none_or(|p| !now.same_inode(&p));
            let changed = force || is_new || prev.is_none_or(|p| !now.unchanged(&p));
            let dst = self.upper.join(&r);
            if meta.is_dir() {
                let replaced = is_new && prev.is_some();
                if changed {
                    self.ensure_parents(&r)?;
                    if fs::symlink_metadata(&dst).is_err() {
                        fs::create_dir(&dst)?;
                    }
                    if replaced {
                        self.replaced.insert(r.clone());
                        // As the root mode's layer writer: an opaque directory with nothing
                        // below it in the base to hide gets no marker.
                        let hides = self.before.children.get(&r).is_some_and(|names| {
                            names
                                .iter()
                                .any(|n| self.before.entries.contains_key(&r.join(n)))
                        });
                        if hides {
                            set_opaque(&dst)?;
                        }
                    }
                }
                self.dir(&r, force || replaced)?;
                if fs::symlink_metadata(&dst).is_ok() {
                    copy_meta(&src, &dst, &meta)?;
                }
            } else if changed {
                self.ensure_parents(&r)?;
                remove_any(&dst)?;
                copy_nondir(&src, &dst, &meta, &mut self.links)?;
            }
        }
        Ok(())
    }
}
