//! Rootless isolation: a non-root user with subordinate ids builds a multi-stage image whose
//! RUN steps `chown` files to other users (the saved layers keep those ids, root's files stay
//! 0:0) and runs it; runs, inspects and stops detached containers from separate commands,
//! publishes a port, is told why resource limits cannot apply; and builds on Debian with
//! `apt-get install` over HTTP.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{busybox_rootfs, require, stderr, stdout};

/// A throw-away user with subordinate ids, removed (with its id ranges) when dropped, after
/// its containers and the holders of its user namespaces.
pub(crate) struct TestUser {
    name: String,
    pub(crate) start: u32,
    /// The homes kiln ran with (each with its default store), for the clean-up.
    homes: std::cell::RefCell<Vec<PathBuf>>,
}

const SUB_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];

/// Tests in this binary run in parallel: one at a time picks a range and edits the files.
static SUB_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl TestUser {
    /// A new user named after this process and `tag` (one per test).
    pub(crate) fn create(tag: &str) -> TestUser {
        let _guard = SUB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let name = format!("kilnrl{}{tag}", std::process::id());
        let st = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        // useradd may have given it ranges already (Debian's does, from login.defs).
        let given = |f: &str| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.lines().find_map(|l| {
                let v: Vec<&str> = l.split(':').collect();
                match v[..] {
                    [n, s, _] if n == name => s.parse::<u32>().ok(),
                    _ => None,
                }
            })
        };
        if let (Some(u), Some(g)) = (given(SUB_FILES[0]), given(SUB_FILES[1])) {
            if u == g {
                return TestUser {
                    name,
                    start: u,
                    homes: Default::default(),
                };
            }
        }
        // A range above every range already given out, in both files.
        let mut start = 200_000u32;
        for f in SUB_FILES {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            for line in text.lines() {
                let v: Vec<&str> = line.split(':').collect();
                if let [_, s, c] = v[..] {
                    if let (Ok(s), Ok(c)) = (s.parse::<u32>(), c.parse::<u32>()) {
                        start = start.max(s.saturating_add(c));
                    }
                }
            }
        }
        let user = TestUser {
            name,
            start,
            homes: Default::default(),
        };
        for f in SUB_FILES {
            let mut text = std::fs::read_to_string(f).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            // Without a range of its own already (else the first one counts).
            text = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{}:", user.name)))
                .map(|l| format!("{l}\n"))
                .collect();
            text.push_str(&format!("{}:{}:65536\n", user.name, user.start));
            std::fs::write(f, text).expect("writing subordinate ids");
        }
        user
    }

    pub(crate) fn uid(&self) -> u32 {
        nix::unistd::User::from_name(&self.name)
            .expect("getpwnam")
            .expect("the user exists")
            .uid
            .as_raw()
    }

    /// Runs kiln as this user with only `HOME` and `PATH` set (so the store is the default
    /// one under `home`), in `cwd`.
    pub(crate) fn kiln(&self, home: &Path, cwd: &Path, args: &[&str]) -> Output {
        self.kiln_with(Path::new(env!("CARGO_BIN_EXE_kiln")), home, cwd, args, &[])
    }

    /// [`TestUser::kiln`] with the kiln binary at `bin` and the variables `env` set too.
    pub(crate) fn kiln_with(
        &self,
        bin: &Path,
        home: &Path,
        cwd: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        if !self.homes.borrow().iter().any(|h| h == home) {
            self.homes.borrow_mut().push(home.to_path_buf());
        }
        // runuser sets HOME from the passwd entry: `env` sets it again after.
        Command::new("runuser")
            .args(["-u", &self.name, "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(bin)
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .output()
            .expect("running kiln through runuser")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let homes = self.homes.take();
        for home in homes.iter().filter(|h| h.is_dir()) {
            // Containers a failed test left running, then the namespace's holder.
            let root = Path::new("/");
            let ids = self.kiln(home, root, &["ps", "-aq"]);
            for id in stdout(&ids).split_whitespace() {
                let _ = self.kiln(home, root, &["rm", "-f", id]);
            }
            stop_holder(&home.join(".local/share/kiln"));
        }
        let _ = Command::new("userdel").arg(&self.name).status();
        let prefix = format!("{}:", self.name);
        for f in SUB_FILES {
            if let Ok(text) = std::fs::read_to_string(f) {
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with(&prefix))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let _ = std::fs::write(f, kept);
            }
        }
    }
}

/// Ends the process keeping the store's rootless user namespace, if one runs (it would leave
/// by itself once idle, but `userdel` refuses a user with processes).
fn stop_holder(store: &Path) {
    let files = kiln::container::userns::HolderFiles::new(store);
    let Some((pid, _)) = files.read() else {
        return;
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "kiln-userns" {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

pub(crate) fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// `(path, uid, gid)` of every entry of every layer of the single image in a `docker save`
/// archive, one list per layer.
fn layer_owners(saved: &Path) -> Vec<Vec<(String, u64, u64)>> {
    let mut files = std::collections::HashMap::new();
    let mut outer = tar::Archive::new(std::fs::File::open(saved).expect("saved tar"));
    for e in outer.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).expect("read entry");
        files.insert(path, bytes);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    layers
        .iter()
        .map(|l| {
            let blob = &files[l.as_str().expect("layer path")];
            let mut inner = tar::Archive::new(&blob[..]);
            inner
                .entries()
                .expect("layer entries")
                .map(|e| {
                    let e = e.expect("layer entry");
                    let h = e.header();
                    (
                        e.path().expect("path").to_string_lossy().into_owned(),
                        h.uid().expect("uid"),
                        h.gid().expect("gid"),
                    )
                })
                .collect()
        })
        .collect()
}

fn prepare(dir: &Path, uid: u32) -> (PathBuf, PathBuf) {
    let home = dir.join("home");
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local AS first\n\
         RUN echo from-first > /a && chown 65534:65534 /a\n\
         FROM busybox:local\n\
         COPY --from=first /a /a\n\
         RUN echo hi > /x && chown 1000:1000 /x && mkdir /y && chown 65534:65534 /y && touch /z\n\
         CMD [\"sh\", \"-c\", \"cat /a /x && stat -c '%n %u:%g' /a /x /y /z /bin/busybox\"]\n",
    )
    .unwrap();
    busybox_rootfs(dir);
    for p in [dir, &home, &ctx] {
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    }
    std::fs::set_permissions(
        dir.join("busybox-rootfs.tar"),
        PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    (home, ctx)
}

#[test]
fn a_user_with_subordinate_ids_builds_and_the_layer_keeps_the_ids_it_chowned_to() {
    if !require::root()
        || !require::busybox()
        || require::tool("newuidmap", "apt-get install uidmap").is_none()
        || require::tool("runuser", "apt-get install util-linux").is_none()
    {
        return;
    }
    // Declared first, dropped last: the user's clean-up runs kiln on its store.
    let dir = tempfile::tempdir().expect("tempdir");
    let user = TestUser::create("b");
    let (home, ctx) = prepare(dir.path(), user.uid());
    let run = |args: &[&str]| user.kiln(&home, dir.path(), args);

    let info = ok(&run(&["info"]), "kiln info");
    let end = user.start + 65535;
    assert!(
        info.contains(&format!(
            "Isolation: rootless (not root; user namespaces allowed; subordinate ids {}-{end} \
             from /etc/subuid)",
            user.start
        )),
        "{info}"
    );
    let store = home.join(".local/share/kiln");
    assert!(
        info.contains(&format!("Root Dir: {}", store.display())),
        "{info}"
    );
    let forced = run(&["--isolation", "root", "images"]);
    assert_eq!(forced.status.code(), Some(1));
    assert!(
        stderr(&forced).contains("isolation root is not possible here"),
        "{}",
        stderr(&forced)
    );

    let tar = dir.path().join("busybox-rootfs.tar").display().to_string();
    ok(&run(&["image", "import", &tar, "busybox:local"]), "import");
    let ctx_s = ctx.display().to_string();
    // No network needed: pasta in a rootless namespace needs a user-writable /dev/net/tun,
    // which this host may not give.
    ok(
        &run(&["build", "--network", "none", "-t", "owned", &ctx_s]),
        "rootless build",
    );
    let saved = dir.path().join("owned.tar");
    let saved_s = saved.display().to_string();
    ok(&run(&["save", "-o", &saved_s, "owned"]), "save");
    assert!(
        store.join("oci").is_dir(),
        "the store is the user's default"
    );

    let layers = layer_owners(&saved);
    assert_eq!(layers.len(), 3, "{layers:?}");
    let base = &layers[0];
    let busybox = base.iter().find(|(p, _, _)| p == "bin/busybox");
    assert_eq!(busybox.map(|b| (b.1, b.2)), Some((0, 0)), "{base:?}");
    let owner = |layer: usize, name: &str| {
        layers[layer]
            .iter()
            .find(|(p, _, _)| p.trim_end_matches('/') == name)
            .map(|(_, u, g)| (*u, *g))
    };
    // COPY --from keeps the owner the first stage's RUN gave (as BuildKit does).
    assert_eq!(owner(1, "a"), Some((65534, 65534)), "{:?}", layers[1]);
    assert_eq!(owner(2, "x"), Some((1000, 1000)), "{:?}", layers[2]);
    assert_eq!(owner(2, "y"), Some((65534, 65534)), "{:?}", layers[2]);
    assert_eq!(owner(2, "z"), Some((0, 0)), "{:?}", layers[2]);

    // The image runs as the user, and its processes see the ids the build gave.
    let ran = ok(&run(&["run", "--rm", "owned"]), "rootless run --rm");
    assert_eq!(
        ran,
        "from-first\nhi\n/a 65534:65534\n/x 1000:1000\n/y 65534:65534\n/z 0:0\n\
         /bin/busybox 0:0\n"
    );

    // Deletions and a replaced directory survive save and load into another store: the
    // loaded layers' whiteouts and opaque markers are made inside the user namespace.
    let del = dir.path().join("del");
    std::fs::create_dir(&del).unwrap();
    std::fs::write(
        del.join("Dockerfile"),
        "FROM busybox:local\nRUN rm /bin/ls && rm -rf /home && mkdir /home && touch /home/n\n",
    )
    .unwrap();
    let on_top = dir.path().join("on-top");
    std::fs::create_dir(&on_top).unwrap();
    std::fs::write(
        on_top.join("Dockerfile"),
        "FROM deleted\nRUN test ! -e /bin/ls && test -e /home/n && test ! -e /home/app\n",
    )
    .unwrap();
    let home2 = dir.path().join("home2");
    std::fs::create_dir(&home2).unwrap();
    for p in [&del, &on_top, &home2] {
        std::os::unix::fs::chown(p, Some(user.uid()), Some(user.uid())).unwrap();
    }
    let del_s = del.display().to_string();
    ok(
        &run(&["build", "--network", "none", "-t", "deleted", &del_s]),
        "build with deletions",
    );
    let del_tar = dir.path().join("deleted.tar").display().to_string();
    ok(&run(&["save", "-o", &del_tar, "deleted"]), "save deleted");
    let run2 = |args: &[&str]| user.kiln(&home2, dir.path(), args);
    ok(&run2(&["load", "-i", &del_tar]), "load into a second store");
    let on_top_s = on_top.display().to_string();
    ok(
        &run2(&["build", "--network", "none", &on_top_s]),
        "build on the loaded image",
    );

    // The host's network: its /sys is bound read-only (no sysfs mount is allowed there).
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(
        host.join("Dockerfile"),
        "FROM busybox:local\nRUN test -d /sys/class/net && ! touch /sys/kiln-probe\n",
    )
    .unwrap();
    std::os::unix::fs::chown(&host, Some(user.uid()), Some(user.uid())).unwrap();
    let host_s = host.display().to_string();
    ok(
        &run(&["build", "--network", "host", &host_s]),
        "rootless build on the host's network",
    );

    // The default network: pasta, given a /dev/net/tun the user may open; otherwise an error
    // that says so.
    let net = dir.path().join("net");
    std::fs::create_dir(&net).unwrap();
    std::fs::write(
        net.join("Dockerfile"),
        "FROM busybox:local\nRUN ip link show eth0\n",
    )
    .unwrap();
    std::os::unix::fs::chown(&net, Some(user.uid()), Some(user.uid())).unwrap();
    let built = run(&["build", "-t", "net", &net.display().to_string()]);
    let tun_mode = std::fs::metadata("/dev/net/tun").map_or(0, |m| m.permissions().mode());
    if tun_mode & 0o006 == 0o006 {
        ok(&built, "rootless build with pasta");
    } else {
        assert!(!built.status.success());
        assert!(
            stderr(&built).contains("/dev/net/tun"),
            "{}",
            stderr(&built)
        );
    }
}

/// A port on 127.0.0.1 nothing listens on (as far as anyone can know).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `GET /` on 127.0.0.1:`port`, retried while the container's server starts.
fn http_get(port: u16) -> String {
    use std::io::Write;
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.starts_with("HTTP/1.") {
                return body;
            }
            last = body;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no HTTP answer on 127.0.0.1:{port}: {last:?}")
}

/// Each kiln command is a new process: they share the store's rootless user namespace (kept
/// by its holder), so a later `exec` joins and a later `stop` signals a container an earlier
/// `run -d` started, even one whose processes run as another user.
#[test]
fn a_user_with_subordinate_ids_runs_inspects_and_stops_detached_containers() {
    if !require::root()
        || !require::busybox()
        || require::tool("newuidmap", "apt-get install uidmap").is_none()
        || require::tool("runuser", "apt-get install util-linux").is_none()
    {
        return;
    }
    // Declared first, dropped last: the user's clean-up runs kiln on its store.
    let dir = tempfile::tempdir().expect("tempdir");
    let user = TestUser::create("c");
    let (home, _ctx) = prepare(dir.path(), user.uid());
    let run = |args: &[&str]| user.kiln(&home, dir.path(), args);
    let tar = dir.path().join("busybox-rootfs.tar").display().to_string();
    ok(&run(&["image", "import", &tar, "busybox:local"]), "import");

    let id = ok(
        &run(&[
            "run",
            "-d",
            "--name",
            "bg",
            "--user",
            "1000",
            "busybox:local",
            "sh",
            "-c",
            "echo started; echo oops >&2; exec sleep 1000",
        ]),
        "run -d",
    );
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ps = ok(&run(&["ps", "--format", "{{.Names}} {{.Status}}"]), "ps");
    assert!(ps.starts_with("bg Up"), "{ps}");
    let exec = ok(
        &run(&["exec", "bg", "sh", "-c", "id -u; cat /proc/1/cmdline"]),
        "exec",
    );
    assert_eq!(exec, "1000\nsleep\u{0}1000\u{0}");
    let as_root = ok(&run(&["exec", "-u", "0", "bg", "id", "-u"]), "exec -u 0");
    assert_eq!(as_root, "0\n");
    let logs = run(&["logs", "bg"]);
    assert_eq!(ok(&logs, "logs"), "started\n");
    assert_eq!(stderr(&logs), "oops\n");
    // The container's PID 1 runs as 1000 (a subordinate id outside): only a command in the
    // namespace that started it may signal it.
    ok(&run(&["stop", "-t", "1", "bg"]), "stop");
    let ps = ok(
        &run(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]),
        "ps -a",
    );
    assert!(ps.starts_with("bg Exited (137)"), "{ps}");
    ok(&run(&["rm", "bg"]), "rm");
    assert_eq!(ok(&run(&["ps", "-aq"]), "ps -aq"), "");

    // A published port: the monitor listens on the host's loopback and connects inside.
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    ok(
        &run(&[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &publish,
            "busybox:local",
            "sh",
            "-c",
            "mkdir /www && echo served-rootless > /www/index.html && exec httpd -f -p 80 -h /www",
        ]),
        "run -d -p",
    );
    let page = http_get(port);
    assert!(page.ends_with("served-rootless\n"), "{page}");
    let ps = ok(&run(&["ps", "--format", "{{.Ports}}"]), "ps ports");
    assert_eq!(ps.trim(), format!("127.0.0.1:{port}->80/tcp"));
    ok(&run(&["rm", "-f", "web"]), "rm -f");

    // Resource limits: applied in a delegated cgroup v2 subtree; elsewhere refused with the
    // cause and Docker's code for a container that cannot be created.
    let limited = run(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "busybox:local",
        "cat",
        "/sys/fs/cgroup/memory.max",
    ]);
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let delegated = kiln::container::cgroups::delegated(
        Path::new(kiln::container::cgroups::HOST_ROOT),
        kiln::container::cgroups::unified_path(&own).unwrap_or("/"),
        &|_| true,
    );
    if delegated.is_err() {
        assert_eq!(limited.status.code(), Some(125), "{}", stderr(&limited));
        let e = stderr(&limited);
        assert!(
            e.contains("resource limits need a cgroup v2 subtree delegated to the user"),
            "{e}"
        );
        assert!(e.contains("cgroup v1"), "{e}");
    } else if limited.status.success() {
        assert_eq!(stdout(&limited), "67108864\n");
    } else {
        assert!(
            stderr(&limited).contains("not writable by the user"),
            "{}",
            stderr(&limited)
        );
    }
}

/// A Debian minbase image loaded into the user's own store, `apt-get install` over HTTP in a
/// rootless RUN step (apt's downloads run as `_apt`, another subordinate id), and the program
/// run in a container.
#[test]
fn a_user_with_subordinate_ids_builds_on_debian_with_apt_get_over_http() {
    if !require::root()
        || require::tool("newuidmap", "apt-get install uidmap").is_none()
        || require::tool("runuser", "apt-get install util-linux").is_none()
    {
        return;
    }
    // Declared first, dropped last: the user's clean-up runs kiln on its store.
    let dir = tempfile::tempdir().expect("tempdir");
    let user = TestUser::create("d");
    let (home, ctx) = prepare(dir.path(), user.uid());
    let tar = dir.path().join("debian-rootfs.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-rootfs.sh");
    let made = Command::new("bash")
        .arg(script)
        .arg(&tar)
        .status()
        .expect("bash");
    if !made.success() {
        require::missing("a Debian minbase root (apt-get install debootstrap; mirror over HTTP)");
        return;
    }
    std::fs::set_permissions(&tar, PermissionsExt::from_mode(0o644)).unwrap();
    let run = |args: &[&str]| user.kiln(&home, dir.path(), args);
    let tar_s = tar.display().to_string();
    ok(
        &run(&[
            "image",
            "import",
            "-c",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            &tar_s,
            "debian:local",
        ]),
        "import the Debian root as the user",
    );
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:local\n\
         RUN apt-get update && apt-get install -y --no-install-recommends hello \
             && rm -rf /var/lib/apt/lists/*\n\
         RUN test \"$(stat -c %U /var/cache/apt/archives/partial)\" = _apt\n\
         CMD [\"hello\"]\n",
    )
    .unwrap();
    // pasta needs a /dev/net/tun the user may open; without one, the host's network.
    let tun_mode = std::fs::metadata("/dev/net/tun").map_or(0, |m| m.permissions().mode());
    let network = if tun_mode & 0o006 == 0o006 {
        "default"
    } else {
        "host"
    };
    let ctx_s = ctx.display().to_string();
    ok(
        &run(&["build", "--network", network, "-t", "hi:1", &ctx_s]),
        "rootless apt-get install",
    );
    assert_eq!(
        ok(&run(&["run", "--rm", "hi:1"]), "run hello"),
        "Hello, world!\n"
    );
}
