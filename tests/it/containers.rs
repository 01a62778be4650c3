//! Containers end to end, as root: `kiln run` and friends over a busybox image and an image
//! built by `kiln build`, through the real binary, its detached monitors and their sandboxes.
//! Every test removes its containers (`rm -f`) when it ends, even when it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::util::{stderr, stdout, TestStore};

/// A store with `busybox:local`, whose containers are force-removed on drop.
pub(crate) struct Env {
    store: TestStore,
}

impl Env {
    /// `None` (after saying why) when this host cannot run containers; under CI the
    /// test fails instead (`TestStore::busybox`), so nothing is silently skipped there.
    pub(crate) fn new() -> Option<Env> {
        let store = TestStore::new();
        store.busybox("busybox:local")?;
        Some(Env { store })
    }

    fn dir(&self) -> &Path {
        self.store.dir.path()
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.store.root()
    }

    /// Runs kiln; returns its output whatever the exit code.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.store.kiln(self.dir(), args, None)
    }

    /// Runs kiln, asserts success, returns standard output.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed ({}):\n{}{}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// A command line of kiln with this store, not yet started.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(args)
            .current_dir(self.dir())
            .env("KILN_ROOT", self.root());
        c
    }

    /// `kiln inspect` of a container, parsed.
    pub(crate) fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["container", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v[0].clone()
    }

    /// The recorded state of a container (`state.json`), for what inspect does not show.
    fn state_file(&self, id: &str) -> serde_json::Value {
        let p = self.root().join("containers").join(id).join("state.json");
        serde_json::from_slice(&std::fs::read(&p).expect("state.json")).expect("state JSON")
    }

    /// Polls `inspect` until `pred` holds; panics after `secs` with the last document.
    pub(crate) fn wait_for(
        &self,
        name: &str,
        secs: u64,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            // The container may not exist yet (a CLI still creating it).
            let o = self.run(&["container", "inspect", name]);
            let v = serde_json::from_slice::<serde_json::Value>(&o.stdout)
                .map(|v| v[0].clone())
                .unwrap_or_default();
            if o.status.success() && pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "condition never held:\n{v:#}{}",
                stderr(&o)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Builds `dockerfile` (with extra context files) as `tag`.
    fn build(&self, tag: &str, dockerfile: &str, files: &[(&str, &str)]) {
        let ctx = self
            .dir()
            .join(format!("ctx-{}", tag.replace([':', '/'], "-")));
        std::fs::create_dir_all(&ctx).expect("context dir");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        for (name, data) in files {
            std::fs::write(ctx.join(name), data).expect("context file");
        }
        let o = self
            .store
            .kiln(&ctx, &["build", "--progress=plain", "-t", tag, "."], None);
        assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq", "--no-trunc"]);
        for id in stdout(&ids).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
    }
}

/// A child process killed (and reaped) when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn running(v: &serde_json::Value) -> bool {
    v["State"]["Running"] == true
}

pub(crate) fn exited(v: &serde_json::Value) -> bool {
    v["State"]["Status"] == "exited"
}

/// True while a process with this PID exists (a zombie counts as gone).
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// Mount points of this host that mention `needle`.
fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// A plain HTTP GET of `/` on 127.0.0.1:port, retried while the server starts.
fn http_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(b) if b.starts_with("HTTP/") => return b,
            r => assert!(
                Instant::now() < deadline,
                "no HTTP answer on port {port}: {r:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn host_port(v: &serde_json::Value, port: &str) -> u16 {
    v["NetworkSettings"]["Ports"][port][0]["HostPort"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no host port for {port}: {v:#}"))
}

#[test]
fn run_passes_exit_codes_and_applies_the_image_config() {
    let Some(e) = Env::new() else { return };
    let o = e.run(&["run", "--rm", "busybox:local", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = e.run(&["run", "--rm", "busybox:local", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let o = e.run(&["run", "--rm", "no-such-image:1", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-image:1"), "{}", stderr(&o));
    // --rm leaves nothing behind.
    assert_eq!(e.ok(&["ps", "-aq"]).trim(), "");

    // The image's ENTRYPOINT, CMD, ENV, WORKDIR and USER apply; flags override them.
    e.build(
        "cfg:1",
        "FROM busybox:local\nENV GREETING=hi\nWORKDIR /srv\nUSER nobody\n\
         ENTRYPOINT [\"sh\", \"-c\", \"echo $GREETING $(pwd) $(id -u) \\\"$@\\\"\", \"x\"]\n\
         CMD [\"from-cmd\"]\n",
        &[],
    );
    assert_eq!(
        e.ok(&["run", "--rm", "cfg:1"]).trim(),
        "hi /srv 65534 from-cmd"
    );
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "-e",
            "GREETING=yo",
            "-w",
            "/tmp",
            "-u",
            "0",
            "cfg:1",
            "arg"
        ])
        .trim(),
        "yo /tmp 0 arg"
    );
    // --entrypoint drops the image's CMD.
    assert_eq!(
        e.ok(&["run", "--rm", "--entrypoint", "pwd", "cfg:1"])
            .trim(),
        "/srv"
    );
    // --env-file, and -e NAME taking the caller's value.
    std::fs::write(e.dir().join("env.list"), "# comment\nA=1\nB=two words\n").unwrap();
    let out = e
        .command(&[
            "run",
            "--rm",
            "--env-file",
            "env.list",
            "-e",
            "FROM_HOST",
            "busybox:local",
            "sh",
            "-c",
            "echo \"$A|$B|$FROM_HOST\"",
        ])
        .env("FROM_HOST", "hostval")
        .output()
        .expect("kiln");
    assert_eq!(
        stdout(&out).trim(),
        "1|two words|hostval",
        "{}",
        stderr(&out)
    );
    // Hostname: the short id, or --hostname.
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "--hostname",
            "box1",
            "busybox:local",
            "hostname"
        ])
        .trim(),
        "box1"
    );
}

#[test]
fn web_server_built_by_kiln_serves_through_a_published_port() {
    let Some(e) = Env::new() else { return };
    e.build(
        "web:1",
        "FROM busybox:local\nRUN mkdir /www && echo '<h1>served by kiln</h1>' > /www/index.html\n\
         EXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        &[],
    );
    let id = e.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1::8080",
        "web:1",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let v = e.wait_for("web", 10, running);
    let port = host_port(&v, "8080/tcp");
    let page = http_get(port, "/");
    assert!(page.contains("200 OK"), "{page}");
    assert!(page.contains("<h1>served by kiln</h1>"), "{page}");
    // Two connections at once both work.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| http_get(port, "/index.html"));
        let b = s.spawn(|| http_get(port, "/index.html"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.contains("served by kiln") && b.contains("served by kiln"));
    assert!(http_get(port, "/missing").contains("404"));

    let ps = e.ok(&["ps"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->8080/tcp")), "{ps}");
    assert!(ps.contains("web:1") && ps.contains("Up "), "{ps}");
    assert_eq!(
        v["Config"]["ExposedPorts"]["8080/tcp"],
        serde_json::json!({})
    );
    assert_eq!(v["Id"], id);

    // exec sees the container's processes and files, with -e, -w and -u.
    let procs = e.ok(&["exec", "web", "ps", "-o", "pid,args"]);
    assert!(
        procs
            .lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains("httpd")),
        "{procs}"
    );
    assert_eq!(
        e.ok(&["exec", "web", "cat", "/www/index.html"]).trim(),
        "<h1>served by kiln</h1>"
    );
    assert_eq!(
        e.ok(&[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/www",
            "-u",
            "nobody",
            "web",
            "sh",
            "-c",
            "echo $X $(pwd) $(id -u)"
        ])
        .trim(),
        "1 /www 65534"
    );
    // A file written by exec is seen by the server.
    e.ok(&["exec", "web", "sh", "-c", "echo new > /www/new.html"]);
    assert!(http_get(port, "/new.html").contains("new"));
    let o = e.run(&["exec", "web", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));

    // The host port is released when the container stops.
    e.ok(&["stop", "-t", "1", "web"]);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn stop_waits_for_the_timeout_only_when_the_process_ignores_the_signal() {
    let Some(e) = Env::new() else { return };
    // PID 1 without a handler ignores SIGTERM: stop waits -t seconds, then SIGKILLs.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("stubborn", 10, running);
    let t = Instant::now();
    e.ok(&["stop", "-t", "2", "stubborn"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "stop returned after {took:?}"
    );
    let v = e.inspect("stubborn");
    assert!(exited(&v), "{v:#}");
    assert_eq!(v["State"]["ExitCode"], 137);

    // A process that handles SIGTERM exits on it, with its own code, before any SIGKILL.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        "busybox:local",
        "sh",
        "-c",
        "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    e.wait_for("polite", 10, running);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.ok(&["logs", "polite"]).contains("ready") {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    e.ok(&["stop", "-t", "60", "polite"]);
    let v = e.inspect("polite");
    assert_eq!(v["State"]["ExitCode"], 0, "{v:#}");
    assert!(e.ok(&["logs", "polite"]).contains("got TERM"));

    // --stop-signal and kill -s.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--stop-signal",
        "USR1",
        "busybox:local",
        "sh",
        "-c",
        "trap 'exit 42' USR1; while :; do sleep 0.1; done",
    ]);
    e.wait_for("usr1", 10, running);
    std::thread::sleep(Duration::from_millis(300));
    e.ok(&["stop", "usr1"]);
    assert_eq!(e.inspect("usr1")["State"]["ExitCode"], 42);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "killme",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("killme", 10, running);
    e.ok(&["kill", "killme"]);
    let v = e.wait_for("killme", 10, exited);
    assert_eq!(v["State"]["ExitCode"], 137);
    // `wait` prints the exit code.
    assert_eq!(e.ok(&["wait", "killme"]).trim(), "137");
}

#[test]
fn a_stopped_container_keeps_its_files_across_start() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("keep", 10, running);
    e.ok(&[
        "exec",
        "keep",
        "sh",
        "-c",
        "echo kept > /data.txt && rm /etc/group",
    ]);
    e.ok(&["stop", "-t", "0", "keep"]);
    assert!(exited(&e.inspect("keep")));
    let ps = e.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=keep",
        "--format",
        "{{.Status}}",
    ]);
    assert!(ps.starts_with("Exited (137)"), "{ps}");
    assert_eq!(e.ok(&["ps", "-q"]).trim(), "");
    e.ok(&["start", "keep"]);
    e.wait_for("keep", 10, running);
    assert_eq!(e.ok(&["exec", "keep", "cat", "/data.txt"]).trim(), "kept");
    assert_eq!(
        e.run(&["exec", "keep", "test", "-e", "/etc/group"])
            .status
            .code(),
        Some(1)
    );
    // restart too, and the image itself is untouched.
    e.ok(&["restart", "-t", "0", "keep"]);
    e.wait_for("keep", 10, running);
    assert_eq!(e.ok(&["exec", "keep", "cat", "/data.txt"]).trim(), "kept");
    let o = e.run(&["run", "--rm", "busybox:local", "cat", "/data.txt"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn create_then_start_attached() {
    let Some(e) = Env::new() else { return };
    let id = e.ok(&[
        "create",
        "--name",
        "twostep",
        "busybox:local",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(id.trim().len(), 64);
    let v = e.inspect("twostep");
    assert_eq!(v["State"]["Status"], "created");
    let ps = e.ok(&["ps", "-a", "--format", "{{.Names}}\t{{.Status}}"]);
    assert!(ps.contains("twostep\tCreated"), "{ps}");
    let o = e.run(&["start", "-a", "twostep"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    assert_eq!(e.ok(&["wait", "twostep"]).trim(), "4");
}

#[test]
fn on_failure_restarts_exactly_n_times_and_always_restarts_until_stopped() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox:local",
        "sh",
        "-c",
        "echo attempt; exit 1",
    ]);
    let v = e.wait_for("flaky", 30, |v| exited(v) && v["RestartCount"] == 2);
    assert_eq!(v["State"]["ExitCode"], 1);
    // It stays exited: no third restart.
    std::thread::sleep(Duration::from_millis(1500));
    let v = e.inspect("flaky");
    assert!(exited(&v) && v["RestartCount"] == 2, "{v:#}");
    assert_eq!(e.ok(&["logs", "flaky"]).matches("attempt").count(), 3);

    // on-failure does not restart after a clean exit.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "clean",
        "--restart",
        "on-failure",
        "busybox:local",
        "true",
    ]);
    e.wait_for("clean", 10, exited);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.inspect("clean")["RestartCount"], 0);

    // always restarts after any exit; stop ends that.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--restart",
        "always",
        "busybox:local",
        "sh",
        "-c",
        "echo up; exit 0",
    ]);
    e.wait_for("again", 30, |v| v["RestartCount"].as_u64() >= Some(2));
    e.ok(&["stop", "-t", "1", "again"]);
    let v = e.wait_for("again", 10, exited);
    let count = v["RestartCount"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    let v = e.inspect("again");
    assert!(exited(&v), "{v:#}");
    assert_eq!(v["RestartCount"], count, "restarted after stop");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "always");
}

#[test]
fn detached_containers_outlive_the_cli_and_a_dead_monitor_is_reported() {
    let Some(e) = Env::new() else { return };
    // Killing an attached `kiln run` does not stop its container.
    let mut cli = KillOnDrop(
        e.command(&["run", "--name", "fg", "busybox:local", "sleep", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln run"),
    );
    e.wait_for("fg", 10, running);
    cli.0.kill().expect("kill CLI");
    cli.0.wait().expect("reap CLI");
    std::thread::sleep(Duration::from_millis(300));
    let v = e.inspect("fg");
    assert!(running(&v), "{v:#}");
    assert!(alive(v["State"]["Pid"].as_i64().unwrap()));

    // A monitor killed with SIGKILL takes its container down and `ps` says Dead, not Up.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--restart",
        "always",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let v = e.wait_for("svc", 10, running);
    let id = v["Id"].as_str().unwrap().to_owned();
    let pid = v["State"]["Pid"].as_i64().unwrap();
    let monitor = e.state_file(&id)["monitor_pid"].as_i64().unwrap();
    assert_ne!(monitor, pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill monitor");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "container outlived its monitor");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = e.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=svc",
        "--format",
        "{{.Status}}",
    ]);
    assert_eq!(st.trim(), "Dead");
    assert_eq!(e.inspect("svc")["State"]["Status"], "dead");

    // `system restore` brings back `always` containers (and leaves running ones alone).
    let restored = e.ok(&["system", "restore"]);
    assert_eq!(restored.trim(), "svc");
    let v = e.wait_for("svc", 10, running);
    assert_ne!(v["State"]["Pid"].as_i64().unwrap(), pid);
    assert!(running(&e.inspect("fg")));
}

#[test]
fn rm_refuses_a_running_container_and_rm_f_leaves_nothing_behind() {
    let Some(e) = Env::new() else { return };
    let id = e.ok(&[
        "run",
        "-d",
        "--name",
        "gone",
        "-v",
        "/scratch",
        "-p",
        "127.0.0.1::80",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let id = id.trim().to_owned();
    let v = e.wait_for("gone", 10, running);
    let pid = v["State"]["Pid"].as_i64().unwrap();
    let monitor = e.state_file(&id)["monitor_pid"].as_i64().unwrap();
    let port = host_port(&v, "80/tcp");
    let dir = e.root().join("containers").join(&id);
    assert!(dir.is_dir());

    let o = e.run(&["rm", "gone"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("running"), "{}", stderr(&o));
    assert!(running(&e.inspect("gone")));

    // The image is in use: rmi refuses it without -f.
    let o = e.run(&["rmi", "busybox:local"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains(&id[..12]), "{}", stderr(&o));

    e.ok(&["rm", "-f", "gone"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) || alive(monitor) {
        assert!(Instant::now() < deadline, "process left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "container directory left behind");
    assert_eq!(mounts_mentioning(&id), Vec::<String>::new());
    assert_eq!(
        mounts_mentioning(&e.root().display().to_string()),
        Vec::<String>::new()
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(e.ok(&["ps", "-aq"]).trim(), "");
    let o = e.run(&["inspect", "gone"]);
    assert_ne!(o.status.code(), Some(0));
    // Now the image can go.
    e.ok(&["rmi", "busybox:local"]);
}

#[test]
fn logs_tail_follow_and_timestamps() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox:local",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2",
    ]);
    e.wait_for("talker", 10, exited);
    let o = e.run(&["logs", "talker"]);
    assert_eq!(stdout(&o), "line1\nline2\nline3\nline4\nline5\n");
    assert_eq!(stderr(&o), "oops\n");
    let o = e.run(&["logs", "--tail", "2", "talker"]);
    assert_eq!(format!("{}{}", stdout(&o), stderr(&o)), "line5\noops\n");
    let o = e.run(&["logs", "-t", "--tail", "1", "talker"]);
    let line = stderr(&o);
    let (ts, rest) = line.split_once(' ').expect("timestamp");
    assert_eq!(rest, "oops\n");
    assert!(
        ts.starts_with("20") && ts.ends_with('Z') && ts.contains('T'),
        "{ts}"
    );

    // The log file is Docker's json-file format.
    let id = e.inspect("talker")["Id"].as_str().unwrap().to_owned();
    let log = std::fs::read_to_string(e.root().join("containers").join(id).join("log.json"))
        .expect("log.json");
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "line1\n");
    assert_eq!(first["stream"], "stdout");
    assert!(first["time"].is_string());

    // -f follows a running container until it exits.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox:local",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick$i; sleep 0.3; done",
    ]);
    let o = e.run(&["logs", "-f", "ticker"]);
    assert_eq!(stdout(&o), "tick1\ntick2\ntick3\n");
    assert!(exited(&e.inspect("ticker")));
}

#[test]
fn ps_filters_formats_names_and_prune() {
    let Some(e) = Env::new() else { return };
    let auto = e.ok(&["run", "-d", "busybox:local", "sleep", "1000"]);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "done1",
        "--label",
        "team=a",
        "busybox:local",
        "true",
    ]);
    e.wait_for("done1", 10, exited);
    let name = e.inspect(auto.trim())["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_owned();
    let (adj, who) = name.split_once('_').expect("adjective_surname");
    assert!(
        !adj.is_empty()
            && !who.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
        "{name}"
    );

    let ps = e.ok(&["ps"]);
    let header = ps.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(ps.contains(&name) && !ps.contains("done1"), "{ps}");
    let all = e.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = all.lines().collect();
    names.sort();
    let mut want = vec![name.as_str(), "done1"];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        e.ok(&[
            "ps",
            "-a",
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}}"
        ])
        .trim(),
        "done1"
    );
    assert_eq!(
        e.ok(&["ps", "-a", "--filter", "label=team=a", "-q"])
            .trim()
            .len(),
        12
    );
    assert_eq!(e.ok(&["ps", "-q", "--no-trunc"]).trim(), auto.trim(),);
    let json = e.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=done1",
        "--format",
        "{{json .}}",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("ps json");
    assert_eq!(v["Names"], "done1");
    assert_eq!(v["Image"], "busybox:local");

    // A name is unique.
    let o = e.run(&["run", "-d", "--name", "done1", "busybox:local", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));

    // prune removes stopped containers only.
    let out = e.ok(&["container", "prune", "-f"]);
    assert!(
        out.contains("Total reclaimed space") || out.contains("Deleted"),
        "{out}"
    );
    assert_eq!(e.ok(&["ps", "-aq", "--no-trunc"]).trim(), auto.trim());
}

#[test]
fn volumes_and_bind_mounts() {
    let Some(e) = Env::new() else { return };
    // A named volume outlives its container.
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "store1:/data",
        "busybox:local",
        "sh",
        "-c",
        "echo persisted > /data/f",
    ]);
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "-v",
            "store1:/data",
            "busybox:local",
            "cat",
            "/data/f"
        ])
        .trim(),
        "persisted"
    );
    assert!(e.root().join("volumes/store1/_data/f").is_file());

    // Bind mounts, read-only ones refusing writes.
    let host = e.dir().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from host").unwrap();
    let bind = format!("{}:/mnt", host.display());
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "-v",
            &bind,
            "busybox:local",
            "sh",
            "-c",
            "cat /mnt/in.txt; echo back > /mnt/out.txt"
        ]),
        "from host"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "back\n"
    );
    let ro = format!("{}:/mnt:ro", host.display());
    let o = e.run(&[
        "run",
        "--rm",
        "-v",
        &ro,
        "busybox:local",
        "sh",
        "-c",
        "echo x > /mnt/no.txt",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!host.join("no.txt").exists());
    let m = format!("type=bind,source={},target=/m,readonly", host.display());
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "--mount",
            &m,
            "busybox:local",
            "cat",
            "/m/in.txt"
        ]),
        "from host"
    );
    // A relative host path is not a volume name and is refused, as Docker does.
    let o = e.run(&["run", "--rm", "-v", "./rel:/x", "busybox:local", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stdout(&o));

    // inspect shows the mounts.
    e.ok(&[
        "create",
        "--name",
        "withvol",
        "-v",
        "store1:/data",
        "-v",
        &ro,
        "busybox:local",
    ]);
    let mounts = e.inspect("withvol")["Mounts"].clone();
    let mounts = mounts.as_array().expect("Mounts");
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(mounts.iter().any(|m| m["Type"] == "volume"
        && m["Name"] == "store1"
        && m["Destination"] == "/data"
        && m["RW"] == true));
    assert!(mounts
        .iter()
        .any(|m| m["Type"] == "bind" && m["Destination"] == "/mnt" && m["RW"] == false));
}

#[test]
fn networks_private_host_and_none() {
    let Some(e) = Env::new() else { return };
    let private = e.ok(&["run", "--rm", "busybox:local", "ls", "/sys/class/net"]);
    assert_eq!(private.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let none = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox:local",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(none.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    // host: the host's interfaces, and a server on the host's loopback is reachable.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"hello from the host\n").unwrap();
    });
    let port_s = port.to_string();
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox:local",
        "nc",
        "127.0.0.1",
        &port_s,
    ]);
    assert_eq!(out, "hello from the host\n");
    server.join().unwrap();
    // The private network cannot reach the host's loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let o = e.run(&[
        "run",
        "--rm",
        "busybox:local",
        "nc",
        "-w",
        "1",
        "127.0.0.1",
        &port,
    ]);
    assert_ne!(o.status.code(), Some(0));
    drop(listener);
}

#[test]
fn pasta_gives_a_private_network_outbound_access() {
    let Some(e) = Env::new() else { return };
    if super::util::require::tool("pasta", "apt-get install passt").is_none() {
        return;
    }
    // pasta maps the container's gateway address to the host's loopback: a server on
    // 127.0.0.1 is reachable there, through the container's own eth0.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"hello through pasta\n").unwrap();
    });
    let script = format!(
        "ip -4 addr show eth0 | grep -q 'inet ' || echo no-eth0; \
         gw=$(ip route | awk '/default/ {{print $3}}'); sleep 2 | timeout 10 nc $gw {port}"
    );
    // stdin stays open until the server's reply and end have come through (pasta can lose
    // the server's FIN after the client half-closed), and --init keeps `timeout` able to
    // stop nc, which as PID 1 would ignore SIGTERM.
    let out = e.ok(&[
        "run",
        "--rm",
        "--init",
        "--network",
        "pasta",
        "busybox:local",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out, "hello through pasta\n");
    server.join().unwrap();
    // Nothing of pasta is left: no bind mount of the namespace, no process.
    assert_eq!(
        mounts_mentioning(&e.root().display().to_string()),
        Vec::<String>::new()
    );
}

#[test]
fn init_reaps_and_forwards_signals() {
    let Some(e) = Env::new() else { return };
    let out = e.ok(&[
        "run",
        "--rm",
        "--init",
        "busybox:local",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(out.starts_with("init "), "{out}");
    // Under --init a plain `sleep` gets SIGTERM from stop and dies at once with 143.
    e.ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        "inited",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("inited", 10, running);
    e.ok(&["stop", "-t", "60", "inited"]);
    let v = e.inspect("inited");
    assert_eq!(v["State"]["ExitCode"], 143, "{v:#}");
    assert_eq!(v["Init"], true);
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

#[test]
fn cp_in_and_out_of_running_and_stopped_containers() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "busybox:local",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo inside > /data/sub/f && ln -s /etc /data/etc-link && \
         chown 1000:1000 /data/sub/f && sleep 1000",
    ]);
    e.wait_for("box", 10, running);
    let host = e.dir().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let h = |p: &str| host.join(p);
    // Wait for the command's files.
    for _ in 0..100 {
        if e.run(&["exec", "box", "test", "-e", "/data/etc-link"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Out: a directory into an existing one keeps its name; `/.` copies its contents; a
    // file to a new name takes it; links stay links; owners are kept.
    e.ok(&["cp", "box:/data", &format!("{}/", host.display())]);
    assert_eq!(
        std::fs::read_to_string(h("data/sub/f")).unwrap(),
        "inside\n"
    );
    assert_eq!(
        std::fs::read_link(h("data/etc-link")).unwrap(),
        Path::new("/etc")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(h("data/sub/f")).unwrap().uid(), 1000);
    e.ok(&[
        "cp",
        "box:/data/sub/.",
        &h("contents").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(h("contents/f")).unwrap(),
        "inside\n"
    );
    e.ok(&[
        "cp",
        "box:/data/sub/f",
        &h("renamed.txt").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(h("renamed.txt")).unwrap(),
        "inside\n"
    );
    // `-` writes a tar stream.
    let o = e.run(&["cp", "box:/data/sub", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = tar::Archive::new(&o.stdout[..])
        .entries()
        .unwrap()
        .map(|en| {
            let p = en.unwrap().path().unwrap().display().to_string();
            p.trim_end_matches('/').to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["sub", "sub/f"]);

    // In: a file into a directory (root-owned without -a, its owner kept with -a), a
    // directory under a new name, a tar stream from stdin.
    std::fs::write(h("in.txt"), "from the host\n").unwrap();
    std::os::unix::fs::chown(h("in.txt"), Some(1234), Some(1234)).unwrap();
    e.ok(&["cp", &h("in.txt").display().to_string(), "box:/data/"]);
    assert_eq!(
        e.ok(&["exec", "box", "stat", "-c", "%u:%g %s", "/data/in.txt"]),
        "0:0 14\n"
    );
    e.ok(&[
        "cp",
        "-a",
        &h("in.txt").display().to_string(),
        "box:/data/kept.txt",
    ]);
    assert_eq!(
        e.ok(&["exec", "box", "stat", "-c", "%u:%g", "/data/kept.txt"]),
        "1234:1234\n"
    );
    e.ok(&["cp", &h("contents").display().to_string(), "box:/copied"]);
    assert_eq!(e.ok(&["exec", "box", "cat", "/copied/f"]), "inside\n");
    let mut tarball = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_size(6);
    hd.set_mode(0o644);
    hd.set_cksum();
    tarball
        .append_data(&mut hd, "streamed.txt", &b"piped\n"[..])
        .unwrap();
    let bytes = tarball.into_inner().unwrap();
    let mut child = e
        .command(&["cp", "-", "box:/data"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        e.ok(&["exec", "box", "cat", "/data/streamed.txt"]),
        "piped\n"
    );

    // A stopped container: its overlay is mounted privately for the copy, and what was
    // copied in is there when it starts again.
    e.ok(&["stop", "-t", "1", "box"]);
    std::fs::write(h("while-stopped"), "written while stopped\n").unwrap();
    e.ok(&[
        "cp",
        &h("while-stopped").display().to_string(),
        "box:/data/",
    ]);
    e.ok(&[
        "cp",
        "box:/data/in.txt",
        &h("back.txt").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(h("back.txt")).unwrap(),
        "from the host\n"
    );
    assert_eq!(
        mounts_mentioning(&e.root().display().to_string()),
        Vec::<String>::new()
    );
    e.ok(&["start", "box"]);
    e.wait_for("box", 10, running);
    assert_eq!(
        e.ok(&["exec", "box", "cat", "/data/while-stopped"]),
        "written while stopped\n"
    );

    // Clear errors, exit 1.
    for (args, want) in [
        (
            vec!["cp", "box:/missing", "/tmp/"],
            "could not find /missing in container box",
        ),
        (vec!["cp", "nobox:/x", "/tmp/"], "nobox"),
        (
            vec!["cp", "/etc/hostname", "box:/no/such/dir/"],
            "does not exist",
        ),
        (
            vec!["cp", "/etc/hostname", "/tmp/x"],
            "at least one container",
        ),
    ] {
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

/// SECURITY-CHECKLIST 21: a container swapping a path component between a directory and a
/// symlink (to `/` and to `/tmp`) while `cp` runs in both directions: nothing is ever read
/// from or written to the host outside the container.
#[test]
fn cp_stays_inside_a_container_that_swaps_symlinks() {
    let Some(e) = Env::new() else { return };
    let tag = format!("kiln-cp-race-{}", std::process::id());
    // A host-only secret the container must never hand out, and a host path it must never
    // get written.
    let secret = PathBuf::from(format!("/tmp/{tag}-secret"));
    std::fs::write(&secret, "host secret\n").unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(secret.clone());
    let planted = PathBuf::from(format!("/tmp/{tag}-planted"));
    let _rm2 = Rm(planted.clone());
    e.ok(&[
        "run",
        "-d",
        "--name",
        "swapper",
        "busybox:local",
        "sh",
        "-c",
        "mkdir -p /w; while true; do rm -rf /w/x; mkdir -p /w/x; \
         echo decoy > /w/x/decoy; rm -rf /w/x; ln -s /tmp /w/x; rm -f /w/x; ln -s / /w/x; done",
    ]);
    e.wait_for("swapper", 10, running);
    let src = e.dir().join(format!("{tag}-planted"));
    std::fs::write(&src, "planted\n").unwrap();
    let out = e.dir().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for i in 0..40 {
        let o = e.run(&[
            "cp",
            &format!("swapper:/w/x/{tag}-secret"),
            &out.join(format!("got{i}")).display().to_string(),
        ]);
        if o.status.success() {
            let got = std::fs::read_to_string(out.join(format!("got{i}"))).unwrap();
            assert_ne!(
                got, "host secret\n",
                "the host's file came out of the container"
            );
        }
        let _ = e.run(&["cp", &src.display().to_string(), "swapper:/w/x/"]);
        let _ = e.run(&["cp", &src.display().to_string(), "swapper:/w/x/tmp/"]);
        assert!(
            !planted.exists(),
            "a copy into the container wrote to the host's /tmp"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret\n");
}

#[test]
fn publish_all_port_ranges_udp_and_the_port_command() {
    let Some(e) = Env::new() else { return };
    e.build(
        "multi:1",
        "FROM busybox:local\nRUN mkdir /www && echo multi > /www/index.html\n\
         EXPOSE 8080 9000 5353/udp\n",
        &[],
    );
    // -P publishes every exposed port (tcp and udp); a range gives one binding per port.
    e.ok(&[
        "run",
        "-d",
        "-P",
        "-p",
        "127.0.0.1::7000-7001",
        "--name",
        "multi",
        "multi:1",
        "sh",
        "-c",
        "httpd -p 8080 -h /www; httpd -p 7001 -h /www; exec httpd -f -p 9000 -h /www",
    ]);
    let v = e.wait_for("multi", 10, running);
    let listing = e.ok(&["port", "multi"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 5, "{listing}");
    for (i, want) in [
        "5353/udp -> 0.0.0.0:",
        "7000/tcp -> 127.0.0.1:",
        "7001/tcp -> 127.0.0.1:",
        "8080/tcp -> 0.0.0.0:",
        "9000/tcp -> 0.0.0.0:",
    ]
    .iter()
    .enumerate()
    {
        assert!(lines[i].starts_with(want), "{listing}");
    }
    let p8080 = host_port(&v, "8080/tcp");
    assert_eq!(
        e.ok(&["port", "multi", "8080"]),
        format!("0.0.0.0:{p8080}\n")
    );
    assert!(http_get(p8080, "/").contains("multi"));
    assert!(http_get(host_port(&v, "9000/tcp"), "/").contains("multi"));
    assert!(http_get(host_port(&v, "7001/tcp"), "/").contains("multi"));
    let udp = host_port(&v, "5353/udp");
    assert_ne!(udp, 0);
    let o = e.run(&["port", "multi", "1234/udp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("No public port '1234/udp' published for multi"),
        "{}",
        stderr(&o)
    );
    // A stopped container has no ports bound.
    e.ok(&["stop", "-t", "1", "multi"]);
    assert_eq!(e.ok(&["port", "multi"]), "");
}

#[test]
fn health_checks_from_the_image_and_flags() {
    let Some(e) = Env::new() else { return };
    e.build(
        "healthy:1",
        "FROM busybox:local\n\
         HEALTHCHECK --interval=1s --timeout=5s --retries=2 CMD test -e /tmp/ready && echo ready\n\
         CMD [\"sleep\", \"1000\"]\n",
        &[],
    );
    let status = |name: &str| -> String {
        e.inspect(name)["State"]["Health"]["Status"]
            .as_str()
            .unwrap_or("none")
            .to_string()
    };
    // The image's check: starting, unhealthy after two failures, healthy once it passes.
    e.ok(&["run", "-d", "--name", "hc", "healthy:1"]);
    assert_eq!(status("hc"), "starting");
    let v = e.wait_for("hc", 20, |v| v["State"]["Health"]["Status"] == "unhealthy");
    assert!(
        v["State"]["Health"]["FailingStreak"].as_u64().unwrap() >= 2,
        "{v:#}"
    );
    assert_eq!(v["State"]["Health"]["Log"][0]["ExitCode"], 1, "{v:#}");
    assert_eq!(v["Config"]["Healthcheck"]["Retries"], 2);
    assert!(e.ok(&["ps"]).contains("(unhealthy)"));
    e.ok(&["exec", "hc", "touch", "/tmp/ready"]);
    let v = e.wait_for("hc", 20, |v| v["State"]["Health"]["Status"] == "healthy");
    let log = v["State"]["Health"]["Log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["Output"], "ready\n", "{v:#}");
    assert_eq!(v["State"]["Health"]["FailingStreak"], 0);
    assert_eq!(
        e.ok(&["ps", "-q", "--filter", "health=healthy"])
            .trim()
            .len(),
        12
    );
    assert!(e.ok(&["ps"]).contains("(healthy)"));

    // A check that outlives its timeout is killed and counts as a failure.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 30",
        "--health-interval",
        "1s",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let v = e.wait_for("slow", 20, |v| {
        v["State"]["Health"]["Status"] == "unhealthy"
    });
    let entry = &v["State"]["Health"]["Log"][0];
    assert_eq!(entry["ExitCode"], -1, "{v:#}");
    assert!(
        entry["Output"]
            .as_str()
            .unwrap()
            .contains("exceeded timeout"),
        "{v:#}"
    );
    // No `sleep 30` of a killed check is left in the container.
    let procs = e.ok(&["exec", "slow", "ps", "-o", "args"]);
    assert!(!procs.contains("sleep 30"), "{procs}");

    // --no-healthcheck turns the image's off.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "off",
        "--no-healthcheck",
        "healthy:1",
    ]);
    let v = e.wait_for("off", 10, running);
    assert!(v["State"]["Health"].is_null(), "{v:#}");
    assert!(v["Config"]["Healthcheck"].is_null(), "{v:#}");
    let o = e.run(&[
        "run",
        "-d",
        "--health-interval",
        "soon",
        "busybox:local",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("--health-interval"), "{}", stderr(&o));

    // A restart starts over as `starting`.
    e.ok(&["restart", "-t", "1", "hc"]);
    assert_eq!(status("hc"), "starting");
}

#[test]
fn volume_commands_create_list_inspect_remove_and_prune() {
    let Some(e) = Env::new() else { return };
    assert_eq!(e.ok(&["volume", "create", "data"]), "data\n");
    let ls = e.ok(&["volume", "ls"]);
    assert!(
        ls.starts_with("DRIVER    VOLUME NAME\n") && ls.contains("local     data\n"),
        "{ls}"
    );
    let v: serde_json::Value = serde_json::from_str(&e.ok(&["volume", "inspect", "data"])).unwrap();
    let mountpoint = PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    assert_eq!(v[0]["Driver"], "local");
    e.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "data:/data",
        "-v",
        "/anon",
        "busybox:local",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("f")).unwrap(),
        "kept\n"
    );
    // In use by a stopped container: refused, with the container named.
    let o = e.run(&["volume", "rm", "data"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("volume is in use"), "{}", stderr(&o));
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]),
        ""
    );
    e.ok(&["rm", "writer"]);
    let dangling = e.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.lines().count(), 2, "{dangling}");
    // prune: the anonymous one only; -a: the named one too.
    let pruned = e.ok(&["volume", "prune", "-f"]);
    assert!(
        pruned.contains("Deleted Volumes:") && !pruned.contains("data\n"),
        "{pruned}"
    );
    assert_eq!(e.ok(&["volume", "ls", "-q"]), "data\n");
    e.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(e.ok(&["volume", "ls", "-q"]), "");
    assert!(!mountpoint.exists());
    let o = e.run(&["volume", "rm", "data"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such volume"), "{}", stderr(&o));
    let o = e.run(&["volume", "create", "../escape"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!e.root().join("escape").exists());
}

#[test]
fn commit_and_diff_a_running_container() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "src",
        "-e",
        "STAGE=dev",
        "busybox:local",
        "sh",
        "-c",
        "echo made > /root/made && rm /etc/group && echo x >> /etc/passwd && touch /ready && sleep 1000",
    ]);
    e.wait_for("src", 10, running);
    for _ in 0..100 {
        if e.run(&["exec", "src", "test", "-e", "/ready"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let diff = e.ok(&["diff", "src"]);
    for line in [
        "A /root/made",
        "D /etc/group",
        "C /etc/passwd",
        "C /etc",
        "A /ready",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} in\n{diff}");
    }
    let id = e.ok(&[
        "commit",
        "-a",
        "kiln tests",
        "-m",
        "snapshot",
        "-c",
        "CMD [\"cat\", \"/root/made\"]",
        "-c",
        "LABEL committed=yes",
        "src",
        "snap:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    // The container keeps running, not left paused.
    let v = e.inspect("src");
    assert_eq!(v["State"]["Status"], "running", "{v:#}");
    // The image has the changes, the container's env and the -c changes.
    assert_eq!(e.ok(&["run", "--rm", "snap:1"]), "made\n");
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "snap:1",
            "sh",
            "-c",
            "echo $STAGE; test -e /etc/group || echo gone"
        ]),
        "dev\ngone\n"
    );
    let img: serde_json::Value =
        serde_json::from_str(&e.ok(&["image", "inspect", "snap:1"])).unwrap();
    assert_eq!(img[0]["Author"], "kiln tests");
    assert_eq!(img[0]["Comment"], "snapshot");
    assert_eq!(img[0]["Config"]["Labels"]["committed"], "yes");
    let base: serde_json::Value =
        serde_json::from_str(&e.ok(&["image", "inspect", "busybox:local"])).unwrap();
    let layers = img[0]["RootFS"]["Layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        base[0]["RootFS"]["Layers"].as_array().unwrap().len() + 1
    );
    let history = e.ok(&["history", "snap:1"]);
    assert!(history.contains("snapshot"), "{history}");
    let o = e.run(&["commit", "nosuch", "x:1"]);
    assert_eq!(o.status.code(), Some(1));
    // ps -s: what the container wrote, and with its image.
    let ps = e.ok(&["ps", "-s"]);
    assert!(ps.lines().next().unwrap().ends_with("SIZE"), "{ps}");
    assert!(ps.contains("B (virtual 2."), "{ps}");
}

#[test]
fn export_writes_the_container_filesystem_without_its_mounts() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run", "-d", "--name", "ex", "-v", "vol:/data", "busybox:local", "sh", "-c",
        "echo mine > /root/mine && echo in-volume > /data/v && rm /etc/group && touch /ready && sleep 1000",
    ]);
    e.wait_for("ex", 10, running);
    for _ in 0..100 {
        if e.run(&["exec", "ex", "test", "-e", "/ready"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let names = |bytes: &[u8]| -> Vec<String> {
        tar::Archive::new(bytes)
            .entries()
            .unwrap()
            .map(|en| {
                let p = en.unwrap().path().unwrap().display().to_string();
                p.trim_end_matches('/').to_string()
            })
            .collect()
    };
    let o = e.run(&["export", "ex"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let running_names = names(&o.stdout);
    for want in ["root/mine", "bin/busybox", "proc", "data"] {
        assert!(running_names.iter().any(|n| n == want), "{want}");
    }
    for absent in ["etc/group", "data/v", "proc/1"] {
        assert!(
            !running_names.iter().any(|n| n.starts_with(absent)),
            "{absent}"
        );
    }
    // Stopped: the same files, from its overlay; -o writes a file.
    e.ok(&["stop", "-t", "1", "ex"]);
    let out = e.dir().join("ex.tar");
    e.ok(&["export", "-o", &out.display().to_string(), "ex"]);
    let stopped = names(&std::fs::read(&out).unwrap());
    assert!(stopped.iter().any(|n| n == "root/mine"));
    assert!(!stopped.iter().any(|n| n == "etc/group"));
    assert_eq!(
        mounts_mentioning(&e.root().display().to_string()),
        Vec::<String>::new()
    );
}

#[test]
fn logs_since_and_until() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "talk",
        "busybox:local",
        "sh",
        "-c",
        "echo one; sleep 2; echo two",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.ok(&["logs", "talk"]).contains("one") {
        assert!(Instant::now() < deadline, "no output");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    e.wait_for("talk", 15, |v| v["State"]["Status"] == "exited");
    let t = format!("{between:.3}");
    assert_eq!(e.ok(&["logs", "--since", &t, "talk"]), "two\n");
    assert_eq!(e.ok(&["logs", "--until", &t, "talk"]), "one\n");
    assert_eq!(e.ok(&["logs", "--since", "1h", "talk"]), "one\ntwo\n");
    assert_eq!(
        e.ok(&["logs", "--since", "2000-01-01T00:00:00Z", "-n", "1", "talk"]),
        "two\n"
    );
    let o = e.run(&["logs", "--since", "yesterday", "talk"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn read_only_root_tmpfs_and_extra_hosts() {
    let Some(e) = Env::new() else { return };
    let out = e.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/run/app:size=1m,noexec",
        "--add-host",
        "db.internal:10.1.2.3",
        "-v",
        "data:/data",
        "busybox:local",
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo root-writable; \
         touch /run/app/f && echo tmpfs-writable; \
         grep size=1024k /proc/mounts | grep -q /run/app && echo sized; \
         grep /run/app /proc/mounts | grep -q noexec && echo noexec; \
         echo v > /data/v && echo volume-writable; \
         echo s > /dev/shm/s && echo shm-writable; \
         grep db.internal /etc/hosts",
    ]);
    assert_eq!(
        out,
        "tmpfs-writable\nsized\nnoexec\nvolume-writable\nshm-writable\n10.1.2.3\tdb.internal\n"
    );
    // Without --read-only the root is writable; inspect shows the settings.
    e.ok(&[
        "create",
        "--name",
        "ro",
        "--read-only",
        "--tmpfs",
        "/t",
        "--add-host",
        "a:::1",
        "busybox:local",
        "true",
    ]);
    let v = e.inspect("ro");
    assert_eq!(v["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(v["HostConfig"]["Tmpfs"]["/t"], "size=65536k");
    assert_eq!(v["HostConfig"]["ExtraHosts"][0], "a:::1");
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "busybox:local",
            "sh",
            "-c",
            "touch /x && echo ok"
        ]),
        "ok\n"
    );
    for bad in [
        vec![
            "run",
            "--rm",
            "--tmpfs",
            "relative",
            "busybox:local",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--tmpfs",
            "/t:exec,bogus=1",
            "busybox:local",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--add-host",
            "db:not-an-ip",
            "busybox:local",
            "true",
        ],
    ] {
        let o = e.run(&bad);
        assert_eq!(o.status.code(), Some(125), "{bad:?}: {}", stderr(&o));
    }
}

#[test]
fn rename_running_and_stopped_containers() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "old",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.ok(&["create", "--name", "other", "busybox:local", "true"]);
    e.wait_for("old", 10, running);
    e.ok(&["rename", "old", "new"]);
    let v = e.inspect("new");
    assert_eq!(v["Name"], "/new");
    assert_eq!(v["State"]["Status"], "running");
    assert!(e.run(&["inspect", "old"]).status.code() == Some(1));
    // The new name works everywhere: exec, stop, ps.
    assert_eq!(e.ok(&["exec", "new", "echo", "hi"]), "hi\n");
    assert!(e.ok(&["ps", "--format", "{{.Names}}"]).contains("new"));
    for (args, want) in [
        (vec!["rename", "new", "other"], "already in use"),
        (vec!["rename", "new", "new"], "same name"),
        (vec!["rename", "new", "bad name!"], "Invalid container name"),
        (vec!["rename", "missing", "x"], "No such container"),
    ] {
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).to_lowercase().contains(&want.to_lowercase()),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    e.ok(&["stop", "-t", "1", "new"]);
    e.ok(&["rename", "new", "again"]);
    e.ok(&["start", "again"]);
    e.wait_for("again", 10, running);
}
