//! Command-line definitions (clap) and dispatch; the only code that prints.

mod build;
mod builder;
mod commit;
mod container;
mod cp;
mod debug;
mod debugshell;
mod dockerhelp;
mod format;
mod image;
mod info;
mod inspect;
mod manifest;
mod port;
mod registry;
mod ssh;
mod stats;
mod system;
mod template;
mod tty;
mod units;
mod usage;
mod values;
mod volume;

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use kiln::store::Store;

/// Where kiln's store is unless `--root` or `KILN_ROOT` says otherwise.
pub(crate) const DEFAULT_ROOT: &str = "/var/lib/kiln";

/// The heading of the options every command takes, apart from each command's own (which
/// `--help` lists first, as Docker lists a command's flags without the global ones).
const GLOBAL: &str = "Global Options";

/// kiln builds container images from Dockerfiles and runs them.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Root directory of kiln's store [default: /var/lib/kiln for root, else
    /// $XDG_DATA_HOME/kiln or ~/.local/share/kiln]
    #[arg(long, global = true, help_heading = GLOBAL, env = "KILN_ROOT")]
    pub root: Option<PathBuf>,

    /// How RUN steps and containers are isolated: `auto` picks the strongest mode the host
    /// allows (`kiln info` says which and why); forcing a mode the host cannot do is an error.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "KILN_ISOLATION",
        value_enum,
        default_value = "auto"
    )]
    pub isolation: values::IsolationArg,

    /// A registry (`host[:port]`) to reach over plain HTTP; may be repeated
    /// (also `KILN_INSECURE_REGISTRIES`, comma separated). Loopback registries always are.
    #[arg(long = "insecure-registry", global = true, help_heading = GLOBAL, value_name = "HOST")]
    pub insecure_registries: Vec<String>,

    /// Print debug logs on standard error (as `docker --debug`); `KILN_LOG` or `RUST_LOG`
    /// (`info`, `kiln=debug`, …) choose more precisely. Warnings are always printed.
    #[arg(short = 'D', long, global = true, help_heading = GLOBAL)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Manage images
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// List images
    Images(image::LsArgs),
    /// Remove one or more images
    Rmi(image::RmArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(image::ImportArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(image::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(image::LoadArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(image::TagArgs),
    /// Manage Docker image manifests and manifest lists
    #[command(subcommand)]
    Manifest(manifest::ManifestCommand),
    /// The part of Docker Buildx kiln has (`imagetools create`)
    #[command(subcommand)]
    Buildx(manifest::BuildxCommand),
    /// Download an image from a registry
    Pull(registry::PullArgs),
    /// Upload an image to a registry
    Push(registry::PushArgs),
    /// Log in to a registry
    Login(registry::LoginArgs),
    /// Log out from a registry
    Logout(registry::LogoutArgs),
    /// Show the history of an image
    History(image::HistoryArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// Create and run a new container from an image
    Run(Box<container::RunArgs>),
    /// Create a new container
    Create(Box<container::RunArgs>),
    /// Start one or more stopped containers
    Start(container::StartArgs),
    /// Stop one or more running containers
    Stop(container::StopArgs),
    /// Restart one or more containers
    Restart(container::StopArgs),
    /// Kill one or more running containers
    Kill(container::KillArgs),
    /// Remove one or more containers
    Rm(container::RmArgs),
    /// List containers
    Ps(container::PsArgs),
    /// Execute a command in a running container
    Exec(container::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(container::AttachArgs),
    /// Fetch the logs of a container
    Logs(container::LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(container::NamesArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(cp::CpArgs),
    /// List port mappings or a specific mapping for the container
    Port(port::PortArgs),
    /// Create a new image from a container's changes
    Commit(commit::CommitArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(commit::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(cp::ExportArgs),
    /// Rename a container
    Rename(container::RenameArgs),
    /// Pause all processes within one or more containers
    Pause(container::NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(container::NamesArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::StatsArgs),
    /// Display the running processes of a container
    Top(stats::TopArgs),
    /// Return low-level information on containers or images
    Inspect(inspect::InspectArgs),
    /// Manage kiln's store
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Manage the build cache
    #[command(subcommand)]
    Builder(builder::BuilderCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Show the kiln version information
    Version(info::InfoArgs),
    /// Display system-wide information
    Info(info::InfoArgs),
    /// Tools for looking inside kiln
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Print a shell completion script (bash, zsh or fish)
    Completion(CompletionArgs),
}

/// `kiln completion`.
#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete kiln's commands and flags in
    #[arg(value_enum)]
    pub shell: values::CompletionShell,
}

/// kiln's command line, with the help of Docker's everyday commands in Docker's shape
/// (see `dockerhelp`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    dockerhelp::apply(Cli::command())
}

/// The process's arguments, parsed against [`command`].
fn parse_cli() -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    Cli::from_arg_matches(&command().try_get_matches()?)
}

/// `kiln completion SHELL`: the script on standard output.
fn completion(a: &CompletionArgs) -> i32 {
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(a.shell),
        &mut command(),
        "kiln",
        &mut script,
    );
    out(&String::from_utf8_lossy(&script));
    0
}

/// Prints an error as Docker's CLI does and returns the exit code for it.
pub(crate) fn fail(e: impl Display) -> i32 {
    eprintln!("Error: {e}");
    1
}

/// Writes to standard output; a closed pipe (`kiln images | head`) is not an error.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Docker's prune prompt: unless `force`, prints `warning` and asks on the terminal; true to go
/// on (`y` or `Y`).
pub(crate) fn confirm_unless(force: bool, warning: &str) -> bool {
    if force {
        return true;
    }
    eprintln!("{warning}");
    eprint!("Are you sure you want to continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y")
}

/// Opens the store, or prints why not and returns the exit code.
pub(crate) fn open_store(root: &Path) -> Result<Store, i32> {
    let store = Store::open(root).map_err(fail)?;
    warn_tightened(&store);
    Ok(store)
}

/// Tells the user the store root was open to other users and is now 0700.
pub(crate) fn warn_tightened(store: &Store) {
    if let Some(mode) = store.tightened_from() {
        eprintln!(
            "warning: store root {} had mode {mode:04o}, readable by other users; it is now 0700",
            store.root().display()
        );
    }
}

/// Sends the library's `tracing` events to standard error: warnings by default (an
/// unreadable CA file, a cache record that could not be written), everything down to debug
/// with `-D`, or what `KILN_LOG` / `RUST_LOG` say.
fn init_logging(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = ["KILN_LOG", "RUST_LOG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(if debug { "debug" } else { "warn" }));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(debug)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
}

/// The store's default root: `/var/lib/kiln` for root (and for the rootless namespace's root,
/// which is the user outside), `$XDG_DATA_HOME/kiln` or `~/.local/share/kiln` for other users.
pub(crate) fn default_root() -> PathBuf {
    let system = PathBuf::from(DEFAULT_ROOT);
    if nix::unistd::geteuid().is_root() {
        return system;
    }
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").and_then(absolute) {
        return xdg.join("kiln");
    }
    match std::env::var_os("HOME").and_then(absolute) {
        Some(home) => home.join(".local/share/kiln"),
        None => system,
    }
}

/// Decides the isolation mode before any command touches the store, and for the rootless
/// mode moves this (still single-threaded) process into its user namespace. Root with the
/// automatic choice is today's sandbox and probes nothing. `Err` holds the exit code.
fn prepare_isolation(arg: values::IsolationArg, command: &Command, root: &Path) -> Result<(), i32> {
    use kiln::executor::isolation::{self, Isolation};
    if matches!(command, Command::Version(_) | Command::Info(_)) {
        return Ok(());
    }
    let forced = arg.forced();
    // Root with `auto` is root mode without a probe, except for a build: inside a default
    // `docker run` root has no mounts, and builds fall back to the unprivileged mode.
    if forced.is_none() && nix::unistd::geteuid().is_root() && !matches!(command, Command::Build(_))
    {
        return Ok(());
    }
    let decision = isolation::decide(isolation::probe(), forced).map_err(fail)?;
    match decision.mode {
        Isolation::Root => Ok(()),
        // One namespace per store, kept by a holder process, so that later commands reach
        // the containers earlier ones started (see `kiln::container::userns`).
        Isolation::Rootless => kiln::container::userns::enter_shared(root, &decision).map_err(fail),
        Isolation::Unprivileged => {
            // Builds run their steps chrooted over copied roots (executor::unpriv).
            if matches!(command, Command::Build(_)) {
                kiln::executor::unpriv::enable();
                return Ok(());
            }
            let runs = matches!(
                command,
                Command::Run(_) | Command::Create(_) | Command::Start(_)
            );
            if runs {
                fail(format!(
                    "isolation unprivileged ({}): running containers in this mode is not \
                     implemented yet (kiln build is)",
                    decision.reason
                ));
                // Docker's code when a container cannot be created.
                return Err(125);
            }
            Ok(())
        }
    }
}

/// Run the command line; returns the process exit code.
pub fn run() -> i32 {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = match parse_cli() {
        Ok(c) => c,
        // Docker's codes: 125 for a flag, 1 for arguments or an unknown command.
        Err(e) => return usage::report(&e, &argv),
    };
    init_logging(cli.debug);
    let mut cli = cli;
    use container::ContainerCommand as C;
    use image::ImageCommand as I;
    let mut root = cli.root.take().unwrap_or_else(default_root);
    // Absolute, so paths derived from it stay right in threads that change directory.
    if let Ok(abs) = std::path::absolute(&root) {
        root = abs;
    }
    if let Err(code) = prepare_isolation(cli.isolation, &cli.command, &root) {
        return code;
    }
    if !cli.insecure_registries.is_empty() {
        let mut all = std::env::var("KILN_INSECURE_REGISTRIES").unwrap_or_default();
        for h in &cli.insecure_registries {
            if !all.is_empty() {
                all.push(',');
            }
            all.push_str(h);
        }
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("KILN_INSECURE_REGISTRIES", all);
    }
    match cli.command {
        Command::Build(args) => build::run(&root, &args),
        Command::Image(cmd) => image::run(&root, cmd),
        Command::Images(a) => image::run(&root, I::Ls(a)),
        Command::Rmi(a) => image::run(&root, I::Rm(a)),
        Command::Import(a) => image::run(&root, I::Import(a)),
        Command::Save(a) => image::run(&root, I::Save(a)),
        Command::Load(a) => image::run(&root, I::Load(a)),
        Command::Tag(a) => image::run(&root, I::Tag(a)),
        Command::Manifest(cmd) => manifest::run(&root, cmd),
        Command::Buildx(cmd) => manifest::run_buildx(cmd),
        Command::Pull(a) => registry::pull(&root, &a),
        Command::Push(a) => registry::push_cli(&root, &a),
        Command::Login(a) => registry::login(&a),
        Command::Logout(a) => registry::logout(&a),
        Command::History(a) => image::run(&root, I::History(a)),
        Command::Container(cmd) => container::run(&root, cmd),
        Command::Run(a) => container::run(&root, C::Run(a)),
        Command::Create(a) => container::run(&root, C::Create(a)),
        Command::Start(a) => container::run(&root, C::Start(a)),
        Command::Stop(a) => container::run(&root, C::Stop(a)),
        Command::Restart(a) => container::run(&root, C::Restart(a)),
        Command::Kill(a) => container::run(&root, C::Kill(a)),
        Command::Rm(a) => container::run(&root, C::Rm(a)),
        Command::Ps(a) => container::run(&root, C::Ls(a)),
        Command::Exec(a) => container::run(&root, C::Exec(a)),
        Command::Attach(a) => container::run(&root, C::Attach(a)),
        Command::Logs(a) => container::run(&root, C::Logs(a)),
        Command::Wait(a) => container::run(&root, C::Wait(a)),
        Command::Cp(a) => container::run(&root, C::Cp(a)),
        Command::Port(a) => container::run(&root, C::Port(a)),
        Command::Commit(a) => container::run(&root, C::Commit(a)),
        Command::Diff(a) => container::run(&root, C::Diff(a)),
        Command::Export(a) => container::run(&root, C::Export(a)),
        Command::Rename(a) => container::run(&root, C::Rename(a)),
        Command::Pause(a) => container::run(&root, C::Pause(a)),
        Command::Unpause(a) => container::run(&root, C::Unpause(a)),
        Command::Stats(a) => container::run(&root, C::Stats(a)),
        Command::Top(a) => container::run(&root, C::Top(a)),
        Command::Inspect(a) => inspect::run(&root, &a),
        Command::System(cmd) => system::run(&root, cmd),
        Command::Builder(cmd) => builder::run(&root, cmd),
        Command::Volume(cmd) => volume::run(&root, cmd),
        Command::Version(a) => info::version_cmd(&a),
        Command::Info(a) => info::info_cmd(&root, &a, cli.isolation),
        Command::Debug(cmd) => debug::run(&root, cmd),
        Command::Completion(a) => completion(&a),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::command().debug_assert();
    }
}
