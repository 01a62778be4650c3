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
