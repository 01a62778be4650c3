//! The host side of an allowed path operation: opening (a placeholder for directories),
//! stat, statx, access, readlink and reopening the caller's own descriptors.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use super::policy::Op;
use super::procfs::{
    addfd, fstatat, write_link, Base, Caller, Emu, Out, PathCall, Placeholder, Reply,
    MAX_PLACEHOLDERS,
};
use super::sys::{self, Listener, Mem, RESOLVE_STRICT};

fn cstr(name: &str) -> Result<std::ffi::CString, Errno> {
    std::ffi::CString::new(name).map_err(|_| Errno::EINVAL)
}

/// The bytes of a plain-data value.
fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is plain old data (stat); reading its bytes is sound.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

impl Emu {
    /// Performs an allowed operation on `rel` under `base` (the host's `/proc`, or a process
    /// directory), with the caller's ids.
    pub(super) fn perform(
        &mut self,
        l: &Listener,
        c: &mut Caller,
        mem: &Mem,
        pc: &PathCall,
        base: Base<'_>,
        rel: &[String],
    ) -> Reply {
        let dirfd = match base {
            Base::Proc => self.proc_fd.as_raw_fd(),
            Base::Pid(_, d) => d.as_raw_fd(),
        };
        let path = rel.join("/");
        match pc.op {
            Op::Open(flags) => {
                let host_flags = libc::O_RDONLY | (flags & (libc::O_NONBLOCK | libc::O_DIRECTORY));
                let name = if path.is_empty() { "." } else { &path };
                let fd = match c
                    .as_caller(|| sys::openat2(dirfd, &cstr(name)?, host_flags, RESOLVE_STRICT))
                {
                    Ok(fd) => fd,
                    Err(e) => return e.into(),
                };
                match fstatat(fd.as_raw_fd(), "", 0) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                        let mut shown = match base {
                            Base::Proc => "/proc".to_string(),
                            Base::Pid(pid, _) => format!("/proc/{pid}"),
                        };
                        if !path.is_empty() {
                            shown = format!("{shown}/{path}");
                        }
                        let proc_root = matches!(base, Base::Proc) && path.is_empty();
                        self.give_dir(l, c, fd, shown, proc_root, flags)
                    }
                    Ok(_) => addfd(l, c, &fd, flags),
                    Err(e) => e.into(),
                }
            }
            Op::Readlink => Errno::EINVAL.into(),
            Op::Stat(_) | Op::Access(_) => {
                let (parent, name) = match split(c, dirfd, rel) {
                    Ok(p) => p,
                    Err(e) => return e.into(),
                };
                let pfd = parent.as_ref().map_or(dirfd, |p| p.as_raw_fd());
                self.stat_or_access(c, mem, pc, pfd, &name)
            }
        }
    }

    /// `stat`/`statx`/`access` of `name` under `dirfd` (`""`: the directory itself).
    pub(super) fn stat_or_access(
        &self,
        c: &mut Caller,
        mem: &Mem,
        pc: &PathCall,
        dirfd: RawFd,
        name: &str,
    ) -> Reply {
        let r = match (pc.op, pc.out) {
            (Op::Stat(nofollow), Out::Stat(addr)) => {
                let flags = if nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
                c.as_caller(|| fstatat(dirfd, name, flags))
                    .and_then(|st| mem.write(addr, bytes_of(&st)))
            }
            (Op::Stat(_), Out::Statx { addr, flags, mask }) => c
                .as_caller(|| statx(dirfd, name, flags, mask))
                .and_then(|buf| mem.write(addr, &buf)),
            (Op::Access(mode), _) => c.as_caller(|| faccessat(dirfd, name, mode)),
            _ => Err(Errno::EINVAL),
        };
        match r {
            Ok(()) => Reply::Val(0),
            Err(e) => e.into(),
        }
    }

    /// `readlink` of a magic link under a process directory: the target as the step sees it.
    pub(super) fn read_link(
        &self,
        c: &mut Caller,
        mem: &Mem,
        pc: &PathCall,
        piddir: RawFd,
        tail: &[String],
    ) -> Reply {
        let target = match split(c, piddir, tail).and_then(|(parent, name)| {
            let pfd = parent.as_ref().map_or(piddir, |p| p.as_raw_fd());
            c.as_caller(|| readlinkat(pfd, &name))
        }) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        match self.shown_target(&target) {
            Some(t) => write_link(mem, pc, t.as_bytes()),
            None => Errno::EACCES.into(),
        }
    }

    /// A link target as the step may see it: inside the root, stripped of it; a host
    /// `/proc` path (fds the supervisor gave) or an anonymous object (`pipe:[…]`) as is;
    /// anything else of the host is not shown.
    pub(super) fn shown_target(&self, target: &str) -> Option<String> {
        if let Some(s) = self.strip_root(target) {
            return Some(s);
        }
        if !target.starts_with('/') || target == "/proc" || target.starts_with("/proc/") {
            return Some(target.to_string());
        }
        None
    }

    /// Opens `/proc/<tgid>/fd/<fd>` for the caller as Linux does (a new open of the same
    /// file, with the caller's ids), refusing to widen access to a host `/proc` file or to
    /// open a host `/proc` directory.
    pub(super) fn reopen_fd(
        &mut self,
        l: &Listener,
        c: &mut Caller,
        pc: &PathCall,
        tgid: i32,
        fd: i32,
    ) -> Reply {
        let Op::Open(flags) = pc.op else {
            return Errno::EINVAL.into();
        };
        let path = format!("/proc/{tgid}/fd/{fd}");
        let proc_dev = self.proc_dev;
        let opened = c.as_caller(|| {
            let st = fstatat(libc::AT_FDCWD, &path, 0)?;
            let on_proc = st.st_dev == proc_dev;
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if on_proc && (is_dir || Op::Open(flags).writes()) {
                return Err(Errno::EACCES);
            }
            let keep = !(libc::O_NOFOLLOW | libc::O_CREAT | libc::O_EXCL);
            let c_path = cstr(&path)?;
            // SAFETY: open with a NUL-terminated path; the fd is owned right after.
            let raw = unsafe { libc::open(c_path.as_ptr(), (flags & keep) | libc::O_CLOEXEC) };
            if raw < 0 {
                return Err(Errno::last());
            }
            // SAFETY: a new fd from open.
            Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
        });
        match opened {
            Ok(f) => addfd(l, c, &f, flags),
            Err(e) => e.into(),
        }
    }

    /// Gives the caller a placeholder for the host directory `host` (see the module docs).
    pub(super) fn give_dir(
        &mut self,
        l: &Listener,
        c: &mut Caller,
        host: OwnedFd,
        base: String,
        proc_root: bool,
        flags: i32,
    ) -> Reply {
        let (ph, id) = match self.new_placeholder() {
            Ok(p) => p,
            Err(e) => return e.into(),
        };
        match addfd(l, c, &ph, flags) {
            Reply::Sent => {
                if self.placeholders.len() >= MAX_PLACEHOLDERS {
                    self.placeholders.pop_front();
                }
                self.placeholders.push_back(Placeholder {
                    id,
                    _held: ph,
                    host,
                    proc_root,
                    base,
                });
                Reply::Sent
            }
            r => r,
        }
    }
}

impl Emu {
    /// A new, empty, already removed directory inside the root's `/proc` (or the root when it
    /// has none): created, opened, then removed at once, so it leaves no entry behind and its
    /// inode is unique while the supervisor holds it. `..` from it is the root's `/proc`.
    /// The parent's times are put back (its ctime changes).
    fn new_placeholder(&mut self) -> Result<(OwnedFd, (u64, u64)), Errno> {
        let root = self.root_fd.as_raw_fd();
        let no_links = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS;
        let parent = sys::openat2(root, c"proc", libc::O_RDONLY | libc::O_DIRECTORY, no_links)
            .or_else(|_| sys::openat2(root, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0))?;
        let pfd = parent.as_raw_fd();
        let before = fstatat(pfd, "", 0)?;
        self.counter += 1;
        let name = cstr(&format!(
            ".kiln-proc-{}-{}",
            std::process::id(),
            self.counter
        ))?;
        // SAFETY: mkdirat/unlinkat with a NUL-terminated name under our fd.
        if unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o555) } != 0 {
            return Err(Errno::last());
        }
        let opened = sys::openat2(
            pfd,
            &name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            RESOLVE_STRICT,
        );
        // SAFETY: as above.
        let removed = unsafe { libc::unlinkat(pfd, name.as_ptr(), libc::AT_REMOVEDIR) };
        let times = [
            libc::timespec {
                tv_sec: before.st_atime,
                tv_nsec: before.st_atime_nsec,
            },
            libc::timespec {
                tv_sec: before.st_mtime,
                tv_nsec: before.st_mtime_nsec,
            },
        ];
        // SAFETY: futimens with two timespecs.
        unsafe { libc::futimens(pfd, times.as_ptr()) };
        let ph = opened?;
        if removed != 0 {
            // The step put something in it meanwhile: not a usable placeholder.
            return Err(Errno::EAGAIN);
        }
        let id = super::procfs::file_id(ph.as_raw_fd(), "", 0)?;
        Ok((ph, id))
    }
}

/// Splits `rel` under `dirfd` into an opened parent directory (none when `rel` has one
/// component or none) and the final name, opened strictly beneath `dirfd`.
fn split(c: &mut Caller, dirfd: RawFd, rel: &[String]) -> Result<(Option<OwnedFd>, String), Errno> {
    match rel {
        [] => Ok((None, String::new())),
        [name] => Ok((None, name.clone())),
        [parent @ .., name] => {
            let p = cstr(&parent.join("/"))?;
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            let pfd = c.as_caller(|| sys::openat2(dirfd, &p, flags, RESOLVE_STRICT))?;
            Ok((Some(pfd), name.clone()))
        }
    }
}

fn statx(dirfd: RawFd, name: &str, flags: i32, mask: u32) -> Result<[u8; 256], Errno> {
    let c = cstr(name)?;
    let keep = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_TYPE | libc::AT_NO_AUTOMOUNT;
    let mut flags = flags & keep;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    let mut buf = [0u8; 256];
    // SAFETY: statx writes at most sizeof(struct statx) = 256 bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            dirfd,
            c.as_ptr(),
            flags,
            mask,
            buf.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(buf)
}

fn faccessat(dirfd: RawFd, name: &str, mode: i32) -> Result<(), Errno> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: faccessat2 with a NUL-terminated name.
    let r = unsafe { libc::syscall(libc::SYS_faccessat2, dirfd, c.as_ptr(), mode, flags) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

fn readlinkat(dirfd: RawFd, name: &str) -> Result<String, Errno> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: readlinkat writes at most buf.len() bytes.
    let n = unsafe { libc::readlinkat(dirfd, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(Errno::last());
    }
    buf.truncate(n as usize);
    String::from_utf8(buf).map_err(|_| Errno::EACCES)
}
