//! `kiln cp`: copy files between a container and the host.

use std::path::Path;

use clap::Args;

use kiln::container::cp::{self, CpOptions, Endpoint};
use kiln::container::Containers;

use super::fail;
use super::units::human_size;

/// `kiln cp` / `kiln container cp`.
#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode: keep the source's uid/gid when copying into a container
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow a symlink named as SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress the progress line
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH or a host path (`-`: a tar stream read from stdin)
    pub src: String,
    /// CONTAINER:DEST_PATH or a host path (`-`: a tar stream written to stdout)
    pub dest: String,
}

/// Runs `kiln cp`.
pub fn cp_cmd(root: &Path, a: &CpArgs) -> i32 {
    let containers = Containers::new(root);
    let opts = CpOptions {
        archive: a.archive,
        follow: a.follow_link,
    };
    let (src, dest) = (Endpoint::parse(&a.src), Endpoint::parse(&a.dest));
    let result = match (&src, &dest) {
        (Endpoint::Container(name, from), Endpoint::Host(to)) => containers
            .find(name)
            .and_then(|c| cp::copy_out(&containers, &c, from, to, opts, &mut std::io::stdout()))
            .map(|n| (n, to.clone())),
        (Endpoint::Host(from), Endpoint::Container(name, to)) => containers
            .find(name)
            .and_then(|c| cp::copy_in(&containers, &c, from, to, opts, &mut std::io::stdin()))
            .map(|n| (n, format!("{name}:{to}"))),
        (Endpoint::Container(..), Endpoint::Container(..)) => {
            return fail("copying between containers is not supported");
        }
        (Endpoint::Host(..), Endpoint::Host(..)) => {
            return fail("must specify at least one container source");
        }
    };
    match result {
        Ok((n, to)) => {
            if !a.quiet && to != "-" {
                eprintln!("Successfully copied {} to {to}", human_size(n));
            }
            0
        }
        Err(e) => fail(e),
    }
}

/// `kiln export` / `kiln container export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<std::path::PathBuf>,
    /// The container
    pub container: String,
}

/// Runs `kiln export`: the container's filesystem as a tar archive. A file is written next
/// to its destination and renamed over it once complete.
pub fn export_cmd(root: &Path, a: &ExportArgs) -> i32 {
    use std::io::IsTerminal;
    let containers = Containers::new(root);
    let c = match containers.find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match &a.output {
        None => {
            if std::io::stdout().is_terminal() {
                return fail(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect",
                );
            }
            match cp::export(&containers, &c, &mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => fail(e),
            }
        }
        Some(dest) => {
            let name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dest.with_file_name(format!(".{name}.kiln-{}", std::process::id()));
            let result = std::fs::File::create(&tmp)
                .map_err(|e| format!("{}: {e}", tmp.display()))
                .and_then(|mut f| {
                    cp::export(&containers, &c, &mut f).map_err(|e| e.to_string())?;
                    f.sync_all().map_err(|e| e.to_string())
                })
                .and_then(|_| {
                    std::fs::rename(&tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))
                });
            match result {
                Ok(()) => 0,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    fail(e)
                }
            }
        }
    }
}
