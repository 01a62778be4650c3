//! Interop tests: OCI tools (skopeo, umoci) read what the store wrote.

use std::process::Command;

use super::test_support::{layer_tar, put_test_image, temp_store};
use crate::image::Reference;
use crate::testutil::tool;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn skopeo_and_umoci_read_a_stored_image() {
    let Some(skopeo) = tool("skopeo", "apt-get install skopeo") else {
        return;
    };
    let (dir, store) = temp_store();
    let layer = layer_tar(&[("hello.txt", b"hello from kiln\n")]);
    let img = put_test_image(&store, &[&layer], "interop");
    let reference = Reference::parse("kiln-test/hello:1").unwrap();
    store.tag(&reference, &img.manifest_digest).unwrap();
    let by_digest = reference
        .repository()
        .with_digest(img.manifest_digest.clone());
    store.tag(&by_digest, &img.manifest_digest).unwrap();
    // An untagged image and a second tag must not confuse the tools.
    let other = put_test_image(&store, &[&layer_tar(&[("other", b"x")])], "other");
    store
        .tag(
            &Reference::parse("localhost:5000/other:v2").unwrap(),
            &other.manifest_digest,
        )
        .unwrap();
    put_test_image(&store, &[&layer_tar(&[("dangling", b"y")])], "dangling");

    let layout = store.oci_dir();
    let layout = layout.to_str().unwrap();
    assert!(
        !layout.contains(':'),
        "skopeo cannot address a layout path with ':'"
    );

    // The ref name skopeo takes is the full normalised reference.
    let name = reference.to_string();
    assert_eq!(name, "docker.io/kiln-test/hello:1");
    let out = run(Command::new(&skopeo).args(["inspect", &format!("oci:{layout}:{name}")]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["Digest"], img.manifest_digest.to_string(), "{out}");
    assert_eq!(json["Layers"][0], img.layers()[0].to_string(), "{out}");

    let out = run(Command::new(&skopeo).args(["inspect", &format!("oci:{layout}:{by_digest}")]));
    assert!(out.contains(img.manifest_digest.as_str()), "{out}");
    let out = run(Command::new(&skopeo).args([
        "inspect",
        "--config",
        &format!("oci:{layout}:localhost:5000/other:v2"),
    ]));
    assert!(out.contains("\"other\""), "{out}");

    let Some(umoci) = tool("umoci", "apt-get install umoci") else {
        return;
    };
    let bundle = dir.path().join("bundle");
    let mut cmd = Command::new(&umoci);
    cmd.arg("unpack");
    if !nix::unistd::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    cmd.args(["--image", &format!("{layout}:{name}")])
        .arg(&bundle);
    run(&mut cmd);
    let hello = std::fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap();
    assert_eq!(hello, "hello from kiln\n");
    // umoci unpacks only the image named.
    assert!(!bundle.join("rootfs/other").exists());
}
