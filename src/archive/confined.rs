//! Filesystem operations confined to one root directory: paths are walked component by component with `*at` calls, symlinks resolve as if the root were `/`, and nothing is ever followed out of it.
//!
//! This is the userspace equivalent of `openat2(RESOLVE_IN_ROOT)`: a `..` at the
//! root stays at the root, an absolute symlink restarts at the root, and every
//! component is opened with `O_NOFOLLOW`, so a symlink is only ever read
//! (`readlinkat`) and re-resolved here, never followed by the kernel. It works on
//! kernels and seccomp profiles without `openat2`. Walking up uses `..` of an fd
//! reached by walking down real directories, which is exact as long as nobody
//! renames directories inside the root concurrently; an extraction root is private
//! to the extracting process.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::error::{show, ArchiveError};

/// An inode identity, (st_dev, st_ino).
pub(crate) type Ino = (u64, u64);

/// Symlinks followed while resolving one path, as the kernel's limit (MAXSYMLINKS).
const MAX_SYMLINKS: u32 = 40;

pub(crate) fn ino(st: &FileStat) -> Ino {
    (st.st_dev, st.st_ino)
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
}

pub(crate) fn is_symlink(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits()
}

const DIR_PATH: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
const DIR_READ: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `lstat` relative to a directory fd; `None` if the name does not exist.
pub(crate) fn stat_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    entry: &[u8],
) -> Result<Option<FileStat>, ArchiveError> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(ArchiveError::io("stat", show(entry), e)),
    }
}

/// Opens a real directory (never a symlink to one) for reading and changing.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(dir, name, DIR_READ, Mode::empty())
}

/// The extraction root.
pub(crate) struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` (which the caller trusts, symlinks included) as the root.
    pub(crate) fn open(path: &Path) -> Result<Root, ArchiveError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::io("open root", path.display().to_string(), e))?;
        Ok(Root { fd })
    }

    /// The directory `comps` below this root, resolved inside it (symlinks followed
    /// as if the root were `/`, missing directories created 0755), as a root of its own.
    /// The directories it creates are given `owner` when one is set (ADD --chown).
    pub(crate) fn subdir(
        &self,
        comps: &[&[u8]],
        entry: &[u8],
        owner: Option<(u32, u32)>,
    ) -> Result<Root, ArchiveError> {
        let mut created = HashSet::new();
        let fd = self
            .resolve_dir(comps, Some(&mut created), entry)?
            .ok_or_else(|| ArchiveError::NotADirectory { path: show(entry) })?;
        if let (Some((uid, gid)), false) = (owner, created.is_empty()) {
            // Walk again: every directory on the way that this call made gets the owner.
            let mut cur = self.open_self()?;
            for c in comps.iter().filter(|c| !c.is_empty() && **c != b".") {
                let Ok(next) = openat(&cur, *c, DIR_READ, Mode::empty()) else {
                    break;
                };
                let st = fstat(&next).map_err(|e| ArchiveError::io("stat", show(entry), e))?;
                if created.contains(&ino(&st)) {
                    nix::unistd::fchown(
                        &next,
                        Some(nix::unistd::Uid::from_raw(uid)),
                        Some(nix::unistd::Gid::from_raw(gid)),
                    )
                    .map_err(|e| ArchiveError::io("chown", show(entry), e))?;
                }
                cur = next;
            }
        }
        Ok(Root { fd })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the root itself for reading and changing its metadata.
    pub(crate) fn open_self(&self) -> Result<OwnedFd, ArchiveError> {
        openat(self.fd(), ".", DIR_READ, Mode::empty())
            .map_err(|e| ArchiveError::io("open", "/", e))
    }

    /// Resolves `comps` as a directory inside the root, following symlinks inside
    /// the root. A missing component is created (mode 0755, inode recorded in
    /// `created`) when `created` is given; otherwise the result is `None`.
    /// `entry` names the tar entry in errors.
    pub(crate) fn resolve_dir(
        &self,
        comps: &[&[u8]],
        mut created: Option<&mut HashSet<Ino>>,
        entry: &[u8],
    ) -> Result<Option<OwnedFd>, ArchiveError> {
        let err = |op, e: Errno| ArchiveError::io(op, show(entry), e);
        let mut queue: VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
        let mut cur =
            openat(self.fd(), ".", DIR_PATH, Mode::empty()).map_err(|e| err("open root", e))?;
        let mut depth: usize = 0;
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                // `..` above the root is the root, as for `/..`.
                if depth > 0 {
                    cur =
                        openat(&cur, "..", DIR_PATH, Mode::empty()).map_err(|e| err("open", e))?;
                    depth -= 1;
                }
                continue;
            }
            let Some(st) = stat_at(cur.as_fd(), &c, entry)? else {
                let Some(created) = created.as_deref_mut() else {
                    return Ok(None);
                };
                mkdirat(&cur, c.as_slice(), Mode::from_bits_truncate(0o755))
                    .map_err(|e| err("create directory", e))?;
                let fd = open_dir(cur.as_fd(), &c).map_err(|e| err("open", e))?;
                // mkdir's mode is filtered by the umask; parents made up by the
                // extractor are 0755 like Docker's.
                fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(|e| err("chmod", e))?;
                created.insert(ino(&fstat(&fd).map_err(|e| err("stat", e))?));
                cur = fd;
                depth += 1;
                continue;
            };
            if is_dir(&st) {
                cur = openat(&cur, c.as_slice(), DIR_PATH, Mode::empty())
                    .map_err(|e| err("open", e))?;
                depth += 1;
            } else if is_symlink(&st) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ArchiveError::TooManySymlinks { path: show(entry) });
                }
                let target = readlinkat(&cur, c.as_slice()).map_err(|e| err("read link", e))?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    cur = openat(self.fd(), ".", DIR_PATH, Mode::empty())
                        .map_err(|e| err("open root", e))?;
                    depth = 0;
                }
                for t in target.split(|&b| b == b'/').rev() {
                    queue.push_front(t.to_vec());
                }
            } else {
                return Err(ArchiveError::NotADirectory { path: show(entry) });
            }
        }
        Ok(Some(cur))
    }
}

/// Lists a directory's entries (without `.` and `..`).
fn list(dir: BorrowedFd<'_>, entry: &[u8]) -> Result<Vec<Vec<u8>>, ArchiveError> {
    let fd = openat(dir, ".", DIR_READ, Mode::empty())
        .map_err(|e| ArchiveError::io("open", show(entry), e))?;
    let mut d = nix::dir::Dir::from_fd(fd)
        .map_err(|e| ArchiveError::io("read directory", show(entry), e))?;
    let mut names = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(|e| ArchiveError::io("read directory", show(entry), e))?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, without
/// following any symlink. Iterative, holding one directory fd at a time, so depth
/// costs neither stack nor file descriptors.
pub(crate) fn remove_all(
    dir: BorrowedFd<'_>,
    name: &[u8],
    entry: &[u8],
) -> Result<(), ArchiveError> {
    let err = |op, e: Errno| ArchiveError::io(op, show(entry), e);
    let Some(st) = stat_at(dir, name, entry)? else {
        return Ok(());
    };
    if !is_dir(&st) {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(|e| err("remove", e));
    }
    let mut cur = open_dir(dir, name).map_err(|e| err("open", e))?;
    let mut stack: Vec<Vec<u8>> = Vec::new();
    loop {
        // A rootless extractor may own directories it cannot write (mode 0555).
        let _ = fchmod(&cur, Mode::from_bits_truncate(0o700));
        let mut descended = false;
        for child in list(cur.as_fd(), entry)? {
            let Some(cst) = stat_at(cur.as_fd(), &child, entry)? else {
                continue;
            };
            if is_dir(&cst) {
                cur = open_dir(cur.as_fd(), &child).map_err(|e| err("open", e))?;
                stack.push(child);
                descended = true;
                break;
            }
            unlinkat(&cur, child.as_slice(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| err("remove", e))?;
        }
        if descended {
            continue;
        }
        match stack.pop() {
            None => break,
            Some(child) => {
                cur = open_dir(cur.as_fd(), b"..").map_err(|e| err("open", e))?;
                unlinkat(&cur, child.as_slice(), UnlinkatFlags::RemoveDir)
                    .map_err(|e| err("remove", e))?;
            }
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(|e| err("remove", e))
}

/// Empties `dir` of everything that came from lower layers: every child not in
/// `touched` (inodes this extraction created or wrote) is removed; touched
/// directories are kept but emptied the same way, because an opaque directory hides
/// the whole lower subtree, also below a directory the layer itself lists.
pub(crate) fn clear_lower(
    dir: OwnedFd,
    touched: &HashSet<Ino>,
    entry: &[u8],
) -> Result<(), ArchiveError> {
    let err = |op, e: Errno| ArchiveError::io(op, show(entry), e);
    let level = |cur: BorrowedFd<'_>| -> Result<Vec<Vec<u8>>, ArchiveError> {
        let mut keep_dirs = Vec::new();
        for child in list(cur, entry)? {
            let Some(st) = stat_at(cur, &child, entry)? else {
                continue;
            };
            if !touched.contains(&ino(&st)) {
                remove_all(cur, &child, entry)?;
            } else if is_dir(&st) {
                keep_dirs.push(child);
            }
        }
        Ok(keep_dirs)
    };
    let mut cur = dir;
    let mut pending = level(cur.as_fd())?;
    let mut stack: Vec<Vec<Vec<u8>>> = Vec::new();
    loop {
        if let Some(child) = pending.pop() {
            let next = open_dir(cur.as_fd(), &child).map_err(|e| err("open", e))?;
            stack.push(std::mem::take(&mut pending));
            cur = next;
            pending = level(cur.as_fd())?;
        } else if let Some(up) = stack.pop() {
            cur = open_dir(cur.as_fd(), b"..").map_err(|e| err("open", e))?;
            pending = up;
        } else {
            return Ok(());
        }
    }
}

/// The raw fd number, for building `/proc/self/fd/N/name` paths.
pub(crate) fn raw(fd: BorrowedFd<'_>) -> i32 {
    fd.as_raw_fd()
}
