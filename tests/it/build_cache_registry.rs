//! `kiln build --cache-to type=registry` / `--cache-from type=registry` through Debian's
//! `docker-registry` on 127.0.0.1: a build on a fresh store reuses every step another store
//! pushed, with and without basic auth; a tampered layer in the registry's storage, a
//! missing cache tag and an unreachable registry do not break the build.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::build_cache_export::{
    context, count, fresh, image_id, write, BUILDER_RAN, DOCKERFILE, FINAL_RAN,
};
use crate::registry::{need, skopeo_inspect, Registry};
use crate::util::{stderr, TestStore};

/// Runs kiln on store `s` in `ctx` with Docker's config in `docker_config`.
fn kiln(s: &TestStore, ctx: &Path, docker_config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(ctx)
        .env("KILN_ROOT", s.root())
        .env("DOCKER_CONFIG", docker_config)
        .output()
        .expect("running kiln")
}

/// `kiln build` of `ctx` as `app:1` (or as given with `-t`), reproducible dates.
fn build(s: &TestStore, ctx: &Path, docker_config: &Path, extra: &[&str]) -> Output {
    let iid = s.dir.path().join("iid");
    let mut args = vec![
        "build",
        "--progress=plain",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000000",
        "--iidfile",
        iid.to_str().unwrap(),
    ];
    if !extra.contains(&"-t") {
        args.extend(["-t", "app:1"]);
    }
    args.extend_from_slice(extra);
    args.push(".");
    kiln(s, ctx, docker_config, &args)
}

fn built(s: &TestStore, ctx: &Path, docker_config: &Path, extra: &[&str]) -> Output {
    let o = build(s, ctx, docker_config, extra);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    o
}

/// The records count of the `exporting cache to DEST done (N records, …)` line.
pub(crate) fn exported_records(o: &Output, dest: &str) -> usize {
    let err = stderr(o);
    let prefix = format!("exporting cache to {dest} done (");
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{err}"));
    line.split(' ').next().unwrap().parse().unwrap()
}

/// The cache manifest at `reference`, as skopeo reads it, checked to be a kiln cache.
fn cache_manifest(skopeo: &Path, reference: &str) -> Value {
    let m: Value = serde_json::from_str(&skopeo_inspect(skopeo, reference, true)).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], "application/vnd.kiln.cache.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.kiln.cache.records.v1+json"
    );
    m
}

#[test]
fn registry_cache_is_reused_by_an_empty_store() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let Some(skopeo) = need("skopeo", None) else {
        return;
    };
    let Some(a) = fresh() else { return };
    let docker = tempfile::tempdir().unwrap();
    let cfg = docker.path();
    let ctx = context(&a);
    let cache = format!("{}/cache:main", reg.host());
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");

    let o = built(&a, &ctx, cfg, &["--cache-to", &to]);
    let steps = count(&o, "cache miss:");
    assert_eq!(steps, 5, "{}", stderr(&o));
    let shown = format!("registry {cache}");
    assert!(
        stderr(&o).contains(&format!("exporting cache to {shown} done (")),
        "{}",
        stderr(&o)
    );
    let records = exported_records(&o, &shown);
    let id_a = image_id(&a);
    let m = cache_manifest(&skopeo, &cache);
    let layers = m["layers"].as_array().unwrap();
    assert!(layers.len() > 2, "{m}");
    for l in &layers[1..] {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }

    // Exported again: every blob is already there, the manifest is the same.
    let o = built(&a, &ctx, cfg, &["--cache-to", &to]);
    assert!(
        stderr(&o).contains(&format!(
            "exporting cache to {shown} done ({records} records, 0 blobs written"
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(cache_manifest(&skopeo, &cache), m);

    // A fresh store: every step comes from the registry, nothing runs, the same image.
    let Some(b) = fresh() else { return };
    let o = built(&b, &ctx, cfg, &["--cache-from", &from]);
    let err = stderr(&o);
    assert_eq!(count(&o, &format!("CACHED (from {shown})")), steps, "{err}");
    assert_eq!(count(&o, "cache miss:"), 0, "{err}");
    assert!(
        !err.contains(BUILDER_RAN) && !err.contains(FINAL_RAN),
        "{err}"
    );
    assert_eq!(image_id(&b), id_a);
    assert_eq!(
        std::fs::read_to_string(b.unpack("app:1").join("app/all.txt")).unwrap(),
        "app\nsource\nbuilt\n"
    );
    let check = kiln(&b, &ctx, cfg, &["system", "check"]);
    assert!(check.status.success(), "{}", stderr(&check));

    // The done-when: import, export and push in one command on a fresh store.
    let Some(c) = fresh() else { return };
    let app = format!("{}/kiln/app:1", reg.host());
    let o = built(
        &c,
        &ctx,
        cfg,
        &[
            "--cache-from",
            &from,
            "--cache-to",
            &to,
            "-t",
            &app,
            "--push",
        ],
    );
    let err = stderr(&o);
    assert_eq!(count(&o, &format!("CACHED (from {shown})")), steps, "{err}");
    assert!(
        err.contains(&format!("exporting cache to {shown} done (")),
        "{err}"
    );
    assert_eq!(image_id(&c), id_a);
    // The push finds every layer in the cache's repository: mounted, not compressed or sent.
    assert_eq!(count(&o, "Mounted from cache"), 4, "{err}");
    let info: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &app, false)).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 4, "{info}");
    assert_eq!(cache_manifest(&skopeo, &cache), m);

    // Exported to another repository of the registry: the layers are mounted, only the
    // cache's config and records documents are sent.
    let other = format!("{}/other/cache:1", reg.host());
    let o = built(
        &c,
        &ctx,
        cfg,
        &["--cache-to", &format!("type=registry,ref={other},mode=max")],
    );
    assert!(
        stderr(&o).contains(&format!(
            "exporting cache to registry {other} done ({records} records, 2 blobs written"
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(cache_manifest(&skopeo, &other)["layers"], m["layers"]);
}

#[test]
fn registry_cache_with_auth_tampering_and_missing_tags() {
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let Some(skopeo) = need("skopeo", None) else {
        return;
    };
    let Some(a) = fresh() else { return };
    let docker = tempfile::tempdir().unwrap();
    let cfg = docker.path();
    let ctx = context(&a);
    let cache = format!("{}/team/cache:main", reg.host());
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");

    // Not logged in: the export fails naming the registry; the image is built all the same.
    let o = build(&a, &ctx, cfg, &["--cache-to", &to]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unauthorized") && err.contains(&reg.host()),
        "{err}"
    );
    assert_eq!(a.config("app:1").rootfs.diff_ids.len(), 4);

    let login = kiln(
        &a,
        &ctx,
        cfg,
        &["login", "-u", "kiln", "-p", "s3cret", &reg.host()],
    );
    assert!(login.status.success(), "{}", stderr(&login));
    let o = built(&a, &ctx, cfg, &["--cache-to", &to]);
    assert!(
        stderr(&o).contains(&format!("exporting cache to registry {cache} done (")),
        "{}",
        stderr(&o)
    );
    let top = a.config("app:1").rootfs.diff_ids.last().unwrap().clone();

    // The final RUN's layer is corrupted in the registry's storage (one byte flipped).
    let creds = "--creds=kiln:s3cret";
    let m: Value = serde_json::from_str(&crate::util::run_tool(Command::new(&skopeo).args([
        "inspect",
        "--tls-verify=false",
        creds,
        "--raw",
        &format!("docker://{cache}"),
    ])))
    .unwrap();
    assert_eq!(m["artifactType"], "application/vnd.kiln.cache.v1");
    let records = m["layers"][0]["digest"].as_str().unwrap();
    let doc: Value =
        serde_json::from_slice(&std::fs::read(reg.blob_file(records)).unwrap()).unwrap();
    let blob = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["layers"].as_array().unwrap())
        .find(|l| l["diffId"] == top.as_str())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = reg.blob_file(&blob);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let Some(b) = fresh() else { return };
    let o = built(&b, &ctx, cfg, &["--cache-from", &from]);
    let err = stderr(&o);
    assert!(
        err.lines().any(|l| l.starts_with("[Warning]")
            && l.contains(&format!("registry {cache}"))
            && l.contains(&blob)),
        "{err}"
    );
    assert_eq!(count(&o, "cache miss:"), 1, "{err}");
    assert!(
        err.contains(FINAL_RAN) && !err.contains(BUILDER_RAN),
        "{err}"
    );
    assert_eq!(image_id(&b), image_id(&a));
    let check = kiln(&b, &ctx, cfg, &["system", "check"]);
    assert!(check.status.success(), "{}", stderr(&check));

    // A tag that does not exist: a warning naming it, and an ordinary build.
    let Some(c) = fresh() else { return };
    let nope = format!("{}/team/cache:nope", reg.host());
    let o = built(
        &c,
        &ctx,
        cfg,
        &["--cache-from", &format!("type=registry,ref={nope}")],
    );
    let err = stderr(&o);
    assert!(
        err.lines().any(|l| l.starts_with("[Warning]")
            && l.contains(&format!("registry {nope}"))
            && l.contains("manifest unknown")),
        "{err}"
    );
    assert_eq!(count(&o, "cache miss:"), 5, "{err}");

    // An unreachable registry: --cache-from warns, --cache-to fails naming it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}/cache:x", l.local_addr().unwrap().port())
    };
    write(
        &ctx,
        "Dockerfile",
        &format!("{DOCKERFILE}LABEL changed=1\n"),
    );
    let o = build(
        &c,
        &ctx,
        cfg,
        &[
            "--cache-from",
            &format!("type=registry,ref={dead}"),
            "--cache-to",
            &format!("type=registry,ref={dead}"),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let host = dead.split('/').next().unwrap();
    assert!(
        err.lines()
            .any(|l| l.starts_with("[Warning]") && l.contains(host) && l.contains("unreachable")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains(host) && l.contains("unreachable")),
        "{err}"
    );
    let labels = c.config("app:1").config.labels.unwrap_or_default();
    assert_eq!(labels.get("changed").map(String::as_str), Some("1"));
}
