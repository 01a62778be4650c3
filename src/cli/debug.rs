//! `kiln debug ...` and `kiln build --check`: parser-level commands.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use kiln::parser;

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Print a Dockerfile's syntax tree in BuildKit's dump format
    DumpAst {
        /// The Dockerfile (`-` for standard input)
        file: PathBuf,
    },
}

/// Read a Dockerfile from a path, or standard input for `-`.
pub fn read_dockerfile(path: &Path) -> Result<Vec<u8>, String> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("error: reading Dockerfile from standard input: {e}"))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| format!("error: reading {}: {e}", path.display()))
}

pub fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

pub fn run(cmd: DebugCommand) -> i32 {
    match cmd {
        DebugCommand::DumpAst { file } => {
            let src = match read_dockerfile(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            };
            match parser::parse_bytes(&src) {
                Ok(df) => {
                    print!("{}", parser::dump(&df));
                    0
                }
                Err(e) => {
                    let text = String::from_utf8_lossy(&src);
                    eprintln!("{}", e.to_diagnostic(&display_name(&file), &text));
                    1
                }
            }
        }
    }
}

/// `kiln build --check`: every problem with its place; 1 when there is an error.
pub fn check(name: &str, src: &[u8]) -> i32 {
    let findings = match std::str::from_utf8(src) {
        Ok(text) => parser::check::check_source(text),
        Err(_) => match parser::parse_bytes(src) {
            Err(e) => {
                eprintln!("{}", e.to_diagnostic(name, &String::from_utf8_lossy(src)));
                return 1;
            }
            Ok(_) => Vec::new(),
        },
    };
    let text = String::from_utf8_lossy(src);
    let errors = findings.iter().filter(|f| f.is_error()).count();
    let warnings = findings.len() - errors;
    for f in &findings {
        eprintln!("{}\n", f.to_diagnostic(name, &text));
    }
    match (errors, warnings) {
        (0, 0) => println!("Check complete, no warnings found."),
        (0, w) => println!("Check complete, {w} warning{} found.", plural(w)),
        (e, w) => println!(
            "Check complete, {e} error{} and {w} warning{} found.",
            plural(e),
            plural(w)
        ),
    }
    if errors > 0 {
        1
    } else {
        0
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
