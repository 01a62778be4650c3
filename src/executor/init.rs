//! `--init`: a minimal init process, as Docker's `--init` (tini) gives, held in a sealed
//! memfd like the exec [trampoline](super::trampoline) and exec'd the same way, so nothing
//! from the host is mounted into the container and `/proc/self/exe` stays immutable.
//!
//! It runs as PID 1 of the container: blocks every signal, forks the command, then waits for
//! signals with `rt_sigtimedwait`: SIGCHLD reaps every child that ended (orphans the
//! kernel reparents to PID 1 included, so zombies never pile up), any other signal is
//! forwarded to the command. When the command ends, init exits with its code (128 + signal
//! if it was killed), and the kernel ends the rest of the namespace. The command gets an
//! empty signal mask and the argv layout the trampoline uses: init's `argv[1]` is the
//! resolved path, `argv[2..]` the command's argv.
//!
//! A 395-byte static ELF (64-byte header, one `PT_LOAD` at 0x10000, code at 0x10078),
//! assembled with GNU as from this source (x86_64 only; other architectures refuse
//! `--init`):
//!
//! ```text
//!     .intel_syntax noprefix
//!     .globl _start
//! _start:
//!     mov r12, rsp                # r12: &argc
//!     sub rsp, 256                # [rsp]: sigset all-ones, [rsp+8]: empty, [rsp+16]: status, [rsp+32..]: siginfo
//!     mov qword ptr [rsp], -1
//!     mov qword ptr [rsp+8], 0
//!     mov edi, 0                  # SIG_BLOCK
//!     mov rsi, rsp
//!     xor edx, edx
//!     mov r10d, 8
//!     mov eax, 14                 # rt_sigprocmask
//!     syscall
//!     mov eax, 57                 # fork
//!     syscall
//!     test rax, rax
//!     jz child
//!     js fail
//!     mov r13, rax                # r13: the command's pid
//! wait_signal:
//!     mov rdi, rsp                # the set: everything
//!     lea rsi, [rsp+32]           # siginfo
//!     xor edx, edx                # no timeout
//!     mov r10d, 8
//!     mov eax, 128                # rt_sigtimedwait
//!     syscall
//!     test rax, rax
//!     js wait_signal
//!     cmp eax, 17                 # SIGCHLD
//!     je reap
//!     mov edi, r13d               # forward anything else to the command
//!     mov esi, eax
//!     mov eax, 62                 # kill
//!     syscall
//!     jmp wait_signal
//! reap:
//!     mov edi, -1
//!     lea rsi, [rsp+16]
//!     mov edx, 1                  # WNOHANG
//!     xor r10d, r10d
//!     mov eax, 61                 # wait4
//!     syscall
//!     test rax, rax
//!     jle wait_signal
//!     cmp rax, r13
//!     jne reap
//!     mov eax, dword ptr [rsp+16] # the command ended: exit with its status
//!     mov edi, eax
//!     and edi, 0x7f
//!     jz exited
//!     add edi, 128                # killed by a signal: 128 + signal
//!     jmp out
//! exited:
//!     shr eax, 8
//!     and eax, 0xff
//!     mov edi, eax
//!     jmp out
//! child:
//!     mov edi, 2                  # SIG_SETMASK
//!     lea rsi, [rsp+8]            # empty set
//!     xor edx, edx
//!     mov r10d, 8
//!     mov eax, 14
//!     syscall
//!     mov rcx, [r12]              # argc
//!     mov edi, 127
//!     cmp rcx, 3
//!     jb out
//!     mov rdi, [r12+16]           # argv[1]: the resolved path
//!     lea rsi, [r12+24]           # argv + 2
//!     lea rdx, [r12+rcx*8+16]     # envp
//!     mov eax, 59                 # execve
//!     syscall
//!     mov edi, 126
//!     cmp rax, -13
//!     je out
//!     cmp rax, -8
//!     je out
//! fail:
//!     mov edi, 127
//! out:
//!     mov eax, 231                # exit_group
//!     syscall
//! ```

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::errno::Errno;

use super::error::ExecError;

#[cfg(target_arch = "x86_64")]
const INIT: &[u8] = &[
    0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x3e, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x38, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x8b, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x8b, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x49, 0x89, 0xe4, 0x48, 0x81, 0xec, 0x00, 0x01,
    0x00, 0x00, 0x48, 0xc7, 0x04, 0x24, 0xff, 0xff, 0xff, 0xff, 0x48, 0xc7, 0x44, 0x24, 0x08, 0x00,
    0x00, 0x00, 0x00, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x48, 0x89, 0xe6, 0x31, 0xd2, 0x41, 0xba, 0x08,
    0x00, 0x00, 0x00, 0xb8, 0x0e, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0x39, 0x00, 0x00, 0x00, 0x0f,
    0x05, 0x48, 0x85, 0xc0, 0x74, 0x7a, 0x0f, 0x88, 0xc3, 0x00, 0x00, 0x00, 0x49, 0x89, 0xc5, 0x48,
    0x89, 0xe7, 0x48, 0x8d, 0x74, 0x24, 0x20, 0x31, 0xd2, 0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0xb8,
    0x80, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x78, 0xe4, 0x83, 0xf8, 0x11, 0x74, 0x0e,
    0x44, 0x89, 0xef, 0x89, 0xc6, 0xb8, 0x3e, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xd1, 0xbf, 0xff,
    0xff, 0xff, 0xff, 0x48, 0x8d, 0x74, 0x24, 0x10, 0xba, 0x01, 0x00, 0x00, 0x00, 0x45, 0x31, 0xd2,
    0xb8, 0x3d, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x7e, 0xb3, 0x4c, 0x39, 0xe8, 0x75,
    0xdd, 0x8b, 0x44, 0x24, 0x10, 0x89, 0xc7, 0x83, 0xe7, 0x7f, 0x74, 0x08, 0x81, 0xc7, 0x80, 0x00,
    0x00, 0x00, 0xeb, 0x60, 0xc1, 0xe8, 0x08, 0x25, 0xff, 0x00, 0x00, 0x00, 0x89, 0xc7, 0xeb, 0x54,
    0xbf, 0x02, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x74, 0x24, 0x08, 0x31, 0xd2, 0x41, 0xba, 0x08, 0x00,
    0x00, 0x00, 0xb8, 0x0e, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x49, 0x8b, 0x0c, 0x24, 0xbf, 0x7f, 0x00,
    0x00, 0x00, 0x48, 0x83, 0xf9, 0x03, 0x72, 0x2c, 0x49, 0x8b, 0x7c, 0x24, 0x10, 0x49, 0x8d, 0x74,
    0x24, 0x18, 0x49, 0x8d, 0x54, 0xcc, 0x10, 0xb8, 0x3b, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x7e,
    0x00, 0x00, 0x00, 0x48, 0x83, 0xf8, 0xf3, 0x74, 0x0b, 0x48, 0x83, 0xf8, 0xf8, 0x74, 0x05, 0xbf,
    0x7f, 0x00, 0x00, 0x00, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
];

#[cfg(not(target_arch = "x86_64"))]
const INIT: &[u8] = &[];

static FD: OnceLock<Result<OwnedFd, Errno>> = OnceLock::new();

/// The sealed init's fd (close-on-exec), created once per process.
pub fn fd() -> Result<RawFd, ExecError> {
    if INIT.is_empty() {
        return Err(ExecError::Unsupported("--init exists only for x86_64"));
    }
    match FD.get_or_init(|| super::trampoline::sealed_memfd(c"kiln-init", INIT)) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(ExecError::Spawn(std::io::Error::from(*e))),
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    fn init() -> Command {
        let fd = fd().expect("memfd");
        Command::new(format!("/proc/self/fd/{fd}"))
    }

    #[test]
    fn init_runs_the_command_and_passes_its_exit_code() {
        let out = init()
            .arg0("init")
            .args(["/bin/sh", "sh", "-c", "echo \"$0:$1\"; exit 7", "a", "b"])
            .output()
            .expect("run init");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a:b\n");
        assert_eq!(out.status.code(), Some(7));
        let killed = init()
            .args(["/bin/sh", "sh", "-c", "kill -KILL $$"])
            .status()
            .expect("run init");
        assert_eq!(killed.code(), Some(128 + 9));
        let missing = init().args(["/nonexistent", "x"]).status().expect("run");
        assert_eq!(missing.code(), Some(127));
        let none = init().status().expect("run");
        assert_eq!(none.code(), Some(127));
    }

    #[test]
    fn init_forwards_signals_to_the_command() {
        let mut child = init()
            .args([
                "/bin/sh",
                "sh",
                "-c",
                "trap 'echo got-term; exit 3' TERM; echo up; while :; do sleep 0.05; done",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 3];
        std::io::Read::read_exact(&mut out, &mut buf).expect("up");
        // SAFETY: kill on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().expect("wait");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
        assert_eq!(rest.trim(), "got-term");
        assert_eq!(status.code(), Some(3));
    }
}
