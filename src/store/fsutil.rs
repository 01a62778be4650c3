//! Crash-safe file primitives: unique temp names, fsync, atomic replace.
//!
//! Every file the store publishes is written under `<root>/tmp`, flushed
//! with fsync, renamed into place, and its directory fsynced, so a crash
//! leaves either the old file or the complete new one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{io_err, Result};

/// A name no other thread or process on this machine will pick:
/// `<prefix>-<pid>-<counter>-<nanoseconds>`.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Creates a new, empty file with a unique name in `dir` (mode 0600).
pub(crate) fn create_temp_file(dir: &Path, prefix: &str) -> Result<(PathBuf, File)> {
    loop {
        let path = dir.join(unique_name(prefix));
        match OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            // Only possible if a name is reused after a pid wrap-around.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", path)(e)),
        }
    }
}

/// Creates a new directory with a unique name in `dir`.
pub(crate) fn create_temp_dir(dir: &Path, prefix: &str, mode: u32) -> Result<PathBuf> {
    loop {
        let path = dir.join(unique_name(prefix));
        match DirBuilder::new().mode(mode).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create directory", path)(e)),
        }
    }
}

/// Creates `path` and missing parents; new directories get `mode`.
pub(crate) fn create_dir_all(path: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_err("create directory", path))
}

/// Flushes a directory's entries (a rename into it) to disk.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(io_err("open directory", path))?;
    dir.sync_all().map_err(io_err("fsync directory", path))
}

/// The directory containing `path`.
fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or_else(|| Path::new("/"))
}

/// Renames `from` to `to` and fsyncs the destination directory.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(io_err("rename into place", to))?;
    fsync_dir(parent_of(to))
}

/// Atomically replaces `dest` with `bytes` (file mode `mode`), staging in `tmp_dir`.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (tmp, mut file) = create_temp_file(tmp_dir, "write")?;
    let guard = TempPath::new(tmp.clone());
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(file);
    rename_durable(&tmp, dest)?;
    guard.disarm();
    Ok(())
}

/// Removes a temp file or directory when dropped, unless disarmed after it
/// was renamed into place.
#[derive(Debug)]
pub(crate) struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempPath { path: Some(path) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or_else(|| Path::new(""))
    }

    /// Keeps the path (it has been renamed away or is wanted).
    pub(crate) fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let result = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove temporary file");
            }
        }
    }
}
