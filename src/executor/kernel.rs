//! The seam between container setup logic and the kernel: one trait for every call the
//! container's first process makes, a real implementation, and a recording fake for tests.
//!
//! The idea is youki's `syscall` trait: [`super::setup`] decides *what* is mounted where and
//! in which order, and only talks to a [`Kernel`]. Unit tests run that logic against
//! `fake::FakeKernel` (test builds only) without root; the root tests run it against [`RealKernel`].
//!
//! [`RealKernel`] runs in a process created by a raw `clone` from a possibly multithreaded
//! parent, between clone and exec. Locks held by other threads at clone time (malloc's among
//! them) stay locked forever in the child, so every method here is async-signal-safe: raw
//! syscalls or the libc wrappers POSIX lists as async-signal-safe, no allocation, no panics,
//! no `std` I/O. Credentials are changed with raw syscalls, not glibc's `setresuid`, whose
//! "setxid broadcast" would signal the parent's (absent) threads.

use std::ffi::CStr;
use std::os::fd::RawFd;

use libc::{c_char, c_int, c_long, c_ulong, c_void};
use nix::errno::Errno;

/// Result of a kernel call: the errno on failure.
pub type KResult<T> = Result<T, Errno>;

/// The source argument of a mount.
#[derive(Debug, Clone, Copy)]
pub enum Src<'a> {
    /// No source (remounts).
    None,
    /// A name or host path: `"proc"`, `"tmpfs"`, `"/dev/null"`.
    Name(&'a CStr),
    /// An open file: mounted through its `/proc/self/fd/N` magic link.
    Fd(RawFd),
}

/// The type of an opened file, as far as mount decisions need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink (only seen when a path was opened without following it).
    Symlink,
    /// Anything else (devices, fifos, sockets).
    Other,
}

/// The fixed-size record the container process writes to its parent.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// [`Report::READY`] or [`Report::FAILED`].
    pub kind: u32,
    /// Where it failed: see [`super::setup::Stage`].
    pub stage: u32,
    /// The errno of the failure.
    pub errno: i32,
}

impl Report {
    /// The root is set up; waiting for the identity to run as.
    pub const READY: u32 = 1;
    /// A setup step failed; the process exits next.
    pub const FAILED: u32 = 2;
    /// Size on the wire.
    pub const SIZE: usize = std::mem::size_of::<Report>();

    /// The record as bytes.
    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        out[4..8].copy_from_slice(&self.stage.to_ne_bytes());
        out[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        out
    }

    /// Parses the bytes written by [`Report::to_bytes`].
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Report {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Report {
            kind: u32::from_ne_bytes(word(0)),
            stage: u32::from_ne_bytes(word(4)),
            errno: i32::from_ne_bytes(word(8)),
        }
    }
}

/// Most supplementary groups the parent can hand to the container process.
pub const MAX_GROUPS: usize = 256;
/// Longest `HOME` value the parent can hand to the container process.
pub const MAX_HOME: usize = 4096;

/// The identity the parent resolved from the image's `/etc/passwd` and `/etc/group`, sent to
/// the container process once its root is ready. Fixed size, so the child can receive it
/// without allocating.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Go {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Number of valid entries in `groups`.
    pub ngroups: u32,
    /// Number of valid bytes in `home`.
    pub home_len: u32,
    /// Supplementary group ids.
    pub groups: [u32; MAX_GROUPS],
    /// The `HOME` value (no NUL).
    pub home: [u8; MAX_HOME],
}

impl Default for Go {
    fn default() -> Self {
        Go {
            uid: 0,
            gid: 0,
            ngroups: 0,
            home_len: 0,
            groups: [0; MAX_GROUPS],
            home: [0; MAX_HOME],
        }
    }
}

impl Go {
    /// Size on the wire.
    pub const SIZE: usize = std::mem::size_of::<Go>();

    /// The supplementary groups.
    pub fn groups(&self) -> &[u32] {
        let n = (self.ngroups as usize).min(MAX_GROUPS);
        &self.groups[..n]
    }

    /// The home directory bytes.
    pub fn home(&self) -> &[u8] {
        let n = (self.home_len as usize).min(MAX_HOME);
        &self.home[..n]
    }

    /// The record as bytes (it is plain old data).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: Go is repr(C), made only of integers and integer arrays, without padding.
        unsafe { std::slice::from_raw_parts((self as *const Go).cast::<u8>(), Self::SIZE) }
    }

    /// The record as mutable bytes, to read it from a pipe.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; every bit pattern is a valid Go.
        unsafe { std::slice::from_raw_parts_mut((self as *mut Go).cast::<u8>(), Self::SIZE) }
    }
}

/// Every kernel call the container's first process makes between clone and exec.
///
/// Paths are `CStr`s prepared by the parent; `rel` paths are relative to a root fd and are
/// resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`.
pub trait Kernel {
    /// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE)`: nothing mounted from now on propagates
    /// back to the host's mount namespace.
    fn make_mounts_private(&mut self) -> KResult<()>;
    /// `chdir(path)`.
    fn chdir(&mut self, path: &CStr) -> KResult<()>;
    /// `mount(2)` on a host path (only for paths in the executor's own scratch dir).
    fn mount_path(
        &mut self,
        src: Src<'_>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> KResult<()>;
    /// Opens a host directory `O_PATH`.
    fn open_dir(&mut self, path: &CStr) -> KResult<RawFd>;
    /// Opens `rel` below `root` with `O_PATH`, refusing every symlink and any `..` escape.
    fn open_beneath(&mut self, root: RawFd, rel: &CStr) -> KResult<RawFd>;
    /// The type of an open file.
    fn kind(&mut self, fd: RawFd) -> KResult<FileKind>;
    /// The `ST_*` flags `fstatfs` reports for the mount an open file is on.
    fn mount_flags(&mut self, fd: RawFd) -> KResult<u64>;
    /// `mount(2)` onto an open file (through `/proc/self/fd/N`).
    fn mount_fd(
        &mut self,
        src: Src<'_>,
        target: RawFd,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> KResult<()>;
    /// `mkdirat(dir, name, mode)`.
    fn mkdir_at(&mut self, dir: RawFd, name: &CStr, mode: u32) -> KResult<()>;
    /// Creates an empty regular file `name` in `dir` (`O_CREAT | O_EXCL | O_NOFOLLOW`).
    fn create_file_at(&mut self, dir: RawFd, name: &CStr, mode: u32) -> KResult<()>;
    /// `symlinkat(target, dir, name)`.
    fn symlink_at(&mut self, target: &CStr, dir: RawFd, name: &CStr) -> KResult<()>;
    /// `close(fd)`.
    fn close(&mut self, fd: RawFd);
    /// Makes `new_root` the root: `chdir`, `pivot_root(".", ".")`, detach the old root.
    fn pivot_root(&mut self, new_root: &CStr) -> KResult<()>;
    /// `sethostname`.
    fn set_hostname(&mut self, name: &CStr) -> KResult<()>;
    /// Sets `lo` up in the current network namespace.
    fn loopback_up(&mut self) -> KResult<()>;
    /// `prctl(PR_SET_PDEATHSIG, SIGKILL)`.
    fn set_parent_death_signal(&mut self) -> KResult<()>;
    /// `setsid()`, so a terminal's Ctrl-C reaches kiln, not the step.
    fn setsid(&mut self) -> KResult<()>;
    /// Unblocks all signals and resets ignored ones to their default (Rust ignores SIGPIPE,
    /// and ignored dispositions survive exec).
    fn reset_signals(&mut self) -> KResult<()>;
    /// `dup2(from, to)`.
    fn dup2(&mut self, from: RawFd, to: RawFd) -> KResult<()>;
    /// Receives the console (a pty slave from the container's own devpts) from the parent
    /// over the handshake socket, makes it fds 0, 1 and 2 and the controlling terminal.
    fn take_console(&mut self) -> KResult<()>;
    /// `setns(fd, flags)`.
    fn setns(&mut self, fd: RawFd, flags: c_int) -> KResult<()>;
    /// Sends a record to the parent.
    fn report(&mut self, report: Report);
    /// Waits for the parent's go-ahead; `Err` if the parent is gone.
    fn await_go(&mut self, go: &mut Go) -> KResult<()>;
    /// Drops every capability not in `keep` from the bounding set and clears the ambient set.
    fn drop_bounding(&mut self, keep: u64, last_cap: u32) -> KResult<()>;
    /// Installs a seccomp filter.
    fn install_seccomp(&mut self, prog: &[libc::sock_filter]) -> KResult<()>;
    /// `setgroups`.
    fn set_groups(&mut self, gids: &[u32]) -> KResult<()>;
    /// `setresgid(gid, gid, gid)`.
    fn set_gid(&mut self, gid: u32) -> KResult<()>;
    /// `setresuid(uid, uid, uid)`.
    fn set_uid(&mut self, uid: u32) -> KResult<()>;
    /// `capset`: effective = permitted = `caps`, inheritable = 0.
    fn set_caps(&mut self, caps: u64) -> KResult<()>;
    /// Changes directory to `path` resolved inside the (already pivoted) root, refusing magic
    /// links (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` + `fchdir`).
    fn chdir_in_root(&mut self, path: &CStr) -> KResult<()>;
    /// Whether `path` is an executable regular file for the current credentials.
    fn is_executable(&mut self, path: &CStr) -> KResult<()>;
    /// Marks every fd from `first` on close-on-exec (`close_range(CLOSE_RANGE_CLOEXEC)`).
    fn cloexec_from(&mut self, first: u32) -> KResult<()>;
    /// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`; returns only on failure.
    ///
    /// # Safety
    /// `argv` and `envp` are NULL-terminated arrays of valid C strings.
    unsafe fn exec_fd(
        &mut self,
        fd: RawFd,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> Errno;
}

/// The real kernel, as seen from the container's first process.
#[derive(Debug)]
pub struct RealKernel {
    /// Write end of the report pipe.
    pub report_fd: RawFd,
    /// Read end of the go pipe.
    pub go_fd: RawFd,
}

/// `/proc/self/fd/N` formatted into a stack buffer (no allocation).
struct FdPath {
    buf: [u8; 32],
}

impl FdPath {
    fn new(fd: RawFd) -> FdPath {
        const PREFIX: &[u8] = b"/proc/self/fd/";
        let mut buf = [0u8; 32];
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut digits = [0u8; 12];
        let mut n = fd.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 || len == digits.len() {
                break;
            }
        }
        for i in 0..len {
            buf[PREFIX.len() + i] = digits[len - 1 - i];
        }
        FdPath { buf }
    }

    fn as_ptr(&self) -> *const c_char {
        self.buf.as_ptr().cast()
    }
}

fn check(ret: c_long) -> KResult<c_long> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dirfd, path, flags, resolve)`.
pub(crate) fn openat2(dirfd: RawFd, path: &CStr, flags: c_int, resolve: u64) -> KResult<RawFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: path is a valid C string, how a valid open_how of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd as c_long,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    check(ret).map(|fd| fd as RawFd)
}

impl RealKernel {
    fn mount_raw(
        src: *const c_char,
        target: *const c_char,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> KResult<()> {
        // SAFETY: all pointers are NULL or valid C strings.
        let ret = unsafe {
            libc::mount(
                src,
                target,
                opt_ptr(fstype),
                flags,
                opt_ptr(data).cast::<c_void>(),
            )
        };
        check(ret as c_long).map(drop)
    }
}

impl Kernel for RealKernel {
    fn make_mounts_private(&mut self) -> KResult<()> {
        Self::mount_raw(
            std::ptr::null(),
            c"/".as_ptr(),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        )
    }

    fn chdir(&mut self, path: &CStr) -> KResult<()> {
        // SAFETY: valid C string.
        check(unsafe { libc::chdir(path.as_ptr()) } as c_long).map(drop)
    }

    fn mount_path(
        &mut self,
        src: Src<'_>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> KResult<()> {
        let fdp;
        let src_ptr = match src {
            Src::None => std::ptr::null(),
            Src::Name(s) => s.as_ptr(),
            Src::Fd(fd) => {
                fdp = FdPath::new(fd);
                fdp.as_ptr()
            }
        };
        Self::mount_raw(src_ptr, target.as_ptr(), fstype, flags, data)
    }

    fn open_dir(&mut self, path: &CStr) -> KResult<RawFd> {
        // SAFETY: valid C string.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        check(fd as c_long).map(|fd| fd as RawFd)
    }

    fn open_beneath(&mut self, root: RawFd, rel: &CStr) -> KResult<RawFd> {
        openat2(
            root,
            rel,
            libc::O_PATH | libc::O_NOFOLLOW,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        )
    }

    fn kind(&mut self, fd: RawFd) -> KResult<FileKind> {
        // SAFETY: zeroed stat is a valid out-buffer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is an open fd, st a valid buffer.
        check(unsafe { libc::fstat(fd, &mut st) } as c_long)?;
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFREG => FileKind::File,
            libc::S_IFLNK => FileKind::Symlink,
            _ => FileKind::Other,
        })
    }

    fn mount_flags(&mut self, fd: RawFd) -> KResult<u64> {
        // On 64-bit Linux the kernel's struct statfs is glibc's statfs64 (which names
        // f_flags); the raw syscall, as glibc's fstatvfs may read /proc/mounts.
        // SAFETY: zeroed statfs64 is a valid out-buffer.
        let mut st: libc::statfs64 = unsafe { std::mem::zeroed() };
        // SAFETY: fd is an open fd, st a buffer of the size the kernel writes.
        check(unsafe {
            libc::syscall(
                libc::SYS_fstatfs,
                fd as c_long,
                &mut st as *mut libc::statfs64,
            )
        })?;
        Ok(st.f_flags as u64)
    }

    fn mount_fd(
        &mut self,
        src: Src<'_>,
        target: RawFd,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> KResult<()> {
        let target_path = FdPath::new(target);
        let src_fdp;
        let src_ptr = match src {
            Src::None => std::ptr::null(),
            Src::Name(s) => s.as_ptr(),
            Src::Fd(fd) => {
                src_fdp = FdPath::new(fd);
                src_fdp.as_ptr()
            }
        };
        Self::mount_raw(src_ptr, target_path.as_ptr(), fstype, flags, data)
    }

    fn mkdir_at(&mut self, dir: RawFd, name: &CStr, mode: u32) -> KResult<()> {
        // SAFETY: valid fd and C string.
        check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) } as c_long).map(drop)
    }

    fn create_file_at(&mut self, dir: RawFd, name: &CStr, mode: u32) -> KResult<()> {
        // SAFETY: valid fd and C string.
        let fd = unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        };
        let fd = check(fd as c_long)? as RawFd;
        self.close(fd);
        Ok(())
    }

    fn symlink_at(&mut self, target: &CStr, dir: RawFd, name: &CStr) -> KResult<()> {
        // SAFETY: valid fd and C strings.
        check(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) } as c_long).map(drop)
    }

    fn close(&mut self, fd: RawFd) {
        // SAFETY: closing an fd this process owns; errors are irrelevant here.
        unsafe { libc::close(fd) };
    }

    fn pivot_root(&mut self, new_root: &CStr) -> KResult<()> {
        self.chdir(new_root)?;
        // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then
        // drops it, with no put_old directory left behind in the image (runc does the same).
        // SAFETY: valid C strings.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) })?;
        // SAFETY: valid C string.
        check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } as c_long)?;
        self.chdir(c"/")
    }

    fn set_hostname(&mut self, name: &CStr) -> KResult<()> {
        let bytes = name.to_bytes();
        // SAFETY: pointer and length of a valid buffer.
        check(unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) } as c_long).map(drop)
    }

    fn loopback_up(&mut self) -> KResult<()> {
        // SAFETY: plain socket/ioctl/close on a zeroed ifreq naming "lo".
        unsafe {
            let sock = check(
                libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) as c_long,
            )? as RawFd;
            let mut req: libc::ifreq = std::mem::zeroed();
            req.ifr_name[0] = b'l' as c_char;
            req.ifr_name[1] = b'o' as c_char;
            let res = (|| {
                check(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) as c_long)?;
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                check(libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) as c_long)?;
                Ok(())
            })();
            libc::close(sock);
            res
        }
    }

    fn set_parent_death_signal(&mut self) -> KResult<()> {
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong) } as c_long)
            .map(drop)
    }

    fn setsid(&mut self) -> KResult<()> {
        // SAFETY: no arguments.
        check(unsafe { libc::setsid() } as c_long).map(drop)
    }

    fn reset_signals(&mut self) -> KResult<()> {
        // SAFETY: sigaction/sigprocmask are async-signal-safe; the structs are zeroed
        // (empty masks, SIG_DFL handler).
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) as c_long)?;
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            for sig in 1..libc::SIGRTMIN() {
                if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                    continue;
                }
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
                {
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
        }
        Ok(())
    }

    fn dup2(&mut self, from: RawFd, to: RawFd) -> KResult<()> {
        // SAFETY: plain fd operation.
        check(unsafe { libc::dup2(from, to) } as c_long).map(drop)
    }

    fn take_console(&mut self) -> KResult<()> {
        // One byte carrying one fd (SCM_RIGHTS); the control buffer lives on the stack.
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        #[repr(C, align(8))]
        struct Cmsg([u8; 64]);
        let mut cbuf = Cmsg([0; 64]);
        // SAFETY: zeroed msghdr is valid; the pointers below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) } as _;
        loop {
            // SAFETY: valid msghdr.
            let n = unsafe { libc::recvmsg(self.go_fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n < 0 && Errno::last() == Errno::EINTR {
                continue;
            }
            if n <= 0 {
                return Err(if n == 0 { Errno::EPIPE } else { Errno::last() });
            }
            break;
        }
        // SAFETY: the kernel filled msg; CMSG_FIRSTHDR/CMSG_DATA walk our own buffer.
        let fd = unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null()
                || (*c).cmsg_level != libc::SOL_SOCKET
                || (*c).cmsg_type != libc::SCM_RIGHTS
            {
                return Err(Errno::EBADMSG);
            }
            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<c_int>())
        };
        for target in 0..3 {
            self.dup2(fd, target)?;
        }
        self.close(fd);
        // SAFETY: ioctl with an integer argument; we are a session leader without a terminal.
        check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } as c_long).map(drop)
    }

    fn setns(&mut self, fd: RawFd, flags: c_int) -> KResult<()> {
        // SAFETY: integer arguments.
        check(unsafe { libc::setns(fd, flags) } as c_long).map(drop)
    }

    fn report(&mut self, report: Report) {
        let bytes = report.to_bytes();
        // A 12-byte write to a pipe is atomic (PIPE_BUF); if the parent is gone there is
        // nobody to tell.
        // SAFETY: valid buffer.
        unsafe { libc::write(self.report_fd, bytes.as_ptr().cast(), bytes.len()) };
    }

    fn await_go(&mut self, go: &mut Go) -> KResult<()> {
        let buf = go.as_bytes_mut();
        let mut off = 0;
        while off < buf.len() {
            let rest = &mut buf[off..];
            // SAFETY: valid buffer of rest.len() bytes.
            let n = unsafe { libc::read(self.go_fd, rest.as_mut_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                // The parent closed the pipe (or died): do not run unsupervised.
                return Err(Errno::EPIPE);
            }
            off += n as usize;
        }
        Ok(())
    }

    fn drop_bounding(&mut self, keep: u64, last_cap: u32) -> KResult<()> {
        for cap in 0..=last_cap.min(63) {
            if keep & (1u64 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments.
            let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong) };
            if ret < 0 && Errno::last() != Errno::EINVAL {
                return Err(Errno::last());
            }
        }
        // SAFETY: prctl with integer arguments.
        let ret = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
            )
        };
        check(ret as c_long).map(drop)
    }

    fn install_seccomp(&mut self, prog: &[libc::sock_filter]) -> KResult<()> {
        let fprog = libc::sock_fprog {
            len: prog.len() as libc::c_ushort,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: fprog points at a valid filter array for the duration of the call.
        check(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as c_long,
                0 as c_long,
                &fprog as *const libc::sock_fprog,
            )
        })
        .map(drop)
    }

    fn set_groups(&mut self, gids: &[u32]) -> KResult<()> {
        // SAFETY: pointer and length of a valid gid array; raw syscall on purpose (see module
        // docs).
        check(unsafe { libc::syscall(libc::SYS_setgroups, gids.len() as c_long, gids.as_ptr()) })
            .map(drop)
    }

    fn set_gid(&mut self, gid: u32) -> KResult<()> {
        // SAFETY: integer arguments; raw syscall on purpose.
        check(unsafe {
            libc::syscall(
                libc::SYS_setresgid,
                gid as c_long,
                gid as c_long,
                gid as c_long,
            )
        })
        .map(drop)
    }

    fn set_uid(&mut self, uid: u32) -> KResult<()> {
        // SAFETY: integer arguments; raw syscall on purpose.
        check(unsafe {
            libc::syscall(
                libc::SYS_setresuid,
                uid as c_long,
                uid as c_long,
                uid as c_long,
            )
        })
        .map(drop)
    }

    fn set_caps(&mut self, caps: u64) -> KResult<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let lo = caps as u32;
        let hi = (caps >> 32) as u32;
        let data = [
            Data {
                effective: lo,
                permitted: lo,
                inheritable: 0,
            },
            Data {
                effective: hi,
                permitted: hi,
                inheritable: 0,
            },
        ];
        // SAFETY: header and a two-element data array, as capset v3 expects.
        check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
    }

    fn chdir_in_root(&mut self, path: &CStr) -> KResult<()> {
        let fd = openat2(
            libc::AT_FDCWD,
            path,
            libc::O_PATH | libc::O_DIRECTORY,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        )?;
        // SAFETY: fd was just opened.
        let ret = unsafe { libc::fchdir(fd) };
        let res = check(ret as c_long).map(drop);
        self.close(fd);
        res
    }

    fn is_executable(&mut self, path: &CStr) -> KResult<()> {
        // SAFETY: zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and buffer.
        check(unsafe { libc::stat(path.as_ptr(), &mut st) } as c_long)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(Errno::EACCES);
        }
        // Real and effective ids are equal by now, so access(2) answers for the step's user.
        // SAFETY: valid C string.
        check(unsafe { libc::access(path.as_ptr(), libc::X_OK) } as c_long).map(drop)
    }

    fn cloexec_from(&mut self, first: u32) -> KResult<()> {
        // SAFETY: integer arguments.
        check(unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as c_long,
                c_long::from(u32::MAX),
                libc::CLOSE_RANGE_CLOEXEC as c_long,
            )
        })
        .map(drop)
    }

    unsafe fn exec_fd(
        &mut self,
        fd: RawFd,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> Errno {
        // SAFETY: the caller guarantees argv/envp; "" with AT_EMPTY_PATH execs the fd itself.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd as c_long,
                c"".as_ptr(),
                argv,
                envp,
                libc::AT_EMPTY_PATH as c_long,
            )
        };
        Errno::last()
    }
}

/// A [`Kernel`] that records calls with logical paths instead of making them.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Records every call as a line such as `mount proc -> /proc type=proc flags=0xe`.
    #[derive(Default)]
    pub struct FakeKernel {
        /// The recorded calls.
        pub calls: Vec<String>,
        /// In-root paths (no leading `/`) that are symlinks: opening them fails with ELOOP.
        pub symlinks: HashSet<String>,
        /// In-root paths that do not exist: opening them fails with ENOENT.
        pub missing: HashSet<String>,
        /// In-root paths that are regular files (everything else opens as a directory).
        pub files: HashSet<String>,
        /// Calls (by their first word) that fail with the given errno.
        pub fail: HashMap<&'static str, Errno>,
        /// The identity handed out by `await_go`.
        pub go: Go,
        /// `fstatfs` flags of the mounts at in-root paths (others: none).
        pub statfs: HashMap<String, u64>,
        fds: HashMap<RawFd, String>,
        next_fd: RawFd,
    }

    impl FakeKernel {
        fn path_of(&self, fd: RawFd) -> String {
            self.fds
                .get(&fd)
                .cloned()
                .unwrap_or_else(|| format!("fd{fd}"))
        }

        fn rec(&mut self, what: &'static str, line: String) -> KResult<()> {
            self.calls.push(line);
            match self.fail.get(what) {
                Some(e) => Err(*e),
                None => Ok(()),
            }
        }

        fn src(&self, src: Src<'_>) -> String {
            match src {
                Src::None => "none".into(),
                Src::Name(s) => s.to_string_lossy().into_owned(),
                Src::Fd(fd) => self.path_of(fd),
            }
        }

        /// The recorded calls whose line starts with `prefix`.
        pub fn calls_starting(&self, prefix: &str) -> Vec<&str> {
            self.calls
                .iter()
                .filter(|c| c.starts_with(prefix))
                .map(String::as_str)
                .collect()
        }
    }

    fn s(c: &CStr) -> String {
        c.to_string_lossy().into_owned()
    }

    fn opt(c: Option<&CStr>) -> String {
        c.map_or_else(|| "-".into(), s)
    }

    impl Kernel for FakeKernel {
        fn make_mounts_private(&mut self) -> KResult<()> {
            self.rec("private", "private /".into())
        }
        fn chdir(&mut self, path: &CStr) -> KResult<()> {
            self.rec("chdir", format!("chdir {}", s(path)))
        }
        fn mount_path(
            &mut self,
            src: Src<'_>,
            target: &CStr,
            fstype: Option<&CStr>,
            flags: c_ulong,
            data: Option<&CStr>,
        ) -> KResult<()> {
            let line = format!(
                "mount {} -> {} type={} flags={:#x} data={}",
                self.src(src),
                s(target),
                opt(fstype),
                flags,
                opt(data)
            );
            self.rec("mount", line)
        }
        fn open_dir(&mut self, path: &CStr) -> KResult<RawFd> {
            self.next_fd += 1;
            let fd = 100 + self.next_fd;
            self.fds.insert(fd, "/".into());
            self.rec("open_dir", format!("open_dir {}", s(path)))?;
            Ok(fd)
        }
        fn open_beneath(&mut self, root: RawFd, rel: &CStr) -> KResult<RawFd> {
            let rel = s(rel);
            let base = self.path_of(root);
            let full = if rel == "." {
                base
            } else if base == "/" {
                format!("/{rel}")
            } else {
                format!("{base}/{rel}")
            };
            let key = full.trim_start_matches('/').to_string();
            if self
                .symlinks
                .iter()
                .any(|l| key == *l || key.starts_with(&format!("{l}/")))
            {
                return Err(Errno::ELOOP);
            }
            if self.missing.contains(&key) {
                return Err(Errno::ENOENT);
            }
            self.next_fd += 1;
            let fd = 100 + self.next_fd;
            self.fds.insert(fd, full);
            Ok(fd)
        }
        fn kind(&mut self, fd: RawFd) -> KResult<FileKind> {
            let p = self.path_of(fd);
            Ok(if self.files.contains(p.trim_start_matches('/')) {
                FileKind::File
            } else {
                FileKind::Dir
            })
        }
        fn mount_fd(
            &mut self,
            src: Src<'_>,
            target: RawFd,
            fstype: Option<&CStr>,
            flags: c_ulong,
            data: Option<&CStr>,
        ) -> KResult<()> {
            let line = format!(
                "mount {} -> {} type={} flags={:#x} data={}",
                self.src(src),
                self.path_of(target),
                opt(fstype),
                flags,
                opt(data)
            );
            self.rec("mount", line)
        }
        fn mount_flags(&mut self, fd: RawFd) -> KResult<u64> {
            let p = self.path_of(fd);
            Ok(self
                .statfs
                .get(p.trim_start_matches('/'))
                .copied()
                .unwrap_or(0))
        }
        fn mkdir_at(&mut self, dir: RawFd, name: &CStr, mode: u32) -> KResult<()> {
            let line = format!("mkdir {}/{} {:o}", self.path_of(dir), s(name), mode);
            self.rec("mkdir", line)
        }
        fn create_file_at(&mut self, dir: RawFd, name: &CStr, mode: u32) -> KResult<()> {
            let line = format!("create {}/{} {:o}", self.path_of(dir), s(name), mode);
            self.rec("create", line)
        }
        fn symlink_at(&mut self, target: &CStr, dir: RawFd, name: &CStr) -> KResult<()> {
            let line = format!("symlink {}/{} -> {}", self.path_of(dir), s(name), s(target));
            self.rec("symlink", line)
        }
        fn close(&mut self, fd: RawFd) {
            self.fds.remove(&fd);
        }
        fn pivot_root(&mut self, new_root: &CStr) -> KResult<()> {
            self.rec("pivot_root", format!("pivot_root {}", s(new_root)))
        }
        fn set_hostname(&mut self, name: &CStr) -> KResult<()> {
            self.rec("hostname", format!("hostname {}", s(name)))
        }
        fn loopback_up(&mut self) -> KResult<()> {
            self.rec("lo", "lo up".into())
        }
        fn set_parent_death_signal(&mut self) -> KResult<()> {
            self.rec("pdeathsig", "pdeathsig".into())
        }
        fn setsid(&mut self) -> KResult<()> {
            self.rec("setsid", "setsid".into())
        }
        fn reset_signals(&mut self) -> KResult<()> {
            self.rec("signals", "signals reset".into())
        }
        fn dup2(&mut self, from: RawFd, to: RawFd) -> KResult<()> {
            self.rec("dup2", format!("dup2 {from} {to}"))
        }
        fn take_console(&mut self) -> KResult<()> {
            self.rec("console", "take_console".into())
        }
        fn setns(&mut self, fd: RawFd, flags: c_int) -> KResult<()> {
            self.rec("setns", format!("setns {fd} {flags:#x}"))
        }
        fn report(&mut self, report: Report) {
            self.calls.push(format!(
                "report {} {} {}",
                report.kind, report.stage, report.errno
            ));
        }
        fn await_go(&mut self, go: &mut Go) -> KResult<()> {
            *go = self.go;
            self.rec("await_go", "await_go".into())
        }
        fn drop_bounding(&mut self, keep: u64, last_cap: u32) -> KResult<()> {
            self.rec(
                "bounding",
                format!("bounding keep={keep:#x} last={last_cap}"),
            )
        }
        fn install_seccomp(&mut self, prog: &[libc::sock_filter]) -> KResult<()> {
            self.rec("seccomp", format!("seccomp {} insns", prog.len()))
        }
        fn set_groups(&mut self, gids: &[u32]) -> KResult<()> {
            self.rec("setgroups", format!("setgroups {gids:?}"))
        }
        fn set_gid(&mut self, gid: u32) -> KResult<()> {
            self.rec("setgid", format!("setgid {gid}"))
        }
        fn set_uid(&mut self, uid: u32) -> KResult<()> {
            self.rec("setuid", format!("setuid {uid}"))
        }
        fn set_caps(&mut self, caps: u64) -> KResult<()> {
            self.rec("capset", format!("capset {caps:#x}"))
        }
        fn chdir_in_root(&mut self, path: &CStr) -> KResult<()> {
            self.rec("chdir_in_root", format!("chdir_in_root {}", s(path)))
        }
        fn is_executable(&mut self, path: &CStr) -> KResult<()> {
            let p = s(path);
            let found = self.files.contains(p.trim_start_matches('/'));
            self.calls.push(format!("probe {p}"));
            if found {
                Ok(())
            } else {
                Err(Errno::ENOENT)
            }
        }
        fn cloexec_from(&mut self, first: u32) -> KResult<()> {
            self.rec("cloexec", format!("cloexec {first}.."))
        }
        unsafe fn exec_fd(
            &mut self,
            fd: RawFd,
            argv: *const *const c_char,
            _envp: *const *const c_char,
        ) -> Errno {
            let mut args = Vec::new();
            let mut i = 0;
            // SAFETY: the caller guarantees a NULL-terminated argv of C strings.
            unsafe {
                while !(*argv.add(i)).is_null() {
                    args.push(CStr::from_ptr(*argv.add(i)).to_string_lossy().into_owned());
                    i += 1;
                }
            }
            self.calls.push(format!("exec fd{fd} {args:?}"));
            Errno::ENOEXEC
        }
    }
}
