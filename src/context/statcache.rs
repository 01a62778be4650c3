//! The stat cache of a build context (like git's index): path and stat data to content hash,
//! persisted per context so a no-change rebuild reads no file content.
//!
//! File format (`kiln-statcache-v1`): a header line, then one record per file:
//! path length (u32 LE), path bytes, size, mtime s, mtime ns, ctime s, ctime ns, inode, device
//! (each u64/i64 LE), then the 32-byte sha256 of the content. Anything unreadable is treated
//! as an empty cache: the cache only ever saves work, it never decides a result.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Entry, Hash, PathMap};

const MAGIC: &[u8] = b"kiln-statcache-v1\n";

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Key {
    fn of(e: &Entry) -> Key {
        Key {
            size: e.size,
            mtime: e.mtime,
            ctime: e.ctime,
            ino: e.ino,
            dev: e.dev,
        }
    }
}

/// Known content hashes of one context's files.
#[derive(Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    map: PathMap<(Key, Hash)>,
    dirty: bool,
}

impl StatCache {
    /// An empty cache that is never saved.
    pub fn in_memory() -> StatCache {
        StatCache::default()
    }

    /// Load the cache stored at `file` (missing or damaged files give an empty cache).
    pub fn load(file: &Path) -> StatCache {
        let map = fs::read(file)
            .ok()
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        StatCache {
            file: Some(file.to_path_buf()),
            map,
            dirty: false,
        }
    }

    /// The content hash of `path` if its stat data is unchanged.
    pub fn lookup(&self, path: &str, e: &Entry) -> Option<Hash> {
        match self.map.get(path) {
            Some((k, h)) if *k == Key::of(e) => Some(*h),
            _ => None,
        }
    }

    /// Record a freshly computed hash.
    pub fn insert(&mut self, path: &str, e: &Entry, h: Hash) {
        self.map.insert(path.to_string(), (Key::of(e), h));
        self.dirty = true;
    }

    /// Write the cache back if it changed, atomically (temp file, fsync, rename).
    pub fn save(&mut self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let mut buf = Vec::with_capacity(self.map.len() * 96);
        buf.extend_from_slice(MAGIC);
        let mut keys: Vec<&String> = self.map.keys().collect();
        keys.sort();
        for k in keys {
            let (key, h) = &self.map[k];
            buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
            buf.extend_from_slice(k.as_bytes());
            for v in [
                key.size,
                key.mtime.0 as u64,
                key.mtime.1 as u64,
                key.ctime.0 as u64,
                key.ctime.1 as u64,
                key.ino,
                key.dev,
            ] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            buf.extend_from_slice(h);
        }
        // Staged beside the destination, so the rename never crosses filesystems.
        crate::common::atomic::write_atomic(dir, file, &buf, 0o600).map_err(io::Error::other)?;
        self.dirty = false;
        Ok(())
    }
}

fn decode(b: &[u8]) -> Option<PathMap<(Key, Hash)>> {
    let mut rest = b.strip_prefix(MAGIC)?;
    // Records are at least 92 bytes: room for all of them at once.
    let mut map = PathMap::with_capacity_and_hasher(rest.len() / 92, Default::default());
    fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if r.len() < n {
            return None;
        }
        let (a, b) = r.split_at(n);
        *r = b;
        Some(a)
    }
    while !rest.is_empty() {
        let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let path = std::str::from_utf8(take(&mut rest, len)?).ok()?.to_string();
        let mut v = [0u64; 7];
        for x in &mut v {
            *x = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
        }
        let h: Hash = take(&mut rest, 32)?.try_into().ok()?;
        let key = Key {
            size: v[0],
            mtime: (v[1] as i64, v[2] as i64),
            ctime: (v[3] as i64, v[4] as i64),
            ino: v[5],
            dev: v[6],
        };
        map.insert(path, (key, h));
    }
    Some(map)
}
