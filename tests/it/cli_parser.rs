//! The parser as users reach it: `kiln debug dump-ast` and `kiln build --check`.

use std::fs;

use crate::parser_conformance::case_dirs;
use crate::util::{corpus, kiln, kiln_in};

#[test]
fn dump_ast_matches_every_result_file() {
    let dirs = case_dirs(&corpus().join("parser/testfiles"));
    let mut failed = Vec::new();
    for dir in &dirs {
        let out = kiln(&[
            "debug",
            "dump-ast",
            dir.join("Dockerfile").to_str().unwrap(),
        ]);
        let want = fs::read(dir.join("result")).unwrap();
        if !out.status.success() || out.stdout != want {
            failed.push(dir.display().to_string());
        }
    }
    assert!(failed.is_empty(), "dump-ast differs for {failed:?}");
}

#[test]
fn dump_ast_fails_with_diagnostic_on_negative_cases() {
    for dir in case_dirs(&corpus().join("parser/testfiles-negative")) {
        let file = dir.join("Dockerfile");
        let out = kiln(&["debug", "dump-ast", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", dir.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains(&format!("--> {}:", file.display())), "{err}");
    }
}

#[test]
fn dump_ast_points_at_the_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), "FROM a\nRUN [\"a\", 1]\n").unwrap();
    let out = kiln_in(dir.path(), &["debug", "dump-ast", "Dockerfile"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        "error: when using JSON array syntax, arrays must be comprised of strings only\n \
         --> Dockerfile:2:5\n  |\n2 | RUN [\"a\", 1]\n  |     ^\n"
    );
}

#[test]
fn build_check_accepts_the_example_project() {
    let out = kiln(&["build", "--check", "examples/hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn build_check_reports_syntax_errors_with_location() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), "FROM a\n\nENV PATH\n").unwrap();
    let out = kiln_in(dir.path(), &["build", "--check", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ENV must have two arguments"), "{err}");
    assert!(err.contains("--> ./Dockerfile:3:5"), "{err}");
}

#[test]
fn dump_ast_reads_standard_input() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["debug", "dump-ast", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nRUN echo hi\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"(from \"busybox\")\n(run \"echo hi\")\n");
}

#[test]
fn build_check_reports_every_problem_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox AS base\nRUNN echo\nCOPY --chow=1 a b\nFROM base AS second\n\
         COPY --from=third x y\nFROM second AS third\nCOPY --from=second a b\n",
    )
    .unwrap();
    let out = kiln_in(dir.path(), &["build", "--check", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "error: unknown instruction: RUNN\n --> ./Dockerfile:2:1",
        "did you mean RUN?",
        "error: unknown flag: --chow\n --> ./Dockerfile:3:6",
        "did you mean chown?",
        "circular dependency detected on stage",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn build_check_warnings_alone_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox\nMAINTAINER me\n",
    )
    .unwrap();
    let out = kiln_in(dir.path(), &["build", "--check", "."]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: MaintainerDeprecated"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 warning found"), "{stdout}");
}
