//! Images built by kiln, read back by other OCI tools: `umoci unpack` of a built image gives
//! the tree the build made (whiteouts and opaque directories applied), `skopeo inspect` reads
//! its config.

use std::fs;
use std::process::Command;

use crate::util::TestStore;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn umoci_unpacks_what_kiln_built() {
    if !require("umoci") || !require("skopeo") {
        return;
    }
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\n\
         RUN mkdir -p /opt/old && echo x > /opt/old/file && echo keep > /opt/keep\n\
         RUN rm /etc/group && rm -rf /opt/old && mkdir /opt/old && echo new > /opt/old/new\n\
         LABEL built.by=kiln\n",
    )
    .unwrap();
    let o = s.kiln(&ctx, &["build", "-t", "interop:1", "."], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let layout = format!(
        "{}:docker.io/library/interop:1",
        s.root().join("oci").display()
    );
    let bundle = s.dir.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image", &layout])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");
    assert!(!rootfs.join("etc/group").exists(), "deleted base file");
    assert!(rootfs.join("etc/passwd").exists());
    assert!(
        !rootfs.join("opt/old/file").exists(),
        "replaced directory hides its old content"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/old/new")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/keep")).unwrap(),
        "keep\n"
    );
    // kiln's own unpacking agrees with umoci's.
    let ours = s.unpack("interop:1");
    for p in ["opt/old/new", "opt/keep", "bin/busybox"] {
        assert_eq!(
            fs::read(ours.join(p)).unwrap(),
            fs::read(rootfs.join(p)).unwrap(),
            "{p}"
        );
    }

    let out = Command::new("skopeo")
        .args(["inspect", "--config", &format!("oci:{layout}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["config"]["Labels"]["built.by"], "kiln");
}

#[test]
fn build_outputs_load_into_docker_and_skopeo() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\nRUN echo exported > /hello\nCMD [\"cat\", \"/hello\"]\n",
    )
    .unwrap();
    let archive = s.dir.path().join("image.tar");
    let files = s.dir.path().join("files");
    let tag = format!("kiln-test-output-{}:1", std::process::id());
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "-t",
            &tag,
            "--output",
            &format!("type=docker,dest={}", archive.display()),
            "--output",
            &format!("type=local,dest={}", files.display()),
            ".",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        fs::read_to_string(files.join("hello")).unwrap(),
        "exported\n"
    );
    assert!(files.join("bin/busybox").exists());
    if require("skopeo") {
        for transport in ["docker-archive", "oci-archive"] {
            let out = Command::new("skopeo")
                .args([
                    "inspect",
                    "--config",
                    &format!("{transport}:{}", archive.display()),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "skopeo {transport}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if !docker_daemon() {
        return;
    }
    let load = Command::new("docker")
        .args(["load", "-i"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let run = Command::new("docker")
        .args(["run", "--rm", &tag])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(
        run.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "exported\n");
}

/// The first bytes of every layer blob an archive names in its `manifest.json` (Docker
/// archives list `Layers` paths; kiln writes one in OCI archives too).
fn layer_magics(archive: &std::path::Path) -> Vec<Vec<u8>> {
    use std::io::Read;
    let read_member = |want: &str| -> Vec<u8> {
        let mut t = tar::Archive::new(fs::File::open(archive).unwrap());
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() == want {
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                return b;
            }
        }
        panic!("{want} not in {}", archive.display());
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_member("manifest.json")).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| read_member(l.as_str().unwrap())[..4].to_vec())
        .collect()
}

/// Whether `tool` runs here; reports it missing otherwise (a failure under CI).
#[track_caller]
fn require(tool: &str) -> bool {
    crate::util::require::require(
        have(tool),
        &format!("{tool} (scripts/install-deps.sh installs it)"),
    )
}

/// Whether a Docker daemon answers; reports it missing otherwise (a failure under CI).
#[track_caller]
fn docker_daemon() -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    crate::util::require::require(
        ok,
        "a Docker daemon (docker info failed; scripts/start-dockerd.sh starts one)",
    )
}

#[test]
fn compressed_outputs_load_into_docker_podman_and_skopeo() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    if !require("skopeo") || !require("docker") || !require("podman") {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\nRUN echo compressed > /hello\nCMD [\"cat\", \"/hello\"]\n",
    )
    .unwrap();
    let gz = s.dir.path().join("gz.tar");
    let zst = s.dir.path().join("zst.tar");
    let tag = format!("kiln-test-gz-{}:1", std::process::id());
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "-t",
            &tag,
            "--output",
            &format!("type=docker,dest={},compression=gzip", gz.display()),
            "--output",
            &format!("type=oci,dest={},compression=zstd", zst.display()),
            ".",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gz_magic = layer_magics(&gz);
    assert_eq!(gz_magic.len(), 2);
    assert!(
        gz_magic.iter().all(|m| m[..2] == [0x1f, 0x8b]),
        "{gz_magic:?}"
    );

    // skopeo copies both (which verifies every blob against its digest) and sees the media
    // types the layers really have.
    for (archive, transport, media) in [
        (&gz, "docker-archive", "gzip"),
        (&zst, "oci-archive", "zstd"),
    ] {
        let dest = s.dir.path().join(format!("copy-{transport}"));
        let out = Command::new("skopeo")
            .args(["copy", &format!("{transport}:{}", archive.display())])
            .arg(format!("dir:{}", dest.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(dest.join("manifest.json")).unwrap()).unwrap();
        for l in m["layers"].as_array().unwrap() {
            let t = l["mediaType"].as_str().unwrap();
            assert!(t.ends_with(media), "{transport}: {t}");
        }
    }

    // Docker and Podman load the gzip archive and run it.
    let engines: &[&str] = if docker_daemon() {
        &["docker", "podman"]
    } else {
        &["podman"]
    };
    for engine in engines {
        let load = Command::new(engine)
            .args(["load", "-i"])
            .arg(&gz)
            .output()
            .unwrap();
        assert!(
            load.status.success(),
            "{engine} load: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        // The name it was loaded under ("Loaded image: NAME"; Podman may qualify it).
        let said = String::from_utf8_lossy(&load.stdout).into_owned();
        let name = said
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .or_else(|| {
                said.lines()
                    .find_map(|l| l.strip_prefix("Loaded image(s): "))
            })
            .unwrap_or_else(|| panic!("{engine} load said: {said}"))
            .trim()
            .to_string();
        assert!(name.ends_with(&tag), "{engine}: {name}");
        let mut run = Command::new(engine);
        run.args(["run", "--rm"]);
        if *engine == "podman" {
            // Podman raises nofile/nproc by default, which this machine's bounding set
            // (no CAP_SYS_RESOURCE) refuses; lower limits are always allowed.
            run.args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ]);
        }
        let run = run.arg(&name).output().unwrap();
        let _ = Command::new(engine).args(["rmi", "-f", &name]).output();
        assert!(
            run.status.success(),
            "{engine} run: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&run.stdout), "compressed\n");
    }
}
