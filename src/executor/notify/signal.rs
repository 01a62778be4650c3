//! Signals from the step: `kill`, `tkill`, `tgkill` and `pidfd_send_signal` reach only the
//! step's own processes.

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

use super::creds::Creds;
use super::procfs::{read_at, Caller, Emu, Reply};
use super::sys::{self, Listener};

const CAP_KILL: u32 = 5;

/// Whether a task with `caller`'s credentials may signal one with `target`'s, by the
/// kernel's rule (`kill_ok_by_cred`): a real or effective uid equal to the target's real or
/// saved uid, or `CAP_KILL`.
pub(super) fn may_signal(caller: &Creds, target: &Creds) -> bool {
    if caller.tgid == target.tgid || caller.has_cap(CAP_KILL) {
        return true;
    }
    let (ruid, euid) = (caller.uid[0], caller.uid[1]);
    let (t_ruid, t_suid) = (target.uid[0], target.uid[2]);
    euid == t_suid || euid == t_ruid || ruid == t_suid || ruid == t_ruid
}

impl Emu {
    /// Answers a signal syscall.
    pub(super) fn signal(&mut self, l: &Listener, c: &mut Caller) -> Reply {
        let a = c.n.args;
        let r = match c.n.nr {
            libc::SYS_kill => self.kill(c, a[0] as i32, a[1] as i32),
            libc::SYS_tkill => self.thread_allowed(a[0] as i32, None),
            libc::SYS_tgkill => self.thread_allowed(a[1] as i32, Some(a[0] as i32)),
            libc::SYS_pidfd_send_signal => self.pidfd_signal(l, c),
            _ => Ok(Reply::Continue),
        };
        r.unwrap_or_else(Reply::Err)
    }

    fn kill(&mut self, c: &mut Caller, pid: i32, sig: i32) -> Result<Reply, Errno> {
        if !(0..=64).contains(&sig) {
            return Err(Errno::EINVAL);
        }
        match pid {
            -1 | i32::MIN => Err(Errno::EPERM),
            0 => {
                let pgrp = stat_field(c.tid(), 2)?;
                self.group_allowed(pgrp)
            }
            p if p < 0 => self.group_allowed(-p),
            p => {
                let piddir = self.piddir(p).map_err(|_| Errno::ESRCH)?;
                if !self.is_member(piddir.as_raw_fd()) {
                    return Err(Errno::EPERM);
                }
                let pidfd = match sys::pidfd_open(p) {
                    Ok(fd) => fd,
                    // A thread id that is not a group leader: checked, let the kernel run it.
                    Err(Errno::EINVAL) => return Ok(Reply::Continue),
                    Err(_) => return Err(Errno::ESRCH),
                };
                // Still alive after pidfd_open: the pidfd is the process we checked.
                let target = read_at(piddir.as_raw_fd(), "status")
                    .ok()
                    .and_then(|t| Creds::parse(&t))
                    .ok_or(Errno::ESRCH)?;
                if !may_signal(c.creds()?, &target) {
                    return Err(Errno::EPERM);
                }
                sys::pidfd_send_signal(pidfd.as_fd(), sig, 0, 0).map(|()| Reply::Val(0))
            }
        }
    }

    /// A process group may be signalled when every member belongs to the step; the kernel
    /// then runs the call (a group cannot gain members from another session).
    fn group_allowed(&self, pgrp: i32) -> Result<Reply, Errno> {
        let mut found = false;
        let entries = std::fs::read_dir("/proc").map_err(sys::io_errno)?;
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if stat_field(pid, 2).ok() != Some(pgrp) {
                continue;
            }
            let member = self
                .piddir(pid)
                .is_ok_and(|d| self.is_member(d.as_raw_fd()));
            if !member {
                return Err(Errno::EPERM);
            }
            found = true;
        }
        if found {
            Ok(Reply::Continue)
        } else {
            Err(Errno::ESRCH)
        }
    }

    /// `tkill(tid)` / `tgkill(tgid, tid)`: allowed when the thread belongs to the step (and
    /// to `tgid`), then run by the kernel.
    fn thread_allowed(&self, tid: i32, tgid: Option<i32>) -> Result<Reply, Errno> {
        if tid <= 0 || tgid.is_some_and(|g| g <= 0) {
            return Err(Errno::EINVAL);
        }
        let dir = match tgid {
            Some(g) => {
                let d = self.piddir(g).map_err(|_| Errno::ESRCH)?;
                let name =
                    std::ffi::CString::new(format!("task/{tid}")).map_err(|_| Errno::EINVAL)?;
                sys::openat2(
                    d.as_raw_fd(),
                    &name,
                    libc::O_PATH | libc::O_DIRECTORY,
                    sys::RESOLVE_STRICT,
                )
                .map_err(|_| Errno::ESRCH)?
            }
            None => self.piddir(tid).map_err(|_| Errno::ESRCH)?,
        };
        if self.is_member(dir.as_raw_fd()) {
            Ok(Reply::Continue)
        } else {
            Err(Errno::EPERM)
        }
    }

    /// `pidfd_send_signal`: done on the supervisor's duplicate of the caller's pidfd, so the
    /// caller cannot swap the descriptor after the check.
    fn pidfd_signal(&mut self, l: &Listener, c: &mut Caller) -> Result<Reply, Errno> {
        let a = c.n.args;
        let (fd, sig, info, flags) = (a[0] as i32, a[1] as i32, a[2], a[3] as u32);
        let tgid = c.creds()?.tgid;
        let caller = sys::pidfd_open(tgid)?;
        let ours = c.as_caller(|| sys::pidfd_getfd(caller.as_fd(), fd))?;
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", ours.as_raw_fd()))
            .map_err(sys::io_errno)?;
        let pid = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
            .ok_or(Errno::EBADF)?;
        if pid <= 0 {
            return Err(Errno::ESRCH);
        }
        let piddir = self.piddir(pid).map_err(|_| Errno::ESRCH)?;
        if !self.is_member(piddir.as_raw_fd()) {
            return Err(Errno::EPERM);
        }
        let target = read_at(piddir.as_raw_fd(), "status")
            .ok()
            .and_then(|t| Creds::parse(&t))
            .ok_or(Errno::ESRCH)?;
        if !may_signal(c.creds()?, &target) {
            return Err(Errno::EPERM);
        }
        let mut siginfo = [0u8; 128];
        let info_ptr = if info == 0 {
            0
        } else {
            let mem = c.mem()?;
            if !l.id_valid(c.n.id) {
                return Err(Errno::ESRCH);
            }
            siginfo.copy_from_slice(&mem.read(info, 128)?);
            siginfo.as_ptr() as u64
        };
        sys::pidfd_send_signal(ours.as_fd(), sig, info_ptr, flags).map(|()| Reply::Val(0))
    }
}

/// Field `n` (0-based) after the command name of `/proc/<pid>/stat`: 0 state, 1 ppid,
/// 2 pgrp, 3 session.
fn stat_field(pid: i32, n: usize) -> Result<i32, Errno> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(sys::io_errno)?;
    let after = stat.rsplit_once(')').map(|(_, a)| a).ok_or(Errno::EIO)?;
    after
        .split_whitespace()
        .nth(n)
        .and_then(|v| v.parse().ok())
        .ok_or(Errno::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(tgid: i32, uid: [u32; 4], cap: u64) -> Creds {
        Creds {
            tgid,
            uid,
            gid: [0; 4],
            groups: vec![],
            cap_eff: cap,
        }
    }

    #[test]
    fn signal_permission_follows_the_kernel_rule() {
        let root_kill = creds(10, [0; 4], 1 << CAP_KILL);
        let root_nokill = creds(10, [0; 4], 0);
        let user = creds(11, [1000; 4], 0);
        let other = creds(12, [1001; 4], 0);
        let setuid = creds(13, [1000, 0, 0, 0], 0);
        assert!(may_signal(&root_kill, &other));
        assert!(!may_signal(&root_nokill, &other));
        assert!(may_signal(&user, &user));
        assert!(!may_signal(&user, &other));
        assert!(may_signal(&user, &setuid), "real uid 1000 matches");
        assert!(
            may_signal(&root_nokill, &creds(10, [5; 4], 0)),
            "same thread group"
        );
    }
}
