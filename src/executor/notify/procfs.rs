//! The emulation of the step's path syscalls under `/proc` and `/dev`: decoding a
//! notification, applying [`super::policy`], and doing the operation on the host.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

use super::creds::{Creds, Ids};
use super::policy::{self, Dev, Op, PidRule, Target, Who};
use super::sys::{self, Listener, Mem, Notif, RESOLVE_STRICT};
use super::NotifyError;

/// What the supervisor answers to a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// Let the kernel run the syscall.
    Continue,
    /// Fail it with this errno.
    Err(Errno),
    /// Return this value.
    Val(i64),
    /// Already answered (`SECCOMP_ADDFD_FLAG_SEND`).
    Sent,
}

impl From<Errno> for Reply {
    fn from(e: Errno) -> Reply {
        Reply::Err(e)
    }
}

/// Where a path syscall wants its result.
#[derive(Debug, Clone, Copy)]
pub(super) enum Out {
    /// Nothing but the return value (opens, access checks).
    None,
    /// A `struct stat` at this address.
    Stat(u64),
    /// A `struct statx` at this address, with the caller's flags and mask.
    Statx { addr: u64, flags: i32, mask: u32 },
    /// A link target into a buffer of this size.
    Link { addr: u64, size: i64 },
}

/// A decoded path syscall.
#[derive(Debug, Clone, Copy)]
pub(super) struct PathCall {
    pub dirfd: i32,
    pub path: u64,
    pub op: Op,
    pub out: Out,
}

/// The placeholder directories given to the step instead of host `/proc` directories.
pub(super) const MAX_PLACEHOLDERS: usize = 256;

/// A placeholder the step holds, and the host directory it stands for.
#[derive(Debug)]
pub(super) struct Placeholder {
    /// Device and inode of the placeholder directory (unique: it is removed, and held open
    /// by `ours`, so the inode is not reused).
    pub id: (u64, u64),
    /// The supervisor's own fd of the placeholder, which keeps its inode alive.
    pub _held: OwnedFd,
    /// The host directory, read for `getdents64`.
    pub host: OwnedFd,
    /// `true` for `/proc` itself: the listing keeps only the step's pids.
    pub proc_root: bool,
    /// The directory's path as the step names it (`/proc/<pid>/fd`), for relative lookups.
    pub base: String,
}

/// The supervisor's state for one step.
#[derive(Debug)]
pub(super) struct Emu {
    /// The step root as the host names it, canonical, without a trailing slash.
    pub root: String,
    pub root_id: (u64, u64),
    pub root_fd: OwnedFd,
    pub proc_fd: OwnedFd,
    pub proc_dev: u64,
    pub dev_fd: OwnedFd,
    pub placeholders: VecDeque<Placeholder>,
    /// Names placeholders uniquely.
    pub counter: u64,
}

/// Device and inode of an fd (or of `name` under it).
pub(super) fn file_id(dirfd: RawFd, name: &str, flags: i32) -> Result<(u64, u64), Errno> {
    let st = fstatat(dirfd, name, flags)?;
    Ok((st.st_dev, st.st_ino))
}

pub(super) fn fstatat(dirfd: RawFd, name: &str, flags: i32) -> Result<libc::stat, Errno> {
    let c = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let flags = if name.is_empty() {
        flags | libc::AT_EMPTY_PATH
    } else {
        flags
    };
    // SAFETY: an all-zero stat is valid; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated name and out pointer.
    if unsafe { libc::fstatat(dirfd, c.as_ptr(), &mut st, flags) } < 0 {
        return Err(Errno::last());
    }
    Ok(st)
}

fn open_dir(path: &str, flags: i32) -> Result<OwnedFd, NotifyError> {
    let c = CString::new(path).map_err(|_| NotifyError::sys("opening", Errno::EINVAL))?;
    sys::openat2(libc::AT_FDCWD, &c, flags | libc::O_DIRECTORY, 0)
        .map_err(|e| NotifyError::sys("opening a directory for the supervisor", e))
}

/// `name` as a C string (paths from policy never hold NUL, but a host readlink might).
fn cstr(name: &str) -> Result<CString, Errno> {
    CString::new(name).map_err(|_| Errno::EINVAL)
}

/// The caller of one notification, with its memory and credentials loaded on demand.
pub(super) struct Caller {
    pub n: Notif,
    creds: Option<Creds>,
}

impl Caller {
    pub fn new(n: Notif) -> Caller {
        Caller { n, creds: None }
    }

    pub fn tid(&self) -> i32 {
        self.n.pid
    }

    pub fn creds(&mut self) -> Result<&Creds, Errno> {
        if self.creds.is_none() {
            self.creds = Some(Creds::of(self.n.pid)?);
        }
        self.creds.as_ref().ok_or(Errno::ESRCH)
    }

    /// Runs `f` with the caller's ids on this thread.
    pub fn as_caller<T>(&mut self, f: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
        let ids = Ids::assume(self.creds()?)?;
        let r = f();
        drop(ids);
        r
    }

    /// Runs `f` as the supervisor, and once more with the caller's ids when the kernel
    /// refused (a non-root caller's `/proc` entries need ptrace access to it).
    pub fn try_root<T>(&mut self, f: impl Fn() -> Result<T, Errno>) -> Result<T, Errno> {
        match f() {
            Err(Errno::EACCES | Errno::EPERM) => self.as_caller(f),
            r => r,
        }
    }

    /// The caller's memory, valid only while the notification is (check after opening).
    pub fn mem(&mut self) -> Result<Mem, Errno> {
        let tid = self.tid();
        self.try_root(|| Mem::open(tid))
    }
}

impl Emu {
    /// Prepares the emulation for the step whose root is `root`.
    pub fn new(root: &Path) -> Result<Emu, NotifyError> {
        let root = root
            .canonicalize()
            .map_err(|e| NotifyError::sys("resolving the step root", e))?;
        let root_str = root
            .to_str()
            .ok_or_else(|| NotifyError::sys("the step root is not UTF-8", Errno::EINVAL))?
            .trim_end_matches('/')
            .to_string();
        let root_fd = open_dir(
            if root_str.is_empty() { "/" } else { &root_str },
            libc::O_PATH,
        )?;
        let proc_fd = open_dir("/proc", libc::O_PATH)?;
        let dev_fd = open_dir("/dev", libc::O_PATH)?;
        let root_id = file_id(root_fd.as_raw_fd(), "", 0)
            .map_err(|e| NotifyError::sys("stat of the step root", e))?;
        let proc_dev = file_id(proc_fd.as_raw_fd(), "", 0)
            .map_err(|e| NotifyError::sys("stat of /proc", e))?
            .0;
        Ok(Emu {
            root: root_str,
            root_id,
            root_fd,
            proc_fd,
            proc_dev,
            dev_fd,
            placeholders: VecDeque::new(),
            counter: 0,
        })
    }

    /// A host path as the step sees it, when it lies in the root.
    pub fn strip_root(&self, host: &str) -> Option<String> {
        if self.root.is_empty() {
            return Some(host.to_string());
        }
        let rest = host.strip_prefix(&self.root)?;
        if rest.is_empty() {
            Some("/".to_string())
        } else if rest.starts_with('/') {
            Some(rest.to_string())
        } else {
            None
        }
    }

    /// Whether the process of the `/proc/<pid>` directory fd belongs to the step: its root
    /// is the step's root. Checked with the target's own ids (ptrace access to its `root`).
    pub fn is_member(&self, piddir: RawFd) -> bool {
        let Some(creds) = read_at(piddir, "status")
            .ok()
            .and_then(|t| Creds::parse(&t))
        else {
            return false;
        };
        let Ok(ids) = Ids::assume(&creds) else {
            return false;
        };
        let id = file_id(piddir, "root", 0);
        drop(ids);
        id == Ok(self.root_id)
    }

    /// The `/proc/<pid>` directory (`O_PATH`), bound to that process even if its pid is
    /// reused later.
    pub fn piddir(&self, pid: i32) -> Result<OwnedFd, Errno> {
        let name = cstr(&pid.to_string())?;
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        sys::openat2(self.proc_fd.as_raw_fd(), &name, flags, RESOLVE_STRICT)
    }

    /// Answers one path syscall.
    pub fn path_call(&mut self, l: &Listener, c: &mut Caller, pc: PathCall) -> Reply {
        let Ok(mem) = c.mem() else {
            return Reply::Continue;
        };
        if !l.id_valid(c.n.id) {
            return Reply::Continue;
        }
        let raw = match mem.read_cstr(pc.path, policy::PATH_MAX) {
            Ok(p) => p,
            Err(_) => return Reply::Continue,
        };
        let base = if raw.first() == Some(&b'/') {
            String::from("/")
        } else if pc.dirfd == libc::AT_FDCWD {
            match self.caller_cwd(c) {
                Some(b) => b,
                None => return Reply::Continue,
            }
        } else {
            match self.find_placeholder(c, pc.dirfd) {
                Some(i) => self.placeholders[i].base.clone(),
                None => return Reply::Continue,
            }
        };
        let Some(comps) = policy::normalize(&base, &raw) else {
            return Reply::Continue;
        };
        match policy::classify(&comps, pc.op) {
            Target::Continue => Reply::Continue,
            Target::Refuse(e) => Reply::Err(e),
            Target::ProcRoot => self.perform(l, c, &mem, &pc, Base::Proc, &[]),
            Target::Global(rel) => self.perform(l, c, &mem, &pc, Base::Proc, &rel),
            Target::Pid { who, tail } => self.pid_target(l, c, &mem, &pc, who, tail),
            Target::Dev(d) => self.dev_target(l, c, &mem, &pc, d, &comps),
        }
    }

    /// The caller's working directory as the step names it.
    fn caller_cwd(&self, c: &mut Caller) -> Option<String> {
        let link = format!("/proc/{}/cwd", c.tid());
        let host = c
            .try_root(|| std::fs::read_link(&link).map_err(sys::io_errno))
            .ok()?;
        self.strip_root(host.to_str()?)
    }

    fn pid_target(
        &mut self,
        l: &Listener,
        c: &mut Caller,
        mem: &Mem,
        pc: &PathCall,
        who: Who,
        tail: Vec<String>,
    ) -> Reply {
        let tgid = match c.creds() {
            Ok(cr) => cr.tgid,
            Err(e) => return e.into(),
        };
        let (pid, tail) = match who {
            Who::Caller => (tgid, tail),
            Who::CallerThread => {
                let mut t = vec!["task".to_string(), c.tid().to_string()];
                t.extend(tail);
                (tgid, t)
            }
            Who::Pid(p) => (p, tail),
        };
        let piddir = match self.piddir(pid) {
            Ok(d) => d,
            Err(_) => return Errno::ENOENT.into(),
        };
        let own = pid == tgid;
        if !own && !self.is_member(piddir.as_raw_fd()) {
            // Not the step's: as if it did not exist, as in a PID namespace.
            return Errno::ENOENT.into();
        }
        match policy::pid_rule(&tail, own, pc.op) {
            PidRule::Allow => self.perform(l, c, mem, pc, Base::Pid(pid, &piddir), &tail),
            PidRule::Link => self.read_link(c, mem, pc, piddir.as_raw_fd(), &tail),
            PidRule::DupFd(fd) => self.reopen_fd(l, c, pc, tgid, fd),
            PidRule::Refuse(e) => e.into(),
        }
    }

    fn dev_target(
        &mut self,
        l: &Listener,
        c: &mut Caller,
        mem: &Mem,
        pc: &PathCall,
        d: Dev,
        comps: &[String],
    ) -> Reply {
        let rel = comps.join("/");
        let in_root = self.in_root(&rel);
        match d {
            Dev::Node(_) if in_root != InRoot::Missing => Reply::Continue,
            Dev::Fd(_) if in_root == InRoot::Present => Reply::Continue,
            Dev::Node("tty") => match caller_has_ctty(c.tid()) {
                Ok(true) => Reply::Continue,
                Ok(false) => Errno::ENXIO.into(),
                Err(e) => e.into(),
            },
            Dev::Node(name) => self.dev_node(l, c, mem, pc, name),
            Dev::Fd(fd) => {
                let tgid = match c.creds() {
                    Ok(cr) => cr.tgid,
                    Err(e) => return e.into(),
                };
                match pc.op {
                    Op::Open(_) => self.reopen_fd(l, c, pc, tgid, fd),
                    Op::Readlink => {
                        let target = format!("/proc/self/fd/{fd}");
                        write_link(mem, pc, target.as_bytes())
                    }
                    _ => {
                        let piddir = match self.piddir(tgid) {
                            Ok(p) => p,
                            Err(e) => return e.into(),
                        };
                        let tail = ["fd".to_string(), fd.to_string()];
                        self.perform(l, c, mem, pc, Base::Pid(tgid, &piddir), &tail)
                    }
                }
            }
        }
    }

    /// Whether `rel` exists in the root (resolved inside it), and as what.
    fn in_root(&self, rel: &str) -> InRoot {
        let Ok(name) = cstr(rel) else {
            return InRoot::Present;
        };
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        match sys::openat2(
            self.root_fd.as_raw_fd(),
            &name,
            flags,
            libc::RESOLVE_IN_ROOT,
        ) {
            Err(Errno::ENOENT) => InRoot::Missing,
            Err(_) => InRoot::Present,
            Ok(fd) => match fstatat(fd.as_raw_fd(), "", 0) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => InRoot::Symlink,
                _ => InRoot::Present,
            },
        }
    }

    fn dev_node(
        &mut self,
        l: &Listener,
        c: &mut Caller,
        mem: &Mem,
        pc: &PathCall,
        name: &str,
    ) -> Reply {
        let dev = self.dev_fd.as_raw_fd();
        match pc.op {
            Op::Open(flags) => {
                let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_APPEND | libc::O_NOCTTY;
                let fd =
                    c.as_caller(|| sys::openat2(dev, &cstr(name)?, flags & keep, RESOLVE_STRICT));
                match fd {
                    Ok(fd) => addfd(l, c, &fd, flags),
                    Err(e) => e.into(),
                }
            }
            Op::Readlink => Errno::EINVAL.into(),
            _ => self.stat_or_access(c, mem, pc, dev, name),
        }
    }
}

/// Which directory a path is relative to.
#[derive(Clone, Copy)]
pub(super) enum Base<'a> {
    /// The host's `/proc`.
    Proc,
    /// `/proc/<pid>`, through its directory fd.
    Pid(i32, &'a OwnedFd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InRoot {
    Missing,
    Symlink,
    Present,
}

/// Reads a small file under a directory fd.
pub(super) fn read_at(dirfd: RawFd, name: &str) -> Result<String, Errno> {
    use std::io::Read;
    let fd = sys::openat2(dirfd, &cstr(name)?, libc::O_RDONLY, RESOLVE_STRICT)?;
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(64 * 1024)
        .read_to_string(&mut s)
        .map_err(sys::io_errno)?;
    Ok(s)
}

/// Whether task `tid` has a controlling terminal (field 7 of its `stat`).
fn caller_has_ctty(tid: i32) -> Result<bool, Errno> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).map_err(sys::io_errno)?;
    let after = stat.rsplit_once(')').map(|(_, a)| a).ok_or(Errno::EIO)?;
    // state ppid pgrp session tty_nr
    let tty: i64 = after
        .split_whitespace()
        .nth(4)
        .and_then(|t| t.parse().ok())
        .ok_or(Errno::EIO)?;
    Ok(tty != 0)
}

/// Completes the call by installing `fd` in the caller (honouring its `O_CLOEXEC`).
pub(super) fn addfd(l: &Listener, c: &Caller, fd: &OwnedFd, flags: i32) -> Reply {
    match l.addfd_send(c.n.id, fd.as_fd(), flags & libc::O_CLOEXEC != 0) {
        Ok(_) => Reply::Sent,
        Err(e) => e.into(),
    }
}

/// Writes a link target into the caller's buffer, truncated as `readlink` does.
pub(super) fn write_link(mem: &Mem, pc: &PathCall, target: &[u8]) -> Reply {
    let Out::Link { addr, size } = pc.out else {
        return Errno::EINVAL.into();
    };
    if size <= 0 {
        return Errno::EINVAL.into();
    }
    let n = target.len().min(size as usize);
    match mem.write(addr, &target[..n]) {
        Ok(()) => Reply::Val(n as i64),
        Err(e) => e.into(),
    }
}
