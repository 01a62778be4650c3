//! The store's crash-safe file primitives: [`crate::common::atomic`] with the store's error.
//!
//! Every file the store publishes is written under `<root>/tmp`, flushed
//! with fsync, renamed into place, and its directory fsynced, so a crash
//! leaves either the old file or the complete new one.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::common::atomic::{self, AtomicError};

use super::error::{Result, StoreError};

pub(crate) use crate::common::atomic::TempPath;
pub(crate) use crate::common::ids::unique_name;

impl From<AtomicError> for StoreError {
    fn from(e: AtomicError) -> StoreError {
        StoreError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// Creates a new, empty file with a unique name in `dir` (mode 0600).
pub(crate) fn create_temp_file(dir: &Path, prefix: &str) -> Result<(PathBuf, File)> {
    Ok(atomic::create_temp_file(dir, prefix)?)
}

/// Creates a new directory with a unique name in `dir`.
pub(crate) fn create_temp_dir(dir: &Path, prefix: &str, mode: u32) -> Result<PathBuf> {
    Ok(atomic::create_temp_dir(dir, prefix, mode)?)
}

/// Creates `path` and missing parents; new directories get `mode`.
pub(crate) fn create_dir_all(path: &Path, mode: u32) -> Result<()> {
    Ok(atomic::create_dir_all(path, mode)?)
}

/// Flushes a directory's entries (a rename into it) to disk.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    Ok(atomic::fsync_dir(path)?)
}

/// Renames `from` to `to` and fsyncs the destination directory.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    Ok(atomic::rename_durable(from, to)?)
}

/// Atomically replaces `dest` with `bytes` (file mode `mode`), staging in `tmp_dir`.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    Ok(atomic::write_atomic(tmp_dir, dest, bytes, mode)?)
}
