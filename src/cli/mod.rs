//! Command-line definitions (clap) and dispatch; the only code that prints.

mod build;
mod debug;
// Used by the image and container listing commands, which are being wired next.
#[allow(dead_code)]
mod format;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kiln builds container images from Dockerfiles and runs them.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Root directory of kiln's store.
    #[arg(
        long,
        global = true,
        env = "KILN_ROOT",
        default_value = "/var/lib/kiln"
    )]
    pub root: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Tools for looking inside kiln
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

/// Run the command line; returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap uses 2 for usage errors, as Docker does with 125 for its own; keep clap's.
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let mut cli = cli;
    // Absolute, so paths derived from it stay right in threads that change directory.
    if let Ok(abs) = std::path::absolute(&cli.root) {
        cli.root = abs;
    }
    match cli.command {
        Command::Build(args) => build::run(&cli.root, &args),
        Command::Debug(cmd) => debug::run(&cli.root, cmd),
    }
}
