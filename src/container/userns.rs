//! The rootless user namespace one store's commands share, kept alive by a holder process.
//!
//! Rootless kiln moves each command into a user namespace mapped to the user's subordinate
//! ids. A container started by `kiln run -d` lives in the namespace of the command that
//! started it; a later `kiln exec` or `kiln stop` in a namespace of its own, even with the
//! same mapping, has no capability over it (a process in one child namespace has none in a
//! sibling), so it could not join the container's namespaces or signal its non-root
//! processes. So the first command of a store makes the namespace and leaves a small holder
//! process in it (Podman's "pause process"); later commands join the holder's namespace
//! (`setns`, allowed to the user who owns it while still outside) instead of making a new one.
//! The holder leaves once nothing else has run in its namespace for a while, so an idle user
//! keeps no process around; the next command then starts a new one.
//!
//! `ROOT/rootless/holder` names the holder (`PID USERNS-INODE`); `ROOT/rootless/lock` orders
//! joining against the holder's leaving, so a command never joins a namespace nothing keeps.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::executor::isolation::{self, Decision, IsolationError};

/// How often the holder looks for other processes in its namespace.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// The holder's name in `ps` (`/proc/PID/comm`).
const HOLDER_NAME: &std::ffi::CStr = c"kiln-userns";

/// Why the shared namespace could not be made or joined.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// A file of the holder's directory.
    #[error("rootless namespace: {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Joining the holder's namespace.
    #[error("cannot join the rootless user namespace of kiln's holder process {pid}")]
    Join {
        /// The holder's pid.
        pid: i32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Making a new namespace.
    #[error(transparent)]
    Enter(#[from] IsolationError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UsernsError + 'a {
    move |source| UsernsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The holder's files for the store at `root`.
#[derive(Debug, Clone)]
pub struct HolderFiles {
    dir: PathBuf,
}

impl HolderFiles {
    /// The files of the store at `root` (absolute).
    pub fn new(root: &Path) -> HolderFiles {
        HolderFiles {
            dir: root.join("rootless"),
        }
    }

    /// `PID USERNS-INODE` of the holder.
    pub fn record(&self) -> PathBuf {
        self.dir.join("holder")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Takes the lock (blocking): held while a command joins or makes the namespace, and
    /// while the holder decides to leave.
    /// With `create`, makes the directory and the lock file if they are missing (the holder
    /// does not: a store removed under it stays removed).
    fn lock(&self, create: bool) -> Result<fs::File, UsernsError> {
        if create {
            // 0700 at every level made here: the store root must not start readable by others.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(io_err("creating", &self.dir))?;
        }
        let path = self.lock_path();
        let f = fs::OpenOptions::new()
            .create(create)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        loop {
            // SAFETY: flock on a valid fd.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(f);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err("locking", &path)(e));
            }
        }
    }

    /// The holder's pid and namespace inode, if recorded.
    pub fn read(&self) -> Option<(i32, u64)> {
        parse_record(&fs::read_to_string(self.record()).ok()?)
    }

    /// Removes the record if it names holder `pid` of namespace `ino`; true (the holder may
    /// leave) unless the record could not be removed.
    fn forget(&self, pid: i32, ino: u64) -> bool {
        self.read() != Some((pid, ino)) || fs::remove_file(self.record()).is_ok()
    }

    fn write(&self, pid: i32, ino: u64) -> Result<(), UsernsError> {
        let path = self.record();
        let tmp = self.dir.join("holder.tmp");
        fs::write(&tmp, format!("{pid} {ino}\n")).map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("writing", &path))
    }
}

/// `PID INODE` as [`HolderFiles::write`] writes it.
pub fn parse_record(text: &str) -> Option<(i32, u64)> {
    let mut f = text.split_whitespace();
    let pid = f.next()?.parse().ok().filter(|p| *p > 0)?;
    let ino = f.next()?.parse().ok()?;
    f.next().is_none().then_some((pid, ino))
}

/// The user namespace of process `pid`, opened, if its inode is `ino` (a recycled pid has
/// another namespace).
fn open_namespace(pid: i32, ino: u64) -> Option<OwnedFd> {
    let f = fs::File::open(format!("/proc/{pid}/ns/user")).ok()?;
    (f.metadata().ok()?.ino() == ino).then(|| OwnedFd::from(f))
}

fn own_namespace_inode() -> io::Result<u64> {
    Ok(fs::metadata("/proc/self/ns/user")?.ino())
}

/// Moves this (single-threaded) process into the store's shared rootless namespace: the
/// holder's, if one lives, else a new one ([`isolation::enter_user_namespace`]) with a new
/// holder in it. Afterwards the process is uid 0 of that namespace.
pub fn enter_shared(root: &Path, decision: &Decision) -> Result<(), UsernsError> {
    let files = HolderFiles::new(root);
    let _lock = files.lock(true)?;
    if let Some((pid, ino)) = files.read() {
        if let Some(ns) = open_namespace(pid, ino) {
            // SAFETY: setns on an fd we own; the process is single-threaded (precondition).
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
                let source = io::Error::last_os_error();
                return Err(UsernsError::Join { pid, source });
            }
            isolation::become_root()?;
            // Single-threaded still: nothing else reads the environment.
            std::env::set_var(isolation::ENTERED_ENV, "1");
            return Ok(());
        }
    }
    isolation::enter_user_namespace(decision)?;
    let ino = own_namespace_inode().map_err(io_err("reading", Path::new("/proc/self/ns/user")))?;
    let pid = spawn_holder(&files, ino)?;
    files.write(pid, ino)
}

/// Starts the holder, detached (its parent exits at once, so no command of kiln ever waits
/// for it or reaps it by accident); returns its pid.
fn spawn_holder(files: &HolderFiles, ino: u64) -> Result<i32, UsernsError> {
    let (r, w) = super::monitor::pipe().map_err(io_err("making a pipe for", &files.dir))?;
    // SAFETY: the process is single-threaded (precondition of enter_shared), so the children
    // may run ordinary code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io_err("forking the holder for", &files.dir)(
            io::Error::last_os_error(),
        ));
    }
    if child == 0 {
        drop(r);
        // SAFETY: as above.
        let holder = unsafe { libc::fork() };
        if holder == 0 {
            drop(w);
            hold(files, ino);
        }
        let mut w = fs::File::from(w);
        let _ = w.write_all(&holder.to_ne_bytes());
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let mut buf = [0u8; 4];
    let read = fs::File::from(r).read_exact(&mut buf);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    let pid = i32::from_ne_bytes(buf);
    match read {
        Ok(()) if pid > 0 => Ok(pid),
        Ok(()) => Err(io_err("forking the holder for", &files.dir)(
            io::Error::other("fork failed"),
        )),
        Err(e) => Err(io_err("forking the holder for", &files.dir)(e)),
    }
}

/// The holder's life: no stdio, no other fds (the caller's output pipe and the lock must not
/// stay open in it), its own session; leaves when it has been alone in its namespace for two
/// checks in a row.
fn hold(files: &HolderFiles, ino: u64) -> ! {
    detach();
    let me = std::process::id() as i32;
    let mut idle = 0;
    loop {
        std::thread::sleep(IDLE_CHECK);
        if others_in_namespace(ino, me) {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < 2 {
            continue;
        }
        // Decided under the lock: a command joining meanwhile is in the namespace by the
        // time this looks again.
        // A store removed under the holder has no lock file: nothing to keep for it.
        let leave = match files.lock(false) {
            Ok(_lock) => !others_in_namespace(ino, me) && files.forget(me, ino),
            Err(_) => !files.lock_path().exists(),
        };
        if leave {
            // SAFETY: leaving; the lock (if taken) was released with its file above.
            unsafe { libc::_exit(0) };
        }
        idle = 0;
    }
}

fn detach() {
    // SAFETY: plain system calls on fds and static strings.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, HOLDER_NAME.as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            if null >= 0 {
                libc::dup2(null, fd);
            }
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::chdir(c"/".as_ptr());
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Whether a process other than `me` is in the user namespace with inode `ino` (or, as
/// [`count_in_namespace`] finds them, in any).
fn others_in_namespace(ino: u64, me: i32) -> bool {
    count_in_namespace(Path::new("/proc"), ino, me) > 0
}

/// How many processes under `proc` other than `me` have the user namespace `ino`.
pub fn count_in_namespace(proc: &Path, ino: u64, me: i32) -> usize {
    let Ok(entries) = fs::read_dir(proc) else {
        return 0;
    };
    let want = format!("user:[{ino}]");
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                return false;
            };
            pid != me
                && fs::read_link(e.path().join("ns/user"))
                    .is_ok_and(|l| l.as_os_str() == want.as_str())
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_record_is_pid_and_inode() {
        assert_eq!(parse_record("123 4026531837\n"), Some((123, 4026531837)));
        for bad in ["", "123", "x 1", "0 5", "-4 5", "1 2 3"] {
            assert_eq!(parse_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn processes_of_the_namespace_are_counted_but_not_the_holder() {
        let t = tempfile::tempdir().unwrap();
        for (pid, ns) in [("1", "user:[7]"), ("2", "user:[7]"), ("3", "user:[8]")] {
            let d = t.path().join(pid).join("ns");
            fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(ns, d.join("user")).unwrap();
        }
        fs::create_dir(t.path().join("self")).unwrap();
        assert_eq!(count_in_namespace(t.path(), 7, 1), 1);
        assert_eq!(count_in_namespace(t.path(), 7, 9), 2);
        assert_eq!(count_in_namespace(t.path(), 8, 3), 0);
    }

    #[test]
    fn a_recycled_pid_is_not_taken_for_the_holder() {
        let own = own_namespace_inode().unwrap();
        let me = std::process::id() as i32;
        assert!(open_namespace(me, own).is_some());
        assert!(open_namespace(me, own + 1).is_none());
    }
}
