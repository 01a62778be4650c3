//! Working roots kept between steps: after a step, its copied root (stand-ins taken out) is
//! the root of the next step of the same stage, so it is parked under the key of the layer
//! chain it now holds and taken by the step whose lowers have that key. Any other step gets
//! a fresh copy.
//!
//! The key is the stamp (device, inode, generation, ctime) of every lower dir, top-most
//! first: a snapshot is never changed once committed, and the step's upper dir becomes the
//! next layer's snapshot by a rename of its parent, which keeps its inode and ctime. A
//! cache hit, a COPY, another parent or a layer another process committed first gives
//! other lowers, so no match. Parked roots sit in a 0700 directory beside the build's
//! scratch dirs (the store's `tmp/`, which garbage collection empties), at most
//! [`MAX_PARKED`] of them; when the process exits the last ones are kept for later builds
//! ([`super::kept`]) and the others removed.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use crate::executor::copyroot::Manifest;

/// How many roots are kept at most (parallel stages each keep one).
pub(super) const MAX_PARKED: usize = 8;

/// The identity of a stack of lower dirs: each one's stamp, and where it was.
#[derive(Debug, Clone)]
pub(super) struct Key {
    pub(super) stamps: Vec<Stamp>,
    pub(super) paths: Vec<PathBuf>,
}

/// Device, inode, generation and ctime of a directory.
pub(super) type Stamp = [i64; 5];

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.stamps == other.stamps
    }
}

pub(super) fn dir_stamp(p: &Path) -> std::io::Result<Stamp> {
    let m = fs::metadata(p)?;
    let generation = crate::executor::copyroot::generation(p, &m) as i64;
    Ok([
        m.dev() as i64,
        m.ino() as i64,
        generation,
        m.ctime(),
        m.ctime_nsec(),
    ])
}

impl Key {
    /// The key of `lowers` (top-most first).
    pub(super) fn of(lowers: &[PathBuf]) -> std::io::Result<Key> {
        let stamps = lowers
            .iter()
            .map(|l| dir_stamp(l))
            .collect::<Result<_, _>>()?;
        Ok(Key {
            stamps,
            paths: lowers.to_vec(),
        })
    }

    /// The key once `upper` is committed as the next layer on top.
    pub(super) fn with_top(&self, upper: &Path) -> std::io::Result<Key> {
        let mut k = Key {
            stamps: vec![dir_stamp(upper)?],
            paths: vec![upper.to_path_buf()],
        };
        k.stamps.extend(self.stamps.iter().copied());
        k.paths.extend(self.paths.iter().cloned());
        Ok(k)
    }
}

struct Parked {
    key: Key,
    dir: PathBuf,
    index: Manifest,
}

static POOL: Mutex<Vec<Parked>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

fn pool() -> std::sync::MutexGuard<'static, Vec<Parked>> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes the root parked under `key`, moved to `dest`, and its index; `None` if there is
/// none (or it cannot be moved: then it is removed).
pub(super) fn take(key: &Key, dest: &Path) -> Option<Manifest> {
    let parked = {
        let mut p = pool();
        let i = p.iter().position(|r| r.key == *key)?;
        p.remove(i)
    };
    match fs::rename(&parked.dir, dest) {
        Ok(()) => Some(parked.index),
        Err(e) => {
            tracing::debug!(dir = %parked.dir.display(), "cannot take a parked root: {e}");
            let _ = fs::remove_dir_all(&parked.dir);
            None
        }
    }
}

/// How well a root showing the chain `chain` fits `target` (both top-most first): how many
/// bottom layers they share, and how many they do not; `None` when they share none.
/// Better is more shared, then fewer others.
pub(super) fn fit(chain: &[Stamp], target: &[Stamp]) -> Option<(usize, usize)> {
    let shared = chain
        .iter()
        .rev()
        .zip(target.iter().rev())
        .take_while(|(s, t)| s == t)
        .count();
    (shared > 0).then_some((shared, chain.len() + target.len() - 2 * shared))
}

/// Whether the fit `a` is better than `b`.
pub(super) fn better(a: (usize, usize), b: Option<(usize, usize)>) -> bool {
    b.is_none_or(|(bs, be)| a.0 > bs || (a.0 == bs && a.1 < be))
}

/// The candidate with the best fit (the first of equals).
pub(super) fn best<T>(
    candidates: impl IntoIterator<Item = ((usize, usize), T)>,
) -> Option<((usize, usize), T)> {
    candidates.into_iter().fold(None, |best, c| {
        if better(c.0, best.as_ref().map(|b| b.0)) {
            Some(c)
        } else {
            best
        }
    })
}

/// Takes the parked root that fits `target` best ([`fit`]), if it fits better than `beat`,
/// moved to `dest` (which must not exist) and moved onto `target`'s layers
/// ([`crate::executor::rebase`]). `false`: there was none, or it could not be moved
/// (`dest` does not exist then). Used when no root is parked under `target` itself: a COPY
/// after a RUN, or the RUN after it, then copies what the layers between them hold rather
/// than the whole image.
pub(super) fn take_nearest(target: &Key, dest: &Path, beat: Option<(usize, usize)>) -> bool {
    let parked = {
        let mut p = pool();
        let found = best(
            p.iter()
                .enumerate()
                .filter_map(|(i, r)| Some((fit(&r.key.stamps, &target.stamps)?, i))),
        );
        match found {
            Some((f, i)) if better(f, beat) => p.remove(i),
            _ => return false,
        }
    };
    let from = match super::kept::locate(&parked.key) {
        Ok(from) => from,
        Err(e) => {
            tracing::debug!("cannot move a parked root: {e}");
            let _ = fs::remove_dir_all(&parked.dir);
            return false;
        }
    };
    if let Err(e) = fs::rename(&parked.dir, dest) {
        tracing::debug!(dir = %parked.dir.display(), "cannot take a parked root: {e}");
        let _ = fs::remove_dir_all(&parked.dir);
        return false;
    }
    rebase_taken(dest, &from, &target.paths, "parked")
}

/// Rebases the root just taken to `dest` from the layers `from` onto `to`; on an error it
/// is removed. `what`: "parked" or "kept", for the log.
pub(super) fn rebase_taken(dest: &Path, from: &[PathBuf], to: &[PathBuf], what: &str) -> bool {
    match crate::executor::rebase::rebase(dest, from, to) {
        Ok(()) => {
            tracing::debug!(
                from = from.len(),
                to = to.len(),
                "moved a {what} working root onto the step's layers"
            );
            true
        }
        Err(e) => {
            tracing::debug!("cannot move a {what} root onto the step's layers: {e}");
            let _ = fs::remove_dir_all(dest);
            false
        }
    }
}

/// Parks `root` (moved into a 0700 dir under `beside`) for the step whose lowers have
/// `key`. `Err`: it was not moved; the caller removes it.
pub(super) fn park(root: &Path, beside: &Path, key: Key, index: Manifest) -> std::io::Result<()> {
    let home = beside.join("unpriv-roots");
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&home)?;
    let dir = home.join(crate::common::ids::new_id()?);
    fs::rename(root, &dir)?;
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain extern "C" function.
        unsafe { libc::atexit(release_at_exit) };
    });
    let evicted: Vec<Parked> = {
        let mut p = pool();
        // One root per key: one parked before under the same key (a parallel stage's) goes.
        let mut evicted: Vec<Parked> = Vec::new();
        if let Some(i) = p.iter().position(|r| r.key == key) {
            evicted.push(p.remove(i));
        }
        p.push(Parked { key, dir, index });
        let extra = p.len().saturating_sub(MAX_PARKED);
        evicted.extend(p.drain(..extra));
        evicted
    };
    for r in evicted {
        let _ = fs::remove_dir_all(&r.dir);
    }
    Ok(())
}

/// Takes every parked root out of the pool (the end of the process): the most recently
/// parked ones are kept for later builds ([`super::kept`]), the others removed.
pub fn release() {
    let all: Vec<Parked> = pool().drain(..).collect();
    let keep_from = all.len().saturating_sub(super::kept::MAX_KEPT);
    for (i, r) in all.into_iter().enumerate() {
        // Parked roots sit in `<beside>/unpriv-roots/<id>`.
        let beside = r.dir.parent().and_then(Path::parent);
        if let (true, Some(beside)) = (i >= keep_from, beside) {
            match super::kept::keep(&r.dir, beside, &r.key) {
                Ok(()) => continue,
                Err(e) => tracing::debug!("not keeping a working root: {e}"),
            }
        }
        let _ = fs::remove_dir_all(&r.dir);
    }
}

extern "C" fn release_at_exit() {
    release();
}

/// Clock ticks since boot now, as `/proc/<pid>/stat` gives a process's start time.
pub(super) fn boot_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec; sysconf takes an integer.
    let (hz, ok) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as u64,
            libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) == 0,
        )
    };
    if !ok {
        return 0;
    }
    ts.tv_sec as u64 * hz + ts.tv_nsec as u64 * hz / 1_000_000_000
}

/// The start time (clock ticks since boot) of process `pid`.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses (which may hold spaces and parentheses).
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a process still has `root` as its root directory (one that left the step's
/// process group): the root cannot be given to another step then. A process whose root
/// cannot be read (kiln lacks `CAP_SYS_PTRACE` for it) counts as one unless it started
/// before `since` (clock ticks since boot), when the step did not exist yet.
pub(super) fn in_use(root: &Path, since: u64) -> bool {
    let Ok(m) = fs::metadata(root) else {
        return true;
    };
    let Ok(dir) = fs::read_dir("/proc") else {
        return true;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        match fs::metadata(format!("/proc/{pid}/root")) {
            Ok(r) if r.dev() == m.dev() && r.ino() == m.ino() => return true,
            Ok(_) => {}
            // Gone meanwhile, a zombie (no root), or a kernel thread.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {}
            Err(_) => {
                if start_ticks(pid).is_none_or(|t| t >= since) {
                    return true;
                }
            }
        }
    }
    false
}
