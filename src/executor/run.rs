//! The parent side of a step: prepare, clone the container process, answer its handshake,
//! stream its output, wait for it, and make sure nothing of it survives.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use libc::{c_char, c_int, c_long};
use nix::errno::Errno;

use super::error::ExecError;
use super::kernel::{self, Go, RealKernel, Report, MAX_GROUPS, MAX_HOME};
use super::pasta::{self, Pasta, PastaError, PastaOptions};
use super::plan::{self, Op, PlanInput, RootPlan};
use super::setup::{self, ChildPlan, HomeSlot, Stage};
use super::stepdir::{self, StepDir};
use super::{
    copyroot, seccomp, trampoline, user, ExitStatus, Input, NetworkMode, Output, RootfsMode,
    Snapshot, StepIo, StepOutcome, StepSpec, DEFAULT_CAPS, DEFAULT_PATH,
};

/// Set once overlayfs failed to mount: later steps go straight to the copy fallback.
static OVERLAY_BROKEN: AtomicBool = AtomicBool::new(false);
static OVERLAY_WARNING: Once = Once::new();

/// How long to keep reading output after the container's PID 1 exited. Its namespace is
/// empty by then, but a container process cloned concurrently by another thread of kiln
/// holds copies of our pipe ends until its own exec.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
const CANCEL_POLL_MS: c_int = 50;
const CHUNK: usize = 64 * 1024;

fn cstring(what: &str, s: impl Into<Vec<u8>>) -> Result<CString, ExecError> {
    CString::new(s).map_err(|_| ExecError::InvalidSpec(format!("{what} contains a NUL byte")))
}

fn path_c(p: &Path) -> Result<CString, ExecError> {
    cstring("path", p.as_os_str().as_bytes())
}

fn sys_err() -> ExecError {
    ExecError::Spawn(std::io::Error::last_os_error())
}

pub(super) fn validate(spec: &StepSpec) -> Result<(), ExecError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(ExecError::InvalidSpec("empty command".into()));
    }
    if !spec.workdir.is_empty() && !spec.workdir.starts_with('/') {
        return Err(ExecError::InvalidSpec(format!(
            "working directory {:?} is not absolute",
            spec.workdir
        )));
    }
    if spec.netns.is_some() && spec.network != NetworkMode::Sandbox {
        return Err(ExecError::InvalidSpec(
            "a network namespace to join needs the sandbox network".into(),
        ));
    }
    if let Some(h) = &spec.hostname {
        if h.is_empty() || h.len() > 64 {
            return Err(ExecError::InvalidSpec(format!("bad hostname {h:?}")));
        }
    }
    for u in &spec.ulimits {
        u.check()
            .map_err(|e| ExecError::InvalidSpec(e.to_string()))?;
    }
    Ok(())
}

/// Runs one step: its command in a fresh container over `spec.lowers`, writes into the upper
/// dir. Returns how the command ended; an `Err` means it could not be run (or was
/// cancelled), and then the step's scratch dir is already removed.
pub fn run_step(spec: &StepSpec, mut io: StepIo<'_>) -> Result<StepOutcome, ExecError> {
    validate(spec)?;
    // The unprivileged mode (no namespaces, no mounts): a chroot over a copied root.
    if super::unpriv::enabled() {
        return super::unpriv::run_step(spec, io);
    }
    if spec.network == NetworkMode::Sandbox && spec.netns.is_none() && pasta::binary().is_none() {
        return Err(network_error(PastaError::NotInstalled));
    }
    let id = stepdir::new_id()?;
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let step = stepdir::prepare(spec, &id, &hostname)?;
    let result = sandbox_resolv_conf(spec, &step)
        .and_then(|()| run_prepared(spec, &mut io, &id, &hostname, &step));
    if result.is_err() {
        let _ = stepdir::remove_step_dir(&step.dir);
    }
    result
}

fn network_error(e: PastaError) -> ExecError {
    ExecError::Setup {
        stage: "the step's network".into(),
        source: std::io::Error::other(e),
    }
}

/// In a [`NetworkMode::Sandbox`] step the host's loopback resolvers are out of reach: the
/// step's copy of the host's `/etc/resolv.conf` names pasta's DNS forwarder instead.
fn sandbox_resolv_conf(spec: &StepSpec, step: &StepDir) -> Result<(), ExecError> {
    if spec.network != NetworkMode::Sandbox {
        return Ok(());
    }
    let Some((_, file)) = step
        .etc_files
        .iter()
        .find(|(rel, _)| rel == "etc/resolv.conf")
    else {
        return Ok(());
    };
    let host = std::fs::read(file).map_err(|e| ExecError::io("reading", file, e))?;
    std::fs::write(file, pasta::resolv_conf(&String::from_utf8_lossy(&host)))
        .map_err(|e| ExecError::io("writing", file, e))
}

fn run_prepared(
    spec: &StepSpec,
    io: &mut StepIo<'_>,
    id: &str,
    hostname: &str,
    step: &StepDir,
) -> Result<StepOutcome, ExecError> {
    let mut mode = if spec.rootfs == RootfsMode::Copy || OVERLAY_BROKEN.load(Ordering::Relaxed) {
        Snapshot::Copy
    } else {
        Snapshot::Overlay
    };
    loop {
        let manifest = if mode == Snapshot::Copy {
            stepdir::copy_root(&spec.lowers, step)?;
            Some(
                copyroot::record(&step.rootfs)
                    .map_err(|e| ExecError::io("reading copied root", &step.rootfs, e))?,
            )
        } else {
            None
        };
        let ops = step_ops(spec, hostname, step, mode)
            .map(|mut ops| {
                if let Some(ns) = &spec.netns {
                    // First: the sysfs mounted later shows the joined namespace's devices.
                    ops.insert(
                        0,
                        Op::JoinNamespaces {
                            pidfd: ns.as_raw_fd(),
                            flags: libc::CLONE_NEWNET,
                        },
                    );
                }
                ops
            })
            .map_err(Attempt::Failed);
        match ops.and_then(|ops| attempt(spec, io, hostname, ops, None)) {
            Err(Attempt::OverlayFailed(errno)) if spec.rootfs == RootfsMode::Auto => {
                OVERLAY_WARNING.call_once(|| {
                    tracing::warn!(
                        error = %errno,
                        "overlayfs cannot be mounted here; every step will copy its layers \
                         instead (slow)"
                    );
                });
                OVERLAY_BROKEN.store(true, Ordering::Relaxed);
                mode = Snapshot::Copy;
            }
            Err(Attempt::OverlayFailed(errno)) => {
                return Err(ExecError::Setup {
                    stage: "mount overlay".into(),
                    source: errno.into(),
                })
            }
            Err(Attempt::Failed(e)) => return Err(e),
            Ok(status) => {
                if let Some(m) = manifest {
                    copyroot::diff_into_upper(&step.rootfs, &m, &step.upper)
                        .map_err(|e| ExecError::io("diffing copied root", &step.rootfs, e))?;
                    stepdir::remove_step_dir(&step.rootfs)?;
                }
                return Ok(StepOutcome {
                    status,
                    container_id: id.to_string(),
                    upper: step.upper.clone(),
                    work: step.work.clone(),
                    step_dir: step.dir.clone(),
                    snapshot: mode,
                });
            }
        }
    }
}

pub(super) enum Attempt {
    OverlayFailed(Errno),
    Failed(ExecError),
}

impl From<ExecError> for Attempt {
    fn from(e: ExecError) -> Self {
        Attempt::Failed(e)
    }
}

/// The environment the command gets, and whether `HOME` still has to be filled in.
fn final_env(spec: &StepSpec, hostname: &str) -> (Vec<String>, bool) {
    let mut env = spec.env.clone();
    let has = |env: &[String], key: &str| {
        env.iter()
            .any(|e| e.split_once('=').map_or(e == key, |(k, _)| k == key))
    };
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !spec.build_step && !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={hostname}"));
    }
    let need_home = !has(&env, "HOME");
    (env, need_home)
}

/// Where to look for `argv0`: itself if it has a slash, else every `$PATH` entry.
fn candidates(argv0: &str, path: &str) -> Vec<String> {
    if argv0.contains('/') {
        return vec![argv0.to_string()];
    }
    path.split(':')
        .map(|d| {
            let d = if d.is_empty() { "." } else { d };
            format!("{}/{argv0}", d.trim_end_matches('/'))
        })
        .collect()
}

pub(super) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ExecError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys_err());
    }
    // SAFETY: pipe2 returned two fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn socketpair() -> Result<(OwnedFd, OwnedFd), ExecError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: valid two-element array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(sys_err());
    }
    // SAFETY: two fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn send_fd(sock: &OwnedFd, fd: BorrowedFd<'_>) -> Result<(), ExecError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"c")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(|e| ExecError::Spawn(e.into()))
}

/// Opens a pty in the container's own devpts instance (through `/proc/<pid>/root`, resolved
/// inside it), so the command's terminal is `/dev/pts/0` as it sees it, owned by its user.
/// Returns (master, slave).
fn open_console(pid: libc::pid_t, uid: u32) -> Result<(OwnedFd, OwnedFd), ExecError> {
    let err = |what: &str, e: std::io::Error| ExecError::Setup {
        stage: format!("console: {what}"),
        source: e,
    };
    let root = std::fs::File::open(format!("/proc/{pid}/root"))
        .map_err(|e| err("opening the container's root", e))?;
    let path = CString::new("dev/pts/ptmx").map_err(|_| sys_err())?;
    let m = kernel::openat2(
        root.as_raw_fd(),
        &path,
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| err("opening /dev/pts/ptmx", e.into()))?;
    // SAFETY: a fresh fd.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: c_int = 0;
    // SAFETY: ioctls on our own pty master with valid arguments.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(err("unlocking the pty", std::io::Error::last_os_error()));
        }
    }
    // SAFETY: as above; TIOCGPTPEER opens the slave without a path lookup.
    let sl = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if sl < 0 {
        return Err(err(
            "opening the pty's peer",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh fd.
    let slave = unsafe { OwnedFd::from_raw_fd(sl) };
    // SAFETY: fchown on a valid fd; the tty group (5) as devpts's gid=5 option gives.
    unsafe { libc::fchown(slave.as_raw_fd(), uid, 5) };
    Ok((master, slave))
}

/// A close-on-exec duplicate at fd 3 or above, so wiring stdio in the child never clobbers a
/// source that sits at 0–2.
fn dup_high(fd: BorrowedFd<'_>) -> Result<OwnedFd, ExecError> {
    // SAFETY: fcntl on a valid fd.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(sys_err());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The container's PID 1. Dropping it without [`Container::wait`] kills and reaps it: the
/// kernel then kills every other process of its PID namespace.
pub(super) struct Container {
    pub(super) pid: libc::pid_t,
    pub(super) pidfd: OwnedFd,
    pub(super) reaped: bool,
}

impl Container {
    fn kill(&self) {
        // SAFETY: pidfd_send_signal on our own pidfd; cannot hit a recycled pid.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd() as c_long,
                libc::SIGKILL as c_long,
                std::ptr::null::<libc::siginfo_t>(),
                0 as c_long,
            )
        };
    }

    /// Kills and reaps it (on a failure before its command runs).
    fn abort(&mut self) {
        self.kill();
        let _ = self.wait();
    }

    pub(super) fn wait(&mut self) -> Result<ExitStatus, ExecError> {
        let mut status: c_int = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL) };
            if r == self.pid {
                break;
            }
            if r < 0 && Errno::last() != Errno::EINTR {
                return Err(sys_err());
            }
        }
        self.reaped = true;
        Ok(if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.wait();
        }
    }
}

fn poll(fds: &mut [libc::pollfd], timeout: c_int) -> Result<(), ExecError> {
    // SAFETY: valid pollfd array.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if r < 0 && Errno::last() != Errno::EINTR {
        return Err(sys_err());
    }
    Ok(())
}

fn pfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Reads one report, or `None` if the container process exited or closed the pipe without.
pub(super) fn read_report(report: &OwnedFd, pidfd: &OwnedFd) -> Result<Option<Report>, ExecError> {
    loop {
        let mut fds = [pfd(report.as_raw_fd()), pfd(pidfd.as_raw_fd())];
        poll(&mut fds, -1)?;
        if fds[0].revents != 0 {
            return read_report_now(report);
        }
        if fds[1].revents != 0 {
            // Exited: whatever it wrote is in the pipe already.
            let mut again = [pfd(report.as_raw_fd())];
            poll(&mut again, 0)?;
            return if again[0].revents != 0 {
                read_report_now(report)
            } else {
                Ok(None)
            };
        }
    }
}

fn read_report_now(report: &OwnedFd) -> Result<Option<Report>, ExecError> {
    let mut buf = [0u8; Report::SIZE];
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: valid buffer.
        let n = unsafe {
            libc::read(
                report.as_raw_fd(),
                buf[off..].as_mut_ptr().cast(),
                buf.len() - off,
            )
        };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return Err(sys_err());
        }
        if n == 0 {
            return Ok(None);
        }
        off += n as usize;
    }
    Ok(Some(Report::from_bytes(&buf)))
}

pub(super) fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> Result<(), ExecError> {
    while !buf.is_empty() {
        // SAFETY: valid buffer.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return Err(sys_err());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Turns a child's failure report into an error.
pub(super) fn failure(report: Report, ops: &[Op], spec: &StepSpec, workdir: &str) -> Attempt {
    let errno = Errno::from_raw(report.errno);
    let io = std::io::Error::from(errno);
    let argv0 = spec.argv.first().cloned().unwrap_or_default();
    let e = match Stage::from_code(report.stage) {
        Some(Stage::Op(i)) => {
            let op = ops.get(i as usize);
            if let Some(Op::MountOverlay { .. }) = op {
                return Attempt::OverlayFailed(errno);
            }
            match op {
                Some(op) if errno == Errno::ELOOP && op.mount_target().is_some() => {
                    ExecError::SymlinkMountTarget {
                        path: op.mount_target().unwrap_or_default(),
                    }
                }
                Some(op) => ExecError::Setup {
                    stage: op.describe(),
                    source: io,
                },
                None => ExecError::Setup {
                    stage: format!("setup step {i}"),
                    source: io,
                },
            }
        }
        Some(Stage::Lookup) => ExecError::CommandNotFound(argv0),
        Some(Stage::Exec) => ExecError::Exec {
            cmd: argv0,
            source: io,
        },
        Some(Stage::Workdir) => ExecError::Workdir {
            path: workdir.to_string(),
            source: io,
        },
        other => ExecError::Setup {
            stage: format!("{other:?}").to_lowercase(),
            source: io,
        },
    };
    Attempt::Failed(e)
}

/// Creates a missing working directory inside the container's root (like Docker), resolving
/// every component with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`.
pub(super) fn ensure_workdir(root: BorrowedFd<'_>, workdir: &str) -> Result<(), ExecError> {
    let err = |e: Errno| ExecError::Workdir {
        path: workdir.to_string(),
        source: e.into(),
    };
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let open = |p: &str| -> Result<OwnedFd, Errno> {
        let c = CString::new(p).map_err(|_| Errno::EINVAL)?;
        let fd = kernel::openat2(
            root.as_raw_fd(),
            &c,
            libc::O_PATH | libc::O_DIRECTORY,
            resolve,
        )?;
        // SAFETY: a fresh fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let mut parent = open(".").map_err(err)?;
    let mut prefix = String::new();
    for comp in workdir.split('/').filter(|c| !c.is_empty()) {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(comp);
        parent = match open(&prefix) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                let name = CString::new(comp).map_err(|_| err(Errno::EINVAL))?;
                // SAFETY: valid fd and C string; a single component, so nothing is followed.
                let r = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) };
                if r != 0 && Errno::last() != Errno::EEXIST {
                    return Err(err(Errno::last()));
                }
                open(&prefix).map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
    }
    Ok(())
}

/// Resolves the step's identity inside the container's root.
fn identity(pid: libc::pid_t, spec: &StepSpec, workdir: &str) -> Result<Go, ExecError> {
    let root_path = format!("/proc/{pid}/root");
    let c = CString::new(root_path.clone()).map_err(|_| ExecError::Spawn(Errno::EINVAL.into()))?;
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(ExecError::io(
            "opening container root",
            root_path,
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh fd.
    let root = unsafe { OwnedFd::from_raw_fd(fd) };
    identity_in(root.as_fd(), spec, workdir)
}

/// Resolves the step's identity in the root open as `root`, and creates its workdir there.
pub(super) fn identity_in(
    root: BorrowedFd<'_>,
    spec: &StepSpec,
    workdir: &str,
) -> Result<Go, ExecError> {
    let passwd = user::read_in_root(root, "etc/passwd")?;
    let group = user::read_in_root(root, "etc/group")?;
    let u = user::resolve(&spec.user, passwd.as_deref(), group.as_deref())?;
    ensure_workdir(root, workdir)?;
    let mut go = Go {
        uid: u.uid,
        gid: u.gid,
        ..Go::default()
    };
    if u.groups.len() > MAX_GROUPS {
        return Err(ExecError::BadUser {
            spec: spec.user.clone(),
            reason: "more than 256 supplementary groups",
        });
    }
    for (i, g) in u.groups.iter().enumerate() {
        go.groups[i] = *g;
    }
    go.ngroups = u.groups.len() as u32;
    let home = u.home.as_bytes();
    let n = home.len().min(MAX_HOME);
    go.home[..n].copy_from_slice(&home[..n]);
    go.home_len = n as u32;
    Ok(go)
}

/// Splits a stream into lines for an [`Output::Lines`] callback.
#[derive(Default)]
struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    fn feed(&mut self, data: &[u8], cb: &mut dyn FnMut(&[u8])) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            cb(&self.buf[start..start + pos]);
            start += pos + 1;
        }
        while self.buf.len() - start >= CHUNK {
            cb(&self.buf[start..start + CHUNK]);
            start += CHUNK;
        }
        self.buf.drain(..start);
    }

    fn finish(&mut self, cb: &mut dyn FnMut(&[u8])) {
        if !self.buf.is_empty() {
            cb(&self.buf);
            self.buf.clear();
        }
    }
}

/// The mount plan of a step's container.
fn step_ops(
    spec: &StepSpec,
    hostname: &str,
    step: &StepDir,
    mode: Snapshot,
) -> Result<Vec<Op>, ExecError> {
    let root = match mode {
        Snapshot::Overlay => RootPlan::Overlay {
            links_dir: path_c(&step.links)?,
            merged: path_c(&step.merged)?,
            options: cstring(
                "overlay options",
                super::isolation::overlay_options_here(plan::overlay_options_named(
                    &step.lower_names,
                    true,
                )),
            )?,
        },
        Snapshot::Copy => RootPlan::Copy {
            rootfs: path_c(&step.rootfs)?,
        },
    };
    let mut etc_files = Vec::new();
    for (rel, host) in &step.etc_files {
        etc_files.push((cstring("path", rel.as_str())?, path_c(host)?));
    }
    let mut binds = Vec::new();
    for (src, rel, ro) in &step.binds {
        binds.push((path_c(src)?, cstring("bind target", rel.as_str())?, *ro));
    }
    let mut ops = plan::build(&PlanInput {
        root,
        own_network: spec.network != NetworkMode::Host,
        hostname: cstring("hostname", hostname)?,
        etc_files,
        binds,
        tmpfs: spec
            .tmpfs
            .iter()
            .map(|(path, opts)| {
                let (flags, data) = plan::split_tmpfs_options(opts);
                Ok((
                    cstring("tmpfs target", path.trim_start_matches('/'))?,
                    cstring("tmpfs options", data)?,
                    flags,
                ))
            })
            .collect::<Result<_, ExecError>>()?,
        readonly_root: spec.readonly_root,
        shm_size: spec.shm_size,
    });
    super::isolation::adapt_plan(&mut ops, spec.network != NetworkMode::Host);
    Ok(ops)
}

/// Runs a new command in an existing container: joins the namespaces of `target` (a pidfd of
/// its PID 1) — mount (and so its root), PID, UTS, IPC and network — then applies the same
/// defaults as a step: capabilities, seccomp, user, working directory, no leaked fds
/// (`docker exec`). Nothing is mounted; the command's writes go to the container's root.
pub fn exec_in(
    spec: &StepSpec,
    target: BorrowedFd<'_>,
    mut io: StepIo<'_>,
) -> Result<ExitStatus, ExecError> {
    validate(spec)?;
    let hostname = spec.hostname.clone().unwrap_or_default();
    let ops = vec![Op::JoinNamespaces {
        pidfd: target.as_raw_fd(),
        flags: libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET,
    }];
    // The PID namespace cannot be joined by the child itself (it would apply to its children
    // only), so this thread's children go there for the one clone, then back.
    let own = std::fs::File::open("/proc/thread-self/ns/pid_for_children")
        .map_err(|e| ExecError::io("opening", "/proc/thread-self/ns/pid_for_children", e))?;
    // SAFETY: setns on valid fds; it only changes where this thread's future children go.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        return Err(ExecError::Setup {
            stage: "joining the container's PID namespace".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let result = attempt(spec, &mut io, &hostname, ops, Some(own.as_fd()));
    // SAFETY: as above; back to the namespace this thread had (attempt already did, right
    // after the clone; this covers its early returns).
    unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
    match result {
        Ok(status) => Ok(status),
        Err(Attempt::Failed(e)) => Err(e),
        Err(Attempt::OverlayFailed(errno)) => Err(ExecError::Setup {
            stage: "exec".into(),
            source: errno.into(),
        }),
    }
}

/// What the child process reads after the clone, prepared while allocation is still
/// allowed. The pointers in `argv`/`envp`/`home` point into heap buffers owned here, which
/// the child sees in its copy of the address space.
pub(super) struct ExecImage {
    pub(super) argv0_has_slash: bool,
    pub(super) candidates: Vec<CString>,
    _argv: Vec<CString>,
    _env: Vec<CString>,
    /// `[init?, <resolved path slot>, argv…, NULL]`.
    pub(super) argv_ptrs: Vec<*const c_char>,
    /// `HOME=` and room for the value the child fills in.
    _home_buf: Vec<u8>,
    pub(super) envp: Vec<*const c_char>,
    pub(super) home: Option<HomeSlot>,
    pub(super) workdir: String,
    pub(super) workdir_c: CString,
    pub(super) filter: Vec<libc::sock_filter>,
    pub(super) trampoline_fd: RawFd,
}

impl ExecImage {
    pub(super) fn new(spec: &StepSpec, hostname: &str) -> Result<ExecImage, ExecError> {
        let (env, need_home) = final_env(spec, hostname);
        let path_value = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let argv0 = spec.argv[0].as_str();
        let candidates: Vec<CString> = candidates(argv0, &path_value)
            .into_iter()
            .map(|c| cstring("command", c))
            .collect::<Result<_, _>>()?;
        let argv_c: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstring("argument", a.as_str()))
            .collect::<Result<_, _>>()?;
        let env_c: Vec<CString> = env
            .iter()
            .map(|e| cstring("environment", e.as_str()))
            .collect::<Result<_, _>>()?;
        let mut argv_ptrs: Vec<*const c_char> = Vec::with_capacity(argv_c.len() + 3);
        // With --init: [init, <path>, argv…]; init execs argv[1] with argv[2..].
        if spec.init {
            argv_ptrs.push(c"init".as_ptr());
        }
        argv_ptrs.push(std::ptr::null());
        argv_ptrs.extend(argv_c.iter().map(|a| a.as_ptr()));
        argv_ptrs.push(std::ptr::null());
        let mut home_buf = vec![0u8; 5 + MAX_HOME + 1];
        home_buf[..5].copy_from_slice(b"HOME=");
        let mut envp: Vec<*const c_char> = env_c.iter().map(|e| e.as_ptr()).collect();
        let home = if need_home {
            envp.push(home_buf.as_ptr().cast());
            // SAFETY: 5 is within the buffer.
            Some(HomeSlot {
                ptr: unsafe { home_buf.as_mut_ptr().add(5) },
                cap: MAX_HOME + 1,
            })
        } else {
            None
        };
        envp.push(std::ptr::null());
        let workdir = stepdir::clean_workdir(if spec.workdir.is_empty() {
            "/"
        } else {
            &spec.workdir
        });
        let workdir_c = cstring("working directory", workdir.as_str())?;
        let trampoline_fd = if spec.init {
            super::init::fd()?
        } else {
            trampoline::fd()?
        };
        Ok(ExecImage {
            argv0_has_slash: argv0.contains('/'),
            candidates,
            _argv: argv_c,
            _env: env_c,
            argv_ptrs,
            _home_buf: home_buf,
            envp,
            home,
            workdir,
            workdir_c,
            filter: seccomp::default_filter(spec.mknod_any),
            trampoline_fd,
        })
    }
}

/// The descriptors of one attempt: the child's stdio, the parent's output readers, the
/// report pipe (child → parent) and the go socket (parent → child).
pub(super) struct AttemptFds {
    child_stdio: [Option<OwnedFd>; 3],
    readers: [Option<OwnedFd>; 2],
    report_r: OwnedFd,
    report_w: OwnedFd,
    go_r: OwnedFd,
    go_w: OwnedFd,
}

impl AttemptFds {
    pub(super) fn open(io: &StepIo<'_>) -> Result<AttemptFds, ExecError> {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| ExecError::io("opening", "/dev/null", e))?;
        let mut child_stdio: [Option<OwnedFd>; 3] = [None, None, None];
        child_stdio[0] = match &io.stdin {
            Input::Null => Some(dup_high(null.as_fd())?),
            Input::Inherit => None,
            Input::Fd(fd) => Some(dup_high(*fd)?),
        };
        let mut readers: [Option<OwnedFd>; 2] = [None, None];
        for (i, out) in [&io.stdout, &io.stderr].into_iter().enumerate() {
            child_stdio[i + 1] = match out {
                Output::Null => Some(dup_high(null.as_fd())?),
                Output::Inherit => None,
                Output::Fd(fd) => Some(dup_high(*fd)?),
                Output::Lines(_) => {
                    let (r, w) = pipe()?;
                    readers[i] = Some(r);
                    Some(dup_high(w.as_fd())?)
                }
            };
        }
        let (report_r, report_w) = pipe()?;
        // A socket, not a pipe: a console fd travels over it (SCM_RIGHTS) after the identity.
        let (go_r, go_w) = socketpair()?;
        Ok(AttemptFds {
            child_stdio,
            readers,
            report_r,
            report_w,
            go_r,
            go_w,
        })
    }

    /// The parent's ends, which the child closes first (so a dead parent shows up as EOF).
    pub(super) fn parent_ends(&self) -> Vec<RawFd> {
        let mut close_fds = vec![self.report_r.as_raw_fd(), self.go_w.as_raw_fd()];
        close_fds.extend(self.readers.iter().flatten().map(|r| r.as_raw_fd()));
        close_fds
    }

    /// After the clone: closes the child's ends here and returns the parent's (output
    /// readers, report, go).
    pub(super) fn into_parent_ends(self) -> ([Option<OwnedFd>; 2], OwnedFd, OwnedFd) {
        (self.readers, self.report_r, self.go_w)
    }

    /// The child's report and go ends, as raw fds (valid while `self` lives).
    pub(super) fn child_ends(&self) -> (RawFd, RawFd) {
        (self.report_w.as_raw_fd(), self.go_r.as_raw_fd())
    }

    pub(super) fn child_stdio(&self) -> [Option<RawFd>; 3] {
        [
            self.child_stdio[0].as_ref().map(|f| f.as_raw_fd()),
            self.child_stdio[1].as_ref().map(|f| f.as_raw_fd()),
            self.child_stdio[2].as_ref().map(|f| f.as_raw_fd()),
        ]
    }
}

fn attempt(
    spec: &StepSpec,
    io: &mut StepIo<'_>,
    hostname: &str,
    ops: Vec<Op>,
    joined: Option<BorrowedFd<'_>>,
) -> Result<ExitStatus, Attempt> {
    let mut image = ExecImage::new(spec, hostname)?;
    let fds = AttemptFds::open(io)?;
    let close_fds = fds.parent_ends();
    let argv_base = image.argv_ptrs.as_mut_ptr();
    let child_plan = ChildPlan {
        close_fds: &close_fds,
        stdio: fds.child_stdio(),
        ops: &ops,
        keep_caps: DEFAULT_CAPS,
        last_cap: last_cap(),
        seccomp: &image.filter,
        workdir: &image.workdir_c,
        candidates: &image.candidates,
        argv0_has_slash: image.argv0_has_slash,
        trampoline_fd: image.trampoline_fd,
        // SAFETY: index 1 exists when init is in front (init, slot, …, NULL).
        argv: unsafe { argv_base.add(usize::from(spec.init)) },
        exec_argv: argv_base.cast_const(),
        envp: image.envp.as_ptr(),
        home: image.home,
        console: io.console.is_some(),
    };
    let mut container = clone_child(spec, joined, &child_plan, &fds)?;
    let (readers, report_r, go_w) = fds.into_parent_ends();
    // The namespace exists from the clone on: pasta configures it while the child sets up
    // its root. It stops when this returns. A pooled namespace has its pasta already.
    let mut pasta =
        if joined.is_none() && spec.network == NetworkMode::Sandbox && spec.netns.is_none() {
            match Pasta::spawn_for(container.pid, PastaOptions::sandbox()) {
                Ok(p) => Some(p),
                Err(e) => {
                    container.abort();
                    return Err(network_error(e).into());
                }
            }
        } else {
            None
        };
    let failure_of = |r: Report| failure(r, &ops, spec, &image.workdir);
    handshake(
        spec,
        io,
        &mut container,
        &report_r,
        go_w,
        pasta.as_mut(),
        &image.workdir,
    )
    .map_err(|e| e.into_attempt(&failure_of))?;
    let ended = relay(spec, io, &container, report_r, readers)?;
    let status = container.wait()?;
    if let Some(r) = ended.failed {
        return Err(failure_of(r));
    }
    if ended.killed {
        return Err(ExecError::Interrupted.into());
    }
    Ok(status)
}

/// Clones the container process, which runs `plan` and ends in exec (or reports a failure
/// and exits); in the parent, returns it. With `joined`, this thread's PID namespace for
/// children is switched back to its own right after.
fn clone_child(
    spec: &StepSpec,
    joined: Option<BorrowedFd<'_>>,
    plan: &ChildPlan<'_>,
    fds: &AttemptFds,
) -> Result<Container, ExecError> {
    let mut flags = libc::CLONE_PIDFD | libc::SIGCHLD;
    if joined.is_none() {
        flags |= libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        // A pooled namespace is joined by the child (the first op) instead.
        if spec.network != NetworkMode::Host && spec.netns.is_none() {
            flags |= libc::CLONE_NEWNET;
        }
    }
    let mut pidfd: c_int = -1;
    // SAFETY: clone without CLONE_VM and without a new stack behaves like fork: the child
    // gets a copy of this address space and returns here with 0. From then on it only runs
    // `setup::run_child` (async-signal-safe) and ends in exec or _exit, never returning into
    // this function's normal flow or running destructors.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as c_long,
            0 as c_long,
            &mut pidfd as *mut c_int,
            0 as c_long,
            0 as c_long,
        )
    };
    if pid == 0 {
        let mut k = RealKernel {
            report_fd: fds.report_w.as_raw_fd(),
            go_fd: fds.go_r.as_raw_fd(),
        };
        let (stage, errno) = setup::run_child(&mut k, plan);
        kernel::Kernel::report(
            &mut k,
            Report {
                kind: Report::FAILED,
                stage: stage.code(),
                errno: errno as i32,
            },
        );
        // SAFETY: _exit is async-signal-safe and skips atexit handlers and destructors.
        unsafe { libc::_exit(127) };
    }
    if let Some(own) = joined {
        // Back to our own PID namespace at once: while this thread's children would go into
        // another one, it cannot even start a thread (clone(CLONE_THREAD) gives EINVAL).
        // SAFETY: setns on a valid namespace fd.
        unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
    }
    if pid < 0 {
        return Err(sys_err());
    }
    // SAFETY: CLONE_PIDFD stored a fresh pidfd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Container {
        pid: pid as libc::pid_t,
        pidfd,
        reaped: false,
    })
}

/// Why the handshake failed: the child reported a failure, or the parent's side did.
enum HandshakeError {
    Child(Report),
    Parent(ExecError),
}

impl From<ExecError> for HandshakeError {
    fn from(e: ExecError) -> Self {
        HandshakeError::Parent(e)
    }
}

impl HandshakeError {
    fn into_attempt(self, failure_of: &dyn Fn(Report) -> Attempt) -> Attempt {
        match self {
            HandshakeError::Child(r) => failure_of(r),
            HandshakeError::Parent(e) => Attempt::Failed(e),
        }
    }
}

/// The root is ready: resolves the user inside it, waits for the network, lets the caller
/// prepare the process, sends the identity (and a console) and tells the caller it starts.
fn handshake(
    spec: &StepSpec,
    io: &mut StepIo<'_>,
    container: &mut Container,
    report_r: &OwnedFd,
    go_w: OwnedFd,
    pasta: Option<&mut Pasta>,
    workdir: &str,
) -> Result<(), HandshakeError> {
    match read_report(report_r, &container.pidfd)? {
        Some(r) if r.kind == Report::READY => {}
        Some(r) => {
            container.wait()?;
            return Err(HandshakeError::Child(r));
        }
        None => {
            let status = container.wait()?;
            return Err(ExecError::Setup {
                stage: format!("container setup (process ended: {status:?})"),
                source: std::io::Error::other("no report from the container process"),
            }
            .into());
        }
    }
    let go = identity(container.pid, spec, workdir)?;
    for u in &spec.ulimits {
        if let Err(source) = u.apply(container.pid) {
            container.abort();
            return Err(ExecError::Setup {
                stage: format!("setting the resource limit {u}"),
                source,
            }
            .into());
        }
    }
    // Outbound network is up before the command's first instruction.
    if let Some(Err(e)) = pasta.map(|p| p.ready()) {
        container.abort();
        return Err(network_error(e).into());
    }
    if let Some(cb) = io.on_ready.as_mut() {
        if let Err(e) = cb(container.pid) {
            container.abort();
            return Err(ExecError::Setup {
                stage: "preparing the container".into(),
                source: e,
            }
            .into());
        }
    }
    write_all(&go_w, go.as_bytes())?;
    if let Some(cb) = io.console.as_mut() {
        let (master, slave) = open_console(container.pid, go.uid)?;
        // The caller has the master (and may size it) before the command has its terminal.
        cb(master);
        send_fd(&go_w, slave.as_fd())?;
    }
    drop(go_w);
    // The command runs once its exec closed the report pipe (close-on-exec). A command that
    // is missing or not executable is reported before that, so the caller hears of it as a
    // failure to start (Docker's 127/126 from `run -d`), never as a start.
    if let Some(r) = read_report(report_r, &container.pidfd)? {
        container.wait()?;
        return Err(HandshakeError::Child(r));
    }
    if let Some(cb) = io.on_start.as_mut() {
        cb(container.pid, container.pidfd.as_fd());
    }
    Ok(())
}

/// How the run ended, besides its exit status.
pub(super) struct Ended {
    /// The child reported a failure (of its exec) late.
    pub(super) failed: Option<Report>,
    /// It was killed because the step was cancelled.
    pub(super) killed: bool,
}

/// Runs until the container exits (and a little after, to drain): streams output to
/// `Output::Lines` callbacks, watches for a failure report and for cancellation.
pub(super) fn relay(
    spec: &StepSpec,
    io: &mut StepIo<'_>,
    container: &Container,
    report_r: OwnedFd,
    mut readers: [Option<OwnedFd>; 2],
) -> Result<Ended, ExecError> {
    let mut report_open = Some(report_r);
    let mut ended = Ended {
        failed: None,
        killed: false,
    };
    let mut lines = [LineBuf::default(), LineBuf::default()];
    let mut exited_at: Option<Instant> = None;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        if let Some(c) = &spec.cancel {
            if c.load(Ordering::Relaxed) && !ended.killed {
                container.kill();
                ended.killed = true;
            }
        }
        let mut fds = Vec::with_capacity(4);
        let mut who = Vec::with_capacity(4);
        if let Some(r) = &report_open {
            fds.push(pfd(r.as_raw_fd()));
            who.push(0usize);
        }
        for (i, r) in readers.iter().enumerate() {
            if let Some(r) = r {
                fds.push(pfd(r.as_raw_fd()));
                who.push(1 + i);
            }
        }
        if exited_at.is_none() {
            fds.push(pfd(container.pidfd.as_raw_fd()));
            who.push(3);
        }
        if fds.is_empty() {
            break;
        }
        let timeout = match exited_at {
            Some(t) => {
                let left = DRAIN_GRACE.saturating_sub(t.elapsed());
                if left.is_zero() {
                    break;
                }
                left.as_millis() as c_int
            }
            None if spec.cancel.is_some() => CANCEL_POLL_MS,
            None => -1,
        };
        poll(&mut fds, timeout)?;
        for (f, w) in fds.iter().zip(who.iter()) {
            if f.revents == 0 {
                continue;
            }
            match *w {
                0 => {
                    if let Some(r) = &report_open {
                        match read_report_now(r)? {
                            Some(rep) => ended.failed = Some(rep),
                            None => report_open = None,
                        }
                    }
                }
                1 | 2 => {
                    let i = *w - 1;
                    read_output(io, i, &mut readers[i], &mut lines[i], &mut chunk);
                }
                _ => exited_at = Some(Instant::now()),
            }
        }
    }
    for (i, out) in [&mut io.stdout, &mut io.stderr].into_iter().enumerate() {
        if let Output::Lines(cb) = out {
            lines[i].finish(&mut **cb);
        }
    }
    Ok(ended)
}

/// Reads what output `i` (0 stdout, 1 stderr) has into its line splitter; at its end,
/// flushes the last line and closes the reader.
fn read_output(
    io: &mut StepIo<'_>,
    i: usize,
    reader: &mut Option<OwnedFd>,
    lines: &mut LineBuf,
    chunk: &mut [u8],
) {
    let Some(r) = reader else { return };
    // SAFETY: valid buffer.
    let n = unsafe { libc::read(r.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
    if n < 0 && Errno::last() == Errno::EINTR {
        return;
    }
    let out = if i == 0 {
        &mut io.stdout
    } else {
        &mut io.stderr
    };
    let Output::Lines(cb) = out else { return };
    if n <= 0 {
        lines.finish(&mut **cb);
        *reader = None;
    } else {
        lines.feed(&chunk[..n as usize], &mut **cb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_gets_docker_defaults_only_when_missing() {
        let mut spec = StepSpec::new(vec![], "/tmp", vec!["sh".into()]);
        let (env, home) = final_env(&spec, "h1");
        assert_eq!(
            env,
            vec![format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h1".to_string()]
        );
        assert!(home);
        spec.env = vec!["PATH=/bin".into(), "HOME=/x".into()];
        let (env, home) = final_env(&spec, "h1");
        assert_eq!(env, vec!["PATH=/bin", "HOME=/x", "HOSTNAME=h1"]);
        assert!(!home);
    }

    fn failed(stage: Stage, errno: Errno) -> Report {
        Report {
            kind: Report::FAILED,
            stage: stage.code(),
            errno: errno as i32,
        }
    }

    #[test]
    fn child_failures_map_to_typed_errors() {
        let spec = StepSpec::new(vec![], "/tmp", vec!["tool".into()]);
        let ops = vec![
            Op::PrivateMounts,
            Op::MountOverlay {
                target: CString::new("/m").expect("c"),
                options: CString::new("lowerdir=i").expect("c"),
            },
            Op::Mount {
                src: CString::new("proc").expect("c"),
                rel: CString::new("proc").expect("c"),
                fstype: CString::new("proc").expect("c"),
                flags: 0,
                data: None,
                optional: false,
            },
        ];
        let map = |r| match failure(r, &ops, &spec, "/w") {
            Attempt::OverlayFailed(e) => format!("overlay {e}"),
            Attempt::Failed(e) => e.to_string(),
        };
        // An overlay mount failure triggers the copy fallback instead of an error.
        assert_eq!(
            map(failed(Stage::Op(1), Errno::EINVAL)),
            "overlay EINVAL: Invalid argument"
        );
        assert_eq!(
            map(failed(Stage::Op(2), Errno::ELOOP)),
            "image path /proc is a symlink; refusing to mount over it"
        );
        assert!(map(failed(Stage::Op(2), Errno::EPERM)).contains("mount proc on /proc"));
        assert_eq!(
            map(failed(Stage::Lookup, Errno::ENOENT)),
            "exec: \"tool\": executable file not found in $PATH"
        );
        assert!(map(failed(Stage::Workdir, Errno::ELOOP)).starts_with("working directory /w"));
    }

    #[test]
    fn commands_are_looked_up_in_path_order() {
        assert_eq!(
            candidates("sh", "/usr/bin:/bin"),
            vec!["/usr/bin/sh", "/bin/sh"]
        );
        assert_eq!(candidates("./run", "/bin"), vec!["./run"]);
        assert_eq!(candidates("x", ":/bin/"), vec!["./x", "/bin/x"]);
    }

    #[test]
    fn lines_are_split_and_long_lines_chunked() {
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut cb = |l: &[u8]| got.push(l.to_vec());
        let mut lb = LineBuf::default();
        lb.feed(b"a\nb", &mut cb);
        lb.feed(b"c\n\nd", &mut cb);
        lb.finish(&mut cb);
        assert_eq!(
            got,
            vec![b"a".to_vec(), b"bc".to_vec(), b"".to_vec(), b"d".to_vec()]
        );
        let mut n = 0;
        let mut count = |l: &[u8]| {
            assert!(l.len() <= CHUNK);
            n += 1;
        };
        let mut lb = LineBuf::default();
        lb.feed(&vec![b'x'; CHUNK * 2 + 10], &mut count);
        lb.finish(&mut count);
        assert_eq!(n, 3);
    }
}
