//! kiln inside `docker run` with Docker's default settings (no `--privileged`, no
//! `--security-opt`), in kiln's own image: a busybox multi-stage project and a Debian one
//! that runs `apt-get install` over HTTP, each pushed to a loopback `docker-registry`, then
//! pulled and run by Docker. And the README's "kiln in CI" section: its `docker run` commands
//! are taken from the README and run, and its Kubernetes and GitLab CI examples are parsed and
//! held to the same command line.
//!
//! Needs root, debootstrap, Docker and `docker-registry` (`util::require`: a failure under CI).
//! Every `docker run` here adds `--network host` and nothing else: the registry listens on
//! the host's loopback only, which a container reaches only on the host's network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::own_image::{docker, docker_run, kiln_image, Removes};
use crate::registry::Registry;
use crate::util::{run_tool, stderr, stdout, TestStore};

/// Runs the kiln binary on the host with the store of `s` and `DOCKER_CONFIG` = `cfg`,
/// asserting success.
fn host_kiln(s: &TestStore, cfg: &Path, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_ROOT", s.root())
        .env("DOCKER_CONFIG", cfg)
        .output()
        .expect("running kiln");
    assert!(o.status.success(), "kiln {args:?}: {}", stderr(&o));
}

/// `docker run --rm --network host -v CTX:/workspace IMAGE build ARGS /workspace`: kiln's
/// image, entrypoint `kiln`, with Docker's default seccomp profile and capabilities.
fn build_in_docker(docker: &Path, image: &str, ctx: &Path, build: &[&str]) -> Output {
    let ws = format!("{}:/workspace", ctx.display());
    let mut args = vec![
        "run",
        "--rm",
        "-v",
        &ws,
        // Only to reach the registry on the host's loopback.
        "--network",
        "host",
        image,
        "build",
        "--progress=plain",
    ];
    args.extend_from_slice(build);
    args.push("/workspace");
    docker_run(docker, &args)
}

/// `docker pull` of `image` (removed from Docker again when the guard drops), then `docker
/// run --rm` of it: its standard output.
fn pull_and_run(docker: &Path, image: &str) -> String {
    run_tool(Command::new(docker).args(["pull", image]));
    run_tool(Command::new(docker).args(["run", "--rm", image]))
}

/// A project directory under `s` with a Dockerfile and other files.
fn project(s: &TestStore, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = s.dir.path().join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    for (file, text) in files {
        std::fs::write(ctx.join(file), text).unwrap();
    }
    ctx
}

/// Three stages over busybox: one builds from the context and `chown`s, one deletes, the last
/// copies from both, deletes a base file and `chown`s; its command prints what it finds.
const BUSYBOX_APP: &str = "FROM {BASE} AS build\n\
    RUN mkdir /out && echo built > /out/msg && chown 1000:1000 /out/msg\n\
    COPY src.txt /out/\n\
    FROM {BASE} AS other\n\
    RUN echo other > /other && rm /bin/vi && rm -r /tmp\n\
    FROM {BASE}\n\
    COPY --from=build /out /app\n\
    COPY --from=other /other /app/other\n\
    RUN rm /bin/vi && mkdir /data && chown 65534:65534 /data \
        && cat /app/msg /app/src.txt /app/other > /app/all\n\
    CMD [\"sh\", \"-c\", \"cat /app/all && stat -c '%n %u:%g' /app/msg /data /app/all \
        && test ! -e /bin/vi && echo no-vi\"]\n";

#[test]
fn busybox_multi_stage_builds_in_a_default_docker_run_pushes_and_runs_in_docker() {
    let Some(image) = kiln_image() else { return };
    let docker = docker().unwrap();
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let host = reg.host();
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let cfg = s.dir.path().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let base = format!("{host}/base/busybox:1");
    host_kiln(&s, &cfg, &["tag", "busybox:local", &base]);
    host_kiln(&s, &cfg, &["push", &base]);
    let ctx = project(
        &s,
        "busybox-app",
        &[
            ("Dockerfile", &BUSYBOX_APP.replace("{BASE}", &base)),
            ("src.txt", "source\n"),
        ],
    );
    let app = format!("{host}/busybox-app:1");
    let o = build_in_docker(&docker, &image, &ctx, &["--push", "-t", &app]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("pushing"), "{err}");
    let _pulled = Removes(&docker, app.clone());
    assert_eq!(
        pull_and_run(&docker, &app),
        "built\nsource\nother\n/app/msg 1000:1000\n/data 65534:65534\n/app/all 0:0\nno-vi\n"
    );
}

/// `apt-get install` over HTTP from Debian's mirror (the sources list of
/// `scripts/debian-rootfs.sh`), the program then run by Docker.
const DEBIAN_APP: &str = "FROM {BASE}\n\
    RUN apt-get update && apt-get install -y --no-install-recommends hello \
        && rm -rf /var/lib/apt/lists/*\n\
    RUN hello > /greeting && test -s /usr/share/doc/hello/copyright\n\
    CMD [\"hello\"]\n";

#[test]
fn debian_apt_get_install_builds_in_a_default_docker_run_pushes_and_runs_in_docker() {
    let Some(image) = kiln_image() else { return };
    let docker = docker().unwrap();
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let host = reg.host();
    let s = TestStore::new();
    if s.debian("debian:local").is_none() {
        return;
    }
    let cfg = s.dir.path().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let base = format!("{host}/base/debian:1");
    host_kiln(&s, &cfg, &["tag", "debian:local", &base]);
    host_kiln(&s, &cfg, &["push", &base]);
    let ctx = project(
        &s,
        "debian-app",
        &[("Dockerfile", &DEBIAN_APP.replace("{BASE}", &base))],
    );
    let app = format!("{host}/debian-app:1");
    let o = build_in_docker(&docker, &image, &ctx, &["--push", "-t", &app]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let _pulled = Removes(&docker, app.clone());
    assert_eq!(pull_and_run(&docker, &app), "Hello, world!\n");
}
