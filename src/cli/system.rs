//! `kiln system …`: commands about the store as a whole.

use std::path::Path;

use clap::Subcommand;

use super::{fail, open_store, out};

/// Manage kiln.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Verify every blob, image reference and snapshot of the store
    Check,
    /// Start the containers a boot should bring back (restart policy always, and
    /// unless-stopped ones nobody stopped); for a boot script or systemd unit
    Restore,
}

/// Runs one `kiln system` subcommand.
pub fn run(root: &Path, cmd: SystemCommand) -> i32 {
    match cmd {
        SystemCommand::Check => check(root),
        SystemCommand::Restore => super::container::restore(root),
    }
}

fn check(root: &Path) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let problems = match store.check() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if problems.is_empty() {
        out(&format!("store {} is consistent\n", store.root().display()));
        return 0;
    }
    let text: String = problems.iter().map(|p| format!("{p}\n")).collect();
    out(&text);
    eprintln!(
        "Error: {} problem{} found in store {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        store.root().display()
    );
    1
}
