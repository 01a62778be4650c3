//! Hostile build contexts (issue 15 items 3-5): symlinks out of the context, a FIFO in it,
//! `WORKDIR /proc/self/fd/N`, a directory swapped for a symlink while builds run, and
//! Dockerfiles and ignore files that are not UTF-8, unreadable, special files or unbounded.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{stderr, TestStore};

const MARKER: &[u8] = b"OUTSIDE-THE-CONTEXT-7f3a";

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Runs kiln with the store, killed (and the test failed) if it has not finished after
/// `limit`: a hang guard, not a timing assertion.
fn kiln_bounded(s: &TestStore, cwd: &Path, args: &[&str], limit: Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env("KILN_ROOT", s.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kiln");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let done = Arc::new(AtomicBool::new(false));
    let guard = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > limit {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
    };
    let out = child.wait_with_output().expect("kiln output");
    done.store(true, Ordering::SeqCst);
    let killed = guard.join().unwrap();
    assert!(!killed, "kiln {args:?} hung and was killed");
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether any regular file below `dir` (symlinks not followed) holds `needle`.
fn tree_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return None;
    };
    for e in rd {
        let p = e.unwrap().path();
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            if let Some(f) = tree_contains(&p, needle) {
                return Some(f);
            }
        } else if md.is_file() && contains(&fs::read(&p).unwrap(), needle) {
            return Some(p);
        }
    }
    None
}

/// Swaps two names (a real directory and a symlink) with `renameat2(RENAME_EXCHANGE)` in a
/// loop until dropped: the context's `d` is a directory one moment and a link out the next.
struct Swapper {
    names: (CString, CString),
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let a = CString::new(a.as_os_str().as_bytes()).unwrap();
        let b = CString::new(b.as_os_str().as_bytes()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let names = (a.clone(), b.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::SeqCst) {
                // SAFETY: two valid C strings; the call only renames.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
                n += 1;
                std::thread::yield_now();
            }
            n
        });
        Swapper {
            names,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let n = t.join().unwrap_or(0);
            // An even number of swaps puts the directory back under its name.
            if n % 2 == 1 {
                // SAFETY: two valid C strings; the call only renames.
                unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        self.names.0.as_ptr(),
                        libc::AT_FDCWD,
                        self.names.1.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
            }
        }
    }
}

/// A context whose directory `d` (holding `f`) is swapped with `d-swap`, a symlink to a
/// directory outside the context holding an `f` with the marker (mode 0600).
fn racy_context(base: &Path, dockerfile: &str) -> (PathBuf, Swapper) {
    let ctx = base.join("ctx");
    write(&ctx, "d/f", b"context bytes\n");
    write(&ctx, "Dockerfile", dockerfile.as_bytes());
    let outside = base.join("root-only");
    write(&outside, "f", MARKER);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(outside.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&outside, ctx.join("d-swap")).unwrap();
    let swapper = Swapper::start(&ctx.join("d"), &ctx.join("d-swap"));
    (ctx, swapper)
}

/// Builds `rounds` times while the context is being swapped; checks no output tree and no
/// progress output ever holds the marker, and that each failure is the context check. Then,
/// the swapping stopped, one build must succeed and see the context's bytes at `seen`.
fn race_builds(
    s: &TestStore,
    ctx: &Path,
    base: &Path,
    rounds: usize,
    swapper: Swapper,
    seen: &str,
) -> usize {
    let mut ok = 0;
    // Failures other than the context check, reported once every round was checked for
    // leaks.
    let mut unexpected = Vec::new();
    for i in 0..rounds {
        let dest = base.join(format!("out-{i}"));
        let dest_arg = format!("type=local,dest={}", dest.display());
        let o = kiln_bounded(
            s,
            ctx,
            &[
                "build",
                "--progress=plain",
                "--no-cache",
                "--output",
                &dest_arg,
                ".",
            ],
            Duration::from_secs(300),
        );
        assert!(
            !contains(&o.stdout, MARKER) && !contains(&o.stderr, MARKER),
            "round {i}: the marker reached the build output:\n{}",
            stderr(&o)
        );
        if let Some(f) = tree_contains(&dest, MARKER) {
            panic!(
                "round {i}: {} holds bytes from outside the context",
                f.display()
            );
        }
        if o.status.success() {
            ok += 1;
        } else {
            let e = stderr(&o);
            // A scan that listed `d` as the symlink follows it inside the context (COPY
            // follows source symlinks, as BuildKit does) and finds its target missing.
            if !(e.contains("context changed during the build")
                || e.contains("is a symlink; refusing to follow it")
                || e.contains("which is not in the build context"))
            {
                unexpected.push(format!("round {i}: {e}"));
            }
        }
        let _ = fs::remove_dir_all(&dest);
    }
    drop(swapper);
    assert!(
        unexpected.is_empty(),
        "unexpected failures:\n{unexpected:#?}"
    );
    let dest = base.join("out-after");
    let dest_arg = format!("type=local,dest={}", dest.display());
    let o = kiln_bounded(
        s,
        ctx,
        &["build", "--no-cache", "--output", &dest_arg, "."],
        Duration::from_secs(300),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got = fs::read(dest.join(seen)).unwrap();
    assert!(contains(&got, b"context bytes") && !contains(&got, MARKER));
    ok
}

// Regression (issue 15 item 3): with `d` swapped for a symlink to a root-only
// directory while builds ran, `COPY d/ /x/` put that directory's 0600 file into the image
// (2 builds in 50): files were reopened by path after the walk.
#[test]
fn copy_from_a_directory_swapped_for_a_symlink_never_takes_outside_bytes() {
    let s = TestStore::new();
    let base = s.dir.path();
    let (ctx, swapper) = racy_context(base, "FROM scratch\nCOPY d/ /x/\nCOPY . /all/\n");
    let ok = race_builds(&s, &ctx, base, 30, swapper, "x/f");
    println!("{ok} of 30 builds succeeded");
}

// Regression (issue 15 item 3): `RUN --mount=type=bind,source=d` mounted the
// joined path, so a swap between the check and the mount bound the root-only directory.
#[test]
fn bind_mount_of_a_directory_swapped_for_a_symlink_never_shows_outside_bytes() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let base = s.dir.path();
    let (ctx, swapper) = racy_context(
        base,
        "FROM busybox:local\n\
         RUN --mount=type=bind,source=d,target=/m cat /m/f > /seen; cat /m/f\n\
         RUN --mount=type=bind,source=d,target=/w,rw cat /w/f >> /seen; cat /w/f\n",
    );
    let ok = race_builds(&s, &ctx, base, 20, swapper, "seen");
    println!("{ok} of 20 builds succeeded");
}

// A context symlink out of the context is never followed out of it. A source
// that is a symlink is followed as BuildKit follows it (fsutil's RootPath): inside the
// context, `/` meaning the context root, so it copies the context's own file or fails;
// symlinks below a copied directory stay symlinks. The host files they name never reach the
// image.
#[test]
fn context_symlinks_out_of_the_context_never_copy_host_files() {
    let s = TestStore::new();
    let base = s.dir.path();
    let ctx = base.join("ctx");
    write(&ctx, "sub/keep", b"k");
    symlink("/etc/passwd", ctx.join("foo")).unwrap();
    symlink("../../../etc/group", ctx.join("sub/bar")).unwrap();
    symlink("/", ctx.join("rootlink")).unwrap();
    let passwd = fs::read("/etc/passwd").unwrap();
    let first_line = passwd.split(|b| *b == b'\n').next().unwrap().to_vec();
    let build = |n: usize, df: &str| {
        write(&ctx, "Dockerfile", format!("FROM scratch\n{df}").as_bytes());
        let dest = base.join(format!("out{n}"));
        let dest_arg = format!("type=local,dest={}", dest.display());
        let o = kiln_bounded(
            &s,
            &ctx,
            &["build", "--output", &dest_arg, "."],
            Duration::from_secs(300),
        );
        if dest.exists() {
            assert!(tree_contains(&dest, &first_line).is_none(), "{df}");
        }
        (o, dest)
    };
    // Compared as bytes: `Path` equality would call `//` and `/` the same.
    let link = |d: &Path, p: &str| fs::read_link(d.join(p)).unwrap().into_os_string();
    // `/etc/passwd`, `../../../etc/group` and `/etc` resolve to the context's own etc/,
    // which it does not have: a clear error naming the source.
    for (n, df) in ["COPY foo /a/", "COPY sub/bar /b/", "COPY ../foo /c/"]
        .iter()
        .enumerate()
    {
        let (o, _) = build(n, df);
        let e = stderr(&o);
        assert!(!o.status.success(), "{df}: built");
        assert!(e.contains("not in the build context"), "{df}: {e}");
    }
    // `/` is the context root: its files, with the links in it copied as links.
    let (o, dest) = build(10, "COPY rootlink/ /r/\nCOPY sub /s/\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(dest.join("r/sub/keep")).unwrap(), b"k");
    assert_eq!(link(&dest, "r/foo"), "/etc/passwd");
    // Regression: the tar writer cleaned the target `/` into `//`.
    assert_eq!(link(&dest, "r/rootlink"), "/");
    assert_eq!(link(&dest, "s/bar"), "../../../etc/group");
    // With an etc/ of its own, the context's file is what the link names.
    write(&ctx, "etc/passwd", b"context passwd");
    symlink("/etc", ctx.join("etc-link")).unwrap();
    let (o, dest) = build(11, "COPY foo /a/\nCOPY etc-link/ /e/\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(dest.join("a/foo")).unwrap(), b"context passwd");
    assert_eq!(fs::read(dest.join("e/passwd")).unwrap(), b"context passwd");
    // A link chain that never ends is an error, not a hang.
    symlink("loop", ctx.join("loop")).unwrap();
    let (o, _) = build(12, "COPY loop /l\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("too many levels of symbolic links"));
}

// The hasher never blocks on a FIFO: a FIFO in the context is listed, never read, and
// copied as a FIFO as BuildKit does (it used to be dropped: `COPY fifo /x` wrote nothing).
#[test]
fn fifo_in_the_context_never_blocks_and_is_copied_as_a_fifo() {
    use std::os::unix::fs::FileTypeExt;
    let s = TestStore::new();
    let base = s.dir.path();
    let ctx = base.join("ctx");
    write(
        &ctx,
        "Dockerfile",
        b"FROM scratch\nCOPY fifo /x\nCOPY . /all/\n",
    );
    nix::unistd::mkfifo(
        &ctx.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let dest = base.join("out");
    let dest_arg = format!("type=local,dest={}", dest.display());
    let o = kiln_bounded(
        &s,
        &ctx,
        &["build", "--output", &dest_arg, "."],
        Duration::from_secs(300),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for p in ["x", "all/fifo"] {
        let md = fs::symlink_metadata(dest.join(p)).unwrap();
        assert!(md.file_type().is_fifo(), "/{p} is not a FIFO");
    }
}

// Regression: context files whose names are not UTF-8 were silently dropped; Docker copies
// them.
#[test]
fn non_utf8_file_names_are_copied() {
    let s = TestStore::new();
    let base = s.dir.path();
    let ctx = base.join("ctx");
    write(
        &ctx,
        "Dockerfile",
        b"FROM scratch\nCOPY . /all/\nCOPY dir /d/\n",
    );
    fs::create_dir_all(ctx.join("dir")).unwrap();
    let name = OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(ctx.join(name), b"latin-1 name").unwrap();
    fs::write(ctx.join("dir").join(name), b"in a dir").unwrap();
    let dest = base.join("out");
    let dest_arg = format!("type=local,dest={}", dest.display());
    let o = kiln_bounded(
        &s,
        &ctx,
        &["build", "--output", &dest_arg, "."],
        Duration::from_secs(300),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(dest.join("all").join(name)).unwrap(),
        b"latin-1 name"
    );
    assert_eq!(fs::read(dest.join("d").join(name)).unwrap(), b"in a dir");
}

/// Builds `FROM scratch / COPY . /all/` in `ctx`; the output dir on success.
fn copy_all(s: &TestStore, ctx: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let dest = ctx.parent().unwrap().join("out");
    let _ = fs::remove_dir_all(&dest);
    let dest_arg = format!("type=local,dest={}", dest.display());
    let mut args = vec!["build", "--output", &dest_arg];
    args.extend_from_slice(extra);
    args.push(".");
    let o = kiln_bounded(s, ctx, &args, Duration::from_secs(120));
    (o, dest)
}

// Regression (issue 15 item 4): a .dockerignore with one byte that is not
// UTF-8 was skipped as a whole, so the secret.key it excludes landed in the image.
#[test]
fn non_utf8_dockerignore_still_excludes_what_it_names() {
    let s = TestStore::new();
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "Dockerfile", b"FROM scratch\nCOPY . /all/\n");
    write(&ctx, "secret.key", b"SECRET");
    write(&ctx, "keep.txt", b"keep");
    fs::write(ctx.join(OsStr::from_bytes(b"caf\xe9.pem")), b"SECRET2").unwrap();
    write(
        &ctx,
        ".dockerignore",
        b"# caf\xe9\nsecret.key\ncaf\xe9.pem\n",
    );
    let (o, dest) = copy_all(&s, &ctx, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dest.join("all/keep.txt").exists());
    assert!(
        !dest.join("all/secret.key").exists(),
        "secret.key was copied"
    );
    assert!(!dest
        .join("all")
        .join(OsStr::from_bytes(b"caf\xe9.pem"))
        .exists());
}

// Regression (issue 15 items 4 and 5): an ignore file kiln could not
// read (a directory, a FIFO, a symlink out of the context or to /dev/zero) was skipped in
// silence, or read without bound; each is now a build error naming it, at once.
#[test]
fn unusable_dockerignore_is_a_build_error_naming_it() {
    let s = TestStore::new();
    let base = s.dir.path();
    type Setup = fn(&Path);
    let cases: [(&str, Setup, &str); 5] = [
        ("directory", |p| fs::create_dir(p).unwrap(), "a directory"),
        (
            "fifo",
            |p| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap(),
            "a FIFO",
        ),
        ("dev-zero", |p| symlink("/dev/zero", p).unwrap(), "out of"),
        (
            "outside",
            |p| symlink("../../outside-ignore", p).unwrap(),
            "out of",
        ),
        (
            "huge",
            |p| fs::File::create(p).unwrap().set_len(2 << 20).unwrap(),
            "limit",
        ),
    ];
    write(base, "outside-ignore", b"nothing\n");
    for (name, setup, want) in cases {
        let ctx = base.join(name).join("ctx");
        write(&ctx, "Dockerfile", b"FROM scratch\nCOPY . /all/\n");
        write(&ctx, "secret.key", b"SECRET");
        setup(&ctx.join(".dockerignore"));
        let (o, dest) = copy_all(&s, &ctx, &[]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{name}: the build went on:\n{e}");
        assert!(
            e.contains(".dockerignore") && e.contains(want),
            "{name}: {e}"
        );
        assert!(!dest.exists());
    }
    // A symlink that stays inside the context is followed.
    let ctx = base.join("inside").join("ctx");
    write(&ctx, "Dockerfile", b"FROM scratch\nCOPY . /all/\n");
    write(&ctx, "secret.key", b"SECRET");
    write(&ctx, "conf/ignore", b"secret.key\n");
    symlink("conf/ignore", ctx.join(".dockerignore")).unwrap();
    let (o, dest) = copy_all(&s, &ctx, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dest.join("all/secret.key").exists());
}

// Regression (issue 15 item 5): a Dockerfile that is a symlink to /dev/zero
// was read without bound (10 GB of memory in 30 s), and a FIFO blocked forever.
#[test]
fn unbounded_or_special_dockerfile_is_refused_at_once() {
    let s = TestStore::new();
    let base = s.dir.path();
    let ctx = base.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    symlink("/dev/zero", ctx.join("Dockerfile")).unwrap();
    nix::unistd::mkfifo(
        &ctx.join("fifo.Dockerfile"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let big = ctx.join("big.Dockerfile");
    let mut text = b"FROM scratch\n".to_vec();
    text.resize(11 << 20, b'#');
    fs::write(&big, text).unwrap();
    for (file, want) in [
        ("Dockerfile", "found a device"),
        ("fifo.Dockerfile", "found a FIFO"),
        ("big.Dockerfile", "larger than kiln's limit of 10 MiB"),
    ] {
        let (o, _) = copy_all(&s, &ctx, &["-f", file]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{file}: {e}");
        assert!(e.contains(file) && e.contains(want), "{file}: {e}");
    }
}

// `WORKDIR /proc/self/fd/N` names a descriptor of whatever process resolves
// it; kiln resolves a WORKDIR inside the image root, so the step fails naming it instead
// of starting in a directory kiln (or the runtime) had open. (Already so before issue 15;
// kept as a guard.)
#[test]
fn workdir_through_proc_self_fd_never_reaches_the_host() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let base = s.dir.path();
    for n in [3, 5, 7, 10, 20, 30] {
        let ctx = base.join(format!("ctx-{n}"));
        write(
            &ctx,
            "Dockerfile",
            format!(
                "FROM busybox:local\nWORKDIR /proc/self/fd/{n}\nRUN pwd > /tmp/pwd; ls -la . > /tmp/ls; touch in-workdir\n"
            )
            .as_bytes(),
        );
        let dest = base.join(format!("out-{n}"));
        let dest_arg = format!("type=local,dest={}", dest.display());
        let o = kiln_bounded(
            &s,
            &ctx,
            &["build", "--progress=plain", "--output", &dest_arg, "."],
            Duration::from_secs(300),
        );
        let e = stderr(&o);
        // /proc of the image is empty: WORKDIR makes plain directories, and the step, run
        // with the container's own /proc mounted there, has no such descriptor.
        assert!(!o.status.success(), "N={n}: {e}");
        assert!(
            e.contains(&format!("working directory /proc/self/fd/{n}")),
            "N={n}: {e}"
        );
        assert!(!dest.exists());
    }
}
