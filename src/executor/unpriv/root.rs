//! What stands in for the mounts of the root mode in a copied root: `/dev` nodes, the
//! generated `/etc` files and copies of `RUN --mount` sources; which paths the diff must
//! leave out because of them; and copying writable mounts back after the step.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::executor::copyroot;
use crate::executor::error::ExecError;
use crate::executor::kernel::openat2;
use crate::executor::stepdir::StepDir;

/// The device nodes a step's `/dev` gets: Docker's default set but the terminal ones a
/// build step has no use for. `(name, major, minor)`.
const DEV_NODES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The mount stand-ins placed in one step's root.
#[derive(Debug, Default)]
pub(super) struct StandIns {
    /// Relative paths whose whole subtree the diff leaves out.
    skipped: Vec<PathBuf>,
    /// `(host source, relative target)` of writable mounts, copied back after the step.
    writable: Vec<(PathBuf, PathBuf)>,
}

impl StandIns {
    /// Places `/dev` nodes, the `/etc` files and the mount copies of `step` in `root`.
    pub(super) fn place(root: &Path, step: &StepDir) -> Result<StandIns, ExecError> {
        let mut s = StandIns::default();
        for d in ["dev", "proc", "sys"] {
            // Mount points in the root mode: neither they nor their contents are ever part
            // of a layer there (a stub the image lacks is in the upper dir already). The
            // `/proc` emulation's placeholders change `/proc`'s ctime, nothing else.
            s.skipped.push(PathBuf::from(d));
        }
        dev_nodes(root)?;
        for (rel, host) in &step.etc_files {
            let bytes = fs::read(host).map_err(|e| ExecError::io("reading", host, e))?;
            write_file(root, rel, &bytes, 0o644)?;
            s.skipped.push(PathBuf::from(rel));
        }
        for (source, rel, readonly) in &step.binds {
            copy_in(root, source, rel)?;
            s.skipped.push(PathBuf::from(rel));
            if !*readonly && fs::metadata(source).is_ok_and(|m| m.is_dir()) {
                s.writable.push((source.clone(), PathBuf::from(rel)));
            }
        }
        Ok(s)
    }

    /// Whether the diff leaves `rel` (and what is below it) out.
    pub(super) fn skips(&self, rel: &Path) -> bool {
        self.skipped.iter().any(|s| {
            // "dev/" skips what is under /dev, not /dev itself.
            if s.as_os_str().as_bytes().ends_with(b"/") {
                rel.starts_with(s) && rel != s.as_path()
            } else {
                rel == s
            }
        })
    }

    /// Copies writable mount targets (caches) back to their sources. A target the step
    /// replaced by a symlink or a non-directory is not followed: its source is left as it
    /// was.
    pub(super) fn copy_back(&self, root: &Path) -> Result<(), ExecError> {
        for (source, rel) in &self.writable {
            let rel_s = rel.to_string_lossy();
            if dir_beneath(root, &rel_s).is_err() {
                tracing::warn!(target = %rel_s, "a writable mount target is no longer a plain directory; not copied back");
                continue;
            }
            let err = |e| ExecError::io("copying a mount back to", source, e);
            for entry in fs::read_dir(source).map_err(err)? {
                let p = entry.map_err(err)?.path();
                let r = if fs::symlink_metadata(&p).map_err(err)?.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(err)?;
            }
            copyroot::build_root(&[root.join(rel)], source).map_err(err)?;
        }
        Ok(())
    }
}

fn cstr(s: &str) -> Result<CString, ExecError> {
    CString::new(s).map_err(|_| ExecError::InvalidSpec(format!("path {s:?} contains a NUL")))
}

/// Opens `rel` in `root` as a directory, refusing any symlink on the way (the image's
/// content decides these paths).
fn dir_beneath(root: &Path, rel: &str) -> Result<OwnedFd, ExecError> {
    let base = fs::File::open(root).map_err(|e| ExecError::io("opening", root, e))?;
    let rel = if rel.is_empty() { "." } else { rel };
    let fd = openat2(
        base.as_raw_fd(),
        &cstr(rel)?,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| ExecError::Setup {
        stage: format!("opening /{rel} in the copied root"),
        source: e.into(),
    })?;
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// `mknod`s the device nodes into `/dev` (kiln holds `CAP_MKNOD` in a default container),
/// replacing whatever the image has there, as the root mode's tmpfs hides it.
fn dev_nodes(root: &Path) -> Result<(), ExecError> {
    let dev = dir_beneath(root, "dev")?;
    for (name, major, minor) in DEV_NODES {
        let c = cstr(name)?;
        // SAFETY: valid fd and C string.
        unsafe { libc::unlinkat(dev.as_raw_fd(), c.as_ptr(), 0) };
        // SAFETY: valid fd and C string.
        let r = unsafe {
            libc::mknodat(
                dev.as_raw_fd(),
                c.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(*major as u32, *minor as u32),
            )
        };
        if r != 0 {
            return Err(ExecError::Setup {
                stage: format!("mknod /dev/{name}"),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: valid fd and C string; mknod's mode went through the umask.
        unsafe { libc::fchmodat(dev.as_raw_fd(), c.as_ptr(), 0o666, 0) };
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let (c, t) = (cstr(name)?, cstr(target)?);
        // SAFETY: valid fd and C strings.
        unsafe {
            libc::unlinkat(dev.as_raw_fd(), c.as_ptr(), 0);
            libc::symlinkat(t.as_ptr(), dev.as_raw_fd(), c.as_ptr());
        }
    }
    for (name, mode) in [("shm", 0o1777), ("pts", 0o755)] {
        let c = cstr(name)?;
        // SAFETY: valid fd and C string.
        unsafe {
            libc::mkdirat(dev.as_raw_fd(), c.as_ptr(), mode);
            libc::fchmodat(dev.as_raw_fd(), c.as_ptr(), mode, 0);
        }
    }
    Ok(())
}

/// Writes `bytes` as the regular file `rel` (its parent resolved without symlinks; a
/// symlink or file already there is replaced, never followed).
fn write_file(root: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<(), ExecError> {
    let (parent, name) = split(rel);
    let dir = dir_beneath(root, parent)?;
    let c = cstr(name)?;
    // SAFETY: valid fd and C string.
    unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    // SAFETY: valid fd and C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    };
    let err = |e| ExecError::io("writing", root.join(rel), e);
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd.
    let mut f = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    use std::io::Write;
    f.write_all(bytes).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)
}

/// Copies a mount's source (a directory or a file, never followed if a symlink inside) to
/// `rel` in `root`: what the step sees instead of a bind mount.
fn copy_in(root: &Path, source: &Path, rel: &str) -> Result<(), ExecError> {
    let meta = fs::metadata(source).map_err(|e| ExecError::io("reading", source, e))?;
    let (parent, _) = split(rel);
    // The target's parents were checked for symlinks by the step's preparation; check
    // again at the moment of writing.
    dir_beneath(root, parent)?;
    let dst = root.join(rel);
    let err = |e| ExecError::io("copying a mount into the root at", &dst, e);
    use std::os::unix::fs::FileTypeExt;
    if meta.file_type().is_socket() {
        // An ssh agent's socket: a link to the same inode connects to the same agent.
        let (dir, name) = split(rel);
        let dir = dir_beneath(root, dir)?;
        let (src, name) = (cstr(&source.to_string_lossy())?, cstr(name)?);
        // SAFETY: valid fds and C strings.
        unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
        // SAFETY: as above.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                src.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        };
        return if r == 0 {
            Ok(())
        } else {
            Err(err(std::io::Error::last_os_error()))
        };
    }
    if meta.is_dir() {
        dir_beneath(root, rel)?;
        copyroot::build_root(&[source.to_path_buf()], &dst).map_err(err)
    } else {
        let bytes = fs::read(source).map_err(|e| ExecError::io("reading", source, e))?;
        use std::os::unix::fs::MetadataExt;
        write_file(root, rel, &bytes, meta.mode() & 0o777)?;
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid())).map_err(err)
    }
}
