//! One tag holding several platforms in the store: `kiln pull --platform` and `kiln image
//! import --platform` of another platform into a tag make (or extend) an OCI index, `kiln
//! pull --all-platforms` keeps a registry's index and `kiln push` gives back the same index
//! digest, `kiln image prune -a` removes unused indexes with their platforms' images, and
//! `kiln push --all-tags` pushes index tags as indexes. Against the loopback
//! `docker-registry`, read back with skopeo.
//!
//! Needs root, busybox, Debian's arm64 busybox-static, qemu-user-static registered with F,
//! `docker-registry` and skopeo (`util::require`: a failure under CI).

use std::process::{Command, Output};

use serde_json::Value;

use crate::build_cmd::write;
use crate::platforms::{emulation, foreign_busybox};
use crate::registry::{need, Registry};
use crate::util::{platform_string, require, run_tool, stderr, stdout, TestStore};

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    o
}

/// Runs kiln on `s`'s store, asserts success, returns standard output.
fn k(s: &TestStore, args: &[&str]) -> String {
    stdout(&ok(s.kiln(s.dir.path(), args, None)))
}

/// `kiln image inspect NAME`, parsed (its only document).
fn inspect(s: &TestStore, name: &str) -> Value {
    let v: Value = serde_json::from_str(&k(s, &["image", "inspect", name])).unwrap();
    v[0].clone()
}

/// The platforms an inspected index lists, in order, with each entry's image ID.
fn entries(doc: &Value) -> Vec<(String, String)> {
    doc["Manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {doc}"))
        .iter()
        .map(|m| {
            (
                platform_string(&m["Platform"]),
                m["Id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn is_index(doc: &Value) -> bool {
    doc["Descriptor"]["mediaType"] == "application/vnd.oci.image.index.v1+json"
}

/// The lines `kiln images` shows for `repo` (`REPOSITORY:TAG ID`), and no dangling image.
fn listed(s: &TestStore, repo: &str) -> Vec<String> {
    let dangling = k(s, &["images", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling, "", "no image is left dangling");
    k(
        s,
        &[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
            repo,
        ],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// `uname -m` of `name` run for `platform`.
fn machine(s: &TestStore, platform: &str, name: &str) -> String {
    k(
        s,
        &["run", "--rm", "--platform", platform, name, "uname", "-m"],
    )
    .trim()
    .to_owned()
}

/// The digest `kiln push` printed (`TAG: digest: sha256:… size: N`).
fn pushed_digest(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.contains(": digest: "))
        .unwrap_or_else(|| panic!("no digest line in {out}"));
    line.split(' ').nth(2).unwrap().to_string()
}

/// What the registry serves for `image`, and its digest.
fn raw(skopeo: &std::path::Path, image: &str) -> (Value, String) {
    let text = run_tool(Command::new(skopeo).args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{image}"),
    ]));
    let digest = kiln::image::Digest::of_bytes(text.as_bytes()).to_string();
    (serde_json::from_str(&text).unwrap(), digest)
}

/// `kiln image import --platform PLATFORM` of the bases' busybox (amd64 or arm64) as `name`,
/// with `--change`s.
fn import(s: &TestStore, platform: &str, name: &str, changes: &[&str]) {
    let tar = match platform {
        "linux/amd64" => s.busybox_tar(),
        _ => s.dir.path().join("busybox-arm64.tar"),
    };
    let tar = tar.to_str().unwrap().to_owned();
    let mut args = vec!["image", "import", "--platform", platform];
    for c in changes {
        args.extend(["-c", c]);
    }
    args.extend([tar.as_str(), name]);
    k(s, &args);
}

/// A store with the amd64 and arm64 busybox bases as `busybox-amd64:local` and
/// `busybox-arm64:local`; `None` when something is missing (reported), or the host is not
/// amd64 (the bases are amd64 and arm64).
fn bases() -> Option<TestStore> {
    let s = TestStore::new();
    if !emulation()
        || s.busybox("busybox-amd64:local").is_none()
        || !foreign_busybox(&s, "arm64", "linux/arm64", "busybox-arm64:local")
    {
        return None;
    }
    if kiln::common::platform::Platform::host().architecture != "amd64" {
        require::missing("an amd64 host (the test's bases are amd64 and arm64)");
        return None;
    }
    Some(s)
}

#[test]
fn pulls_of_two_platforms_fill_one_tag_and_all_platforms_round_trips() {
    let Some(s) = bases() else { return };
    let (Some(reg), Some(skopeo)) = (Registry::start(false), need("skopeo", None)) else {
        return;
    };
    // A two-platform index built and pushed by kiln.
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "hello", "hi\n");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox-${TARGETARCH}:local\nCOPY hello /hello\n",
    );
    let name = format!("{}/is/app:1", reg.host());
    ok(s.kiln(
        &ctx,
        &[
            "build",
            "-q",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &name,
            "--push",
            ".",
        ],
        None,
    ));
    let (index, pushed) = raw(&skopeo, &name);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let built = entries(&inspect(&s, &name));

    // One platform, then the other, into one tag: an index of both.
    let f = TestStore::new();
    k(&f, &["pull", "--platform", "linux/arm64", &name]);
    let doc = inspect(&f, &name);
    assert!(!is_index(&doc), "one platform is one image: {doc}");
    assert_eq!(doc["Architecture"], "arm64");
    let out = k(&f, &["pull", "--platform", "linux/amd64", &name]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    let doc = inspect(&f, &name);
    assert!(is_index(&doc), "{doc}");
    let mut got = entries(&doc);
    got.sort();
    let mut want = built.clone();
    want.sort();
    assert_eq!(got, want, "the platforms' images are the ones built");
    let shown = listed(&f, &format!("{}/is/app", reg.host()));
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].ends_with(&doc["Id"].as_str().unwrap()[7..19]),
        "{shown:?}"
    );
    assert_eq!(machine(&f, "linux/arm64", &name), "aarch64");
    assert_eq!(machine(&f, "linux/amd64", &name), "x86_64");
    // The same platform again changes nothing; the index keeps both.
    let out = k(&f, &["pull", "--platform", "linux/arm64", &name]);
    assert!(out.contains("Image is up to date"), "{out}");
    assert_eq!(inspect(&f, &name)["Id"], doc["Id"]);

    // --all-platforms keeps the registry's index; a push gives back the same digest.
    let g = TestStore::new();
    let out = k(&g, &["pull", "--all-platforms", &name]);
    assert!(out.contains(&format!("Digest: {pushed}")), "{out}");
    let doc = inspect(&g, &name);
    assert_eq!(entries(&doc), built, "every platform, in the index's order");
    let by_digest = format!("{}/is/app@{pushed}", reg.host());
    assert_eq!(inspect(&g, &by_digest)["Id"], doc["Id"]);
    assert_eq!(machine(&g, "linux/arm64", &name), "aarch64");
    let copy = format!("{}/is/copy:1", reg.host());
    k(&g, &["tag", &name, &copy]);
    let out = k(&g, &["push", &copy]);
    assert_eq!(pushed_digest(&out), pushed, "{out}");
    assert_eq!(raw(&skopeo, &copy).1, pushed);
    // Read from the registry by a store without that name (a local name shows the store's).
    let manifest = k(&f, &["manifest", "inspect", "--insecure", &copy]);
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest, index);
    // --platform and --all-platforms exclude each other.
    let o = g.kiln(
        g.dir.path(),
        &[
            "pull",
            "--all-platforms",
            "--platform",
            "linux/arm64",
            &name,
        ],
        None,
    );
    assert!(!o.status.success(), "{}", stdout(&o));
}

#[test]
fn imports_of_two_platforms_fill_one_tag_and_prune_all_removes_the_index() {
    let Some(s) = bases() else { return };
    // amd64's busybox, then arm64's, into one tag.
    import(&s, "linux/amd64", "multi:1", &[]);
    import(&s, "linux/arm64", "multi:1", &[]);
    let doc = inspect(&s, "multi:1");
    assert!(is_index(&doc), "{doc}");
    let first = entries(&doc);
    let platforms: Vec<&str> = first.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(listed(&s, "multi").len(), 1);
    assert_eq!(machine(&s, "linux/arm64", "multi:1"), "aarch64");
    assert_eq!(machine(&s, "linux/amd64", "multi:1"), "x86_64");
    // The same platform again replaces its entry.
    import(&s, "linux/arm64", "multi:1", &["LABEL again=1"]);
    let second = entries(&inspect(&s, "multi:1"));
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[0], first[0]);
    assert_ne!(second[1].1, first[1].1, "the arm64 entry is the new image");

    // rmi of the index's last name deletes it; its images go with it.
    let blob = |id: &str| {
        s.root()
            .join("oci/blobs/sha256")
            .join(id.strip_prefix("sha256:").unwrap())
    };
    k(&s, &["tag", "multi:1", "multi:2"]);
    k(&s, &["rmi", "multi:1"]);
    assert_eq!(listed(&s, "multi").len(), 1);
    let out = k(&s, &["rmi", "multi:2"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(listed(&s, "multi").is_empty());
    for (_, id) in &second {
        assert!(!blob(id).exists(), "{id} was collected");
    }

    // prune -a: an index no container uses goes, with its images; one in use stays.
    for name in ["pruned:1", "used:1"] {
        import(&s, "linux/arm64", name, &[]);
        import(&s, "linux/amd64", name, &[]);
    }
    let pruned = inspect(&s, "pruned:1");
    let used = inspect(&s, "used:1");
    let container = k(
        &s,
        &["create", "--platform", "linux/arm64", "used:1", "true"],
    );
    let out = k(&s, &["image", "prune", "-a", "-f"]);
    assert!(
        out.contains(&format!("deleted: {}", pruned["Id"].as_str().unwrap())),
        "{out}"
    );
    assert!(out.contains("untagged: pruned:1"), "{out}");
    for (_, id) in entries(&pruned) {
        assert!(!blob(&id).exists(), "{id} was collected");
    }
    assert_eq!(listed(&s, "used").len(), 1, "an index in use stays");
    assert_eq!(listed(&s, "pruned"), Vec::<String>::new());
    k(&s, &["rm", container.trim()]);
    k(&s, &["image", "prune", "-a", "-f"]);
    assert!(listed(&s, "used").is_empty());
    for (_, id) in entries(&used) {
        assert!(!blob(&id).exists(), "{id} was collected");
    }
    ok(s.kiln(s.dir.path(), &["system", "check"], None));
}

#[test]
fn push_all_tags_pushes_index_tags_as_indexes() {
    let Some(s) = bases() else { return };
    let (Some(reg), Some(skopeo)) = (Registry::start(false), need("skopeo", None)) else {
        return;
    };
    let repo = format!("{}/is/tags", reg.host());
    let multi = format!("{repo}:multi");
    let single = format!("{repo}:single");
    import(&s, "linux/amd64", &multi, &[]);
    import(&s, "linux/arm64", &multi, &[]);
    import(&s, "linux/amd64", &single, &[]);
    let out = k(&s, &["push", "--all-tags", &repo]);
    assert_eq!(out.matches(": digest: ").count(), 2, "{out}");
    let (index, _) = raw(&skopeo, &multi);
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| platform_string(&m["platform"]))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let (image, _) = raw(&skopeo, &single);
    assert_eq!(
        image["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{image}"
    );
}

/// A rootfs tar holding one file, `name` with `content`, in `dir`.
fn one_file_tar(dir: &std::path::Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, content.as_bytes()).unwrap();
    b.finish().unwrap();
    path
}

/// The index blob `kiln save` wrote into the archive `tar` (what its `index.json` names).
fn saved_index(tar: &std::path::Path) -> Value {
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(tar).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        files.insert(name, bytes);
    }
    let top: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let entry = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mediaType"] == "application/vnd.oci.image.index.v1+json")
        .unwrap_or_else(|| panic!("no index in {top}"));
    let blob = format!(
        "blobs/sha256/{}",
        entry["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
    );
    serde_json::from_slice(&files[&blob]).unwrap()
}

/// Regression: `pull --all-platforms` kept of each registry entry only its platform's os,
/// architecture and variant, so the entries' annotations and the platforms' `os.version` and
/// `os.features` were lost to the stored index, `manifest inspect`, `save` and a push.
#[test]
fn an_index_another_tool_wrote_keeps_every_field_through_pull_and_push() {
    let (Some(reg), Some(skopeo)) = (Registry::start(false), need("skopeo", None)) else {
        return;
    };
    let s = TestStore::new();
    let path = "is/annotated";
    let repo = format!("{}/{path}", reg.host());
    // Two images kiln pushed, named by an index another tool wrote, with fields of every kind.
    let platforms = [
        (
            "linux/amd64",
            serde_json::json!({"architecture": "amd64", "os": "linux",
                "os.version": "6.1.0", "os.features": ["sse4"]}),
            serde_json::json!({"org.opencontainers.image.created": "2024-05-01T00:00:00Z",
                "com.example.role": "server"}),
        ),
        (
            "linux/arm64",
            serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
            serde_json::json!({"com.example.role": "edge"}),
        ),
    ];
    let mut entries = Vec::new();
    for (platform, p, annotations) in &platforms {
        let arch = p["architecture"].as_str().unwrap();
        let tar = one_file_tar(s.dir.path(), arch, arch);
        let name = format!("{repo}:{arch}");
        k(
            &s,
            &[
                "image",
                "import",
                "--platform",
                platform,
                tar.to_str().unwrap(),
                &name,
            ],
        );
        let digest = pushed_digest(&k(&s, &["push", &name]));
        let text = run_tool(Command::new(&skopeo).args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{name}"),
        ]));
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": text.len(),
            "platform": p,
            "annotations": annotations,
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "annotations": {"org.opencontainers.image.source": "https://example.com/app"},
        "manifests": entries,
    });
    // In kiln's own encoding, so a push that keeps every field gives back the same digest.
    let bytes = kiln::image::config::canonical_json("index", &index).unwrap();
    let digest = kiln::image::Digest::of_bytes(&bytes).to_string();
    reg.put_manifest(
        path,
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &bytes,
    );
    let multi = format!("{repo}:multi");

    let g = TestStore::new();
    let out = k(&g, &["pull", "--all-platforms", &multi]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    // The stored index: the local manifests, every other field as the registry's.
    let local: Value = serde_json::from_str(&k(&g, &["manifest", "inspect", &multi])).unwrap();
    let same_but_digests = |doc: &Value| {
        assert_eq!(doc["annotations"], index["annotations"], "{doc}");
        let got = doc["manifests"].as_array().unwrap();
        assert_eq!(got.len(), 2, "{doc}");
        for (g, (_, p, a)) in got.iter().zip(&platforms) {
            assert_eq!(&g["platform"], p, "{doc}");
            assert_eq!(&g["annotations"], a, "{doc}");
        }
    };
    same_but_digests(&local);
    let verbose: Value =
        serde_json::from_str(&k(&g, &["manifest", "inspect", "--verbose", &multi])).unwrap();
    let first = &verbose[0]["Descriptor"];
    assert_eq!(first["annotations"], platforms[0].2, "{verbose}");
    assert_eq!(first["platform"]["os.version"], "6.1.0", "{verbose}");
    assert_eq!(first["platform"]["os.features"][0], "sse4", "{verbose}");
    // One platform pulled again into the tag leaves the index as it was.
    let out = k(&g, &["pull", "--platform", "linux/amd64", &multi]);
    assert!(out.contains("Image is up to date"), "{out}");
    let again: Value = serde_json::from_str(&k(&g, &["manifest", "inspect", &multi])).unwrap();
    assert_eq!(again, local);

    // A push gives back the registry's index, byte for byte.
    let copy = format!("{repo}:copy");
    k(&g, &["tag", &multi, &copy]);
    let out = k(&g, &["push", &copy]);
    assert_eq!(pushed_digest(&out), digest, "{out}");
    let (pushed, pushed_digest) = raw(&skopeo, &copy);
    assert_eq!(pushed_digest, digest);
    assert_eq!(pushed, index);
    // So does an archive with compressed layers (its own manifests).
    let archive = g.dir.path().join("saved.tar");
    k(
        &g,
        &[
            "save",
            "--compression",
            "gzip",
            "-o",
            archive.to_str().unwrap(),
            &multi,
        ],
    );
    same_but_digests(&saved_index(&archive));
}
