//! kiln's own image: the repository's `Dockerfile` built by kiln (a copy of the test binary
//! given as the `bin` context, a Debian minbase as `BASE`), loaded into Docker and run there
//! with Docker's default settings; and the README's "kiln in CI" command, `docker run … kiln
//! build --push` against a loopback registry with basic auth, its cache shared through the
//! registry by a second runner.
//!
//! Needs root, debootstrap, Docker and `docker-registry` (`util::require`: a failure under CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::build_cache_export::count;
use crate::registry::Registry;
use crate::util::{find_tool, require, run_tool, stderr, stdout, unique_name, TestStore};

/// The repository's root: the build context of kiln's image.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `docker` with a reachable daemon; reports it missing otherwise.
pub(crate) fn docker() -> Option<PathBuf> {
    let docker = require::tool("docker", "apt-get install docker.io")?;
    let up = Command::new(&docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    require::require(
        up,
        "a reachable docker daemon (scripts/start-dockerd.sh starts one)",
    )
    .then_some(docker)
}

/// Runs docker with `args`.
pub(crate) fn docker_run(docker: &Path, args: &[&str]) -> Output {
    Command::new(docker)
        .args(args)
        .output()
        .expect("running docker")
}

/// Removes a docker image when dropped, even if the test failed.
pub(crate) struct Removes<'a>(pub(crate) &'a Path, pub(crate) String);

impl Drop for Removes<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0).args(["rmi", "-f", &self.1]).output();
    }
}

/// Prefix of the names kiln's image gets in Docker; the process id follows it.
const PREFIX: &str = "kiln-it/own-image";

/// Removes the images earlier test processes (no longer running) left in Docker: the image
/// is shared by this file's tests, so no one test removes it.
fn remove_stale_images(docker: &Path) {
    let filter = format!("reference={PREFIX}-*");
    let out = run_tool(Command::new(docker).args([
        "images",
        "--filter",
        &filter,
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]));
    for name in out.lines() {
        let pid = name
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.split('-').next());
        if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
            let _ = Command::new(docker).args(["rmi", "-f", name]).output();
        }
    }
}

/// kiln's image, built once per test process with kiln from this repository's Dockerfile and
/// loaded into Docker: its name there, or `None` after reporting what is missing.
pub(crate) fn kiln_image() -> Option<String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    let image = IMAGE.get_or_init(|| {
        let docker = docker().ok_or("docker")?;
        let s = TestStore::new();
        s.debian("debian:local").ok_or("a Debian minbase")?;
        remove_stale_images(&docker);
        Ok(build_and_load(&s, &docker))
    });
    match image {
        Ok(name) => Some(name.clone()),
        Err(what) => {
            require::missing(what);
            None
        }
    }
}

/// `kiln build` of the repository with the test binary as the `bin` context, then `kiln
/// save` and `docker load`; the image's name.
fn build_and_load(s: &TestStore, docker: &Path) -> String {
    let bin = s.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_kiln"));
    // The debug binary without its debug info (a fifth of the size): the same code, a
    // smaller layer to write and load. CI never builds a release binary for this.
    let stripped = find_tool("strip").is_some_and(|strip| {
        Command::new(strip)
            .arg("--strip-debug")
            .arg("-o")
            .arg(bin.join("kiln"))
            .arg(exe)
            .status()
            .is_ok_and(|st| st.success())
    });
    if !stripped {
        std::fs::copy(exe, bin.join("kiln")).unwrap();
    }
    let name = format!("{}:test", unique_name("own-image"));
    let bin_context = format!("bin={}", bin.display());
    let b = s.kiln(
        repo(),
        &[
            "build",
            "--progress=plain",
            "--build-context",
            &bin_context,
            "--build-arg",
            "BASE=debian:local",
            "-t",
            &name,
            ".",
        ],
        None,
    );
    assert!(b.status.success(), "{}", stderr(&b));
    let archive = s.dir.path().join("kiln-image.tar");
    let saved = s.kiln(
        repo(),
        &["save", "-o", archive.to_str().unwrap(), &name],
        None,
    );
    assert!(saved.status.success(), "{}", stderr(&saved));
    let out = run_tool(Command::new(docker).args(["load", "-i", archive.to_str().unwrap()]));
    assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
    name
}

#[test]
fn kilns_image_builds_with_kiln_and_runs_unprivileged_in_docker() {
    let Some(image) = kiln_image() else { return };
    let docker = docker().unwrap();

    let v = docker_run(&docker, &["run", "--rm", &image, "version"]);
    assert!(v.status.success(), "{}", stderr(&v));
    let version = stdout(&v);
    assert!(
        version
            .lines()
            .any(|l| l.trim() == format!("Version:           {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    // Docker's default profile allows neither user namespaces nor mounts.
    let info = docker_run(&docker, &["run", "--rm", &image, "info"]);
    assert!(info.status.success(), "{}", stderr(&info));
    let info = stdout(&info);
    assert!(info.contains("Isolation: unprivileged ("), "{info}");
    assert!(info.contains("Root Dir: /var/lib/kiln\n"), "{info}");

    let config: serde_json::Value = serde_json::from_str(&run_tool(Command::new(&docker).args([
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        &image,
    ])))
    .unwrap();
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["kiln"]),
        "{config}"
    );
    assert_eq!(config["WorkingDir"], "/workspace", "{config}");
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .contains(&"KILN_ROOT=/var/lib/kiln".into()),
        "{config}"
    );
    assert!(config["Volumes"]["/var/lib/kiln"].is_object(), "{config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "kiln");
    // The Dockerfile's default VERSION follows Cargo.toml's.
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");

    // The runtime tools, Debian's CA bundle from its package, the rootless user's ids.
    let tools = docker_run(
        &docker,
        &[
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            &image,
            "-c",
            "set -e; pasta --version >/dev/null; git --version; command -v newuidmap; command -v newgidmap; \
             dpkg-query -W -f '${Status}\\n' ca-certificates; \
             test -s /etc/ssl/certs/ca-certificates.crt; grep '^kiln:' /etc/subuid; \
             test -x /usr/local/bin/kiln; test ! -e /usr/share/man/man1/git.1.gz",
        ],
    );
    assert!(
        tools.status.success(),
        "{}{}",
        stdout(&tools),
        stderr(&tools)
    );
    let out = stdout(&tools);
    assert!(out.contains("git version "), "{out}");
    assert!(
        out.contains("/usr/bin/newuidmap\n/usr/bin/newgidmap\n"),
        "{out}"
    );
    assert!(out.contains("install ok installed\n"), "{out}");
    assert!(out.contains("kiln:100000:65536\n"), "{out}");
}

/// The CI example's project: two stages from a busybox base in the registry, a context file.
/// A step that runs prints `builder-42` or `final-42` (not in the progress' step titles).
const APP: &str = "FROM {BASE} AS build\n\
                   RUN mkdir /out && echo built > /out/msg && echo builder-$((40+2))\n\
                   COPY src.txt /out/\n\
                   FROM {BASE}\n\
                   COPY --from=build /out /app\n\
                   RUN cat /app/msg /app/src.txt > /app/all && echo final-$((40+2))\n\
                   CMD [\"cat\", \"/app/all\"]\n";

/// `docker run` of kiln's image as the README's "kiln in CI" shows it: the project at
/// /workspace, Docker's credentials read-only at /root/.docker, the host's network (the
/// registry is on the host's loopback), no other flag.
fn ci_build(docker: &Path, image: &str, ctx: &Path, cfg: &Path, build: &[&str]) -> Output {
    let ws = format!("{}:/workspace", ctx.display());
    let creds = format!("{}:/root/.docker:ro", cfg.display());
    let mut args = vec![
        "run",
        "--rm",
        "-v",
        &ws,
        "-v",
        &creds,
        "--network",
        "host",
        image,
        "build",
    ];
    args.extend_from_slice(build);
    args.push("/workspace");
    docker_run(docker, &args)
}

// Depends on the unprivileged mode (building inside a default container), the issue's
// acceptance test: until it exists, the first `docker run … build` fails.
#[test]
fn ci_example_builds_pushes_and_shares_its_cache_from_a_default_container() {
    let Some(image) = kiln_image() else { return };
    let docker = docker().unwrap();
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let host = reg.host();
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let creds = tempfile::tempdir().unwrap();
    let cfg = creds.path();
    let kiln = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_ROOT", s.root())
            .env("DOCKER_CONFIG", cfg)
            .output()
            .unwrap();
        assert!(o.status.success(), "kiln {args:?}: {}", stderr(&o));
    };
    // The runner's credentials (config.json, as `docker login` writes it) and its base image.
    kiln(&["login", "-u", "kiln", "-p", "s3cret", &host]);
    let base = format!("{host}/base/busybox:1");
    kiln(&["tag", "busybox:local", &base]);
    kiln(&["push", &base]);
    let ctx = s.dir.path().join("project");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), APP.replace("{BASE}", &base)).unwrap();
    std::fs::write(ctx.join("src.txt"), "source\n").unwrap();

    // The README's command.
    let app = format!("{host}/app:1");
    let o = ci_build(&docker, &image, &ctx, cfg, &["--push", "-t", &app]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let _pulled = Removes(&docker, app.clone());
    let config = cfg.display().to_string();
    run_tool(Command::new(&docker).args(["--config", &config, "pull", &app]));
    let out = run_tool(Command::new(&docker).args(["run", "--rm", &app]));
    assert_eq!(out, "built\nsource\n");

    // A fleet: each runner imports the registry's cache and exports to it; the second runner
    // (a fresh container, an empty store) runs no step.
    let cache = format!("{host}/app:buildcache");
    let from = format!("type=registry,ref={cache}");
    let to = format!("type=registry,ref={cache},mode=max");
    let flags = [
        "--push",
        "-t",
        &app,
        "--cache-from",
        &from,
        "--cache-to",
        &to,
        "--progress=plain",
    ];
    let first = ci_build(&docker, &image, &ctx, cfg, &flags);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains(&format!("exporting cache to registry {cache} done (")),
        "{}",
        stderr(&first)
    );
    let second = ci_build(&docker, &image, &ctx, cfg, &flags);
    let err = stderr(&second);
    assert!(second.status.success(), "{err}");
    assert_eq!(
        count(&second, &format!("CACHED (from registry {cache})")),
        4,
        "{err}"
    );
    assert_eq!(count(&second, "cache miss:"), 0, "{err}");
    assert!(
        !err.contains("builder-42") && !err.contains("final-42"),
        "{err}"
    );
    // The first pull's image (other timestamps), so it is not left behind untagged.
    run_tool(Command::new(&docker).args(["rmi", &app]));
    run_tool(Command::new(&docker).args(["--config", &config, "pull", &app]));
    let out = run_tool(Command::new(&docker).args(["run", "--rm", &app]));
    assert_eq!(out, "built\nsource\n");
}
