//! `kiln debug ...` and `kiln build --check`: parser-level commands, one-step runs, and
//! the shell in a build's step (see `debugshell`).

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use kiln::image::spec::ImageSpec;
use kiln::image::Reference;
use kiln::parser;
use kiln::store::Store;

use super::values::Network;

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Print a Dockerfile's syntax tree in BuildKit's dump format
    DumpAst {
        /// The Dockerfile (`-` for standard input)
        file: PathBuf,
    },
    /// Run a command in a sandbox over an image and commit what it changed as a new image
    RunStep(RunStepArgs),
    /// Open a shell in a step of the last build: its sandbox, environment and mounts, on its
    /// files (for a failed RUN, as it left them); nothing changed in it is kept
    Shell(super::debugshell::ShellArgs),
}

pub use super::debugshell::after_build;

#[derive(clap::Args, Debug)]
pub struct RunStepArgs {
    /// The image to run on
    #[arg(long)]
    pub image: String,
    /// Name for the committed image
    #[arg(short = 't', long = "tag")]
    pub tag: Option<String>,
    /// User to run as (`name[:group]` or `uid[:gid]`)
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the image
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Network: default (its own, outbound only), host or none
    #[arg(long, value_enum, default_value_t = Network::Default)]
    pub network: Network,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Read a Dockerfile from a path, or standard input for `-`: a regular file, bounded
/// (see `kiln::context::files`).
pub fn read_dockerfile(path: &Path) -> Result<Vec<u8>, String> {
    kiln::context::files::read_dockerfile(path).map_err(|e| format!("error: reading {e}"))
}

pub fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

pub fn run(root: &Path, cmd: DebugCommand) -> i32 {
    match cmd {
        DebugCommand::RunStep(a) => run_step(root, &a),
        DebugCommand::Shell(a) => super::debugshell::shell_cmd(root, &a),
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
/// `build_args` are the `--build-arg` values; base images in the store at `root` lend
/// their Env to UndefinedVar (nothing is pulled, and no store is created).
pub fn check(root: &Path, name: &str, src: &[u8], build_args: &HashMap<String, String>) -> i32 {
    let store: OnceCell<Option<Store>> = OnceCell::new();
    let image_env = |image: &str| {
        let store = store
            .get_or_init(|| root.is_dir().then(|| Store::open(root).ok()).flatten())
            .as_ref()?;
        stored_image_env(store, image)
    };
    let valid_image_name = |n: &str| Reference::parse_normalized_named(n).is_ok();
    let options = parser::check::CheckOptions {
        build_args: Some(build_args),
        image_env: Some(&image_env),
        valid_image_name: Some(&valid_image_name),
    };
    let findings = match std::str::from_utf8(src) {
        Ok(text) => parser::check::check_source_with(text, &options),
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

/// The config Env of a stored image; `None` when it is not there or cannot be read, which
/// the check takes as "unknown".
fn stored_image_env(store: &Store, image: &str) -> Option<Vec<String>> {
    let record = store.resolve(image).ok()?;
    let bytes = kiln::imageops::config_bytes(store, &record).ok()?;
    Some(ImageSpec::from_slice(&bytes).ok()?.config.env)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Prints a step's output as it comes, nothing else.
struct RawOutput;

impl kiln::build::Progress for RawOutput {
    fn event(&self, e: kiln::build::BuildEvent) {
        if let kiln::build::BuildEvent::Output { text, .. } = e {
            println!("{text}");
        }
    }
}

/// `kiln debug run-step`: a one-step build (`FROM image` + `RUN [argv]`), never cached.
fn run_step(root: &Path, a: &RunStepArgs) -> i32 {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut df = format!("FROM {}\n", a.image);
    if let Some(u) = &a.user {
        df.push_str(&format!("USER {u}\n"));
    }
    if let Some(w) = &a.workdir {
        df.push_str(&format!("WORKDIR {w}\n"));
    }
    let argv: Vec<String> = a.command.iter().map(|c| json(c)).collect();
    df.push_str(&format!("RUN [{}]\n", argv.join(", ")));
    let tags = match a
        .tag
        .as_deref()
        .map(kiln::image::Reference::parse)
        .transpose()
    {
        Ok(t) => t.into_iter().collect(),
        Err(e) => {
            eprintln!("error: invalid tag: {e}");
            return 1;
        }
    };
    let store = match kiln::store::Store::open(root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let req = kiln::build::BuildRequest {
        context_dir: std::env::temp_dir(),
        dockerfile: df.into_bytes(),
        dockerfile_name: "run-step".into(),
        tags,
        no_cache: true,
        network: a.network.into(),
        ..Default::default()
    };
    match kiln::build::build(&store, &req, &RawOutput) {
        Ok(r) => {
            eprintln!("committed {}", r.image_id);
            0
        }
        Err(kiln::build::BuildError::RunFailed { message, code, .. }) => {
            eprintln!("error: {message}");
            code
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
