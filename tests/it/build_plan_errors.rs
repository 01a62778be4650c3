//! What the planner refuses, `kiln build --check` reports and `kiln build` refuses before any
//! step runs.

use std::fs;

use crate::util::{stderr, stdout, TestStore};

const BAD_MOUNT: &str = "FROM scratch\nENV A=1\nRUN --mount=type=cache,size=1m,target=/c true\n";

fn context(s: &TestStore) -> std::path::PathBuf {
    let ctx = s.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), BAD_MOUNT).unwrap();
    ctx
}

#[test]
fn build_check_reports_a_bad_mount_option_at_its_line() {
    let s = TestStore::new();
    let ctx = context(&s);
    let out = s.kiln(&ctx, &["build", "--check", "."], None);
    let err = stderr(&out);
    assert!(
        err.contains("error: unexpected key 'size' for mount type 'cache'"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:3:"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
}

// Regression: `--mount` values were parsed while the RUN step ran, so the steps before it
// (here ENV) ran first; the planner now reads them before any step.
#[test]
fn build_refuses_a_bad_mount_option_before_any_step() {
    let s = TestStore::new();
    let ctx = context(&s);
    let out = s.kiln(&ctx, &["build", "--progress", "plain", "."], None);
    let (err, text) = (stderr(&out), stdout(&out));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: unexpected key 'size' for mount type 'cache'"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:3:"), "{err}");
    assert!(
        !err.contains("ENV A=1") && !text.contains("ENV A=1") && !err.contains("#1 "),
        "a step ran before the refusal:\n{err}\n{text}"
    );
}
