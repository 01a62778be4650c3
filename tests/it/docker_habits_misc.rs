//! Docker habits, beside Docker (issue 18, items 8 to 11): exit codes of a refused command
//! line and of a failed build, ports on IPv6, the host's name on the host's network,
//! `rmi [-f]` of an image a container uses, relative bind paths, the miss reason of a retried
//! failed build, and image sizes. Each compares kiln with the installed Docker; without
//! Docker (or root, for containers) a test fails under CI and skips loudly elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::containers::{running, Env};
use crate::util::{find_tool, require, stderr, stdout, unique_name, Kiln};

/// `docker` whose daemon answers, or `None` after reporting it missing.
fn docker_daemon() -> Option<PathBuf> {
    let Some(docker) = find_tool("docker") else {
        require::missing("docker (not installed)");
        return None;
    };
    let up = Command::new(&docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        require::missing("a reachable docker daemon (scripts/start-dockerd.sh starts one)");
        return None;
    }
    Some(docker)
}

fn docker(d: &Path, args: &[&str]) -> Output {
    Command::new(d).args(args).output().expect("running docker")
}

fn docker_in(d: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(d)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running docker")
}

/// Docker containers and images a test made, removed when it ends, even by a panic.
struct DockerCleanup {
    docker: PathBuf,
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&self.docker, &["rm", "-f", c]);
        }
        for i in self.images.iter().rev() {
            let _ = docker(&self.docker, &["rmi", "-f", i]);
        }
    }
}

/// Puts kiln's image `image` into Docker as a fresh name (through `kiln save` and `docker
/// load`, as image_interop.rs does); returns that name.
fn into_docker(e: &Env, d: &Path, image: &str, cleanup: &mut DockerCleanup) -> String {
    let name = format!("{}:1", unique_name("habits"));
    e.ok(&["tag", image, &name]);
    let tar = e
        .dir()
        .join(format!("{}.tar", name.replace(['/', ':'], "-")));
    e.ok(&["save", "-o", tar.to_str().unwrap(), &name]);
    cleanup.images.push(name.clone());
    let o = docker(d, &["load", "-i", tar.to_str().unwrap()]);
    assert!(o.status.success(), "docker load: {}", stderr(&o));
    e.ok(&["rmi", &name]);
    name
}

/// The command a usage error points at: `X` in `Run 'X --help' for more information`
/// (Docker writes `See` for some), with the program name dropped.
fn help_hint(text: &str) -> Option<String> {
    let line = text.lines().rev().find(|l| l.contains(" --help'"))?;
    let cmd = line.split('\'').nth(1)?.strip_suffix(" --help")?;
    Some(cmd.split_once(' ').map_or("", |(_, rest)| rest).to_string())
}

/// An unknown flag or a bad flag value exits 125, too few or too many arguments and an
/// unknown command exit 1, each with Docker's first words and a hint naming the command
/// being parsed (clap's tips named `-- --nosuch`, which would make it the image).
#[test]
fn usage_errors_exit_as_docker_with_a_hint_naming_the_command() {
    let k = Kiln::new();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["run", "--nosuch", "busybox"],
            125,
            "unknown flag: --nosuch",
        ),
        (&["ps", "--nosuch"], 125, "unknown flag: --nosuch"),
        (&["images", "-z"], 125, "unknown shorthand flag: 'z' in -z"),
        (&["--nosuch", "ps"], 125, "unknown flag: --nosuch"),
        (&["run", "--network"], 125, ""),
        (&["ps", "--format"], 125, ""),
        (&["run", "--memory", "abc", "busybox"], 125, ""),
        (&["nosuchcmd"], 1, "kiln: unknown command: kiln nosuchcmd"),
        (
            &["container", "nosuch"],
            1,
            "kiln: unknown command: kiln container nosuch",
        ),
        (&["ps", "extra"], 1, "kiln: 'kiln ps' accepts no arguments"),
        (
            &["images", "a", "b"],
            1,
            "kiln: 'kiln images' requires at most 1 argument",
        ),
        (&["run"], 1, "kiln: 'kiln run' requires at least 1 argument"),
        (&["rmi"], 1, "kiln: 'kiln rmi' requires at least 1 argument"),
    ];
    let mut kiln_results = Vec::new();
    for (args, code, start) in cases {
        let o = k.run(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(*code), "kiln {args:?}: {err}");
        assert!(err.starts_with(start), "kiln {args:?}: {err}");
        assert!(!err.contains("tip:"), "kiln {args:?}: {err}");
        kiln_results.push(err);
    }
    // The flag parser is Docker's CLI's own: no daemon needed to compare.
    let Some(d) = require::tool("docker", "Docker's CLI, package docker.io") else {
        return;
    };
    for ((args, code, _), kiln_err) in cases.iter().zip(&kiln_results) {
        let o = docker(&d, args);
        let docker_err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(*code),
            "docker {args:?}: {docker_err}"
        );
        // `-m abc` is refused by kiln's own check after clap, without a usage hint.
        if !kiln_err.starts_with("kiln: invalid argument") {
            assert_eq!(
                help_hint(kiln_err),
                help_hint(&docker_err),
                "{args:?}:\nkiln: {kiln_err}\ndocker: {docker_err}"
            );
        }
    }
}

/// `kiln build` exits 1 when a step fails, as BuildKit (`docker buildx build`) does, with the
/// command's own code in the message (README, "Exit codes"). The retry misses the failed
/// step because the first build never stored it: it used to say "the cache entry is gone
/// (pruned, or built with --no-cache)".
#[test]
fn a_failed_build_exits_1_and_its_retry_says_why_it_misses() {
    let Some(e) = Env::new() else { return };
    let ctx = e.dir().join("ctx-fail");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\nRUN echo one > /one\nRUN exit 3\n",
    )
    .unwrap();
    let build = || {
        e.command(&["build", "--progress=plain", ctx.to_str().unwrap()])
            .output()
            .expect("kiln build")
    };
    let first = build();
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("did not complete successfully: exit code: 3"),
        "{}",
        stderr(&first)
    );
    let retry = build();
    let err = stderr(&retry);
    assert_eq!(retry.status.code(), Some(1), "{err}");
    assert!(err.contains("#2 CACHED"), "{err}");
    assert!(
        err.contains("#3 cache miss: the last build stored no result for it"),
        "{err}"
    );
    assert!(!err.contains("cache entry is gone"), "{err}");
}

fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| !s.trim().is_empty())
}

/// A port nothing listens on now (on every address).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("[::]:0")
        .or_else(|_| std::net::TcpListener::bind("0.0.0.0:0"))
        .expect("a free port");
    l.local_addr().expect("address").port()
}

/// The PORTS column with the host port written as `P`.
fn ports_shape(ports: &str, port: u16) -> String {
    ports.trim().replace(&port.to_string(), "P")
}

const WEB: &str = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www";

/// `-p P:80` listens on `[::]` too when the host has IPv6, and `ps` shows both bindings in
/// Docker's shape: `0.0.0.0:P->80/tcp, [::]:P->80/tcp`.
#[test]
fn published_ports_listen_on_ipv6_too_and_ps_shows_both() {
    let Some(e) = Env::new() else { return };
    let port = free_port();
    let spec = format!("{port}:80");
    e.ok(&[
        "run",
        "-d",
        "--name",
        "web6",
        "-p",
        &spec,
        "busybox:local",
        "sh",
        "-c",
        WEB,
    ]);
    e.wait_for("web6", 10, running);
    let ports = e.ok(&["ps", "--filter", "name=web6", "--format", "{{.Ports}}"]);
    let want = if host_has_ipv6() {
        "0.0.0.0:P->80/tcp, [::]:P->80/tcp"
    } else {
        "0.0.0.0:P->80/tcp"
    };
    assert_eq!(ports_shape(&ports, port), want);
    assert!(crate::containers::http_get(port, "/").contains("hello"));
    if host_has_ipv6() {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("::1", port)).expect("[::1] connects");
        write!(s, "GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.contains("hello"), "{body}");
    }
    e.ok(&["rm", "-f", "web6"]);
    let Some(d) = docker_daemon() else { return };
    let mut cleanup = DockerCleanup {
        docker: d.clone(),
        containers: Vec::new(),
        images: Vec::new(),
    };
    let image = into_docker(&e, &d, "busybox:local", &mut cleanup);
    let name = unique_name("web6").replace('/', "-");
    cleanup.containers.push(name.clone());
    let port = free_port();
    let spec = format!("{port}:80");
    let o = docker(
        &d,
        &[
            "run", "-d", "--name", &name, "-p", &spec, &image, "sh", "-c", WEB,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let filter = format!("name={name}");
    let o = docker(&d, &["ps", "--filter", &filter, "--format", "{{.Ports}}"]);
    assert_eq!(ports_shape(&stdout(&o), port), want, "Docker's PORTS");
}

/// With `--network host` the container's name is the host's (unless `--hostname`), as Docker.
#[test]
fn the_host_network_comes_with_the_hosts_name() {
    let Some(e) = Env::new() else { return };
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let script = "hostname; cat /etc/hostname";
    let names = e.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox:local",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(names, format!("{host}\n{host}\n"));
    let own = e.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--hostname",
        "box",
        "busybox:local",
        "hostname",
    ]);
    assert_eq!(own, "box\n");
    let Some(d) = docker_daemon() else { return };
    let mut cleanup = DockerCleanup {
        docker: d.clone(),
        containers: Vec::new(),
        images: Vec::new(),
    };
    let image = into_docker(&e, &d, "busybox:local", &mut cleanup);
    let o = docker(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            &image,
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(stdout(&o), names, "Docker: {}", stderr(&o));
}

/// `rmi NAME` of the only name of an image a container uses refuses, with Docker's message
/// and exit 1; `rmi -f NAME` removes the name only and the image stays for the container,
/// which still starts. Docker's containerd image store keeps it too; its older graph-driver
/// store (Docker 20.10's daemon) deletes a stopped container's image there, so for the
/// stopped case only the `Untagged:` line is compared.
#[test]
fn rmi_of_an_image_a_container_uses() {
    let Some(e) = Env::new() else { return };
    e.build("used:1", "FROM busybox:local\nLABEL habits=rmi\n", &[]);
    let image_id = e.inspect_image_id("used:1");
    let id = e.ok(&["create", "--name", "user", "used:1", "true"]);
    let id = id.trim().to_string();
    let o = e.run(&["rmi", "used:1"]);
    assert_eq!(o.status.code(), Some(1));
    let refused = format!(
        "conflict: unable to remove repository reference \"used:1\" (must force) - container {} is using its referenced image {}",
        &id[..12],
        &image_id[7..19]
    );
    assert_eq!(stderr(&o).trim(), format!("Error: {refused}"));
    assert_eq!(e.ok(&["rmi", "-f", "used:1"]), "Untagged: used:1\n");
    // The image stays, nameless, and the container starts from it.
    assert_eq!(e.inspect_image_id(&image_id), image_id);
    assert_eq!(e.ok(&["start", "-a", "user"]), "");
    // A running container: the same.
    e.ok(&["tag", &image_id, "used:2"]);
    e.ok(&["run", "-d", "--name", "busy", "used:2", "sleep", "60"]);
    e.wait_for("busy", 10, running);
    assert_eq!(e.run(&["rmi", "used:2"]).status.code(), Some(1));
    assert_eq!(e.ok(&["rmi", "-f", "used:2"]), "Untagged: used:2\n");
    assert_eq!(e.inspect_image_id(&image_id), image_id);
    e.ok(&["rm", "-f", "busy", "user"]);

    let Some(d) = docker_daemon() else { return };
    let mut cleanup = DockerCleanup {
        docker: d.clone(),
        containers: Vec::new(),
        images: Vec::new(),
    };
    e.ok(&["tag", &image_id, "used:3"]);
    // Loaded, the image keeps its ID: removed by it when the containers are gone.
    cleanup.images.push(image_id.clone());
    for running_container in [false, true] {
        let image = into_docker(&e, &d, "used:3", &mut cleanup);
        let name = unique_name("user").replace('/', "-");
        cleanup.containers.push(name.clone());
        let args: &[&str] = if running_container {
            &["run", "-d", "--name", &name, &image, "sleep", "60"]
        } else {
            &["create", "--name", &name, &image, "true"]
        };
        let o = docker(&d, args);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = docker(&d, &["rmi", &image]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "conflict: unable to remove repository reference \"{image}\" (must force) - container "
            )) && err.contains("is using its referenced image"),
            "{err}"
        );
        let o = docker(&d, &["rmi", "-f", &image]);
        assert!(o.status.success(), "{}", stderr(&o));
        let first = stdout(&o).lines().next().unwrap_or("").to_string();
        assert_eq!(first, format!("Untagged: {image}"));
        if running_container {
            assert_eq!(stdout(&o), format!("Untagged: {image}\n"));
        }
    }
}

/// `-v ./data:/b` binds `data` of the current directory (Docker 23+), as does `--mount
/// type=bind,source=./data`; `-v data:/b` stays a named volume.
#[test]
fn relative_bind_paths_are_taken_from_the_current_directory() {
    let Some(e) = Env::new() else { return };
    let data = e.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "from the host\n").unwrap();
    // Env runs kiln in e.dir().
    let read = [
        "run",
        "--rm",
        "-v",
        "./data:/b:ro",
        "busybox:local",
        "cat",
        "/b/f",
    ];
    assert_eq!(e.ok(&read), "from the host\n");
    let mount = [
        "run",
        "--rm",
        "--mount",
        "type=bind,source=./data,target=/b",
        "busybox:local",
        "cat",
        "/b/f",
    ];
    assert_eq!(e.ok(&mount), "from the host\n");
    let named = ["run", "--rm", "-v", "data:/b", "busybox:local", "ls", "/b"];
    assert_eq!(e.ok(&named), "", "a fresh named volume, not the directory");
    let Some(d) = docker_daemon() else { return };
    let mut cleanup = DockerCleanup {
        docker: d.clone(),
        containers: Vec::new(),
        images: Vec::new(),
    };
    let image = into_docker(&e, &d, "busybox:local", &mut cleanup);
    for args in [&read[..], &mount[..]] {
        let mut args = args.to_vec();
        let at = args.iter().position(|a| *a == "busybox:local").unwrap();
        args[at] = &image;
        let o = docker_in(&d, e.dir(), &args);
        assert_eq!(
            stdout(&o),
            "from the host\n",
            "Docker {args:?}: {}",
            stderr(&o)
        );
    }
}

/// busybox's size agrees with `docker images` for the same tar. Docker counts what its
/// storage driver measured after unpacking each layer (overlay2: the size of every
/// non-directory entry, a hard-linked inode once): the file bytes plus each symlink's target
/// length (`busybox` for every applet). kiln counted the stored tar instead, whose 512-byte
/// header per entry and padding made 2.13MB of Docker's 1.98MB; it now counts the same files.
#[test]
fn image_sizes_count_what_docker_counts() {
    let k = Kiln::new();
    let name = format!("{}:1", unique_name("size"));
    k.import_busybox(&name, &["-c", "CMD [\"sh\"]"]);
    let kiln_human = k.ok(&["images", "--format", "{{.Size}}", &name]);
    let kiln_bytes = k.inspect(&name)["Size"].as_u64().unwrap();
    let history = k.ok(&["history", "--format", "{{.Size}}", &name]);
    assert_eq!(history.trim(), kiln_human.trim());
    let df = k.ok(&["system", "df"]);
    assert!(
        df.lines()
            .any(|l| l.starts_with("Images") && l.contains(kiln_human.trim())),
        "{df}"
    );
    // The tar is bigger than its files: the old count.
    let tar = crate::util::busybox_rootfs(&k.path(""));
    assert!(std::fs::metadata(&tar).unwrap().len() > kiln_bytes + 100_000);
    let Some(d) = docker_daemon() else { return };
    let archive = k.path("size.tar");
    k.ok(&["save", "-o", archive.to_str().unwrap(), &name]);
    let _cleanup = DockerCleanup {
        docker: d.clone(),
        containers: Vec::new(),
        images: vec![name.clone()],
    };
    let o = docker(&d, &["load", "-i", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = docker(&d, &["images", "--format", "{{.Size}}", &name]);
    assert_eq!(stdout(&o), kiln_human, "docker images");
    let o = docker(&d, &["image", "inspect", "--format", "{{.Size}}", &name]);
    assert_eq!(
        stdout(&o).trim(),
        kiln_bytes.to_string(),
        "docker image inspect"
    );
    let o = docker(&d, &["history", "--format", "{{.Size}}", &name]);
    assert_eq!(stdout(&o), history, "docker history");
}

impl Env {
    /// The ID (`sha256:…`) of an image of this store.
    fn inspect_image_id(&self, name: &str) -> String {
        let out = self.ok(&["image", "inspect", "--format", "{{.Id}}", name]);
        out.trim().to_string()
    }
}
