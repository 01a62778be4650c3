//! Crash-safe file primitives: unique temp files and directories, fsync, atomic replace.
//!
//! A file published this way is written under a temp name beside (or on the same filesystem
//! as) its destination, flushed with fsync, renamed into place, and its directory fsynced,
//! so a crash leaves either the old file or the complete new one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ids::unique_name;

/// A filesystem call of these helpers failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}: {source}")]
pub struct AtomicError {
    /// What was being done (`create`, `rename into place`, `fsync`, …).
    pub op: &'static str,
    /// The path involved.
    pub path: PathBuf,
    /// The system error.
    #[source]
    pub source: io::Error,
}

/// A `map_err` adapter naming the operation and the path.
fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> AtomicError {
    let path = path.into();
    move |source| AtomicError { op, path, source }
}

/// Creates a new, empty file with a unique name in `dir` (mode 0600).
pub fn create_temp_file(dir: &Path, prefix: &str) -> Result<(PathBuf, File), AtomicError> {
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
pub fn create_temp_dir(dir: &Path, prefix: &str, mode: u32) -> Result<PathBuf, AtomicError> {
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
pub fn create_dir_all(path: &Path, mode: u32) -> Result<(), AtomicError> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_err("create directory", path))
}

/// Flushes a directory's entries (a rename into it) to disk.
pub fn fsync_dir(path: &Path) -> Result<(), AtomicError> {
    let dir = File::open(path).map_err(io_err("open directory", path))?;
    dir.sync_all().map_err(io_err("fsync directory", path))
}

/// The directory containing `path`.
fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or_else(|| Path::new("/"))
}

/// Renames `from` to `to` and fsyncs the destination directory.
pub fn rename_durable(from: &Path, to: &Path) -> Result<(), AtomicError> {
    fs::rename(from, to).map_err(io_err("rename into place", to))?;
    fsync_dir(parent_of(to))
}

/// Atomically replaces `dest` with `bytes` (file mode `mode`), staging in `tmp_dir` (which
/// must be on the same filesystem as `dest`).
pub fn write_atomic(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), AtomicError> {
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
pub struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    /// Takes charge of removing `path`.
    pub fn new(path: PathBuf) -> Self {
        TempPath { path: Some(path) }
    }

    /// The path (empty once disarmed).
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or_else(|| Path::new(""))
    }

    /// Keeps the path (it has been renamed away or is wanted).
    pub fn disarm(mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temp() {
        let d = std::env::temp_dir().join(unique_name("kiln-atomic-test"));
        create_dir_all(&d, 0o700).unwrap();
        let dest = d.join("f");
        write_atomic(&d, &dest, b"one", 0o640).unwrap();
        write_atomic(&d, &dest, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
        drop(TempPath::new(d.clone()));
        assert!(!d.exists());
    }

    #[test]
    fn errors_name_the_operation_and_path() {
        let e = write_atomic(
            Path::new("/nonexistent-kiln-dir"),
            Path::new("/x"),
            b"",
            0o600,
        )
        .unwrap_err();
        assert_eq!(e.op, "create");
        assert!(
            e.to_string()
                .starts_with("cannot create /nonexistent-kiln-dir/write-"),
            "{e}"
        );
    }
}
