//! `kiln manifest`: a list assembled from images pushed one platform at a time (`create`,
//! `--amend`, `annotate`, `push`, `rm`), read back with skopeo, with `kiln manifest inspect`
//! and, where a Docker daemon runs, with `docker manifest inspect` and `docker pull
//! --platform`. The images are busybox bases of two platforms (the host's busybox for amd64,
//! Debian's busybox-static for arm64, `scripts/busybox-foreign-rootfs.sh`); the Dockerfile
//! has no RUN step, so no emulation is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::registry::{need, skopeo_inspect, Registry};
use crate::util::{platform_string, require, run_tool, stdout, Kiln};

/// A busybox root filesystem tar of `arch` (amd64 or arm64): the host's busybox when it is
/// of that architecture, else Debian's busybox-static of it. `None` when it cannot be had.
fn busybox_tar(k: &Kiln, arch: &str) -> Option<PathBuf> {
    let tar = k.path(&format!("busybox-{arch}.tar"));
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let host = matches!(
        (arch, std::env::consts::ARCH),
        ("amd64", "x86_64") | ("arm64", "aarch64")
    );
    let mut c = Command::new("bash");
    if host {
        c.arg(scripts.join("busybox-rootfs.sh"));
    } else {
        c.arg(scripts.join("busybox-foreign-rootfs.sh")).arg(arch);
    }
    if !c.arg(&tar).status().expect("bash").success() {
        require::missing(&format!(
            "a busybox of {arch} (busybox-static; scripts/busybox-foreign-rootfs.sh)"
        ));
        return None;
    }
    Some(tar)
}

/// Builds `REG/app:<arch>` for linux/amd64 and linux/arm64 (one `kiln build --platform`
/// each) and pushes both. `false` when a requirement is missing.
fn build_and_push_both(k: &Kiln, reg: &str) -> bool {
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG TARGETARCH\nFROM busybox-${TARGETARCH}:local\nARG TARGETARCH\nLABEL arch=$TARGETARCH\n",
    )
    .unwrap();
    let ctx = ctx.display().to_string();
    for arch in ["amd64", "arm64"] {
        let Some(tar) = busybox_tar(k, arch) else {
            return false;
        };
        let platform = format!("linux/{arch}");
        let base = format!("busybox-{arch}:local");
        k.ok(&[
            "image",
            "import",
            "--platform",
            &platform,
            tar.to_str().unwrap(),
            &base,
        ]);
        let tag = format!("{reg}/app:{arch}");
        k.ok(&["build", "-q", "--platform", &platform, "-t", &tag, &ctx]);
        k.ok(&["push", "-q", &tag]);
    }
    true
}

/// The platforms of an index, `os/arch[/variant]`, in order.
fn platforms(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| platform_string(&m["platform"]))
        .collect()
}

/// The sha256 digest of the bytes the registry holds for `image`.
fn raw_digest(skopeo: &Path, image: &str) -> String {
    let raw = skopeo_inspect(skopeo, image, true);
    kiln::image::Digest::of_bytes(raw.as_bytes()).to_string()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn a_list_of_two_platforms_is_pushed_and_read_back() {
    if !require::root() {
        return;
    }
    let Some(registry) = Registry::start(false) else {
        return;
    };
    let Some(skopeo) = need("skopeo", None) else {
        return;
    };
    let reg = registry.host();
    let k = Kiln::new();
    if !build_and_push_both(&k, &reg) {
        return;
    }
    let (list, amd, arm) = (
        format!("{reg}/app:1"),
        format!("{reg}/app:amd64"),
        format!("{reg}/app:arm64"),
    );
    let created = k.ok(&["manifest", "create", &list, &amd, &arm]);
    assert_eq!(created, format!("Created manifest list {list}\n"));
    // As Docker: an existing list is changed only with --amend.
    let e = k.fails(&["manifest", "create", &list, &amd]);
    assert!(
        e.contains("refusing to amend an existing manifest list with no --amend flag"),
        "{e}"
    );
    let local = json(&k.ok(&["manifest", "inspect", &list]));
    // `inspect LIST IMAGE`: the image's manifest as the list keeps it.
    let kept = json(&k.ok(&["manifest", "inspect", &list, &arm]));
    assert_eq!(kept, json(&skopeo_inspect(&skopeo, &arm, true)));

    let pushed = k.ok(&["manifest", "push", &list]);
    let digest = pushed.trim().to_string();
    assert!(
        digest.starts_with("sha256:") && !digest.contains('\n'),
        "{pushed}"
    );

    let raw = skopeo_inspect(&skopeo, &list, true);
    assert_eq!(
        kiln::image::Digest::of_bytes(raw.as_bytes()).to_string(),
        digest
    );
    let index = json(&raw);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64"]);
    let children: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        children,
        [raw_digest(&skopeo, &amd), raw_digest(&skopeo, &arm)]
    );
    // The platform in the index is the one each config gives.
    for arch in ["amd64", "arm64"] {
        let mut c = Command::new(&skopeo);
        c.args(["inspect", "--tls-verify=false", "--override-arch", arch])
            .arg(format!("docker://{list}"));
        let cfg = json(&run_tool(&mut c));
        assert_eq!(cfg["Architecture"], arch);
        assert_eq!(cfg["Labels"]["arch"], arch);
    }
    // `inspect` of the list being assembled and of the pushed one show the same index.
    assert_eq!(local, index);
    assert_eq!(
        json(&k.ok(&["manifest", "inspect", "--remote", &list])),
        index
    );
    // One image: its manifest as the registry holds it.
    let one = json(&k.ok(&["manifest", "inspect", "--remote", &amd]));
    assert_eq!(one, json(&skopeo_inspect(&skopeo, &amd, true)));
    let verbose = json(&k.ok(&["manifest", "inspect", "--remote", "-v", &list]));
    assert_eq!(
        verbose[1]["Descriptor"]["platform"]["architecture"],
        "arm64"
    );
    assert_eq!(verbose[1]["Ref"], format!("{list}@{}", children[1]));

    // A list is not an image a list can hold.
    let e = k.fails(&["manifest", "create", &format!("{reg}/app:x"), &list]);
    assert!(e.contains(&format!("{list} is a manifest list")), "{e}");

    // A tag of kiln's store: the manifest kiln keeps (layers uncompressed, config = image ID).
    let stored = json(&k.ok(&["manifest", "inspect", &amd]));
    let id = k.ok(&["image", "inspect", "--format", "{{.Id}}", &amd]);
    assert_eq!(stored["config"]["digest"].as_str(), Some(id.trim()));
    assert_eq!(
        stored["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );

    let kiln_text = k.ok(&["manifest", "inspect", "--remote", &list]);
    compare_with_docker(&list, &kiln_text);

    amend_annotate_and_copy_across_repositories(&k, &skopeo, &reg);
    copy_to_another_registry(&k, &skopeo, &list, &digest);
    k.ok(&["manifest", "rm", &list]);
    let e = k.fails(&["manifest", "push", &list]);
    assert!(e.contains(&format!("no such manifest: {list}")), "{e}");
}

/// `--amend` adds to a list, `annotate` sets a variant, and a list in another repository of
/// the registry gets its children copied in (the registry mounts their blobs).
fn amend_annotate_and_copy_across_repositories(k: &Kiln, skopeo: &Path, reg: &str) {
    let (amd, arm) = (format!("{reg}/app:amd64"), format!("{reg}/app:arm64"));
    let list = format!("{reg}/other:2");
    k.ok(&["manifest", "create", &list, &amd]);
    k.ok(&["manifest", "create", "--amend", &list, &arm, &amd]);
    k.ok(&["manifest", "annotate", &list, &arm, "--variant", "v8"]);
    let e = k.fails(&["manifest", "annotate", &list, &arm, "--arch", "z80"]);
    assert!(
        e.contains("unsupported os/arch combination: linux/z80"),
        "{e}"
    );
    let out = k.ok(&["manifest", "push", "--purge", &list]);
    assert!(
        out.contains(&format!("Pushed ref {arm} with digest: sha256:")),
        "{out}"
    );
    let index = json(&skopeo_inspect(skopeo, &list, true));
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64/v8"]);
    // The children are in the list's repository, so the index is complete there.
    for m in index["manifests"].as_array().unwrap() {
        let child = format!("{reg}/other@{}", m["digest"].as_str().unwrap());
        let cfg = json(&skopeo_inspect(skopeo, &child, false));
        assert_eq!(cfg["Architecture"], m["platform"]["architecture"]);
    }
    // --purge removed the local list.
    let e = k.fails(&["manifest", "rm", &list]);
    assert!(e.contains(&format!("no such manifest: {list}")), "{e}");
}

/// `kiln buildx imagetools create -t DEST SRC` copies the index and its images to another
/// registry unchanged: the same digest, every platform's image there.
fn copy_to_another_registry(k: &Kiln, skopeo: &Path, list: &str, digest: &str) {
    let Some(other) = Registry::start(false) else {
        return;
    };
    let dest = format!("{}/copy:1", other.host());
    k.ok(&["buildx", "imagetools", "create", "-t", &dest, list]);
    assert_eq!(raw_digest(skopeo, &dest), digest);
    let mut c = Command::new(skopeo);
    c.args(["inspect", "--tls-verify=false", "--override-arch", "arm64"])
        .arg(format!("docker://{dest}"));
    assert_eq!(json(&run_tool(&mut c))["Labels"]["arch"], "arm64");
}

/// Docker reads kiln's list: `docker manifest inspect` prints what `kiln manifest inspect`
/// printed, byte for byte, and `docker pull --platform linux/arm64` pulls the arm64 image
/// (Docker treats 127.0.0.0/8 registries as insecure by default).
fn compare_with_docker(list: &str, kiln_text: &str) {
    let docker_ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !docker_ok {
        require::missing("a reachable docker daemon (scripts/start-dockerd.sh starts one)");
        return;
    }
    let shown = run_tool(Command::new("docker").args(["manifest", "inspect", "--insecure", list]));
    assert_eq!(shown, kiln_text);
    run_tool(Command::new("docker").args(["pull", "-q", "--platform", "linux/arm64", list]));
    let arch = run_tool(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}} {{index .Config.Labels \"arch\"}}",
        list,
    ]));
    let _ = Command::new("docker").args(["rmi", list]).output();
    assert_eq!(arch.trim(), "linux/arm64 arm64");
}

#[test]
fn manifest_errors_are_clear() {
    let Some(registry) = Registry::start(false) else {
        return;
    };
    let reg = registry.host();
    let k = Kiln::new();
    let list = format!("{reg}/app:1");
    let e = k.fails(&["manifest", "create", &list, &format!("{reg}/app:nope")]);
    assert!(
        e.contains("manifest unknown") && e.contains("nope") && e.contains(&reg),
        "{e}"
    );
    let e = k.fails(&["manifest", "create", &list, "127.0.0.1:1/app:1"]);
    assert!(
        e.contains("cannot use source images from a different registry than the target image"),
        "{e}"
    );
    for cmd in [&["push"][..], &["rm"][..], &["annotate"][..]] {
        let mut args = vec!["manifest"];
        args.extend_from_slice(cmd);
        args.push(&list);
        let image = format!("{reg}/app:a");
        if cmd == ["annotate"] {
            args.extend([image.as_str(), "--arch", "arm64"]);
        }
        let e = k.fails(&args);
        assert!(
            e.contains(&format!("no such manifest: {list}")),
            "{args:?}: {e}"
        );
    }
    let e = k.fails(&["manifest", "inspect", &format!("{reg}/app:nope")]);
    assert!(e.contains("manifest unknown"), "{e}");
    // Nothing was written for the failed create.
    assert!(
        !k.root().join("manifests/v1").exists()
            || std::fs::read_dir(k.root().join("manifests/v1"))
                .unwrap()
                .next()
                .is_none()
    );
    assert!(stdout(&k.run(&["manifest", "rm", &list])).is_empty());
}
