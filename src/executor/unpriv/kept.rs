//! Working roots kept from one build to the next. When kiln exits, the last roots it
//! parked ([`super::pool`]) are not deleted but kept in the store's `tmp/unpriv-kept`
//! (at most [`MAX_KEPT`]), each with the chain of snapshots it shows. A later step that
//! would need a fresh copy takes the kept root sharing the most bottom layers with its
//! own chain and moves it onto that chain ([`crate::executor::rebase`]): after an edit of
//! one file, `COPY . /app` + `RUN` copies that one file instead of the whole root, and
//! nothing is deleted when the build ends.
//!
//! A root is only kept from the pool, where it went after a step that succeeded, with its
//! stand-ins (secrets, mount copies, `/dev` nodes) taken out: it holds exactly what its
//! chain shows. A chain is written as each snapshot's path with its stamp (device,
//! inode, generation, ctime); a snapshot that is gone or was made again does not match,
//! and a root whose chain does not match any more is removed. Taking a root is a rename,
//! so two processes never get the same one. Garbage collection (which empties `tmp/`)
//! removes them all.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::pool::{dir_stamp, Key, Stamp};
use crate::common::atomic;

/// How many roots are kept between builds at most.
pub(super) const MAX_KEPT: usize = 2;

const HOME: &str = "unpriv-kept";
const ROOT: &str = "root";
const CHAIN: &str = "chain";
/// The chain file's last line: a file cut short (a crash before it reached the disk) does
/// not name a shorter chain.
const END: &[u8] = b"end\n";

/// Keeps `root` (moved) under `beside` (the store's `tmp/`) as the view of `key`.
pub(super) fn keep(root: &Path, beside: &Path, key: &Key) -> io::Result<()> {
    let paths = locate(key)?;
    let home = beside.join(HOME);
    atomic::create_dir_all(&home, 0o700).map_err(io::Error::other)?;
    let id = crate::common::ids::new_id()?;
    // Takers skip names starting with a dot.
    let staging = atomic::create_temp_dir(&home, ".new", 0o700).map_err(io::Error::other)?;
    let placed = fs::rename(root, staging.join(ROOT)).and_then(|()| {
        let mut chain = Vec::new();
        for (stamp, path) in key.stamps.iter().zip(&paths) {
            let s: Vec<String> = stamp.iter().map(i64::to_string).collect();
            chain.extend_from_slice(s.join(" ").as_bytes());
            chain.push(b' ');
            chain.extend_from_slice(path.as_os_str().as_bytes());
            chain.push(b'\n');
        }
        chain.extend_from_slice(END);
        fs::File::create(staging.join(CHAIN))?.write_all(&chain)?;
        fs::rename(&staging, home.join(&id))
    });
    if let Err(e) = placed {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    evict(&home);
    Ok(())
}

/// Where each layer of `key` is now: the step's upper dir of the top one was renamed into
/// the snapshots since, so it is found there by its device and inode.
pub(super) fn locate(key: &Key) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::with_capacity(key.paths.len());
    for (stamp, path) in key.stamps.iter().zip(&key.paths) {
        if dir_stamp(path).is_ok_and(|s| s == *stamp) {
            found.push(path.clone());
            continue;
        }
        // The snapshots dir: the grandparent of any other layer (`snapshots/<id>/fs`).
        let here = key
            .paths
            .iter()
            .filter(|p| *p != path)
            .find_map(|p| p.parent()?.parent())
            .and_then(|snapshots| find_by_stamp(snapshots, stamp));
        found.push(here.ok_or_else(|| io::Error::other("a layer of the root is gone"))?);
    }
    if found
        .iter()
        .any(|p| p.as_os_str().as_bytes().contains(&b'\n'))
    {
        return Err(io::Error::other("a layer path holds a newline"));
    }
    Ok(found)
}

fn find_by_stamp(snapshots: &Path, stamp: &Stamp) -> Option<PathBuf> {
    for e in fs::read_dir(snapshots).ok()?.flatten() {
        let fs_dir = e.path().join("fs");
        let Ok(m) = fs::metadata(&fs_dir) else {
            continue;
        };
        if m.dev() as i64 == stamp[0]
            && m.ino() as i64 == stamp[1]
            && dir_stamp(&fs_dir).is_ok_and(|s| s == *stamp)
        {
            return Some(fs_dir);
        }
    }
    None
}

/// Removes the oldest kept roots beyond [`MAX_KEPT`].
fn evict(home: &Path) {
    let Ok(dir) = fs::read_dir(home) else {
        return;
    };
    let mut kept: Vec<(i128, PathBuf)> = dir
        .flatten()
        .filter(|e| !e.file_name().as_bytes().starts_with(b"."))
        .filter_map(|e| {
            let m = fs::metadata(e.path().join(CHAIN)).ok()?;
            Some((
                i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                e.path(),
            ))
        })
        .collect();
    kept.sort();
    let extra = kept.len().saturating_sub(MAX_KEPT);
    for (_, p) in kept.drain(..extra) {
        let _ = fs::remove_dir_all(p);
    }
}

/// A kept root's chain, top-most first, if every layer of it is still there.
fn read_chain(dir: &Path) -> Option<Vec<(Stamp, PathBuf)>> {
    let bytes = fs::read(dir.join(CHAIN)).ok()?;
    let lines = bytes.strip_suffix(END)?;
    let mut chain = Vec::new();
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(6, |b| *b == b' ');
        let mut stamp = [0i64; 5];
        for v in &mut stamp {
            *v = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        }
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(parts.next()?));
        if dir_stamp(&path).ok()? != stamp {
            return None;
        }
        chain.push((stamp, path));
    }
    Some(chain)
}

/// A kept root that shares layers with a step's: where it is, and the layers it shows
/// (top-most first).
pub(super) struct Candidate {
    dir: PathBuf,
    from: Vec<PathBuf>,
}

/// The kept root under `beside` that fits `target` best ([`super::pool::fit`]), with its
/// fit; a root whose layers are gone is removed on the way.
pub(super) fn best(target: &Key, beside: &Path) -> Option<((usize, usize), Candidate)> {
    let dir = fs::read_dir(beside.join(HOME)).ok()?;
    let mut found = Vec::new();
    for e in dir.flatten() {
        if e.file_name().as_bytes().starts_with(b".") {
            continue;
        }
        let Some(chain) = read_chain(&e.path()) else {
            // Its layers are gone: it can never be used again.
            let _ = fs::remove_dir_all(e.path());
            continue;
        };
        let stamps: Vec<Stamp> = chain.iter().map(|(s, _)| *s).collect();
        if let Some(f) = super::pool::fit(&stamps, &target.stamps) {
            let from = chain.into_iter().map(|(_, p)| p).collect();
            found.push((
                f,
                Candidate {
                    dir: e.path(),
                    from,
                },
            ));
        }
    }
    super::pool::best(found)
}

/// Moves the kept root `c` to `dest` (which must not exist) and rebases it onto `target`.
/// `false`: it could not be taken or moved (`dest` does not exist then).
pub(super) fn take(c: Candidate, target: &Key, dest: &Path) -> bool {
    // Whoever renames it first has it.
    if fs::rename(c.dir.join(ROOT), dest).is_err() {
        return false;
    }
    let _ = fs::remove_dir_all(&c.dir);
    super::pool::rebase_taken(dest, &c.from, &target.paths, "kept")
}
