//! Listings of placeholder directories: finding the placeholder behind a caller's fd and
//! answering `getdents64` from the host directory it stands for.

use std::os::fd::AsRawFd;

use nix::errno::Errno;

use super::procfs::{fstatat, Caller, Emu, Reply};
use super::sys::Listener;

/// The most bytes of directory entries read per `getdents64`.
const MAX_CHUNK: usize = 64 * 1024;

impl Emu {
    /// The index of the placeholder the caller's `fd` is (each has an inode of its own).
    pub(super) fn find_placeholder(&self, c: &mut Caller, fd: i32) -> Option<usize> {
        if self.placeholders.is_empty() || fd < 0 {
            return None;
        }
        let tid = c.tid();
        let link = format!("/proc/{tid}/fd/{fd}");
        let st = c.try_root(|| fstatat(libc::AT_FDCWD, &link, 0)).ok()?;
        let id = (st.st_dev, st.st_ino);
        self.placeholders.iter().position(|p| p.id == id)
    }

    /// `getdents64(fd, buf, count)`: answered from the host directory when `fd` is a
    /// placeholder, else run by the kernel.
    pub(super) fn getdents(&mut self, l: &Listener, c: &mut Caller) -> Reply {
        let args = c.n.args;
        let (fd, buf, count) = (args[0] as i32, args[1], args[2] as u32 as usize);
        let Some(i) = self.find_placeholder(c, fd) else {
            return Reply::Continue;
        };
        let Ok(mem) = c.mem() else {
            return Reply::Continue;
        };
        if !l.id_valid(c.n.id) {
            return Reply::Continue;
        }
        let (host, proc_root) = {
            let p = &self.placeholders[i];
            (p.host.as_raw_fd(), p.proc_root)
        };
        let want = count.min(MAX_CHUNK);
        let mut tmp = vec![0u8; want];
        // Bounded: each round consumes host entries; an all-filtered chunk reads on.
        for _ in 0..1024 {
            // SAFETY: getdents64 writes at most `want` bytes into tmp.
            let r = unsafe { libc::syscall(libc::SYS_getdents64, host, tmp.as_mut_ptr(), want) };
            if r < 0 {
                return Errno::last().into();
            }
            if r == 0 {
                return Reply::Val(0);
            }
            let data = &tmp[..r as usize];
            let out = if proc_root {
                self.only_step_pids(data)
            } else {
                data.to_vec()
            };
            if out.is_empty() {
                continue;
            }
            return match mem.write(buf, &out) {
                Ok(()) => Reply::Val(out.len() as i64),
                Err(e) => e.into(),
            };
        }
        Reply::Val(0)
    }

    /// The records of a `/proc` listing without the pids that are not the step's, nor the
    /// entries it may not open.
    fn only_step_pids(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        for rec in records(data) {
            let name = dirent_name(rec).unwrap_or("");
            let keep = match name.parse::<i32>() {
                Ok(pid) => self
                    .piddir(pid)
                    .is_ok_and(|d| self.is_member(d.as_raw_fd())),
                Err(_) => matches!(name, "." | "..") || super::policy::listed_at_top(name),
            };
            if keep {
                out.extend_from_slice(rec);
            }
        }
        out
    }
}

/// The `linux_dirent64` records of a buffer (a malformed tail is dropped).
fn records(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 20 {
            return None;
        }
        let reclen = usize::from(u16::from_ne_bytes([data[16], data[17]]));
        if reclen < 20 || reclen > data.len() {
            return None;
        }
        let (rec, rest) = data.split_at(reclen);
        data = rest;
        Some(rec)
    })
}

/// The name of a `linux_dirent64` record (after ino, off, reclen and type: byte 19).
fn dirent_name(rec: &[u8]) -> Option<&str> {
    let name = rec.get(19..)?;
    let end = name.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&name[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> Vec<u8> {
        let len = (19 + name.len() + 1).div_ceil(8) * 8;
        let mut r = vec![0u8; len];
        r[16..18].copy_from_slice(&(len as u16).to_ne_bytes());
        r[19..19 + name.len()].copy_from_slice(name.as_bytes());
        r
    }

    #[test]
    fn walks_records_and_stops_at_garbage() {
        let mut data = rec("cpuinfo");
        data.extend(rec("1234"));
        let names: Vec<_> = records(&data).filter_map(dirent_name).collect();
        assert_eq!(names, ["cpuinfo", "1234"]);
        // A record claiming more than the buffer, or less than a header, ends the walk.
        let mut bad = rec("a");
        bad[16..18].copy_from_slice(&4000u16.to_ne_bytes());
        assert_eq!(records(&bad).count(), 0);
        bad[16..18].copy_from_slice(&3u16.to_ne_bytes());
        assert_eq!(records(&bad).count(), 0);
        assert_eq!(records(&[0u8; 5]).count(), 0);
    }
}
