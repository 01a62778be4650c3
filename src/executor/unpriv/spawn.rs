//! Starts the step's process in the unprivileged mode: a plain fork that chroots into the
//! copied root and then runs the root mode's own child sequence ([`setup::run_child`]: stdio,
//! bounding set, seccomp, identity, workdir, `$PATH` lookup, exec through the trampoline)
//! with an empty mount plan; in the parent, the handshake, output relay and end of the
//! step's process group.
//!
//! # `/proc` and `/dev` through the notify supervisor
//!
//! The parent builds a [`notify::Filter`] and a `socketpair` before the fork. The child,
//! after `chroot` and `PR_SET_NO_NEW_PRIVS` and before the root mode's sequence, installs it
//! ([`notify::Filter::install_in_child`] sends the listener fd back over the socket). Only
//! then does it report READY, so once the parent has that report the listener is waiting on
//! the socket: the parent takes it ([`notify::recv_listener`]) and starts the
//! [`notify::Supervisor`] before sending the go-ahead, since every intercepted call the child
//! makes from then on (the workdir, the `$PATH` lookup, the step itself) waits for an
//! answer. The supervisor is stopped once the step's first process is reaped and its group
//! killed.

use std::ffi::CString;
use std::ops::Not;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::{c_int, c_long};

use crate::executor::error::ExecError;
use crate::executor::kernel::{self, RealKernel, Report};
use crate::executor::notify;
use crate::executor::run::{self, Attempt, AttemptFds, Container, ExecImage};
use crate::executor::seccomp::{self, Guarded};
use crate::executor::setup::{self, ChildPlan, Stage};
use crate::executor::{ExitStatus, StepIo, StepSpec};

/// Runs the step's command chrooted into `root` (open as `root_fd`), to its end.
pub(super) fn run(
    spec: &StepSpec,
    io: &mut StepIo<'_>,
    hostname: &str,
    root: &Path,
    root_fd: BorrowedFd<'_>,
) -> Result<ExitStatus, ExecError> {
    run::validate(spec)?;
    let mut image = ExecImage::new(spec, hostname)?;
    // SAFETY: plain getters.
    let guard = Guarded {
        kiln: unsafe { libc::getpid() },
        kiln_group: unsafe { libc::getpgrp() },
    };
    image.filter =
        seccomp::unprivileged_filter(spec.mknod_any, guard, super::network_allowed(spec).not());
    let go = run::identity_in(root_fd, spec, &image.workdir)?;
    if let Some(slot) = image.home {
        // The parent knows HOME already: fill the slot before the fork.
        let home = go.home();
        let n = home.len().min(slot.cap.saturating_sub(1));
        // SAFETY: the slot points at `cap` writable bytes of the image's buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(home.as_ptr(), slot.ptr, n);
            *slot.ptr.add(n) = 0;
        }
        image.home = None;
    }
    let root_c = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| ExecError::InvalidSpec("root path contains a NUL".into()))?;
    let fds = AttemptFds::open(io)?;
    let close_fds = fds.parent_ends();
    let argv_base = image.argv_ptrs.as_mut_ptr();
    let plan = ChildPlan {
        close_fds: &close_fds,
        stdio: fds.child_stdio(),
        ops: &[],
        keep_caps: super::STEP_CAPS,
        last_cap: run::last_cap(),
        seccomp: &image.filter,
        workdir: &image.workdir_c,
        candidates: &image.candidates,
        argv0_has_slash: image.argv0_has_slash,
        trampoline_fd: image.trampoline_fd,
        // SAFETY: index 1 exists when init is in front (init, slot, …, NULL).
        argv: unsafe { argv_base.add(usize::from(spec.init)) },
        exec_argv: argv_base.cast_const(),
        envp: image.envp.as_ptr(),
        home: None,
        console: false,
    };
    let (report_w, go_r) = fds.child_ends();
    let emu = Emulation::new()?;
    let mut container = fork_child(&root_c, &plan, report_w, go_r, &emu)?;
    let emu = emu.forked();
    let (readers, report_r, go_w) = fds.into_parent_ends();
    let failure_of = |r: Report| match run::failure(r, &[], spec, &image.workdir) {
        Attempt::Failed(e) => e,
        Attempt::OverlayFailed(errno) => ExecError::Spawn(errno.into()),
    };
    match run::read_report(&report_r, &container.pidfd)? {
        Some(r) if r.kind == Report::READY => {}
        Some(r) => {
            container.wait()?;
            return Err(failure_of(r));
        }
        None => {
            let status = container.wait()?;
            return Err(ExecError::Setup {
                stage: format!("step setup (process ended: {status:?})"),
                source: std::io::Error::other("no report from the step's process"),
            });
        }
    }
    for u in &spec.ulimits {
        u.apply(container.pid).map_err(|source| ExecError::Setup {
            stage: format!("setting the resource limit {u}"),
            source,
        })?;
    }
    let supervisor = emu.start(root, container.pid)?;
    run::write_all(&go_w, go.as_bytes())?;
    drop(go_w);
    if let Some(r) = run::read_report(&report_r, &container.pidfd)? {
        container.wait()?;
        return Err(failure_of(r));
    }
    if let Some(cb) = io.on_start.as_mut() {
        cb(container.pid, container.pidfd.as_fd());
    }
    let ended = run::relay(spec, io, &container, report_r, readers)?;
    end_group(&container);
    let status = container.wait()?;
    supervisor.stop();
    if let Some(r) = ended.failed {
        return Err(failure_of(r));
    }
    if ended.killed {
        return Err(ExecError::Interrupted);
    }
    Ok(status)
}

/// Kills what is left of the step's process group (its first process is a zombie until
/// reaped, so the group's id cannot have been reused).
fn end_group(container: &Container) {
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(-container.pid, libc::SIGKILL) };
}

/// Forks the step's process: it chroots into `root` and runs `plan`, ending in exec (or a
/// report and `_exit`).
fn fork_child(
    root: &CString,
    plan: &ChildPlan<'_>,
    report_w: c_int,
    go_r: c_int,
    emu: &Emulation,
) -> Result<Container, ExecError> {
    let notify = (&emu.filter, emu.child_sock.as_raw_fd());
    let mut pidfd: c_int = -1;
    // SAFETY: clone without CLONE_VM or a new stack behaves like fork; the child runs only
    // async-signal-safe code (raw syscalls, `setup::run_child`) and ends in exec or _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PIDFD | libc::SIGCHLD) as c_long,
            0 as c_long,
            &mut pidfd as *mut c_int,
            0 as c_long,
            0 as c_long,
        )
    };
    if pid == 0 {
        let mut k = RealKernel {
            report_fd: report_w,
            go_fd: go_r,
        };
        let (stage, errno) = child(&mut k, root, plan, notify);
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
    if pid < 0 {
        return Err(ExecError::Spawn(std::io::Error::last_os_error()));
    }
    // SAFETY: CLONE_PIDFD stored a fresh pidfd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Container {
        pid: pid as libc::pid_t,
        pidfd,
        reaped: false,
    })
}

/// The child, between fork and exec: async-signal-safe only.
fn child(
    k: &mut RealKernel,
    root: &CString,
    plan: &ChildPlan<'_>,
    (filter, sock): (&notify::Filter, c_int),
) -> setup::Failure {
    let errno = nix::errno::Errno::last;
    // SAFETY: valid C strings.
    if unsafe { libc::chroot(root.as_ptr()) } != 0 || unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return (Stage::Start, errno());
    }
    // No new privileges: an unprivileged process may then install a seccomp filter, and no
    // set-id binary of the image gains anything.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return (Stage::Seccomp, errno());
    }
    // The `/proc` emulation's filter, which needs no_new_privs (kiln has no CAP_SYS_ADMIN
    // here). Before READY: the parent then knows the listener is on its way.
    if let Err(e) = filter.install_in_child(sock) {
        return (Stage::Seccomp, e);
    }
    setup::run_child(k, plan)
}

/// The `/proc` emulation of one step: its filter and the socketpair the listener comes back
/// over, made before the fork.
struct Emulation {
    filter: notify::Filter,
    parent_sock: OwnedFd,
    child_sock: OwnedFd,
}

/// [`Emulation`] after the fork: the child's end is closed in the parent, so a child that
/// ends without sending the listener gives an end of file, not a wait.
struct Forked {
    parent_sock: OwnedFd,
}

fn emulation_error(
    what: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ExecError {
    ExecError::Setup {
        stage: what.to_string(),
        source: std::io::Error::other(e),
    }
}

impl Emulation {
    fn new() -> Result<Emulation, ExecError> {
        let filter = notify::Filter::new().map_err(|e| emulation_error("the /proc filter", e))?;
        let mut sp = [0 as c_int; 2];
        // SAFETY: socketpair fills two fds.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sp.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(ExecError::Spawn(std::io::Error::last_os_error()));
        }
        // SAFETY: two fresh fds from socketpair.
        let (parent_sock, child_sock) =
            unsafe { (OwnedFd::from_raw_fd(sp[0]), OwnedFd::from_raw_fd(sp[1])) };
        Ok(Emulation {
            filter,
            parent_sock,
            child_sock,
        })
    }

    fn forked(self) -> Forked {
        drop(self.child_sock);
        Forked {
            parent_sock: self.parent_sock,
        }
    }
}

impl Forked {
    /// Takes the listener the child sent (it reported READY, so it is there) and starts the
    /// supervisor over `root` for the step whose first process is `pid`.
    fn start(self, root: &Path, pid: libc::pid_t) -> Result<notify::Supervisor, ExecError> {
        let listener = notify::recv_listener(&self.parent_sock)
            .map_err(|e| emulation_error("receiving the /proc listener", e))?;
        notify::Supervisor::spawn(listener, root.to_path_buf(), pid)
            .map_err(|e| emulation_error("starting the /proc supervisor", e))
    }
}
