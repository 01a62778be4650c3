//! `kiln commit` and `kiln diff`.

use std::path::Path;

use clap::Args;

use kiln::container::commit::{self, CommitOptions};
use kiln::container::Containers;
use kiln::imageops::change::Changes;

use super::{fail, open_store, out};

/// `kiln commit` / `kiln container commit`.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    pub change: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pause: bool,
    /// The container
    pub container: String,
    /// REPOSITORY[:TAG] for the new image
    pub repository: Option<String>,
}

/// `kiln diff` / `kiln container diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The container
    pub container: String,
}

/// Runs `kiln commit`: prints the new image's ID.
pub fn commit_cmd(root: &Path, a: &CommitArgs) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let c = match Containers::new(root).find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let changes = match Changes::parse(&a.change) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let tag = match a
        .repository
        .as_deref()
        .map(kiln::image::Reference::parse_normalized_named)
        .transpose()
    {
        Ok(t) => t.map(|t| t.with_default_tag()),
        Err(e) => return fail(format!("invalid reference format: {e}")),
    };
    let opts = CommitOptions {
        author: a.author.clone(),
        message: a.message.clone(),
        changes,
        pause: a.pause,
        tag,
    };
    match commit::commit(&store, &c, &opts) {
        Ok(img) => {
            out(&format!("{}\n", img.id));
            0
        }
        Err(e) => fail(e),
    }
}

/// Runs `kiln diff`.
pub fn diff_cmd(root: &Path, a: &DiffArgs) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let c = match Containers::new(root).find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match commit::diff(&store, &c) {
        Ok(list) => {
            out(&list
                .into_iter()
                .map(|(k, p)| format!("{k} {p}\n"))
                .collect::<String>());
            0
        }
        Err(e) => fail(e),
    }
}
