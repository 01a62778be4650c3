//! Root tests: a forked child chrooted into a directory holding only a static busybox runs
//! with the filter, and the supervisor answers for it.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{recv_listener, Filter, Supervisor};
use crate::testutil;

/// A root holding `/bin/busybox`, an empty `/proc` and an empty `/dev`.
fn busybox_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir.path(), mode).expect("chmod");
    for d in ["bin", "proc", "dev", "tmp"] {
        std::fs::create_dir(dir.path().join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", dir.path().join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "cat", "ls", "readlink", "head", "wc", "kill", "ps", "echo", "sleep", "stat",
    ] {
        std::os::unix::fs::symlink("busybox", dir.path().join("bin").join(applet))
            .expect("applet link");
    }
    dir
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs `sh -c script` chrooted into `root` under the supervisor; the exit code and the
/// output (stdout and stderr together).
fn run(root: &Path, script: &str) -> (i32, String) {
    run_as(root, script, 0, None)
}

/// [`run`] as `uid`:`uid` (0: root), or the raw `child` instead of the script when given
/// (it runs after the filter is installed and must be async-signal-safe).
fn run_as(root: &Path, script: &str, uid: u32, child: Option<fn() -> i32>) -> (i32, String) {
    let filter = Filter::new().expect("filter");
    let root_c = CString::new(root.to_str().expect("utf-8")).expect("root");
    let argv_c: Vec<CString> = ["sh", "-c", script]
        .iter()
        .map(|a| CString::new(*a).expect("arg"))
        .collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let bb = c"/bin/busybox";
    let env = [c"PATH=/bin".as_ptr(), std::ptr::null()];
    let (rd, wr) = pipe();
    let mut sp = [0; 2];
    // SAFETY: socketpair fills two fds.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sp.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: fresh fds.
    let (parent_sock, child_sock) =
        unsafe { (OwnedFd::from_raw_fd(sp[0]), OwnedFd::from_raw_fd(sp[1])) };
    // SAFETY: the child runs only async-signal-safe calls until execve.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: raw syscalls in the child; it exits on any failure.
        unsafe {
            libc::dup2(wr.as_raw_fd(), 1);
            libc::dup2(wr.as_raw_fd(), 2);
            if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                libc::_exit(120);
            }
            if uid != 0 {
                let (g, u) = (libc::SYS_setresgid, libc::SYS_setresuid);
                if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()) != 0
                    || libc::syscall(g, uid, uid, uid) != 0
                    || libc::syscall(u, uid, uid, uid) != 0
                {
                    libc::_exit(124);
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(121);
            }
            if filter.install_in_child(child_sock.as_raw_fd()).is_err() {
                libc::_exit(122);
            }
            if let Some(f) = child {
                libc::_exit(f());
            }
            // ETXTBSY: another test's child, forked while busybox was being copied, may
            // still hold the copy's write fd until it execs.
            for _ in 0..100 {
                libc::execve(bb.as_ptr(), argv.as_ptr(), env.as_ptr());
                if *libc::__errno_location() != libc::ETXTBSY {
                    break;
                }
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 10_000_000,
                };
                libc::nanosleep(&ts, std::ptr::null_mut());
            }
            libc::_exit(123);
        }
    }
    drop(wr);
    drop(child_sock);
    let listener = recv_listener(&parent_sock).expect("listener");
    let sup = Supervisor::spawn(listener, root.to_path_buf(), pid).expect("supervisor");
    let mut out = String::new();
    std::fs::File::from(rd)
        .read_to_string(&mut out)
        .expect("read output");
    let mut status = 0;
    // SAFETY: waits for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    sup.stop();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    (code, out)
}

fn ready() -> bool {
    testutil::root() && testutil::busybox()
}

#[test]
fn filter_jumps_stay_in_the_program() {
    let f = Filter::new().expect("filter");
    let p = f.instructions();
    for (i, ins) in p.iter().enumerate() {
        if ins.code & 0x07 == 0x05 {
            assert!(
                i + 1 + usize::from(ins.jt.max(ins.jf)) < p.len(),
                "jump at {i}"
            );
        }
    }
    assert_eq!(p.last().map(|i| i.k), Some(libc::SECCOMP_RET_USER_NOTIF));
}

#[test]
fn proc_self_files_are_served() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let (code, out) = run(root.path(), "cat /proc/self/status");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Name:\tcat"), "{out}");
    assert!(out.contains("\nPid:\t"), "{out}");

    let (code, out) = run(root.path(), "readlink /proc/self/exe");
    assert_eq!((code, out.trim()), (0, "/bin/busybox"));

    let (code, out) = run(root.path(), "cd /bin && readlink /proc/self/cwd");
    assert_eq!((code, out.trim()), (0, "/bin"));

    let (code, out) = run(root.path(), "cat /proc/cpuinfo");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("processor"), "{out}");

    let (code, out) = run(root.path(), "cat /proc/uptime /proc/sys/kernel/ostype");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Linux"), "{out}");
}

#[test]
fn proc_directories_list_through_placeholders() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let (code, out) = run(root.path(), "ls /proc/self/fd");
    assert_eq!(code, 0, "{out}");
    let names: Vec<&str> = out.split_whitespace().collect();
    for n in ["0", "1", "2"] {
        assert!(names.contains(&n), "{out}");
    }
    // The placeholder left nothing in the root's /proc.
    let left: Vec<_> = std::fs::read_dir(root.path().join("proc"))
        .expect("proc")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // /proc lists the step's pids only: the shell and ls, never the host's pid 1.
    let (code, out) = run(root.path(), "ls /proc");
    assert_eq!(code, 0, "{out}");
    let pids: Vec<&str> = out
        .split_whitespace()
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert!(!pids.is_empty() && !pids.contains(&"1"), "{out}");
    assert!(out.contains("cpuinfo"), "{out}");
    // `ps` reads /proc/<pid>/stat of the step's processes.
    let (code, out) = run(root.path(), "ps");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ps"), "{out}");
}

#[test]
fn missing_dev_nodes_are_given() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let (code, out) = run(root.path(), "head -c1 /dev/urandom | wc -c");
    assert_eq!((code, out.trim()), (0, "1"), "{out}");
    let (code, out) = run(
        root.path(),
        "echo hi > /dev/null && echo ok; echo err >/dev/stderr",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok") && out.contains("err"), "{out}");
    // Nothing was created in the root's /dev.
    let left: Vec<_> = std::fs::read_dir(root.path().join("dev"))
        .expect("dev")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn host_processes_and_files_are_refused() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let (code, out) = run(root.path(), "kill -0 1");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not permitted"), "{out}");

    let (code, out) = run(root.path(), "kill -0 $$ && echo self-ok");
    assert_eq!((code, out.trim()), (0, "self-ok"), "{out}");

    let (code, out) = run(root.path(), "cat /proc/1/environ");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("No such file"), "{out}");

    for path in [
        "/proc/sysrq-trigger",
        "/proc/kcore",
        "/proc/kmsg",
        "/proc/self/root/bin/busybox",
        "/proc/self/cwd",
        "/proc/self/exe",
    ] {
        let (code, out) = run(root.path(), &format!("cat {path} > /dev/null"));
        assert_ne!(code, 0, "{path}: {out}");
        assert!(out.contains("denied"), "{path}: {out}");
    }
    let (code, out) = run(root.path(), "echo 1 > /proc/sys/kernel/printk");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("denied"), "{out}");
}

/// The child of the escape test: opens `/proc/self/fd` (a placeholder), `fchdir`s into it,
/// walks up six levels and prints `marker` from where it ends up.
fn walk_up_from_a_placeholder() -> i32 {
    // SAFETY: raw syscalls on local buffers (async-signal-safe).
    unsafe {
        let fd = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY,
        );
        if fd < 0 {
            return 10;
        }
        if libc::fchdir(fd) != 0 {
            return 11;
        }
        for _ in 0..6 {
            libc::chdir(c"..".as_ptr());
        }
        let m = libc::open(c"marker".as_ptr(), libc::O_RDONLY);
        if m < 0 {
            return 12;
        }
        let mut buf = [0u8; 64];
        let n = libc::read(m, buf.as_mut_ptr().cast(), buf.len());
        if n > 0 {
            libc::write(1, buf.as_ptr().cast(), n as usize);
        }
        0
    }
}

#[test]
fn a_placeholder_directory_does_not_lead_out_of_the_root() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    std::fs::write(root.path().join("marker"), "inside").expect("marker");
    // A host /proc directory fd would lead to the host's / here (`..` of /proc).
    let (code, out) = run_as(root.path(), "", 0, Some(walk_up_from_a_placeholder));
    assert_eq!((code, out.trim()), (0, "inside"), "{out}");
}

#[test]
fn a_non_root_step_is_served_with_its_own_ids() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let script = "cat /proc/self/status; readlink /proc/self/exe; ls /proc/self/fd; \
                  cat /proc/self/environ >/dev/null && echo environ-ok; kill -0 $$ && echo kill-ok";
    let (code, out) = run_as(root.path(), script, 1000, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Uid:\t1000\t1000\t1000\t1000"), "{out}");
    assert!(out.contains("/bin/busybox\n"), "{out}");
    assert!(
        out.contains("environ-ok") && out.contains("kill-ok"),
        "{out}"
    );
    // A non-root step cannot signal a root process of its own step either (kernel rule).
    let (code, out) = run_as(root.path(), "kill -0 1", 1000, None);
    assert_ne!(code, 0, "{out}");
}
