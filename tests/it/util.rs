//! Shared helpers for the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The BuildKit conformance corpus shipped in testdata.
pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/conformance/buildkit")
}

/// Run the kiln binary with `args`, with a private store root.
pub fn kiln(args: &[&str]) -> Output {
    kiln_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// Run the kiln binary in `dir`.
pub fn kiln_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env(
            "KILN_ROOT",
            std::env::temp_dir().join("kiln-test-root-unused"),
        )
        .output()
        .expect("running kiln")
}
