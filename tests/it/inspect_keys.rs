//! `inspect` beside Docker's: the same busybox image loaded into both, and a container run
//! from it with the same flags in both, must give documents with the same keys (recursively,
//! through objects and the elements of arrays), and the values both know must agree. The
//! missing-name and `--type` behaviour is compared too. Needs root (kiln's containers) and a
//! reachable Docker daemon (`scripts/start-dockerd.sh`): a missing one fails under CI and
//! skips loudly elsewhere.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::containers::Env;
use crate::util::{find_tool, require, stderr, stdout, unique_name};

/// Keys kiln prints that the Docker under test may not: each is printed by some Docker
/// version (20.10's API 1.41 or 28's), so scripts written for either find it. A key not
/// listed here that only kiln prints fails the test, as does any key only Docker prints.
const OTHER_VERSIONS: &[&str] = &[
    // Docker 26+ and 28 (endpoint DNS names, gateway priority).
    "NetworkSettings.Networks.*.DNSNames",
    "NetworkSettings.Networks.*.GwPriority",
    // Docker 20.10 (dropped by API 1.44/1.45 daemons).
    "Container",
    "ContainerConfig",
    "VirtualSize",
    "HostConfig.KernelMemory",
    "HostConfig.KernelMemoryTCP",
];

/// `docker` with a reachable daemon; reports it missing otherwise.
fn docker() -> Option<PathBuf> {
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

/// Docker's objects made by a test, removed when it ends (even by a panic).
struct DockerObjects {
    docker: PathBuf,
    containers: Vec<String>,
    images: Vec<String>,
    volumes: Vec<String>,
}

impl DockerObjects {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.docker)
            .args(args)
            .output()
            .expect("running docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "docker {args:?} failed: {}", stderr(&o));
        stdout(&o)
    }

    fn inspect(&self, args: &[&str]) -> Value {
        let mut all = vec!["inspect"];
        all.extend_from_slice(args);
        let v: Value = serde_json::from_str(&self.ok(&all)).expect("docker inspect JSON");
        v[0].clone()
    }
}

impl Drop for DockerObjects {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.run(&["rm", "-f", "-v", c]);
        }
        for i in &self.images {
            let _ = self.run(&["rmi", "-f", i]);
        }
        for v in &self.volumes {
            let _ = self.run(&["volume", "rm", "-f", v]);
        }
    }
}

fn kiln_inspect(e: &Env, args: &[&str]) -> Value {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    let v: Value = serde_json::from_str(&e.ok(&all)).expect("kiln inspect JSON");
    v[0].clone()
}

/// Every key path of `v`: `A.B` for objects, the union of the elements' paths for arrays.
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                key_paths(child, &path, out);
            }
        }
        Value::Array(a) => {
            for child in a {
                key_paths(child, prefix, out);
            }
        }
        _ => {}
    }
}

/// Whether the listed key `pattern` (`*` standing for any one key) is `path` or above it.
fn covers(pattern: &str, path: &str) -> bool {
    let path: Vec<&str> = path.split('.').collect();
    let pattern: Vec<&str> = pattern.split('.').collect();
    pattern.len() <= path.len() && pattern.iter().zip(&path).all(|(a, b)| *a == "*" || a == b)
}

/// Asserts that kiln's document has Docker's keys, and no others but [`OTHER_VERSIONS`]'s
/// (a listed key counts with everything below it).
fn assert_same_keys(what: &str, kiln: &Value, docker: &Value) {
    let (mut k, mut d) = (BTreeSet::new(), BTreeSet::new());
    key_paths(kiln, "", &mut k);
    key_paths(docker, "", &mut d);
    let missing: Vec<_> = d.difference(&k).collect();
    let extra: Vec<_> = k
        .difference(&d)
        .filter(|p| !OTHER_VERSIONS.iter().any(|o| covers(o, p)))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: keys Docker prints and kiln does not: {missing:?}\n\
         keys only kiln prints: {extra:?}\nkiln: {kiln:#}\ndocker: {docker:#}"
    );
}

/// The GraphDriver.Data keys are the storage driver's own: compared only when Docker's
/// driver is overlay2, the one whose layout kiln's mirrors.
fn without_foreign_driver_data(kiln: &mut Value, docker: &Value) {
    if docker["GraphDriver"]["Name"] != "overlay2" {
        kiln["GraphDriver"]["Data"] = docker["GraphDriver"]["Data"].clone();
    }
}

fn assert_values_agree(what: &str, kiln: &Value, docker: &Value, pointers: &[&str]) {
    for p in pointers {
        assert_eq!(
            kiln.pointer(p),
            docker.pointer(p),
            "{what}: {p} differs\nkiln: {kiln:#}\ndocker: {docker:#}"
        );
    }
}

/// A TCP port free on this host now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn image_inspect_has_dockers_keys_for_the_same_image() {
    let Some(e) = Env::new() else { return };
    let Some(docker) = docker() else { return };
    let name = format!("{}:1", unique_name("inspect-keys"));
    e.ok(&["tag", "busybox:local", &name]);
    // Only the name Docker gets too, so RepoTags agree.
    e.ok(&["rmi", "busybox:local"]);
    let tar = e.dir().join("image.tar");
    e.ok(&["save", "-o", tar.to_str().unwrap(), &name]);
    let d = DockerObjects {
        docker,
        containers: vec![],
        images: vec![name.clone()],
        volumes: vec![],
    };
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    let docker_doc = d.inspect(&["--type", "image", &name]);
    for args in [vec![name.as_str()], vec!["--type", "image", &name]] {
        let mut kiln_doc = kiln_inspect(&e, &args);
        without_foreign_driver_data(&mut kiln_doc, &docker_doc);
        assert_same_keys("image inspect", &kiln_doc, &docker_doc);
        assert_values_agree(
            "image inspect",
            &kiln_doc,
            &docker_doc,
            &[
                "/Id",
                "/Config/Cmd",
                "/Config/Env",
                "/Config/Entrypoint",
                "/Config/WorkingDir",
                "/Config/Image",
                "/Config/Tty",
                "/Os",
                "/Architecture",
                "/RootFS",
                "/Parent",
            ],
        );
        // Docker's list may hold the names other tests gave the same image (the same tar
        // loads as the same ID).
        assert_eq!(kiln_doc["RepoTags"], serde_json::json!([name]));
        assert!(
            docker_doc["RepoTags"]
                .as_array()
                .is_some_and(|t| t.contains(&Value::from(name.as_str()))),
            "{docker_doc:#}"
        );
        assert_eq!(kiln_doc["VirtualSize"], kiln_doc["Size"]);
    }
    let image_cmd: Value = serde_json::from_str(&e.ok(&["image", "inspect", &name])).unwrap();
    assert_same_keys(
        "kiln image inspect",
        &image_cmd[0],
        &kiln_inspect(&e, &[&name]),
    );
}

/// The flags both runs get: a published port, a bind mount, a restart policy, an env var and
/// a label. (`--cap-add NET_ADMIN` goes to Docker only: kiln has no `--cap-add`, and its
/// `HostConfig.CapAdd` is `null`.)
fn run_flags<'a>(port: &'a str, bind: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "-d",
        "--name",
        name,
        "-p",
        port,
        "-v",
        bind,
        "--restart",
        "on-failure:2",
        "-e",
        "A=b",
        "-l",
        "k=v",
    ]
}

/// Values both know for the containers of [`container_inspect_has_dockers_keys`].
const CONTAINER_VALUES: &[&str] = &[
    "/Path",
    "/Args",
    "/Name",
    "/State/Status",
    "/State/Running",
    "/State/ExitCode",
    "/Config/Cmd",
    "/Config/Image",
    "/Config/Labels",
    "/Config/ExposedPorts",
    "/Config/Tty",
    "/HostConfig/Binds",
    "/HostConfig/RestartPolicy",
    "/HostConfig/Privileged",
    "/HostConfig/CapDrop",
    "/HostConfig/LogConfig",
    "/HostConfig/ShmSize",
    "/HostConfig/Dns",
    "/HostConfig/ReadonlyRootfs",
    "/HostConfig/AutoRemove",
    "/Mounts",
    "/ExecIDs",
];

#[test]
fn container_inspect_has_dockers_keys() {
    let Some(e) = Env::new() else { return };
    let Some(docker) = docker() else { return };
    let image = format!("{}:1", unique_name("inspect-ctr"));
    e.ok(&["tag", "busybox:local", &image]);
    let tar = e.dir().join("image.tar");
    e.ok(&["save", "-o", tar.to_str().unwrap(), &image]);
    let name = unique_name("ctr").replace('/', "-");
    let d = DockerObjects {
        docker,
        containers: vec![name.clone()],
        images: vec![image.clone()],
        volumes: vec![],
    };
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    let dir = tempfile::tempdir().expect("bind dir");
    let bind = format!("{}:/x", dir.path().display());
    let (kport, dport) = (free_port(), free_port());
    let (kp, dp) = (format!("{kport}:80"), format!("{dport}:80"));
    let mut kiln_args = run_flags(&kp, &bind, &name);
    kiln_args.extend([image.as_str(), "sleep", "1000"]);
    e.ok(&kiln_args);
    let mut docker_args = run_flags(&dp, &bind, &name);
    docker_args.extend(["--cap-add", "NET_ADMIN", image.as_str(), "sleep", "1000"]);
    d.ok(&docker_args);

    for (state, stop) in [("running", false), ("exited", true)] {
        if stop {
            e.ok(&["stop", "-t", "0", &name]);
            d.ok(&["stop", "-t", "0", &name]);
        }
        for args in [
            vec![name.as_str()],
            vec!["-s", "--type", "container", &name],
        ] {
            let mut k = kiln_inspect(&e, &args);
            let dd = d.inspect(&args);
            without_foreign_driver_data(&mut k, &dd);
            let what = format!("{state} container, inspect {args:?}");
            assert_same_keys(&what, &k, &dd);
            assert_values_agree(&what, &k, &dd, CONTAINER_VALUES);
            assert_eq!(
                k["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"],
                dd["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"]
            );
            assert_eq!(
                k["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"],
                kport.to_string()
            );
            // Docker puts the `-e` variables before the image's; kiln after them.
            let env = |v: &Value| {
                let mut env: Vec<String> =
                    serde_json::from_value(v["Config"]["Env"].clone()).expect("Config.Env");
                env.sort();
                env
            };
            assert_eq!(env(&k), env(&dd), "{what}");
            let networks = |v: &Value| {
                v["NetworkSettings"]["Networks"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>())
            };
            assert_eq!(networks(&k), networks(&dd), "{what}");
            if args.contains(&"-s") {
                assert!(k["SizeRw"].is_u64() && k["SizeRootFs"].is_u64(), "{k:#}");
                assert!(k["SizeRootFs"].as_u64() >= k["SizeRw"].as_u64());
            }
        }
    }
    // While it ran, Ports held the binding as Docker shows it.
    e.ok(&["start", &name]);
    let k = kiln_inspect(&e, &[&name]);
    let bound = &k["NetworkSettings"]["Ports"]["80/tcp"][0];
    assert_eq!(bound["HostIp"], "0.0.0.0", "{k:#}");
    assert_eq!(bound["HostPort"], kport.to_string(), "{k:#}");
    let c: Value = serde_json::from_str(&e.ok(&["container", "inspect", &name])).unwrap();
    assert_same_keys("container inspect", &c[0], &k);
}

#[test]
fn inspect_of_missing_names_and_types_as_docker() {
    let Some(e) = Env::new() else { return };
    let Some(docker) = docker() else { return };
    let image = format!("{}:1", unique_name("inspect-missing"));
    e.ok(&["tag", "busybox:local", &image]);
    let tar = e.dir().join("image.tar");
    e.ok(&["save", "-o", tar.to_str().unwrap(), &image]);
    let vol = unique_name("vol").replace('/', "-");
    let d = DockerObjects {
        docker,
        containers: vec![],
        images: vec![image.clone()],
        volumes: vec![vol.clone()],
    };
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    e.ok(&["volume", "create", &vol]);
    d.ok(&["volume", "create", &vol]);
    let missing = "kiln-it-no-such-object";
    let cases: &[&[&str]] = &[
        &[&image, missing],
        &["-f", "{{.Id}}", missing, &image],
        &[missing],
        &["-f", "{{.Id}}", missing],
        &["--type", "container", &image],
        &["--type", "image", &image],
        &["--type", "volume", &vol],
        &["--type", "volume", &image],
        &[&vol],
    ];
    for args in cases {
        let mut all = vec!["inspect"];
        all.extend_from_slice(args);
        let (k, dd) = (e.run(&all), d.run(&all));
        assert_eq!(k.status.code(), dd.status.code(), "{all:?}: {}", stderr(&k));
        let (ko, doo) = (stdout(&k), stdout(&dd));
        if args.contains(&"-f") {
            assert_eq!(ko, doo, "{all:?}");
        } else {
            let kv: Value = serde_json::from_str(&ko).expect("kiln JSON");
            let dv: Value = serde_json::from_str(&doo).expect("docker JSON");
            assert_eq!(
                kv.as_array().map(Vec::len),
                dv.as_array().map(Vec::len),
                "{all:?}: {ko}"
            );
            if let (Some(kd), Some(dd)) = (kv.get(0), dv.get(0)) {
                if args.contains(&vol.as_str()) {
                    assert_same_keys("volume inspect", kd, dd);
                    assert_eq!(kd["Name"], dd["Name"]);
                }
            }
        }
        if args.contains(&missing) && !args.contains(&"--type") {
            assert!(
                stderr(&k).contains(&format!("Error: No such object: {missing}")),
                "{all:?}: {}",
                stderr(&k)
            );
        }
    }
    let o = e.run(&["inspect", "--type", "network", &image]);
    assert_ne!(o.status.code(), Some(0), "kiln has no networks to inspect");
}

/// Polls `inspect` of `name` (kiln's when `kiln`, else Docker's) until `pred` holds.
fn wait_until(e: &Env, d: &DockerObjects, kiln: bool, name: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = if kiln {
            kiln_inspect(e, &[name])
        } else {
            d.inspect(&[name])
        };
        if pred(&v) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened (kiln: {kiln}): {v:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The keys Docker prints only when set (volumes, tmpfs, init, a health check, a stop
/// signal and timeout, another network) are printed by kiln too, created and running.
#[test]
fn inspect_keys_of_a_container_with_every_optional_part() {
    let Some(e) = Env::new() else { return };
    let Some(docker) = docker() else { return };
    let image = format!("{}:1", unique_name("inspect-opt"));
    e.ok(&["tag", "busybox:local", &image]);
    let tar = e.dir().join("image.tar");
    e.ok(&["save", "-o", tar.to_str().unwrap(), &image]);
    let name = unique_name("opt").replace('/', "-");
    let vol = format!("{name}-vol");
    let d = DockerObjects {
        docker,
        containers: vec![name.clone()],
        images: vec![image.clone()],
        volumes: vec![vol.clone()],
    };
    d.ok(&["load", "-i", tar.to_str().unwrap()]);
    let data = format!("{vol}:/data");
    let args = [
        "create",
        "--name",
        &name,
        "-v",
        &data,
        "-v",
        "/anon",
        "--tmpfs",
        "/t",
        "--init",
        "--read-only",
        "--add-host",
        "a:1.2.3.4",
        "-w",
        "/tmp",
        "-u",
        "0",
        "--stop-signal",
        "SIGINT",
        "--stop-timeout",
        "5",
        "-m",
        "64m",
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        "--network",
        "none",
        &image,
        "sleep",
        "1000",
    ];
    e.ok(&args);
    d.ok(&args);
    let values = [
        "/Config/Healthcheck/Test",
        "/Config/StopSignal",
        "/Config/StopTimeout",
        "/Config/Volumes",
        "/Config/WorkingDir",
        "/Config/User",
        "/HostConfig/Init",
        "/HostConfig/ReadonlyRootfs",
        "/HostConfig/ExtraHosts",
        "/HostConfig/Memory",
        "/HostConfig/NetworkMode",
        "/HostConfig/Binds",
        "/State/Status",
        "/State/Health/Status",
    ];
    let compare = |what: &str| {
        let mut k = kiln_inspect(&e, &[&name]);
        let dd = d.inspect(&[&name]);
        without_foreign_driver_data(&mut k, &dd);
        assert_same_keys(what, &k, &dd);
        assert_values_agree(what, &k, &dd, &values);
    };
    compare("created container");
    e.ok(&["start", &name]);
    d.ok(&["start", &name]);
    let checked = |v: &Value| {
        v["State"]["Health"]["Log"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    };
    wait_until(&e, &d, true, &name, checked);
    wait_until(&e, &d, false, &name, checked);
    compare("running container with a health check");
    e.ok(&["stop", "-t", "0", &name]);
    d.ok(&["stop", "-t", "0", &name]);
    compare("stopped container with a health check");
}
