//! The exec trampoline: a 200-byte static ELF, held in a sealed memfd, that the container's
//! first process execs instead of exec'ing the step's command directly. It is kiln's answer
//! to CVE-2019-5736.
//!
//! The container's first process is a clone of kiln, so until it execs, `/proc/self/exe` is
//! the host's kiln binary. If it exec'd the step's command directly, a command (or its `#!`
//! interpreter, or its ELF `PT_INTERP`) naming `/proc/self/exe` would run the host binary
//! inside the container — with a dynamic loader taken from the image — and that process
//! could reopen its own `/proc/self/exe` for writing and overwrite kiln on the host.
//!
//! So the first process execs this trampoline from a memfd with `execveat(AT_EMPTY_PATH)`:
//! no path inside the image is resolved for that exec. The trampoline then does
//! `execve(argv[0], argv + 1, envp)` with the path the child already looked up. From the
//! trampoline on, `/proc/self/exe` is the memfd, sealed against writes, growth, shrinking and
//! further sealing (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`): exec'ing
//! `/proc/self/exe` from the container reaches only the trampoline (which, given no path,
//! exits 127), and writing to it fails with EPERM. No fd to kiln's binary is ever open in
//! the child, and kiln's binary is not reachable from inside the pivoted root.
//!
//! The trampoline exits 126 when the exec fails with EACCES or ENOEXEC and 127 otherwise, as
//! shells do. The machine code, assembled with GNU as from the source in the comments:
//!
//! ```text
//! x86_64:                                 aarch64:
//!   mov  rcx, [rsp]        ; argc           ldr  x9, [sp]
//!   mov  edi, 127                           mov  x0, #127
//!   cmp  rcx, 2                             cmp  x9, #2
//!   jb   out                                b.lo out
//!   lea  rsi, [rsp+16]     ; argv + 1       ldr  x0, [sp, #8]
//!   mov  rdi, [rsp+8]      ; argv[0]        add  x1, sp, #16
//!   lea  rdx, [rsp+rcx*8+16] ; envp         add  x2, sp, x9, lsl #3
//!   mov  eax, 59           ; execve         add  x2, x2, #16
//!   syscall                                 mov  x8, #221
//!   mov  edi, 126                           svc  #0
//!   cmp  rax, -13          ; EACCES         mov  x9, x0
//!   je   out                                mov  x0, #126
//!   cmp  rax, -8           ; ENOEXEC        cmn  x9, #13
//!   je   out                                b.eq out
//!   mov  edi, 127                           cmn  x9, #8
//! out:                                      b.eq out
//!   mov  eax, 231          ; exit_group     mov  x0, #127
//!   syscall                               out: mov x8, #94 ; svc #0
//! ```
//!
//! Both are a 64-byte ELF header and one 56-byte `PT_LOAD` (R+X) program header at 0x10000,
//! followed by the code. The x86_64 one is exercised by the root tests; the aarch64 one is
//! assembled and disassembled but has not been run.

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::errno::Errno;

use super::error::ExecError;

#[cfg(target_arch = "x86_64")]
const TRAMPOLINE: &[u8] = &[
    0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x3e, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x38, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xba, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xba, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x0c, 0x24, 0xbf, 0x7f, 0x00, 0x00,
    0x00, 0x48, 0x83, 0xf9, 0x02, 0x72, 0x2c, 0x48, 0x8d, 0x74, 0x24, 0x10, 0x48, 0x8b, 0x7c, 0x24,
    0x08, 0x48, 0x8d, 0x54, 0xcc, 0x10, 0xb8, 0x3b, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x7e, 0x00,
    0x00, 0x00, 0x48, 0x83, 0xf8, 0xf3, 0x74, 0x0b, 0x48, 0x83, 0xf8, 0xf8, 0x74, 0x05, 0xbf, 0x7f,
    0x00, 0x00, 0x00, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
];

#[cfg(target_arch = "aarch64")]
const TRAMPOLINE: &[u8] = &[
    0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0xb7, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x38, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xc4, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc4, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe9, 0x03, 0x40, 0xf9, 0xe0, 0x0f, 0x80, 0xd2,
    0x3f, 0x09, 0x00, 0xf1, 0xc3, 0x01, 0x00, 0x54, 0xe0, 0x07, 0x40, 0xf9, 0xe1, 0x43, 0x00, 0x91,
    0xe2, 0x6f, 0x29, 0x8b, 0x42, 0x40, 0x00, 0x91, 0xa8, 0x1b, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4,
    0xe9, 0x03, 0x00, 0xaa, 0xc0, 0x0f, 0x80, 0xd2, 0x3f, 0x35, 0x00, 0xb1, 0x80, 0x00, 0x00, 0x54,
    0x3f, 0x21, 0x00, 0xb1, 0x40, 0x00, 0x00, 0x54, 0xe0, 0x0f, 0x80, 0xd2, 0xc8, 0x0b, 0x80, 0xd2,
    0x01, 0x00, 0x00, 0xd4,
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const TRAMPOLINE: &[u8] = &[];

static FD: OnceLock<Result<OwnedFd, Errno>> = OnceLock::new();

fn create() -> Result<OwnedFd, Errno> {
    sealed_memfd(c"kiln-exec-trampoline", TRAMPOLINE)
}

/// A memfd holding `bytes`, sealed against every change, close-on-exec.
pub(super) fn sealed_memfd(name: &std::ffi::CStr, bytes: &[u8]) -> Result<OwnedFd, Errno> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) keeps the memfd executable where vm.memfd_noexec would default it
    // to noexec; older kernels reject the flag, so retry without it.
    // SAFETY: valid C string, integer flags.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | libc::MFD_EXEC) };
    if fd < 0 && Errno::last() == Errno::EINVAL {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: memfd_create returned a fresh fd.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(bytes)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(Errno::last());
    }
    Ok(OwnedFd::from(file))
}

/// The sealed trampoline's fd (close-on-exec), created once per process and shared by all
/// steps: it is immutable, so sharing is safe.
pub fn fd() -> Result<RawFd, ExecError> {
    if TRAMPOLINE.is_empty() {
        return Err(ExecError::Unsupported(
            "the exec trampoline exists only for x86_64 and aarch64",
        ));
    }
    match FD.get_or_init(create) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(ExecError::Spawn(std::io::Error::from(*e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_is_sealed_against_writes() {
        let fd = fd().expect("memfd");
        // SAFETY: fcntl query on a valid fd.
        let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
        assert!(seals & libc::F_SEAL_WRITE != 0);
        assert!(seals & libc::F_SEAL_SEAL != 0);
        let path = format!("/proc/self/fd/{fd}");
        let res = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(b"x")
            });
        assert!(res.is_err(), "a write through the sealed memfd succeeded");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn trampoline_execs_argv0_with_the_rest_as_argv() {
        let fd = fd().expect("memfd");
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(format!("/proc/self/fd/{fd}"))
            .arg0("/bin/sh")
            .args(["sh", "-c", "echo \"$0:$1\"", "a", "b"])
            .output()
            .expect("run trampoline");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a:b\n");
        let missing = std::process::Command::new(format!("/proc/self/fd/{fd}"))
            .arg0("/nonexistent/prog")
            .arg("prog")
            .status()
            .expect("run trampoline");
        assert_eq!(missing.code(), Some(127));
        let no_args = std::process::Command::new(format!("/proc/self/fd/{fd}"))
            .status()
            .expect("run trampoline");
        assert_eq!(no_args.code(), Some(127));
    }
}
