//! `kiln build --cache-to type=local` of one platform is the same whichever of two parallel
//! stages finished first: two builds of one Dockerfile in empty stores, with
//! SOURCE_DATE_EPOCH, whose stages finish in opposite orders, write the same cache manifest
//! and the same `index.json`.
//!
//! Which stage finishes first is set by a `--secret` (not part of a step's key) the stage's
//! RUN step sleeps for.

use std::fs;
use std::path::Path;

use crate::build_cache_export::{fresh, write};
use crate::util::{stderr, TestStore};

const DOCKERFILE: &str = "\
FROM busybox:local AS a
RUN --mount=type=secret,id=delay-a sleep \"$(cat /run/secrets/delay-a)\" && echo DONE-$((0))-A > /a
FROM busybox:local AS b
RUN --mount=type=secret,id=delay-b sleep \"$(cat /run/secrets/delay-b)\" && echo DONE-$((0))-B > /b
FROM busybox:local
COPY --from=a /a /a
COPY --from=b /b /b
";

/// Builds in `s` with stage `a` sleeping `delay_a` seconds and `b` `delay_b`, exporting the
/// cache to `s`'s `cache` directory. Returns the build's stderr.
fn build(s: &TestStore, delay_a: &str, delay_b: &str) -> String {
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "Dockerfile", DOCKERFILE);
    let secrets = s.dir.path().join("secrets");
    write(&secrets, "a", delay_a);
    write(&secrets, "b", delay_b);
    let sec_a = format!("id=delay-a,src={}", secrets.join("a").display());
    let sec_b = format!("id=delay-b,src={}", secrets.join("b").display());
    let to = format!(
        "type=local,dest={},mode=max",
        s.dir.path().join("cache").display()
    );
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "--progress=plain",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "--secret",
            &sec_a,
            "--secret",
            &sec_b,
            "--cache-to",
            &to,
            "-t",
            "app:1",
            ".",
        ],
        None,
    );
    let err = stderr(&o);
    assert!(o.status.success(), "build failed:\n{err}");
    err
}

/// The line of `err` (plain progress) where the RUN step of `stage` (`A` or `B`) ended:
/// its `#N DONE` line.
fn finished_at(err: &str, stage: &str) -> usize {
    let marker = format!("DONE-$((0))-{stage}");
    let id = err
        .lines()
        .find(|l| l.contains(&marker))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no step {marker} in:\n{err}"));
    let done = format!("{id} DONE ");
    err.lines()
        .position(|l| l.starts_with(&done))
        .unwrap_or_else(|| panic!("no {done:?} line in:\n{err}"))
}

/// The cache layout's `index.json` and the cache manifest it tags, as bytes.
fn exported(s: &TestStore) -> (Vec<u8>, Vec<u8>) {
    let dir = s.dir.path().join("cache");
    let index = fs::read(dir.join("index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let digest = v["manifests"][0]["digest"].as_str().unwrap();
    let manifest = fs::read(
        Path::new(&dir)
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    (index, manifest)
}

#[test]
fn one_platform_cache_export_is_the_same_whichever_stage_finishes_first() {
    let (Some(first), Some(second)) = (fresh(), fresh()) else {
        return;
    };
    // Stage a first, then stage b first.
    let err1 = build(&first, "0", "3");
    let err2 = build(&second, "3", "0");
    assert!(
        finished_at(&err1, "A") < finished_at(&err1, "B"),
        "a before b:\n{err1}"
    );
    assert!(
        finished_at(&err2, "B") < finished_at(&err2, "A"),
        "b before a:\n{err2}"
    );
    let (index1, manifest1) = exported(&first);
    let (index2, manifest2) = exported(&second);
    assert_eq!(
        String::from_utf8_lossy(&manifest1),
        String::from_utf8_lossy(&manifest2),
        "the same cache manifest"
    );
    assert_eq!(index1, index2, "the same index.json");
}
