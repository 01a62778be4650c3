//! The `kiln` command: parses arguments, calls the library, renders errors, sets the exit code.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
