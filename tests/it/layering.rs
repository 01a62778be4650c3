//! The module layers of DESIGN.md, enforced: every `crate::X` a library module names must be
//! an arrow the design allows. A new dependency across layers fails here with the file and line,
//! and either the design changes (DESIGN.md and this table together) or the code does.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Module → the modules it may use. Keep in the order and wording of DESIGN.md's table.
const ALLOWED: &[(&str, &[&str])] = &[
    ("common", &[]),
    ("testutil", &[]),
    ("image", &["common"]),
    ("parser", &["common"]),
    ("archive", &["common", "image"]),
    ("store", &["common", "image", "archive"]),
    ("registry", &["common", "image", "store"]),
    ("context", &["common", "image"]),
    (
        "cache",
        &["common", "image", "store", "registry", "archive"],
    ),
    ("executor", &["common"]),
    (
        "rootfs",
        &[
            "common", "image", "archive", "store", "cache", "context", "executor",
        ],
    ),
    (
        "imageops",
        &[
            "common", "image", "archive", "store", "registry", "cache", "parser",
        ],
    ),
    ("planner", &["common", "image", "parser"]),
    (
        "build",
        &[
            "common", "image", "archive", "store", "registry", "context", "cache", "executor",
            "rootfs", "imageops", "planner",
        ],
    ),
    (
        "container",
        &[
            "common", "image", "archive", "store", "context", "cache", "executor", "rootfs",
            "imageops",
        ],
    ),
];

/// Files of a module that may use the parser although the module may not: the `--change`
/// instructions of `commit` and `import` are Dockerfile text.
const PARSER_EXCEPTIONS: &[&str] = &["src/imageops/change.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a line names through `crate::`, including grouped imports
/// (`use crate::{image::Digest, store::Store}`).
fn named_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        at_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_start {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                        continue;
                    }
                    if !item.is_empty() {
                        found.push(std::mem::take(&mut item));
                        at_start = false;
                    }
                }
            }
            if !item.is_empty() {
                found.push(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn library_modules_use_only_the_layers_below_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut parts = rel.trim_start_matches("src/").split('/');
        let first = parts.next().unwrap_or_default();
        let module = first.trim_end_matches(".rs");
        if matches!(module, "cli" | "main" | "lib") {
            continue;
        }
        let Some(may_use) = allowed.get(module) else {
            violations.push(format!(
                "{rel}: module `{module}` is not in the layer table"
            ));
            continue;
        };
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for used in named_modules(code) {
                // Every module may use the vocabulary below everything, and its tests the
                // one requirement helper.
                if used == module
                    || used == "common"
                    || used == "testutil"
                    || may_use.contains(&used.as_str())
                {
                    continue;
                }
                if used == "parser" && PARSER_EXCEPTIONS.contains(&rel.as_str()) {
                    continue;
                }
                violations.push(format!("{rel}:{}: `{module}` uses `{used}`", n + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies that DESIGN.md's layers do not allow:\n{}",
        violations.join("\n")
    );
}

#[test]
fn named_modules_reads_paths_and_grouped_imports() {
    assert_eq!(named_modules("use crate::store::Store;"), ["store"]);
    assert_eq!(
        named_modules("use crate::{image::{Digest, config}, store::{self, Store}};"),
        ["image", "store"]
    );
    assert_eq!(
        named_modules("let x = crate::common::time::now();"),
        ["common"]
    );
    assert!(named_modules("use std::fs;").is_empty());
}
