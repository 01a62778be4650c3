//! What stands in for the mounts of the root mode in a copied root: `/dev` nodes, the
//! generated `/etc` files and copies of `RUN --mount` sources; which paths the diff must
//! leave out because of them; copying writable mounts back after the step; and taking them
//! all out again, so the root is the stage's root once more for the next step.
//!
//! Placing a stand-in never loses what the image had at its path: an existing entry is
//! moved aside into the step's scratch dir (outside the root, same filesystem), a missing
//! one (and its missing parents) is made and recorded. Undoing removes each stand-in and
//! puts the image's entry back, in reverse order, and gives the parents their times back:
//! the root then holds exactly the stage's layers plus what the step wrote (which the diff
//! put in the upper dir). Anything unexpected (a parent the step replaced, a symlink on the
//! way) makes the undo report the root as not reusable.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::executor::copyroot::{self, Manifest};
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

/// One change placing the stand-ins made, undone after the step.
#[derive(Debug)]
enum Undo {
    /// `rel` was made where nothing was: removed, unless the step's upper dir has it (a
    /// parent the step wrote into).
    Made(PathBuf),
    /// What was at `rel` was moved to `to`; `parent` is the parent's inode then.
    Moved {
        rel: PathBuf,
        to: PathBuf,
        parent: u64,
    },
    /// The directory `rel` had these access and modification times.
    Times {
        rel: PathBuf,
        times: [libc::timespec; 2],
    },
}

/// The mount stand-ins placed in one step's root.
#[derive(Debug, Default)]
pub(super) struct StandIns {
    /// Relative paths whose whole subtree the diff leaves out.
    skipped: Vec<PathBuf>,
    /// `(host source, relative target)` of writable mounts, copied back after the step.
    writable: Vec<(PathBuf, PathBuf)>,
    /// What placing changed, in order.
    undo: Vec<Undo>,
    /// Where moved-aside entries go (outside the root).
    aside: PathBuf,
}

impl StandIns {
    /// Places `/dev` nodes, the `/etc` files and the mount copies of `step` in `root`.
    pub(super) fn place(root: &Path, step: &StepDir) -> Result<StandIns, ExecError> {
        let aside = step.dir.join("aside");
        fs::create_dir(&aside).map_err(|e| ExecError::io("creating", &aside, e))?;
        let mut s = StandIns {
            aside,
            ..StandIns::default()
        };
        for d in ["dev", "proc", "sys"] {
            // Mount points in the root mode: neither they nor their contents are ever part
            // of a layer there (a stub the image lacks is in the upper dir already), and
            // what the image has there is hidden. So each is a fresh directory, the image's
            // own moved aside and put back afterwards: what the step does there (a symlink
            // to a host path in place of `/sys`) never stays in the root for a later step,
            // or for a rebase that would follow it. The `/proc` emulation's placeholders
            // change `/proc`'s ctime, nothing else.
            s.skipped.push(PathBuf::from(d));
            s.fresh_dir(root, d)?;
        }
        dev_nodes(root)?;
        for (rel, host) in &step.etc_files {
            let bytes = fs::read(host).map_err(|e| ExecError::io("reading", host, e))?;
            s.clear(root, rel)?;
            write_file(root, rel, &bytes, 0o644)?;
            s.undo.push(Undo::Made(PathBuf::from(rel)));
            s.skipped.push(PathBuf::from(rel));
        }
        for (source, rel, readonly) in &step.binds {
            s.clear(root, rel)?;
            let dir = fs::metadata(source).is_ok_and(|m| m.is_dir());
            if dir {
                s.make_dir(root, rel, 0o755)?;
            }
            copy_in(root, source, rel)?;
            if !dir {
                s.undo.push(Undo::Made(PathBuf::from(rel)));
            }
            s.skipped.push(PathBuf::from(rel));
            if !*readonly && dir {
                s.writable.push((source.clone(), PathBuf::from(rel)));
            }
        }
        s.put_times_back(root, None);
        Ok(s)
    }

    /// A fresh, empty directory at `name` (top level) with the mode and owner of what the
    /// image has there, which is moved aside (as the root mode's mounts hide it).
    fn fresh_dir(&mut self, root: &Path, name: &str) -> Result<(), ExecError> {
        let (mode, owner) = match fs::symlink_metadata(root.join(name)) {
            Ok(m) if m.is_dir() => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
            _ => (0o755, None),
        };
        self.clear(root, name)?;
        self.make_dir(root, name, mode)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(root.join(name), Some(uid), Some(gid))
                .map_err(|e| ExecError::io("setting owner of", root.join(name), e))?;
        }
        Ok(())
    }

    /// Makes room at `rel` for a stand-in: its missing parents are made (0755, as the root
    /// mode's init layer makes them), what is there is moved aside, the parent's times are
    /// kept for [`Self::put_times_back`].
    fn clear(&mut self, root: &Path, rel: &str) -> Result<(), ExecError> {
        let (parent, _) = split(rel);
        let mut prefix = String::new();
        for comp in parent.split('/').filter(|c| !c.is_empty()) {
            let up = prefix.clone();
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            if dir_beneath(root, &prefix).is_err() {
                self.keep_times(root, &up)?;
                self.make_dir(root, &prefix, 0o755)?;
            }
        }
        let dir = dir_beneath(root, parent)?;
        self.keep_times(root, parent)?;
        let full = root.join(rel);
        if fs::symlink_metadata(&full).is_err() {
            return Ok(());
        }
        let to = self.aside.join(self.undo.len().to_string());
        fs::rename(&full, &to).map_err(|e| ExecError::io("moving aside", &full, e))?;
        let parent_ino = fd_ino(&dir)?;
        self.undo.push(Undo::Moved {
            rel: PathBuf::from(rel),
            to,
            parent: parent_ino,
        });
        Ok(())
    }

    fn make_dir(&mut self, root: &Path, rel: &str, mode: u32) -> Result<(), ExecError> {
        let (parent, name) = split(rel);
        let dir = dir_beneath(root, parent)?;
        let c = cstr(name)?;
        // SAFETY: valid fd and C string.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) } != 0 {
            return Err(ExecError::io(
                "creating",
                root.join(rel),
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: valid fd and C string; mkdir's mode went through the umask.
        unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) };
        self.undo.push(Undo::Made(PathBuf::from(rel)));
        Ok(())
    }

    /// Keeps the times of the directory `rel` ("" is the root itself, left alone).
    fn keep_times(&mut self, root: &Path, rel: &str) -> Result<(), ExecError> {
        let rel = PathBuf::from(rel);
        let known = self
            .undo
            .iter()
            .any(|u| matches!(u, Undo::Times { rel: r, .. } | Undo::Made(r) if *r == rel));
        if known || rel.as_os_str().is_empty() {
            return Ok(());
        }
        let m = fs::symlink_metadata(root.join(&rel))
            .map_err(|e| ExecError::io("reading", root.join(&rel), e))?;
        let times = [
            timespec(m.atime(), m.atime_nsec()),
            timespec(m.mtime(), m.mtime_nsec()),
        ];
        self.undo.push(Undo::Times { rel, times });
        Ok(())
    }

    /// Gives the directories whose entries the stand-ins changed their times back: the
    /// times in `upper` when the step's layer has that directory (the diff took them from
    /// the root), else the ones kept before placing.
    fn put_times_back(&self, root: &Path, upper: Option<&Path>) {
        for u in &self.undo {
            let (rel, mut times) = match u {
                Undo::Times { rel, times } => (rel, *times),
                // A directory made for a stand-in that the step wrote into stays; its
                // times are the layer's.
                Undo::Made(rel) if upper.is_some() => (rel, [timespec(0, libc::UTIME_OMIT); 2]),
                _ => continue,
            };
            if let Some(m) = upper.and_then(|up| fs::symlink_metadata(up.join(rel)).ok()) {
                times = [
                    timespec(m.atime(), m.atime_nsec()),
                    timespec(m.mtime(), m.mtime_nsec()),
                ];
            }
            let Ok(dir) = dir_beneath(root, &rel.to_string_lossy()) else {
                continue;
            };
            let c = c".";
            // SAFETY: valid fd, C string and a two-element timespec array.
            unsafe { libc::utimensat(dir.as_raw_fd(), c.as_ptr(), times.as_ptr(), 0) };
        }
    }

    /// Whether the diff leaves `rel` (and what is below it) out.
    pub(super) fn skips(&self, rel: &Path) -> bool {
        self.skipped.iter().any(|s| rel == s.as_path())
    }

    /// The paths whose index entries placing (or undoing) changed: each stand-in's path and
    /// the directories around them.
    fn touched(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for u in &self.undo {
            let rel = match u {
                Undo::Made(r) | Undo::Moved { rel: r, .. } | Undo::Times { rel: r, .. } => r,
            };
            v.push(rel.clone());
            if let Some(p) = rel.parent() {
                v.push(p.to_path_buf());
            }
        }
        v.extend(self.skipped.iter().cloned());
        v.retain(|p| !p.as_os_str().is_empty());
        v.sort();
        v.dedup();
        v
    }

    /// Updates `index` (carried from the last step on this root) for what placing changed:
    /// a stand-in's subtree is left out (the diff skips it), a directory around one gets
    /// its new ctime.
    pub(super) fn update_index(&self, root: &Path, index: &mut Manifest) -> Result<(), ExecError> {
        for rel in self.touched() {
            let r = if self.skips(&rel) {
                index.forget(&rel);
                Ok(())
            } else {
                index.restamp(root, &rel)
            };
            r.map_err(|e| ExecError::io("indexing", root.join(&rel), e))?;
        }
        Ok(())
    }

    /// Takes the stand-ins out again after the step (the diff has run): what was made goes
    /// (unless `upper` has it), what was moved aside comes back, directories get their
    /// times back, and `index` (the diff's) is brought up to date. `Ok(false)`: something
    /// was not as placed, and the root must not be used again.
    pub(super) fn undo(
        &self,
        root: &Path,
        upper: &Path,
        index: &mut Manifest,
    ) -> Result<bool, ExecError> {
        let mut clean = true;
        for u in self.undo.iter().rev() {
            match u {
                Undo::Made(rel) => {
                    if !self.skips(rel) && fs::symlink_metadata(upper.join(rel)).is_ok() {
                        continue;
                    }
                    clean &= remove_beneath(root, rel);
                }
                Undo::Moved { rel, to, parent } => {
                    let p = rel.parent().unwrap_or(Path::new(""));
                    let same = dir_beneath(root, &p.to_string_lossy())
                        .and_then(|d| fd_ino(&d))
                        .is_ok_and(|ino| ino == *parent);
                    if !same || !remove_beneath(root, rel) {
                        clean = false;
                        continue;
                    }
                    let full = root.join(rel);
                    fs::rename(to, &full).map_err(|e| ExecError::io("putting back", &full, e))?;
                }
                Undo::Times { .. } => {}
            }
        }
        self.put_times_back(root, Some(upper));
        for rel in self.touched() {
            index
                .refresh(root, &rel)
                .map_err(|e| ExecError::io("indexing", root.join(&rel), e))?;
        }
        Ok(clean)
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
        copyroot::build_root(&[source.to_path_buf()], &dst)
            .map(drop)
            .map_err(err)
    } else {
        let bytes = fs::read(source).map_err(|e| ExecError::io("reading", source, e))?;
        use std::os::unix::fs::MetadataExt;
        write_file(root, rel, &bytes, meta.mode() & 0o777)?;
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid())).map_err(err)
    }
}

fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    }
}

fn fd_ino(fd: &OwnedFd) -> Result<u64, ExecError> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(ExecError::Spawn(std::io::Error::last_os_error()));
    }
    Ok(st.st_ino)
}

/// Removes `rel` (whatever it is, never followed) after checking that no symlink leads to
/// its parent; `false` when its parent cannot be reached that way. No process of the step
/// is left when this runs, so nothing can swap a component meanwhile.
fn remove_beneath(root: &Path, rel: &Path) -> bool {
    let p = rel.parent().unwrap_or(Path::new(""));
    if dir_beneath(root, &p.to_string_lossy()).is_err() {
        return false;
    }
    let full = root.join(rel);
    match fs::symlink_metadata(&full) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&full).is_ok(),
        Ok(_) => fs::remove_file(&full).is_ok(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}
