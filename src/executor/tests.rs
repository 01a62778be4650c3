//! Root tests of the executor: real namespaces, overlayfs and mounts over a busybox root
//! made from the host's static busybox. Each test needs root and busybox (`crate::testutil`:
//! a failure under CI, a loud skip elsewhere).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

macro_rules! require_root {
    () => {
        if !crate::testutil::root() || !crate::testutil::busybox() {
            return;
        }
    };
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    app:x:1000:1000:app:/home/app:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n";

/// Makes a minimal busybox root: the host's static busybox, a symlink per applet, passwd and
/// group with root, app and nobody, and the usual top-level dirs.
fn busybox_rootfs(root: &Path) {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "home/app", "proc", "dev",
        "sys", "mnt",
    ] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).expect("chown");
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join(applet);
        if link.exists() || applet.ends_with("/busybox") {
            continue;
        }
        std::os::unix::fs::symlink("/bin/busybox", link).expect("applet link");
    }
    fs::write(root.join("etc/passwd"), PASSWD).expect("passwd");
    fs::write(root.join("etc/group"), GROUP).expect("group");
    fs::write(root.join("etc/motd"), "welcome\n").expect("motd");
}

struct Fixture {
    dir: tempfile::TempDir,
    lower: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let lower = dir.path().join("lower");
        busybox_rootfs(&lower);
        Fixture { dir, lower }
    }

    fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    fn spec(&self, script: &str) -> StepSpec {
        StepSpec::new(
            vec![self.lower.clone()],
            self.scratch(),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    }
}

struct Ran {
    out: StepOutcome,
    stdout: String,
    stderr: String,
}

fn run_io(spec: &StepSpec) -> Result<Ran, ExecError> {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut on_out = |l: &[u8]| {
        out.extend_from_slice(l);
        out.push(b'\n');
    };
    let mut on_err = |l: &[u8]| {
        err.extend_from_slice(l);
        err.push(b'\n');
    };
    let res = run_step(
        spec,
        StepIo {
            stdin: Input::Null,
            stdout: Output::Lines(&mut on_out),
            stderr: Output::Lines(&mut on_err),
            on_start: None,
            console: None,
            on_ready: None,
        },
    );
    res.map(|o| Ran {
        out: o,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

fn run_ok(spec: &StepSpec) -> Ran {
    let r = run_io(spec).unwrap_or_else(|e| panic!("step failed to run: {e}"));
    assert!(
        r.out.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        r.out.status,
        r.stdout,
        r.stderr
    );
    r
}

fn mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").expect("mountinfo")
}

#[test]
fn command_is_pid_1_in_a_fresh_pid_namespace() {
    require_root!();
    let f = Fixture::new();
    let r = run_ok(&f.spec("echo $$; readlink /proc/1/exe; ls /proc | grep -c '^[0-9]'"));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "1");
    assert_eq!(lines[1], "/bin/busybox");
    // sh (pid 1), ls and grep at most.
    assert!(lines[2].parse::<u32>().expect("count") <= 3, "{}", r.stdout);
}

#[test]
fn hostname_is_the_short_container_id() {
    require_root!();
    let f = Fixture::new();
    let r = run_ok(&f.spec("hostname; cat /etc/hostname; echo $HOSTNAME"));
    let host = nix::unistd::gethostname().expect("hostname");
    let id12 = &r.out.container_id[..12];
    assert_eq!(r.stdout, format!("{id12}\n{id12}\n{id12}\n"));
    assert_ne!(host.to_string_lossy(), id12);
}

#[test]
fn host_files_outside_the_root_are_invisible() {
    require_root!();
    let f = Fixture::new();
    let marker = f.dir.path().join("host-marker");
    fs::write(&marker, "secret").expect("marker");
    let m = marker.display();
    let r = run_io(&f.spec(&format!(
        "test -e {m} && echo visible; cat {m}; ls /; test -e /bin/busybox && echo ok"
    )))
    .expect("run");
    assert!(
        !r.stdout.contains("visible") && !r.stdout.contains("secret"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("ok"));
    assert!(
        !r.stdout.contains("scratch") && !r.stdout.contains("lower"),
        "{}",
        r.stdout
    );
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn root_gets_exactly_dockers_capabilities() {
    require_root!();
    let f = Fixture::new();
    let r = run_ok(&f.spec("cat /proc/self/status"));
    assert_eq!(status_field(&r.stdout, "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&r.stdout, "CapPrm"), "00000000a80425fb");
    assert_eq!(status_field(&r.stdout, "CapBnd"), "00000000a80425fb");
    assert_eq!(status_field(&r.stdout, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&r.stdout, "CapAmb"), "0000000000000000");
    // Docker does not set no_new_privs by default; the filter is on.
    assert_eq!(status_field(&r.stdout, "NoNewPrivs"), "0");
    assert_eq!(status_field(&r.stdout, "Seccomp"), "2");
}

#[test]
fn masked_and_readonly_proc_paths() {
    require_root!();
    let f = Fixture::new();
    let r = run_io(&f.spec(
        // /proc/kcore only exists with CONFIG_PROC_KCORE; either way nothing can be read.
        "cat /proc/kcore 2>/dev/null | wc -c; wc -c < /proc/keys; ls /sys/firmware | wc -l; \
         echo x > /proc/sys/kernel/hostname && echo wrote-hostname; \
         echo x > /proc/sysrq-trigger && echo wrote-sysrq; \
         touch /sys/x && echo wrote-sys; \
         grep ' /proc ' /proc/self/mountinfo",
    ))
    .expect("run");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(&lines[..3], &["0", "0", "0"], "{}", r.stdout);
    assert!(!r.stdout.contains("wrote-"), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert!(lines[3].contains("nosuid,nodev,noexec"), "{}", lines[3]);
}

#[test]
fn mount_and_unshare_are_refused_inside() {
    require_root!();
    let f = Fixture::new();
    let r = run_io(&f.spec(
        "mount -t tmpfs x /mnt && echo mounted; unshare -U true && echo unshared; \
         unshare -n true && echo netns; nsenter -t 1 -m true && echo entered; true",
    ))
    .expect("run");
    assert!(!r.stdout.contains("mounted"), "{}", r.stdout);
    assert!(!r.stdout.contains("unshared"), "{}", r.stdout);
    assert!(!r.stdout.contains("netns"), "{}", r.stdout);
    assert!(!r.stdout.contains("entered"), "{}", r.stdout);
    // unshare -U needs no capability at all: only seccomp can refuse it, with EPERM.
    assert!(
        r.stderr
            .contains("unshare(0x10000000): Operation not permitted"),
        "{}",
        r.stderr
    );
}

#[test]
fn network_none_has_only_lo_and_host_shares_the_hosts() {
    require_root!();
    let f = Fixture::new();
    let mut spec = f.spec("ls /sys/class/net; ip link show lo");
    spec.network = NetworkMode::None;
    let r = run_ok(&spec);
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("lo"));
    assert!(
        r.stdout.contains("state UNKNOWN") || r.stdout.contains(",UP"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.lines().nth(1).unwrap_or("").starts_with("eth"));

    let host: BTreeSet<String> = fs::read_dir("/sys/class/net")
        .expect("host net")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let mut spec = f.spec("ls /sys/class/net");
    spec.network = NetworkMode::Host;
    let r = run_ok(&spec);
    let inside: BTreeSet<String> = r.stdout.lines().map(str::to_string).collect();
    assert_eq!(inside, host);
}

#[test]
fn no_fd_beyond_stdio_leaks_into_the_container() {
    require_root!();
    let f = Fixture::new();
    // An fd without close-on-exec in the test process must not reach the step.
    // SAFETY: plain open/close.
    let leaky = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    assert!(leaky >= 0);
    // `; true` keeps sh as PID 1 (busybox sh execs a last command in place).
    let r = run_ok(&f.spec("ls /proc/self/fd; echo --; ls /proc/1/fd; true"));
    // SAFETY: closing our own fd.
    unsafe { libc::close(leaky) };
    let (ls_self, pid1) = r.stdout.split_once("--\n").expect("separator");
    let fds: BTreeSet<&str> = ls_self.lines().collect();
    // ls's own directory fd is 3.
    assert!(fds.is_subset(&["0", "1", "2", "3"].into()), "{ls_self}");
    let fds: BTreeSet<&str> = pid1.lines().collect();
    assert_eq!(fds, ["0", "1", "2"].into(), "{pid1}");
}

#[test]
fn workdir_through_a_magic_link_is_refused() {
    require_root!();
    let f = Fixture::new();
    for n in [3, 4, 10] {
        let mut spec = f.spec("pwd");
        spec.workdir = format!("/proc/self/fd/{n}");
        let err = run_io(&spec).map(|r| r.stdout).expect_err("must fail");
        assert!(matches!(err, ExecError::Workdir { .. }), "{n}: {err}");
    }
    let mut spec = f.spec("pwd");
    spec.workdir = "/proc/1/cwd".into();
    assert!(run_io(&spec).is_err());
}

#[test]
fn missing_workdir_is_created_in_the_upper_dir() {
    require_root!();
    let f = Fixture::new();
    let mut spec = f.spec("pwd");
    spec.workdir = "/srv/app/./data/".into();
    let r = run_ok(&spec);
    assert_eq!(r.stdout, "/srv/app/data\n");
    assert!(r.out.upper.join("srv/app/data").is_dir());
    remove_step_dir(&r.out.step_dir).expect("cleanup");
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn check_changes(mode: RootfsMode) {
    let f = Fixture::new();
    fs::create_dir_all(f.lower.join("opq")).expect("mkdir");
    fs::write(f.lower.join("opq/old"), "old").expect("write");
    let mut spec = f.spec(
        "echo hi > /new.txt && rm /etc/motd && echo v2 >> /etc/group && \
         rm -rf /opq && mkdir /opq && echo n > /opq/new && ln -s /etc/passwd /link",
    );
    spec.rootfs = mode;
    let r = run_ok(&spec);
    let up = &r.out.upper;
    assert_eq!(fs::read_to_string(up.join("new.txt")).expect("new"), "hi\n");
    assert!(
        is_whiteout(&up.join("etc/motd")),
        "etc/motd is not a whiteout"
    );
    assert!(fs::read_to_string(up.join("etc/group"))
        .expect("group")
        .ends_with("v2\n"));
    assert!(layers::is_opaque(&up.join("opq")), "opq is not opaque");
    assert!(!up.join("opq/old").exists());
    assert_eq!(
        fs::read_link(up.join("link")).expect("link"),
        Path::new("/etc/passwd")
    );
    let changes = upper_changes(up).expect("changes");
    let find = |p: &str| {
        changes
            .iter()
            .find(|c| c.path == Path::new(p))
            .map(|c| c.kind)
    };
    assert_eq!(find("new.txt"), Some(ChangeKind::Upsert));
    assert_eq!(find("etc/motd"), Some(ChangeKind::Delete));
    assert_eq!(find("etc/group"), Some(ChangeKind::Upsert));
    assert_eq!(find("opq"), Some(ChangeKind::Opaque));
    assert_eq!(find("opq/new"), Some(ChangeKind::Upsert));
    // Mount targets and generated files never reach the layer.
    for p in [
        "proc",
        "dev",
        "sys",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "bin",
    ] {
        assert_eq!(find(p), None, "{p} in {changes:#?}");
    }
    let mut sorted = changes.clone();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(sorted, changes);
    remove_step_dir(&r.out.step_dir).expect("cleanup");
}

#[test]
fn overlay_upper_holds_writes_whiteouts_and_opaque_dirs() {
    require_root!();
    check_changes(RootfsMode::Auto);
}

#[test]
fn copy_fallback_writes_the_same_upper_format() {
    require_root!();
    check_changes(RootfsMode::Copy);
}

#[test]
fn generated_etc_files_stay_out_of_the_upper_dir() {
    require_root!();
    let f = Fixture::new();
    let r = run_ok(&f.spec(
        "grep -q localhost /etc/hosts && test -s /etc/hostname && \
         cat /etc/resolv.conf > /dev/null && echo appended >> /etc/hosts",
    ));
    let changes = upper_changes(&r.out.upper).expect("changes");
    assert!(changes.is_empty(), "{changes:#?}");
    remove_step_dir(&r.out.step_dir).expect("cleanup");
}

#[test]
fn failing_command_returns_its_code_and_leaves_no_mount() {
    require_root!();
    let f = Fixture::new();
    let before = mountinfo();
    let r = run_io(&f.spec("echo out; echo err >&2; exit 42")).expect("run");
    assert_eq!(r.out.status, ExitStatus::Code(42));
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(mountinfo(), before);
    remove_step_dir(&r.out.step_dir).expect("cleanup");
    assert!(!r.out.step_dir.exists());
}

#[test]
fn user_app_runs_with_its_ids_groups_and_home() {
    require_root!();
    let f = Fixture::new();
    let mut spec = f.spec("id -u; id -g; id -G; echo $HOME; grep CapEff /proc/self/status");
    spec.user = "app".into();
    let r = run_ok(&spec);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        &lines[..4],
        &["1000", "1000", "1000 2000", "/home/app"],
        "{}",
        r.stdout
    );
    assert!(lines[4].ends_with("0000000000000000"), "{}", lines[4]);

    let mut spec = f.spec("id -u; id -g; echo $HOME");
    spec.user = "1234".into();
    assert_eq!(run_ok(&spec).stdout, "1234\n0\n/\n");

    let mut spec = f.spec("true");
    spec.user = "ghost".into();
    let err = run_io(&spec).map(|r| r.stdout).expect_err("unknown user");
    assert_eq!(
        err.to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
}

#[test]
fn root_home_and_default_path() {
    require_root!();
    let f = Fixture::new();
    let r = run_ok(&f.spec("echo $HOME; echo $PATH; id -G"));
    assert_eq!(r.stdout, format!("/root\n{DEFAULT_PATH}\n0\n"));
}

#[test]
fn symlinked_mount_targets_in_the_image_are_refused() {
    require_root!();
    for target in ["proc", "dev", "sys"] {
        let f = Fixture::new();
        fs::remove_dir(f.lower.join(target)).expect("rmdir");
        std::os::unix::fs::symlink("/tmp", f.lower.join(target)).expect("symlink");
        let err = run_io(&f.spec("true"))
            .map(|r| r.stdout)
            .expect_err("refused");
        assert!(
            matches!(&err, ExecError::SymlinkMountTarget { path } if path == &format!("/{target}")),
            "{target}: {err}"
        );
    }
}

#[test]
fn command_not_found_uses_dockers_wording() {
    require_root!();
    let f = Fixture::new();
    let mut spec = f.spec("");
    spec.argv = vec!["no-such-tool".into(), "x".into()];
    let err = run_io(&spec).map(|r| r.stdout).expect_err("not found");
    assert_eq!(
        err.to_string(),
        "exec: \"no-such-tool\": executable file not found in $PATH"
    );
    // Exec form by name works through PATH.
    spec.argv = vec!["echo".into(), "found".into()];
    assert_eq!(run_ok(&spec).stdout, "found\n");
}

fn exe_stamp() -> (u64, i64, i64) {
    let m = fs::metadata(std::env::current_exe().expect("exe")).expect("stat exe");
    (m.len(), m.ctime(), m.ctime_nsec())
}

#[test]
fn proc_self_exe_never_reaches_the_host_binary() {
    // CVE-2019-5736: the step's exec goes through the sealed trampoline, so /proc/self/exe
    // names the trampoline, never kiln.
    require_root!();
    let f = Fixture::new();
    fs::write(f.lower.join("evil"), "#!/proc/self/exe\n").expect("script");
    fs::set_permissions(f.lower.join("evil"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let before = exe_stamp();
    let mut spec = f.spec("");
    spec.argv = vec!["/proc/self/exe".into()];
    assert_eq!(
        run_io(&spec).expect("run").out.status,
        ExitStatus::Code(127)
    );
    spec.argv = vec!["/evil".into()];
    assert_eq!(
        run_io(&spec).expect("run").out.status,
        ExitStatus::Code(127)
    );
    let r = run_io(&f.spec("echo x >> /proc/self/exe; readlink /proc/self/exe")).expect("run");
    assert_eq!(r.stdout, "/bin/busybox\n");
    assert_eq!(exe_stamp(), before);
}

#[test]
fn many_long_lowers_fit_the_mount_options() {
    require_root!();
    let f = Fixture::new();
    let long = "x".repeat(120);
    let mut lowers = Vec::new();
    for i in 0..60 {
        let l = f.dir.path().join(format!("layer-{i:03}-{long}"));
        fs::create_dir_all(&l).expect("mkdir");
        fs::write(l.join(format!("f{i}")), format!("{i}\n")).expect("write");
        fs::write(l.join("shared"), format!("{i}\n")).expect("write");
        lowers.push(l);
    }
    let joined: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(
        joined > 4096,
        "the test must exceed one page with absolute paths"
    );
    lowers.push(f.lower.clone());
    let mut spec = f.spec("cat /shared /f0 /f59");
    spec.lowers = lowers;
    let r = run_ok(&spec);
    assert_eq!(r.out.snapshot, Snapshot::Overlay);
    assert_eq!(r.stdout, "0\n0\n59\n");
}

#[test]
fn whiteouts_and_opaque_dirs_in_lowers_are_honoured() {
    require_root!();
    let f = Fixture::new();
    let top = f.dir.path().join("top");
    fs::create_dir_all(top.join("etc")).expect("mkdir");
    fs::create_dir_all(top.join("home")).expect("mkdir");
    let c = std::ffi::CString::new(top.join("etc/motd").into_os_string().into_encoded_bytes())
        .expect("path");
    // SAFETY: valid C string; 0/0 char device = whiteout.
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) }, 0);
    let h = std::ffi::CString::new(top.join("home").into_os_string().into_encoded_bytes())
        .expect("path");
    // SAFETY: valid C strings.
    let ret = unsafe {
        libc::setxattr(
            h.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(ret, 0);
    let layers_view = vec![top.clone(), f.lower.clone()];
    assert_eq!(
        layers::lookup(&layers_view, "etc/motd").expect("lookup"),
        layers::Found::Absent
    );
    assert_eq!(
        layers::lookup(&layers_view, "home/app").expect("lookup"),
        layers::Found::Absent
    );
    for mode in [RootfsMode::Auto, RootfsMode::Copy] {
        let mut spec =
            f.spec("test -e /etc/motd && echo motd; ls /home | wc -l; cat /etc/passwd | wc -l");
        spec.lowers = layers_view.clone();
        spec.rootfs = mode;
        assert_eq!(run_ok(&spec).stdout, "0\n3\n", "{mode:?}");
    }
}

#[test]
fn cancelling_kills_the_whole_step() {
    require_root!();
    let f = Fixture::new();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut spec = f.spec("sleep 3607 & sleep 3607; echo never");
    spec.cancel = Some(cancel.clone());
    let before = mountinfo();
    let c2 = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c2.store(true, Ordering::Relaxed);
    });
    let start = Instant::now();
    let err = run_io(&spec).map(|r| r.stdout).expect_err("interrupted");
    t.join().expect("thread");
    assert!(matches!(err, ExecError::Interrupted), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // Neither sleep survives: the PID namespace died with its PID 1.
    for e in fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            assert!(
                !cmd.windows(5).any(|w| w == b"\x003607"),
                "a sleep survived"
            );
        }
    }
    assert_eq!(mountinfo(), before);
    // The failed step's scratch dir is gone.
    let left: Vec<_> = fs::read_dir(f.scratch()).expect("scratch").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn stale_scratch_dirs_do_not_block_and_can_be_cleaned() {
    require_root!();
    let f = Fixture::new();
    let stale = f.scratch().join("step-0123456789abcdef");
    fs::create_dir_all(stale.join("work/work")).expect("stale");
    fs::set_permissions(stale.join("work/work"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let r = run_ok(&f.spec("true"));
    assert_eq!(clean_scratch(&f.scratch()).expect("clean"), 2);
    assert!(!r.out.step_dir.exists());
}

#[test]
fn dev_is_minimal_and_mknod_devices_do_not_open() {
    require_root!();
    let f = Fixture::new();
    let script = "ls /dev; readlink /dev/fd; readlink /dev/ptmx; readlink /dev/stdin; \
         echo x > /dev/null; head -c 3 /dev/zero | wc -c; test -c /dev/pts/ptmx && echo pts; \
         mknod /tmp/disk b 8 0 && echo made; head -c 1 /tmp/disk > /dev/null && echo read-disk; \
         mknod /dev/disk2 b 8 0; head -c 1 /dev/disk2 > /dev/null && echo read-disk2; true";
    let r = run_io(&f.spec(script)).expect("run");
    let (ls, rest) = r
        .stdout
        .split_once("/proc/self/fd\n")
        .expect("readlink output");
    let names: BTreeSet<&str> = ls.lines().collect();
    let want: BTreeSet<&str> = [
        "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
        "stdout", "tty", "urandom", "zero",
    ]
    .into();
    assert_eq!(names, want);
    // A build step cannot make a block device at all (seccomp, as BuildKit's RUN).
    assert_eq!(rest, "pts/ptmx\n/proc/self/fd/0\n3\npts\n", "{}", r.stderr);
    assert!(r.stderr.contains("Operation not permitted"), "{}", r.stderr);
    // A container (docker run) can make one, but the root and /dev are nodev: the node for
    // the host's disk does not open.
    let mut spec = f.spec(script);
    spec.mknod_any = true;
    let r = run_io(&spec).expect("run");
    assert!(r.stdout.ends_with("pts\nmade\n"), "{}", r.stdout);
}

/// The `nodev` flag of the mount `target` in a mountinfo dump, `None` if not a mount point.
fn nodev_at(mountinfo: &str, target: &str) -> Option<bool> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&target)).then(|| f[5].split(',').any(|o| o == "nodev"))
    })
}

/// Broke: extra binds (`RUN --mount` dirs, volumes) were plain binds, so a node made there
/// opened the host's device; a bind of a `nosuid,noexec` dir must stay so after the remount.
#[test]
fn binds_are_nodev_and_keep_their_source_flags() {
    require_root!();
    let f = Fixture::new();
    let rw = f.dir.path().join("rw");
    let ro = f.dir.path().join("ro");
    let locked = f.dir.path().join("locked");
    for d in [&rw, &ro, &locked] {
        fs::create_dir_all(d).expect("mkdir");
    }
    // A host dir that is its own nosuid,noexec mount (in a private namespace of a child, so
    // nothing is left on the host).
    let script =
        "mknod /rw/null c 1 3 && echo made; head -c 1 /rw/null > /dev/null && echo opened; \
         rm -f /rw/null; cat /proc/self/mountinfo";
    let mut spec = f.spec(script);
    spec.binds = vec![
        BindMount {
            source: rw.clone(),
            target: "/rw".into(),
            readonly: false,
        },
        BindMount {
            source: ro.clone(),
            target: "/ro".into(),
            readonly: true,
        },
        BindMount {
            source: locked.clone(),
            target: "/locked".into(),
            readonly: false,
        },
    ];
    let status = std::thread::scope(|s| {
        s.spawn(|| {
            // This thread's own mount namespace: mount the source nosuid,noexec there only.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare");
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("private");
            nix::mount::mount(
                Some(&locked),
                &locked,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .expect("bind");
            nix::mount::mount(
                None::<&str>,
                &locked,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND
                    | nix::mount::MsFlags::MS_REMOUNT
                    | nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .expect("remount");
            run_io(&spec)
        })
        .join()
        .expect("thread")
    });
    let r = status.expect("run");
    assert!(r.stdout.starts_with("made\n"), "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("opened"), "{}", r.stdout);
    for t in ["/rw", "/ro", "/locked", "/etc/hosts", "/"] {
        assert_eq!(nodev_at(&r.stdout, t), Some(true), "{t}: {}", r.stdout);
    }
    let opts = |t: &str| {
        r.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(t))
            .and_then(|l| l.split_whitespace().nth(5))
            .unwrap_or_default()
            .to_string()
    };
    let locked_opts = opts("/locked");
    assert!(
        locked_opts.contains("nosuid") && locked_opts.contains("noexec"),
        "{locked_opts}"
    );
    assert!(opts("/ro").starts_with("ro,"), "{}", opts("/ro"));
    assert!(opts("/rw").starts_with("rw,"), "{}", opts("/rw"));
    assert!(!rw.join("null").exists());
}

#[test]
fn symlinked_etc_hosts_in_the_image_is_shadowed_not_followed() {
    require_root!();
    let f = Fixture::new();
    let target = f.lower.join("etc/real-hosts");
    fs::write(&target, "image hosts\n").expect("write");
    std::os::unix::fs::symlink("real-hosts", f.lower.join("etc/hosts")).expect("symlink");
    let r = run_ok(&f.spec("cat /etc/hosts; echo more >> /etc/hosts; cat /etc/real-hosts"));
    assert!(
        r.stdout.starts_with("127.0.0.1\tlocalhost "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("image hosts\n"), "{}", r.stdout);
    assert_eq!(fs::read_to_string(&target).expect("read"), "image hosts\n");
    assert!(upper_changes(&r.out.upper).expect("changes").is_empty());
}

#[test]
fn output_can_go_to_a_file_descriptor() {
    require_root!();
    let f = Fixture::new();
    let log = f.dir.path().join("log");
    let file = fs::File::create(&log).expect("log");
    use std::os::fd::AsFd;
    let out = run_step(
        &f.spec("echo to-out; echo to-err >&2"),
        StepIo {
            stdin: Input::Null,
            stdout: Output::Fd(file.as_fd()),
            stderr: Output::Fd(file.as_fd()),
            on_start: None,
            console: None,
            on_ready: None,
        },
    )
    .expect("run");
    assert!(out.status.success());
    assert_eq!(fs::read_to_string(&log).expect("read"), "to-out\nto-err\n");
}

#[test]
fn extra_binds_are_mounted_read_only() {
    require_root!();
    let f = Fixture::new();
    let src = f.dir.path().join("ctx");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("file"), "ctx").expect("write");
    let mut spec = f.spec("cat /run/ctx/file; touch /run/ctx/new && echo wrote");
    spec.binds = vec![BindMount {
        source: src.clone(),
        target: "/run/ctx".into(),
        readonly: true,
    }];
    let r = run_io(&spec).expect("run");
    assert_eq!(r.stdout, "ctx\n");
    assert!(!src.join("new").exists());
    // The stub dirs for the target live in the init layer, not the upper dir.
    assert!(upper_changes(&r.out.upper).expect("changes").is_empty());
}

// Was `bench_trivial_step_median`, which measured and asserted nothing; the timing lives in
// `cargo bench --bench step`. What a run of trivial steps must do is checked here: every step
// succeeds, its step dir goes away, and no mount is left behind.
#[test]
fn trivial_steps_in_a_row_leave_nothing_behind() {
    require_root!();
    let f = Fixture::new();
    let before = mountinfo();
    let mut spec = f.spec("");
    spec.argv = vec!["/bin/true".into()];
    for i in 0..20 {
        let out = run_step(&spec, StepIo::default()).expect("run");
        assert!(out.status.success(), "step {i}: {:?}", out.status);
        remove_step_dir(&out.step_dir).expect("cleanup");
        assert!(!out.step_dir.exists(), "step {i} left {:?}", out.step_dir);
    }
    assert_eq!(mountinfo(), before);
}

/// In the subprocess that `killing_kiln_kills_its_step` starts (this test binary, with
/// `KILN_TEST_LOWER` and `KILN_TEST_SCRATCH` set), runs a long step until SIGKILLed and
/// returns `true`; `false` in the test itself.
fn long_step_in_subprocess() -> bool {
    let Ok(lower) = std::env::var("KILN_TEST_LOWER") else {
        return false;
    };
    let scratch = std::env::var("KILN_TEST_SCRATCH").expect("scratch");
    let spec = StepSpec::new(
        vec![PathBuf::from(lower)],
        scratch,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "sleep 3613 & sleep 3613; true".into(),
        ],
    );
    let _ = run_step(&spec, StepIo::default());
    true
}

fn sleepers(tag: &[u8]) -> usize {
    fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter(|e| {
            fs::read(e.path().join("cmdline")).is_ok_and(|c| c.windows(tag.len()).any(|w| w == tag))
        })
        .count()
}

#[test]
fn killing_kiln_kills_its_step() {
    // SIGKILL gives kiln no chance to clean up: the parent-death signal must take the
    // container's PID 1, and with it the whole PID and mount namespace, down. The process
    // killed is this test again, run alone in a subprocess (it was a separate `helper_long_step`
    // test that passed without doing anything when run on its own).
    if long_step_in_subprocess() {
        return;
    }
    require_root!();
    let f = Fixture::new();
    let before = mountinfo();
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "executor::tests::killing_kiln_kills_its_step",
            "--test-threads=1",
        ])
        .env("KILN_TEST_LOWER", &f.lower)
        .env("KILN_TEST_SCRATCH", f.scratch())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn helper");
    let tag = b"\x003613";
    let start = Instant::now();
    while sleepers(tag) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let start = Instant::now();
    while sleepers(tag) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the step outlived kiln"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(mountinfo(), before);
    // The stale scratch dir is removable and does not block the next step.
    run_ok(&f.spec("true"));
    assert!(clean_scratch(&f.scratch()).expect("clean") >= 1);
}

/// `exec_in` joins a running container: it sees the container's processes (PID 1 is the
/// container's command), hostname, root and files, runs with the same security defaults,
/// and its writes land in the container's upper dir.
#[test]
fn exec_joins_a_running_container() {
    require_root!();
    let f = Fixture::new();
    let mut spec = f.spec("echo ready > /tmp/ready; exec sleep 30");
    spec.hostname = Some("box1".into());
    spec.network = NetworkMode::None;
    let (tx, rx) = std::sync::mpsc::channel::<std::os::fd::OwnedFd>();
    let runner = std::thread::spawn(move || {
        let mut on_start = |_pid: libc::pid_t, fd: std::os::fd::BorrowedFd<'_>| {
            tx.send(fd.try_clone_to_owned().expect("dup pidfd"))
                .expect("send");
        };
        run_step(
            &spec,
            StepIo {
                on_start: Some(&mut on_start),
                ..Default::default()
            },
        )
    });
    let pidfd = rx.recv_timeout(Duration::from_secs(20)).expect("started");
    let exec = |script: &str, user: &str| {
        let mut e = f.spec(script);
        e.hostname = Some("box1".into());
        e.user = user.into();
        let mut out = Vec::new();
        let mut cb = |l: &[u8]| {
            out.extend_from_slice(l);
            out.push(b'\n');
        };
        let status = exec_in(
            &e,
            std::os::fd::AsFd::as_fd(&pidfd),
            StepIo {
                stdout: Output::Lines(&mut cb),
                ..Default::default()
            },
        )
        .expect("exec");
        (status, String::from_utf8_lossy(&out).into_owned())
    };
    // Wait until the container wrote its marker (it may still be starting).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out) = exec("cat /tmp/ready 2>/dev/null || true", "");
        if out.trim() == "ready" || Instant::now() > deadline {
            assert_eq!(out.trim(), "ready");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, out) = exec(
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; echo $$; ls /sys/class/net; \
         grep CapEff /proc/self/status; echo made > /tmp/by-exec",
        "",
    );
    assert!(status.success(), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "sleep 30", "{out}");
    assert_eq!(lines[1], "box1");
    assert_ne!(lines[2], "1", "the exec'd shell is not PID 1");
    assert!(lines[2].parse::<u32>().expect("pid") < 1000, "{out}");
    assert_eq!(lines[3], "lo", "container network namespace: {out}");
    assert!(lines[4].ends_with("00000000a80425fb"), "{out}");
    let (status, out) = exec("id -u; exit 7", "app");
    assert_eq!(status, ExitStatus::Code(7));
    assert_eq!(out.trim(), "1000");
    // SAFETY: pidfd_send_signal on a valid pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd) as libc::c_long,
            libc::SIGKILL as libc::c_long,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_long,
        )
    };
    let outcome = runner.join().expect("join").expect("run");
    assert_eq!(outcome.status, ExitStatus::Signal(libc::SIGKILL));
    assert_eq!(
        fs::read_to_string(outcome.upper.join("tmp/by-exec")).expect("exec's write in upper"),
        "made\n"
    );
    remove_step_dir(&outcome.step_dir).expect("cleanup");
}

/// `-t`: the command's terminal is a pty of the container's own devpts (`/dev/pts/0` as it
/// sees it), it is the controlling terminal, and the master end reaches the caller.
#[test]
fn console_comes_from_the_containers_devpts() {
    require_root!();
    let f = Fixture::new();
    let spec = f.spec("tty; stty size; ps -o tty= -p $$ 2>/dev/null || true; echo done");
    let (tx, rx) = std::sync::mpsc::channel::<std::os::fd::OwnedFd>();
    let mut on_console = |m: std::os::fd::OwnedFd| {
        let ws = libc::winsize {
            ws_row: 33,
            ws_col: 77,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: ioctl with a valid winsize on our master.
        unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&m), libc::TIOCSWINSZ, &ws) };
        tx.send(m).expect("send");
    };
    let out = run_step(
        &spec,
        StepIo {
            console: Some(&mut on_console),
            ..Default::default()
        },
    )
    .expect("run");
    assert!(out.status.success());
    let master = rx.recv().expect("console");
    let mut text = Vec::new();
    let mut file = fs::File::from(master);
    let mut buf = [0u8; 4096];
    // Reads until EIO: every holder of the slave end is gone.
    while let Ok(n) = std::io::Read::read(&mut file, &mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "/dev/pts/0", "{text}");
    assert_eq!(lines[1], "33 77", "{text}");
    assert_eq!(lines.last().copied(), Some("done"), "{text}");
    remove_step_dir(&out.step_dir).expect("cleanup");
}

/// `--init`: kiln's init is PID 1, the command runs under it, orphans are reaped (no zombie
/// is left behind) and the command's exit code comes through.
#[test]
fn init_is_pid_1_and_reaps_orphans() {
    require_root!();
    let f = Fixture::new();
    let mut spec = f.spec(
        "tr '\\0' ' ' < /proc/1/cmdline; echo; (sleep 0.1 &); sleep 0.6; \
         ps -o stat,args | grep -c '^Z' || true; exit 5",
    );
    spec.init = true;
    let ran = run_io(&spec).expect("run");
    assert_eq!(ran.out.status, ExitStatus::Code(5), "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(
        lines[0].starts_with("init /bin/sh /bin/sh -c"),
        "{}",
        ran.stdout
    );
    assert_eq!(lines[1], "0", "zombies left: {}", ran.stdout);
    remove_step_dir(&ran.out.step_dir).expect("cleanup");
}
