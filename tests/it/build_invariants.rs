//! Properties every Dockerfile of the suite must have, checked over all of them: the build
//! corpus `testdata/builds/*`, BuildKit's golden cases `testdata/buildkit/*` and the examples
//! `examples/*`. A new case is a new folder (a `Dockerfile`, its context in `context/` or
//! beside it); no code.
//!
//! For each case:
//! * (a) an unchanged rebuild in the same store is all CACHED and gives the same image ID;
//! * (b) a build in a second, empty store over the same base computes the same step keys and,
//!   with `SOURCE_DATE_EPOCH`, the same image ID;
//! * (c) `--no-cache` under `SOURCE_DATE_EPOCH` gives the same layer diffIDs.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::{stderr, TestStore};

const EPOCH: &str = "1700000000";

/// The case folders: those of the corpora that hold a Dockerfile that builds (a golden case
/// that records BuildKit's error, or one kiln deliberately refuses, is not a build).
fn cases() -> Vec<PathBuf> {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for corpus in ["testdata/builds", "testdata/buildkit", "examples"] {
        let Ok(rd) = fs::read_dir(top.join(corpus)) else {
            continue;
        };
        for e in rd.flatten() {
            let dir = e.path();
            if !dir.join("Dockerfile").is_file() {
                continue;
            }
            let golden = fs::read_to_string(dir.join("golden.json")).unwrap_or_default();
            let differs = fs::read_to_string(dir.join("kiln-differs")).unwrap_or_default();
            if golden.contains("\"error\"") || differs.contains("kiln-error: ") {
                continue;
            }
            out.push(dir);
        }
    }
    out.sort();
    out
}

/// The case's build context, made in `scratch`: its `context/` folder with the modes of a
/// `modes` file (the golden corpus's conventions), an empty directory for a case without
/// one, or the folder itself for an example.
fn context_of(case: &Path, scratch: &Path) -> PathBuf {
    if case.parent().is_some_and(|p| p.ends_with("examples")) {
        return case.to_path_buf();
    }
    let ctx = scratch.join(format!(
        "ctx-{}",
        case.file_name().unwrap().to_string_lossy()
    ));
    if !ctx.exists() {
        fs::create_dir_all(&ctx).unwrap();
        crate::buildkit_goldens::prepare_context(case, &ctx);
    }
    ctx
}

/// The case's build arguments (`args`: `KEY=VALUE` lines).
fn args_of(case: &Path) -> Vec<String> {
    fs::read_to_string(case.join("args"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .flat_map(|kv| ["--build-arg".to_string(), kv.to_string()])
        .collect()
}

/// A store holding the test base as `busybox` and `busybox:local`; the second store gets the
/// first one's base through save and load, so both have the same base image.
fn stores() -> Option<(TestStore, TestStore)> {
    let a = TestStore::new();
    a.busybox("busybox:local")?;
    let here = a.dir.path().to_path_buf();
    let ok = |s: &TestStore, args: &[&str]| {
        let o = s.kiln(&here, args, None);
        assert!(o.status.success(), "kiln {args:?}: {}", stderr(&o));
    };
    ok(&a, &["tag", "busybox:local", "busybox:latest"]);
    let tar = here.join("base.tar");
    let tar_s = tar.to_str().unwrap().to_string();
    ok(
        &a,
        &["save", "-o", &tar_s, "busybox:local", "busybox:latest"],
    );
    let b = TestStore::new();
    ok(&b, &["load", "-i", &tar_s]);
    Some((a, b))
}

/// One build's outcome, from `--progress=json`.
struct Built {
    out: Output,
    id: String,
    cached: usize,
    misses: Vec<String>,
}

fn build(s: &TestStore, case: &Path, tag: &str, extra: &[&str], epoch: bool) -> Built {
    let iid = s.dir.path().join(format!("{tag}.iid"));
    let dockerfile = case.join("Dockerfile");
    let mut args = vec![
        "build",
        "--progress=json",
        "-f",
        dockerfile.to_str().unwrap(),
        "-t",
        tag,
        "--iidfile",
        iid.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let case_args = args_of(case);
    args.extend(case_args.iter().map(String::as_str));
    if epoch {
        args.extend_from_slice(&["--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    }
    args.push(".");
    let ctx = context_of(case, s.dir.path());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(&args).current_dir(&ctx).env("KILN_ROOT", s.root());
    if epoch {
        cmd.env("SOURCE_DATE_EPOCH", EPOCH);
    } else {
        cmd.env_remove("SOURCE_DATE_EPOCH");
    }
    let out = cmd.output().expect("running kiln");
    let mut cached = 0;
    let mut misses = Vec::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("cached") => cached += 1,
            Some("cache-miss") => misses.push(format!(
                "#{} {}",
                v["id"],
                v["reason"].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }
    let id = fs::read_to_string(&iid).unwrap_or_default();
    Built {
        out,
        id,
        cached,
        misses,
    }
}

/// The keys of the cache records in a store: one file per step key.
fn keys(s: &TestStore) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if e.file_name() != "builds" {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "json") {
                out.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&s.root().join("cache"), &mut out);
    out
}

fn diff_ids(s: &TestStore, tag: &str) -> Vec<String> {
    s.config(tag).rootfs.diff_ids
}

#[test]
fn every_dockerfile_rebuilds_cached_and_agrees_across_stores() {
    let Some((a, b)) = stores() else {
        return;
    };
    let cases = cases();
    assert!(cases.len() >= 8, "the corpus is missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(case)
            .display()
            .to_string();
        let mut fail = |what: String| failures.push(format!("{name}: {what}"));
        let tag = format!("inv-{}", case.file_name().unwrap().to_string_lossy());
        // (a) cold build, then an unchanged rebuild: all cached, same image.
        let first = build(&a, case, &tag, &[], false);
        if !first.out.status.success() {
            fail(format!("build failed:\n{}", stderr(&first.out)));
            continue;
        }
        let again = build(&a, case, &tag, &[], false);
        if !again.misses.is_empty() {
            fail(format!("rebuild missed: {:?}", again.misses));
        }
        if again.cached != first.misses.len() + first.cached {
            fail(format!(
                "rebuild cached {} steps, the first build had {}",
                again.cached,
                first.misses.len() + first.cached
            ));
        }
        if again.id != first.id {
            fail(format!(
                "rebuild changed the image: {} → {}",
                first.id, again.id
            ));
        }
        // (b) the same under SOURCE_DATE_EPOCH in both stores: same keys, same image.
        let before_a = keys(&a);
        let in_a = build(&a, case, &tag, &[], true);
        let in_b = build(&b, case, &tag, &[], true);
        if !in_b.out.status.success() || !in_a.out.status.success() {
            fail(format!(
                "SOURCE_DATE_EPOCH build failed:\n{}{}",
                stderr(&in_a.out),
                stderr(&in_b.out)
            ));
            continue;
        }
        let new_in_a: BTreeSet<String> = keys(&a).difference(&before_a).cloned().collect();
        let in_b_keys = keys(&b);
        if !new_in_a.is_subset(&in_b_keys) {
            fail(format!(
                "step keys differ between two stores: only in the first {:?}, only in the second {:?}",
                new_in_a.difference(&in_b_keys).collect::<Vec<_>>(),
                in_b_keys.difference(&keys(&a)).collect::<Vec<_>>()
            ));
        }
        if in_a.id != in_b.id {
            fail(format!(
                "two stores gave two images: {} and {}",
                in_a.id, in_b.id
            ));
        }
        // (c) --no-cache rebuilds every step and gives the same layers.
        let layers = diff_ids(&a, &tag);
        let fresh = build(&a, case, &tag, &["--no-cache"], true);
        if !fresh.out.status.success() {
            fail(format!("--no-cache build failed:\n{}", stderr(&fresh.out)));
            continue;
        }
        if diff_ids(&a, &tag) != layers {
            fail("--no-cache gave other layer diffIDs".to_string());
        }
        if fresh.id != in_a.id {
            fail(format!(
                "--no-cache gave another image: {} → {}",
                in_a.id, fresh.id
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases break an invariant:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
