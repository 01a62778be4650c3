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

/// Builds the filter. Every branch jumps at most a few instructions forward.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn default_filter() -> Vec<sock_filter> {
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
pub fn default_filter() -> Vec<sock_filter> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small interpreter for the instructions the filter uses.
    fn eval(prog: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            match ins.code {
                BPF_LD_W_ABS => {
                    acc = match ins.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0_LO => arg0 as u32,
                        k => panic!("unexpected load offset {k}"),
                    };
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
        let p = default_filter();
        for (name, n) in denied_syscalls() {
            assert_eq!(eval(&p, NATIVE_ARCH, nr(n), 0), EPERM, "{name}");
        }
    }

    #[test]
    fn allows_ordinary_syscalls() {
        let p = default_filter();
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
        let p = default_filter();
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
        let p = default_filter();
        assert_eq!(
            eval(&p, NATIVE_ARCH, nr(libc::SYS_clone3), 0),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn foreign_arch_is_killed() {
        let p = default_filter();
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        assert_eq!(eval(&p, AUDIT_ARCH_I386, 1, 0), RET_KILL_PROCESS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_aliases_cannot_bypass_the_list() {
        let p = default_filter();
        let x32_mount = X32_SYSCALL_BIT | nr(libc::SYS_mount);
        assert_eq!(eval(&p, NATIVE_ARCH, x32_mount, 0), EPERM);
        assert_eq!(eval(&p, NATIVE_ARCH, X32_SYSCALL_BIT, 0), EPERM);
    }

    #[test]
    fn program_is_within_kernel_limits() {
        let p = default_filter();
        assert!(p.len() < 4096);
        assert!(p.iter().all(|i| i.jt <= 3 && i.jf <= 3));
    }
}
