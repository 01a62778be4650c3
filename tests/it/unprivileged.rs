//! The unprivileged isolation mode (no namespaces, no mounts): builds forced with
//! `--isolation unprivileged` as root on the host, and builds inside `docker run` with
//! Docker's default settings. Each gives the same layers as the root mode, records
//! deletions as whiteouts, and keeps a RUN step away from kiln's binary, its store, the
//! registry credentials, `--secret` files, the `--output` destination, another stage's
//! secret, pid 1 and kiln itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{busybox_rootfs, require, stderr, stdout, unique_name, TestStore};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A multi-stage build: stage `a` writes and deletes files, the last stage copies from it.
const MULTI_STAGE: &str = "FROM busybox AS a
RUN echo hello > /a.txt && mkdir -p /d/e && echo x > /d/e/f && rm /etc/group && rm -r /tmp
RUN rm /d/e/f && echo y > /d/g
FROM busybox
COPY --from=a /a.txt /b.txt
RUN cat /b.txt > /c.txt && rm /bin/vi && ln -s /c.txt /link
";

fn kiln_env(store: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(KILN)
        .args(args)
        .current_dir(cwd)
        .env("KILN_ROOT", store)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running kiln")
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// The diffIDs of `name` in the store at `root`.
fn diff_ids(root: &Path, name: &str) -> Vec<String> {
    let store = kiln::store::Store::open(root).expect("store");
    let rec = store.resolve(name).expect("image");
    rec.diff_ids.iter().map(|d| d.to_string()).collect()
}

/// Every entry name of every layer of `name`, per layer, read from the layer tars.
fn layer_entries(root: &Path, name: &str) -> Vec<Vec<(String, Vec<u8>)>> {
    let store = kiln::store::Store::open(root).expect("store");
    let rec = store.resolve(name).expect("image");
    rec.diff_ids
        .iter()
        .map(|d| {
            let f = store.open_blob(d).expect("blob");
            let mut a = tar::Archive::new(f);
            a.entries()
                .expect("entries")
                .map(|e| {
                    let mut e = e.expect("entry");
                    let path = e.path().expect("path").to_string_lossy().into_owned();
                    let mut bytes = Vec::new();
                    e.read_to_end(&mut bytes).expect("read");
                    (path, bytes)
                })
                .collect()
        })
        .collect()
}

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).expect("write");
    }
    d
}

/// Forced as root on the host: the same layers as the root mode, deletions as whiteouts.
#[test]
fn forced_unprivileged_build_gives_the_root_modes_layers_and_whiteouts() {
    let (root_mode, unpriv) = (TestStore::new(), TestStore::new());
    if root_mode.busybox("busybox").is_none() || unpriv.busybox("busybox").is_none() {
        return;
    }
    let p = project(&[("Dockerfile", MULTI_STAGE)]);
    let epoch = [("SOURCE_DATE_EPOCH", "0")];
    for (store, mode) in [(&root_mode, "root"), (&unpriv, "unprivileged")] {
        let o = kiln_env(
            &store.root(),
            p.path(),
            &["--isolation", mode, "build", "-t", "eq", "."],
            &epoch,
        );
        assert_ok(&o, mode);
    }
    let ids = diff_ids(&unpriv.root(), "eq");
    assert_eq!(ids.len(), 3, "base, COPY, RUN");
    assert_eq!(
        ids,
        diff_ids(&root_mode.root(), "eq"),
        "same layers as root mode"
    );
    // Stage a's deletions, seen through `kiln save` of that stage.
    let o = kiln_env(
        &unpriv.root(),
        p.path(),
        &[
            "--isolation",
            "unprivileged",
            "build",
            "--target",
            "a",
            "-t",
            "a",
            ".",
        ],
        &epoch,
    );
    assert_ok(&o, "build --target a");
    let layers = layer_entries(&unpriv.root(), "a");
    let names = |i: usize| -> Vec<String> { layers[i].iter().map(|e| e.0.clone()).collect() };
    let first = names(1);
    for want in ["a.txt", "d/e/f", "etc/.wh.group", ".wh.tmp"] {
        assert!(
            first.iter().any(|n| n.trim_end_matches('/') == want),
            "{want} in {first:?}"
        );
    }
    let second = names(2);
    assert!(second.iter().any(|n| n == "d/e/.wh.f"), "{second:?}");
    assert!(second.iter().any(|n| n == "d/g"), "{second:?}");
    // Mount stand-ins never reach a layer.
    for l in &layers[1..] {
        for (n, _) in l {
            assert!(
                !n.starts_with("dev/") && n != "etc/hosts" && n != "etc/resolv.conf",
                "{n} leaked into a layer"
            );
        }
    }
    let saved = unpriv.dir.path().join("a.tar");
    let o = kiln_env(
        &unpriv.root(),
        p.path(),
        &["save", "-o", saved.to_str().unwrap(), "a"],
        &[],
    );
    assert_ok(&o, "save");
    assert!(std::fs::metadata(&saved).expect("saved").len() > 0);
}

/// What a step tries, with the host paths it must not reach given as build args.
const ESCAPES: &str = r#"FROM busybox AS a
RUN --mount=type=secret,id=s grep -q TOPSECRET /run/secrets/s && echo changed > /run/secrets/s && sleep 1
FROM busybox AS b
ARG KILN STORE CONFIG SECRET OUT
RUN for p in "$KILN" "$STORE/pwned" "$CONFIG" "$SECRET" "$OUT/pwned"; do mkdir -p "$(dirname "$p")" && echo pwned > "$p"; done
RUN sleep 0.3; for d in /*; do case $d in /dev|/proc|/sys) ;; *) if grep -rl "TOP""SECRET" $d; then exit 1; fi;; esac; done; true
RUN ! kill -9 1 && ! kill -9 $PPID && ! chroot / true && ! mknod /blk b 8 0 && echo guarded > /ok
FROM busybox
COPY --from=a /etc/passwd /a
COPY --from=b /ok /ok
"#;

/// Forced as root on the host: a RUN step writes only inside its own root, cannot find
/// another stage's secret, cannot signal pid 1 or kiln, cannot chroot or make devices.
#[test]
fn forced_unprivileged_step_cannot_reach_kiln_store_credentials_secrets_or_output() {
    let store = TestStore::new();
    if store.busybox("busybox").is_none() {
        return;
    }
    let p = project(&[("Dockerfile", ESCAPES), ("secret.txt", "TOPSECRET-1\n")]);
    let config_dir = p.path().join("docker");
    std::fs::create_dir(&config_dir).unwrap();
    let config = config_dir.join("config.json");
    std::fs::write(&config, "{\"auths\":{}}\n").unwrap();
    let secret = p.path().join("secret.txt");
    let out = p.path().join("out");
    let kiln_before = std::fs::read(KILN).expect("kiln binary");
    let arg = |k: &str, v: &Path| format!("{k}={}", v.display());
    let o = kiln_env(
        &store.root(),
        p.path(),
        &[
            "--isolation",
            "unprivileged",
            "build",
            "--progress",
            "plain",
            "--secret",
            &format!("id=s,src={}", secret.display()),
            "-o",
            &format!("type=local,dest={}", out.display()),
            "--build-arg",
            &arg("KILN", Path::new(KILN)),
            "--build-arg",
            &arg("STORE", &store.root()),
            "--build-arg",
            &arg("CONFIG", &config),
            "--build-arg",
            &arg("SECRET", &secret),
            "--build-arg",
            &arg("OUT", &out),
            "-t",
            "esc",
            ".",
        ],
        &[("DOCKER_CONFIG", config_dir.to_str().unwrap())],
    );
    assert_ok(&o, "build");
    assert_eq!(std::fs::read(out.join("ok")).expect("ok"), b"guarded\n");
    assert!(
        std::fs::read(KILN).expect("kiln") == kiln_before,
        "kiln's binary changed"
    );
    assert!(!store.root().join("pwned").exists(), "wrote into the store");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "{\"auths\":{}}\n"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "TOPSECRET-1\n");
    assert!(!out.join("pwned").exists(), "wrote into the --output dest");
    for layer in layer_entries(&store.root(), "esc") {
        for (name, bytes) in layer {
            let leaked = bytes.windows(9).any(|w| w == b"TOPSECRET");
            assert!(!leaked, "the secret leaked into a layer at {name}");
        }
    }
}

/// The shared libraries a dynamically linked binary needs, as `ldd` lists them.
fn libraries(binary: &str) -> Vec<PathBuf> {
    let o = Command::new("ldd").arg(binary).output().expect("ldd");
    stdout(&o)
        .lines()
        .filter_map(|l| {
            let p = l.split("=>").last()?.split_whitespace().next()?;
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

/// A docker image with busybox and kiln's libraries (kiln itself is mounted read-only).
fn docker_image(dir: &Path) -> String {
    let base = busybox_rootfs(dir);
    let mut b = tar::Builder::new(Vec::new());
    let mut a = tar::Archive::new(std::fs::File::open(&base).expect("rootfs"));
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let h = e.header().clone();
        let path = e.path().expect("path").into_owned();
        b.append_data(&mut h.clone(), path, &mut e).expect("append");
    }
    for lib in libraries(KILN) {
        let rel = lib.strip_prefix("/").unwrap();
        b.append_path_with_name(std::fs::canonicalize(&lib).unwrap(), rel)
            .expect("lib");
    }
    let tar = dir.join("image.tar");
    std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
    let name = unique_name("unpriv");
    let o = Command::new("docker")
        .args(["import", tar.to_str().unwrap(), &name])
        .output()
        .expect("docker import");
    assert_ok(&o, "docker import");
    name
}

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    require::require(
        ok,
        "a Docker daemon (docker info failed; scripts/start-dockerd.sh starts one)",
    )
}

/// Inside `docker run` with Docker's defaults (no --privileged, no --security-opt): the
/// multi-stage build works, equals the root mode's on the host, and the step is confined.
#[test]
fn build_inside_a_default_docker_run_equals_root_mode_and_is_confined() {
    let host = TestStore::new();
    if host.busybox("busybox").is_none() || !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let image = docker_image(work.path());
    let checks = "FROM busybox\nRUN ! kill -9 1 && ! kill -9 $PPID && ! kill -9 -1 && mkdir -p /root/.docker && \
                  ! chroot / true && echo pwned > /root/.docker/config.json && echo ok > /ok\n";
    let p = project(&[("Dockerfile", MULTI_STAGE), ("Checks", checks)]);
    std::fs::copy(host.busybox_tar(), p.path().join("busybox.tar")).unwrap();
    let creds = work.path().join("config.json");
    std::fs::write(&creds, "{\"auths\":{}}\n").unwrap();
    let store = work.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let script = "kiln info | grep Isolation && kiln import /w/busybox.tar busybox >/dev/null && \
                  kiln build -q -t eq /w && kiln build -q -f /w/Checks -t checks /w && \
                  kiln save -o /store/eq.tar eq";
    let vol = |a: &Path, b: &str| format!("{}:{b}", a.display());
    let o = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-e",
            "KILN_ROOT=/store",
            "-e",
            "SOURCE_DATE_EPOCH=0",
        ])
        .args(["-v", &format!("{KILN}:/usr/local/bin/kiln:ro")])
        .args(["-v", &vol(p.path(), "/w"), "-v", &vol(&store, "/store")])
        .args(["-v", &vol(&creds, "/root/.docker/config.json")])
        .args([&image, "sh", "-c", script])
        .output()
        .expect("docker run");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert_ok(&o, "kiln build inside docker run");
    assert!(
        stdout(&o).contains("Isolation: unprivileged"),
        "{}",
        stdout(&o)
    );
    assert_eq!(std::fs::read_to_string(&creds).unwrap(), "{\"auths\":{}}\n");
    assert!(std::fs::metadata(store.join("eq.tar")).is_ok_and(|m| m.len() > 0));
    // The same base as inside: imported from the same tar by the same command.
    let epoch = [("SOURCE_DATE_EPOCH", "0")];
    let o = kiln_env(
        &host.root(),
        p.path(),
        &["import", "busybox.tar", "busybox"],
        &epoch,
    );
    assert_ok(&o, "import");
    let o = kiln_env(
        &host.root(),
        p.path(),
        &["--isolation", "root", "build", "-q", "-t", "eq", "."],
        &[("SOURCE_DATE_EPOCH", "0")],
    );
    assert_ok(&o, "root-mode build on the host");
    assert_eq!(diff_ids(&store, "eq"), diff_ids(&host.root(), "eq"));
}

/// Builds `dockerfile` (with `files`) in both modes, forced on the host, with
/// `SOURCE_DATE_EPOCH=0` and `extra` arguments; the unprivileged build's output and both
/// stores. `None`: busybox is missing (skipped loudly).
fn build_both(
    files: &[(&str, &str)],
    extra: &[&str],
) -> Option<(String, TestStore, TestStore, tempfile::TempDir)> {
    let (root_mode, unpriv) = (TestStore::new(), TestStore::new());
    if root_mode.busybox("busybox").is_none() || unpriv.busybox("busybox").is_none() {
        return None;
    }
    let p = project(files);
    let mut shown = String::new();
    for (store, mode) in [(&root_mode, "root"), (&unpriv, "unprivileged")] {
        let mut args = vec!["--isolation", mode, "build", "--progress", "plain"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-t", "eq", "."]);
        let o = kiln_env(
            &store.root(),
            p.path(),
            &args,
            &[("SOURCE_DATE_EPOCH", "0")],
        );
        assert_ok(&o, mode);
        shown = stderr(&o);
    }
    Some((shown, root_mode, unpriv, p))
}

/// The `/proc` emulation and the `/dev` nodes reach a step; the placeholder directories the
/// emulation makes in `/proc` leave no trace in the layer (same layers as the root mode,
/// where `/proc` is a mount).
#[test]
fn forced_unprivileged_step_has_proc_and_dev_and_proc_stays_out_of_the_layer() {
    let dockerfile = "FROM busybox
RUN grep -q '^Pid:' /proc/self/status && echo status-ok \
 && ls /proc/self/fd | grep -qx 2 && echo fd-ok \
 && echo exe=$(readlink /proc/self/exe) \
 && ls -l /proc/self/ >/dev/null && echo listing-ok \
 && head -c 8 /dev/urandom | wc -c | sed 's/^ */urandom=/' \
 && ls /proc | grep -qx cpuinfo && echo proc-root-ok \
 && echo made > /made
RUN test -c /dev/null && test -c /dev/zero && echo dev-ok && ls /proc/self/ > /dev/null
";
    let Some((shown, root_mode, unpriv, _p)) = build_both(&[("Dockerfile", dockerfile)], &[])
    else {
        return;
    };
    for want in [
        "status-ok",
        "fd-ok",
        "exe=/bin/busybox",
        "listing-ok",
        "urandom=8",
        "proc-root-ok",
        "dev-ok",
    ] {
        assert!(shown.contains(want), "{want} missing in:\n{shown}");
    }
    assert_eq!(
        diff_ids(&unpriv.root(), "eq"),
        diff_ids(&root_mode.root(), "eq")
    );
    let layers = layer_entries(&unpriv.root(), "eq");
    let names: Vec<&str> = layers[1].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["made"],
        "the RUN layer holds only what the step wrote"
    );
}

/// Consecutive steps share one working root: what a step wrote is there for the next one,
/// its mounts, secret and `/etc/hosts` stand-in are not (the image's own `/etc/hosts` is
/// back), a process it left behind does not make the next step see a wrong root, and the
/// layers are the root mode's.
#[test]
fn forced_unprivileged_steps_reuse_the_root_without_leaking_mounts_or_secrets() {
    let dockerfile = "FROM busybox
COPY hosts /etc/hosts
RUN mkdir -p /data && echo keep > /data/keep
RUN --mount=type=secret,id=s,target=/run/secrets/s --mount=type=bind,target=/ctx \
    cat /run/secrets/s > /dev/null && ls /ctx/Dockerfile && echo one > /one \
    && rm /data/keep && echo junk > /dev/shm/junk && echo 1.2.3.4 x >> /etc/hosts
RUN test ! -e /run/secrets/s && test ! -e /ctx && test ! -e /dev/shm/junk && test -f /one \
    && test ! -e /data/keep && ! grep -q 1.2.3.4 /etc/hosts && echo two > /two
RUN (setsid sleep 3 </dev/null >/dev/null 2>&1 &) ; echo three > /three
RUN cat /one /two /three && test ! -e /run/secrets/s && echo all-seen
";
    let Some((shown, root_mode, unpriv, _p)) = build_both(
        &[
            ("Dockerfile", dockerfile),
            ("secret.txt", "TOPSECRET-2\n"),
            ("hosts", "127.0.0.1 image-hosts\n"),
        ],
        &["--secret", "id=s,src=secret.txt"],
    ) else {
        return;
    };
    assert!(shown.contains("all-seen"), "{shown}");
    assert_eq!(
        diff_ids(&unpriv.root(), "eq"),
        diff_ids(&root_mode.root(), "eq")
    );
    let layers = layer_entries(&unpriv.root(), "eq");
    for (i, layer) in layers.iter().enumerate() {
        for (name, bytes) in layer {
            let stand_in = name.starts_with("run/secrets")
                || name.starts_with("ctx")
                || name.starts_with("dev/")
                || (i > 1 && name == "etc/hosts");
            assert!(!stand_in, "a mount stand-in in layer {i}: {name}");
            assert!(
                !bytes.windows(9).any(|w| w == b"TOPSECRET"),
                "secret in {name}"
            );
        }
    }
    // No working root is left parked once kiln has exited; the ones kept for the next
    // build hold neither the secret nor a mount stand-in.
    let roots = unpriv.root().join("tmp/unpriv-roots");
    let left = std::fs::read_dir(&roots).map_or(0, |d| d.count());
    assert_eq!(left, 0, "parked roots left in {}", roots.display());
    let kept = kept_roots(&unpriv.root());
    assert!(!kept.is_empty() && kept.len() <= 2, "{kept:?}");
    for root in kept {
        assert!(!root.join("run/secrets/s").exists() && !root.join("ctx").exists());
        let hosts = std::fs::read_to_string(root.join("etc/hosts")).expect("hosts");
        assert_eq!(hosts, "127.0.0.1 image-hosts\n");
        for f in walk_files(&root) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            let secret = bytes.windows(9).any(|w| w == b"TOPSECRET");
            assert!(!secret, "secret in kept root: {}", f.display());
        }
    }
}

/// The working roots kept in the store at `root` for later builds.
fn kept_roots(root: &Path) -> Vec<PathBuf> {
    let home = root.join("tmp/unpriv-kept");
    std::fs::read_dir(&home)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("root"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Every regular file under `dir` (symlinks not followed).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Rebuilds after edits take the root the last build kept and move it onto the new layers;
/// every such build gives the layers a build in an empty store gives, whatever the last
/// build's steps changed (a mode, a deleted file, an appended file) and whichever chain the
/// kept root showed (the same Dockerfile after an edit, or another Dockerfile on the base).
#[test]
fn forced_unprivileged_rebuilds_move_a_kept_root_and_equal_fresh_builds() {
    const APP: &str = "FROM busybox
COPY app /app
RUN cat /app/a /app/sub/b > /both && chmod 600 /app/a && rm /app/c \
    && echo more >> /app/sub/b && mkdir /app/new && ls -lR /app > /listing
RUN cat /both && wc -l < /listing
";
    const OTHER: &str = "FROM busybox
RUN test ! -e /app && test ! -e /both && ls / > /top && echo other-ok
";
    let unpriv = TestStore::new();
    if unpriv.busybox("busybox").is_none() {
        return;
    }
    let p = project(&[("Dockerfile", APP), ("Dockerfile.other", OTHER)]);
    let app = p.path().join("app");
    std::fs::create_dir_all(app.join("sub")).expect("mkdir");
    for (name, text) in [("a", "one\n"), ("sub/b", "two\n"), ("c", "three\n")] {
        std::fs::write(app.join(name), text).expect("write");
    }
    let env = [("SOURCE_DATE_EPOCH", "0"), ("KILN_LOG", "kiln=debug")];
    let build = |store: &Path, file: &str| {
        let args = [
            "--isolation",
            "unprivileged",
            "build",
            "--progress",
            "plain",
        ];
        let mut args = args.to_vec();
        args.extend_from_slice(&["-f", file, "-t", "eq", "."]);
        let o = kiln_env(store, p.path(), &args, &env);
        assert_ok(&o, file);
        stderr(&o)
    };
    type Edit = (&'static str, fn(&Path));
    let edits: [Edit; 4] = [
        ("first build", |_| {}),
        ("an edited file", |app| {
            std::fs::write(app.join("a"), "ONE\n").expect("edit")
        }),
        ("a deleted and an added file", |app| {
            std::fs::remove_file(app.join("sub/b")).expect("rm");
            std::fs::write(app.join("sub/d"), "four\n").expect("add");
            std::fs::write(app.join("sub/b"), "two again\n").expect("re-add");
        }),
        ("another Dockerfile", |_| {}),
    ];
    for (i, (what, edit)) in edits.iter().enumerate() {
        edit(&app);
        let file = if i == 3 {
            "Dockerfile.other"
        } else {
            "Dockerfile"
        };
        let shown = build(&unpriv.root(), file);
        if i > 0 {
            assert!(
                shown.contains("moved a kept working root"),
                "{what}: the kept root was not used:\n{shown}"
            );
        }
        if (1..3).contains(&i) {
            // The first RUN (over the COPY and the base: 2 layers) takes the last build's
            // root, which holds the unchanged files already; the COPY before it must not
            // have moved that root down onto the base alone.
            assert!(
                shown
                    .lines()
                    .any(|l| l.contains("moved a kept working root") && l.contains("to=2")),
                "{what}: the RUN after the COPY did not take the kept root:\n{shown}"
            );
        }
        let fresh = TestStore::new();
        fresh.busybox("busybox").expect("busybox");
        build(&fresh.root(), file);
        assert_eq!(
            diff_ids(&unpriv.root(), "eq"),
            diff_ids(&fresh.root(), "eq"),
            "{what}: a rebuild on a kept root differs from a build in an empty store"
        );
    }
}

/// Builds where kiln's own changes (COPY, ADD, WORKDIR) come between RUN steps: over a file
/// and a directory a RUN made, into a fresh directory (written straight into the layer), an
/// archive unpacked over a directory, `--chown`, `COPY --from`, and RUN steps deleting what
/// a COPY wrote. In the unprivileged mode these changes and the RUN steps around them share
/// working roots (parked, or moved onto other layers); every image must still be the root
/// mode's, in one store through a series of builds and context edits.
const SHARED_ROOTS: [&str; 2] = [
    "FROM busybox
RUN mkdir -p /app/sub && echo run > /app/sub/r && echo keep > /app/k
COPY a /app/sub/r
COPY dir/ /app/
WORKDIR /app/w/x
RUN cat /app/sub/r /app/a2 > out && rm /app/k && ln -s /app/sub/r /app/link
ADD arch.tar /app/sub/
COPY --chown=1:2 a /new/a
COPY dir /fresh
RUN find /app /new /fresh | sort | xargs stat -c '%n %F %a %u %g %s' > /listing \
    && rm /fresh/a2 && echo end >> /app/sub/t
",
    "FROM busybox AS build
WORKDIR /src
COPY dir/ ./
RUN cat a2 x/y > /built && rm -r /src/x
FROM busybox
COPY --from=build /built /b
RUN cat /b > /c && rm /bin/vi
COPY a /c
RUN wc -c /c > /d
WORKDIR /c2
COPY --from=build /src /src
",
];

/// The shared-roots project's context, its files' contents numbered by `round`.
fn shared_roots_context(dir: &Path, round: usize) {
    std::fs::create_dir_all(dir.join("dir/x")).expect("mkdir");
    std::fs::write(dir.join("a"), format!("a {round}\n")).expect("write");
    std::fs::write(dir.join("dir/a2"), format!("a2 {}\n", round / 2)).expect("write");
    std::fs::write(dir.join("dir/x/y"), format!("y {round}\n")).expect("write");
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("t", format!("t {round}\n")), ("r2", "r2\n".to_string())] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        h.set_mtime(1_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_bytes())
            .expect("tar entry");
    }
    std::fs::write(dir.join("arch.tar"), b.into_inner().expect("tar")).expect("write");
}

#[test]
fn forced_unprivileged_changes_between_steps_share_roots_and_equal_root_mode() {
    let (root_mode, unpriv) = (TestStore::new(), TestStore::new());
    if root_mode.busybox("busybox").is_none() || unpriv.busybox("busybox").is_none() {
        return;
    }
    let p = project(&[
        ("Dockerfile.0", SHARED_ROOTS[0]),
        ("Dockerfile.1", SHARED_ROOTS[1]),
    ]);
    let env = [("SOURCE_DATE_EPOCH", "0"), ("KILN_LOG", "kiln=debug")];
    let build = |store: &Path, mode: &str, file: &str| {
        let args = ["--isolation", mode, "build", "--progress", "plain"];
        let mut args = args.to_vec();
        args.extend_from_slice(&["-f", file, "-t", "eq", "."]);
        let o = kiln_env(store, p.path(), &args, &env);
        assert_ok(&o, &format!("{mode} {file}"));
        stderr(&o)
    };
    let mut shown = String::new();
    for round in 0..3 {
        shared_roots_context(p.path(), round);
        for file in ["Dockerfile.0", "Dockerfile.1"] {
            shown.push_str(&build(&unpriv.root(), "unprivileged", file));
            build(&root_mode.root(), "root", file);
            let (u, r) = (
                layer_entries(&unpriv.root(), "eq"),
                layer_entries(&root_mode.root(), "eq"),
            );
            assert_eq!(u.len(), r.len(), "round {round}, {file}: number of layers");
            for (i, (u, r)) in u.iter().zip(&r).enumerate() {
                let names = |l: &[(String, Vec<u8>)]| -> Vec<String> {
                    l.iter().map(|(n, d)| format!("{n} {}", d.len())).collect()
                };
                assert_eq!(
                    names(u),
                    names(r),
                    "round {round}, {file}, layer {i}: the unprivileged mode's entries (left) \
                     differ from the root mode's"
                );
                for ((n, ud), (_, rd)) in u.iter().zip(r) {
                    assert!(
                        ud == rd,
                        "round {round}, {file}, layer {i}, {n}: {:?} against the root mode's {:?}",
                        String::from_utf8_lossy(ud),
                        String::from_utf8_lossy(rd)
                    );
                }
            }
            assert_eq!(
                diff_ids(&unpriv.root(), "eq"),
                diff_ids(&root_mode.root(), "eq"),
                "round {round}, {file}"
            );
        }
    }
    // The changes did use the roots the steps left, and moved them onto other layers.
    for used in [
        "working root for a change root=\"parked\"",
        "moved a parked working root",
    ] {
        assert!(shown.contains(used), "never {used}:\n{shown}");
    }
}

/// A step that replaces `/sys` with a symlink to a host directory (and writes into `/dev`):
/// the next steps on the same working root get a real, empty `/sys` again (a mount point in
/// the root mode, hiding what the image has there), and a COPY into `/sys` and the rebase
/// that brings it into the next step's root go into the image, never through that symlink
/// into the host directory. The second build is the escape this stopped: a root parked
/// with the symlink was rebased onto another stage's COPY into `/sys`, and the rebase,
/// working on host paths, wrote that file into the host directory.
#[test]
fn forced_unprivileged_step_replacing_sys_with_a_host_symlink_leaves_no_trace() {
    let s = TestStore::new();
    if s.busybox("busybox").is_none() {
        return;
    }
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("marker"), "host\n").expect("marker");
    let same_stage = format!(
        "FROM busybox
RUN rm -rf /sys && ln -s {host} /sys && test -L /sys && mkdir /dev/junk
RUN test -d /sys && test ! -L /sys && test -z \"$(ls -A /sys)\" && test ! -e /dev/junk
COPY f /sys/d/f
RUN test -d /sys && test ! -L /sys && test ! -e /sys/d && echo hidden > /seen
",
        host = host.path().display()
    );
    let across_stages = format!(
        "FROM busybox AS clean
COPY f /sys/d/f
FROM busybox AS dirty
RUN rm -rf /sys && ln -s {host} /sys
FROM clean
COPY --from=dirty /etc/passwd /p
RUN echo after > /after
",
        host = host.path().display()
    );
    let p = project(&[
        ("Dockerfile", &same_stage),
        ("Dockerfile.stages", &across_stages),
        ("f", "copied\n"),
    ]);
    for (file, tag) in [("Dockerfile.stages", "stages"), ("Dockerfile", "sys")] {
        let args = [
            "--isolation",
            "unprivileged",
            "build",
            "-f",
            file,
            "-t",
            tag,
            ".",
        ];
        assert_ok(&kiln_env(&s.root(), p.path(), &args, &[]), file);
        let mut left: Vec<String> = std::fs::read_dir(host.path())
            .expect("host dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["marker"], "{file}: the host directory was written");
        assert_eq!(
            std::fs::read_to_string(host.path().join("marker")).expect("marker"),
            "host\n"
        );
        let layers = layer_entries(&s.root(), tag);
        let names: Vec<&str> = layers.iter().flatten().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"sys/d/f"), "{file}: {names:?}");
        // The step's symlink is in no layer: `/sys` is a mount point in the root mode.
        assert!(
            !names.iter().any(|n| *n == "sys" || n.starts_with("dev/")),
            "{file}: {names:?}"
        );
    }
    let layers = layer_entries(&s.root(), "sys");
    assert!(
        layers
            .iter()
            .flatten()
            .any(|(n, d)| n == "seen" && d == b"hidden\n"),
        "{layers:?}"
    );
}
