//! `kiln build --check` where BuildKit's linter needs more than the Dockerfile: build
//! arguments (InvalidDefaultArgInFrom) and the base image's Env (UndefinedVar).

use std::fs;
use std::path::Path;

use crate::util::{stderr, stdout, TestStore};

/// A store with busybox as `busybox:local`; `None` (a failure under CI) when the host cannot
/// make it.
fn store_with_busybox() -> Option<TestStore> {
    let s = TestStore::new();
    s.busybox("busybox:local")?;
    Some(s)
}

fn context(s: &TestStore, dockerfile: &str) -> std::path::PathBuf {
    let ctx = s.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn check(s: &TestStore, ctx: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["build", "--check"];
    args.extend_from_slice(extra);
    args.push(".");
    s.kiln(ctx, &args, None)
}

#[test]
fn build_check_from_arg_without_default_is_invalid_default_arg_in_from() {
    // `FROM $BASE` over `ARG BASE` was only the blank-name error; BuildKit warns
    // InvalidDefaultArgInFrom, and errors only when no build argument gives BASE a value.
    let s = TestStore::new();
    let ctx = context(&s, "ARG BASE\nFROM $BASE AS x\n");
    let warning = "warning: InvalidDefaultArgInFrom: Default value for ARG $BASE results in empty or invalid base image name\n --> ./Dockerfile:2:1";

    let out = check(&s, &ctx, &[]);
    let err = stderr(&out);
    assert!(err.contains(warning), "{err}");
    assert!(
        err.contains("error: base name ($BASE) should not be blank"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");

    let out = check(&s, &ctx, &["--build-arg", "BASE=busybox:local"]);
    let err = stderr(&out);
    assert!(err.contains(warning), "{err}");
    assert!(!err.contains("error:"), "{err}");
    assert!(
        stdout(&out).contains("Check complete, 1 warning found."),
        "{}",
        stdout(&out)
    );
    // Warnings alone exit 0, as for every other kiln check.
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn build_from_arg_without_default_builds_with_the_build_arg() {
    let Some(s) = store_with_busybox() else {
        return;
    };
    let ctx = context(&s, "ARG BASE\nFROM $BASE AS x\nRUN echo built > /b\n");
    let out = s.kiln(
        &ctx,
        &[
            "build",
            "--build-arg",
            "BASE=busybox:local",
            "-t",
            "t:1",
            ".",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.kiln(&ctx, &["build", "-t", "t:2", "."], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("should not be blank"), "{err}");
    assert!(err.contains("--> ./Dockerfile:2:1"), "{err}");
}

#[test]
fn build_check_undefined_var_knows_the_stored_base_image_env() {
    // UndefinedVar needs the base image's Env: PATH comes from busybox's config.
    let Some(s) = store_with_busybox() else {
        return;
    };
    let ctx = context(
        &s,
        "FROM busybox:local\nCOPY $PATH $NOPE /x\nRUN echo $ALSO_NOPE\n",
    );
    let out = check(&s, &ctx, &[]);
    let err = stderr(&out);
    assert!(
        err.contains(
            "warning: UndefinedVar: Usage of undefined variable '$NOPE'\n --> ./Dockerfile:2:1"
        ),
        "{err}"
    );
    // Shell-form RUN is the shell's business; PATH is the image's.
    assert!(!err.contains("'$PATH'"), "{err}");
    assert!(!err.contains("ALSO_NOPE"), "{err}");
    assert!(
        stdout(&out).contains("Check complete, 1 warning found."),
        "{}",
        stdout(&out)
    );
    assert_eq!(out.status.code(), Some(0));

    // An image the store does not have: its Env is unknown, so nothing is reported.
    let ctx = context(&s, "FROM elsewhere:1\nCOPY $PATH $NOPE /x\n");
    let out = check(&s, &ctx, &[]);
    assert!(!stderr(&out).contains("UndefinedVar"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
}
