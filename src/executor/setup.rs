//! What the container's first process does between clone and exec, in order, written against
//! the [`Kernel`] seam: apply the mount plan, pivot, hand over to the parent, take on the
//! step's identity, confine itself, exec.
//!
//! This code runs in a child cloned from a possibly multithreaded parent, so it must stay
//! async-signal-safe: it only reads data the parent prepared ([`ChildPlan`]), writes to the
//! stack, and calls the kernel. No allocation, no formatting, no panicking operations.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use libc::c_char;
use nix::errno::Errno;

use super::kernel::{FileKind, Go, KResult, Kernel, Report, Src};
use super::plan::Op;

/// Where in the child's sequence something failed; sent to the parent as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The n-th step of the mount plan.
    Op(u32),
    /// Process setup (parent-death signal, session, signal dispositions).
    Start,
    /// Wiring stdin/stdout/stderr.
    Stdio,
    /// Waiting for the parent's go-ahead.
    Handshake,
    /// Dropping capabilities from the bounding set.
    Bounding,
    /// Installing the seccomp filter.
    Seccomp,
    /// `setgroups`.
    Groups,
    /// `setresgid`.
    Gid,
    /// `setresuid`.
    Uid,
    /// `capset`.
    Caps,
    /// Entering the working directory.
    Workdir,
    /// Looking the command up in `$PATH`.
    Lookup,
    /// The exec itself.
    Exec,
}

const STAGE_BASE: u32 = 0x1_0000;

impl Stage {
    /// The wire encoding.
    pub fn code(self) -> u32 {
        match self {
            Stage::Op(i) => i.min(STAGE_BASE - 1),
            Stage::Start => STAGE_BASE,
            Stage::Stdio => STAGE_BASE + 1,
            Stage::Handshake => STAGE_BASE + 2,
            Stage::Bounding => STAGE_BASE + 3,
            Stage::Seccomp => STAGE_BASE + 4,
            Stage::Groups => STAGE_BASE + 5,
            Stage::Gid => STAGE_BASE + 6,
            Stage::Uid => STAGE_BASE + 7,
            Stage::Caps => STAGE_BASE + 8,
            Stage::Workdir => STAGE_BASE + 9,
            Stage::Lookup => STAGE_BASE + 10,
            Stage::Exec => STAGE_BASE + 11,
        }
    }

    /// Decodes [`Stage::code`].
    pub fn from_code(code: u32) -> Option<Stage> {
        if code < STAGE_BASE {
            return Some(Stage::Op(code));
        }
        Some(match code - STAGE_BASE {
            0 => Stage::Start,
            1 => Stage::Stdio,
            2 => Stage::Handshake,
            3 => Stage::Bounding,
            4 => Stage::Seccomp,
            5 => Stage::Groups,
            6 => Stage::Gid,
            7 => Stage::Uid,
            8 => Stage::Caps,
            9 => Stage::Workdir,
            10 => Stage::Lookup,
            11 => Stage::Exec,
            _ => return None,
        })
    }
}

/// Where the child writes the `HOME` value it receives: the bytes after `HOME=` of a buffer
/// the parent allocated and already put in `envp`.
#[derive(Debug, Clone, Copy)]
pub struct HomeSlot {
    /// First byte after `HOME=`.
    pub ptr: *mut u8,
    /// Bytes available, including the terminating NUL.
    pub cap: usize,
}

/// Everything the child needs, prepared by the parent before clone.
#[derive(Debug)]
pub struct ChildPlan<'a> {
    /// Parent-side pipe ends to close first (so a dead parent shows up as EOF).
    pub close_fds: &'a [RawFd],
    /// New fds 0, 1, 2 (`None`: inherit).
    pub stdio: [Option<RawFd>; 3],
    /// The mount plan.
    pub ops: &'a [Op],
    /// Capabilities to keep (bounding set; effective/permitted for uid 0).
    pub keep_caps: u64,
    /// The kernel's highest capability number.
    pub last_cap: u32,
    /// The seccomp filter (empty: none).
    pub seccomp: &'a [libc::sock_filter],
    /// Working directory inside the root.
    pub workdir: &'a CStr,
    /// Paths to try for `argv[0]`, in `$PATH` order.
    pub candidates: &'a [CString],
    /// Whether `argv[0]` contained a slash (no `$PATH` search).
    pub argv0_has_slash: bool,
    /// The sealed exec trampoline (see `trampoline.rs`).
    pub trampoline_fd: RawFd,
    /// `[<resolved path slot>, argv[0], …, NULL]`; the child fills slot 0.
    pub argv: *mut *const c_char,
    /// The argv array given to exec: `argv` itself, or (with an init in front) the entry
    /// before it.
    pub exec_argv: *const *const c_char,
    /// The environment, NULL-terminated.
    pub envp: *const *const c_char,
    /// Receive a console from the parent after the handshake (see `Kernel::take_console`).
    pub console: bool,
    /// Where to put `HOME`, when the step's env does not set it.
    pub home: Option<HomeSlot>,
}

/// A failure: where and which errno.
pub type Failure = (Stage, Errno);

fn at<T>(stage: Stage, r: KResult<T>) -> Result<T, Failure> {
    r.map_err(|e| (stage, e))
}

/// Runs the child's whole sequence. Returns only on failure (or, with a fake kernel, after
/// the exec call).
pub fn run_child<K: Kernel>(k: &mut K, p: &ChildPlan<'_>) -> Failure {
    match run_child_inner(k, p) {
        Ok(never) => match never {},
        Err(f) => f,
    }
}

enum Never {}

fn run_child_inner<K: Kernel>(k: &mut K, p: &ChildPlan<'_>) -> Result<Never, Failure> {
    for &fd in p.close_fds {
        k.close(fd);
    }
    at(Stage::Start, k.set_parent_death_signal())?;
    at(Stage::Start, k.setsid())?;
    at(Stage::Start, k.reset_signals())?;
    for (target, src) in p.stdio.iter().enumerate() {
        if let Some(fd) = *src {
            at(Stage::Stdio, k.dup2(fd, target as RawFd))?;
        }
    }

    let mut root: Option<RawFd> = None;
    for (i, op) in p.ops.iter().enumerate() {
        at(Stage::Op(i as u32), apply(k, op, &mut root))?;
    }
    k.report(Report {
        kind: Report::READY,
        stage: 0,
        errno: 0,
    });

    let mut go = Go::default();
    at(Stage::Handshake, k.await_go(&mut go))?;
    if p.console {
        at(Stage::Stdio, k.take_console())?;
    }

    // Without no_new_privs (Docker does not set it by default) installing a filter needs
    // CAP_SYS_ADMIN, so the filter goes in after the bounding set is cut but before the
    // identity switch and capset take the capability away. The few calls after it
    // (setgroups, setres[ug]id, capset, prctl, openat2, close_range, execveat) are allowed.
    at(Stage::Bounding, k.drop_bounding(p.keep_caps, p.last_cap))?;
    if !p.seccomp.is_empty() {
        at(Stage::Seccomp, k.install_seccomp(p.seccomp))?;
    }
    at(Stage::Groups, k.set_groups(go.groups()))?;
    at(Stage::Gid, k.set_gid(go.gid))?;
    at(Stage::Uid, k.set_uid(go.uid))?;
    // Docker gives a non-root user no effective/permitted capabilities (the bounding set
    // still limits what setcap binaries get).
    let caps = if go.uid == 0 { p.keep_caps } else { 0 };
    at(Stage::Caps, k.set_caps(caps))?;
    // Changing the effective uid/gid cleared the parent-death signal; arm it again.
    at(Stage::Start, k.set_parent_death_signal())?;

    if let Some(slot) = p.home {
        let home = go.home();
        let n = home.len().min(slot.cap.saturating_sub(1));
        // SAFETY: slot points at `cap` writable bytes owned by this (cloned) process.
        unsafe {
            std::ptr::copy_nonoverlapping(home.as_ptr(), slot.ptr, n);
            *slot.ptr.add(n) = 0;
        }
    }

    // After setuid, as Docker does: a workdir the user cannot enter is an error.
    at(Stage::Workdir, k.chdir_in_root(p.workdir))?;

    let mut chosen: Option<&CString> = None;
    let mut denied = false;
    for cand in p.candidates {
        match k.is_executable(cand) {
            Ok(()) => {
                chosen = Some(cand);
                break;
            }
            Err(Errno::EACCES) => denied = true,
            Err(_) => {}
        }
    }
    let Some(path) = chosen else {
        return Err(if denied {
            (Stage::Exec, Errno::EACCES)
        } else if p.argv0_has_slash {
            (Stage::Exec, Errno::ENOENT)
        } else {
            (Stage::Lookup, Errno::ENOENT)
        });
    };
    // SAFETY: argv has at least the slot and a NULL; the child owns its copy of the array.
    unsafe { *p.argv = path.as_ptr() };

    at(Stage::Exec, k.cloexec_from(3))?;
    // SAFETY: argv and envp are NULL-terminated arrays of C strings prepared by the parent.
    let e = unsafe { k.exec_fd(p.trampoline_fd, p.exec_argv, p.envp) };
    Err((Stage::Exec, e))
}

fn root_fd(root: &Option<RawFd>) -> KResult<RawFd> {
    root.ok_or(Errno::EBADF)
}

fn open_dir_beneath<K: Kernel>(k: &mut K, root: RawFd, rel: &CStr) -> KResult<RawFd> {
    let fd = k.open_beneath(root, rel)?;
    match k.kind(fd) {
        Ok(FileKind::Dir) => Ok(fd),
        Ok(_) => {
            k.close(fd);
            Err(Errno::ENOTDIR)
        }
        Err(e) => {
            k.close(fd);
            Err(e)
        }
    }
}

/// `ST_*` bits of `statfs(2)` and the `MS_*` mount flags they stand for.
const KEPT_FLAGS: [(u64, libc::c_ulong); 5] = [
    (0x0001, libc::MS_RDONLY),      // ST_RDONLY
    (0x0002, libc::MS_NOSUID),      // ST_NOSUID
    (0x0004, libc::MS_NODEV),       // ST_NODEV
    (0x0008, libc::MS_NOEXEC),      // ST_NOEXEC
    (0x2000, libc::MS_NOSYMFOLLOW), // ST_NOSYMFOLLOW
];

/// The mount flags a bind remount must repeat to keep what the mount already has (`st_flags`
/// from `fstatfs`): a remount sets exactly the flags it is given, so leaving out the source
/// mount's `ro`, `nosuid`, `nodev` or `noexec` would loosen the bind — and fail with EPERM
/// where the kernel locked them (a mount inherited into a less privileged user namespace).
/// Atime flags are not repeated: the kernel keeps them on a remount that names none.
pub fn kept_mount_flags(st_flags: u64) -> libc::c_ulong {
    KEPT_FLAGS
        .iter()
        .filter(|(st, _)| st_flags & st != 0)
        .fold(0, |acc, (_, ms)| acc | ms)
}

/// Remounts the bind mount at `rel` adding `flags` to the ones it has. Opens `rel` afresh:
/// an fd opened before the mount still points at what it covers.
fn remount_bind<K: Kernel>(
    k: &mut K,
    root: RawFd,
    rel: &CStr,
    flags: libc::c_ulong,
) -> KResult<()> {
    let fd = k.open_beneath(root, rel)?;
    let res = k.mount_flags(fd).and_then(|st| {
        k.mount_fd(
            Src::None,
            fd,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | flags | kept_mount_flags(st),
            None,
        )
    });
    k.close(fd);
    res
}

fn ok_if_exists(r: KResult<()>) -> KResult<()> {
    match r {
        Err(Errno::EEXIST) => Ok(()),
        other => other,
    }
}

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// Applies one step of the mount plan.
pub fn apply<K: Kernel>(k: &mut K, op: &Op, root: &mut Option<RawFd>) -> KResult<()> {
    match op {
        Op::PrivateMounts => k.make_mounts_private(),
        Op::Chdir(p) => k.chdir(p),
        Op::MountOverlay { target, options } => k.mount_path(
            Src::Name(c"overlay"),
            target,
            Some(c"overlay"),
            NODEV,
            Some(options),
        ),
        Op::BindRoot { path } => bind_root(k, path),
        Op::OpenRoot(p) => {
            *root = Some(k.open_dir(p)?);
            Ok(())
        }
        Op::Mount {
            src,
            rel,
            fstype,
            flags,
            data,
            optional,
        } => {
            let r = root_fd(root).and_then(|r| {
                let fd = open_dir_beneath(k, r, rel)?;
                let res = k.mount_fd(Src::Name(src), fd, Some(fstype), *flags, data.as_deref());
                k.close(fd);
                res
            });
            if *optional {
                Ok(())
            } else {
                r
            }
        }
        Op::BindHost {
            src,
            rel,
            readonly,
            nodev,
        } => bind_host(k, root_fd(root)?, src, rel, *readonly, *nodev),
        Op::Mkdir { parent, name, mode } => in_dir(k, root_fd(root)?, parent, |k, fd| {
            k.mkdir_at(fd, name, *mode)
        }),
        Op::CreateFile { parent, name, mode } => in_dir(k, root_fd(root)?, parent, |k, fd| {
            k.create_file_at(fd, name, *mode)
        }),
        Op::Symlink {
            parent,
            name,
            target,
        } => in_dir(k, root_fd(root)?, parent, |k, fd| {
            k.symlink_at(target, fd, name)
        }),
        Op::Mask(rel) => mask(k, root_fd(root)?, rel),
        Op::ReadOnly(rel) => read_only(k, root_fd(root)?, rel),
        // The root is mounted nodev (see MountOverlay / BindRoot): keep it.
        Op::RemountReadOnly(rel) => remount_bind(k, root_fd(root)?, rel, libc::MS_RDONLY | NODEV),
        Op::PivotRoot(p) => {
            if let Some(fd) = root.take() {
                k.close(fd);
            }
            k.pivot_root(p)
        }
        Op::Hostname(h) => k.set_hostname(h),
        Op::LoopbackUp => k.loopback_up(),
        Op::JoinNamespaces { pidfd, flags } => k.setns(*pidfd, *flags),
    }
}

/// A copied root bound onto itself, then remounted nodev (keeping its other flags).
fn bind_root<K: Kernel>(k: &mut K, path: &CStr) -> KResult<()> {
    k.mount_path(
        Src::Name(path),
        path,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    let fd = k.open_dir(path)?;
    let st = k.mount_flags(fd);
    k.close(fd);
    k.mount_path(
        Src::None,
        path,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | NODEV | kept_mount_flags(st?),
        None,
    )
}

/// A host path bound at `rel` in the root, then made read-only and/or nodev.
fn bind_host<K: Kernel>(
    k: &mut K,
    root: RawFd,
    src: &CStr,
    rel: &CStr,
    readonly: bool,
    nodev: bool,
) -> KResult<()> {
    let fd = k.open_beneath(root, rel)?;
    let res = k.mount_fd(Src::Name(src), fd, None, libc::MS_BIND, None);
    k.close(fd);
    res?;
    let mut flags = 0;
    if readonly {
        flags |= libc::MS_RDONLY | NOSUID | NODEV;
    }
    if nodev {
        flags |= NODEV;
    }
    if flags != 0 {
        remount_bind(k, root, rel, flags)?;
    }
    Ok(())
}

/// Runs `f` on the directory `parent` beneath the root; what it creates may exist already.
fn in_dir<K: Kernel>(
    k: &mut K,
    root: RawFd,
    parent: &CStr,
    f: impl FnOnce(&mut K, RawFd) -> KResult<()>,
) -> KResult<()> {
    let fd = open_dir_beneath(k, root, parent)?;
    let res = ok_if_exists(f(k, fd));
    k.close(fd);
    res
}

/// Hides `rel` (if it exists): an empty read-only tmpfs over a directory, the host's
/// `/dev/null` over anything else.
fn mask<K: Kernel>(k: &mut K, root: RawFd, rel: &CStr) -> KResult<()> {
    let Some(fd) = open_if_exists(k, root, rel)? else {
        return Ok(());
    };
    let res = match k.kind(fd) {
        Ok(FileKind::Dir) => k.mount_fd(
            Src::Name(c"tmpfs"),
            fd,
            Some(c"tmpfs"),
            libc::MS_RDONLY | NOSUID | NODEV | NOEXEC,
            None,
        ),
        // The host's /dev/null, by host path, before pivot_root: nothing the image
        // controls (the CVE-2025-31133 trick swapped the container's /dev/null).
        Ok(_) => k.mount_fd(Src::Name(c"/dev/null"), fd, None, libc::MS_BIND, None),
        Err(e) => Err(e),
    };
    k.close(fd);
    res
}

/// `rel` beneath the root opened, or `None` when it does not exist.
fn open_if_exists<K: Kernel>(k: &mut K, root: RawFd, rel: &CStr) -> KResult<Option<RawFd>> {
    match k.open_beneath(root, rel) {
        Err(Errno::ENOENT) => Ok(None),
        other => other.map(Some),
    }
}

/// Makes `rel` (if it exists) a read-only bind of itself.
fn read_only<K: Kernel>(k: &mut K, root: RawFd, rel: &CStr) -> KResult<()> {
    let Some(fd) = open_if_exists(k, root, rel)? else {
        return Ok(());
    };
    let res = k.mount_fd(Src::Fd(fd), fd, None, libc::MS_BIND | libc::MS_REC, None);
    k.close(fd);
    res?;
    remount_bind(k, root, rel, libc::MS_RDONLY | NOSUID | NODEV | NOEXEC)
}

#[cfg(test)]
mod tests {
    use super::super::kernel::fake::FakeKernel;
    use super::super::plan::{self, PlanInput, RootPlan};
    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).expect("no NUL")
    }

    fn ops(own_network: bool) -> Vec<Op> {
        plan::build(&PlanInput {
            root: RootPlan::Overlay {
                links_dir: c("/s/l"),
                merged: c("/s/merged"),
                options: c(&plan::overlay_options(1, true)),
            },
            own_network,
            hostname: c("0123456789ab"),
            etc_files: vec![
                (c("etc/hosts"), c("/s/hosts")),
                (c("etc/resolv.conf"), c("/s/resolv.conf")),
            ],
            binds: vec![],
            tmpfs: vec![],
            readonly_root: false,
            shm_size: None,
        })
    }

    struct Args {
        ops: Vec<Op>,
        cands: Vec<CString>,
        argv: Vec<*const c_char>,
        envp: Vec<*const c_char>,
        _strings: Vec<CString>,
    }

    fn args(ops: Vec<Op>) -> Args {
        let strings = vec![c("sh"), c("-c"), c("true"), c("PATH=/bin")];
        let argv = vec![
            std::ptr::null(),
            strings[0].as_ptr(),
            strings[1].as_ptr(),
            strings[2].as_ptr(),
            std::ptr::null(),
        ];
        let envp = vec![strings[3].as_ptr(), std::ptr::null()];
        Args {
            ops,
            cands: vec![c("/usr/bin/sh"), c("/bin/sh")],
            argv,
            envp,
            _strings: strings,
        }
    }

    fn run(k: &mut FakeKernel, a: &mut Args) -> Failure {
        let argv_base = a.argv.as_mut_ptr();
        let plan = ChildPlan {
            close_fds: &[7, 8],
            stdio: [Some(20), Some(21), None],
            ops: &a.ops,
            keep_caps: 0xa80425fb,
            last_cap: 40,
            seccomp: &[libc::sock_filter {
                code: 6,
                jt: 0,
                jf: 0,
                k: 0x7fff_0000,
            }],
            workdir: c"/app",
            candidates: &a.cands,
            argv0_has_slash: false,
            trampoline_fd: 9,
            argv: argv_base,
            exec_argv: argv_base.cast_const(),
            envp: a.envp.as_ptr(),
            console: false,
            home: None,
        };
        run_child(k, &plan)
    }

    fn index(k: &FakeKernel, prefix: &str) -> usize {
        k.calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {:#?}", k.calls))
    }

    #[test]
    fn mounts_land_where_the_plan_says() {
        let mut k = FakeKernel::default();
        k.files = ["proc/kcore", "proc/keys", "proc/sysrq-trigger", "bin/sh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        k.missing = ["proc/acpi", "proc/scsi"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut a = args(ops(true));
        let (stage, errno) = run(&mut k, &mut a);
        // The fake's exec "fails" with ENOEXEC: everything before it ran.
        assert_eq!(
            (stage, errno),
            (Stage::Exec, Errno::ENOEXEC),
            "{:#?}",
            k.calls
        );
        let calls = k.calls.join("\n");
        for want in [
            "mount overlay -> /s/merged type=overlay flags=0x4 data=lowerdir=i:0,upperdir=u,workdir=w",
            "mount proc -> /proc type=proc flags=0xe data=-",
            "mount tmpfs -> /dev type=tmpfs flags=0x1000006 data=mode=755,size=65536k",
            "mount /dev/null -> /dev/null type=- flags=0x1000 data=-",
            "symlink /dev/ptmx -> pts/ptmx",
            "mount devpts -> /dev/pts type=devpts",
            "mount sysfs -> /sys type=sysfs flags=0xf data=-",
            // Masked file: the host's /dev/null bound over it; masked dir: read-only tmpfs.
            "mount /dev/null -> /proc/kcore type=- flags=0x1000",
            "mount tmpfs -> /sys/firmware type=tmpfs flags=0xf",
            // Read-only: bind onto itself, then remount read-only.
            "mount /proc/sys -> /proc/sys type=- flags=0x5000",
            "mount none -> /proc/sys type=- flags=0x102f",
            "mount /s/hosts -> /etc/hosts type=- flags=0x1000",
            // Every bind but the host's device nodes is remounted nodev.
            "mount none -> /etc/hosts type=- flags=0x1024",
            "pivot_root /s/merged",
            "hostname 0123456789ab",
            "lo up",
        ] {
            assert!(calls.contains(want), "missing {want:?} in\n{calls}");
        }
        // Missing masked paths are skipped, not created.
        assert!(!calls.contains("/proc/acpi"), "{calls}");
        assert!(index(&k, "private") < index(&k, "mount overlay"));
        assert!(index(&k, "pivot_root") < index(&k, "hostname"));
    }

    /// Broke: volume binds were not remounted nodev. The remount repeats the source mount's
    /// flags: a remount drops (or, where they are locked, fails on) the flags it is not given.
    #[test]
    fn binds_are_remounted_nodev_keeping_the_source_mounts_flags() {
        const ST_RDONLY: u64 = 1;
        const ST_NOSUID: u64 = 2;
        const ST_NOEXEC: u64 = 8;
        const ST_RELATIME: u64 = 0x1000;
        let mut k = FakeKernel::default();
        k.statfs
            .insert("data".into(), ST_NOSUID | ST_NOEXEC | ST_RELATIME);
        k.statfs.insert("ro".into(), ST_RDONLY);
        let bind = |src: &str, rel: &str, readonly: bool, nodev: bool| Op::BindHost {
            src: c(src),
            rel: c(rel),
            readonly,
            nodev,
        };
        let plan = [
            Op::OpenRoot(c("/s/merged")),
            bind("/vol", "data", false, true),
            bind("/ctx", "ro", true, true),
            bind("/plain", "plain", false, true),
            bind("/dev/null", "dev/null", false, false),
        ];
        let mut root = None;
        for op in &plan {
            apply(&mut k, op, &mut root).expect("applied");
        }
        assert_eq!(
            k.calls_starting("mount"),
            [
                "mount /vol -> /data type=- flags=0x1000 data=-",
                // MS_BIND | MS_REMOUNT | nodev, plus the source's nosuid and noexec.
                "mount none -> /data type=- flags=0x102e data=-",
                "mount /ctx -> /ro type=- flags=0x1000 data=-",
                "mount none -> /ro type=- flags=0x1027 data=-",
                "mount /plain -> /plain type=- flags=0x1000 data=-",
                "mount none -> /plain type=- flags=0x1024 data=-",
                // The host's device nodes keep working: no remount.
                "mount /dev/null -> /dev/null type=- flags=0x1000 data=-",
            ]
        );
        assert_eq!(kept_mount_flags(0x200f | ST_RELATIME), 0x10f);
    }

    #[test]
    fn identity_and_confinement_come_in_a_safe_order() {
        let mut k = FakeKernel::default();
        k.files.insert("bin/sh".into());
        k.go.uid = 1000;
        k.go.gid = 1000;
        k.go.ngroups = 2;
        k.go.groups[0] = 1000;
        k.go.groups[1] = 2000;
        let mut a = args(ops(false));
        run(&mut k, &mut a);
        let order = [
            "pdeathsig",
            "setsid",
            "dup2 20 0",
            "pivot_root",
            "report 1 0 0",
            "await_go",
            "bounding keep=0xa80425fb last=40",
            "seccomp 1 insns",
            "setgroups [1000, 2000]",
            "setgid 1000",
            "setuid 1000",
            "capset 0x0",
            "chdir_in_root /app",
            "probe /usr/bin/sh",
            "probe /bin/sh",
            "cloexec 3..",
            "exec fd9 [\"/bin/sh\", \"sh\", \"-c\", \"true\"]",
        ];
        let idx: Vec<usize> = order.iter().map(|p| index(&k, p)).collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "{:#?}", k.calls);
        // Parent-side pipe ends are closed before anything else, stdio 2 is inherited.
        assert!(!k.calls.iter().any(|c| c == "dup2 0 2"));
        // pdeathsig is re-armed after the uid change.
        let pdeath: Vec<usize> = k
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_str() == "pdeathsig")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(pdeath.len(), 2);
        assert!(pdeath[1] > index(&k, "setuid"));
    }

    #[test]
    fn root_keeps_default_caps() {
        let mut k = FakeKernel::default();
        k.files.insert("bin/sh".into());
        let mut a = args(ops(false));
        run(&mut k, &mut a);
        assert!(k.calls.contains(&"capset 0xa80425fb".to_string()));
    }

    #[test]
    fn symlinked_proc_in_the_image_stops_setup_before_any_proc_mount() {
        let mut k = FakeKernel::default();
        k.symlinks.insert("proc".into());
        let mut a = args(ops(false));
        let ops_copy = a.ops.clone();
        let (stage, errno) = run(&mut k, &mut a);
        assert_eq!(errno, Errno::ELOOP);
        let Stage::Op(i) = stage else {
            panic!("failed at {stage:?}")
        };
        assert_eq!(
            ops_copy[i as usize].mount_target().as_deref(),
            Some("/proc")
        );
        assert!(k.calls_starting("mount proc").is_empty());
        assert!(k.calls_starting("pivot_root").is_empty());
        assert!(k.calls_starting("exec").is_empty());
    }

    #[test]
    fn symlinked_dev_is_refused_too() {
        let mut k = FakeKernel::default();
        k.symlinks.insert("dev".into());
        let mut a = args(ops(false));
        let (_, errno) = run(&mut k, &mut a);
        assert_eq!(errno, Errno::ELOOP);
        assert!(k.calls_starting("mount tmpfs -> /dev").is_empty());
    }

    #[test]
    fn command_not_in_path_is_a_lookup_failure() {
        let mut k = FakeKernel::default();
        let mut a = args(ops(false));
        assert_eq!(run(&mut k, &mut a), (Stage::Lookup, Errno::ENOENT));
        assert!(k.calls_starting("exec").is_empty());
    }

    #[test]
    fn stage_codes_round_trip() {
        for s in [
            Stage::Op(0),
            Stage::Op(77),
            Stage::Start,
            Stage::Handshake,
            Stage::Seccomp,
            Stage::Lookup,
            Stage::Exec,
        ] {
            assert_eq!(Stage::from_code(s.code()), Some(s));
        }
    }
}
