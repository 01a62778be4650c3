//! `kiln build --platform linux/amd64,linux/arm64 --cache-to … --cache-from …`, as a fleet
//! of CI runners sharing one cache uses it: one export (to the loopback `docker-registry`, or
//! an OCI layout directory) holds the records of every platform's steps, a step the
//! platforms share once; a runner with an empty store gets every step of every platform
//! CACHED from it, and the same index digest (SOURCE_DATE_EPOCH).
//!
//! Needs root, busybox, qemu-user-static registered with F, Debian's arm64 busybox-static
//! package, `docker-registry` and skopeo (`util::require`: a failure under CI).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::build_cache_registry::exported_records;
use crate::build_cmd::write;
use crate::platforms::{emulation, foreign_busybox};
use crate::registry::{need, skopeo_inspect, Registry};
use crate::util::{require, stderr, stdout, TestStore};

const PLATFORMS: &str = "linux/amd64,linux/arm64";

/// Printed only when a RUN step really runs (the step's own text does not contain them).
const TOOLS_RAN: &str = "RAN-33-TOOLS";
const FINAL_RAN: &str = "RAN-44-FINAL";

/// A `$BUILDPLATFORM` stage both platforms share (its RUN step has one key), and a stage
/// per target, on that target's busybox, with a COPY and a RUN step of its own.
const DOCKERFILE: &str = "\
FROM --platform=$BUILDPLATFORM busybox-amd64:local AS tools
RUN echo RAN-$((30+3))-TOOLS && uname -m > /built-on
FROM busybox-${TARGETARCH}:local
ARG TARGETPLATFORM
COPY --from=tools /built-on /built-on
COPY app.txt /app.txt
RUN echo RAN-$((40+4))-FINAL && uname -m > /machine && echo \"$TARGETPLATFORM\" > /platform
";

/// A store holding the two bases (the host's busybox as amd64, Debian's arm64 one), or
/// `None` when the host cannot have them (reported through `require`).
fn runner() -> Option<TestStore> {
    let s = TestStore::new();
    if !emulation() || s.busybox("busybox-host:local").is_none() {
        return None;
    }
    let host = kiln::common::platform::Platform::host().architecture;
    if host != "amd64" {
        require::missing("an amd64 host (the test's bases are amd64 and arm64)");
        return None;
    }
    let o = s.kiln(
        s.dir.path(),
        &["tag", "busybox-host:local", "busybox-amd64:local"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    foreign_busybox(&s, "arm64", "linux/arm64", "busybox-arm64:local").then_some(s)
}

fn context(s: &TestStore) -> PathBuf {
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "Dockerfile", DOCKERFILE);
    write(&ctx, "app.txt", "app\n");
    ctx
}

/// `kiln build` of both platforms as `app:1` with reproducible dates; `DOCKER_CONFIG` points
/// at an empty directory so no credentials of the host are used. Returns the output and the
/// index digest (`--iidfile`).
fn build(s: &TestStore, ctx: &Path, extra: &[&str]) -> (Output, String) {
    let iid = s.dir.path().join("iid");
    let docker_config = s.dir.path().join("docker-config");
    fs::create_dir_all(&docker_config).unwrap();
    let mut args = vec![
        "build",
        "--progress=plain",
        "--platform",
        PLATFORMS,
        "-t",
        "app:1",
        "--iidfile",
        iid.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(".");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(&args)
        .current_dir(ctx)
        .env("KILN_ROOT", s.root())
        .env("DOCKER_CONFIG", &docker_config)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("running kiln");
    assert!(
        o.status.success(),
        "build failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let digest = fs::read_to_string(&iid).unwrap();
    assert!(digest.starts_with("sha256:"), "{digest}");
    (o, digest)
}

/// Every COPY and RUN step of the progress view, by platform: the step's text and how it
/// ended (`CACHED`, `CACHED (from …)`, `cache miss: …`, or `ran` when it says nothing).
fn steps(o: &Output) -> BTreeMap<String, Vec<(String, String)>> {
    let err = stderr(o);
    let mut shown: Vec<(String, String, String)> = Vec::new();
    let mut ended: BTreeMap<String, String> = BTreeMap::new();
    for line in err.lines() {
        let Some((id, rest)) = line.split_once(' ') else {
            continue;
        };
        if !id.starts_with('#') {
            continue;
        }
        if let Some((label, text)) = rest.strip_prefix('[').and_then(|r| r.split_once("] ")) {
            if text.starts_with("RUN ") || text.starts_with("COPY ") {
                let platform = label.split(' ').next().unwrap_or_default();
                shown.push((id.into(), platform.into(), text.into()));
            }
        } else if rest.starts_with("CACHED") || rest.starts_with("cache miss:") {
            ended.insert(id.into(), rest.into());
        }
    }
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (id, platform, text) in shown {
        let end = ended.get(&id).cloned().unwrap_or_else(|| "ran".into());
        out.entry(platform).or_default().push((text, end));
    }
    out
}

/// The first build, exporting to `to` (shown as `dest`): every step of both platforms ran
/// or was shared, and one export holds them all. Returns the index digest.
fn first_build(s: &TestStore, ctx: &Path, to: &str, dest: &str) -> String {
    let (o, digest) = build(s, ctx, &["--cache-to", to]);
    let err = stderr(&o);
    let by_platform = steps(&o);
    assert_eq!(
        by_platform.keys().collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"],
        "{err}"
    );
    for (p, list) in &by_platform {
        // The tools RUN, both COPY and the final RUN, in each platform's view.
        assert_eq!(list.len(), 4, "{p}: {list:?}\n{err}");
    }
    // The shared step ran once (the other platform waited for it and found it cached); each
    // platform's own RUN ran.
    assert_eq!(
        err.lines().filter(|l| l.ends_with(TOOLS_RAN)).count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.ends_with(FINAL_RAN)).count(),
        2,
        "{err}"
    );
    // One export of every step's record, the shared one once: the tools RUN, and each
    // platform's ARG (a metadata step's record), two COPY and its RUN.
    assert_eq!(exported_records(&o, dest), 1 + 2 * 4, "{err}");
    assert_eq!(
        err.matches("exporting cache to ").count(),
        1,
        "one export for both platforms:\n{err}"
    );
    digest
}

/// A second runner with an empty store: every COPY and RUN step of both platforms CACHED
/// from `from`, nothing run, the same index digest. `extra` flags are added (the fleet's
/// usual `--cache-to` back to the same cache).
fn second_runner(from: &str, digest: &str, extra: &[&str]) -> Option<Output> {
    let b = runner()?;
    let ctx = context(&b);
    let mut args = vec!["--cache-from", from];
    args.extend_from_slice(extra);
    let (o, second) = build(&b, &ctx, &args);
    let err = stderr(&o);
    let by_platform = steps(&o);
    assert_eq!(by_platform.len(), 2, "{err}");
    for (p, list) in &by_platform {
        assert_eq!(list.len(), 4, "{p}: {list:?}\n{err}");
        for (text, end) in list {
            assert!(end.starts_with("CACHED"), "{p} {text}: {end}\n{err}");
        }
    }
    // Each platform's own steps came from the shared cache (the shared step from it too, or
    // from the local cache once the other platform had imported it).
    assert!(
        err.lines().filter(|l| l.contains("CACHED (from ")).count() >= 7,
        "{err}"
    );
    assert!(!err.contains("cache miss:"), "{err}");
    assert!(
        !err.contains(TOOLS_RAN) && !err.contains(FINAL_RAN),
        "{err}"
    );
    assert_eq!(second, digest, "the same index on the second runner");
    // And the images work: each platform's files, its RUN made under its emulation.
    for (p, machine) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let run = b.kiln(
            b.dir.path(),
            &[
                "run",
                "--rm",
                "--platform",
                p,
                "app:1",
                "cat",
                "/machine",
                "/platform",
                "/built-on",
            ],
            None,
        );
        assert!(run.status.success(), "{}", stderr(&run));
        assert_eq!(stdout(&run), format!("{machine}\n{p}\nx86_64\n"), "{p}");
    }
    Some(o)
}

#[test]
fn a_registry_cache_of_two_platforms_serves_an_empty_store() {
    let Some(a) = runner() else { return };
    let (Some(reg), Some(skopeo)) = (Registry::start(false), need("skopeo", None)) else {
        return;
    };
    let ctx = context(&a);
    let cache = format!("{}/fleet/cache:main", reg.host());
    let dest = format!("registry {cache}");
    let digest = first_build(
        &a,
        &ctx,
        &format!("type=registry,ref={cache},mode=max"),
        &dest,
    );
    // One cache manifest in the registry, with each layer once.
    let m: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &cache, true)).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.kiln.cache.v1", "{m}");
    let layers = m["layers"].as_array().unwrap();
    let mut digests: Vec<&str> = layers[1..]
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let all = digests.len();
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), all, "{m}");

    // Exported again from a rebuild: the same manifest, nothing sent again.
    let (o, again) = build(
        &a,
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert_eq!(again, digest);
    assert!(
        stderr(&o).contains(&format!(
            "exporting cache to {dest} done (9 records, 0 blobs written"
        )),
        "{}",
        stderr(&o)
    );
    let m2: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &cache, true)).unwrap();
    assert_eq!(m2, m);

    // The second runner imports and exports back in one command, as runners of a fleet do:
    // it sends nothing, and the cache stays the same.
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");
    let Some(o) = second_runner(&from, &digest, &["--cache-to", &to]) else {
        return;
    };
    assert!(
        stderr(&o).contains(&format!(
            "exporting cache to {dest} done (9 records, 0 blobs written"
        )),
        "{}",
        stderr(&o)
    );
    let m3: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &cache, true)).unwrap();
    assert_eq!(m3, m);
}

#[test]
fn a_local_cache_of_two_platforms_serves_an_empty_store() {
    let Some(a) = runner() else { return };
    let ctx = context(&a);
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().join("cache");
    let dest = format!("cache {}", dir.display());
    let digest = first_build(
        &a,
        &ctx,
        &format!("type=local,dest={},mode=max", dir.display()),
        &dest,
    );
    // One cache in the layout, one tag.
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    second_runner(&format!("type=local,src={}", dir.display()), &digest, &[]);
}

#[test]
fn mode_min_exports_the_final_stages_of_every_platform() {
    let Some(a) = runner() else { return };
    let ctx = context(&a);
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().join("cache");
    let dest = format!("cache {}", dir.display());
    let missing = shared.path().join("missing");
    let (o, _) = build(
        &a,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={}", dir.display()),
            "--cache-from",
            &format!("type=local,src={}", missing.display()),
        ],
    );
    let err = stderr(&o);
    // The final stage's ARG, COPY and RUN steps of each platform; the tools stage (only
    // copied from) is left out, as for one platform.
    assert_eq!(exported_records(&o, &dest), 2 * 4, "{err}");
    // The caches to import are read once for both platforms: one warning for the missing
    // one, and the build goes on without it.
    let warned = format!(
        "--cache-from: cache {}: no such directory",
        missing.display()
    );
    assert_eq!(err.matches(&warned).count(), 1, "{err}");
}
