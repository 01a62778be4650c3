//! Advisory `flock(2)` locks between kiln processes (and threads) sharing a store.
//!
//! Two lock files live in the store root:
//!
//! * `lock`: held exclusively while `index.json` is read, changed and
//!   replaced, so concurrent tag updates never lose each other's changes.
//!   Readers do not take it: `index.json` is replaced by rename, so a reader
//!   sees the old or the new file, never a mix.
//! * `gc.lock`: held *shared* by everything that writes into the store
//!   before the result is reachable from `index.json` (a blob write, an
//!   image being added, a snapshot being unpacked, a [`Lease`]), and
//!   *exclusively* by garbage collection, which therefore never deletes a
//!   blob that is about to be referenced.
//!
//! Each guard opens the lock file anew, so a flock belongs to that guard's
//! open file description: two threads of one process exclude each other
//! exactly like two processes do.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::error::{io_err, Result};

/// A held lock; released when dropped.
#[derive(Debug)]
pub(crate) struct LockGuard {
    _flock: Flock<File>,
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_err("open lock file", path))
}

/// Takes the lock; `None` when a non-blocking request finds it held.
fn acquire(path: &Path, arg: FlockArg) -> Result<Option<LockGuard>> {
    let mut file = open_lock_file(path)?;
    loop {
        match Flock::lock(file, arg) {
            Ok(flock) => return Ok(Some(LockGuard { _flock: flock })),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => return Err(io_err("lock", path)(std::io::Error::from(errno))),
        }
    }
}

/// Waits for the lock.
fn acquire_blocking(path: &Path, arg: FlockArg) -> Result<LockGuard> {
    match acquire(path, arg)? {
        Some(guard) => Ok(guard),
        // A blocking flock does not report EWOULDBLOCK; treat it as an error
        // rather than trust that.
        None => Err(io_err("lock", path)(std::io::Error::from(
            Errno::EWOULDBLOCK,
        ))),
    }
}

/// Waits for an exclusive lock on `path`.
pub(crate) fn lock_exclusive(path: &Path) -> Result<LockGuard> {
    acquire_blocking(path, FlockArg::LockExclusive)
}

/// Waits for a shared lock on `path`.
pub(crate) fn lock_shared(path: &Path) -> Result<LockGuard> {
    acquire_blocking(path, FlockArg::LockShared)
}

/// Takes an exclusive lock on `path` if nobody holds it.
pub(crate) fn try_lock_exclusive(path: &Path) -> Result<Option<LockGuard>> {
    acquire(path, FlockArg::LockExclusiveNonblock)
}

/// Keeps garbage collection away while the holder writes blobs or
/// snapshots that no image references yet (a build or a pull in progress).
///
/// Take one with [`Store::lease`](super::Store::lease) before writing the
/// first layer of an image and drop it after the image is in `index.json`
/// (after [`Store::put_image`](super::Store::put_image)). While any lease
/// exists, in any process, [`Store::gc`](super::Store::gc) fails with
/// [`StoreError::Busy`](super::StoreError::Busy).
#[derive(Debug)]
pub struct Lease {
    pub(crate) _guard: LockGuard,
}
