//! A task's credentials as `/proc/<tid>/status` shows them, and acting with them on the
//! supervisor thread (so the kernel checks permissions for the caller, not for kiln).

use nix::errno::Errno;

/// At most this many supplementary groups are taken over.
const MAX_GROUPS: usize = 64;

/// The credentials and ids of a task, from its `status` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Creds {
    /// The thread group id.
    pub tgid: i32,
    /// Real, effective, saved and filesystem uid.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem gid.
    pub gid: [u32; 4],
    /// Supplementary groups (at most [`MAX_GROUPS`]).
    pub groups: Vec<u32>,
    /// The effective capability set.
    pub cap_eff: u64,
}

impl Creds {
    /// Parses a `status` file; `None` when a needed line is missing or malformed.
    pub fn parse(text: &str) -> Option<Creds> {
        let mut c = Creds::default();
        let (mut tgid, mut uid, mut gid, mut cap) = (false, false, false, false);
        for line in text.lines() {
            let Some((key, val)) = line.split_once(':') else {
                continue;
            };
            let val = val.trim();
            match key {
                "Tgid" => {
                    c.tgid = val.parse().ok()?;
                    tgid = true;
                }
                "Uid" => {
                    c.uid = four(val)?;
                    uid = true;
                }
                "Gid" => {
                    c.gid = four(val)?;
                    gid = true;
                }
                "Groups" => {
                    c.groups = val
                        .split_whitespace()
                        .take(MAX_GROUPS)
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .ok()?;
                }
                "CapEff" => {
                    c.cap_eff = u64::from_str_radix(val, 16).ok()?;
                    cap = true;
                }
                _ => {}
            }
        }
        (tgid && uid && gid && cap).then_some(c)
    }

    /// Reads the credentials of task `tid` (its `status` is world-readable).
    pub fn of(tid: i32) -> Result<Creds, Errno> {
        let text =
            std::fs::read_to_string(format!("/proc/{tid}/status")).map_err(super::sys::io_errno)?;
        Creds::parse(&text).ok_or(Errno::ESRCH)
    }

    /// Whether every id is root's (then the supervisor needs no switch).
    pub fn is_root(&self) -> bool {
        self.uid == [0; 4] && self.gid == [0; 4]
    }

    /// Whether the effective set holds `cap` (a `CAP_*` number).
    pub fn has_cap(&self, cap: u32) -> bool {
        cap < 64 && self.cap_eff & (1 << cap) != 0
    }
}

fn four(val: &str) -> Option<[u32; 4]> {
    let mut it = val.split_whitespace().map(str::parse::<u32>);
    let v = [
        it.next()?.ok()?,
        it.next()?.ok()?,
        it.next()?.ok()?,
        it.next()?.ok()?,
    ];
    Some(v)
}

/// The supervisor thread acting with a task's ids until dropped: raw `setgroups`,
/// `setresgid`, `setresuid` (per thread, unlike glibc's, which change every thread), keeping
/// root as the saved uid so the thread can come back. The kernel then makes its permission
/// and ptrace-access checks (`/proc/<pid>/mem`, `kcmp`, `cwd`…) for those ids, which also
/// works without `CAP_SYS_PTRACE`, absent from Docker's default capabilities.
#[derive(Debug)]
pub(super) struct Ids {
    /// The thread's gid and groups to restore, when it switched.
    back: Option<(u32, Vec<u32>)>,
}

fn raw(nr: libc::c_long, a: u64, b: u64, c: u64) -> Result<(), Errno> {
    // SAFETY: credential syscalls with integer arguments (or a valid groups pointer).
    let r = unsafe { libc::syscall(nr, a, b, c) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

impl Ids {
    /// Takes the effective (and real) uid and gid of `c`, and its groups. Nothing changes for
    /// a root task, or when the supervisor is not root.
    pub fn assume(c: &Creds) -> Result<Ids, Errno> {
        // SAFETY: geteuid cannot fail.
        if c.is_root() || unsafe { libc::geteuid() } != 0 {
            return Ok(Ids { back: None });
        }
        let keep = u64::MAX; // -1: unchanged
        let mut old = vec![0 as libc::gid_t; 256];
        // SAFETY: getgroups writes at most old.len() entries.
        let n = unsafe { libc::getgroups(old.len() as i32, old.as_mut_ptr()) };
        old.truncate(usize::try_from(n).map_err(|_| Errno::last())?);
        // SAFETY: getegid cannot fail.
        let old_gid = unsafe { libc::getegid() };
        let groups = c.groups.as_ptr() as u64;
        raw(libc::SYS_setgroups, c.groups.len() as u64, groups, 0)?;
        let back = Ids {
            back: Some((old_gid, old)),
        };
        raw(
            libc::SYS_setresgid,
            u64::from(c.gid[1]),
            u64::from(c.gid[1]),
            keep,
        )?;
        raw(
            libc::SYS_setresuid,
            u64::from(c.uid[1]),
            u64::from(c.uid[1]),
            keep,
        )?;
        Ok(back)
    }
}

impl Drop for Ids {
    fn drop(&mut self) {
        if let Some((gid, groups)) = self.back.take() {
            // Back to root first (the saved uid), which restores the capabilities needed for
            // the rest. A failure here leaves this supervisor thread unprivileged, never more.
            let _ = raw(libc::SYS_setresuid, 0, 0, u64::MAX);
            let _ = raw(libc::SYS_setresgid, gid.into(), gid.into(), u64::MAX);
            let list = groups.as_ptr() as u64;
            let _ = raw(libc::SYS_setgroups, groups.len() as u64, list, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text = "Name:\tsh\nTgid:\t42\nPid:\t43\nUid:\t1000\t1000\t1000\t1000\n\
                    Gid:\t100\t100\t100\t100\nGroups:\t100 27 \nCapEff:\t0000000000000020\n";
        let c = Creds::parse(text).expect("parses");
        assert_eq!(c.tgid, 42);
        assert_eq!(c.uid, [1000; 4]);
        assert_eq!(c.gid, [100; 4]);
        assert_eq!(c.groups, vec![100, 27]);
        assert!(c.has_cap(5));
        assert!(!c.has_cap(6));
        assert!(!c.has_cap(200));
        assert!(!c.is_root());
        assert_eq!(Creds::parse("Tgid:\tx\n"), None);
        assert_eq!(Creds::parse(""), None);
    }
}
