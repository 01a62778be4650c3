//! Rootless isolation: a non-root user with subordinate ids builds an image whose RUN step
//! `chown`s files to other users; the saved layer keeps those ids and root's files stay 0:0.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{busybox_rootfs, require, stderr, stdout};

/// A throw-away user with subordinate ids, removed (with its id ranges) when dropped.
struct TestUser {
    name: String,
    start: u32,
}

const SUB_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];

impl TestUser {
    fn create() -> TestUser {
        let name = format!("kilnrl{}", std::process::id());
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
                return TestUser { name, start: u };
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
        let user = TestUser { name, start };
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

    fn uid(&self) -> u32 {
        nix::unistd::User::from_name(&self.name)
            .expect("getpwnam")
            .expect("the user exists")
            .uid
            .as_raw()
    }

    /// Runs kiln as this user with only `HOME` and `PATH` set (so the store is the default
    /// one under `home`), in `cwd`.
    fn kiln(&self, home: &Path, cwd: &Path, args: &[&str]) -> Output {
        // runuser sets HOME from the passwd entry: `env` sets it again after.
        Command::new("runuser")
            .args(["-u", &self.name, "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .arg(env!("CARGO_BIN_EXE_kiln"))
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

fn ok(o: &Output, what: &str) -> String {
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
        "FROM busybox:local\n\
         RUN echo hi > /x && chown 1000:1000 /x && mkdir /y && chown 65534:65534 /y && touch /z\n",
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
    let user = TestUser::create();
    let dir = tempfile::tempdir().expect("tempdir");
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
    assert_eq!(layers.len(), 2, "{layers:?}");
    let base = &layers[0];
    let busybox = base.iter().find(|(p, _, _)| p == "bin/busybox");
    assert_eq!(busybox.map(|b| (b.1, b.2)), Some((0, 0)), "{base:?}");
    let owner = |name: &str| {
        layers[1]
            .iter()
            .find(|(p, _, _)| p.trim_end_matches('/') == name)
            .map(|(_, u, g)| (*u, *g))
    };
    assert_eq!(owner("x"), Some((1000, 1000)), "{:?}", layers[1]);
    assert_eq!(owner("y"), Some((65534, 65534)), "{:?}", layers[1]);
    assert_eq!(owner("z"), Some((0, 0)), "{:?}", layers[1]);

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
