//! Test requirements: a test that needs something of the host (root, overlayfs, a tool such
//! as docker, skopeo, umoci, docker-registry, busybox or pasta) checks for it here, and a missing
//! one fails the test in CI and skips it loudly elsewhere.
//!
//! The rule: `CI` counts as set when it holds any non-empty value other than `false` or `0`
//! (GitHub, GitLab and our `.ci/run` set `CI=true`; `CI=1` is common too). Under CI a missing
//! requirement panics, so nothing passes by skipping there. Elsewhere the test prints
//! `SKIPPED <test>: needs <requirement>` on standard error (uncaptured, so it shows in a plain
//! `cargo test`) and returns without asserting.
//!
//! One file serves both kinds of test: the library compiles it as `crate::testutil` under
//! `cfg(test)`, and the integration tests include it with `#[path]` from `tests/it/util.rs`. So
//! it uses nothing of kiln, only std and nix.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Whether a value of the `CI` variable means "this is CI": any non-empty value other than
/// `false` or `0` (compared without case).
pub fn ci_value_is_set(value: Option<&OsStr>) -> bool {
    match value.and_then(OsStr::to_str) {
        None => value.is_some_and(|v| !v.is_empty()),
        Some(v) => {
            let v = v.trim();
            !v.is_empty() && !v.eq_ignore_ascii_case("false") && v != "0"
        }
    }
}

/// Whether this process runs under CI (see the module comment for the rule).
pub fn in_ci() -> bool {
    ci_value_is_set(std::env::var_os("CI").as_deref())
}

/// The name of the running test: libtest names each test's thread after it; the caller's
/// file and line otherwise.
#[track_caller]
fn test_name() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => {
            let at = std::panic::Location::caller();
            format!("{}:{}", at.file(), at.line())
        }
    }
}

/// Reports a missing requirement `what` with the CI rule given: panics when `ci`, else prints
/// the skip on standard error. Split from [`missing`] so the rule can be tested without
/// touching the process environment.
#[track_caller]
pub fn missing_with(ci: bool, what: &str) {
    let test = test_name();
    if ci {
        panic!("{test}: needs {what}, which is missing; under CI a test never skips");
    }
    // Straight to the stderr handle, not `eprintln!`: libtest captures the macros' output of a
    // passing test, and a skip must show in a plain `cargo test`.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs {what} (under CI=true this fails)"
    );
}

/// Reports a missing requirement `what`: fails the test under CI, skips it loudly elsewhere.
/// The caller returns right after.
#[track_caller]
pub fn missing(what: &str) {
    missing_with(in_ci(), what)
}

/// `true` when `present`; otherwise reports `what` as missing (see [`missing`]) and returns
/// `false`, for `if !require(cond, "…") { return; }`.
#[track_caller]
pub fn require(present: bool, what: &str) -> bool {
    if !present {
        missing(what);
    }
    present
}

/// Whether the test runs as root; reports it missing otherwise.
#[track_caller]
pub fn root() -> bool {
    require(nix::unistd::geteuid().is_root(), "root")
}

/// An executable named `name` on `PATH`, without reporting anything when there is none.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An executable named `name` on `PATH`; reports it missing otherwise, naming `install` (how to
/// get it, e.g. "apt-get install passt").
#[track_caller]
pub fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        missing(&format!("{name} on PATH ({install})"));
    }
    found
}

/// The host's static busybox at `/bin/busybox`; reports it missing otherwise.
#[track_caller]
pub fn busybox() -> bool {
    require(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox (Debian package busybox-static)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_values() {
        for (v, set) in [
            (None, false),
            (Some(""), false),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some("0"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(ci_value_is_set(v.map(OsStr::new)), set, "CI={v:?}");
        }
    }

    #[test]
    #[should_panic(expected = "needs a missing thing, which is missing; under CI")]
    fn a_missing_requirement_fails_under_ci() {
        missing_with(true, "a missing thing");
    }

    #[test]
    fn present_requirements_pass_and_tools_are_found() {
        assert!(require(true, "nothing"));
        assert!(find_tool("sh").is_some(), "sh is on every PATH");
        assert!(find_tool("no-such-tool-kiln-test").is_none());
    }
}
