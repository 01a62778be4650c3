//! `kiln run` and `kiln create`: Docker's flags turned into [`CreateOptions`], and the
//! container started attached or in the background.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{ArgAction, Args, ValueEnum};

use kiln::container::cgroups::{self, Resources};
use kiln::container::launch::{self, StartError};
use kiln::container::ops::{self, CreateOptions};
use kiln::container::{Container, ContainerError, Containers, Network, PortBinding, RestartPolicy};

use kiln::image::reference::is_identifier;
use kiln::image::Reference;
use kiln::store::{Store, StoreError};

use super::attach::attach_loop;
use super::EXIT_TOOL;
use crate::cli::registry::pull_for_run;
use crate::cli::values::Pull;
use crate::cli::{open_store, out};
use kiln::common::platform::Platform;
use kiln::imageops::platform;

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
    #[arg(long, value_enum, default_value_t = NetworkArg::Private)]
    pub network: NetworkArg,
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
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, value_enum, default_value_t = Pull::Missing)]
    pub pull: Pull,
    /// Run the image of this platform (`os/arch[/variant]`); a foreign one runs under QEMU's
    /// user-mode emulation (see `kiln info`)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Proxy received signals to the process
    #[arg(
        long = "sig-proxy",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true"
    )]
    pub sig_proxy: bool,
    /// The image
    pub image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `--network`: the networks kiln gives containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// Its own network namespace with loopback; published ports forwarded (Docker's
    /// `bridge` and `default` name it too)
    #[value(alias = "bridge", alias = "default")]
    Private,
    /// Like private, plus outbound access through pasta
    Pasta,
    /// The host's network namespace
    Host,
    /// Its own network namespace with loopback only
    None,
}

impl From<NetworkArg> for Network {
    fn from(n: NetworkArg) -> Network {
        match n {
            NetworkArg::Private => Network::Private,
            NetworkArg::Pasta => Network::Pasta,
            NetworkArg::Host => Network::Host,
            NetworkArg::None => Network::None,
        }
    }
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
    let network = Network::from(a.network);
    if network == Network::Host && !ports.is_empty() {
        eprintln!("WARNING: Published ports are discarded when using host network mode");
    }
    let _ = root;
    Ok(CreateOptions {
        image: a.image.clone(),
        platform: None,
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

pub(super) fn run_cmd(root: &Path, a: &RunArgs, start: bool) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(_) => return EXIT_TOOL,
    };
    let attach_mode = start && !a.detach;
    let mut opts = match create_options(root, a, attach_mode) {
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
    let platform = match a.platform.as_deref().map(Platform::parse).transpose() {
        Ok(p) => p.map(|p| p.normalized()),
        Err(e) => {
            eprintln!("kiln: {e}");
            return EXIT_TOOL;
        }
    };
    let ready = ensure_image(&store, &a.image, a.pull, platform.as_ref())
        .and_then(|()| check_emulation(&store, &a.image, platform.as_ref()));
    // A name holding an index of several platforms runs the entry for --platform (else
    // the host's).
    opts.platform = platform.clone();
    if let Err(e) = ready {
        // Docker's daemon errors: `run` exits 125, `create` 1.
        return if start {
            eprintln!("kiln: Error response from daemon: {e}");
            EXIT_TOOL
        } else {
            eprintln!("Error response from daemon: {e}");
            1
        };
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
        // Docker prints the ID even when the start then fails.
        out(&format!("{}\n", c.config.id));
        return match launch::start_detached(root, &c) {
            Ok(()) => 0,
            Err(e) => start_failed(root, &c, &e),
        };
    }
    match launch::start_attached(
        root,
        &c,
        a.interactive,
        super::attach::terminal_size(c.config.tty),
    ) {
        Ok(sock) => {
            let proxy = a.sig_proxy.then_some(c.dir.as_path());
            let code = attach_loop(sock, a.interactive, c.config.tty, proxy);
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
        Err(e) => start_failed(root, &c, &e),
    }
}

/// Makes sure the image is in the store as `--pull` says, pulling it (progress on standard
/// error) as `docker run` does: `missing` pulls a reference the store lacks, after Docker's
/// "Unable to find image" line; `always` pulls whatever the store has; `never` refuses a
/// missing image. References that name no repository (image IDs) are never pulled.
/// With `--platform`, the stored image must be of that platform, or the name hold an index
/// with an entry for it (`--pull always` fetches the platform's image from the registry).
fn ensure_image(
    store: &Store,
    image: &str,
    policy: Pull,
    platform: Option<&Platform>,
) -> Result<(), String> {
    let found = store.resolve_platform(image, platform);
    let missing = matches!(found, Err(StoreError::ImageNotFound { .. }));
    if let Err(e @ StoreError::NoMatchingPlatform { .. }) = &found {
        if policy != Pull::Always {
            return Err(e.to_string());
        }
    }
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    if is_identifier(hex) || !(missing || policy == Pull::Always) {
        return match (found, platform) {
            (Ok(rec), Some(p)) if !platform::suits(&rec, p) => Err(format!(
                "image with reference {image} was found but does not match the specified \
                 platform: wanted {p}, actual: {}",
                rec.platform().map_or_else(String::new, |f| f.to_string())
            )),
            _ => Ok(()),
        };
    }
    let Ok(named) = Reference::parse_normalized_named(image) else {
        return Ok(());
    };
    let shown = named.clone().with_default_tag().familiar_string();
    match policy {
        Pull::Never => return Err(format!("No such image: {shown}")),
        Pull::Missing => eprintln!("Unable to find image '{shown}' locally"),
        Pull::Always => {}
    }
    pull_for_run(store, &named, platform)
}

/// An image of a foreign platform runs under an emulator registered in binfmt_misc: refused
/// before the container is made when there is none. Without `--platform`, Docker's warning
/// that the image is not the host's.
fn check_emulation(store: &Store, image: &str, asked: Option<&Platform>) -> Result<(), String> {
    use kiln::executor::binfmt;
    let Some(p) = store
        .resolve_platform(image, asked)
        .ok()
        .and_then(|rec| rec.platform())
    else {
        return Ok(());
    };
    binfmt::support(&p, &binfmt::dir()).map_err(|e| e.to_string())?;
    let host = Platform::host();
    let native = p.os == host.os && p.architecture == host.architecture;
    if asked.is_none() && !native {
        eprintln!(
            "WARNING: The requested image's platform ({p}) does not match the detected host \
             platform ({host}) and no specific platform was requested"
        );
    }
    Ok(())
}

/// A start that failed: Docker's message and exit code (127/126 for the command, 125 for
/// the rest), and a `--rm` container removed.
fn start_failed(root: &Path, c: &Container, e: &StartError) -> i32 {
    eprintln!("kiln: Error response from daemon: {e}");
    cleanup_failed(root, c);
    e.exit_code()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::container::ContainerCommand;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kiln", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(a) => Ok(*a),
            Command::Container(ContainerCommand::Run(a)) => Ok(*a),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn pull_and_sig_proxy_parse_as_dockers() {
        let a = run_args(&["img"]).unwrap();
        assert_eq!((a.pull, a.sig_proxy), (Pull::Missing, true));
        let a = run_args(&["--pull=never", "--sig-proxy=false", "img", "sh"]).unwrap();
        assert_eq!((a.pull, a.sig_proxy), (Pull::Never, false));
        assert_eq!(a.image, "img");
        let a = run_args(&["--pull", "always", "--sig-proxy", "img"]).unwrap();
        assert_eq!((a.pull, a.sig_proxy), (Pull::Always, true));
        // A Go bool flag takes its value only after `=`: here `false` is the image.
        let a = run_args(&["--sig-proxy", "false"]).unwrap();
        assert_eq!((a.sig_proxy, a.image.as_str()), (true, "false"));
        // Bad values and unknown flags are Docker's 125.
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for bad in [
            &["--pull", "sometimes", "img"][..],
            &["--sig-proxy=maybe", "img"],
            &["--nope", "img"],
        ] {
            let e = run_args(bad).unwrap_err();
            assert_eq!(
                crate::cli::usage::explain(&e, &argv(bad)).1,
                EXIT_TOOL,
                "{bad:?}"
            );
        }
    }
}
