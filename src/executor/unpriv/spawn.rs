//! Starts the step's process in the unprivileged mode: a plain fork that chroots into the
//! copied root and then runs the root mode's own child sequence ([`setup::run_child`]: stdio,
//! bounding set, seccomp, identity, workdir, `$PATH` lookup, exec through the trampoline)
//! with an empty mount plan; in the parent, the handshake, output relay and end of the
//! step's process group.
//!
//! # Hook for the `/proc` and `/dev` emulation
//!
//! A seccomp user-notification supervisor (`executor::notify`, written separately) will give
//! steps an emulated `/proc`. Its place here: build `notify::Filter::new()` in the parent
//! before the fork with a `socketpair`; in the child, after `chroot` and before
//! [`setup::run_child`], call `filter.install_in_child(sock)` (it sends the listener fd over
//! the socket); in the parent, receive the listener and start
//! `notify::Supervisor::spawn(listener, root, pid)` before sending the go-ahead. The marked
//! `NOTIFY HOOK` lines below are where those calls go; until then a step has no `/proc`.

use std::ffi::CString;
use std::ops::Not;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::{c_int, c_long};

use crate::executor::error::ExecError;
use crate::executor::kernel::{self, RealKernel, Report};
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
    let mut container = fork_child(&root_c, &plan, report_w, go_r)?;
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
    // NOTIFY HOOK (parent): receive the listener and start the supervisor here.
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
) -> Result<Container, ExecError> {
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
        let (stage, errno) = child(&mut k, root, plan);
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
fn child(k: &mut RealKernel, root: &CString, plan: &ChildPlan<'_>) -> setup::Failure {
    let errno = nix::errno::Errno::last;
    // SAFETY: valid C strings.
    if unsafe { libc::chroot(root.as_ptr()) } != 0 || unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return (Stage::Start, errno());
    }
    // NOTIFY HOOK (child): `filter.install_in_child(sock)` goes here, after the chroot.
    // No new privileges: an unprivileged process may then install a seccomp filter, and no
    // set-id binary of the image gains anything.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return (Stage::Seccomp, errno());
    }
    setup::run_child(k, plan)
}
