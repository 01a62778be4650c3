//! The supervisor thread: waits on the listener, decodes each notification and answers it.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::policy::Op;
use super::procfs::{Caller, Emu, Out, PathCall, Reply};
use super::sys::{Listener, Notif};
use super::NotifyError;

/// Serves a step's seccomp notifications on a thread until the step is gone or
/// [`Supervisor::stop`] is called (dropping it stops it too).
#[derive(Debug)]
pub struct Supervisor {
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    step_pid: i32,
}

impl Supervisor {
    /// Starts serving `listener` (from [`super::recv_listener`]) for the step whose root
    /// directory is `root` and whose first process is `step_pid`.
    pub fn spawn(
        listener: OwnedFd,
        root: PathBuf,
        step_pid: i32,
    ) -> Result<Supervisor, NotifyError> {
        let listener = Listener::new(listener)
            .map_err(|e| NotifyError::sys("seccomp notification sizes", e))?;
        let emu = Emu::new(&root)?;
        // SAFETY: eventfd returns a new fd or fails.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(NotifyError::sys("eventfd", Errno::last()));
        }
        // SAFETY: a new fd from eventfd.
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let wake_thread = wake
            .try_clone()
            .map_err(|e| NotifyError::sys("duplicating the eventfd", e))?;
        let thread = std::thread::Builder::new()
            .name(format!("kiln-notify-{step_pid}"))
            .spawn(move || serve(&listener, emu, &wake_thread))
            .map_err(|e| NotifyError::sys("starting the supervisor thread", e))?;
        Ok(Supervisor {
            wake: Some(wake),
            thread: Some(thread),
            step_pid,
        })
    }

    /// The step's first process.
    pub fn step_pid(&self) -> i32 {
        self.step_pid
    }

    /// Stops serving and joins the thread. Call it once the step has exited: a task of the
    /// step still in an intercepted syscall then gets `ENOSYS`.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(w) = self.wake.take() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes to our eventfd.
            unsafe { libc::write(w.as_raw_fd(), (&one as *const u64).cast(), 8) };
            if let Some(t) = self.thread.take() {
                if t.join().is_err() {
                    tracing::warn!("the seccomp supervisor thread panicked");
                }
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The supervisor loop.
fn serve(l: &Listener, mut emu: Emu, wake: &OwnedFd) {
    loop {
        let mut fds = [
            PollFd::new(l.fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("seccomp supervisor: poll: {e}");
                return;
            }
            Ok(_) => {}
        }
        let ev = |f: &PollFd| f.revents().unwrap_or(PollFlags::empty());
        if ev(&fds[1]).contains(PollFlags::POLLIN) {
            return;
        }
        let lev = ev(&fds[0]);
        if lev.contains(PollFlags::POLLIN) {
            match l.recv() {
                Ok(n) => answer(l, &mut emu, n),
                // The task died before we read its notification, or a signal interrupted.
                Err(Errno::ENOENT | Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!("seccomp supervisor: receiving a notification: {e}");
                    return;
                }
            }
        } else if lev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            // Every task of the step has exited.
            return;
        }
    }
}

/// Answers one notification; a panic in a handler (a bug) fails that syscall with EIO
/// instead of leaving the step blocked.
fn answer(l: &Listener, emu: &mut Emu, n: Notif) {
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(l, emu, n)))
        .unwrap_or(Reply::Err(Errno::EIO));
    // ENOENT: the task is gone (killed, or interrupted by a signal); nothing to answer.
    let _ = match reply {
        Reply::Continue => l.send(n.id, 0, 0, true),
        Reply::Err(e) => l.send(n.id, 0, e as i32, false),
        Reply::Val(v) => l.send(n.id, v, 0, false),
        Reply::Sent => Ok(()),
    };
}

fn handle(l: &Listener, emu: &mut Emu, n: Notif) -> Reply {
    let mut c = Caller::new(n);
    match decode(&n) {
        Decoded::Path(pc) => emu.path_call(l, &mut c, pc),
        Decoded::Openat2 { dirfd, path, how } => {
            // The flags are the first u64 of struct open_how, in the caller's memory.
            let flags = match c.mem().and_then(|m| m.read(how, 8)) {
                Ok(b) => u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])) as i32,
                Err(_) => return Reply::Continue,
            };
            let pc = PathCall {
                dirfd,
                path,
                op: Op::Open(flags),
                out: Out::None,
            };
            emu.path_call(l, &mut c, pc)
        }
        Decoded::Getdents => emu.getdents(l, &mut c),
        Decoded::Signal => emu.signal(l, &mut c),
        Decoded::Other => Reply::Continue,
    }
}

enum Decoded {
    Path(PathCall),
    Openat2 { dirfd: i32, path: u64, how: u64 },
    Getdents,
    Signal,
    Other,
}

/// The arguments of an intercepted syscall.
fn decode(n: &Notif) -> Decoded {
    let a = n.args;
    let at = |dirfd: u64, path: u64, op: Op, out: Out| {
        Decoded::Path(PathCall {
            dirfd: dirfd as i32,
            path,
            op,
            out,
        })
    };
    let cwd = libc::AT_FDCWD as u32 as u64;
    let nofollow = |flags: u64| flags as i32 & libc::AT_SYMLINK_NOFOLLOW != 0;
    match n.nr {
        libc::SYS_openat => at(a[0], a[1], Op::Open(a[2] as i32), Out::None),
        libc::SYS_openat2 => Decoded::Openat2 {
            dirfd: a[0] as i32,
            path: a[1],
            how: a[2],
        },
        libc::SYS_faccessat | libc::SYS_faccessat2 => {
            at(a[0], a[1], Op::Access(a[2] as i32), Out::None)
        }
        libc::SYS_newfstatat => at(a[0], a[1], Op::Stat(nofollow(a[3])), Out::Stat(a[2])),
        libc::SYS_statx => {
            let out = Out::Statx {
                addr: a[4],
                flags: a[2] as i32,
                mask: a[3] as u32,
            };
            at(a[0], a[1], Op::Stat(nofollow(a[2])), out)
        }
        libc::SYS_readlinkat => {
            let out = Out::Link {
                addr: a[2],
                size: a[3] as i64,
            };
            at(a[0], a[1], Op::Readlink, out)
        }
        libc::SYS_getdents64 => Decoded::Getdents,
        libc::SYS_kill | libc::SYS_tkill | libc::SYS_tgkill | libc::SYS_pidfd_send_signal => {
            Decoded::Signal
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open => at(cwd, a[0], Op::Open(a[1] as i32), Out::None),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_access => at(cwd, a[0], Op::Access(a[1] as i32), Out::None),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_stat => at(cwd, a[0], Op::Stat(false), Out::Stat(a[1])),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_lstat => at(cwd, a[0], Op::Stat(true), Out::Stat(a[1])),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_readlink => {
            let out = Out::Link {
                addr: a[1],
                size: a[2] as i64,
            };
            at(cwd, a[0], Op::Readlink, out)
        }
        _ => {
            let _ = cwd;
            Decoded::Other
        }
    }
}
