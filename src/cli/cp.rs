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
