//! `kiln builder …`: the build cache.

use std::path::Path;

use clap::{Args, Subcommand};

use kiln::cache::prune::{self, PruneFilter};

use super::units::human_size;
use super::{fail, open_store, out};

/// Manage the build cache.
#[derive(Subcommand, Debug)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune(BuilderPruneArgs),
}

/// `kiln builder prune`.
#[derive(Args, Debug)]
pub struct BuilderPruneArgs {
    /// Remove all unused build cache, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Provide filter values (e.g. "until=24h")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// Runs one `kiln builder` subcommand.
pub fn run(root: &Path, cmd: BuilderCommand) -> i32 {
    match cmd {
        BuilderCommand::Prune(a) => builder_prune(root, &a),
    }
}

/// `builder prune` (also part of `system prune`, which asks first and passes `force`).
pub fn builder_prune(root: &Path, a: &BuilderPruneArgs) -> i32 {
    let mut filter = PruneFilter {
        all: a.all,
        older_than: None,
    };
    for f in &a.filter {
        if let Err(e) = filter.add(f) {
            return fail(e);
        }
    }
    let warning = format!(
        "WARNING! This will remove all {}build cache.",
        if a.all { "" } else { "dangling " }
    );
    if !super::confirm_unless(a.force, &warning) {
        return 0;
    }
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let keep = super::container::users(root).container_roots();
    let report = match prune::prune(&store, filter, &keep) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut text = String::new();
    if !report.removed.is_empty() {
        text.push_str("Deleted build cache objects:\n");
        for k in &report.removed {
            text.push_str(&format!("{}\n", &k.hex()[..25.min(k.hex().len())]));
        }
        text.push('\n');
    }
    text.push_str(&format!("Total:\t{}\n", human_size(report.bytes_freed)));
    out(&text);
    0
}
