//! The notification filter: which syscalls go to the supervisor, its installation in the
//! child (async-signal-safe), and the hand-over of the listener fd to the parent.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libc::{sock_filter, sock_fprog};
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::NotifyError;

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
#[cfg(target_arch = "x86_64")]
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_NOTIF: u32 = libc::SECCOMP_RET_USER_NOTIF;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
#[cfg(target_arch = "x86_64")]
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

/// The syscalls the supervisor answers.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) fn intercepted() -> Vec<i64> {
    #[allow(unused_mut)]
    let mut v = vec![
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_readlinkat,
        libc::SYS_getdents64,
        libc::SYS_kill,
        libc::SYS_tkill,
        libc::SYS_tgkill,
        libc::SYS_pidfd_send_signal,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_open,
        libc::SYS_access,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_readlink,
    ]);
    v
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The BPF program: foreign architectures are killed (a signal syscall by another numbering
/// would not be seen), x32 calls refused, the intercepted syscalls notified, the rest allowed.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) fn program() -> Vec<sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, NATIVE_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, RET_EPERM),
    ]);
    let nrs = intercepted();
    let n = nrs.len();
    for (i, nr) in nrs.into_iter().enumerate() {
        // Skip the remaining comparisons and the ALLOW to reach the NOTIF at the end.
        let to_notif = (n - 1 - i + 1) as u8;
        p.push(jump(BPF_JEQ_K, nr as u32, to_notif, 0));
    }
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p.push(stmt(BPF_RET_K, RET_NOTIF));
    p
}

/// The seccomp user-notification filter of a step, built in the parent before fork.
#[derive(Debug, Clone)]
pub struct Filter {
    prog: Vec<sock_filter>,
}

impl Filter {
    /// Builds the BPF program (allocates: call it before forking).
    pub fn new() -> Result<Filter, NotifyError> {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            Ok(Filter { prog: program() })
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        Err(NotifyError::UnsupportedArch)
    }

    /// The program's instructions (for tests and diagnostics).
    pub fn instructions(&self) -> &[sock_filter] {
        &self.prog
    }

    /// Installs the filter in the calling (child) process and sends its listener fd over
    /// `sock` with `SCM_RIGHTS`, then closes the child's copy. Async-signal-safe: raw
    /// syscalls only, no allocation. `no_new_privs` must be set first (or the caller holds
    /// `CAP_SYS_ADMIN`). From now on the intercepted syscalls block until the parent's
    /// [`super::Supervisor`] answers them.
    pub fn install_in_child(&self, sock: RawFd) -> Result<(), Errno> {
        let fprog = sock_fprog {
            len: self.prog.len() as u16,
            filter: self.prog.as_ptr() as *mut sock_filter,
        };
        // SAFETY: seccomp(2) with a valid sock_fprog that outlives the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &fprog as *const sock_fprog,
            )
        };
        if fd < 0 {
            return Err(Errno::last());
        }
        let fd = fd as RawFd;
        let sent = send_fd(sock, fd);
        // SAFETY: closing the listener fd this function just received from the kernel.
        unsafe { libc::close(fd) };
        sent
    }
}

/// A control-message buffer for one fd, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends `fd` over the unix socket `sock` (async-signal-safe).
fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), Errno> {
    let mut byte = [b'L'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = CmsgBuf([0; 64]);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` (<= 64) bytes of an aligned buffer; the first
    // header fits, and CMSG_DATA of it has room for one fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(Errno::EINVAL);
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    loop {
        // SAFETY: sendmsg with the message built above.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
}

/// Receives the step's listener fd from the parent's end of the socketpair.
pub fn recv_listener(sock: &OwnedFd) -> Result<OwnedFd, NotifyError> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            r => break r.map_err(|e| NotifyError::sys("receiving the seccomp listener fd", e))?,
        }
    };
    let mut first = None;
    for c in msg
        .cmsgs()
        .map_err(|e| NotifyError::sys("receiving the seccomp listener fd", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for us.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if first.is_none() {
                    first = Some(owned);
                }
            }
        }
    }
    first.ok_or(NotifyError::NoListener)
}
