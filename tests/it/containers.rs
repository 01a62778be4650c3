//! Containers end to end, as root: `kiln run` and friends over a busybox image and an image
//! built by `kiln build`, through the real binary, its detached monitors and their sandboxes.
//! This module is the fixture they share (a store whose containers are removed on drop, and
//! small probes); the tests live in `containers_*.rs` by area. Every test removes its
//! containers (`rm -f`) when it ends, even when it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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

    pub(crate) fn dir(&self) -> &Path {
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
    pub(crate) fn command(&self, args: &[&str]) -> Command {
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
    pub(crate) fn state_file(&self, id: &str) -> serde_json::Value {
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
    pub(crate) fn build(&self, tag: &str, dockerfile: &str, files: &[(&str, &str)]) {
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
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);
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
pub(crate) fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}
/// Mount points of this host that mention `needle`.
pub(crate) fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}
/// A plain HTTP GET of `/` on 127.0.0.1:port, retried while the server starts.
pub(crate) fn http_get(port: u16, path: &str) -> String {
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
pub(crate) fn host_port(v: &serde_json::Value, port: &str) -> u16 {
    v["NetworkSettings"]["Ports"][port][0]["HostPort"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no host port for {port}: {v:#}"))
}
