//! The build context: walked in place (never copied), filtered by `.dockerignore`, hashed
//! by content with a stat cache so an unchanged file is not read again.
//!
//! Every read is relative to directory descriptors opened without following symlinks: the
//! walk opens each directory from its parent's descriptor with `O_NOFOLLOW` and checks it is
//! the directory the parent listed, and a file is later opened below the context root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and checked to be the file that was
//! listed (device and inode). A directory swapped for a symlink while the build runs is an
//! error ("context changed during the build"), never a path out of the context.

pub mod files;
pub mod ignore;
pub mod name;
pub mod select;
mod statcache;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

pub use ignore::{IgnoreError, IgnoreRules, PatternError};
pub use statcache::StatCache;

/// A sha256 value.
pub type Hash = [u8; 32];

/// A map keyed by context path, hashed with [`PathHasher`].
pub(crate) type PathMap<V> = HashMap<String, V, std::hash::BuildHasherDefault<PathHasher>>;

/// A fast hasher for context paths (FxHash: rotate, xor, multiply per 8 bytes), where
/// SipHash's cost showed in no-change rebuilds. Not collision-resistant: the keys are the
/// paths of the user's own build context.
#[derive(Default)]
pub(crate) struct PathHasher(u64);

impl std::hash::Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Errors reading a build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context directory cannot be read.
    #[error("build context {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A `.dockerignore` pattern is invalid.
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    /// A file or directory is no longer the one the walk listed (replaced, or swapped for a
    /// symlink) while the build reads it.
    #[error("context changed during the build: {path}")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// A file kiln refuses to read (the wrong type, too large, a symlink out of the context).
    #[error("{path}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a context entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device: listed, never read.
    Other,
}

/// One file or directory of the context, as `lstat` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Kind of entry.
    pub kind: Kind,
    /// Permission bits and file type bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Status-change time: catches content edits that set mtime back (`touch -r`).
    pub ctime: (i64, i64),
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// The target of a symlink, verbatim (encoded as [`name`] encodes names).
    pub link_target: Option<String>,
}

impl Entry {
    fn from_stat(st: &FileStat, link_target: Option<String>) -> Entry {
        let kind = match SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        Entry {
            kind,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
            ino: st.st_ino,
            dev: st.st_dev,
            link_target,
        }
    }

    /// True for a FIFO (named pipe).
    pub fn is_fifo(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFIFO
    }
}

/// A listed subtree of the context, detached from the [`Context`]: what a bind mount of a
/// context directory gets a copy of.
#[derive(Debug, Clone)]
pub struct ContextTree {
    shown: PathBuf,
    /// Path below the tree's top (`""` for the top), entry, and the file to read.
    entries: Vec<(String, Entry, Option<ContextFile>)>,
}

impl ContextTree {
    /// Copy it to `dst` (which must not exist): directories, files (each checked to be the
    /// listed one), symlinks as symlinks, with modes and owners. FIFOs, sockets and devices
    /// are left out.
    pub fn copy_to(&self, dst: &Path) -> Result<(), ContextError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let mut dirs = Vec::new();
        for (under, e, file) in &self.entries {
            let to = if under.is_empty() {
                dst.to_path_buf()
            } else {
                dst.join(name::to_os(under))
            };
            match e.kind {
                Kind::Dir => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&to)
                        .map_err(io_err(&to))?;
                    dirs.push((to.clone(), e.mode));
                }
                Kind::File => {
                    let mut src = file
                        .as_ref()
                        .ok_or_else(|| ContextError::Changed {
                            path: self.shown.join(name::to_os(under)),
                        })?
                        .open()?;
                    let mut out = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&to)
                        .map_err(io_err(&to))?;
                    io::copy(&mut src, &mut out).map_err(io_err(&to))?;
                    fs::set_permissions(&to, fs::Permissions::from_mode(e.mode & 0o7777))
                        .map_err(io_err(&to))?;
                }
                Kind::Symlink => {
                    let t = e.link_target.as_deref().unwrap_or("");
                    std::os::unix::fs::symlink(name::to_os(t), &to).map_err(io_err(&to))?;
                }
                Kind::Other => continue,
            }
            std::os::unix::fs::lchown(&to, Some(e.uid), Some(e.gid)).map_err(io_err(&to))?;
        }
        // Modes last: a read-only directory still gets its children.
        for (d, mode) in dirs.into_iter().rev() {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io_err(&d))?;
        }
        Ok(())
    }
}

/// A scanned build context: every entry not excluded by `.dockerignore`, keyed by its
/// relative `/`-separated path (the context root itself is `""`). A name that is not UTF-8
/// is kept, escaped as [`name`] describes.
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    root_fd: Arc<OwnedFd>,
    entries: BTreeMap<String, Entry>,
    content: PathMap<Hash>,
}

/// A regular file of the context as the walk listed it: opened later below the context
/// root through no symlink, and only if it is still that file.
#[derive(Debug, Clone)]
pub struct ContextFile {
    root_fd: Arc<OwnedFd>,
    key: String,
    host: PathBuf,
    dev: u64,
    ino: u64,
}

impl PartialEq for ContextFile {
    fn eq(&self, other: &ContextFile) -> bool {
        (&self.key, &self.host, self.dev, self.ino)
            == (&other.key, &other.host, other.dev, other.ino)
    }
}

impl Eq for ContextFile {}

impl ContextFile {
    /// Its context path (encoded).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The context root joined with its key: what [`Context::host_key`] gives, for lookups.
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// Open it for reading; an error if it is no longer the listed file.
    pub fn open(&self) -> Result<fs::File, ContextError> {
        open_checked(
            &self.root_fd,
            &self.key,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK,
            Kind::File,
            self.dev,
            self.ino,
            &self.host,
        )
        .map(fs::File::from)
    }
}

impl Context {
    /// Walk `root` (no symlink is followed), leaving out what `rules` exclude.
    pub fn scan(root: &Path, rules: &IgnoreRules) -> Result<Context, ContextError> {
        // Absolute, so the paths in messages stay right.
        let root = &fs::canonicalize(root).map_err(io_err(root))?;
        let dir = nix::fcntl::open(
            root.as_path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(root)(e.into()))?;
        let st = nix::sys::stat::fstat(&dir).map_err(|e| io_err(root)(e.into()))?;
        let walk_excluded = rules.has_exclusions();
        // Directories are read in parallel; each entry is one `fstatat` relative to its open
        // directory (no path walk), so a no-change rebuild costs about a stat per file.
        let walk = Walk {
            root,
            rules,
            walk_excluded,
        };
        let (mut found, walked) = walk.dir(&dir, "")?;
        found.push((String::new(), Entry::from_stat(&st, None)));
        let mut entries: BTreeMap<String, Entry> = found.into_iter().collect();
        // A directory walked only for its exceptions is listed when something in it is
        // (without exclusions to walk, every walked directory is listed already).
        if walk_excluded {
            let walked: HashMap<String, Entry> = walked.into_iter().collect();
            let mut parents = Vec::new();
            for path in entries.keys() {
                let mut p = path.as_str();
                while let Some(i) = p.rfind('/') {
                    p = &p[..i];
                    if !entries.contains_key(p) {
                        if let Some(e) = walked.get(p) {
                            parents.push((p.to_string(), e.clone()));
                        }
                    }
                }
            }
            entries.extend(parents);
        }
        Ok(Context {
            root: root.to_path_buf(),
            root_fd: Arc::new(dir),
            entries,
            content: PathMap::default(),
        })
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The context root joined with an (encoded) key: a name for messages and lookups,
    /// never opened by path.
    pub fn host_key(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The real path of a key, for messages.
    pub fn host_path(&self, key: &str) -> PathBuf {
        self.root.join(name::to_os(key))
    }

    /// A listed regular file, to open later.
    pub fn file(&self, key: &str) -> Option<ContextFile> {
        let e = self.entries.get(key).filter(|e| e.kind == Kind::File)?;
        Some(ContextFile {
            root_fd: self.root_fd.clone(),
            key: key.to_string(),
            host: self.host_key(key),
            dev: e.dev,
            ino: e.ino,
        })
    }

    /// An `O_PATH` descriptor of a listed file or directory (a bind mount's source), opened
    /// below the context root through no symlink, and checked to be what the walk listed.
    pub fn open_path(&self, key: &str) -> Result<OwnedFd, ContextError> {
        let e = self.entries.get(key).ok_or_else(|| ContextError::Changed {
            path: self.host_path(key),
        })?;
        open_checked(
            &self.root_fd,
            key,
            OFlag::O_PATH,
            e.kind,
            e.dev,
            e.ino,
            &self.host_path(key),
        )
    }

    /// The listed tree at `key`, to copy later (see [`ContextTree::copy_to`]).
    pub fn tree(&self, key: &str) -> ContextTree {
        let entries = self
            .subtree(key)
            .map(|(k, e)| {
                let under = k[key.len()..].trim_start_matches('/').to_string();
                (under, e.clone(), self.file(k))
            })
            .collect();
        ContextTree {
            shown: self.host_path(key),
            entries,
        }
    }

    /// Copy the listed tree at `key` to `dst` now (see [`ContextTree::copy_to`]).
    pub fn copy_out(&self, key: &str, dst: &Path) -> Result<(), ContextError> {
        self.tree(key).copy_to(dst)
    }

    /// All entries, sorted by path.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// One entry.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Entries at or below `path` (`""` for everything), sorted.
    pub fn subtree<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a String, &'a Entry)> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        // Keys sharing the prefix are contiguous; `a-b` sorts between `a` and `a/x`, so filter.
        self.entries
            .range::<str, _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(path))
            .filter(move |(k, _)| path.is_empty() || k.as_str() == path || k.starts_with(&prefix))
    }

    /// Content hashes of the regular files at or below each of `paths`, reading only files
    /// whose stat data changed since `cache` saw them, in parallel. Returns how many files
    /// were read.
    pub fn hash_contents(
        &mut self,
        paths: &[&str],
        cache: &mut StatCache,
    ) -> Result<usize, ContextError> {
        let mut todo: Vec<(String, Entry)> = Vec::new();
        let mut known: Vec<(String, Hash)> = Vec::new();
        for p in paths {
            for (k, e) in self.subtree(p) {
                if e.kind == Kind::File && !self.content.contains_key(k) {
                    match cache.lookup(k, e) {
                        Some(h) => known.push((k.clone(), h)),
                        None => todo.push((k.clone(), e.clone())),
                    }
                }
            }
        }
        self.content.extend(known);
        todo.sort_by(|a, b| a.0.cmp(&b.0));
        todo.dedup_by(|a, b| a.0 == b.0);
        let hashed: Vec<(String, Entry, Hash)> = todo
            .into_par_iter()
            .map(|(k, e)| self.hash_file(&k, &e).map(|h| (k, e, h)))
            .collect::<Result<_, _>>()?;
        let read = hashed.len();
        for (k, e, h) in hashed {
            cache.insert(&k, &e, h);
            self.content.insert(k, h);
        }
        Ok(read)
    }

    /// The content hash of a file hashed by [`Context::hash_contents`].
    pub fn content_hash(&self, path: &str) -> Option<&Hash> {
        self.content.get(path)
    }

    /// Merkle hash of the tree at `path`: names, kinds, permission bits, ownership, contents
    /// and symlink targets, never times. Files must have been hashed first.
    ///
    /// One bottom-up pass over the subtree: a node's hash is `kiln-tree-v1\0`, its metadata,
    /// then its content (a file), target (a symlink) or, for a directory, each child's name
    /// length, name and hash in name order.
    pub fn tree_hash(&self, path: &str) -> Option<Hash> {
        let mut items: Vec<(&str, &Entry)> =
            self.subtree(path).map(|(k, e)| (k.as_str(), e)).collect();
        // Depth-first order ('/' before every other byte): a directory's descendants follow
        // it directly. The map's own order puts `a-b` between `a` and `a/x`.
        if !items.is_sorted_by(|a, b| dfs_order(a.0, b.0).is_le()) {
            items.sort_unstable_by(|a, b| dfs_order(a.0, b.0));
        }
        let (first, rest) = items.split_first()?;
        if first.0 != path {
            return None;
        }
        // The directories being hashed, innermost last.
        let mut open: Vec<(&str, Sha256)> = Vec::new();
        let mut done = None;
        for &(k, e) in std::iter::once(first).chain(rest) {
            while let Some(&(d, _)) = open.last() {
                if is_below(k, d) {
                    break;
                }
                let (d, h) = open.pop().expect("not empty");
                done = Some(h.finalize().into());
                add_child(&mut open, d, done.as_ref().expect("set"));
            }
            let mut h = Sha256::new();
            h.update(b"kiln-tree-v1\0");
            encode_meta(&mut h, e);
            match e.kind {
                Kind::Dir => {
                    open.push((k, h));
                    continue;
                }
                Kind::File => h.update(self.content.get(k)?),
                Kind::Symlink => h.update(name::decode(e.link_target.as_deref().unwrap_or(""))),
                Kind::Other => {}
            }
            let leaf: Hash = h.finalize().into();
            add_child(&mut open, k, &leaf);
            done = Some(leaf);
        }
        while let Some((d, h)) = open.pop() {
            done = Some(h.finalize().into());
            add_child(&mut open, d, done.as_ref().expect("set"));
        }
        done
    }
}

/// Path order of a depth-first walk: `/` sorts before every other byte.
fn dfs_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// Whether `k` is strictly below directory `d` (`""` is the context root).
fn is_below(k: &str, d: &str) -> bool {
    if d.is_empty() {
        return !k.is_empty();
    }
    k.len() > d.len() && k.starts_with(d) && k.as_bytes()[d.len()] == b'/'
}

/// Feed the finished node `k` into its parent's hash: the innermost open directory, when it
/// is `k`'s parent (an entry whose parent is not listed is left out).
fn add_child(open: &mut [(&str, Sha256)], k: &str, hash: &Hash) {
    let Some((d, h)) = open.last_mut() else {
        return;
    };
    let name = match k.rfind('/') {
        Some(i) if &k[..i] == *d => &k[i + 1..],
        None if d.is_empty() && !k.is_empty() => k,
        _ => return,
    };
    // The raw bytes: the same as before for a UTF-8 name, the real name for another.
    let name = name::decode(name);
    h.update((name.len() as u64).to_le_bytes());
    h.update(&name);
    h.update(hash);
}

fn encode_meta(h: &mut Sha256, e: &Entry) {
    let kind: u8 = match e.kind {
        Kind::File => b'f',
        Kind::Dir => b'd',
        Kind::Symlink => b'l',
        Kind::Other => b'o',
    };
    h.update([kind]);
    h.update((e.mode & 0o7777).to_le_bytes());
    h.update(e.uid.to_le_bytes());
    h.update(e.gid.to_le_bytes());
}

impl Context {
    /// Hash a regular file's bytes, read from the file the walk listed (opened below the
    /// root through no symlink, without blocking on a FIFO swapped in since).
    fn hash_file(&self, key: &str, expect: &Entry) -> Result<Hash, ContextError> {
        let path = self.host_path(key);
        let mut f = ContextFile {
            root_fd: self.root_fd.clone(),
            key: key.to_string(),
            host: path.clone(),
            dev: expect.dev,
            ino: expect.ino,
        }
        .open()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().into())
    }
}

/// Open `key` below `root` through no symlink (`openat2` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`, or a walk of `O_NOFOLLOW` opens where `openat2` is missing), and
/// check it is the `kind` with `dev` and `ino` the walk saw.
fn open_checked(
    root: &OwnedFd,
    key: &str,
    flags: OFlag,
    kind: Kind,
    dev: u64,
    ino: u64,
    shown: &Path,
) -> Result<OwnedFd, ContextError> {
    let changed = || ContextError::Changed {
        path: shown.to_path_buf(),
    };
    let fd = match open_beneath(root, key, flags) {
        Ok(fd) => fd,
        // A symlink or a non-directory where the walk saw a directory.
        Err(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV | Errno::ENOENT) => return Err(changed()),
        Err(e) => return Err(io_err(shown)(e.into())),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| io_err(shown)(e.into()))?;
    let now = Entry::from_stat(&st, None);
    if now.kind != kind || st.st_dev != dev || st.st_ino != ino {
        return Err(changed());
    }
    Ok(fd)
}

/// `openat2(root, key, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`; the context root for `""`.
fn open_beneath(root: &OwnedFd, key: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    if key.is_empty() {
        return nix::fcntl::openat(root, c".", flags & !OFlag::O_NOFOLLOW, Mode::empty());
    }
    let path = name::decode(key);
    let cpath = CString::new(path.as_ref()).map_err(|_| Errno::EINVAL)?;
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match nix::fcntl::openat2(root, cpath.as_c_str(), how) {
        // Kernels before 5.6, or a seccomp profile without openat2: walk it by hand.
        Err(Errno::ENOSYS) => open_walk(root, &path, flags),
        r => r,
    }
}

/// The fallback of [`open_beneath`]: each directory opened from its parent with
/// `O_NOFOLLOW`; keys never hold `.` or `..`.
fn open_walk(root: &OwnedFd, path: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    let comps: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    let (last, dirs) = comps.split_last().ok_or(Errno::EINVAL)?;
    let mut cur: Option<OwnedFd> = None;
    for c in dirs {
        let c = CString::new(*c).map_err(|_| Errno::EINVAL)?;
        let at = cur.as_ref().unwrap_or(root);
        let next = nix::fcntl::openat(
            at,
            c.as_c_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        cur = Some(next);
    }
    let last = CString::new(*last).map_err(|_| Errno::EINVAL)?;
    nix::fcntl::openat(
        cur.as_ref().unwrap_or(root),
        last.as_c_str(),
        flags,
        Mode::empty(),
    )
}

/// Listed entries, and directories walked only for the exceptions below them.
type Walked = (Vec<(String, Entry)>, Vec<(String, Entry)>);

/// One scan's settings.
struct Walk<'a> {
    root: &'a Path,
    rules: &'a IgnoreRules,
    walk_excluded: bool,
}

impl Walk<'_> {
    /// The entries below the open directory `dir` (the key `rel`), subdirectories walked in
    /// parallel, each opened from `dir` without following a symlink.
    fn dir(&self, dir: &OwnedFd, rel: &str) -> Result<Walked, ContextError> {
        let shown = |name: &str| self.root.join(name::to_os(name));
        let mut out = Vec::new();
        let mut walked = Vec::new();
        let mut subdirs: Vec<(String, CString, u64, u64)> = Vec::new();
        let fail = |e: Errno| io_err(&shown(rel))(e.into());
        let mut listing =
            nix::dir::Dir::from_fd(dir.try_clone().map_err(io_err(&shown(rel)))?).map_err(fail)?;
        for item in listing.iter() {
            let item = item.map_err(fail)?;
            let cname: &CStr = item.file_name();
            let raw = cname.to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            let name = name::encode(raw);
            let key = if rel.is_empty() {
                name.into_owned()
            } else {
                format!("{rel}/{name}")
            };
            let excluded = self.rules.is_excluded(&key);
            // lstat through the directory's descriptor: never follows a symlink.
            let changed = |e: Errno| match e {
                // Gone, or no longer a symlink, between the listing and this call.
                Errno::ENOENT | Errno::EINVAL => ContextError::Changed { path: shown(&key) },
                e => io_err(&shown(&key))(e.into()),
            };
            let st = nix::sys::stat::fstatat(dir, cname, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(changed)?;
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if excluded && !(is_dir && self.walk_excluded) {
                continue;
            }
            let target = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                let t = nix::fcntl::readlinkat(dir, cname).map_err(changed)?;
                Some(name::encode(t.as_bytes()).into_owned())
            } else {
                None
            };
            let entry = Entry::from_stat(&st, target);
            if is_dir {
                subdirs.push((key.clone(), cname.to_owned(), entry.dev, entry.ino));
                if excluded {
                    walked.push((key.clone(), entry.clone()));
                }
            }
            if !excluded {
                out.push((key, entry));
            }
        }
        drop(listing);
        let below: Vec<Walked> = subdirs
            .into_par_iter()
            .map(|(key, cname, dev, ino)| {
                let changed = || ContextError::Changed { path: shown(&key) };
                let sub = match nix::fcntl::openat(
                    dir,
                    cname.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => return Err(changed()),
                    Err(e) => return Err(io_err(&shown(&key))(e.into())),
                };
                let st = nix::sys::stat::fstat(&sub).map_err(|e| io_err(&shown(&key))(e.into()))?;
                if st.st_dev != dev || st.st_ino != ino {
                    return Err(changed());
                }
                self.dir(&sub, &key)
            })
            .collect::<Result<_, _>>()?;
        for (o, w) in below {
            out.extend(o);
            walked.extend(w);
        }
        Ok((out, walked))
    }
}

/// Lowercase hex of a hash.
pub fn hex(h: &Hash) -> String {
    crate::common::hex::encode(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn scan(root: &Path, ignore: &str) -> Context {
        Context::scan(root, &IgnoreRules::parse(".dockerignore", ignore).unwrap()).unwrap()
    }

    fn root_hash(root: &Path, cache: &mut StatCache) -> (Hash, usize) {
        let mut c = scan(root, "");
        let read = c.hash_contents(&[""], cache).unwrap();
        (c.tree_hash("").unwrap(), read)
    }

    #[test]
    fn ignore_rules_and_exceptions_shape_the_listing() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "src/main.rs", b"fn main() {}");
        write(d.path(), "target/debug/x", b"x");
        write(d.path(), "docs/keep/a.md", b"a");
        write(d.path(), "docs/drop.md", b"b");
        let c = scan(d.path(), "target\ndocs\n!docs/keep\n");
        let keys: Vec<&str> = c.entries().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "",
                "docs",
                "docs/keep",
                "docs/keep/a.md",
                "src",
                "src/main.rs"
            ]
        );
    }

    #[test]
    fn symlinks_are_recorded_never_followed() {
        let d = tempfile::tempdir().unwrap();
        symlink("/etc/passwd", d.path().join("foo")).unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        symlink("../../../etc", d.path().join("sub/bar")).unwrap();
        let mut c = scan(d.path(), "");
        assert_eq!(c.get("foo").unwrap().kind, Kind::Symlink);
        assert_eq!(
            c.get("foo").unwrap().link_target.as_deref(),
            Some("/etc/passwd")
        );
        assert!(c.get("sub/bar/passwd").is_none());
        // Hashing reads no file through a link.
        assert_eq!(
            c.hash_contents(&[""], &mut StatCache::in_memory()).unwrap(),
            0
        );
    }

    #[test]
    fn fifo_in_context_is_listed_not_read() {
        let d = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &d.path().join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let mut c = scan(d.path(), "");
        assert_eq!(c.get("pipe").unwrap().kind, Kind::Other);
        assert_eq!(
            c.hash_contents(&[""], &mut StatCache::in_memory()).unwrap(),
            0
        );
        assert!(c.tree_hash("").is_some());
    }

    #[test]
    fn tree_hash_follows_content_mode_and_names_not_times() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a/b.txt", b"hello");
        let mut cache = StatCache::in_memory();
        let (h1, read) = root_hash(d.path(), &mut cache);
        assert_eq!(read, 1);

        // Unchanged: nothing is read again.
        let (h2, read) = root_hash(d.path(), &mut cache);
        assert_eq!((h2, read), (h1, 0));

        // mtime-only change: the file is read again (stat changed) but the hash is the same.
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("a/b.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        drop(f);
        let (h3, read) = root_hash(d.path(), &mut cache);
        assert_eq!((h3, read), (h1, 1));

        // Same size, mtime set back afterwards (`touch -r`): ctime still catches it.
        let before = fs::metadata(d.path().join("a/b.txt"))
            .unwrap()
            .modified()
            .unwrap();
        fs::write(d.path().join("a/b.txt"), b"jello").unwrap();
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("a/b.txt"))
            .unwrap();
        f.set_modified(before).unwrap();
        drop(f);
        let (h4, read) = root_hash(d.path(), &mut cache);
        assert_eq!(read, 1);
        assert_ne!(h4, h1);

        // A mode change misses.
        fs::set_permissions(d.path().join("a/b.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        let (h5, _) = root_hash(d.path(), &mut cache);
        assert_ne!(h5, h4);

        // A rename misses.
        fs::rename(d.path().join("a/b.txt"), d.path().join("a/c.txt")).unwrap();
        let (h6, _) = root_hash(d.path(), &mut cache);
        assert_ne!(h6, h5);
    }

    #[test]
    fn subtree_is_exact_about_prefixes() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a/x", b"1");
        write(d.path(), "a-b", b"2");
        write(d.path(), "ab", b"3");
        let c = scan(d.path(), "");
        let keys: Vec<&str> = c.subtree("a").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "a/x"]);
    }

    #[test]
    fn stat_cache_survives_a_reload_and_ignores_garbage() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "f", b"data");
        let store = tempfile::tempdir().unwrap();
        let file = store.path().join("contexts/ctx.statcache");
        let mut cache = StatCache::load(&file);
        let (h1, read) = root_hash(d.path(), &mut cache);
        assert_eq!(read, 1);
        cache.save().unwrap();
        let mut cache = StatCache::load(&file);
        let (h2, read) = root_hash(d.path(), &mut cache);
        assert_eq!((h2, read), (h1, 0));
        fs::write(&file, b"garbage").unwrap();
        let mut cache = StatCache::load(&file);
        assert_eq!(root_hash(d.path(), &mut cache).1, 1);
    }

    // Regression (issue 15, item 3): a context directory swapped for a symlink after the
    // walk had its target's files read by path (hashed, copied or bind-mounted). Now every
    // read goes below the root through no symlink and must find the listed file.
    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_scan_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ctx_dir = d.path().join("ctx");
        write(&ctx_dir, "d/f", b"context");
        write(d.path(), "outside/f", b"MARKER");
        let mut c = scan(&ctx_dir, "");
        let listed = c.file("d/f").unwrap();
        fs::rename(ctx_dir.join("d"), ctx_dir.join("d.real")).unwrap();
        symlink(d.path().join("outside"), ctx_dir.join("d")).unwrap();

        let changed = |e: ContextError| {
            let m = e.to_string();
            assert!(m.starts_with("context changed during the build: "), "{m}");
            assert!(m.ends_with("d/f") || m.ends_with("/d"), "{m}");
        };
        changed(listed.open().unwrap_err());
        changed(
            c.hash_contents(&["d"], &mut StatCache::in_memory())
                .unwrap_err(),
        );
        changed(c.open_path("d").unwrap_err());
        let out = d.path().join("copy");
        changed(c.copy_out("d", &out).unwrap_err());
        assert!(!out.join("f").exists());

        // A real directory moved in under the same name is not the listed one either.
        fs::remove_file(ctx_dir.join("d")).unwrap();
        fs::rename(d.path().join("outside"), ctx_dir.join("d")).unwrap();
        changed(listed.open().unwrap_err());
        changed(c.open_path("d").unwrap_err());

        // Put back, everything reads again.
        fs::rename(ctx_dir.join("d"), d.path().join("outside")).unwrap();
        fs::rename(ctx_dir.join("d.real"), ctx_dir.join("d")).unwrap();
        let mut s = String::new();
        listed.open().unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "context");
        assert!(c.open_path("d").is_ok());
        let out = d.path().join("copy2");
        c.copy_out("d", &out).unwrap();
        assert_eq!(fs::read(out.join("f")).unwrap(), b"context");
    }

    // Regression: a directory swapped for a symlink during the walk itself was listed
    // through the link (its entries read by path).
    #[test]
    fn the_walk_never_lists_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "outside/secret", b"MARKER");
        let ctx_dir = d.path().join("ctx");
        fs::create_dir(&ctx_dir).unwrap();
        symlink(d.path().join("outside"), ctx_dir.join("d")).unwrap();
        let c = scan(&ctx_dir, "");
        assert_eq!(c.get("d").unwrap().kind, Kind::Symlink);
        assert!(c.get("d/secret").is_none());
        // A directory handle of the walk is opened with O_NOFOLLOW: a swap between the
        // listing and the open is "changed", never a walk of the target.
        let root = c.root_fd.clone();
        assert!(matches!(
            open_beneath(&root, "d/secret", OFlag::O_RDONLY),
            Err(Errno::ELOOP)
        ));
        assert!(matches!(
            open_walk(&root, b"d/secret", OFlag::O_RDONLY | OFlag::O_NOFOLLOW),
            Err(Errno::ENOTDIR | Errno::ELOOP)
        ));
    }

    // Regression: context files whose names are not UTF-8 were skipped (Docker copies them).
    #[test]
    fn non_utf8_names_are_listed_and_hashed_by_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let raw = std::ffi::OsStr::from_bytes(b"n\xffame");
        fs::write(d.path().join(raw), b"x").unwrap();
        symlink(std::ffi::OsStr::from_bytes(b"t\xfe"), d.path().join("link")).unwrap();
        let mut c = scan(d.path(), "");
        let key = name::encode(b"n\xffame").into_owned();
        assert_eq!(c.get(&key).unwrap().kind, Kind::File);
        assert_eq!(
            c.get("link").unwrap().link_target.as_deref(),
            Some(&*name::encode(b"t\xfe"))
        );
        assert_eq!(
            c.hash_contents(&[""], &mut StatCache::in_memory()).unwrap(),
            1
        );
        let h1 = c.tree_hash("").unwrap();
        // The name is part of the hash: another invalid byte is another tree.
        fs::rename(
            d.path().join(raw),
            d.path().join(std::ffi::OsStr::from_bytes(b"n\xfeame")),
        )
        .unwrap();
        let mut c = scan(d.path(), "");
        c.hash_contents(&[""], &mut StatCache::in_memory()).unwrap();
        assert_ne!(c.tree_hash("").unwrap(), h1);
    }

    // The cache keys of UTF-8 names did not change with the lossless names: this tree's
    // hash is the one kiln computed before (as root, which the golden's owners assume).
    #[test]
    fn tree_hash_of_utf8_names_is_stable() {
        if !crate::testutil::require(
            nix::unistd::geteuid().is_root(),
            "root (the golden hash assumes files owned by root)",
        ) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a/b.txt", b"hello");
        write(d.path(), "\u{e9}t\u{e9}", b"x");
        symlink("../a", d.path().join("a/up")).unwrap();
        for (p, m) in [
            ("", 0o755),
            ("a", 0o755),
            ("a/b.txt", 0o644),
            ("\u{e9}t\u{e9}", 0o600),
        ] {
            fs::set_permissions(d.path().join(p), fs::Permissions::from_mode(m)).unwrap();
        }
        let mut c = scan(d.path(), "");
        c.hash_contents(&[""], &mut StatCache::in_memory()).unwrap();
        assert_eq!(hex(&c.tree_hash("").unwrap()), GOLDEN_TREE);
    }

    const GOLDEN_TREE: &str = "2552d862b22823e30411316eb2b4e1ae653d3701eaf9d0e0e3ebbab7726a5f9d";
}
