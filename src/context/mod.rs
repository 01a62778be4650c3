//! The build context: walked in place (never copied), filtered by `.dockerignore`, hashed
//! by content with a stat cache so an unchanged file is not read again.

pub mod ignore;
pub mod select;
mod statcache;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

pub use ignore::{IgnoreError, IgnoreRules};
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
    /// A file changed type while it was being hashed.
    #[error("build context {path}: file changed while it was read")]
    Changed {
        /// The file.
        path: PathBuf,
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
    /// The target of a symlink, verbatim.
    pub link_target: Option<String>,
}

impl Entry {
    fn from_meta(meta: &fs::Metadata, link_target: Option<String>) -> Entry {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        Entry {
            kind,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
            link_target,
        }
    }
}

/// A scanned build context: every entry not excluded by `.dockerignore`, keyed by its
/// relative `/`-separated path (the context root itself is `""`).
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    entries: BTreeMap<String, Entry>,
    content: PathMap<Hash>,
}

impl Context {
    /// Walk `root` (no symlink is followed), leaving out what `rules` exclude.
    pub fn scan(root: &Path, rules: &IgnoreRules) -> Result<Context, ContextError> {
        // Absolute, so the paths stay right for threads that change their own directory.
        let root = &fs::canonicalize(root).map_err(io_err(root))?;
        let meta = fs::metadata(root).map_err(io_err(root))?;
        if !meta.is_dir() {
            return Err(ContextError::Io {
                path: root.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let walk_excluded = rules.has_exclusions();
        // Directories are read in parallel; each entry is one `statx` relative to its open
        // directory (no path walk), so a no-change rebuild costs about a stat per file.
        let mut found = walk_dir(root, String::new(), rules, walk_excluded)?;
        found.push((String::new(), Entry::from_meta(&meta, None)));
        let mut entries: BTreeMap<String, Entry> = found.into_iter().collect();
        // A directory walked only for its exceptions is listed when something in it is
        // (without exclusions to walk, every walked directory is listed already).
        let mut parents = Vec::new();
        for path in entries.keys().filter(|_| walk_excluded) {
            let mut p = path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                if !entries.contains_key(p) {
                    parents.push(p.to_string());
                }
            }
        }
        for p in parents {
            let abs = root.join(&p);
            let meta = fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
            entries.insert(p, Entry::from_meta(&meta, None));
        }
        Ok(Context {
            root: root.to_path_buf(),
            entries,
            content: PathMap::default(),
        })
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
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
        let root = &self.root;
        let hashed: Vec<(String, Entry, Hash)> = todo
            .into_par_iter()
            .map(|(k, e)| hash_file(&root.join(&k), &e).map(|h| (k, e, h)))
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
                Kind::Symlink => h.update(e.link_target.as_deref().unwrap_or("").as_bytes()),
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
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
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

/// Hash a regular file's bytes. Opened without following symlinks and without blocking on
/// a FIFO swapped in after the scan; refuses a file that is no longer the one scanned.
fn hash_file(path: &Path, expect: &Entry) -> Result<Hash, ContextError> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err(path))?;
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.is_file() || meta.ino() != expect.ino || meta.dev() != expect.dev {
        return Err(ContextError::Changed {
            path: path.to_path_buf(),
        });
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// The entries below `dir` (relative to `root`), subdirectories walked in parallel.
fn walk_dir(
    root: &Path,
    dir: String,
    rules: &IgnoreRules,
    walk_excluded: bool,
) -> Result<Vec<(String, Entry)>, ContextError> {
    let abs = root.join(&dir);
    let mut out = Vec::new();
    let mut subdirs = Vec::new();
    for item in fs::read_dir(&abs).map_err(io_err(&abs))? {
        let item = item.map_err(io_err(&abs))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            // Non-UTF-8 names cannot be named in a Dockerfile; they are skipped.
            tracing::warn!(path = %abs.join(&name).display(), "skipping a context file whose name is not UTF-8");
            continue;
        };
        let rel = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        let excluded = rules.is_excluded(&rel);
        // lstat through the directory's descriptor: never follows a symlink.
        let meta = item.metadata().map_err(|e| io_err(&abs.join(name))(e))?;
        let is_dir = meta.is_dir();
        if excluded && !(is_dir && walk_excluded) {
            continue;
        }
        let target = if meta.file_type().is_symlink() {
            let path = item.path();
            let t = fs::read_link(&path).map_err(io_err(&path))?;
            Some(t.to_string_lossy().into_owned())
        } else {
            None
        };
        if is_dir {
            subdirs.push(rel.clone());
        }
        if !excluded {
            out.push((rel, Entry::from_meta(&meta, target)));
        }
    }
    let below: Vec<Vec<(String, Entry)>> = subdirs
        .into_par_iter()
        .map(|d| walk_dir(root, d, rules, walk_excluded))
        .collect::<Result<_, _>>()?;
    for b in below {
        out.extend(b);
    }
    Ok(out)
}

/// Lowercase hex of a hash.
pub fn hex(h: &Hash) -> String {
    crate::image::digest::to_hex(h)
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
