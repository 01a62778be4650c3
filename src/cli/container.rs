//! `kiln run`, `kiln container …` and the short forms (`ps`, `exec`, `stop`, `start`, `rm`,
//! `logs`, …): Docker's flags, columns, messages and exit codes over [`kiln::container`].

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{ArgAction, Args, Subcommand};
use serde_json::{json, Value};

use kiln::common::time::Timestamp;
use kiln::container::attach::{self, Frame, Streams};
use kiln::container::cgroups::{self, Resources};
use kiln::container::logs;
use kiln::container::monitor::{self, resize};
use kiln::container::ops::{self, CreateOptions, StoreContainers};
use kiln::container::{
    signals, Container, ContainerError, Containers, Network, PortBinding, RestartPolicy, Status,
};
use kiln::executor::{self, Input, Output, StepIo, StepSpec};

use super::image::render;
use super::tty::window_size as term_size;
use super::units::{human_duration, human_size};
use super::{fail, open_store, out};

/// Docker's exit code for errors of the tool itself (not of the container).
const EXIT_TOOL: i32 = 125;

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

/// `kiln run` / `kiln create`.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (`-h` is --hostname, as in Docker)
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Publish a container's port(s) to the host ([ip:][host[-host]:]ctr[-ctr][/tcp|udp])
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Bind mount a volume (/host:/ctr[:ro], name:/ctr, /ctr)
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume,source=…,target=…[,readonly])
    #[arg(long)]
    pub mount: Vec<String>,
    /// Restart policy (no, always, unless-stopped, on-failure[:max-retries])
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Network: private (own namespace, loopback, ports forwarded), pasta (private plus
    /// outbound through pasta), host, none
    #[arg(long, default_value = "private")]
    pub network: String,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u32>,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Command to run to check health (run with /bin/sh -c)
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Start period for the container to initialize before failures count (ms|s|m|h)
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h)
    #[arg(long = "health-start-interval")]
    pub health_start_interval: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries")]
    pub health_retries: Option<u32>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Mount a tmpfs directory (PATH[:size=…,mode=…])
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Memory limit (e.g. 64m, 1g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares", allow_hyphen_values = true)]
    pub cpu_shares: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<String>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// The image
    pub image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `kiln start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln stop` / `kiln restart`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", visible_alias = "timeout")]
    pub time: Option<u32>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter output based on conditions provided (id, name, status, label, ancestor, exited)
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Show the latest created container
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Show n last created containers
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
}

/// `kiln exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// The container
    pub container: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `kiln attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// The container
    pub container: String,
}

/// `kiln logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show logs since a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)
    #[arg(long)]
    pub until: Option<String>,
    /// The container
    pub container: String,
}

/// `kiln container inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
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

/// `kiln container prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
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
        ContainerCommand::Run(a) => run_cmd(root, &a, true),
        ContainerCommand::Create(a) => run_cmd(root, &a, false),
        ContainerCommand::Start(a) => start_cmd(root, &containers, &a),
        ContainerCommand::Stop(a) => each(&containers, &a.containers, |c| {
            if let Some(s) = &a.signal {
                signals::parse(s)?;
            }
            ops::stop(c, a.time)
        }),
        ContainerCommand::Restart(a) => each(&containers, &a.containers, |c| {
            ops::stop(c, a.time)?;
            let c = Container::load(&c.dir)?;
            start_detached(root, &c).map_err(|e| ContainerError::Other(e.message))
        }),
        ContainerCommand::Kill(a) => match signals::parse(&a.signal) {
            Ok(sig) => each(&containers, &a.containers, |c| ops::kill(c, sig)),
            Err(e) => fail(e),
        },
        ContainerCommand::Rm(a) => rm_cmd(&containers, &a),
        ContainerCommand::Ls(a) => ps_cmd(&containers, &a),
        ContainerCommand::Exec(a) => exec_cmd(root, &containers, &a),
        ContainerCommand::Attach(a) => match containers.find(&a.container) {
            Ok(c) if c.state.status == Status::Running => {
                attach_cmd(&c, !a.no_stdin && c.config.open_stdin, None)
            }
            Ok(_) => fail("You cannot attach to a stopped container, start it first"),
            Err(e) => fail(e),
        },
        ContainerCommand::Logs(a) => logs_cmd(&containers, &a),
        ContainerCommand::Inspect(a) => inspect_cmd(&containers, &a),
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
        ContainerCommand::Prune(_) => prune_cmd(&containers),
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
fn each(
    containers: &Containers,
    names: &[String],
    f: impl Fn(&Container) -> Result<(), ContainerError>,
) -> i32 {
    let mut code = 0;
    for name in names {
        match containers.find(name).and_then(|c| f(&c)) {
            Ok(()) => out(&format!("{name}\n")),
            Err(e) => code = fail(e),
        }
    }
    code
}

fn create_options(root: &Path, a: &RunArgs, attach: bool) -> Result<CreateOptions, ContainerError> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(ops::read_env_file(f)?);
    }
    env.extend(a.env.iter().cloned());
    let mut ports = Vec::new();
    for p in &a.publish {
        ports.extend(PortBinding::parse_all(p)?);
    }
    let network = Network::parse(&a.network)?;
    if network == Network::Host && !ports.is_empty() {
        eprintln!("WARNING: Published ports are discarded when using host network mode");
    }
    let _ = root;
    Ok(CreateOptions {
        image: a.image.clone(),
        command: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        name: a.name.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        interactive: a.interactive,
        attach,
        network,
        ports,
        publish_all: a.publish_all,
        volumes: a.volume.clone(),
        mounts: a.mount.clone(),
        restart: RestartPolicy::parse(&a.restart)?,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        auto_remove: a.rm,
        labels: a.label.clone(),
        init: a.init,
        resources: resources(a)?,
        health: health_flags(a)?,
        read_only: a.read_only,
        tmpfs: a.tmpfs.clone(),
        add_hosts: a.add_host.clone(),
    })
}

fn health_flags(a: &RunArgs) -> Result<kiln::container::health::HealthFlags, ContainerError> {
    use kiln::container::health::parse_duration;
    let d =
        |flag: &str, v: &Option<String>| v.as_deref().map(|s| parse_duration(flag, s)).transpose();
    let flags = kiln::container::health::HealthFlags {
        cmd: a.health_cmd.clone(),
        interval: d("--health-interval", &a.health_interval)?,
        timeout: d("--health-timeout", &a.health_timeout)?,
        start_period: d("--health-start-period", &a.health_start_period)?,
        start_interval: d("--health-start-interval", &a.health_start_interval)?,
        retries: a.health_retries,
        disable: a.no_healthcheck,
    };
    if flags.disable && (flags.cmd.is_some() || flags.interval.is_some() || flags.retries.is_some())
    {
        return Err(ContainerError::Invalid(
            "--no-healthcheck conflicts with --health-* options".into(),
        ));
    }
    Ok(flags)
}

/// The resource flags, parsed as Docker parses them.
fn resources(a: &RunArgs) -> Result<Resources, ContainerError> {
    let bad = |v: &str, flag: &str, why: &str| {
        ContainerError::Invalid(format!("invalid argument {v:?} for \"{flag}\" flag: {why}"))
    };
    let size = |v: &Option<String>, flag: &str| -> Result<i64, ContainerError> {
        match v.as_deref() {
            None => Ok(0),
            Some("-1") if flag == "--memory-swap" => Ok(-1),
            Some(s) => {
                cgroups::parse_bytes(s).ok_or_else(|| bad(s, flag, &format!("invalid size: '{s}'")))
            }
        }
    };
    let int = |v: &Option<String>, flag: &str| -> Result<i64, ContainerError> {
        match v.as_deref() {
            None => Ok(0),
            Some(s) => s.trim().parse().map_err(|_| {
                bad(
                    s,
                    flag,
                    &format!("strconv.ParseInt: parsing {s:?}: invalid syntax"),
                )
            }),
        }
    };
    let nano_cpus = match a.cpus.as_deref() {
        None => 0,
        Some(s) => cgroups::parse_cpus(s).ok_or_else(|| {
            bad(
                s,
                "--cpus",
                &format!("failed to parse {s} as a rational number"),
            )
        })?,
    };
    let memory_swap = size(&a.memory_swap, "--memory-swap")?;
    if memory_swap != 0 && !cgroups::Hierarchy::host().is_some_and(|h| h.swap_limit_supported()) {
        eprintln!("WARNING: Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap.");
    }
    Ok(Resources {
        memory: size(&a.memory, "-m, --memory")?,
        memory_swap,
        nano_cpus,
        cpu_shares: int(&a.cpu_shares, "-c, --cpu-shares")?,
        pids_limit: int(&a.pids_limit, "--pids-limit")?.max(0),
        cpuset_cpus: a.cpuset_cpus.clone().unwrap_or_default(),
    })
}

fn run_cmd(root: &Path, a: &RunArgs, start: bool) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(_) => return EXIT_TOOL,
    };
    let attach_mode = start && !a.detach;
    let opts = match create_options(root, a, attach_mode) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kiln: {e}");
            return EXIT_TOOL;
        }
    };
    if a.tty && attach_mode && !io::stdin().is_terminal() && a.interactive {
        eprintln!("the input device is not a TTY");
        return 1;
    }
    let c = match ops::create(&store, &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln: {e}");
            return EXIT_TOOL;
        }
    };
    drop(store);
    if !start {
        out(&format!("{}\n", c.config.id));
        return 0;
    }
    if a.detach {
        return match start_detached(root, &c) {
            Ok(()) => {
                out(&format!("{}\n", c.config.id));
                0
            }
            Err(StartError { code, message }) => {
                eprintln!("kiln: {message}");
                cleanup_failed(root, &c);
                code
            }
        };
    }
    match start_attached(root, &c, a.interactive) {
        Ok(code) => {
            // With --rm, return once the monitor has removed the container (as `docker run
            // --rm` does), unless the user detached and it still runs.
            if c.config.auto_remove {
                if let Ok(now) = Container::load(&c.dir) {
                    if !now.is_running() {
                        ops::wait_monitor_gone(&now, std::time::Duration::from_secs(10));
                    }
                }
            }
            code
        }
        Err(StartError { code, message }) => {
            eprintln!("kiln: {message}");
            cleanup_failed(root, &c);
            code
        }
    }
}

/// `--rm` containers that never started are removed, as Docker does.
fn cleanup_failed(root: &Path, c: &Container) {
    if c.config.auto_remove {
        let cs = Containers::new(root);
        if let Ok(c) = Container::load(&c.dir) {
            let _ = ops::remove(&cs, &c, true);
        }
    }
}

/// Why a start failed, with the exit code Docker would give.
struct StartError {
    code: i32,
    message: String,
}

impl From<ContainerError> for StartError {
    fn from(e: ContainerError) -> Self {
        StartError {
            code: EXIT_TOOL,
            message: e.to_string(),
        }
    }
}

/// Starts the monitor process for `c`; returns its readiness pipe.
fn spawn_monitor(root: &Path, c: &Container, wait_attach: bool) -> Result<File, StartError> {
    // A container that has just exited may still have its monitor recording that.
    let settled = c.is_running()
        || kiln::container::ops::wait_monitor_gone(c, std::time::Duration::from_secs(5));
    if !settled || kiln::container::monitor_alive(&c.dir) {
        return Err(StartError {
            code: EXIT_TOOL,
            message: format!("container {} is already running", c.config.name),
        });
    }
    let mut fds = [0; 2];
    // SAFETY: valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(StartError {
            code: EXIT_TOOL,
            message: format!("pipe: {}", io::Error::last_os_error()),
        });
    }
    // SAFETY: fresh fds.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .args(["container", "monitor", &c.config.id, "--ready-fd", "3"]);
    if wait_attach {
        cmd.arg("--wait-attach");
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let wfd = w.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wfd, 3) < 0 || libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| StartError {
        code: EXIT_TOOL,
        message: format!("starting the container monitor: {e}"),
    })?;
    drop(w);
    Ok(File::from(r))
}

/// Reads one line from the monitor's readiness pipe.
fn ready_line(r: &mut File) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = r.read(&mut b) {
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn parse_ready(line: &str) -> Result<(), StartError> {
    if line == "started" {
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix("error ") {
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        return Err(StartError {
            code: code.parse().unwrap_or(EXIT_TOOL),
            message: msg.to_string(),
        });
    }
    Err(StartError {
        code: EXIT_TOOL,
        message: "the container monitor exited before starting the container".into(),
    })
}

fn start_detached(root: &Path, c: &Container) -> Result<(), StartError> {
    let mut r = spawn_monitor(root, c, false)?;
    parse_ready(&ready_line(&mut r))
}

fn start_attached(root: &Path, c: &Container, stdin: bool) -> Result<i32, StartError> {
    let mut r = spawn_monitor(root, c, true)?;
    let first = ready_line(&mut r);
    if first != "attach" {
        parse_ready(&first)?;
    }
    let streams = Streams {
        stdin,
        stdout: true,
        stderr: true,
    };
    let sock = attach::connect(&c.dir, streams).map_err(|e| StartError {
        code: EXIT_TOOL,
        message: format!("attaching to the container: {e}"),
    })?;
    parse_ready(&ready_line(&mut r))?;
    Ok(attach_loop(sock, stdin, c.config.tty))
}

fn attach_cmd(c: &Container, stdin: bool, _unused: Option<()>) -> i32 {
    let streams = Streams {
        stdin,
        stdout: true,
        stderr: true,
    };
    match attach::connect(&c.dir, streams) {
        Ok(sock) => attach_loop(sock, stdin, c.config.tty),
        Err(e) => fail(format!("attaching to {}: {e}", c.config.name)),
    }
}

/// Puts the terminal on stdin in raw mode until dropped.
struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                s,
            );
        }
    }
}

/// Scans typed bytes for Docker's detach keys, Ctrl-P Ctrl-Q.
#[derive(Default)]
struct DetachKeys {
    held: bool,
}

impl DetachKeys {
    /// The bytes to send on, and whether the sequence completed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.held {
                self.held = false;
                if b == 0x11 {
                    return (out, true);
                }
                out.push(0x10);
            }
            if b == 0x10 {
                self.held = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Relays the terminal to an attach connection until the container exits (its code) or the
/// user detaches (0).
fn attach_loop(sock: UnixStream, stdin: bool, tty: bool) -> i32 {
    let raw = if tty && stdin {
        Some(RawMode::enter())
    } else {
        None
    };
    let writer = match sock.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => return fail(e),
    };
    let detached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if tty {
        let w = writer.clone();
        std::thread::spawn(move || {
            let mut last = None;
            loop {
                let size = term_size(io::stdout().as_raw_fd())
                    .or_else(|| term_size(io::stdin().as_raw_fd()));
                if size.is_some() && size != last {
                    if let Some((r, c)) = size {
                        let Ok(mut s) = w.lock() else { return };
                        if Frame::Resize(r, c).write_to(&mut *s).is_err() {
                            return;
                        }
                    }
                    last = size;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }
    if stdin {
        let w = writer.clone();
        let detached = detached.clone();
        let keys = tty;
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut dk = DetachKeys::default();
            let mut input = io::stdin().lock();
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        if let Ok(mut s) = w.lock() {
                            let _ = Frame::StdinClose.write_to(&mut *s);
                        }
                        return;
                    }
                    Ok(n) => n,
                };
                let (data, detach) = if keys {
                    dk.feed(&buf[..n])
                } else {
                    (buf[..n].to_vec(), false)
                };
                let Ok(mut s) = w.lock() else { return };
                if !data.is_empty() && Frame::Stdin(data).write_to(&mut *s).is_err() {
                    return;
                }
                if detach {
                    detached.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        });
    }
    let mut reader = sock;
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let mut code = 0;
    loop {
        match Frame::read_from(&mut reader) {
            Ok(Some(Frame::Stdout(d))) => {
                let _ = stdout.write_all(&d);
                let _ = stdout.flush();
            }
            Ok(Some(Frame::Stderr(d))) => {
                let _ = stderr.write_all(&d);
                let _ = stderr.flush();
            }
            Ok(Some(Frame::Exit(c))) => {
                code = c;
                break;
            }
            Ok(Some(Frame::Error(m))) => {
                // The exit frame follows with the code (126 cannot run, 127 not found).
                eprintln!("kiln: {m}");
                code = 126;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    drop(raw);
    if detached.load(std::sync::atomic::Ordering::SeqCst) {
        eprintln!("read escape sequence");
        return 0;
    }
    code
}

fn start_cmd(root: &Path, containers: &Containers, a: &StartArgs) -> i32 {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return fail("you cannot start and attach multiple containers at once");
        }
        let c = match containers.find(&a.containers[0]) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        if c.is_running() {
            return attach_cmd(&c, a.interactive && c.config.open_stdin, None);
        }
        return match start_attached(root, &c, a.interactive && c.config.open_stdin) {
            Ok(code) => code,
            Err(e) => fail(e.message),
        };
    }
    let mut code = 0;
    for name in &a.containers {
        let res = containers
            .find(name)
            .map_err(StartError::from)
            .and_then(|c| {
                if c.is_running() {
                    Ok(())
                } else {
                    start_detached(root, &c)
                }
            });
        match res {
            Ok(()) => out(&format!("{name}\n")),
            Err(e) => {
                eprintln!("Error response from daemon: {}", e.message);
                code = 1;
            }
        }
    }
    if code != 0 {
        eprintln!(
            "Error: failed to start containers: {}",
            a.containers.join(", ")
        );
    }
    code
}

fn rm_cmd(containers: &Containers, a: &RmArgs) -> i32 {
    let mut code = 0;
    for name in &a.containers {
        let res = containers.find(name).and_then(|c| {
            ops::remove(containers, &c, a.force)?;
            if a.volumes {
                for m in c.config.mounts.iter().filter(|m| m.kind == "volume") {
                    // Anonymous volumes have 64-hex names.
                    if m.name.len() == 64 {
                        if let Some(vol) = m.source.parent() {
                            let _ = std::fs::remove_dir_all(vol);
                        }
                    }
                }
            }
            Ok(())
        });
        match res {
            Ok(()) => out(&format!("{name}\n")),
            Err(e) => code = fail(e),
        }
    }
    code
}

fn prune_cmd(containers: &Containers) -> i32 {
    let list = match containers.list() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut text = String::from("Deleted Containers:\n");
    let mut any = false;
    for c in list.iter().filter(|c| !c.is_running()) {
        if ops::remove(containers, c, false).is_ok() {
            text.push_str(&format!("{}\n", c.config.id));
            any = true;
        }
    }
    containers.clean_leftovers();
    if any {
        text.push('\n');
    } else {
        text.clear();
    }
    text.push_str("Total reclaimed space: 0B\n");
    out(&text);
    0
}

// ---------------------------------------------------------------------------
// ps

fn quote_command(argv: &[String]) -> String {
    argv.join(" ")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn ago(t: &str, now: Timestamp) -> String {
    match Timestamp::parse_rfc3339(t) {
        Ok(t) => human_duration(t.seconds_until(now)),
        Err(_) => "Less than a second".into(),
    }
}

/// Docker's name of the state: the recorded status, or `paused`.
fn state_name(c: &Container) -> &'static str {
    if c.paused {
        "paused"
    } else {
        c.state.status.as_str()
    }
}

/// Docker's STATUS column.
pub fn status_text(c: &Container, now: Timestamp) -> String {
    match c.state.status {
        Status::Created => "Created".into(),
        Status::Running if c.paused => {
            format!("Up {} (Paused)", ago(&c.state.started_at, now))
        }
        Status::Running => {
            let health = match c.health.as_ref().map(|h| h.status.as_str()) {
                Some("starting") => " (health: starting)",
                Some("healthy") => " (healthy)",
                Some("unhealthy") => " (unhealthy)",
                _ => "",
            };
            format!("Up {}{health}", ago(&c.state.started_at, now))
        }
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            c.state.exit_code,
            ago(&c.state.finished_at, now)
        ),
        Status::Exited => {
            if c.state.finished_at.is_empty() {
                format!("Exited ({})", c.state.exit_code)
            } else {
                format!(
                    "Exited ({}) {} ago",
                    c.state.exit_code,
                    ago(&c.state.finished_at, now)
                )
            }
        }
        Status::Dead => "Dead".into(),
    }
}

fn ports_text(c: &Container) -> String {
    let bound = if c.is_running() && !c.state.ports.is_empty() {
        &c.state.ports
    } else {
        &c.config.ports
    };
    let mut parts: Vec<String> = if c.is_running() {
        bound.iter().map(PortBinding::display).collect()
    } else {
        Vec::new()
    };
    for e in &c.config.exposed_ports {
        let published = bound
            .iter()
            .any(|p| format!("{}/{}", p.container_port, p.proto) == *e);
        if !published && c.is_running() {
            parts.push(e.clone());
        }
    }
    parts.join(", ")
}

fn ps_row(c: &Container, no_trunc: bool, now: Timestamp) -> Value {
    let cmd = quote_command(&c.config.argv);
    let labels: Vec<String> = c
        .config
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    json!({
        "ID": if no_trunc { c.config.id.clone() } else { c.short_id().to_string() },
        "Image": c.config.image,
        "Command": if no_trunc { format!("\"{cmd}\"") } else { format!("\"{}\"", truncate(&cmd, 20)) },
        "CreatedAt": c.config.created,
        "RunningFor": format!("{} ago", ago(&c.config.created, now)),
        "Ports": ports_text(c),
        "State": state_name(c),
        "Status": status_text(c, now),
        "Names": c.config.name,
        "Labels": labels.join(","),
        "Mounts": c.config.mounts.iter().map(|m| if m.name.is_empty() { m.source.display().to_string() } else { m.name.clone() }).collect::<Vec<_>>().join(","),
        "Networks": c.config.network.name(),
        "Size": "N/A",
    })
}

fn ps_title(f: &str) -> String {
    match f {
        "ID" => "CONTAINER ID",
        "RunningFor" => "CREATED",
        "CreatedAt" => "CREATED AT",
        other => return other.to_uppercase(),
    }
    .to_string()
}

/// One `--filter` of `ps`.
fn ps_filter(c: &Container, f: &str) -> Result<bool, String> {
    let (k, v) = f
        .split_once('=')
        .ok_or_else(|| format!("bad format of filter (expected name=value): {f}"))?;
    Ok(match k {
        "id" => c.config.id.starts_with(v),
        "name" => c.config.name.contains(v.trim_start_matches('/')),
        "status" => {
            if ![
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ]
            .contains(&v)
            {
                return Err(format!("invalid filter 'status={v}'"));
            }
            state_name(c) == v
        }
        "label" => match v.split_once('=') {
            Some((lk, lv)) => c.config.labels.get(lk).is_some_and(|x| x == lv),
            None => c.config.labels.contains_key(v),
        },
        "ancestor" => {
            c.config.image == v
                || c.config.image_id == v
                || c.config
                    .image_id
                    .trim_start_matches("sha256:")
                    .starts_with(v)
        }
        "exited" => {
            c.state.status == Status::Exited
                && v.parse::<i32>()
                    .map_err(|_| format!("invalid filter 'exited={v}'"))?
                    == c.state.exit_code
        }
        "network" => c.config.network.name() == v,
        "health" => {
            if !["starting", "healthy", "unhealthy", "none"].contains(&v) {
                return Err(format!("invalid filter 'health={v}'"));
            }
            let status = match (&c.health, c.state.status) {
                (Some(h), Status::Running) => h.status.as_str(),
                _ => "none",
            };
            status == v
        }
        _ => return Err(format!("invalid filter '{k}'")),
    })
}

fn ps_cmd(containers: &Containers, a: &PsArgs) -> i32 {
    let mut list = match containers.list() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let all = a.all
        || a.latest
        || a.last.is_some()
        || a.filter
            .iter()
            .any(|f| f.starts_with("status=") || f.starts_with("exited="));
    if !all {
        list.retain(|c| c.is_running());
    }
    let mut kept = Vec::new();
    for c in list {
        let mut ok = true;
        for f in &a.filter {
            match ps_filter(&c, f) {
                Ok(true) => {}
                Ok(false) => ok = false,
                Err(e) => return fail(e),
            }
        }
        if ok {
            kept.push(c);
        }
    }
    if a.latest {
        kept.truncate(1);
    } else if let Some(n) = a.last {
        kept.truncate(n);
    }
    let now = Timestamp::now();
    let store = if a.size || a.format.as_deref().is_some_and(|f| f.contains(".Size")) {
        kiln::store::Store::open(containers.dir().parent().unwrap_or(containers.dir())).ok()
    } else {
        None
    };
    let rows: Vec<Value> = kept
        .iter()
        .map(|c| {
            let mut row = ps_row(c, a.no_trunc, now);
            if let Some(store) = &store {
                // Docker's SIZE: what the container wrote, and with its image's layers.
                let own = kiln::container::volumes::du(&c.dir.join("upper"));
                let image: u64 = c
                    .diff_ids()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|d| store.blob_size(d).ok())
                    .sum();
                row["Size"] = json!(format!(
                    "{} (virtual {})",
                    human_size(own),
                    human_size(own + image)
                ));
            }
            row
        })
        .collect();
    const TABLE: &str = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
    let template = match a.format.as_deref() {
        None | Some("table") if a.quiet => "{{.ID}}".to_string(),
        None | Some("table") if a.size => format!("{TABLE}\t{{{{.Size}}}}"),
        None | Some("table") => TABLE.to_string(),
        Some("json") => "{{json .}}".to_string(),
        Some(f) => f.to_string(),
    };
    match render(&template, &rows, &ps_title) {
        Ok(t) => {
            out(&t);
            0
        }
        Err(e) => fail(e),
    }
}

// ---------------------------------------------------------------------------
// exec

fn exec_cmd(root: &Path, containers: &Containers, a: &ExecArgs) -> i32 {
    let c = match containers.find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Some(pidfd) = c.pidfd() else {
        return fail(format!("container {} is not running", c.config.id));
    };
    if c.paused {
        return fail(format!(
            "Container {} is paused, unpause the container before exec",
            c.config.id
        ));
    }
    if a.detach {
        // A detached exec is this same command, run in the background on its own session.
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--root").arg(root).arg("exec");
        for e in &a.env {
            cmd.arg("-e").arg(e);
        }
        if let Some(w) = &a.workdir {
            cmd.arg("-w").arg(w);
        }
        if let Some(u) = &a.user {
            cmd.arg("-u").arg(u);
        }
        cmd.arg(&c.config.id).arg("--").args(&a.command);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        return match cmd.spawn() {
            Ok(_) => 0,
            Err(e) => fail(e),
        };
    }
    let mut command = a.command.clone();
    if command.first().is_some_and(|c| c == "--") {
        command.remove(0);
    }
    if command.is_empty() {
        return fail("exec needs a command");
    }
    let mut spec = c.config.step_spec(root.join("tmp"), command);
    let env = &mut spec.env;
    for e in &a.env {
        if let Some((k, _)) = e.split_once('=') {
            env.retain(|x| x.split_once('=').map_or(x.as_str(), |(key, _)| key) != k);
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.retain(|x| x.split_once('=').map_or(x.as_str(), |(key, _)| key) != e);
            env.push(format!("{e}={v}"));
        }
    }
    if a.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if let Some(w) = a.workdir.as_ref().filter(|w| !w.is_empty()) {
        spec.workdir = w.clone();
    }
    if let Some(u) = &a.user {
        spec.user = u.clone();
    }
    let mut join = ops::cgroup_joiner(&c.config.id);
    let result = if a.tty {
        exec_tty(&spec, &pidfd, a.interactive, &mut join)
    } else {
        executor::exec_in(
            &spec,
            pidfd.as_fd(),
            StepIo {
                stdin: if a.interactive {
                    Input::Inherit
                } else {
                    Input::Null
                },
                stdout: Output::Inherit,
                stderr: Output::Inherit,
                on_start: None,
                console: None,
                on_ready: Some(&mut join),
            },
        )
    };
    match result {
        Ok(executor::ExitStatus::Code(code)) => code,
        Ok(executor::ExitStatus::Signal(s)) => 128 + s,
        Err(e) => {
            eprintln!("OCI runtime exec failed: {e}");
            monitor::start_failure_code(&e).max(126)
        }
    }
}

/// `exec -t`: the command gets a pty from the container's devpts; this process relays the
/// terminal to its master end.
fn exec_tty(
    spec: &StepSpec,
    pidfd: &OwnedFd,
    interactive: bool,
    join: &mut dyn FnMut(libc::pid_t) -> io::Result<()>,
) -> Result<executor::ExitStatus, executor::ExecError> {
    let raw = if interactive {
        Some(RawMode::enter())
    } else {
        None
    };
    let mut pump: Option<std::thread::JoinHandle<()>> = None;
    let mut on_console = |master: OwnedFd| {
        if let Some((r, c)) = term_size(io::stdout().as_raw_fd()) {
            resize(master.as_raw_fd(), r, c);
        }
        if interactive {
            if let Ok(m_in) = master.try_clone() {
                std::thread::spawn(move || {
                    let mut f = File::from(m_in);
                    let mut buf = [0u8; 8192];
                    let mut input = io::stdin().lock();
                    while let Ok(n) = input.read(&mut buf) {
                        if n == 0 || f.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        pump = Some(std::thread::spawn(move || {
            let mut f = File::from(master);
            let mut buf = [0u8; 8192];
            let mut stdout = io::stdout();
            // EIO once the last process holding the terminal is gone.
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = stdout.write_all(&buf[..n]);
                let _ = stdout.flush();
            }
        }));
    };
    let res = executor::exec_in(
        spec,
        pidfd.as_fd(),
        StepIo {
            console: Some(&mut on_console),
            on_ready: Some(join),
            ..Default::default()
        },
    );
    if let Some(p) = pump {
        let _ = p.join();
    }
    drop(raw);
    res
}

// ---------------------------------------------------------------------------
// logs

fn logs_cmd(containers: &Containers, a: &LogsArgs) -> i32 {
    let c = match containers.find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let tail: Option<usize> = match a.tail.as_str() {
        "all" | "-1" => None,
        n => match n.parse() {
            Ok(n) => Some(n),
            Err(_) => return fail(format!("invalid value for --tail: {n:?}")),
        },
    };
    let now = Timestamp::now();
    let bound = |v: &Option<String>| {
        v.as_deref()
            .map(|s| kiln::common::time::parse_time_filter(s, now))
            .transpose()
    };
    let (since, until) = match (bound(&a.since), bound(&a.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let in_window = |e: &logs::Entry| {
        if since.is_none() && until.is_none() {
            return true;
        }
        let Ok(t) = Timestamp::parse_rfc3339(&e.time) else {
            return true;
        };
        since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
    };
    let mut reader = logs::Reader::new(&c.dir);
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let window = |entries: Vec<logs::Entry>| -> Vec<logs::Entry> {
        entries.into_iter().filter(|e| in_window(e)).collect()
    };
    let mut print = |entries: &[logs::Entry]| {
        for e in entries {
            let mut line = String::new();
            if a.timestamps {
                line.push_str(&e.time);
                line.push(' ');
            }
            line.push_str(&e.log);
            let w: &mut dyn Write = if e.stream == "stderr" {
                &mut stderr
            } else {
                &mut stdout
            };
            let _ = w.write_all(line.as_bytes());
            let _ = w.flush();
        }
    };
    let first = match reader.next_entries() {
        Ok(e) => window(e),
        Err(e) => return fail(e),
    };
    let skip = tail.map_or(0, |n| first.len().saturating_sub(n));
    print(&first[skip..]);
    if !a.follow || until.is_some_and(|u| u <= now) {
        return 0;
    }
    loop {
        let live = Container::load(&c.dir)
            .map(|c| c.is_running() || kiln::container::monitor_alive(&c.dir))
            .unwrap_or(false);
        match reader.next_entries() {
            Ok(e) => print(&window(e)),
            Err(e) => return fail(e),
        }
        if !live {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// inspect

/// Docker's `docker container inspect` document.
pub fn inspect_doc(c: &Container) -> Value {
    let cfg = &c.config;
    let st = &c.state;
    let mut ports = serde_json::Map::new();
    for e in &cfg.exposed_ports {
        ports.insert(e.clone(), Value::Null);
    }
    let bound = if c.is_running() && !st.ports.is_empty() {
        &st.ports
    } else {
        &cfg.ports
    };
    let mut bindings = serde_json::Map::new();
    for p in &cfg.ports {
        let host_port = if p.host_port == 0 {
            String::new()
        } else {
            p.host_port.to_string()
        };
        let slot = bindings
            .entry(format!("{}/{}", p.container_port, p.proto))
            .or_insert_with(|| json!([]));
        if let Some(a) = slot.as_array_mut() {
            a.push(json!({"HostIp": p.host_ip, "HostPort": host_port}));
        }
    }
    if c.is_running() {
        for p in bound {
            let key = format!("{}/{}", p.container_port, p.proto);
            let entry = ports.entry(key).or_insert(Value::Null);
            if entry.is_null() {
                *entry = json!([]);
            }
            if let Some(a) = entry.as_array_mut() {
                a.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
            }
        }
    }
    let exposed: serde_json::Map<String, Value> = cfg
        .exposed_ports
        .iter()
        .chain(
            cfg.ports
                .iter()
                .map(|p| format!("{}/{}", p.container_port, p.proto))
                .collect::<Vec<_>>()
                .iter(),
        )
        .map(|k| (k.clone(), json!({})))
        .collect();
    let mounts: Vec<Value> = cfg
        .mounts
        .iter()
        .map(|m| {
            json!({
                "Type": m.kind,
                "Name": if m.name.is_empty() { Value::Null } else { json!(m.name) },
                "Source": m.source,
                "Destination": m.destination,
                "Mode": if m.rw { "" } else { "ro" },
                "RW": m.rw,
                "Propagation": if m.kind == "bind" { "rprivate" } else { "" },
            })
        })
        .collect();
    let binds: Vec<String> = cfg
        .mounts
        .iter()
        .filter(|m| m.kind == "bind")
        .map(|m| {
            format!(
                "{}:{}{}",
                m.source.display(),
                m.destination,
                if m.rw { "" } else { ":ro" }
            )
        })
        .collect();
    let (path, args) = match cfg.argv.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let zero = "0001-01-01T00:00:00Z";
    json!({
        "Id": cfg.id,
        "Created": cfg.created,
        "Path": path,
        "Args": args,
        "State": {
            "Status": state_name(c),
            "Running": st.status == Status::Running,
            "Paused": c.paused,
            "Restarting": st.status == Status::Restarting,
            "OOMKilled": st.oom_killed,
            "Health": match (&c.health, st.status) {
                (Some(h), Status::Running) => json!(h),
                _ => Value::Null,
            },
            "Dead": st.status == Status::Dead,
            "Pid": if st.status == Status::Running { st.pid } else { 0 },
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": if st.started_at.is_empty() { zero } else { st.started_at.as_str() },
            "FinishedAt": if st.finished_at.is_empty() { zero } else { st.finished_at.as_str() },
        },
        "Image": cfg.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": c.dir.join("log.json"),
        "Name": format!("/{}", cfg.name),
        "RestartCount": st.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Binds": if binds.is_empty() { Value::Null } else { json!(binds) },
            "NetworkMode": cfg.network.name(),
            "PortBindings": bindings,
            "RestartPolicy": {"Name": cfg.restart.name, "MaximumRetryCount": cfg.restart.max_retries},
            "AutoRemove": cfg.auto_remove,
            "Memory": cfg.resources.memory,
            "MemorySwap": cfg.resources.memory_swap,
            "NanoCpus": cfg.resources.nano_cpus,
            "CpuShares": cfg.resources.cpu_shares,
            "CpuPeriod": 0,
            "CpuQuota": 0,
            "CpusetCpus": cfg.resources.cpuset_cpus,
            "PidsLimit": if cfg.resources.pids_limit > 0 { json!(cfg.resources.pids_limit) } else { Value::Null },
            "ReadonlyRootfs": cfg.read_only,
            "Tmpfs": if cfg.tmpfs.is_empty() { Value::Null } else { json!(cfg.tmpfs.iter().map(|(p, o)| (p.clone(), json!(o))).collect::<serde_json::Map<_, _>>()) },
            "ExtraHosts": if cfg.extra_hosts.is_empty() { Value::Null } else { json!(cfg.extra_hosts.iter().map(|(n, a)| format!("{n}:{a}")).collect::<Vec<_>>()) },
        },
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"UpperDir": c.dir.join("upper"), "WorkDir": c.dir.join("work")},
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": cfg.hostname,
            "Domainname": "",
            "User": cfg.user,
            "AttachStdin": cfg.open_stdin && cfg.stdin_once,
            "AttachStdout": cfg.stdin_once,
            "AttachStderr": cfg.stdin_once,
            "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
            "Tty": cfg.tty,
            "OpenStdin": cfg.open_stdin,
            "StdinOnce": cfg.stdin_once,
            "Env": cfg.env,
            "Healthcheck": cfg.healthcheck,
            "Cmd": cfg.cmd,
            "Image": cfg.image,
            "Volumes": Value::Null,
            "WorkingDir": cfg.working_dir,
            "Entrypoint": cfg.entrypoint,
            "Labels": cfg.labels,
            "StopSignal": cfg.stop_signal,
            "StopTimeout": cfg.stop_timeout,
        },
        "Init": cfg.init,
        "NetworkSettings": {
            "Ports": ports,
            "SandboxKey": if c.is_running() && cfg.network != Network::Host { format!("/proc/{}/ns/net", st.pid) } else { String::new() },
        },
    })
}

fn inspect_cmd(containers: &Containers, a: &InspectArgs) -> i32 {
    let mut docs = Vec::new();
    let mut code = 0;
    for name in &a.containers {
        match containers.find(name) {
            Ok(c) => docs.push(inspect_doc(&c)),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    let text = match &a.format {
        Some(f) => docs
            .iter()
            .map(|d| render(f, std::slice::from_ref(d), &|s: &str| s.to_uppercase()))
            .collect::<Result<String, String>>(),
        None => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&docs, &mut ser)
                .map(|()| format!("{}\n", String::from_utf8_lossy(&buf)))
                .map_err(|e| e.to_string())
        }
    };
    match text {
        Ok(t) => out(&t),
        Err(e) => return fail(e),
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
        match start_detached(root, &c) {
            Ok(()) => out(&format!("{}\n", c.config.name)),
            Err(e) => {
                eprintln!("Error: starting {}: {}", c.config.name, e.message);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_ctrl_p_ctrl_q() {
        let mut d = DetachKeys::default();
        assert_eq!(d.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(d.feed(&[0x10, b'a']), (vec![0x10, b'a'], false));
        assert_eq!(d.feed(&[b'x', 0x10]), (vec![b'x'], false));
        assert_eq!(d.feed(&[0x11]), (vec![], true));
        let mut d = DetachKeys::default();
        assert_eq!(d.feed(&[0x10, 0x11, b'z']), (vec![], true));
    }

    #[test]
    fn commands_truncate_like_docker() {
        assert_eq!(truncate("sleep 30", 20), "sleep 30");
        assert_eq!(
            truncate("sh -c 'while true; do sleep 1; done'", 20),
            "sh -c 'while true; …"
        );
    }
}
