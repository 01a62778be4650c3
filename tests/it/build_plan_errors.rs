//! What the planner refuses, `kiln build --check` reports at its line and `kiln build`
//! refuses before any step runs.

use std::fs;

use crate::util::{stderr, stdout, TestStore};

/// Dockerfiles whose third line has a bad flag value, and the error both commands give.
const CASES: &[(&str, &str)] = &[
    (
        "FROM scratch\nENV A=1\nRUN --mount=type=cache,size=1m,target=/c true\n",
        "error: unexpected key 'size' for mount type 'cache'",
    ),
    (
        "FROM scratch\nENV A=1\nADD --checksum=sha256:abc http://127.0.0.1:9/x /x\n",
        "error: invalid --checksum=sha256:abc: expected sha256:<64 hexadecimal digits>",
    ),
];

fn context(s: &TestStore, dockerfile: &str) -> std::path::PathBuf {
    let ctx = s.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

#[test]
fn build_check_reports_a_bad_mount_option_at_its_line() {
    for (dockerfile, error) in CASES {
        let s = TestStore::new();
        let ctx = context(&s, dockerfile);
        let out = s.kiln(&ctx, &["build", "--check", "."], None);
        let err = stderr(&out);
        assert!(err.contains(error), "{dockerfile}: {err}");
        assert!(err.contains("Dockerfile:3:"), "{dockerfile}: {err}");
        assert_eq!(out.status.code(), Some(1), "{dockerfile}: {err}");
    }
}

// Regression: `--mount` (and `--checksum`) values were read while their step ran, so the
// steps before it (here ENV) ran first; the planner now reads them before any step.
#[test]
fn build_refuses_a_bad_mount_option_before_any_step() {
    for (dockerfile, error) in CASES {
        let s = TestStore::new();
        let ctx = context(&s, dockerfile);
        let out = s.kiln(&ctx, &["build", "--progress", "plain", "."], None);
        let (err, text) = (stderr(&out), stdout(&out));
        assert_eq!(out.status.code(), Some(1), "{dockerfile}: {err}");
        assert!(err.contains(error), "{dockerfile}: {err}");
        assert!(err.contains("Dockerfile:3:"), "{dockerfile}: {err}");
        assert!(
            !err.contains("ENV A=1") && !text.contains("ENV A=1") && !err.contains("#1 "),
            "a step ran before the refusal:\n{err}\n{text}"
        );
    }
}
