//! BuildKit conformance: walks testdata/conformance/buildkit and checks every case.

use std::fs;
use std::path::{Path, PathBuf};

use kiln::parser;

use crate::util::corpus;

pub fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn parser_testfiles_dump_matches_result() {
    let mut failed = Vec::new();
    let dirs = case_dirs(&corpus().join("parser/testfiles"));
    for dir in &dirs {
        let src = fs::read(dir.join("Dockerfile")).unwrap();
        let want = fs::read_to_string(dir.join("result")).unwrap();
        match parser::parse_bytes(&src) {
            Ok(df) => {
                let got = parser::dump(&df);
                if got != want {
                    failed.push(format!(
                        "{}:\n--- want\n{want}--- got\n{got}",
                        dir.display()
                    ));
                }
            }
            Err(e) => failed.push(format!("{}: error {e}", dir.display())),
        }
    }
    println!(
        "parser/testfiles: {} passed, {} failed, 0 skipped",
        dirs.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn parser_negative_testfiles_fail() {
    let dirs = case_dirs(&corpus().join("parser/testfiles-negative"));
    let mut failed = Vec::new();
    for dir in &dirs {
        let src = fs::read(dir.join("Dockerfile")).unwrap();
        if let Ok(df) = parser::parse_bytes(&src) {
            failed.push(format!(
                "{}: parsed as {}",
                dir.display(),
                parser::dump(&df)
            ));
        }
    }
    println!(
        "parser/testfiles-negative: {} passed, {} failed, 0 skipped",
        dirs.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// The "parse result" object of derived/*.json (README §7.1), built from kiln's parse.
fn node_json(n: &parser::Node, nested: bool) -> serde_json::Value {
    use serde_json::json;
    let mut args: Vec<serde_json::Value> = Vec::new();
    if let Some(next) = &n.next {
        args.push(json!({ "children": [node_json(next, true)] }));
    }
    args.extend(n.args.iter().map(|a| json!(a)));
    let heredocs: Vec<_> = n
        .heredocs
        .iter()
        .map(|h| {
            json!({"name": h.name, "fileDescriptor": h.file_descriptor, "expand": h.expand,
                   "chomp": h.chomp, "content": h.content})
        })
        .collect();
    let mut v = json!({
        "instruction": n.keyword, "flags": n.flags, "args": args, "json": n.json,
        "heredocs": heredocs, "original": n.original, "prevComment": n.prev_comment,
    });
    if !nested {
        v["startLine"] = json!(n.start_line);
        v["endLine"] = json!(n.end_line);
    }
    v
}

fn result_json(src: &[u8], with_dump: bool) -> serde_json::Value {
    use serde_json::json;
    match parser::parse_bytes(src) {
        Err(e) => json!({ "error": e.message }),
        Ok(df) => {
            let mut v = json!({
                "escapeToken": df.escape.to_string(),
                "startLine": df.start_line(),
                "endLine": df.end_line(),
                "children": df.children.iter().map(|n| node_json(n, false)).collect::<Vec<_>>(),
                "warnings": df.warnings.iter().map(|w| w.message.clone()).collect::<Vec<_>>(),
            });
            if with_dump {
                v["dump"] = json!(parser::dump(&df));
            }
            v
        }
    }
}

fn load_json(name: &str) -> serde_json::Value {
    let p = corpus().join("derived").join(name);
    serde_json::from_slice(&fs::read(&p).unwrap()).unwrap()
}

/// Compare kiln's result with an expected parse result; nested nodes in the expectation
/// may lack fields kiln always reports, so compare only the expected keys.
fn subset(want: &serde_json::Value, got: &serde_json::Value) -> bool {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| subset(wv, gv))),
        (serde_json::Value::Array(w), serde_json::Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| subset(a, b))
        }
        _ => want == got,
    }
}

fn check_results(label: &str, cases: Vec<(String, Vec<u8>, serde_json::Value)>) {
    let mut failed = Vec::new();
    for (name, src, want) in &cases {
        let got = result_json(src, want.get("dump").is_some());
        if !subset(want, &got) {
            failed.push(format!("{label} {name}:\n want {want}\n  got {got}"));
        }
    }
    println!(
        "{label}: {} passed, {} failed, 0 skipped",
        cases.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn derived_parser_ast_full_results() {
    let d = load_json("parser-ast.json");
    let mut cases = Vec::new();
    for key in ["positive", "negative"] {
        for c in d[key].as_array().unwrap() {
            let name = c["case"].as_str().unwrap().to_string();
            let path = corpus().join("parser").join(&name).join("Dockerfile");
            cases.push((name, fs::read(&path).unwrap(), c["result"].clone()));
        }
    }
    check_results("derived/parser-ast.json", cases);
}

#[test]
fn derived_parser_misc_and_directives() {
    let misc = load_json("parser-misc.json");
    let mut cases = vec![(
        "emptyContinuationWarnings".to_string(),
        misc["emptyContinuationWarnings"]["dockerfile"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
        misc["emptyContinuationWarnings"]["result"].clone(),
    )];
    let dirs = load_json("parser-directives.json");
    for (i, c) in dirs["parseWithDirectives"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        cases.push((
            format!("parseWithDirectives[{i}]"),
            c["dockerfile"].as_str().unwrap().as_bytes().to_vec(),
            c["result"].clone(),
        ));
    }
    check_results("derived/parser-misc+directives", cases);

    // The 65536-byte LABEL line.
    let long = format!("\n\t\tFROM image\n\t\tLABEL test={}\n", "a".repeat(65536));
    let err = parser::parse(&long).unwrap_err();
    assert_eq!(err.message, misc["lineTooLong"]["error"].as_str().unwrap());
}

#[test]
fn derived_parser_heredocs() {
    use kiln::parser::heredoc;
    let d = load_json("parser-heredocs.json");
    let mut cases = Vec::new();
    for key in ["extract", "jsonFormNoHeredoc"] {
        cases.push((
            key.to_string(),
            d[key]["dockerfile"].as_str().unwrap().as_bytes().to_vec(),
            d[key]["result"].clone(),
        ));
    }
    check_results("derived/parser-heredocs.json (whole files)", cases);

    let mut total = 0;
    let mut failed = Vec::new();
    for c in d["parseHeredocWord"].as_array().unwrap() {
        total += 1;
        let input = c["input"].as_str().unwrap();
        let got = match heredoc::parse_word(input) {
            Err(e) => serde_json::json!({ "error": e.to_string() }),
            Ok(None) => serde_json::json!({ "heredoc": null }),
            Ok(Some(h)) => serde_json::json!({ "heredoc": {
                "name": h.name, "fileDescriptor": h.file_descriptor, "expand": h.expand,
                "chomp": h.chomp, "content": h.content } }),
        };
        let mut want = c.clone();
        want.as_object_mut().unwrap().remove("input");
        if want != got {
            failed.push(format!("parseHeredocWord {input:?}: want {want} got {got}"));
        }
    }
    for c in d["heredocsFromLine"].as_array().unwrap() {
        total += 1;
        let line = c["line"].as_str().unwrap();
        let names: Vec<String> = heredoc::markers(line)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        let want: Vec<String> = serde_json::from_value(c["heredocNames"].clone()).unwrap();
        if names != want {
            failed.push(format!(
                "heredocsFromLine {line:?}: want {want:?} got {names:?}"
            ));
        }
    }
    for c in d["chomp"].as_array().unwrap() {
        total += 1;
        let got = heredoc::chomp(c["input"].as_str().unwrap());
        if got != c["expect"].as_str().unwrap() {
            failed.push(format!("chomp {c}: got {got:?}"));
        }
    }
    println!(
        "derived/parser-heredocs.json (words, lines, chomp): {} passed, {} failed, 0 skipped",
        total - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
