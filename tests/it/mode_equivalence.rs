//! The three isolation modes side by side: root on the host, rootless as a user with
//! subordinate ids, and unprivileged inside a default `docker run` of kiln's own image.
//! The same Dockerfile gives the same image in each (same diffIDs and image ID with
//! `SOURCE_DATE_EPOCH`), and in each a RUN step cannot write kiln's binary, its store, the
//! registry credentials, a `--secret` file or the `--output` destination, nor find another
//! stage's secret. (`tests/it/unprivileged.rs` runs the same checks with the unprivileged
//! mode forced on the host.)
//!
//! Needs root, busybox, Docker, `newuidmap` and `runuser` (`util::require`: a failure under CI).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::own_image::{docker, kiln_image};
use crate::rootless::{ok, TestUser};
use crate::util::{busybox_rootfs, require};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Two stages: the first creates, `chown`s, links, copies from the context and deletes; the
/// last copies from it and from the context with `--chown`, deletes base files and replaces a
/// base directory (an opaque directory in overlay terms). That directory, `/tmp`, is empty
/// in the base: the root mode's layer writer leaves out an opaque marker that hides nothing,
/// so the unprivileged mode's diff must not write one either.
const EQUIV: &str = "FROM busybox AS build
RUN mkdir -p /out/sub && echo one > /out/a && echo two > /out/sub/b && chown 1000:1000 /out/a \
    && chown -R 65534:65534 /out/sub && ln -s a /out/link && chmod 0750 /out/sub
COPY ctx.txt /out/
RUN rm /out/sub/b && echo three > /out/c && chmod 0640 /out/c && rm /etc/group
FROM busybox
COPY --from=build /out /app
COPY --chown=1000:1000 ctx.txt /home/ctx.txt
RUN rm /bin/vi && rm -r /tmp && mkdir /tmp && chmod 1777 /tmp && touch /tmp/new \
    && chown 1000:65534 /tmp/new && mkdir -p /var/empty && rmdir /var/empty
";

/// `RootFS.Layers` and `Id` from the output of `kiln image inspect`.
fn layers_and_id(inspect: &str) -> (Vec<String>, String) {
    let v: serde_json::Value = serde_json::from_str(inspect)
        .unwrap_or_else(|e| panic!("image inspect output ({e}): {inspect}"));
    let layers = v[0]["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|l| l.as_str().expect("a diffID").to_string())
        .collect();
    (layers, v[0]["Id"].as_str().expect("Id").to_string())
}

/// Root on the host: `kiln --isolation root` with the store `store`, in `cwd`.
fn root_kiln(store: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(KILN)
        .arg("--isolation")
        .arg("root")
        .args(args)
        .current_dir(cwd)
        .env("KILN_ROOT", store)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running kiln")
}

/// `docker run --rm` of kiln's image with Docker's default settings, running `script` with
/// `sh` and the bind mounts `binds` (host path, container path).
fn in_docker(image: &str, binds: &[(&Path, &str)], env: &[&str], script: &str) -> Output {
    let docker = docker().expect("docker was found before");
    let mut c = Command::new(docker);
    c.args(["run", "--rm", "--entrypoint", "sh"]);
    for (host, ctr) in binds {
        c.arg("-v").arg(format!("{}:{ctr}", host.display()));
    }
    for e in env {
        c.args(["-e", e]);
    }
    c.args([image, "-c", script]).output().expect("docker run")
}

/// A directory owned by `uid` (mode 0755).
fn user_dir(path: &Path, uid: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, PermissionsExt::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// Whether everything the three modes need is here; reports what is missing.
fn three_modes_available() -> bool {
    require::root()
        && require::busybox()
        && require::tool("newuidmap", "apt-get install uidmap").is_some()
        && require::tool("runuser", "apt-get install util-linux").is_some()
}

#[test]
fn root_rootless_and_unprivileged_in_docker_build_the_same_image() {
    if !three_modes_available() {
        return;
    }
    let Some(image) = kiln_image() else { return };
    // Declared first, dropped last: the user's clean-up runs kiln on its store.
    let dir = tempfile::tempdir().expect("tempdir");
    let user = TestUser::create("e");
    let uid = user.uid();
    user_dir(dir.path(), uid);
    let ctx = user_dir(&dir.path().join("ctx"), uid);
    std::fs::write(ctx.join("Dockerfile"), EQUIV).unwrap();
    std::fs::write(ctx.join("ctx.txt"), "from the context\n").unwrap();
    // One base for all: the same tarball imported by each mode's `kiln import`.
    std::fs::copy(busybox_rootfs(dir.path()), ctx.join("busybox.tar")).unwrap();
    for f in ["Dockerfile", "ctx.txt", "busybox.tar"] {
        std::fs::set_permissions(ctx.join(f), PermissionsExt::from_mode(0o644)).unwrap();
    }
    let epoch = [("SOURCE_DATE_EPOCH", "0")];
    let build = ["build", "-q", "--network", "none", "-t", "eq", "."];

    let store = dir.path().join("root-store");
    ok(
        &root_kiln(&store, &ctx, &["import", "busybox.tar", "busybox"], &epoch),
        "root import",
    );
    ok(&root_kiln(&store, &ctx, &build, &epoch), "root-mode build");
    let root = layers_and_id(&ok(
        &root_kiln(&store, &ctx, &["image", "inspect", "eq"], &[]),
        "root inspect",
    ));

    let home = user_dir(&dir.path().join("home"), uid);
    let as_user = |args: &[&str]| user.kiln_with(Path::new(KILN), &home, &ctx, args, &epoch);
    let info = ok(&as_user(&["info"]), "rootless info");
    assert!(info.contains("Isolation: rootless ("), "{info}");
    ok(
        &as_user(&["import", "busybox.tar", "busybox"]),
        "rootless import",
    );
    ok(&as_user(&build), "rootless build");
    let rootless = layers_and_id(&ok(
        &as_user(&["image", "inspect", "eq"]),
        "rootless inspect",
    ));

    let docker_store = dir.path().join("docker-store");
    std::fs::create_dir(&docker_store).unwrap();
    let o = in_docker(
        &image,
        &[(&ctx, "/workspace"), (&docker_store, "/var/lib/kiln")],
        &["SOURCE_DATE_EPOCH=0"],
        "set -e; kiln info | grep -q 'Isolation: unprivileged (' \
         && kiln import busybox.tar busybox >/dev/null \
         && kiln build -q --network none -t eq . >/dev/null && kiln image inspect eq",
    );
    let unprivileged = layers_and_id(&ok(&o, "build inside docker run"));

    assert_eq!(root.0.len(), 4, "base, COPY, COPY, RUN: {root:?}");
    assert_eq!(
        rootless.0, root.0,
        "rootless diffIDs differ from root mode's"
    );
    assert_eq!(
        unprivileged.0, root.0,
        "unprivileged diffIDs differ from root mode's"
    );
    assert_eq!(rootless.1, root.1, "rootless image ID");
    assert_eq!(unprivileged.1, root.1, "unprivileged image ID");
}

/// What a step tries: stage `a` holds a secret while stage `b`, in parallel, writes to the
/// paths kiln keeps (given as build args, as kiln sees them) and searches every file it can
/// reach for the secret.
const ESCAPES: &str = r#"FROM busybox AS a
RUN --mount=type=secret,id=s grep -q TOPSECRET /run/secrets/s && sleep 2
FROM busybox AS b
ARG KILN STORE CONFIG SECRET OUT
RUN for p in "$KILN" "$STORE/pwned" "$CONFIG" "$SECRET" "$OUT/pwned"; do mkdir -p "$(dirname "$p")" && echo pwned > "$p"; done && echo written > /ok
RUN sleep 0.5; for d in /*; do case $d in /dev|/proc|/sys) ;; *) if grep -rl "TOP""SECRET" $d; then exit 1; fi;; esac; done; true
FROM busybox
COPY --from=a /etc/passwd /a
COPY --from=b /ok /ok
"#;

/// The secret's text: a step of another stage must not find it, nor any layer hold it.
const SECRET: &[u8] = b"TOPSECRET-1\n";
const CONFIG: &[u8] = b"{\"auths\":{}}\n";

/// The paths kiln keeps, as the kiln under test sees them.
struct Guarded<'a> {
    kiln: &'a str,
    store: &'a str,
    config: &'a str,
    secret: &'a str,
    out: &'a str,
}

impl Guarded<'_> {
    /// `kiln build` of [`ESCAPES`] in `.` with the secret, the output and the paths as build
    /// args, tagged `esc`.
    fn build_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "build",
            "--progress=plain",
            "--network",
            "none",
            "-f",
            "Escapes",
        ]
        .map(String::from)
        .to_vec();
        args.push("--secret".into());
        args.push(format!("id=s,src={}", self.secret));
        args.push("-o".into());
        args.push(format!("type=local,dest={}", self.out));
        for (k, v) in [
            ("KILN", self.kiln),
            ("STORE", self.store),
            ("CONFIG", self.config),
            ("SECRET", self.secret),
            ("OUT", self.out),
        ] {
            args.push("--build-arg".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(["-t", "esc", "."].map(String::from));
        args
    }
}

/// The host side after the build: nothing kiln keeps changed, the step's own file reached the
/// output, and the saved image holds no secret.
fn assert_untouched(store: &Path, config: &Path, secret: &Path, out: &Path, saved: &Path) {
    assert!(!store.join("pwned").exists(), "a step wrote into the store");
    assert_eq!(
        std::fs::read(config).unwrap(),
        CONFIG,
        "config.json changed"
    );
    assert_eq!(std::fs::read(secret).unwrap(), SECRET, "the secret changed");
    assert!(!out.join("pwned").exists(), "a step wrote into the output");
    assert_eq!(
        std::fs::read(out.join("ok")).expect("/ok exported"),
        b"written\n"
    );
    // `kiln save` writes layers uncompressed: a secret in one would show in the bytes.
    let bytes = std::fs::read(saved).expect("saved image");
    assert!(
        bytes.len() > 1 << 20,
        "saved image is {} bytes",
        bytes.len()
    );
    assert!(
        !bytes.windows(9).any(|w| w == b"TOPSECRET"),
        "the secret reached a layer"
    );
}

/// A project with [`ESCAPES`], the secret and `docker/config.json`, all owned by `uid`.
fn escapes_project(dir: &Path, uid: u32) -> PathBuf {
    let ctx = user_dir(&dir.join("ctx"), uid);
    user_dir(&ctx.join("docker"), uid);
    std::fs::write(ctx.join("Escapes"), ESCAPES).unwrap();
    std::fs::write(ctx.join("secret.txt"), SECRET).unwrap();
    std::fs::write(ctx.join("docker/config.json"), CONFIG).unwrap();
    std::fs::copy(busybox_rootfs(dir), ctx.join("busybox.tar")).unwrap();
    for f in ["Escapes", "secret.txt", "docker/config.json", "busybox.tar"] {
        let p = ctx.join(f);
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&p, PermissionsExt::from_mode(0o644)).unwrap();
    }
    ctx
}

/// Root on the host: the steps run in their own mount namespaces over an overlay.
#[test]
fn root_mode_step_cannot_reach_kiln_store_credentials_secrets_or_output() {
    if !require::root() || !require::busybox() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = escapes_project(dir.path(), 0);
    let store = dir.path().join("store");
    let (config, secret, out) = (
        ctx.join("docker/config.json"),
        ctx.join("secret.txt"),
        dir.path().join("out"),
    );
    let kiln_before = std::fs::read(KILN).expect("kiln binary");
    let docker_config = ctx.join("docker");
    let env = [("DOCKER_CONFIG", docker_config.to_str().unwrap())];
    ok(
        &root_kiln(&store, &ctx, &["import", "busybox.tar", "busybox"], &env),
        "import",
    );
    let s = |p: &Path| p.display().to_string();
    let paths = (s(&store), s(&config), s(&secret), s(&out));
    let g = Guarded {
        kiln: KILN,
        store: &paths.0,
        config: &paths.1,
        secret: &paths.2,
        out: &paths.3,
    };
    let args = g.build_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&root_kiln(&store, &ctx, &args, &env), "root-mode build");
    let saved = dir.path().join("esc.tar");
    let save = ["save", "-o", saved.to_str().unwrap(), "esc"];
    ok(&root_kiln(&store, &ctx, &save, &env), "save");
    assert!(std::fs::read(KILN).unwrap() == kiln_before, "kiln changed");
    assert_untouched(&store, &config, &secret, &out, &saved);
}

/// Rootless: kiln's binary, store, credentials, secret and output all belong to the user, the
/// step's root is the user outside, and still it reaches none of them.
#[test]
fn rootless_step_cannot_reach_kiln_store_credentials_secrets_or_output() {
    if !three_modes_available() {
        return;
    }
    // Declared first, dropped last: the user's clean-up runs kiln on its store.
    let dir = tempfile::tempdir().expect("tempdir");
    let user = TestUser::create("f");
    let uid = user.uid();
    user_dir(dir.path(), uid);
    let ctx = escapes_project(dir.path(), uid);
    let home = user_dir(&dir.path().join("home"), uid);
    let out = user_dir(&dir.path().join("out"), uid);
    // kiln's binary owned by the user, so only the sandbox keeps a step from it.
    let bin_dir = user_dir(&dir.path().join("bin"), uid);
    let bin = bin_dir.join("kiln");
    std::fs::copy(KILN, &bin).unwrap();
    std::os::unix::fs::chown(&bin, Some(uid), Some(uid)).unwrap();
    let kiln_before = std::fs::read(&bin).unwrap();
    let store = home.join(".local/share/kiln");
    let (config, secret) = (ctx.join("docker/config.json"), ctx.join("secret.txt"));
    let docker_config = ctx.join("docker");
    let env = [("DOCKER_CONFIG", docker_config.to_str().unwrap())];
    let run = |args: &[&str]| user.kiln_with(&bin, &home, &ctx, args, &env);
    ok(&run(&["import", "busybox.tar", "busybox"]), "import");
    let s = |p: &Path| p.display().to_string();
    let paths = (s(&bin), s(&store), s(&config), s(&secret), s(&out));
    let g = Guarded {
        kiln: &paths.0,
        store: &paths.1,
        config: &paths.2,
        secret: &paths.3,
        out: &paths.4,
    };
    let args = g.build_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&run(&args), "rootless build");
    let saved = dir.path().join("esc.tar");
    ok(
        &run(&["save", "-o", saved.to_str().unwrap(), "esc"]),
        "save",
    );
    assert!(std::fs::read(&bin).unwrap() == kiln_before, "kiln changed");
    assert_untouched(&store, &config, &secret, &out, &saved);
}

/// Unprivileged, inside a default `docker run` of kiln's image: kiln's binary is the image's
/// (checked inside), the store, credentials, secret and output are bind mounts from the host.
#[test]
fn unprivileged_step_in_docker_cannot_reach_kiln_store_credentials_secrets_or_output() {
    if !require::root() || !require::busybox() {
        return;
    }
    let Some(image) = kiln_image() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = escapes_project(dir.path(), 0);
    let store = dir.path().join("store");
    let out = dir.path().join("out");
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(&out).unwrap();
    let g = Guarded {
        kiln: "/usr/local/bin/kiln",
        store: "/var/lib/kiln",
        config: "/root/.docker/config.json",
        secret: "/workspace/secret.txt",
        out: "/out",
    };
    let build: Vec<String> = g.build_args().iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "set -e; sha256sum /usr/local/bin/kiln > /tmp/kiln.sum; \
         kiln info | grep -q 'Isolation: unprivileged ('; \
         kiln import busybox.tar busybox >/dev/null; kiln {}; kiln save -o /out-saved/esc.tar esc; \
         sha256sum -c /tmp/kiln.sum",
        build.join(" ")
    );
    let saved_dir = dir.path().join("saved");
    std::fs::create_dir(&saved_dir).unwrap();
    let o = in_docker(
        &image,
        &[
            (&ctx, "/workspace"),
            (&store, "/var/lib/kiln"),
            (&ctx.join("docker"), "/root/.docker"),
            (&out, "/out"),
            (&saved_dir, "/out-saved"),
        ],
        &[],
        &script,
    );
    let log = ok(&o, "build inside docker run");
    assert!(log.contains("/usr/local/bin/kiln: OK"), "{log}");
    assert_untouched(
        &store,
        &ctx.join("docker/config.json"),
        &ctx.join("secret.txt"),
        &out,
        &saved_dir.join("esc.tar"),
    );
}
