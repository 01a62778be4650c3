//! Thin wrappers of the kernel calls the supervisor makes: the listener's ioctls, the
//! caller's memory, `openat2` and pidfds.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;

/// One notification: the task and its syscall.
#[derive(Debug, Clone, Copy)]
pub(super) struct Notif {
    pub id: u64,
    /// The calling thread's id (in the supervisor's PID namespace).
    pub pid: i32,
    pub nr: i64,
    pub args: [u64; 6],
}

/// The listener fd and the kernel's sizes of its structures.
#[derive(Debug)]
pub(super) struct Listener {
    fd: OwnedFd,
    notif_words: usize,
    resp_words: usize,
}

fn sys_ret(r: libc::c_long) -> Result<libc::c_long, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (linux/seccomp.h; not in the libc crate).
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

impl Listener {
    pub fn new(fd: OwnedFd) -> Result<Listener, Errno> {
        let mut sizes = libc::seccomp_notif_sizes {
            seccomp_notif: 0,
            seccomp_notif_resp: 0,
            seccomp_data: 0,
        };
        // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one seccomp_notif_sizes.
        sys_ret(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_GET_NOTIF_SIZES,
                0,
                &mut sizes as *mut libc::seccomp_notif_sizes,
            )
        })?;
        // Each intercepted call is a round trip between the step's task and the supervisor
        // thread: woken on the current CPU (Linux 6.6+), the other side runs at once instead
        // of waiting for an idle CPU to come out of its halt, several times faster. Older
        // kernels refuse the flag; the round trip is then only slower.
        // SAFETY: SECCOMP_IOCTL_NOTIF_SET_FLAGS reads one u64 flags value (passed by value).
        unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            )
        };
        // Buffers at least as large as the kernel's structures and ours, in u64 words.
        let words = |k: u16, ours: usize| (usize::from(k).max(ours)).div_ceil(8);
        Ok(Listener {
            fd,
            notif_words: words(sizes.seccomp_notif, 80),
            resp_words: words(sizes.seccomp_notif_resp, 24),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// `SECCOMP_IOCTL_NOTIF_RECV` (the buffer must be zeroed, the kernel checks).
    pub fn recv(&self) -> Result<Notif, Errno> {
        let mut buf = vec![0u64; self.notif_words];
        // SAFETY: the buffer holds at least the kernel's seccomp_notif.
        sys_ret(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                buf.as_mut_ptr(),
            )
        } as libc::c_long)?;
        // Layout: id u64 | pid u32, flags u32 | nr i32, arch u32 | ip u64 | args[6] u64.
        let mut args = [0u64; 6];
        args.copy_from_slice(&buf[4..10]);
        Ok(Notif {
            id: buf[0],
            pid: (buf[1] & 0xffff_ffff) as u32 as i32,
            nr: i64::from((buf[2] & 0xffff_ffff) as u32 as i32),
            args,
        })
    }

    /// `SECCOMP_IOCTL_NOTIF_SEND`: `error` is a positive errno or 0; `cont` runs the syscall.
    pub fn send(&self, id: u64, val: i64, error: i32, cont: bool) -> Result<(), Errno> {
        let mut buf = vec![0u64; self.resp_words];
        buf[0] = id;
        buf[1] = val as u64;
        let flags = if cont {
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
        } else {
            0
        };
        buf[2] = u64::from((-error) as u32) | (u64::from(flags) << 32);
        // SAFETY: the buffer holds at least the kernel's seccomp_notif_resp.
        sys_ret(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                buf.as_ptr(),
            )
        } as libc::c_long)
        .map(drop)
    }

    /// `SECCOMP_IOCTL_NOTIF_ID_VALID`: whether the task is still in that syscall.
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: the ioctl reads one u64.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
                &id as *const u64,
            )
        };
        r == 0
    }

    /// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND`: installs `src` in the
    /// caller and completes its syscall with the new fd number.
    pub fn addfd_send(&self, id: u64, src: BorrowedFd<'_>, cloexec: bool) -> Result<i32, Errno> {
        let add = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: src.as_raw_fd() as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: the ioctl reads one seccomp_notif_addfd.
        sys_ret(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD as _,
                &add as *const libc::seccomp_notif_addfd,
            )
        } as libc::c_long)
        .map(|fd| fd as i32)
    }
}

/// A task's memory, through `/proc/<tid>/mem` (bound to its address space when opened).
#[derive(Debug)]
pub(super) struct Mem(File);

impl Mem {
    pub fn open(tid: i32) -> Result<Mem, Errno> {
        let path = format!("/proc/{tid}/mem");
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Mem)
            .map_err(io_errno)
    }

    /// A NUL-terminated string at `addr`, of at most `max` bytes (without the NUL);
    /// `ENAMETOOLONG` when longer. Read page by page, so an unmapped page after the string
    /// does not fail the read.
    pub fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, Errno> {
        if addr == 0 {
            return Err(Errno::EFAULT);
        }
        let mut out = Vec::new();
        let mut at = addr;
        loop {
            let to_page_end = 4096 - (at % 4096) as usize;
            let want = to_page_end.min(max + 1 - out.len());
            let mut chunk = vec![0u8; want];
            let n = self.0.read_at(&mut chunk, at).map_err(io_errno)?;
            if n == 0 {
                return Err(Errno::EFAULT);
            }
            if let Some(nul) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..n]);
            if out.len() > max {
                return Err(Errno::ENAMETOOLONG);
            }
            at = at.checked_add(n as u64).ok_or(Errno::EFAULT)?;
        }
    }

    /// `len` bytes at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        self.0.read_exact_at(&mut buf, addr).map_err(io_errno)?;
        Ok(buf)
    }

    /// Writes all of `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if addr == 0 {
            return Err(Errno::EFAULT);
        }
        self.0.write_all_at(data, addr).map_err(io_errno)
    }
}

/// The errno of an I/O error (EIO when it has none).
pub(super) fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dirfd, path, {flags, resolve})`.
pub(super) fn openat2(
    dirfd: RawFd,
    path: &CStr,
    flags: i32,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 with a NUL-terminated path and a correctly sized open_how.
    let fd = sys_ret(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the kernel returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Resolution inside a `/proc` directory fd: no symlinks, no magic links, no `..` out.
/// (Mount crossings are allowed: Docker binds `/proc/sys` read-only and masks files with
/// mounts over them; the names reached are the policy's either way.)
pub(super) const RESOLVE_STRICT: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// `pidfd_open(pid, 0)`.
pub(super) fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open returns a new fd or fails.
    let fd = sys_ret(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_getfd(pidfd, fd, 0)`: our duplicate of another process's descriptor.
pub(super) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd returns a new fd (close-on-exec) or fails.
    let fd = sys_ret(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: the kernel returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(pidfd, sig, info, flags)`; `info` is 0 or the address of a
/// 128-byte siginfo in this process.
pub(super) fn pidfd_send_signal(
    pidfd: BorrowedFd<'_>,
    sig: i32,
    info: u64,
    flags: u32,
) -> Result<(), Errno> {
    // SAFETY: info is null or points at a live siginfo buffer of the caller's.
    sys_ret(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            info as *const libc::siginfo_t,
            flags,
        )
    })
    .map(drop)
}
