//! `kiln build --cache-to type=local` / `--cache-from type=local` across empty stores: a
//! build on a fresh store reuses every step another store exported, verifies every layer it
//! takes, and falls back to building when the exported cache is missing or tampered with.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use crate::util::TestStore;

/// Printed only when a RUN step really runs (the step's own text does not contain it).
pub(crate) const BUILDER_RAN: &str = "RAN-11-BUILDER";
pub(crate) const FINAL_RAN: &str = "RAN-22-FINAL";

pub(crate) const DOCKERFILE: &str = "\
FROM busybox:local AS builder
COPY src.txt /src.txt
RUN echo RAN-$((10+1))-BUILDER && cat /src.txt > /built.txt && echo built >> /built.txt
FROM busybox:local
ENV APP=/app
COPY --from=builder /built.txt /app/built.txt
COPY app.txt /app/app.txt
RUN echo RAN-$((20+2))-FINAL && cat /app/*.txt > /app/all.txt
";

pub(crate) fn write(dir: &Path, rel: &str, data: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn count(o: &Output, pat: &str) -> usize {
    stderr(o).lines().filter(|l| l.contains(pat)).count()
}

/// A store with only the busybox base, or `None` when the host cannot run RUN steps.
pub(crate) fn fresh() -> Option<TestStore> {
    let s = TestStore::new();
    s.busybox("busybox:local")?;
    Some(s)
}

fn build(s: &TestStore, ctx: &Path, extra: &[&str]) -> Output {
    let iid = s.dir.path().join("iid");
    let mut args = vec![
        "build",
        "--progress=plain",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000000",
        "-t",
        "app:1",
        "--iidfile",
        iid.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(".");
    let o = s.kiln(ctx, &args, None);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    o
}

pub(crate) fn image_id(s: &TestStore) -> String {
    fs::read_to_string(s.dir.path().join("iid")).unwrap()
}

fn records_in(cache: &Path) -> usize {
    records_doc(cache)["records"].as_array().unwrap().len()
}

/// The records document of the cache in `cache`, after checking the layout around it.
fn records_doc(cache: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(cache.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let blob = |d: &str| {
        cache
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(entry["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.kiln.cache.v1");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    let records = &manifest["layers"][0];
    assert_eq!(
        records["mediaType"],
        "application/vnd.kiln.cache.records.v1+json"
    );
    for l in manifest["layers"].as_array().unwrap()[1..].iter() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let d = l["digest"].as_str().unwrap();
        assert_eq!(
            fs::metadata(blob(d)).unwrap().len(),
            l["size"].as_u64().unwrap(),
            "{d}"
        );
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(records["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    assert_eq!(doc["version"], kiln::cache::transfer::RECORDS_VERSION);
    doc
}

pub(crate) fn context(s: &TestStore) -> std::path::PathBuf {
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "Dockerfile", DOCKERFILE);
    write(&ctx, "src.txt", "source\n");
    write(&ctx, "app.txt", "app\n");
    ctx
}

#[test]
fn cache_exported_from_one_store_is_reused_by_an_empty_one() {
    let Some(a) = fresh() else { return };
    let ctx = context(&a);
    let max = a.dir.path().join("cache-max");
    let min = a.dir.path().join("cache-min");
    let max_to = format!("type=local,dest={},mode=max", max.display());
    let min_to = format!("type=local,dest={}", min.display());
    let built = build(&a, &ctx, &["--cache-to", &max_to, "--cache-to", &min_to]);
    let steps = count(&built, "cache miss:");
    assert_eq!(steps, 5, "{}", stderr(&built));
    assert_eq!(count(&built, BUILDER_RAN) + count(&built, FINAL_RAN), 2);
    let id_a = image_id(&a);
    assert!(fs::read_to_string(max.join("oci-layout"))
        .unwrap()
        .contains("1.0.0"));
    // max: every step of both stages (3 of them metadata or FS steps of the final stage
    // plus ENV); min: only the final stage's.
    let (n_max, n_min) = (records_in(&max), records_in(&min));
    assert!(n_max > n_min, "max {n_max} records, min {n_min}");
    assert_eq!(n_max - n_min, 2, "the builder stage's COPY and RUN");

    // Exporting again to the same directory rewrites no blob.
    let inodes = |dir: &Path| -> Vec<(String, u64)> {
        let mut v: Vec<_> = fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().ino(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = inodes(&max);
    let again = build(&a, &ctx, &["--cache-to", &max_to]);
    assert_eq!(count(&again, " CACHED"), steps);
    assert!(
        stderr(&again).contains(&format!(
            "exporting cache to cache {} done ({n_max} records, 0 blobs written",
            max.display()
        )),
        "{}",
        stderr(&again)
    );
    assert_eq!(inodes(&max), before);

    // Other OCI tools read the export: skopeo copies it, checking every blob's digest.
    if let Some(skopeo) = crate::util::require::tool("skopeo", "apt-get install skopeo") {
        let copy = a.dir.path().join("copied");
        crate::util::run_tool(std::process::Command::new(skopeo).args([
            "copy".to_string(),
            format!("oci:{}:latest", max.display()),
            format!("oci:{}:cache", copy.display()),
        ]));
    }

    // A fresh store with the max cache: every step cached, nothing runs, same image.
    let Some(b) = fresh() else { return };
    let from_max = format!("type=local,src={}", max.display());
    // (Exporting to the cache it imports from, as CI jobs do: nothing there changes.)
    let o = build(
        &b,
        &ctx,
        &["--cache-from", &from_max, "--cache-to", &max_to],
    );
    assert_eq!(inodes(&max), before);
    assert_eq!(
        count(&o, &format!("CACHED (from cache {})", max.display())),
        steps,
        "{}",
        stderr(&o)
    );
    assert_eq!(count(&o, "cache miss:"), 0, "{}", stderr(&o));
    assert!(
        !stderr(&o).contains(BUILDER_RAN) && !stderr(&o).contains(FINAL_RAN),
        "{}",
        stderr(&o)
    );
    assert_eq!(image_id(&b), id_a);
    assert_eq!(
        fs::read_to_string(b.unpack("app:1").join("app/all.txt")).unwrap(),
        "app\nsource\nbuilt\n"
    );
    // The imported records are now local: the next build hits without --cache-from.
    let o = build(&b, &ctx, &[]);
    assert_eq!(count(&o, " CACHED"), steps, "{}", stderr(&o));
    let check = b.kiln(&ctx, &["system", "check"], None);
    assert!(check.status.success(), "{}", stderr(&check));

    // With the min cache the builder stage is not in it: it runs; the final stage's steps
    // are hits (the builder's result is the same bytes).
    let Some(c) = fresh() else { return };
    let from_min = format!("type=local,src={}", min.display());
    let o = build(&c, &ctx, &["--cache-from", &from_min]);
    assert!(stderr(&o).contains(BUILDER_RAN), "{}", stderr(&o));
    assert!(!stderr(&o).contains(FINAL_RAN), "{}", stderr(&o));
    assert_eq!(count(&o, "cache miss:"), 2, "{}", stderr(&o));
    assert_eq!(image_id(&c), id_a);

    // A changed context file misses from its COPY on, and only there.
    let Some(d) = fresh() else { return };
    let ctx2 = context(&d);
    write(&ctx2, "app.txt", "changed\n");
    let o = build(&d, &ctx2, &["--cache-from", &from_max]);
    assert_eq!(count(&o, "cache miss:"), 2, "{}", stderr(&o));
    assert_eq!(
        count(&o, " CACHED (from cache"),
        steps - 2,
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(BUILDER_RAN) && stderr(&o).contains(FINAL_RAN));
    assert_eq!(
        fs::read_to_string(d.unpack("app:1").join("app/all.txt")).unwrap(),
        "changed\nsource\nbuilt\n"
    );
}

#[test]
fn tampered_or_missing_cache_falls_back_to_building() {
    let Some(a) = fresh() else { return };
    let ctx = context(&a);
    let cache = a.dir.path().join("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());
    build(&a, &ctx, &["--cache-to", &to]);
    let top = a.config("app:1").rootfs.diff_ids.last().unwrap().clone();

    // The final RUN's layer is corrupted (same size, one byte flipped).
    let doc = records_doc(&cache);
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
    let path = cache
        .join("blobs/sha256")
        .join(blob.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&path, &bytes).unwrap();

    let Some(b) = fresh() else { return };
    let from = format!("type=local,src={}", cache.display());
    let o = build(&b, &ctx, &["--cache-from", &from]);
    let err = stderr(&o);
    assert!(
        err.lines().any(|l| l.starts_with("[Warning]")
            && l.contains(&format!("cache {}", cache.display()))
            && l.contains(&blob)),
        "{err}"
    );
    assert_eq!(count(&o, "cache miss:"), 1, "{err}");
    assert!(
        err.contains(FINAL_RAN) && !err.contains(BUILDER_RAN),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(b.unpack("app:1").join("app/all.txt")).unwrap(),
        "app\nsource\nbuilt\n"
    );
    let check = b.kiln(&ctx, &["system", "check"], None);
    assert!(check.status.success(), "{}", stderr(&check));

    // A source that does not exist, or is not a cache: a warning, and a normal build.
    let Some(c) = fresh() else { return };
    let missing = c.dir.path().join("no-such-cache");
    let garbage = c.dir.path().join("garbage");
    write(&garbage, "index.json", "{not json");
    let o = build(
        &c,
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", missing.display()),
            "--cache-from",
            &format!("type=local,src={}", garbage.display()),
        ],
    );
    let err = stderr(&o);
    for dir in [&missing, &garbage] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("[Warning]")
                    && l.contains(&format!("cache {}", dir.display()))),
            "{err}"
        );
    }
    assert_eq!(count(&o, "cache miss:"), 5, "{err}");
}
