//! Hostile metadata (issue 15 items 6 and 7): thousands of metadata
//! instructions cost store space linear in their number and rebuild from the cache, and
//! values that double line after line are a clear error at their line, with nothing left in
//! the store.

use std::fs;
use std::path::Path;

use crate::util::{stdout, Kiln};

/// Bytes of every file below `p` (symlinks not followed).
fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Names of the files in a directory (none when it is missing).
fn files_in(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The cache records of the store (the current version's directory).
fn cache_records(k: &Kiln) -> Vec<String> {
    let dir = k
        .root()
        .join("cache")
        .join(format!("v{}", kiln::cache::CACHE_VERSION));
    files_in(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect()
}

fn blobs(k: &Kiln) -> Vec<String> {
    files_in(&k.root().join("oci/blobs/sha256"))
}

fn context(k: &Kiln, dockerfile: &str) -> String {
    let ctx = k.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx.display().to_string()
}

const LINES: usize = 3000;

// Regression: every metadata step's cache record held the whole config and history so far,
// and its key serialised the whole config: 3,000 ENV lines wrote ~600 MB of cache in ~40 s,
// and a rebuild from an image with history missed every step after the first and wrote it
// all again.
#[test]
fn three_thousand_env_lines_cost_linear_store_space_and_rebuild_from_the_cache() {
    let k = Kiln::new();
    k.import_busybox("busybox:local", &[]);
    let mut df = String::from("FROM busybox:local\n");
    for i in 0..LINES {
        df.push_str(&format!("ENV V{i}=value-{i}\n"));
    }
    df.push_str("LABEL done=yes\n");
    let ctx = context(&k, &df);
    let before = dir_bytes(&k.root());
    let id = k.ok(&["build", "-q", "-t", "meta:1", &ctx]);
    let grown = dir_bytes(&k.root()) - before;
    assert!(grown < 50 << 20, "the store grew by {grown} bytes");
    let cache = dir_bytes(&k.root().join("cache"));
    assert!(
        cache < (LINES as u64) * 1024,
        "{cache} bytes of build cache for {LINES} steps"
    );
    let records = cache_records(&k);
    assert!(records.len() <= LINES + 2, "{} records", records.len());
    let env = &k.inspect("meta:1")["Config"]["Env"];
    // The imported base sets no PATH, so the image also gets BuildKit's default one.
    assert_eq!(env.as_array().map(Vec::len), Some(LINES + 1));

    // Nothing changed: every step hits, so the history keeps its times, the image its ID,
    // and the cache is not written again.
    let again = k.ok(&["build", "-q", "-t", "meta:1", &ctx]);
    assert_eq!(again, id);
    assert_eq!(cache_records(&k), records);

    // One more line writes one more record.
    df.push_str("ENV LAST=1\n");
    fs::write(k.path("ctx/Dockerfile"), &df).unwrap();
    k.ok(&["build", "-q", "-t", "meta:2", &ctx]);
    assert_eq!(cache_records(&k).len(), records.len() + 1);
    let check = k.run(&["system", "check"]);
    assert!(check.status.success(), "{}", stdout(&check));
}

/// `ENV A<k+1>=${A<k>}${A<k>}${A<k>}${A<k>}`: each line four times the one before.
fn doubling(lines: usize) -> String {
    let mut df = String::from("FROM busybox:local\nENV A0=0123456789abcdef\n");
    for i in 1..=lines {
        let p = i - 1;
        df.push_str(&format!("ENV A{i}=${{A{p}}}${{A{p}}}${{A{p}}}${{A{p}}}\n"));
    }
    df
}

// Regression: the value of line 15 asked for ~1 GB and kiln aborted with "memory allocation
// of 983040003 bytes failed" and a backtrace. A word now stops at 1 MiB: A8 (1 MiB) is the
// last that fits, A9 on line 11 fails, and nothing of the build stays in the store.
#[test]
fn doubling_env_values_fail_at_their_line_and_leave_the_store_unchanged() {
    let k = Kiln::new();
    k.import_busybox("busybox:local", &[]);
    let ctx = context(&k, &doubling(15));
    let blobs_before = blobs(&k);
    let err = k.fails(&["build", "-t", "doubled", &ctx]);
    assert!(err.contains("Dockerfile:11"), "{err}");
    assert!(
        err.contains("the expanded word is longer than 1048576 bytes"),
        "{err}"
    );
    assert!(!err.contains("memory allocation"), "{err}");
    assert!(
        err.len() < 4096,
        "a short message, not the value: {} bytes",
        err.len()
    );
    assert_eq!(blobs(&k), blobs_before);
    assert!(k.run(&["image", "inspect", "doubled"]).status.code() != Some(0));
    let check = k.run(&["system", "check"]);
    assert!(check.status.success(), "{}", stdout(&check));
}

// Regression: values that stay under the word limit but are copied line after line grew the
// config without bound (and with it every later record). Metadata stops at 8 MiB: the
// 1 MiB A8 copied into C1, C2, C3 passes it on C3's line.
#[test]
fn metadata_past_the_config_limit_fails_at_its_line() {
    let k = Kiln::new();
    k.import_busybox("busybox:local", &[]);
    let mut df = doubling(8);
    for c in 1..=3 {
        df.push_str(&format!("LABEL C{c}=$A8\n"));
    }
    let ctx = context(&k, &df);
    let blobs_before = blobs(&k);
    let err = k.fails(&["build", "-t", "big", &ctx]);
    assert!(err.contains("Dockerfile:13"), "{err}");
    assert!(err.contains("larger than kiln's limit of 8 MiB"), "{err}");
    assert_eq!(blobs(&k), blobs_before);

    // Two copies fit.
    df.truncate(df.rfind("LABEL C3").unwrap());
    fs::write(k.path("ctx/Dockerfile"), &df).unwrap();
    k.ok(&["build", "-q", "-t", "big", &ctx]);
    let check = k.run(&["system", "check"]);
    assert!(check.status.success(), "{}", stdout(&check));
}

// Regression: a metadata step's key serialised the whole config, history included; a hit
// replaced the config by the record's, whose history had been moved out, so the next
// metadata step's key differed from the first build's and everything after it rebuilt.
#[test]
fn run_after_metadata_on_a_base_with_history_is_cached_on_rebuild() {
    if !crate::util::require::require(nix::unistd::geteuid().is_root(), "root (RUN steps)") {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:local", &[]);
    let ctx = context(
        &k,
        "FROM busybox:local\nENV A=1\nARG B=2\nENV C=$B\nRUN echo $A$C > /f\nLABEL l=x\n",
    );
    let build = || k.run(&["build", "--progress=plain", "-t", "hist:1", &ctx]);
    let first = build();
    assert!(first.status.success(), "{}", crate::util::stderr(&first));
    let second = build();
    let text = crate::util::stderr(&second);
    assert!(second.status.success(), "{text}");
    assert_eq!(crate::build_cmd::cached_steps(&second), 1, "{text}");
    let id = k.ok(&["build", "-q", "-t", "hist:1", &ctx]);
    assert_eq!(k.ok(&["build", "-q", "-t", "hist:1", &ctx]), id);
}
