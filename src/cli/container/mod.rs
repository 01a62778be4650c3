//! `kiln run`, `kiln container …` and the short forms (`ps`, `exec`, `stop`, `start`, `rm`,
//! `logs`, …): Docker's flags, columns, messages and exit codes over [`kiln::container`].
//! This file holds the command tree and its dispatch; each area has its own file.

use std::fmt::Display;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use clap::{ArgAction, Args, Subcommand};

use kiln::container::launch;
use kiln::container::monitor;
use kiln::container::ops::{self, StoreContainers};
use kiln::container::{signals, Container, ContainerError, Containers, Status};

use super::{fail, out};

mod attach;
mod exec;
mod inspect;
mod lifecycle;
mod logs;
mod ps;
mod run;

pub use attach::AttachArgs;
pub use exec::ExecArgs;
pub use inspect::{inspect_doc, store_of, ContainerDoc, InspectArgs};
pub use lifecycle::{KillArgs, PruneArgs, RmArgs, StartArgs, StopArgs};
pub use logs::LogsArgs;
pub use ps::PsArgs;
pub use run::RunArgs;

/// Docker's exit code for errors of the tool itself (not of the container).
const EXIT_TOOL: i32 = launch::EXIT_TOOL;

/// Manage containers.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Create and run a new container from an image
    Run(Box<RunArgs>),
    /// Create a new container
    Create(Box<RunArgs>),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// List containers
    #[command(visible_alias = "list", visible_alias = "ps")]
    Ls(PsArgs),
    /// Execute a command in a running container
    Exec(ExecArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(AttachArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Display detailed information on one or more containers
    Inspect(InspectArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(NamesArgs),
    /// Remove all stopped containers
    Prune(PruneArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(super::cp::CpArgs),
    /// List port mappings or a specific mapping for the container
    Port(super::port::PortArgs),
    /// Create a new image from a container's changes
    Commit(super::commit::CommitArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(super::commit::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(super::cp::ExportArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// Pause all processes within one or more containers
    Pause(NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(NamesArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(super::stats::StatsArgs),
    /// Display the running processes of a container
    Top(super::stats::TopArgs),
    /// Internal: the per-container monitor process
    #[command(hide = true)]
    Monitor(MonitorArgs),
}

/// Commands taking a list of containers.
#[derive(Args, Debug)]
pub struct NamesArgs {
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln rename`.
#[derive(Args, Debug)]
pub struct RenameArgs {
    /// The container
    pub container: String,
    /// Its new name
    pub new_name: String,
}

/// The hidden monitor command.
#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Container ID
    pub id: String,
    /// File descriptor to report readiness on
    #[arg(long = "ready-fd")]
    pub ready_fd: Option<i32>,
    /// Wait for a client to attach before starting
    #[arg(long = "wait-attach", action = ArgAction::SetTrue)]
    pub wait_attach: bool,
}

/// Runs one container command.
pub fn run(root: &Path, cmd: ContainerCommand) -> i32 {
    let containers = Containers::new(root);
    match cmd {
        ContainerCommand::Run(a) => run::run_cmd(root, &a, true),
        ContainerCommand::Create(a) => run::run_cmd(root, &a, false),
        ContainerCommand::Start(a) => lifecycle::start_cmd(root, &containers, &a),
        ContainerCommand::Stop(a) => each(&containers, &a.containers, |c| {
            if let Some(s) = &a.signal {
                signals::parse(s)?;
            }
            ops::stop(c, a.time)
        }),
        ContainerCommand::Restart(a) => each(&containers, &a.containers, |c| {
            ops::stop(c, a.time)?;
            let c = Container::load(&c.dir)?;
            launch::start_detached(root, &c)
        }),
        ContainerCommand::Kill(a) => lifecycle::kill_cmd(&containers, &a),
        ContainerCommand::Rm(a) => lifecycle::rm_cmd(&containers, &a),
        ContainerCommand::Ls(a) => ps::ps_cmd(&containers, &a),
        ContainerCommand::Exec(a) => exec::exec_cmd(root, &containers, &a),
        ContainerCommand::Attach(a) => match containers.find(&a.container) {
            Ok(c) if c.state.status == Status::Running => {
                attach::attach_cmd(&c, !a.no_stdin && c.config.open_stdin, a.sig_proxy)
            }
            Ok(_) => fail("You cannot attach to a stopped container, start it first"),
            Err(e) => fail(e),
        },
        ContainerCommand::Logs(a) => logs::logs_cmd(&containers, &a),
        ContainerCommand::Inspect(a) => inspect::inspect_cmd(&containers, &a),
        ContainerCommand::Wait(a) => {
            let mut code = 0;
            for name in &a.containers {
                match containers.find(name).and_then(|c| ops::wait(&c)) {
                    Ok(exit) => out(&format!("{exit}\n")),
                    Err(e) => code = fail(e),
                }
            }
            code
        }
        ContainerCommand::Prune(_) => lifecycle::prune_cmd(&containers),
        ContainerCommand::Cp(a) => super::cp::cp_cmd(root, &a),
        ContainerCommand::Port(a) => super::port::port_cmd(root, &a),
        ContainerCommand::Commit(a) => super::commit::commit_cmd(root, &a),
        ContainerCommand::Diff(a) => super::commit::diff_cmd(root, &a),
        ContainerCommand::Export(a) => super::cp::export_cmd(root, &a),
        ContainerCommand::Rename(a) => match containers.rename(&a.container, &a.new_name) {
            Ok(()) => 0,
            Err(e) => fail(e),
        },
        ContainerCommand::Pause(a) => each(&containers, &a.containers, ops::pause),
        ContainerCommand::Unpause(a) => each(&containers, &a.containers, ops::unpause),
        ContainerCommand::Stats(a) => super::stats::stats_cmd(&containers, &a),
        ContainerCommand::Top(a) => super::stats::top_cmd(&containers, &a),
        ContainerCommand::Monitor(a) => {
            let ready = a.ready_fd.map(|fd| {
                // SAFETY: the CLI passed this fd to us for exactly this purpose.
                File::from(unsafe { OwnedFd::from_raw_fd(fd) })
            });
            monitor::run(root, &a.id, ready, a.wait_attach)
        }
    }
}

/// Applies `f` to each named container, printing the name as Docker does.
fn each<E: Display + From<ContainerError>>(
    containers: &Containers,
    names: &[String],
    f: impl Fn(&Container) -> Result<(), E>,
) -> i32 {
    let mut code = 0;
    for name in names {
        match containers.find(name).map_err(E::from).and_then(|c| f(&c)) {
            Ok(()) => out(&format!("{name}\n")),
            Err(e) => code = fail(e),
        }
    }
    code
}

/// `kiln system restore`: starts the containers Docker's daemon would start at boot:
/// `always` ones, and `unless-stopped` ones nobody stopped. Returns the exit code.
pub fn restore(root: &Path) -> i32 {
    let containers = Containers::new(root);
    containers.clean_leftovers();
    let list = match containers.list() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut code = 0;
    for c in list {
        if kiln::container::monitor_alive(&c.dir) {
            continue;
        }
        // A container never started stays created, as with Docker; `always` comes back even
        // after `stop`, `unless-stopped` only if nobody stopped it.
        let wanted = !c.state.started_at.is_empty()
            && match c.config.restart.name.as_str() {
                "always" => true,
                "unless-stopped" => !c.state.manually_stopped,
                _ => false,
            };
        if !wanted {
            continue;
        }
        match launch::start_detached(root, &c) {
            Ok(()) => out(&format!("{}\n", c.config.name)),
            Err(e) => {
                eprintln!("Error: starting {}: {e}", c.config.name);
                code = 1;
            }
        }
    }
    code
}

/// What `kiln rmi` and `image prune` need to know about containers.
pub fn users(root: &Path) -> StoreContainers {
    StoreContainers(Containers::new(root))
}
