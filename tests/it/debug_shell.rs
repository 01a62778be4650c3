//! Debugging a failed step (issue 18): `kiln build --on-error=shell` opens a shell in the
//! failed RUN's sandbox on a terminal (tested through a pty made by `script`), prints how to
//! reproduce the step without one, and `kiln debug shell [#]N` opens the same sandbox on
//! any step of the last build. Nothing a shell changes reaches a layer or a later build.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::containers::KillOnDrop;
use super::util::{require, stderr, stdout, TestStore};

/// A store with `busybox:local` and a build context of its own.
struct Bench {
    store: TestStore,
}

impl Bench {
    /// `None` (after saying why) when the host cannot run build steps.
    fn new() -> Option<Bench> {
        if !require::require(
            require::find_tool("script").is_some(),
            "script (util-linux)",
        ) {
            return None;
        }
        let store = TestStore::new();
        store.busybox("busybox:local")?;
        Some(Bench { store })
    }

    /// The context directory, with this Dockerfile (and files).
    fn context(&self, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.store.dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (name, data) in files {
            std::fs::write(ctx.join(name), data).unwrap();
        }
        ctx
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.store.kiln(self.store.dir.path(), args, None)
    }

    fn kiln_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        self.store.kiln(self.store.dir.path(), args, Some(input))
    }

    /// `kiln <args>` under `script`: a real terminal, whose input the test writes.
    fn in_terminal(&self, args: &[&str]) -> KillOnDrop {
        let kiln = env!("CARGO_BIN_EXE_kiln");
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let cmd = format!("stty rows 40 cols 100; exec {kiln} {}", quoted.join(" "));
        let child = Command::new("script")
            .args(["-q", "-f", "-e", "-c", &cmd, "/dev/null"])
            .current_dir(self.store.dir.path())
            .env("KILN_ROOT", self.store.root())
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux)");
        KillOnDrop(child)
    }
}

/// Reads a child's output into a shared buffer, so the test can wait for text to appear.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

fn wait_text(buf: &Arc<Mutex<Vec<u8>>>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !text(buf).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "never saw {needle:?} in:\n{}",
            text(buf)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the child to end; its exit code.
fn wait_exit(term: &mut KillOnDrop) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = term.0.try_wait().unwrap() {
            return st.code();
        }
        assert!(
            Instant::now() < deadline,
            "the terminal session never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of terminal output, without carriage returns.
fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// Types `input` into a `build --on-error=shell` of `ctx` once the shell is open; the whole
/// session's output and the build's exit code.
fn shell_session(b: &Bench, ctx: &Path, flags: &[&str], input: &str) -> (String, Option<i32>) {
    let ctx = ctx.display().to_string();
    let mut args = vec!["build", "--progress=plain", "--on-error=shell"];
    args.extend_from_slice(flags);
    args.push(&ctx);
    let mut term = b.in_terminal(&args);
    let mut stdin = term.0.stdin.take().unwrap();
    let out = collect(term.0.stdout.take().unwrap());
    wait_text(&out, "exit the shell to end the build");
    stdin.write_all(input.as_bytes()).unwrap();
    let code = wait_exit(&mut term);
    drop(stdin);
    (text(&out), code)
}

const FAILING: &str = "FROM busybox:local\nWORKDIR /work\nRUN touch /made && false\n";

#[test]
fn a_failed_step_opens_a_shell_on_its_files_and_the_build_still_fails() {
    let Some(b) = Bench::new() else { return };
    let ctx = b.context(FAILING, &[]);
    let plain = b.kiln(&["build", "--progress=plain", &ctx.display().to_string()]);
    assert!(!plain.status.success());
    // Output the typed line's echo cannot hold: ls prints `/made` alone on its line, echo
    // prints the expanded directory.
    let (out, code) = shell_session(
        &b,
        &ctx,
        &[],
        "ls /made; echo \"at:$PWD\"; touch /from-shell; exit\n",
    );
    let got = lines(&out);
    assert!(got.iter().any(|l| l == "/made"), "no /made in:\n{out}");
    assert!(
        got.iter().any(|l| l == "at:/work"),
        "not in the step's workdir:\n{out}"
    );
    assert!(
        out.contains("exit code: 1"),
        "the build's error is reported:\n{out}"
    );
    assert_eq!(
        code,
        plain.status.code(),
        "the same exit code as without the flag"
    );
    assert_ne!(code, Some(0));

    // Nothing the shell did was kept: not in the step's kept files, not in a later build.
    let o = b.kiln(&["debug", "shell", "--", "ls", "/made"]);
    assert!(
        o.status.success(),
        "the step's own files are kept: {}",
        stderr(&o)
    );
    let o = b.kiln(&["debug", "shell", "--", "ls", "/from-shell"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    b.context(&FAILING.replace(" && false", ""), &[]);
    let o = b.kiln(&[
        "build",
        "--progress=plain",
        "-t",
        "fixed",
        &ctx.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = b.store.unpack("fixed");
    assert!(files.join("made").exists());
    assert!(!files.join("from-shell").exists());
    assert!(!files.join("work/from-shell").exists());
    // The build that ended removed the failed step's kept files; its scratch is gone too.
    let debug = b.store.root().join("debug");
    let kept = walk_names(&debug);
    assert!(!kept.iter().any(|n| n.contains("upper")), "{kept:?}");
    assert!(walk_names(&b.store.root().join("tmp")).is_empty());
}

/// Every name below `dir`.
fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk_names(&e.path()));
            }
        }
    }
    out
}

#[test]
fn without_a_terminal_the_flag_says_how_to_reproduce_the_step() {
    let Some(b) = Bench::new() else { return };
    let ctx = b.context(
        "FROM busybox:local\nENV GREETING=hi\nWORKDIR /work\nUSER app\n\
         RUN --mount=type=cache,target=/c,uid=1000 echo kept > /c/f && false\n",
        &[],
    );
    let ctx = ctx.display().to_string();
    let plain = b.kiln(&["build", "--progress=plain", &ctx]);
    let o = b.kiln(&["build", "--progress=plain", "--on-error=shell", &ctx]);
    assert_eq!(o.status.code(), plain.status.code());
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    let root = b.store.root().display().to_string();
    for want in [
        format!("kiln --root {root} debug shell '#5'"),
        "command:  /bin/sh -c 'echo kept > /c/f && false'".to_string(),
        "workdir:  /work".to_string(),
        "user:     app".to_string(),
        "env:      GREETING=hi".to_string(),
        "mount:    type=cache,target=/c".to_string(),
        "did not complete successfully: exit code: 1".to_string(),
    ] {
        assert!(err.contains(&want), "no {want:?} in:\n{err}");
    }
    // What it says works: the same sandbox, its cache mount, user and directory.
    let o = b.kiln(&[
        "debug",
        "shell",
        "#5",
        "--",
        "sh",
        "-c",
        "cat /c/f; id -un; pwd",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "kept\napp\n/work\n");
}

#[test]
fn debug_shell_opens_any_step_of_the_last_build() {
    let Some(b) = Bench::new() else { return };
    let ctx = b.context(
        "FROM busybox:local\nRUN echo hi > /hi\nENV X=1\nWORKDIR /w\nUSER app\n",
        &[],
    );
    let o = b.kiln(&["build", "--progress=plain", &ctx.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sh = |step: &str, script: &str| {
        let o = b.kiln(&["debug", "shell", step, "--", "sh", "-c", script]);
        (o.status.code(), stdout(&o), stderr(&o))
    };
    // FROM: the base's files only; the RUN: after it; metadata steps: their config.
    assert_ne!(sh("#1", "cat /hi").0, Some(0));
    assert_eq!(sh("#2", "cat /hi").1, "hi\n");
    assert_eq!(sh("2", "echo \"[$X]\"").1, "[]\n");
    assert_eq!(sh("#3", "echo \"[$X]\"").1, "[1]\n");
    assert_eq!(sh("#4", "pwd; id -u").1, "/w\n0\n");
    assert_eq!(sh("#5", "pwd; id -u").1, "/w\n1000\n");
    // The shell's exit code is the command's.
    assert_eq!(sh("#2", "exit 7").0, Some(7));
    // Standard input is the shell's script when it is not a terminal.
    let o = b.kiln_stdin(&["debug", "shell", "#2"], b"cat /hi; echo $X\n");
    assert_eq!(stdout(&o), "hi\n\n");
    // No failed step to default to, and no step 9: both list the steps.
    for args in [&["debug", "shell"][..], &["debug", "shell", "#9"]] {
        let o = b.kiln(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains("#3 [stage-0 3/5] ENV X=1 (done)"), "{err}");
    }
    let o = b.kiln(&["debug", "shell", "seven"]);
    assert!(
        stderr(&o).contains("is not a step number"),
        "{}",
        stderr(&o)
    );
    // A rebuild answers from the cache, and its steps open the same way.
    let o = b.kiln(&["build", "--progress=plain", &ctx.display().to_string()]);
    assert!(o.status.success());
    assert_eq!(sh("#2", "cat /hi").1, "hi\n");
    assert!(stderr(&b.kiln(&["debug", "shell", "#9"])).contains("(cached)"));
}

#[test]
fn secrets_reach_the_shell_only_with_consent() {
    let Some(b) = Bench::new() else { return };
    let ctx = b.context(
        "FROM busybox:local\n\
         RUN --mount=type=secret,id=tok --mount=type=bind,source=.,target=/src false\n",
        &[("file.txt", "from the context\n")],
    );
    let secret = b.store.dir.path().join("tok.txt");
    std::fs::write(&secret, "s3cret-value\n").unwrap();
    let secret_flag = format!("id=tok,src={}", secret.display());
    let input = "cat /run/secrets/tok; cat /src/file.txt; exit\n";
    let (out, code) = shell_session(&b, &ctx, &["--secret", &secret_flag], input);
    assert_ne!(code, Some(0));
    assert!(
        out.contains("not mounted without --debug-secrets: secret tok at /run/secrets/tok"),
        "{out}"
    );
    assert!(!out.contains("s3cret-value"), "{out}");
    assert!(
        out.contains("from the context"),
        "context binds are there:\n{out}"
    );
    let (out, _) = shell_session(
        &b,
        &ctx,
        &["--secret", &secret_flag, "--debug-secrets"],
        input,
    );
    assert!(out.contains("s3cret-value"), "{out}");
    // Its value is in no record: `debug shell` cannot mount it, and says so.
    let o = b.kiln(&["debug", "shell", "--", "ls", "/run/secrets/tok"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("secret tok at /run/secrets/tok"),
        "{}",
        stderr(&o)
    );
    let debug = b.store.root().join("debug");
    for name in walk_names(&debug) {
        let p = find(&debug, &name);
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("s3cret-value"),
                "{} holds the secret",
                p.display()
            );
        }
    }
}

/// The first path below `dir` named `name`.
fn find(dir: &Path, name: &str) -> PathBuf {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy() == name {
            return e.path();
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let p = find(&e.path(), name);
            if p.exists() {
                return p;
            }
        }
    }
    dir.join("\0missing")
}
