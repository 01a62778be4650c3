//! Interop: other tools read what kiln imports and saves, and kiln loads
//! what they save. When its tool is missing or (docker) its daemon is unreachable, a test
//! fails under CI, which has them all, and skips loudly elsewhere (`util::require`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{find_tool, run_tool, stderr, stdout, unique_name, Kiln};

/// `docker` with a reachable daemon, or why not.
fn docker() -> Result<PathBuf, String> {
    let docker = find_tool("docker").ok_or("docker (not installed)")?;
    let ok = Command::new(&docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(docker)
    } else {
        Err("a reachable docker daemon (scripts/start-dockerd.sh starts one)".into())
    }
}

/// `podman` that works here, or why not.
fn podman() -> Result<PathBuf, String> {
    let podman = find_tool("podman").ok_or("podman (not installed)")?;
    let ok = Command::new(&podman)
        .args(["info", "--format", "{{.Host.Arch}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(podman)
    } else {
        Err("a working podman (podman info failed)".into())
    }
}

macro_rules! require {
    ($tool:expr) => {
        match $tool {
            Ok(t) => t,
            Err(why) => {
                crate::util::require::missing(&why);
                return;
            }
        }
    };
}

/// Removes an image from docker or podman when dropped, even if the test failed.
struct Removes {
    tool: PathBuf,
    image: String,
}

impl Drop for Removes {
    fn drop(&mut self) {
        let _ = Command::new(&self.tool)
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// Options podman needs to run a container on this kind of host: the
/// bounding set lacks CAP_SYS_RESOURCE, so podman must not raise rlimits.
const PODMAN_RUN: &[&str] = &[
    "run",
    "--rm",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1000:1000",
];

fn skopeo_inspect(skopeo: &Path, image: &str) -> Value {
    let out = run_tool(Command::new(skopeo).args(["inspect", image]));
    serde_json::from_str(&out).expect("skopeo inspect JSON")
}

#[test]
fn skopeo_and_umoci_read_an_imported_image() {
    let skopeo = require!(find_tool("skopeo").ok_or("skopeo (not installed)"));
    let k = Kiln::new();
    let id = k.import_busybox("it/bb:1", &["-c", "CMD [\"sh\"]"]);
    let doc = k.inspect("it/bb:1");
    let manifest = doc["RepoDigests"][0]
        .as_str()
        .unwrap()
        .strip_prefix("it/bb@")
        .unwrap()
        .to_owned();
    let image = format!("oci:{}:docker.io/it/bb:1", k.layout());
    let json = skopeo_inspect(&skopeo, &image);
    assert_eq!(json["Digest"], manifest.as_str());
    assert_eq!(json["Layers"][0], doc["RootFS"]["Layers"][0]);
    assert_eq!(json["Os"], "linux");
    let config = run_tool(Command::new(&skopeo).args(["inspect", "--config", &image]));
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["history"][0]["comment"], "Imported from -");
    assert!(id.starts_with("sha256:"));

    let umoci = require!(find_tool("umoci").ok_or("umoci (not installed)"));
    let bundle = k.path("bundle");
    let mut cmd = Command::new(umoci);
    cmd.arg("unpack");
    if !nix::unistd::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    cmd.args(["--image", &format!("{}:docker.io/it/bb:1", k.layout())])
        .arg(&bundle);
    run_tool(&mut cmd);
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    assert!(std::fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0:"));
}

#[test]
fn removing_one_image_keeps_the_layer_another_uses() {
    let skopeo = require!(find_tool("skopeo").ok_or("skopeo (not installed)"));
    let k = Kiln::new();
    k.import_busybox("it/a:1", &["-m", "a"]);
    k.import_busybox("it/b:1", &["-m", "b"]);
    let layer = k.inspect("it/b:1")["RootFS"]["Layers"][0].clone();
    assert_eq!(layer, k.inspect("it/a:1")["RootFS"]["Layers"][0]);
    k.ok(&["rmi", "it/a:1"]);
    assert!(k.ok(&["system", "check"]).contains("consistent"));
    let json = skopeo_inspect(&skopeo, &format!("oci:{}:docker.io/it/b:1", k.layout()));
    assert_eq!(json["Layers"][0], layer);
    // skopeo can still copy every blob out of it.
    let out = k.path("copy");
    run_tool(Command::new(&skopeo).args([
        "copy",
        "-q",
        &format!("oci:{}:docker.io/it/b:1", k.layout()),
        &format!("oci:{}:b", out.display()),
    ]));
}

#[test]
fn skopeo_archives_load_into_kiln() {
    let skopeo = require!(find_tool("skopeo").ok_or("skopeo (not installed)"));
    let k = Kiln::new();
    let id = k.import_busybox("it/bb:1", &[]);
    let src = format!("oci:{}:docker.io/it/bb:1", k.layout());
    let docker_archive = k.path("skopeo-docker.tar");
    let oci_archive = k.path("skopeo-oci.tar");
    run_tool(Command::new(&skopeo).args([
        "copy",
        "-q",
        &src,
        &format!("docker-archive:{}:it/copied:1", docker_archive.display()),
    ]));
    run_tool(Command::new(&skopeo).args([
        "copy",
        "-q",
        &src,
        &format!("oci-archive:{}:it/copied:2", oci_archive.display()),
    ]));
    let k2 = Kiln::new();
    assert_eq!(
        k2.ok(&["load", "-i", docker_archive.to_str().unwrap()]),
        "Loaded image: it/copied:1\n"
    );
    assert_eq!(
        k2.ok(&["load", "-i", oci_archive.to_str().unwrap()]),
        "Loaded image: it/copied:2\n"
    );
    assert_eq!(k2.inspect("it/copied:1")["Id"], id.as_str());
    assert_eq!(k2.inspect("it/copied:2")["Id"], id.as_str());
    assert!(k2.ok(&["system", "check"]).contains("consistent"));
}

#[test]
fn docker_save_loads_into_kiln() {
    let docker = require!(docker());
    let k = Kiln::new();
    let rootfs = crate::util::busybox_rootfs(&k.path(""));
    let name = format!("{}:1", unique_name("docker-save"));
    let _cleanup = Removes {
        tool: docker.clone(),
        image: name.clone(),
    };
    let id = run_tool(Command::new(&docker).args([
        "import",
        "-c",
        "CMD [\"sh\"]",
        rootfs.to_str().unwrap(),
        &name,
    ]));
    let archive = k.path("docker-save.tar");
    run_tool(Command::new(&docker).args(["save", "-o", archive.to_str().unwrap(), &name]));
    assert_eq!(
        k.ok(&["load", "-i", archive.to_str().unwrap()]),
        format!("Loaded image: {name}\n")
    );
    let doc = k.inspect(&name);
    assert_eq!(doc["Id"], id.trim());
    assert_eq!(doc["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert!(k.ok(&["system", "check"]).contains("consistent"));
}

#[test]
fn podman_save_loads_into_kiln() {
    let podman = require!(podman());
    let k = Kiln::new();
    let rootfs = crate::util::busybox_rootfs(&k.path(""));
    let name = format!("localhost/{}:1", unique_name("podman-save"));
    let _cleanup = Removes {
        tool: podman.clone(),
        image: name.clone(),
    };
    let id =
        run_tool(Command::new(&podman).args(["import", "-q", rootfs.to_str().unwrap(), &name]));
    let id = id.trim();
    for format in ["docker-archive", "oci-archive"] {
        let archive = k.path(&format!("podman-{format}.tar"));
        run_tool(Command::new(&podman).args([
            "save",
            "-q",
            "--format",
            format,
            "-o",
            archive.to_str().unwrap(),
            &name,
        ]));
        let k2 = Kiln::new();
        assert_eq!(
            k2.ok(&["load", "-i", archive.to_str().unwrap()]),
            format!("Loaded image: {name}\n"),
            "{format}"
        );
        let doc = k2.inspect(&name);
        if format == "docker-archive" {
            // podman keeps the config as is for a docker-archive (its
            // oci-archive rewrites it, so the ID differs there).
            assert_eq!(doc["Id"], id, "{format}");
        }
        assert!(k2.ok(&["system", "check"]).contains("consistent"));
    }
}

#[test]
fn kiln_save_loads_into_docker_and_runs() {
    let docker = require!(docker());
    let k = Kiln::new();
    let name = format!("{}:1", unique_name("kiln-save"));
    let id = k.import_busybox(&name, &["-c", "CMD [\"sh\"]"]);
    let archive = k.path("kiln.tar");
    k.ok(&["save", "-o", archive.to_str().unwrap(), &name]);
    let _cleanup = Removes {
        tool: docker.clone(),
        image: name.clone(),
    };
    let out = run_tool(Command::new(&docker).args(["load", "-i", archive.to_str().unwrap()]));
    assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
    let inspected =
        run_tool(Command::new(&docker).args(["image", "inspect", "--format", "{{.Id}}", &name]));
    assert_eq!(inspected.trim(), id);
    run_tool(Command::new(&docker).args(["run", "--rm", &name, "/bin/busybox", "true"]));
    let out = run_tool(Command::new(&docker).args([
        "run",
        "--rm",
        &name,
        "sh",
        "-c",
        "echo hello from $(head -n1 /etc/group)",
    ]));
    assert_eq!(out, "hello from root:x:0:\n");
}

#[test]
fn kiln_save_loads_into_podman_and_runs() {
    let podman = require!(podman());
    let k = Kiln::new();
    let name = format!("{}:1", unique_name("kiln-save"));
    k.import_busybox(&name, &["-c", "CMD [\"sh\"]"]);
    let archive = k.path("kiln.tar");
    k.ok(&["save", "-o", archive.to_str().unwrap(), &name]);
    let full = format!("docker.io/{name}");
    let _cleanup = Removes {
        tool: podman.clone(),
        image: full.clone(),
    };
    let out = Command::new(&podman)
        .args(["load", "-i", archive.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("Loaded image: {full}")),
        "{}",
        stdout(&out)
    );
    let mut run = vec![];
    run.extend_from_slice(PODMAN_RUN);
    run.extend_from_slice(&[full.as_str(), "/bin/busybox", "echo", "hello from podman"]);
    assert_eq!(
        run_tool(Command::new(&podman).args(&run)),
        "hello from podman\n"
    );
}
