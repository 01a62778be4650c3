//! Docker habits of `run`, `create`, `exec` and `kill` (issue 18): a missing image is pulled,
//! signals sent to a foreground `run` reach the container, a command that cannot start fails
//! at once, `-it` asks for a terminal only where there is one, and Docker's exit codes and
//! messages. Each test checks kiln, then that Docker does the same where it is installed (a
//! missing Docker fails under CI, and skips the comparison loudly elsewhere).
//! Every test removes its containers when it ends, even when it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::containers::*;
use super::registry::Registry;
use super::util::{require, run_tool, stderr, stdout, unique_name, Kiln};

/// `docker` with a reachable daemon; `None` after reporting it missing.
fn docker() -> Option<PathBuf> {
    let bin = require::tool("docker", "apt-get install docker.io")?;
    let up = Command::new(&bin)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    require::require(
        up,
        "a reachable docker daemon (scripts/start-dockerd.sh starts one)",
    )
    .then_some(bin)
}

/// Docker with the test's busybox loaded under a name of its own; the image and the
/// containers named through [`Docker::name`] are removed on drop.
struct Docker {
    bin: PathBuf,
    image: String,
    names: Mutex<Vec<String>>,
}

impl Docker {
    /// Loads `busybox:local` of `e` into Docker, or `None` without a Docker to compare with.
    fn with_busybox(e: &Env) -> Option<Docker> {
        let bin = docker()?;
        let image = format!("{}:1", unique_name("habits"));
        e.ok(&["tag", "busybox:local", &image]);
        let tar = e.dir().join("habits-busybox.tar");
        e.ok(&["save", "-o", tar.to_str().expect("utf-8 path"), &image]);
        run_tool(Command::new(&bin).args(["load", "-i", tar.to_str().expect("utf-8 path")]));
        Some(Docker {
            bin,
            image,
            names: Mutex::new(Vec::new()),
        })
    }

    /// A container name no other run uses, removed on drop.
    fn name(&self, base: &str) -> String {
        let n = unique_name(base).replace('/', "-");
        self.names.lock().unwrap().push(n.clone());
        n
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running docker")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args).stdin(Stdio::null());
        c
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for n in self.names.lock().unwrap().iter() {
            let _ = Command::new(&self.bin).args(["rm", "-f", n]).output();
        }
        let _ = Command::new(&self.bin)
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// Removes an image from Docker when dropped.
struct DockerImage<'a>(&'a PathBuf, String);

impl Drop for DockerImage<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0).args(["rmi", "-f", &self.1]).output();
    }
}

#[track_caller]
fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}:\n{}{}",
        stdout(o),
        stderr(o)
    );
}

#[test]
fn run_and_create_pull_a_missing_image() {
    let Some(e) = Env::new() else { return };
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let reference = format!("{}/it/pulled:1", reg.host());
    e.ok(&["tag", "busybox:local", &reference]);
    e.ok(&["push", &reference]);
    let unable = format!("Unable to find image '{reference}' locally\n");
    let fresh = Kiln::new();

    // The line, then the pull's progress, all on standard error: standard output is the
    // container's.
    let o = fresh.run(&["run", "--rm", &reference, "echo", "hi"]);
    assert_code(&o, 0, "run of a missing image");
    assert_eq!(stdout(&o), "hi\n");
    let err = stderr(&o);
    assert!(err.starts_with(&unable), "{err}");
    assert!(err.contains("1: Pulling from it/pulled\n"), "{err}");
    assert!(err.contains("Pull complete"), "{err}");
    assert!(
        err.contains(&format!("Status: Downloaded newer image for {reference}\n")),
        "{err}"
    );
    // --pull always pulls an image the store has, without the line.
    let o = fresh.run(&["run", "--rm", "--pull", "always", &reference, "true"]);
    assert_code(&o, 0, "run --pull always");
    assert!(!stderr(&o).contains("Unable to find"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("Status: Image is up to date for {reference}")),
        "{}",
        stderr(&o)
    );
    // --pull never refuses a missing image: 125 from run, 1 from create.
    fresh.ok(&["rmi", &reference]);
    let no_such = format!("Error response from daemon: No such image: {reference}\n");
    let o = fresh.run(&["run", "--rm", "--pull=never", &reference, "true"]);
    assert_code(&o, 125, "run --pull=never");
    assert!(stderr(&o).ends_with(&no_such), "{}", stderr(&o));
    let o = fresh.run(&["create", "--pull", "never", &reference]);
    assert_code(&o, 1, "create --pull never");
    assert_eq!(stderr(&o), no_such);
    // create pulls too; its standard output is the ID alone.
    let o = fresh.run(&["create", &reference]);
    assert_code(&o, 0, "create of a missing image");
    let id = stdout(&o).trim().to_string();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(stderr(&o).starts_with(&unable), "{}", stderr(&o));
    fresh.ok(&["rm", &id]);
    // A repository the registry lacks: Docker's 125 after the line.
    let missing = format!("{}/it/nothing:1", reg.host());
    let o = fresh.run(&["run", "--rm", &missing, "true"]);
    assert_code(&o, 125, "run of an image no registry has");
    assert!(
        stderr(&o).starts_with(&format!("Unable to find image '{missing}' locally\n")),
        "{}",
        stderr(&o)
    );
    let o = fresh.run(&["run", "--pull", "sometimes", &reference, "true"]);
    assert_code(&o, 125, "run --pull sometimes");

    let Some(d) = docker() else { return };
    let _cleanup = DockerImage(&d, reference.clone());
    let docker = |args: &[&str]| Command::new(&d).args(args).output().expect("docker");
    let o = docker(&["run", "--rm", &reference, "echo", "hi"]);
    assert_code(&o, 0, "docker run of a missing image");
    assert_eq!(stdout(&o), "hi\n");
    assert!(stderr(&o).starts_with(&unable), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("Status: Downloaded newer image for {reference}\n")),
        "{}",
        stderr(&o)
    );
    docker(&["rmi", &reference]);
    let o = docker(&["run", "--rm", "--pull=never", &reference, "true"]);
    assert_code(&o, 125, "docker run --pull=never");
    assert!(stderr(&o).contains(no_such.trim_end()), "{}", stderr(&o));
    let o = docker(&["create", "--pull", "never", &reference]);
    assert_code(&o, 1, "docker create --pull never");
    assert!(stderr(&o).contains(no_such.trim_end()), "{}", stderr(&o));
    let o = docker(&["run", "--rm", &missing, "true"]);
    assert_code(&o, 125, "docker run of an image no registry has");
    let o = docker(&["run", "--pull", "sometimes", &reference, "true"]);
    assert_code(&o, 125, "docker run --pull sometimes");
}

/// A container command that says `ready`, then exits 7 on SIGTERM and 8 on SIGINT.
const TRAPS: &str =
    r#"trap "exit 7" TERM; trap "exit 8" INT; echo ready; while :; do sleep 0.1; done"#;

/// Spawns `cmd` with its standard output piped; returns once it printed `ready`.
fn spawn_until_ready(mut cmd: Command) -> KillOnDrop {
    let mut child = KillOnDrop(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the CLI"),
    );
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("reading the CLI");
    assert_eq!(line.trim(), "ready", "the container did not start");
    child
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("kill");
}

/// Waits for the CLI; its exit code and standard error.
fn finish(mut child: KillOnDrop) -> (Option<i32>, String) {
    let status = child.0.wait().expect("waiting for the CLI");
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

#[test]
fn signals_sent_to_a_foreground_run_reach_the_container() {
    let Some(e) = Env::new() else { return };
    for (sig, code) in [(Signal::SIGTERM, 7), (Signal::SIGINT, 8)] {
        let name = format!("sig{code}");
        let args = ["run", "--name", &name, "busybox:local", "sh", "-c", TRAPS];
        let child = spawn_until_ready(e.command(&args));
        signal(&child.0, sig);
        let (got, err) = finish(child);
        assert_eq!(got, Some(code), "{sig}: {err}");
        let v = e.inspect(&name);
        assert!(exited(&v), "{v:#}");
        assert_eq!(v["State"]["ExitCode"], code);
    }

    // --sig-proxy=false: the signals stay with kiln, which leaves at the third, as Docker's
    // CLI does; the container runs on, its trap never fired.
    let counting = r#"trap "echo caught" TERM; echo ready; while :; do sleep 0.1; done"#;
    let args = [
        "run",
        "--sig-proxy=false",
        "--name",
        "noproxy",
        "busybox:local",
        "sh",
        "-c",
        counting,
    ];
    let child = spawn_until_ready(e.command(&args));
    for _ in 0..3 {
        signal(&child.0, Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (got, err) = finish(child);
    assert_eq!(got, Some(1), "{err}");
    assert!(
        err.contains("got 3 SIGTERM/SIGINTs, forcefully exiting"),
        "{err}"
    );
    assert!(running(&e.inspect("noproxy")));
    e.ok(&["exec", "noproxy", "true"]);
    e.ok(&["kill", "noproxy"]);
    assert!(!e.ok(&["logs", "noproxy"]).contains("caught"));

    // Through a terminal: SIGTERM to kiln with -t; Ctrl-C with -t (the terminal signals
    // kiln) and with -it (the byte reaches the container's terminal).
    for (flags, ctrl_c, code) in [("-t", false, 7), ("-t", true, 8), ("-it", true, 8)] {
        let args = format!("run {flags} --rm busybox:local sh -c '{TRAPS}'");
        let mut term = in_terminal(&e, &args);
        let mut input = term.0.stdin.take().expect("stdin");
        let out = collect(term.0.stdout.take().expect("stdout"));
        wait_text(&out, "ready");
        if ctrl_c {
            input.write_all(&[0x03]).expect("typing Ctrl-C");
        } else {
            let kiln = child_of(term.0.id());
            kill(Pid::from_raw(kiln), Signal::SIGTERM).expect("kill");
        }
        let status = term.0.wait().expect("script");
        assert_eq!(status.code(), Some(code), "{flags} ctrl-c={ctrl_c}");
    }

    let Some(d) = Docker::with_busybox(&e) else {
        return;
    };
    for (sig, code) in [(Signal::SIGTERM, 7), (Signal::SIGINT, 8)] {
        let name = d.name("sig");
        let args = ["run", "--name", &name, &d.image, "sh", "-c", TRAPS];
        let child = spawn_until_ready(d.command(&args));
        signal(&child.0, sig);
        let (got, err) = finish(child);
        assert_eq!(got, Some(code), "docker, {sig}: {err}");
    }
}

/// `kiln <args>` under `script`, on a terminal of its own; `script -e` exits with kiln's code.
fn in_terminal(e: &Env, args: &str) -> KillOnDrop {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let cmd = format!("exec {kiln} {args}");
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

/// The one child of process `pid` (the command `script` runs).
fn child_of(pid: u32) -> i32 {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("the children of script");
    list.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("script has a child")
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

const NOT_FOUND: &str = r#"exec: "nosuchcmd": executable file not found in $PATH"#;
const DENIED: &str = r#"exec: "/etc": permission denied"#;

#[test]
fn a_command_that_cannot_start_fails_the_run_at_once() {
    let Some(e) = Env::new() else { return };
    // Detached: the ID (as Docker prints it), then the error and the command's code; the
    // container stays created, with the code and the error, as Docker leaves it.
    let o = e.run(&["run", "-d", "--name", "nf", "busybox:local", "nosuchcmd"]);
    assert_code(&o, 127, "run -d of a missing command");
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(stderr(&o).contains(NOT_FOUND), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Error response from daemon: "),
        "{}",
        stderr(&o)
    );
    let v = e.inspect("nf");
    assert_eq!(v["State"]["Status"], "created", "{v:#}");
    assert_eq!(v["State"]["ExitCode"], 127);
    assert!(v["State"]["Error"].as_str().unwrap().contains(NOT_FOUND));
    // Not executable: 126. In the foreground too.
    let o = e.run(&["run", "-d", "--name", "ne", "busybox:local", "/etc"]);
    assert_code(&o, 126, "run -d of a directory");
    assert!(stderr(&o).contains(DENIED), "{}", stderr(&o));
    let o = e.run(&["run", "--name", "nf2", "busybox:local", "nosuchcmd"]);
    assert_code(&o, 127, "run of a missing command");
    assert!(stderr(&o).contains(NOT_FOUND), "{}", stderr(&o));
    assert_eq!(e.inspect("nf2")["State"]["Status"], "created");
    // --rm removes it.
    let o = e.run(&["run", "--rm", "--name", "nf3", "busybox:local", "nosuchcmd"]);
    assert_code(&o, 127, "run --rm of a missing command");
    assert!(!e
        .ok(&["ps", "-a", "--format", "{{.Names}}"])
        .contains("nf3"));

    let Some(d) = Docker::with_busybox(&e) else {
        return;
    };
    let name = d.name("nf");
    let o = d.run(&["run", "-d", "--name", &name, &d.image, "nosuchcmd"]);
    assert_code(&o, 127, "docker run -d of a missing command");
    assert!(stderr(&o).contains(NOT_FOUND), "{}", stderr(&o));
    let status = d.run(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        &name,
    ]);
    assert_eq!(stdout(&status).trim(), "created 127");
    let name = d.name("ne");
    let o = d.run(&["run", "--name", &name, &d.image, "/etc"]);
    assert_code(&o, 126, "docker run of a directory");
    assert!(stderr(&o).contains(DENIED), "{}", stderr(&o));
}

const NO_TTY: &str = "the input device is not a TTY\n";

#[test]
fn dash_it_without_a_terminal_says_so() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    // Standard input is /dev/null here.
    let o = e.run(&["exec", "-it", "up", "sh"]);
    assert_code(&o, 1, "exec -it without a terminal");
    assert_eq!(stderr(&o), NO_TTY);
    let o = e.run(&["run", "-it", "--rm", "busybox:local", "true"]);
    assert_code(&o, 1, "run -it without a terminal");
    assert_eq!(stderr(&o), NO_TTY);
    // -t alone, or -i alone, needs no terminal on standard input.
    assert_eq!(e.ok(&["exec", "-t", "up", "echo", "hi"]).trim(), "hi");
    e.ok(&["exec", "-i", "up", "true"]);

    let Some(d) = Docker::with_busybox(&e) else {
        return;
    };
    let name = d.name("up");
    let o = d.run(&["run", "-d", "--name", &name, &d.image, "sleep", "1000"]);
    assert_code(&o, 0, "docker run -d");
    let o = d.run(&["exec", "-it", &name, "sh"]);
    assert_code(&o, 1, "docker exec -it without a terminal");
    assert_eq!(stderr(&o), NO_TTY);
    let o = d.run(&["run", "-it", "--rm", &d.image, "true"]);
    assert_code(&o, 1, "docker run -it without a terminal");
    assert_eq!(stderr(&o), NO_TTY);
    assert_code(&d.run(&["exec", "-t", &name, "true"]), 0, "docker exec -t");
}

#[test]
fn exit_codes_of_exec_user_and_kill() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    // Docker 28 gives 126 to every exec its runtime cannot start, found or not.
    let o = e.run(&["exec", "up", "nosuchcmd"]);
    assert_code(&o, 126, "exec of a missing command");
    assert!(stderr(&o).contains(NOT_FOUND), "{}", stderr(&o));
    let o = e.run(&["exec", "up", "/etc"]);
    assert_code(&o, 126, "exec of a directory");
    assert!(stderr(&o).contains(DENIED), "{}", stderr(&o));
    let no_user = "Error response from daemon: unable to find user nosuchuser: \
                   no matching entries in passwd file";
    let o = e.run(&["run", "--rm", "-u", "nosuchuser", "busybox:local", "true"]);
    assert_code(&o, 125, "run -u nosuchuser");
    assert!(stderr(&o).contains(no_user), "{}", stderr(&o));
    let id = e.ok(&["run", "-d", "--name", "done", "busybox:local", "true"]);
    e.wait_for("done", 20, exited);
    let o = e.run(&["kill", "done"]);
    assert_code(&o, 1, "kill of a stopped container");
    assert_eq!(
        stderr(&o),
        format!(
            "Error response from daemon: Cannot kill container: done: Container {} is not running\n",
            id.trim()
        )
    );
    let o = e.run(&["kill", "nosuch"]);
    assert_code(&o, 1, "kill of no container");
    assert_eq!(
        stderr(&o),
        "Error response from daemon: Cannot kill container: nosuch: No such container: nosuch\n"
    );

    let Some(d) = Docker::with_busybox(&e) else {
        return;
    };
    let up = d.name("up");
    d.run(&["run", "-d", "--name", &up, &d.image, "sleep", "1000"]);
    // Docker's runtime error comes on the exec's output stream; kiln keeps it on stderr.
    let o = d.run(&["exec", &up, "nosuchcmd"]);
    assert_code(&o, 126, "docker exec of a missing command");
    assert!(stdout(&o).contains(NOT_FOUND), "{}", stdout(&o));
    let o = d.run(&["exec", &up, "/etc"]);
    assert_code(&o, 126, "docker exec of a directory");
    assert!(stdout(&o).contains(DENIED), "{}", stdout(&o));
    let o = d.run(&["run", "--rm", "-u", "nosuchuser", &d.image, "true"]);
    assert_code(&o, 125, "docker run -u nosuchuser");
    assert!(stderr(&o).contains(no_user), "{}", stderr(&o));
    let done = d.name("done");
    let o = d.run(&["run", "--name", &done, &d.image, "true"]);
    assert_code(&o, 0, "docker run");
    let id = stdout(&d.run(&["inspect", "-f", "{{.Id}}", &done]));
    let o = d.run(&["kill", &done]);
    assert_code(&o, 1, "docker kill of a stopped container");
    assert_eq!(
        stderr(&o),
        format!(
            "Error response from daemon: Cannot kill container: {done}: Container {} is not running\n",
            id.trim()
        )
    );
}
