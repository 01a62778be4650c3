//! BuildKit goldens: builds every case folder of testdata/buildkit with kiln and compares what
//! the build added (files, layers, history, config) with BuildKit's recorded result.
//!
//! The corpus is walked, not listed: a new case is a new folder with a golden.json written by
//! scripts/record-goldens.sh (conventions in testdata/buildkit/README.md). The summary below is
//! the Rust twin of scripts/golden-summary.py; keep the two in step. `KILN_GOLDENS=a,b` runs
//! only the named cases.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::util::{stderr, TestStore};

/// The base image every case names (`FROM busybox:local`).
const BASE: &str = "busybox:local";

/// The config fields a golden records (Docker's names), plus the top-level `author`.
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/buildkit")
}

// Every case of the corpus builds with kiln as it did with BuildKit; all differing cases are
// reported in one failure.
#[test]
fn kiln_matches_buildkit_goldens() {
    let store = TestStore::new();
    if store.busybox(BASE).is_none() {
        return;
    }
    let only: Option<Vec<String>> = std::env::var("KILN_GOLDENS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_owned).collect());
    let base = Base::new(&store);
    let mut cases: Vec<PathBuf> = fs::read_dir(corpus())
        .expect("reading testdata/buildkit")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .filter(|p| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|n| p.ends_with(n)))
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in testdata/buildkit");
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let outcome = check_case(&store, &base, dir);
        // A deliberate difference (README: "Where kiln differs from BuildKit") is written
        // down beside the case: kiln must still differ, and in the documented way.
        if let Ok(note) = fs::read_to_string(dir.join("kiln-differs")) {
            let want = note
                .lines()
                .find_map(|l| l.strip_prefix("kiln-error: "))
                .unwrap_or_default();
            match outcome {
                None => failures.push(format!(
                    "== {name}\n  kiln now matches BuildKit: remove kiln-differs and the README entry"
                )),
                Some(diff) if !diff.contains(want) => failures.push(format!(
                    "== {name}\n  differs, but not as kiln-differs says ({want:?}):\n{diff}"
                )),
                Some(_) => {}
            }
            continue;
        }
        if let Some(diff) = outcome {
            failures.push(format!("== {name}\n{diff}"));
        }
    }
    println!(
        "buildkit goldens: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from BuildKit (- BuildKit, + kiln):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The base image's layers, history length and files, to subtract from every result.
struct Base {
    diff_ids: Vec<String>,
    history: usize,
    tree: BTreeMap<String, Entry>,
    /// sha256 of a base file's content → its first path, so content equal to a base file
    /// (`RUN ln /bin/busybox /x`) does not depend on the host's busybox.
    digests: BTreeMap<String, String>,
}

impl Base {
    fn new(store: &TestStore) -> Base {
        let spec = store.config(BASE);
        let tree = walk(&store.unpack(BASE));
        let mut digests = BTreeMap::new();
        for (p, e) in &tree {
            if let Some(sha) = &e.sha256 {
                digests.entry(sha.clone()).or_insert_with(|| p.clone());
            }
        }
        Base {
            diff_ids: spec.rootfs.diff_ids.clone(),
            history: spec.history.len(),
            tree,
            digests,
        }
    }
}

/// Builds one case; `None` when kiln matches the golden, else the readable difference.
fn check_case(store: &TestStore, base: &Base, dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let golden_path = dir.join("golden.json");
    let golden: Value = match fs::read_to_string(&golden_path) {
        Ok(t) => match serde_json::from_str(&t) {
            Ok(v) => v,
            Err(e) => return Some(format!("golden.json does not parse: {e}")),
        },
        Err(e) => {
            return Some(format!(
                "no golden.json ({e}): record it with scripts/record-goldens.sh"
            ))
        }
    };
    let ctx = tempfile::tempdir_in(store.dir.path()).expect("context dir");
    prepare_context(dir, ctx.path());
    let tag = format!("golden/{name}:1");
    let dockerfile = dir.join("Dockerfile").display().to_string();
    let mut args: Vec<String> = vec![
        "build".into(),
        "--progress=plain".into(),
        "-t".into(),
        tag.clone(),
        "-f".into(),
        dockerfile,
        "--build-arg".into(),
        "SOURCE_DATE_EPOCH=1700000000".into(),
    ];
    if let Ok(text) = fs::read_to_string(dir.join("args")) {
        for kv in text.lines().filter(|l| !l.is_empty()) {
            args.push("--build-arg".into());
            args.push(kv.to_owned());
        }
    }
    args.push(".".into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = store.kiln(ctx.path(), &argv, None);
    let refused = golden.get("error").and_then(Value::as_str);
    match (refused, out.status.success()) {
        (Some(_), false) => None,
        (Some(msg), true) => Some(format!(
            "  BuildKit refuses this case, kiln built it\n  BuildKit: {msg}"
        )),
        (None, false) => Some(format!(
            "  BuildKit builds this case, kiln failed:\n{}",
            indent(last_lines(&stderr(&out), 6))
        )),
        (None, true) => {
            let got = summarize(store, base, &tag);
            diff(&golden, &got)
        }
    }
}

fn indent(s: String) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Copies `case/context` into `ctx` with the modes git cannot keep (directories 0755, files
/// 0755 if executable else 0644, everything root's), then applies the case's `modes` file
/// (`MODE PATH` lines), as scripts/record-goldens.sh does.
pub(crate) fn prepare_context(case: &Path, ctx: &Path) {
    let src = case.join("context");
    if src.is_dir() {
        copy_tree(&src, ctx);
    }
    if let Ok(text) = fs::read_to_string(case.join("modes")) {
        for line in text.lines() {
            let Some((mode, path)) = line.split_once(' ') else {
                continue;
            };
            let mode = u32::from_str_radix(mode, 8).expect("octal mode in modes file");
            fs::set_permissions(ctx.join(path), fs::Permissions::from_mode(mode))
                .expect("applying modes file");
        }
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    let mut entries: Vec<_> = fs::read_dir(src)
        .expect("reading context")
        .map(|e| e.expect("context entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let to = dst.join(e.file_name());
        let meta = fs::symlink_metadata(&from).expect("context entry");
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&from).expect("context link");
            std::os::unix::fs::symlink(target, &to).expect("context link");
        } else if meta.is_dir() {
            fs::create_dir(&to).expect("context dir");
            copy_tree(&from, &to);
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).expect("chmod");
        } else {
            fs::copy(&from, &to).expect("context file");
            let mode = if meta.mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        std::os::unix::fs::lchown(&to, Some(0), Some(0)).expect("chown context");
    }
}

/// One path of an image's merged tree.
#[derive(Clone, PartialEq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    sha256: Option<String>,
    target: Option<String>,
}

impl Entry {
    fn describe(&self, digests: &BTreeMap<String, String>) -> String {
        let mut s = format!("{} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid);
        if let Some(t) = &self.target {
            s.push_str(&format!(" -> {t}"));
        }
        if let Some(sha) = &self.sha256 {
            match digests.get(sha) {
                Some(p) => s.push_str(&format!(" content=base:{p}")),
                None => s.push_str(&format!(" size={} sha256={}", self.size, &sha[..16])),
            }
        }
        s
    }
}

/// The merged tree under `root`, keyed by absolute path (the root itself left out).
fn walk(root: &Path) -> BTreeMap<String, Entry> {
    fn go(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Entry>) {
        for e in fs::read_dir(dir).expect("reading unpacked image") {
            let e = e.expect("entry");
            let path = format!("{prefix}/{}", e.file_name().to_string_lossy());
            let m = fs::symlink_metadata(e.path()).expect("metadata");
            let ft = m.file_type();
            let mut entry = Entry {
                kind: "other",
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: 0,
                sha256: None,
                target: None,
            };
            if ft.is_dir() {
                entry.kind = "dir";
                go(&e.path(), &path, out);
            } else if ft.is_symlink() {
                entry.kind = "symlink";
                entry.target = Some(
                    fs::read_link(e.path())
                        .expect("link")
                        .to_string_lossy()
                        .into_owned(),
                );
            } else if ft.is_file() {
                let bytes = fs::read(e.path()).expect("file");
                entry.kind = "file";
                entry.size = bytes.len() as u64;
                entry.sha256 = Some(hex(&Sha256::digest(&bytes)));
            }
            out.insert(path, entry);
        }
    }
    let mut out = BTreeMap::new();
    go(root, "", &mut out);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An absolute, clean path from a tar entry name.
fn norm(name: &str) -> String {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("./") {
        n = rest;
    }
    let n = n.trim_matches('/');
    if n.is_empty() || n == "." {
        "/".into()
    } else {
        format!("/{n}")
    }
}

/// The non-directory entries of one layer, as golden-summary.py lists them.
fn layer_listing(store: &kiln::store::Store, diff_id: &str) -> Vec<String> {
    let digest = kiln::image::Digest::parse(diff_id).expect("diffID");
    let mut f = store.open_blob(&digest).expect("layer blob");
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).expect("reading layer");
    let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut ar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for e in ar.entries().expect("layer tar") {
        let e = e.expect("layer entry");
        let p = norm(&String::from_utf8_lossy(&e.path_bytes()));
        let (parent, base) = p.rsplit_once('/').unwrap_or(("", &p));
        let parent = if parent.is_empty() { "/" } else { parent };
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        if base == ".wh..wh..opq" {
            out.push(format!("{parent} opaque"));
        } else if let Some(gone) = base.strip_prefix(".wh.") {
            out.push(format!("{}/{gone} whiteout", parent.trim_end_matches('/')));
        } else {
            match e.header().entry_type() {
                tar::EntryType::Directory => {}
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    out.push(format!("{p} file"))
                }
                tar::EntryType::Symlink => {
                    out.push(format!("{p} symlink -> {}", link.unwrap_or_default()))
                }
                tar::EntryType::Link => out.push(format!(
                    "{p} hardlink -> {}",
                    norm(&link.unwrap_or_default())
                )),
                _ => out.push(format!("{p} other")),
            }
        }
    }
    out.sort();
    out
}

/// kiln's result for `tag`, in golden.json's shape.
fn summarize(store: &TestStore, base: &Base, tag: &str) -> Value {
    let s = kiln::store::Store::open(store.root()).expect("store");
    let rec = s.resolve(tag).expect("built image");
    let raw = s
        .read_blob(&rec.id, "config", 1 << 20)
        .expect("config blob");
    let cfg: Value = serde_json::from_slice(&raw).expect("config json");
    let diff_ids: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let n = if diff_ids.starts_with(&base.diff_ids) {
        base.diff_ids.len()
    } else {
        0
    };
    let skip_history = if n > 0 { base.history } else { 0 };
    let history: Vec<Value> = cfg["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .skip(skip_history)
                .map(|e| {
                    json!(if e["empty_layer"].as_bool().unwrap_or(false) {
                        "empty"
                    } else {
                        "layer"
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let layers: Vec<Value> = diff_ids[n..]
        .iter()
        .map(|d| json!(layer_listing(&s, d)))
        .collect();

    let empty = BTreeMap::new();
    let before = if n > 0 { &base.tree } else { &empty };
    let after = walk(&store.unpack(tag));
    let mut paths: Vec<&String> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut tree = Vec::new();
    for p in paths {
        match (before.get(p), after.get(p)) {
            (Some(_), None) => tree.push(json!(format!("{p} removed"))),
            (old, Some(now)) => {
                let d = now.describe(&base.digests);
                if old.map(|o| o.describe(&base.digests)) != Some(d.clone()) {
                    tree.push(json!(format!("{p} {d}")));
                }
            }
            (None, None) => {}
        }
    }

    let c = &cfg["config"];
    let mut config = Map::new();
    for f in CONFIG_FIELDS {
        if present(&c[*f]) {
            config.insert((*f).to_owned(), c[*f].clone());
        }
    }
    if present(&cfg["author"]) {
        config.insert("Author".into(), cfg["author"].clone());
    }
    json!({"config": config, "history": history, "layers": layers, "tree": tree})
}

/// Null, empty lists, maps and strings count as absent (Docker writes them either way).
fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// One line per fact, so two summaries diff line by line.
fn lines(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = v["config"].as_object() {
        for (k, val) in c {
            out.push(format!("config {k} = {val}"));
        }
    }
    out.push(format!("history = {}", v["history"]));
    let layers = v["layers"].as_array().cloned().unwrap_or_default();
    out.push(format!("layers = {}", layers.len()));
    for (i, l) in layers.iter().enumerate() {
        for e in l.as_array().cloned().unwrap_or_default() {
            out.push(format!(
                "layer {} has {}",
                i + 1,
                e.as_str().unwrap_or_default()
            ));
        }
    }
    for t in v["tree"].as_array().cloned().unwrap_or_default() {
        out.push(format!("tree {}", t.as_str().unwrap_or_default()));
    }
    out
}

/// The lines only one side has (`-` BuildKit, `+` kiln), in order; `None` when equal.
fn diff(golden: &Value, got: &Value) -> Option<String> {
    let want = lines(golden);
    let have = lines(got);
    let mut all: Vec<(&String, char)> = want
        .iter()
        .filter(|l| !have.contains(l))
        .map(|l| (l, '-'))
        .chain(have.iter().filter(|l| !want.contains(l)).map(|l| (l, '+')))
        .collect();
    if all.is_empty() {
        return None;
    }
    all.sort();
    Some(
        all.iter()
            .map(|(l, side)| format!("  {side} {l}\n"))
            .collect(),
    )
}
