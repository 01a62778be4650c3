//! The step's seccomp filter: a classic-BPF program with the intent of Docker's default
//! profile, written by hand with libc's `sock_filter` (no libseccomp).
//!
//! Docker's profile is an allow-list; this is a deny-list of what that profile refuses to a
//! container without `CAP_SYS_ADMIN` and friends: mounting and the new mount API, namespace
//! creation and entry, keyrings, bpf, userfaultfd, io_uring, `open_by_handle_at` (the
//! "shocker" escape), kernel modules and kexec, swap, reboot, accounting, quotas, perf.
//! `ptrace` stays allowed, as in Docker's profile on kernels 4.8 and later (without
//! `CAP_SYS_PTRACE` it reaches only the step's own processes). `clone` with any namespace
//! flag is refused with EPERM; `clone3` answers ENOSYS, as in
//! Docker's profile, because its flags sit in memory BPF cannot read and libc falls back to
//! `clone` on ENOSYS.
//!
//! `mknod`/`mknodat` of a block device, or of a character device outside Docker's default
//! device list ([`super::DEFAULT_DEVICES`]), is refused with EPERM in a build step — what
//! BuildKit's device cgroup does to RUN — unless the step may make any node
//! (`StepSpec::mknod_any`, `docker run`, whose device cgroup allows making every node and
//! refuses opening it). Fifos, sockets, regular files and overlay whiteouts (char 0:0) stay
//! allowed. Only the low 32 bits of the mode and dev arguments are looked at: the kernel
//! truncates both (`umode_t`, `unsigned int`), so the high words cannot smuggle anything.
//!
//! Only the native architecture is allowed through. On x86_64 the x32 ABI shares the audit
//! arch but sets bit 30 of the syscall number; those numbers are refused outright, or every
//! entry of the deny-list could be bypassed through its x32 alias. Other architectures
//! (i386 binaries via `int 0x80`) are killed, libseccomp's default for unlisted arches: a
//! deny-list by number would not apply to their numbering. Running 32-bit binaries in a step
//! is therefore not supported while the filter is on.

use libc::sock_filter;

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const BPF_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K

/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ERRNO` (the errno goes in the low 16 bits).
pub const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;

// Offsets into struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16; // little-endian low word of args[0]

/// The offset of the low word of `args[i]` (x86_64 and aarch64 are little-endian).
const fn arg_lo(i: u32) -> u32 {
    OFF_ARG0_LO + 8 * i
}

const S_IFMT: u32 = 0o170_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
/// The major number's bits in the kernel's 32-bit device encoding (`new_encode_dev`).
const DEV_MAJOR_MASK: u32 = 0xf_ff00;

/// `major:minor` in the kernel's 32-bit device encoding, as `mknod` receives it.
pub const fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// Syscall numbers at or above this are x32-ABI calls on x86_64.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`. (`CLONE_NEWTIME`, 0x80, overlaps the exit-signal byte of
/// `clone` and is only valid for `unshare`/`clone3`, both refused anyway.)
pub const CLONE_NS_FLAGS: u32 = 0x7E02_0000;

/// Syscalls refused with EPERM.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn denied_syscalls() -> Vec<(&'static str, i64)> {
    let mut v: Vec<(&'static str, i64)> = vec![
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("bpf", libc::SYS_bpf),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("reboot", libc::SYS_reboot),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("quotactl_fd", libc::SYS_quotactl_fd),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("fanotify_init", libc::SYS_fanotify_init),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        ("syslog", libc::SYS_syslog),
        ("vhangup", libc::SYS_vhangup),
        ("open_tree", libc::SYS_open_tree),
        ("move_mount", libc::SYS_move_mount),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("mount_setattr", libc::SYS_mount_setattr),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
        // Removed from the kernel long ago (ENOSYS today; libc no longer names them), kept
        // in the list as Docker's profile keeps them out of its allow-list.
        ("create_module", 174),
        ("get_kernel_syms", 177),
        ("query_module", 178),
        ("nfsservctl", libc::SYS_nfsservctl),
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

/// The check of one mknod-like syscall (`nr`, mode in `args[mode]`, dev in `args[dev]`),
/// entered with the syscall number in the accumulator; it returns in every branch but the
/// one for another syscall, which skips it with the accumulator untouched.
fn mknod_rule(nr: i64, mode: u32, dev: u32) -> Vec<sock_filter> {
    let exact: Vec<u32> = std::iter::once(0) // an overlay whiteout
        .chain(
            super::DEFAULT_DEVICES
                .iter()
                .filter_map(|&(ma, mi)| mi.map(|mi| encode_dev(ma, mi))),
        )
        .collect();
    let any_minor: Vec<u32> = super::DEFAULT_DEVICES
        .iter()
        .filter(|(_, mi)| mi.is_none())
        .map(|&(ma, _)| encode_dev(ma, 0))
        .collect();
    // ld mode, and, jeq blk, jeq chr, ld dev, exact…, and, any_minor…, deny, allow
    let len = 5 + exact.len() + 1 + any_minor.len() + 2;
    let (deny, allow) = (len - 2, len - 1);
    // Offset of a jump at `from` to `to`, both in the body (short: the body is ~20 long).
    let off = |from: usize, to: usize| (to - from - 1) as u8;
    let mut body = vec![
        stmt(BPF_LD_W_ABS, arg_lo(mode)),
        stmt(BPF_AND_K, S_IFMT),
        jump(BPF_JEQ_K, S_IFBLK, off(2, deny), 0),
        jump(BPF_JEQ_K, S_IFCHR, 0, off(3, allow)),
        stmt(BPF_LD_W_ABS, arg_lo(dev)),
    ];
    for d in exact {
        let at = body.len();
        body.push(jump(BPF_JEQ_K, d, off(at, allow), 0));
    }
    body.push(stmt(BPF_AND_K, DEV_MAJOR_MASK));
    for d in any_minor {
        let at = body.len();
        body.push(jump(BPF_JEQ_K, d, off(at, allow), 0));
    }
    body.push(stmt(BPF_RET_K, RET_ERRNO | libc::EPERM as u32));
    body.push(stmt(BPF_RET_K, RET_ALLOW));
    debug_assert_eq!(body.len(), len);
    let mut p = vec![jump(BPF_JEQ_K, nr as u32, 0, len as u8)];
    p.extend(body);
    p
}

/// The mknod-like syscalls: `(number, index of the mode argument, index of dev)`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn mknod_syscalls() -> Vec<(i64, u32, u32)> {
    #[allow(unused_mut)]
    let mut v = vec![(libc::SYS_mknodat, 2, 3)];
    #[cfg(target_arch = "x86_64")]
    v.push((libc::SYS_mknod, 1, 2));
    v
}

/// Builds the filter; `mknod_any` lets every device node be made (see the module docs).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn default_filter(mknod_any: bool) -> Vec<sock_filter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, NATIVE_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, eperm),
    ]);
    for (_, nr) in denied_syscalls() {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, eperm));
    }
    p.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(stmt(BPF_RET_K, enosys));
    if !mknod_any {
        for (nr, mode, dev) in mknod_syscalls() {
            p.extend(mknod_rule(nr, mode, dev));
        }
    }
    // clone: refuse namespace flags in args[0] (the flags argument on x86_64 and aarch64).
    p.push(jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 3));
    p.push(stmt(BPF_LD_W_ABS, OFF_ARG0_LO));
    p.push(jump(BPF_JSET_K, CLONE_NS_FLAGS, 0, 1));
    p.push(stmt(BPF_RET_K, eperm));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p
}

/// No filter on architectures this module has no tables for.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn default_filter(_mknod_any: bool) -> Vec<sock_filter> {
    Vec::new()
}

/// The processes a step of the unprivileged mode must never reach (it shares kiln's PID
/// namespace and runs as the same uid, so the kernel's own permission checks let it signal
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarded {
    /// kiln's own pid.
    pub kiln: i32,
    /// kiln's process group.
    pub kiln_group: i32,
}

/// Syscalls refused outright in the unprivileged mode, on top of [`denied_syscalls`]: with
/// no PID namespace and no mount namespace, these are the ways out of a chroot or into
/// another process (kiln, another stage's step).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn unprivileged_denied() -> Vec<(&'static str, i64)> {
    vec![
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("process_madvise", libc::SYS_process_madvise),
        ("kcmp", libc::SYS_kcmp),
        ("chroot", libc::SYS_chroot),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("tkill", libc::SYS_tkill),
        ("migrate_pages", libc::SYS_migrate_pages),
        ("move_pages", libc::SYS_move_pages),
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ]
}

/// Syscalls whose argument `.1` is a pid (or process group, as a negative pid, or for the
/// `which`/`who` pairs a pid in `who`) checked against [`Guarded`].
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn pid_argument_syscalls() -> Vec<(i64, u32)> {
    vec![
        (libc::SYS_kill, 0),
        (libc::SYS_tgkill, 0),
        (libc::SYS_rt_sigqueueinfo, 0),
        (libc::SYS_rt_tgsigqueueinfo, 0),
        (libc::SYS_pidfd_open, 0),
        (libc::SYS_prlimit64, 0),
        (libc::SYS_sched_setaffinity, 0),
        (libc::SYS_sched_setscheduler, 0),
        (libc::SYS_sched_setparam, 0),
        (libc::SYS_sched_setattr, 0),
        (libc::SYS_setpriority, 1),
        (libc::SYS_ioprio_set, 1),
    ]
}

/// Refuses `nr` when the low word of `args[arg]` is one of `values`; entered and left with
/// the syscall number in the accumulator.
fn refuse_values(nr: i64, arg: u32, values: &[u32], ret: u32) -> Vec<sock_filter> {
    let body = 2 + 2 * values.len();
    let mut p = vec![
        jump(BPF_JEQ_K, nr as u32, 0, body as u8),
        stmt(BPF_LD_W_ABS, arg_lo(arg)),
    ];
    for v in values {
        p.push(jump(BPF_JEQ_K, *v, 0, 1));
        p.push(stmt(BPF_RET_K, ret));
    }
    p.push(stmt(BPF_LD_W_ABS, OFF_NR));
    p
}

/// The filter of a step in the unprivileged mode: [`default_filter`] with
/// [`unprivileged_denied`] refused, and signals, scheduling and resource-limit calls aimed
/// at pid 1, every process (-1), kiln or kiln's process group refused with EPERM (static
/// argument checks: another step's pid cannot be known in advance; see the module docs of
/// `executor::unpriv`). `no_network`: only `AF_UNIX` sockets (`RUN --network=none` without
/// a network namespace).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn unprivileged_filter(mknod_any: bool, guard: Guarded, no_network: bool) -> Vec<sock_filter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let mut base = default_filter(mknod_any);
    // After the prelude (arch check, syscall number loaded, x32 refused), the accumulator
    // holds the syscall number: every block below starts and ends that way.
    #[cfg(target_arch = "x86_64")]
    let prelude = 6;
    #[cfg(target_arch = "aarch64")]
    let prelude = 4;
    let mut extra = Vec::new();
    for (_, nr) in unprivileged_denied() {
        extra.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        extra.push(stmt(BPF_RET_K, eperm));
    }
    let neg = |v: i32| (-(v as i64)) as i32 as u32;
    let values = [
        1,
        u32::MAX, // -1: every process
        neg(1),
        guard.kiln as u32,
        neg(guard.kiln),
        neg(guard.kiln_group),
        guard.kiln_group as u32,
    ];
    for (nr, arg) in pid_argument_syscalls() {
        extra.extend(refuse_values(nr, arg, &values, eperm));
    }
    if no_network {
        // socket(domain, …): anything but AF_UNIX.
        extra.push(jump(BPF_JEQ_K, libc::SYS_socket as u32, 0, 4));
        extra.push(stmt(BPF_LD_W_ABS, arg_lo(0)));
        extra.push(jump(BPF_JEQ_K, libc::AF_UNIX as u32, 1, 0));
        extra.push(stmt(BPF_RET_K, RET_ERRNO | libc::EAFNOSUPPORT as u32));
        extra.push(stmt(BPF_LD_W_ABS, OFF_NR));
    }
    base.splice(prelude..prelude, extra);
    base
}

/// No filter on architectures this module has no tables for.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn unprivileged_filter(
    _mknod_any: bool,
    _guard: Guarded,
    _no_network: bool,
) -> Vec<sock_filter> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small interpreter for the instructions the filter uses.
    fn eval(prog: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        eval_args(prog, arch, nr, [arg0, 0, 0, 0, 0, 0])
    }

    fn eval_args(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            match ins.code {
                BPF_LD_W_ABS => {
                    acc = match ins.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        k if k >= OFF_ARG0_LO && (k - OFF_ARG0_LO).is_multiple_of(8) => {
                            args[((k - OFF_ARG0_LO) / 8) as usize] as u32
                        }
                        k => panic!("unexpected load offset {k}"),
                    };
                    pc += 1;
                }
                BPF_AND_K => {
                    acc &= ins.k;
                    pc += 1;
                }
                BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                    let taken = match ins.code {
                        BPF_JEQ_K => acc == ins.k,
                        BPF_JGE_K => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += 1 + usize::from(if taken { ins.jt } else { ins.jf });
                }
                BPF_RET_K => return ins.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn nr(n: i64) -> u32 {
        n as u32
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn denies_the_escape_syscalls_with_eperm() {
        let p = default_filter(false);
        for (name, n) in denied_syscalls() {
            assert_eq!(eval(&p, NATIVE_ARCH, nr(n), 0), EPERM, "{name}");
        }
    }

    #[test]
    fn allows_ordinary_syscalls() {
        let p = default_filter(false);
        for n in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_setresuid,
            libc::SYS_capset,
            libc::SYS_ptrace,
            libc::SYS_chown,
        ] {
            assert_eq!(eval(&p, NATIVE_ARCH, nr(n), 0), RET_ALLOW, "{n}");
        }
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let p = default_filter(false);
        let fork_like =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(
            eval(&p, NATIVE_ARCH, nr(libc::SYS_clone), fork_like),
            RET_ALLOW
        );
        assert_eq!(
            eval(&p, NATIVE_ARCH, nr(libc::SYS_clone), thread),
            RET_ALLOW
        );
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWCGROUP,
        ] {
            let arg = fork_like | flag as u64;
            assert_eq!(
                eval(&p, NATIVE_ARCH, nr(libc::SYS_clone), arg),
                EPERM,
                "{flag:#x}"
            );
        }
    }

    #[test]
    fn clone3_says_enosys_so_libc_falls_back() {
        let p = default_filter(false);
        assert_eq!(
            eval(&p, NATIVE_ARCH, nr(libc::SYS_clone3), 0),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn foreign_arch_is_killed() {
        let p = default_filter(false);
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        assert_eq!(eval(&p, AUDIT_ARCH_I386, 1, 0), RET_KILL_PROCESS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_aliases_cannot_bypass_the_list() {
        let p = default_filter(false);
        let x32_mount = X32_SYSCALL_BIT | nr(libc::SYS_mount);
        assert_eq!(eval(&p, NATIVE_ARCH, x32_mount, 0), EPERM);
        assert_eq!(eval(&p, NATIVE_ARCH, X32_SYSCALL_BIT, 0), EPERM);
    }

    #[test]
    fn program_is_within_kernel_limits() {
        for p in [default_filter(false), default_filter(true)] {
            assert!(p.len() < 4096);
            // Every jump lands inside the program, which ends in a return.
            for (i, ins) in p.iter().enumerate() {
                if matches!(ins.code, BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K) {
                    let far = i + 1 + usize::from(ins.jt.max(ins.jf));
                    assert!(far < p.len(), "jump at {i}");
                }
            }
            assert_eq!(p.last().map(|i| i.code), Some(BPF_RET_K));
        }
    }

    const S_IFIFO: u64 = 0o010_000;
    const S_IFREG: u64 = 0o100_000;

    /// `mknod(path, mode, dev)` and `mknodat(AT_FDCWD, path, mode, dev)` as the filter
    /// sees them, by `mknod_any`.
    fn mknods(mknod_any: bool, mode: u64, dev: u64) -> Vec<u32> {
        let p = default_filter(mknod_any);
        let at = eval_args(
            &p,
            NATIVE_ARCH,
            nr(libc::SYS_mknodat),
            [libc::AT_FDCWD as u64, 0x1000, mode, dev, 0, 0],
        );
        #[allow(unused_mut)]
        let mut v = vec![at];
        #[cfg(target_arch = "x86_64")]
        v.push(eval_args(
            &p,
            NATIVE_ARCH,
            nr(libc::SYS_mknod),
            [0x1000, mode, dev, 0, 0, 0],
        ));
        v
    }

    /// Broke: a build step could mknod the host's disk (b 8:0, b 7:0) on a mount and read
    /// it; BuildKit's device cgroup refuses making such nodes in RUN.
    #[test]
    fn build_steps_cannot_make_block_or_unlisted_char_devices() {
        let dev = |ma, mi| u64::from(encode_dev(ma, mi));
        for (mode, d) in [
            (S_IFBLK as u64 | 0o600, dev(8, 0)),
            (S_IFBLK as u64 | 0o600, dev(7, 0)),
            (S_IFBLK as u64, 0),
            (S_IFCHR as u64 | 0o600, dev(1, 1)),    // /dev/mem
            (S_IFCHR as u64 | 0o600, dev(1, 2)),    // /dev/kmem
            (S_IFCHR as u64 | 0o600, dev(10, 229)), // /dev/fuse
            (S_IFCHR as u64 | 0o600, dev(4, 1)),    // tty1
            (S_IFCHR as u64 | 0o600, dev(137, 0)),
            // Bits the kernel ignores change nothing: the high words are not looked at.
            (S_IFBLK as u64 | 0xffff_0000_0000_0000, dev(8, 0)),
            (S_IFBLK as u64, dev(8, 0) | 0x1_0000_0000),
        ] {
            assert!(
                mknods(false, mode, d).iter().all(|r| *r == EPERM),
                "{mode:o} {d:#x}"
            );
            // docker run: the node can be made (its cgroup and nodev refuse opening it).
            assert!(mknods(true, mode, d).iter().all(|r| *r == RET_ALLOW));
        }
        for (mode, d) in [
            (S_IFCHR as u64 | 0o666, dev(1, 3)),   // null
            (S_IFCHR as u64 | 0o666, dev(1, 9)),   // urandom
            (S_IFCHR as u64 | 0o666, dev(5, 2)),   // ptmx
            (S_IFCHR as u64 | 0o620, dev(136, 7)), // a pts
            (S_IFCHR as u64 | 0o620, dev(136, 300)),
            (S_IFCHR as u64 | 0o666, dev(10, 200)), // tun
            (S_IFCHR as u64, 0),                    // an overlay whiteout
            (S_IFIFO | 0o644, 0),
            (S_IFREG | 0o644, dev(8, 0)), // dev is ignored for other types
            (0o644, 0),
        ] {
            assert!(
                mknods(false, mode, d).iter().all(|r| *r == RET_ALLOW),
                "{mode:o} {d:#x}"
            );
        }
    }

    #[test]
    fn device_numbers_encode_as_the_kernel_decodes_them() {
        // new_decode_dev: major = (dev & 0xfff00) >> 8, minor = (dev & 0xff) | ((dev >> 12) & 0xfff00).
        for (ma, mi) in [(1, 3), (136, 0), (136, 300), (254, 0), (4095, 1_048_575)] {
            let d = encode_dev(ma, mi);
            assert_eq!(
                ((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00)),
                (ma, mi)
            );
        }
        // As glibc's makedev, truncated to the 32 bits the syscall takes.
        assert_eq!(u64::from(encode_dev(8, 1)), libc::makedev(8, 1));
    }

    #[test]
    fn unprivileged_filter_guards_kiln_pid_1_and_escapes() {
        let guard = Guarded {
            kiln: 4242,
            kiln_group: 4240,
        };
        let p = unprivileged_filter(false, guard, true);
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let call = |nr: i64, args: [u64; 6]| eval_args(&p, NATIVE_ARCH, nr as u32, args);
        let kill = |pid: i64| call(libc::SYS_kill, [pid as u64, 9, 0, 0, 0, 0]);
        for pid in [1, -1, 4242, -4242, -4240] {
            assert_eq!(kill(pid), eperm, "kill({pid})");
        }
        for pid in [0, 2, 4243, -7] {
            assert_eq!(kill(pid), RET_ALLOW, "kill({pid})");
        }
        assert_eq!(call(libc::SYS_tgkill, [4242, 4242, 9, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_pidfd_open, [1, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_prlimit64, [4242, 7, 0, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_prlimit64, [0, 7, 0, 0, 0, 0]), RET_ALLOW);
        for (name, nr) in unprivileged_denied().into_iter().chain(denied_syscalls()) {
            assert_eq!(call(nr, [0; 6]), eperm, "{name}");
        }
        let eafnosupport = RET_ERRNO | libc::EAFNOSUPPORT as u32;
        assert_eq!(
            call(libc::SYS_socket, [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            eafnosupport
        );
        assert_eq!(
            call(libc::SYS_socket, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(call(libc::SYS_getpid, [0; 6]), RET_ALLOW);
        // The rules of the default filter still hold after the inserted ones.
        assert_eq!(
            call(libc::SYS_clone3, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        let with_net = unprivileged_filter(false, guard, false);
        assert_eq!(
            eval_args(
                &with_net,
                NATIVE_ARCH,
                libc::SYS_socket as u32,
                [2, 1, 0, 0, 0, 0]
            ),
            RET_ALLOW
        );
    }
}
