//! BuildKit conformance of the typed-instruction layer: walks
//! testdata/conformance/buildkit/derived/instructions*.json (harness rules in the corpus
//! README, §7.3) and checks every case.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use kiln::parser::{
    self,
    flags::{parse_flags, FlagSpec},
    instructions::{handle_json_args, parse_instruction, Health, Instruction},
    runflags::Device,
    stages::parse_stages,
    Node,
};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/conformance/buildkit/derived")
}

fn load(name: &str) -> Value {
    let path = corpus().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// What happened to one case.
enum Outcome {
    Pass,
    Fail(String),
}

/// Counts for one section of a data file, and the failures' descriptions.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    fn record(&mut self, section: &str, index: usize, outcome: Outcome) {
        match outcome {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail(why) => self.failed.push(format!("{section}[{index}]: {why}")),
        }
    }

    fn print(&self, name: &str) {
        // Nothing is skipped: every case of the data runs.
        println!(
            "{name}: {} passed, 0 skipped, {} failed",
            self.passed,
            self.failed.len()
        );
    }

    fn absorb(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed.extend(other.failed);
    }
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{key} is not a list"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn check(got: Value, want: Value) -> Outcome {
    if got == want {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("want {want}, got {got}"))
    }
}

/// Parse a Dockerfile and check its first instruction.
fn first_instruction(src: &str) -> Result<Result<Instruction, String>, String> {
    let df = parser::parse(src).map_err(|e| format!("parse error: {e}"))?;
    let node = df.children.first().ok_or("no instructions")?;
    Ok(parse_instruction(node).map_err(|e| e.to_string()))
}

/// A whole-file pass as BuildKit's `instructions.Parse`: `(outcome key, value)`.
fn whole_file(src: &str) -> (&'static str, Value) {
    let df = match parser::parse(src) {
        Ok(df) => df,
        Err(e) => return ("parseError", json!(e.message)),
    };
    match parse_stages(&df) {
        Ok((stages, meta)) => (
            "ok",
            json!({
                "stageNames": stages.iter().map(|s| s.name.clone().unwrap_or_default()).collect::<Vec<_>>(),
                "metaArgCount": meta.iter().map(|a| a.args.len()).sum::<usize>(),
            }),
        ),
        Err(e) => ("instructionError", json!(e.buildkit_message())),
    }
}

fn errors_section(cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let outcome = match first_instruction(text(case, "dockerfile")) {
            Err(e) => Outcome::Fail(e),
            Ok(Ok(ins)) => Outcome::Fail(format!("accepted as {ins:?}")),
            // Exact BuildKit wording is required, even where upstream checks a substring.
            Ok(Err(msg)) => check(json!(msg), case["error"].clone()),
        };
        tally.record("errors", i, outcome);
    }
}

fn node_errors_section(cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let node = Node {
            keyword: text(case, "instruction").to_string(),
            args: strings(&case["args"]),
            start_line: 1,
            end_line: 1,
            column: 1,
            ..Default::default()
        };
        let outcome = match parse_instruction(&node) {
            Ok(ins) => Outcome::Fail(format!("accepted as {ins:?}")),
            Err(e) => check(json!(e.to_string()), case["error"].clone()),
        };
        tally.record("nodeErrors", i, outcome);
    }
}

fn copy_heredoc_section(cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let outcome = match first_instruction(text(case, "dockerfile")) {
            Err(e) => Outcome::Fail(e),
            Ok(Err(e)) => Outcome::Fail(e),
            Ok(Ok(Instruction::Copy(c))) => {
                let got = json!({
                    "destPath": c.dest,
                    "sourcePaths": c.sources,
                    "sourceContents": c.contents.iter().map(|s| json!({"path": s.path, "data": s.data, "expand": s.expand})).collect::<Vec<_>>(),
                });
                let want = json!({
                    "destPath": case["destPath"],
                    "sourcePaths": case["sourcePaths"],
                    "sourceContents": case["sourceContents"],
                });
                check(got, want)
            }
            Ok(Ok(other)) => Outcome::Fail(format!("not a COPY: {other:?}")),
        };
        tally.record("copyHeredoc", i, outcome);
    }
}

fn run_heredoc_section(cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let outcome = match first_instruction(text(case, "dockerfile")) {
            Err(e) => Outcome::Fail(e),
            Ok(Err(e)) => Outcome::Fail(e),
            Ok(Ok(Instruction::Run(r))) => {
                let got = json!({
                    "cmdLine": r.cmd.cmd_line(),
                    "prependShell": r.cmd.prepend_shell(),
                    "files": r.files.iter().map(|f| json!({"name": f.name, "data": f.data, "chomp": f.chomp})).collect::<Vec<_>>(),
                });
                let want = json!({
                    "cmdLine": case["cmdLine"],
                    "prependShell": case["prependShell"],
                    "files": case["files"],
                });
                check(got, want)
            }
            Ok(Ok(other)) => Outcome::Fail(format!("not a RUN: {other:?}")),
        };
        tally.record("runHeredoc", i, outcome);
    }
}

fn run_device_section(cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let got = match Device::parse(text(case, "input")) {
            Ok(d) => json!({"name": d.name, "required": d.required}),
            Err(e) => json!({"error": e.to_string()}),
        };
        let want = if case.get("error").is_some() {
            json!({"error": case["error"]})
        } else {
            json!({"name": case["name"], "required": case["required"]})
        };
        tally.record("runDevice", i, check(got, want));
    }
}

fn handle_json_args_section(cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let json = case["json"].as_bool().unwrap_or(false);
        let got = handle_json_args(&strings(&case["args"]), json);
        tally.record(
            "handleJSONArgs",
            i,
            check(json!(got), case["expect"].clone()),
        );
    }
}

fn healthcheck_interval_section(cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let src = format!(
            "HEALTHCHECK --{}={} CMD true",
            text(case, "flag"),
            text(case, "value")
        );
        let got = match first_instruction(&src) {
            Err(e) => json!({"parse": e}),
            Ok(Ok(_)) => json!({"ok": true}),
            Ok(Err(e)) => json!({"error": e}),
        };
        let want = if case["ok"].as_bool() == Some(true) {
            json!({"ok": true})
        } else {
            json!({"error": case["error"]})
        };
        tally.record("healthcheckInterval", i, check(got, want));
    }
}

fn healthcheck_shell_form_section(cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let result = match case.get("node") {
            Some(n) => {
                let node = Node {
                    keyword: text(n, "instruction").to_string(),
                    args: strings(&n["args"]),
                    json: n["json"].as_bool().unwrap_or(false),
                    start_line: 1,
                    end_line: 1,
                    column: 1,
                    ..Default::default()
                };
                Ok(parse_instruction(&node).map_err(|e| e.to_string()))
            }
            None => first_instruction(text(case, "dockerfile")),
        };
        let outcome = match result {
            Ok(Ok(Instruction::Healthcheck(h))) => match h.health {
                Health::Cmd(cfg) => check(json!(cfg.test), case["test"].clone()),
                Health::None => Outcome::Fail("got HEALTHCHECK NONE".to_string()),
            },
            Ok(Ok(other)) => Outcome::Fail(format!("not a HEALTHCHECK: {other:?}")),
            Ok(Err(e)) | Err(e) => Outcome::Fail(e),
        };
        tally.record("healthcheckShellForm", i, outcome);
    }
}

/// Whole-file outcomes: `ok`, `parseError` or `instructionError`, as README §7.3 lists them.
fn whole_file_section(section: &str, cases: &[Value], tally: &mut Tally) {
    for (i, case) in cases.iter().enumerate() {
        let (kind, value) = whole_file(text(case, "dockerfile"));
        let outcome = if case.get("ok").is_some() {
            let mut want = json!({});
            for key in ["stageNames", "metaArgCount"] {
                if let Some(v) = case.get(key) {
                    want[key] = v.clone();
                }
            }
            match kind {
                "ok" => {
                    let got: serde_json::Map<String, Value> = want
                        .as_object()
                        .map(|w| w.keys().map(|k| (k.clone(), value[k].clone())).collect())
                        .unwrap_or_default();
                    check(Value::Object(got), want)
                }
                _ => Outcome::Fail(format!("want ok, got {kind}: {value}")),
            }
        } else {
            let want_kind = ["parseError", "instructionError"]
                .into_iter()
                .find(|k| case.get(*k).is_some())
                .unwrap_or("?");
            check(json!({kind: value}), json!({want_kind: case[want_kind]}))
        };
        tally.record(section, i, outcome);
    }
}

fn run_flags_used_case(case: &Value, tally: &mut Tally) {
    let outcome = match first_instruction(text(case, "dockerfile")) {
        Ok(Ok(Instruction::Run(r))) => check(json!(r.flags_used), case["flagsUsed"].clone()),
        Ok(Ok(other)) => Outcome::Fail(format!("not a RUN: {other:?}")),
        Ok(Err(e)) | Err(e) => Outcome::Fail(e),
    };
    tally.record("runFlagsUsed", 0, outcome);
}

fn doc_comments_case(case: &Value, tally: &mut Tally) {
    let outcome = match parser::parse(text(case, "dockerfile")) {
        Err(e) => Outcome::Fail(e.to_string()),
        Ok(df) => match parse_stages(&df) {
            Err(e) => Outcome::Fail(e.buildkit_message()),
            Ok((stages, meta)) => {
                let arg_json = |a: &kiln::parser::instructions::ArgDef| json!({"key": a.name, "value": a.default, "docComment": a.comment});
                let got = json!({
                    "metaArgs": meta.iter().flat_map(|a| a.args.iter().map(arg_json)).collect::<Vec<_>>(),
                    "stages": stages.iter().map(|s| json!({
                        "name": s.name.clone().unwrap_or_default(),
                        "baseName": s.base,
                        "docComment": s.comment,
                        "argCommands": s.commands.iter().filter_map(|c| match c {
                            Instruction::Arg(a) => Some(a.args.iter().map(arg_json).collect::<Vec<_>>()),
                            _ => None,
                        }).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                });
                check(
                    got,
                    json!({"metaArgs": case["metaArgs"], "stages": case["stages"]}),
                )
            }
        },
    };
    tally.record("docComments", 0, outcome);
}

fn finish(file: &str, tally: &Tally) {
    tally.print(file);
    assert!(
        tally.failed.is_empty(),
        "{file}: {} failed:\n{}",
        tally.failed.len(),
        tally.failed.join("\n")
    );
}

/// A named part of a data file and the function that walks it.
type Section<'a> = (&'static str, Box<dyn Fn(&mut Tally) + 'a>);

#[test]
fn instructions_json() {
    let data = load("instructions.json");
    let mut total = Tally::default();
    let sections: Vec<Section<'_>> = vec![
        (
            "errors",
            Box::new(|t| errors_section(items(&data, "errors"), t)),
        ),
        (
            "nodeErrors",
            Box::new(|t| node_errors_section(items(&data, "nodeErrors"), t)),
        ),
        (
            "copyHeredoc",
            Box::new(|t| copy_heredoc_section(items(&data, "copyHeredoc"), t)),
        ),
        (
            "runHeredoc",
            Box::new(|t| run_heredoc_section(items(&data, "runHeredoc"), t)),
        ),
        (
            "runDevice",
            Box::new(|t| run_device_section(items(&data, "runDevice"), t)),
        ),
        (
            "handleJSONArgs",
            Box::new(|t| handle_json_args_section(items(&data, "handleJSONArgs"), t)),
        ),
        (
            "healthcheckInterval",
            Box::new(|t| healthcheck_interval_section(items(&data, "healthcheckInterval"), t)),
        ),
        (
            "healthcheckShellForm",
            Box::new(|t| healthcheck_shell_form_section(items(&data, "healthcheckShellForm"), t)),
        ),
        (
            "robustness",
            Box::new(|t| whole_file_section("robustness", items(&data, "robustness"), t)),
        ),
        (
            "runFlagsUsed",
            Box::new(|t| run_flags_used_case(&data["runFlagsUsed"], t)),
        ),
        (
            "docComments",
            Box::new(|t| doc_comments_case(&data["docComments"], t)),
        ),
    ];
    // Every key of the file must be walked: a new section in the data needs a harness here.
    let keys: Vec<&String> = data
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    for key in keys {
        assert!(
            sections.iter().any(|(name, _)| name == key),
            "instructions.json has a section {key} this harness does not walk"
        );
    }
    for (name, run) in &sections {
        let mut t = Tally::default();
        run(&mut t);
        t.print(&format!("instructions.json {name}"));
        total.absorb(t);
    }
    finish("instructions.json", &total);
}

#[test]
fn instructions_bflags_json() {
    let data = load("instructions-bflags.json");
    let cases = data.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut tally = Tally::default();
    for (i, case) in cases.iter().enumerate() {
        let defs = items(case, "defs");
        let specs: Vec<FlagSpec<'_>> = defs
            .iter()
            .map(|d| {
                let name = text(d, "name");
                match text(d, "type") {
                    "bool" => FlagSpec::bool(name, d["default"].as_bool().unwrap_or(false)),
                    "string" => FlagSpec::string(name, d["default"].as_str().unwrap_or("")),
                    _ => FlagSpec::strings(name),
                }
            })
            .collect();
        let got = match parse_flags(&specs, &strings(&case["args"])) {
            Ok(f) => {
                let values: serde_json::Map<String, Value> = specs
                    .iter()
                    .map(|s| {
                        let v = f.value(s.name).map(ToString::to_string).unwrap_or_default();
                        (s.name.to_string(), json!(v))
                    })
                    .collect();
                json!({"values": values, "used": f.used()})
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        let want = if case.get("error").is_some() {
            json!({"error": case["error"]})
        } else {
            json!({"values": case["values"], "used": case["used"]})
        };
        tally.record("bflags", i, check(got, want));
    }
    finish("instructions-bflags.json", &tally);
}

#[test]
fn instructions_extra_json() {
    let data = load("instructions-extra.json");
    let cases = data.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut tally = Tally::default();
    whole_file_section("extra", cases, &mut tally);
    finish("instructions-extra.json", &tally);
}
