//! Containers end to end: interactive containers — a terminal (under `script`), detach and
//! attach, standard input without a terminal.
//! Every test removes its containers (`rm -f`) when it ends, even when it fails.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::containers::*;
use super::util::{stderr, stdout};

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

fn wait_text(buf: &Arc<Mutex<Vec<u8>>>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {needle:?} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kiln <args>` under `script`, which gives it a real terminal of 40 rows and 100 columns.
fn in_terminal(e: &Env, args: &str) -> KillOnDrop {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let cmd = format!("stty rows 40 cols 100; exec {kiln} {args}");
    let child = Command::new("script")
        .args(["-q", "-f", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(e.dir())
        .env("KILN_ROOT", e.root())
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    KillOnDrop(child)
}

#[test]
fn interactive_terminal_detach_and_attach() {
    let Some(e) = Env::new() else { return };
    let mut term = in_terminal(&e, "run -it --name tty1 busybox:local sh");
    let mut input = term.0.stdin.take().unwrap();
    let out = collect(term.0.stdout.take().unwrap());
    input
        .write_all(b"echo sum=$((40+2)); tty; stty size\n")
        .unwrap();
    wait_text(&out, "sum=42");
    wait_text(&out, "/dev/pts/0");
    wait_text(&out, "40 100");
    // Ctrl-P Ctrl-Q detaches; the container keeps running.
    input.write_all(&[0x10, 0x11]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while term.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "CLI did not detach");
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = e.inspect("tty1");
    assert!(running(&v), "{v:#}");
    assert_eq!(v["Config"]["Tty"], true);
    assert!(e.ok(&["ps", "--format", "{{.Names}}"]).contains("tty1"));

    // exec -it gets a terminal of its own in the same container.
    let mut ex = in_terminal(&e, "exec -it tty1 sh");
    let mut ex_in = ex.0.stdin.take().unwrap();
    let ex_out = collect(ex.0.stdout.take().unwrap());
    ex_in
        .write_all(b"echo exec-$((6*7)); tty; exit 3\n")
        .unwrap();
    wait_text(&ex_out, "exec-42");
    wait_text(&ex_out, "/dev/pts/1");
    assert_eq!(ex.0.wait().unwrap().code(), Some(3));

    // attach reconnects to the shell; `exit` ends the container and the CLI with its code.
    let mut at = in_terminal(&e, "attach tty1");
    let mut at_in = at.0.stdin.take().unwrap();
    let at_out = collect(at.0.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    at_in.write_all(b"echo back-$((1+1))\n").unwrap();
    wait_text(&at_out, "back-2");
    at_in.write_all(b"exit 5\n").unwrap();
    assert_eq!(at.0.wait().unwrap().code(), Some(5));
    let v = e.wait_for("tty1", 10, exited);
    assert_eq!(v["State"]["ExitCode"], 5);
}

// Regression: the terminal's size reached the container's console only after its command
// had started, so a first `stty size` saw 0 rows and failed ("standard input: No child
// processes"). The size now travels with the attach and is set before the command runs.
#[test]
fn a_tty_has_the_terminals_size_when_the_command_starts() {
    let Some(e) = Env::new() else { return };
    for _ in 0..3 {
        let mut term = in_terminal(&e, "run -t --rm busybox:local stty size");
        let out = collect(term.0.stdout.take().unwrap());
        let status = term.0.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        assert!(status.success(), "{status:?}: {text}");
        assert!(text.contains("40 100"), "{text}");
    }
}

#[test]
fn interactive_stdin_without_a_terminal() {
    let Some(e) = Env::new() else { return };
    let mut child = e
        .command(&[
            "run",
            "-i",
            "--rm",
            "busybox:local",
            "sh",
            "-c",
            "tr a-z A-Z; exit 9",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln run -i");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped through\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "PIPED THROUGH\n", "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(9));
}
