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
    if !have("umoci") || !have("skopeo") {
        println!("skipped: umoci or skopeo not installed (.ci/run installs them)");
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
    if have("skopeo") {
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
    } else {
        println!("skipped skopeo part: skopeo not installed");
    }
    let docker_ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !docker_ok {
        println!("skipped docker part: no Docker daemon (docker info failed)");
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
