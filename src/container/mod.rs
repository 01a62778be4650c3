//! Containers: `kiln run` and friends, with no daemon.
//!
//! A container is a directory `<root>/containers/<id>/`:
//!
//! ```text
//! config.json     what `run`/`create` decided (image, command, env, ports, mounts, policy)
//! state.json      what the monitor last recorded (status, pid, exit code, restart count)
//! log.json        the container's output, one JSON object per line (Docker's json-file)
//! upper/ work/    the overlay upper and work dirs: the container's filesystem changes
//! run/            scratch for the running container (generated /etc files, mount points)
//! monitor.lock    flock-ed by the monitor for its whole life: the liveness test
//! attach.sock     the monitor's socket for attach clients
//! stop-requested  present after `stop`/`kill`, so the restart policy leaves it stopped
//! ```
//!
//! Its cgroup, `kiln/<id>` in each cgroup hierarchy ([`cgroups`]), holds its limits and
//! processes from its first start until it is removed.
//!
//! The monitor ([`monitor`]) is a `kiln` process of its own, started detached (`setsid`) by
//! [`launch`], which waits for it to report the container started or why not: it owns the
//! container's PID 1, its stdio and logs (each run of the process: `session`), records
//! state atomically, forwards published ports ([`ports`]) and applies the restart policy.
//! The CLI only reads
//! what the monitor recorded and signals the container's PID 1 directly (through a pidfd
//! checked against the recorded process start time, so a recycled PID is never hit). A
//! monitor that died is detected through its lock: `ps` never shows a stale "running".

pub mod attach;
pub mod cgroups;
pub mod commit;
pub mod cp;
pub mod health;
pub mod launch;
pub mod logs;
pub mod monitor;
pub mod names;
pub mod ops;
pub mod ports;
mod session;
pub mod signals;
pub mod userns;
pub mod volumes;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::LayerRef;
use crate::common::time::Timestamp;
use crate::executor::StepSpec;
use crate::image::Digest;

/// Version of `config.json` and `state.json`.
pub const FORMAT_VERSION: u32 = 1;

/// Errors of container operations; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container by that name or ID.
    #[error("No such container: {0}")]
    NotFound(String),
    /// An ID prefix matching several containers.
    #[error("multiple containers match {0:?}; use more of the ID")]
    Ambiguous(String),
    /// The name is taken.
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse {
        /// The name.
        name: String,
        /// The container holding it.
        id: String,
    },
    /// Bad user input (flags, references).
    #[error("{0}")]
    Invalid(String),
    /// A `--health-*` duration that is not a Go duration.
    #[error("invalid argument {value:?} for {flag}: {source}")]
    HealthDuration {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
        /// Why it is not a duration.
        #[source]
        source: crate::common::duration::DurationError,
    },
    /// The container is in the wrong state for the operation.
    #[error("{0}")]
    State(String),
    /// Filesystem trouble.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A format this kiln cannot read.
    #[error("{}: {0}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An image operation (a `--change`, say) failed.
    #[error(transparent)]
    Image(#[from] crate::imageops::ImageOpsError),
    /// An image config or manifest could not be read or encoded.
    #[error(transparent)]
    Config(#[from] crate::image::ConfigError),
    /// A digest recorded in the container's config or its image is malformed.
    #[error("{what}: {source}")]
    Digest {
        /// Which digest.
        what: &'static str,
        /// What is wrong with it.
        #[source]
        source: crate::image::DigestError,
    },
    /// A JSON document could not be read or written.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The image's layers could not be prepared, or the container's changes committed.
    #[error("{what}: {source}")]
    Layers {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file of the container's could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The image's config cannot be read.
    #[error("image {image}: bad config: {source}")]
    BadImage {
        /// The image as named.
        image: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A signal could not be sent to the container.
    #[error("signalling container: {0}")]
    Signal(#[source] io::Error),
    /// The container did not stop, or its monitor did not exit, in time.
    #[error("container {0}")]
    Timeout(String),
    /// A cgroup file could not be read or written.
    #[error("cgroup: {what} {}: {source}", path.display())]
    Cgroup {
        /// What was being done.
        what: String,
        /// The cgroup file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A published port could not be bound on the host.
    #[error(
        "driver failed programming external connectivity: Bind for {address} failed: {source}"
    )]
    Bind {
        /// `IP:PORT/PROTO`.
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The container's image has left the store.
    #[error("{0}: the container's image is no longer in the store")]
    ImageGone(String),
    /// The image's config is not what an image config must be.
    #[error("the image config {0}")]
    BadImageConfig(&'static str),
    /// A step of the executor's failed (reading a container's changes, say).
    #[error(transparent)]
    Exec(#[from] crate::executor::ExecError),
    /// The container's stdio could not be set up or relayed.
    #[error("container stdio: {0}")]
    Stdio(#[source] io::Error),
    /// `kiln cp` or `kiln export` failed.
    #[error(transparent)]
    Copy(cp::CpError),
    /// Anything else, already worded.
    #[error("{0}")]
    Other(String),
}

/// Result of container operations.
pub type Result<T> = std::result::Result<T, ContainerError>;

pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ContainerError {
    let path = path.into();
    move |source| ContainerError::Io { what, path, source }
}

/// A published port: `-p [ip:]host:container[/proto]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Host address to listen on. Empty when `-p` named none: every IPv4 address, and every
    /// IPv6 one too when the host has IPv6, as Docker binds `0.0.0.0` and `[::]` (the ports
    /// bound record each address). `0.0.0.0` given explicitly is IPv4 only, as in Docker.
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
}

impl PortBinding {
    /// Parses one binding of Docker's `-p` syntax: `[ip:][host:]container[/proto]`.
    pub fn parse(s: &str) -> Result<PortBinding> {
        let mut all = PortBinding::parse_all(s)?;
        if all.len() != 1 {
            return Err(ContainerError::Invalid(format!(
                "invalid port specification {s:?}: a single port was expected"
            )));
        }
        Ok(all.remove(0))
    }

    /// Parses Docker's `-p` syntax, ranges included: `[ip:][host[-host]:]ctr[-ctr][/tcp|udp]`
    /// gives one binding per port (`-p 8000-8002:9000-9002`, or `-p 9000-9002` with ports the
    /// kernel picks).
    pub fn parse_all(s: &str) -> Result<Vec<PortBinding>> {
        let bad =
            |why: &str| ContainerError::Invalid(format!("invalid port specification {s:?}: {why}"));
        let (spec, proto) = match s.rsplit_once('/') {
            Some((a, p)) => (a, p.to_ascii_lowercase()),
            None => (s, "tcp".to_string()),
        };
        if proto != "tcp" && proto != "udp" {
            return Err(bad("the protocol must be tcp or udp"));
        }
        // An IPv6 address comes in brackets: [::1]:8080:80.
        let (ip, rest) = if let Some(r) = spec.strip_prefix('[') {
            let (ip, rest) = r.split_once("]:").ok_or_else(|| bad("unclosed ["))?;
            (Some(ip.to_string()), rest.to_string())
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                1 | 2 => (None, spec.to_string()),
                3 => (
                    Some(parts[0].to_string()),
                    format!("{}:{}", parts[1], parts[2]),
                ),
                _ => return Err(bad("too many colons")),
            }
        };
        let port = |p: &str| -> Result<u16> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad("a port must be a number from 1 to 65535")),
            }
        };
        let range = |r: &str| -> Result<(u16, u16)> {
            match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(bad("a range must go upwards"));
                    }
                    Ok((a, b))
                }
                None => port(r).map(|p| (p, p)),
            }
        };
        let (host, ctr) = match rest.split_once(':') {
            Some((h, c)) => (h.to_string(), c.to_string()),
            None => (String::new(), rest.clone()),
        };
        let (c0, c1) = range(&ctr)?;
        let hosts: Vec<u16> = if host.is_empty() {
            vec![0; usize::from(c1 - c0) + 1]
        } else {
            let (h0, h1) = range(&host)?;
            if h1 - h0 != c1 - c0 {
                return Err(bad("the host and container ranges differ in size"));
            }
            (h0..=h1).collect()
        };
        let host_ip = match ip.as_deref() {
            None | Some("") => String::new(),
            Some(ip) => {
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| bad("not an IP address"))?;
                ip.to_string()
            }
        };
        Ok((c0..=c1)
            .zip(hosts)
            .map(|(container_port, host_port)| PortBinding {
                host_ip: host_ip.clone(),
                host_port,
                container_port,
                proto: proto.clone(),
            })
            .collect())
    }

    /// `0.0.0.0:8080->80/tcp` or `[::]:8080->80/tcp`, as `docker ps` shows one binding.
    pub fn display(&self) -> String {
        format!(
            "{}->{}/{}",
            self.host_address(),
            self.container_port,
            self.proto
        )
    }

    /// The host side as an address: `0.0.0.0:8080`, `[::1]:8080` (brackets around IPv6, as
    /// Go's `net.JoinHostPort`); an unnamed address shows as `0.0.0.0`.
    pub fn host_address(&self) -> String {
        match self.host_ip.as_str() {
            "" => format!("0.0.0.0:{}", self.host_port),
            ip if ip.contains(':') => format!("[{ip}]:{}", self.host_port),
            ip => format!("{ip}:{}", self.host_port),
        }
    }
}

/// A bind mount or named volume: `-v`/`--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    /// `bind` or `volume`.
    pub kind: String,
    /// The volume's name (volumes only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Host path mounted.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    /// Writable.
    pub rw: bool,
}

/// `--restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RestartPolicy {
    /// `no`, `always`, `unless-stopped` or `on-failure`.
    pub name: String,
    /// For `on-failure:N`: at most N restarts (0: unlimited).
    pub max_retries: u32,
}

impl RestartPolicy {
    /// Parses `no|always|unless-stopped|on-failure[:N]`.
    pub fn parse(s: &str) -> Result<RestartPolicy> {
        let (name, max) = match s.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (s, None),
        };
        let max_retries = match (name, max) {
            ("on-failure", Some(m)) => m.parse::<u32>().map_err(|_| {
                ContainerError::Invalid(format!("invalid restart policy {s:?}: maximum retry count must be a number"))
            })?,
            (_, Some(_)) => {
                return Err(ContainerError::Invalid(format!(
                    "invalid restart policy {s:?}: maximum retry count can only be used with 'on-failure'"
                )))
            }
            _ => 0,
        };
        match name {
            "" | "no" | "always" | "unless-stopped" | "on-failure" => Ok(RestartPolicy {
                name: if name.is_empty() {
                    "no".into()
                } else {
                    name.into()
                },
                max_retries,
            }),
            _ => Err(ContainerError::Invalid(format!(
                "invalid restart policy {s:?}"
            ))),
        }
    }

    /// Whether a container that exited with `code` restarts, given `restarts` so far and
    /// whether a user stopped it. Docker's rules.
    pub fn should_restart(&self, code: i32, restarts: u32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => code != 0 && (self.max_retries == 0 || restarts < self.max_retries),
            _ => false,
        }
    }
}

/// The network a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Its own network namespace with loopback only; published ports forwarded.
    #[default]
    Private,
    /// Like `Private`, plus outbound access through `pasta` (Debian package `passt`), as
    /// podman's `--network pasta`.
    Pasta,
    /// The host's network namespace.
    Host,
    /// Its own network namespace with loopback only.
    None,
}

impl Network {
    /// Parses `--network`.
    pub fn parse(s: &str) -> Result<Network> {
        match s {
            "private" | "bridge" | "default" => Ok(Network::Private),
            "host" => Ok(Network::Host),
            "pasta" => Ok(Network::Pasta),
            "none" => Ok(Network::None),
            other => Err(ContainerError::Invalid(format!(
                "network {other} not found (kiln knows private, pasta, host and none)"
            ))),
        }
    }

    /// The name `inspect` shows.
    pub fn name(self) -> &'static str {
        match self {
            Network::Private => "private",
            Network::Pasta => "pasta",
            Network::Host => "host",
            Network::None => "none",
        }
    }
}

/// What `create`/`run` decided; written once, never changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// 64 hex digits.
    pub id: String,
    /// Unique name (without Docker's leading `/`).
    pub name: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID (config digest).
    pub image_id: String,
    /// The image's layers (diffIDs), bottom first.
    pub diff_ids: Vec<String>,
    /// The command: entrypoint + cmd, resolved.
    pub argv: Vec<String>,
    /// `Config.Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Config.Cmd`.
    pub cmd: Option<Vec<String>>,
    /// Environment.
    pub env: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// `USER`.
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub open_stdin: bool,
    /// Close stdin when the first attached client detaches (`run -i`).
    pub stdin_once: bool,
    /// Network mode.
    pub network: Network,
    /// Published ports.
    pub ports: Vec<PortBinding>,
    /// `-P`: every exposed port was published on a port the kernel picked.
    #[serde(default)]
    pub publish_all: bool,
    /// Mounts.
    pub mounts: Vec<MountPoint>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Signal `stop` sends (name like `SIGTERM` or a number).
    pub stop_signal: String,
    /// Seconds `stop` waits before SIGKILL, if set at create time.
    pub stop_timeout: Option<u32>,
    /// `--rm`.
    pub auto_remove: bool,
    /// Labels (image's, then `--label`).
    pub labels: BTreeMap<String, String>,
    /// Ports the image exposes (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// `--init`: a minimal init is PID 1 and runs the command.
    #[serde(default)]
    pub init: bool,
    /// `--memory`, `--cpus` and the other resource limits.
    #[serde(default)]
    pub resources: cgroups::Resources,
    /// The health check the monitor runs (the image's, as the `--health-*` flags changed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::image::spec::HealthConfig>,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `--tmpfs`: `(path, mount options)`.
    #[serde(default)]
    pub tmpfs: Vec<(String, String)>,
    /// `--add-host`: `(name, address)`.
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
}

impl ContainerConfig {
    /// A spec that runs `argv` as the container's command would: its environment, working
    /// directory (empty: the executor's `/`), user and hostname.
    pub fn step_spec(&self, scratch: impl Into<PathBuf>, argv: Vec<String>) -> StepSpec {
        let mut spec = StepSpec::new(Vec::new(), scratch, argv);
        spec.env = self.env.clone();
        spec.workdir = self.working_dir.clone();
        spec.user = self.user.clone();
        spec.hostname = Some(self.hostname.clone());
        // As docker run: any node can be made; the device cgroup and nodev refuse opening it.
        spec.mknod_any = true;
        spec
    }
}

/// The lifecycle states Docker shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// Running.
    Running,
    /// Waiting to be restarted by its policy.
    Restarting,
    /// Ended.
    Exited,
    /// Its monitor died while it ran.
    Dead,
}

impl Status {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// What the monitor records (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Lifecycle state.
    pub status: Status,
    /// PID of the container's PID 1 in the host's namespace (0 when not running).
    pub pid: i32,
    /// That process's start time (`/proc/<pid>/stat` field 22).
    pub pid_start: u64,
    /// PID of the monitor.
    pub monitor_pid: i32,
    /// Last exit code (128 + signal for a killed process).
    pub exit_code: i32,
    /// Why it could not start, if it could not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Last start, RFC 3339 (empty: never).
    #[serde(default)]
    pub started_at: String,
    /// Last exit, RFC 3339 (empty: never).
    #[serde(default)]
    pub finished_at: String,
    /// Restarts done by the policy since the last explicit start.
    pub restart_count: u32,
    /// Stopped by `stop`/`kill`: the policy does not restart it, `system restore` leaves
    /// an `unless-stopped` one alone.
    pub manually_stopped: bool,
    /// The published ports as bound (a port the kernel chose filled in).
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// The last run ended with the kernel's OOM killer killing a process of it.
    #[serde(default)]
    pub oom_killed: bool,
}

/// The current time as RFC 3339 with nanoseconds.
pub fn now() -> String {
    Timestamp::now().to_rfc3339()
}

/// One container on disk.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its directory.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: ContainerConfig,
    /// Its state as recorded, corrected for a dead monitor.
    pub state: State,
    /// Running, with its cgroup frozen (`kiln pause`).
    pub paused: bool,
    /// What its health check found, when it has one.
    pub health: Option<health::Health>,
}

impl Container {
    /// Loads a container from its directory.
    pub fn load(dir: &Path) -> Result<Container> {
        let config: ContainerConfig = read_json(&dir.join("config.json"))?;
        if config.version > FORMAT_VERSION {
            return Err(ContainerError::Other(format!(
                "{}: written by a newer kiln (format {}); this kiln reads format {FORMAT_VERSION}",
                dir.display(),
                config.version
            )));
        }
        let mut state: State = match read_json(&dir.join("state.json")) {
            Ok(s) => s,
            Err(ContainerError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                State::default()
            }
            Err(e) => return Err(e),
        };
        if matches!(state.status, Status::Running | Status::Restarting) && !monitor_alive(dir) {
            state.status = Status::Dead;
            state.pid = 0;
            if state.error.is_empty() {
                state.error = match fs::read_to_string(dir.join("monitor.err")) {
                    Ok(e) if !e.trim().is_empty() => e.trim().to_string(),
                    _ => "the container's monitor process died".into(),
                };
            }
        }
        let paused = state.status == Status::Running
            && cgroups::Cgroup::host(&config.id).is_some_and(|cg| cg.is_frozen());
        let health = config.healthcheck.as_ref().and_then(|_| health::read(dir));
        Ok(Container {
            dir: dir.to_path_buf(),
            config,
            state,
            paused,
            health,
        })
    }

    /// Reloads the state.
    pub fn refresh(&mut self) -> Result<()> {
        *self = Container::load(&self.dir)?;
        Ok(())
    }

    /// The first 12 characters of the ID.
    pub fn short_id(&self) -> &str {
        &self.config.id[..12.min(self.config.id.len())]
    }

    /// Whether PID 1 is running (or the policy is about to restart it).
    pub fn is_running(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Restarting)
    }

    /// A pidfd for the container's PID 1, if it runs; checked against the recorded start
    /// time so a recycled PID is never signalled.
    pub fn pidfd(&self) -> Option<OwnedFd> {
        if self.state.status != Status::Running || self.state.pid <= 0 {
            return None;
        }
        pidfd_checked(self.state.pid, self.state.pid_start)
    }

    /// The image's layers as diffIDs.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.config
            .diff_ids
            .iter()
            .map(|d| {
                Digest::parse(d).map_err(|source| ContainerError::Digest {
                    what: "bad layer digest in config",
                    source,
                })
            })
            .collect()
    }

    /// The image's layers, bottom first, as [`crate::rootfs::layers::lower_dirs`] takes them (the
    /// sizes are not needed there: 0).
    pub fn layers(&self) -> Result<Vec<LayerRef>> {
        Ok(self
            .diff_ids()?
            .into_iter()
            .map(|diff_id| LayerRef { diff_id, size: 0 })
            .collect())
    }
}

/// Opens a pidfd for `pid` and checks it is still the process that started at `start`.
pub fn pidfd_checked(pid: i32, start: u64) -> Option<OwnedFd> {
    // SAFETY: integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // With the pidfd open the PID cannot be reused, so this check is race-free.
    (process_start(pid)? == start).then_some(fd)
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Sends `sig` through a pidfd.
pub fn pidfd_signal(fd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal on a valid pidfd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd() as libc::c_long,
            sig as libc::c_long,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until the process behind a pidfd exits, at most `timeout`; true if it did.
pub fn pidfd_wait(fd: &OwnedFd, timeout: std::time::Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r > 0 {
            return true;
        }
        if r == 0 || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return false;
        }
    }
}

/// Whether the monitor of the container in `dir` is alive: it holds `monitor.lock`.
pub fn monitor_alive(dir: &Path) -> bool {
    let Ok(f) = fs::File::open(dir.join("monitor.lock")) else {
        return false;
    };
    // SAFETY: flock on a valid fd.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(io_err("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|source| ContainerError::Format {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` as JSON to `path` atomically (temp file in the same dir, fsync, rename).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| ContainerError::Json {
        what: "encoding a container record",
        source,
    })?;
    crate::common::atomic::write_atomic(dir, path, &bytes, 0o600).map_err(|e| {
        ContainerError::Write {
            path: path.to_path_buf(),
            source: e.into(),
        }
    })
}

/// Writes a container's state.
pub fn write_state(dir: &Path, state: &State) -> Result<()> {
    write_json(&dir.join("state.json"), state)
}

/// The containers of a store root.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

impl Containers {
    /// The containers under `<root>/containers`.
    pub fn new(root: &Path) -> Containers {
        Containers {
            dir: root.join("containers"),
        }
    }

    /// `<root>/containers`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Holds the lock that serializes creating, renaming and removing containers.
    pub fn lock(&self) -> Result<fs::File> {
        fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let path = self.dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        // SAFETY: flock on a valid fd; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("locking", &path)(io::Error::last_os_error()));
        }
        Ok(f)
    }

    /// Every container, newest first. Unreadable leftovers (a half-created dir) are skipped.
    pub fn list(&self) -> Result<Vec<Container>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if let Ok(c) = Container::load(&entry.path()) {
                out.push(c);
            }
        }
        out.sort_by(|a, b| b.config.created.cmp(&a.config.created));
        Ok(out)
    }

    /// Finds a container by full ID, name (with or without `/`) or unique ID prefix.
    pub fn find(&self, key: &str) -> Result<Container> {
        let all = self.list()?;
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = all
            .iter()
            .find(|c| c.config.id == key || c.config.name == name)
        {
            return Ok(c.clone());
        }
        let hits: Vec<&Container> = if key.is_empty() {
            Vec::new()
        } else {
            all.iter()
                .filter(|c| c.config.id.starts_with(key))
                .collect()
        };
        match hits.len() {
            0 => Err(ContainerError::NotFound(key.to_string())),
            1 => Ok(hits[0].clone()),
            _ => Err(ContainerError::Ambiguous(key.to_string())),
        }
    }

    /// `kiln rename`: gives container `key` the unused name `new` (its config rewritten
    /// atomically, under the same lock `create` takes, so two containers never share one).
    pub fn rename(&self, key: &str, new: &str) -> Result<()> {
        let new = new.trim_start_matches('/');
        names::validate(new)?;
        let _lock = self.lock()?;
        let c = self.find(key)?;
        if c.config.name == new {
            return Err(ContainerError::Invalid(format!(
                "Renaming a container with the same name as its current name: {new}"
            )));
        }
        if let Some(other) = self.list()?.into_iter().find(|o| o.config.name == new) {
            return Err(ContainerError::NameInUse {
                name: new.to_string(),
                id: other.config.id,
            });
        }
        let mut config = c.config.clone();
        config.name = new.to_string();
        write_json(&c.dir.join("config.json"), &config)
    }

    /// Records a new container (config and `created` state); fills in a generated name
    /// when `config.name` is empty. The name must be unique.
    pub fn create(&self, mut config: ContainerConfig) -> Result<Container> {
        let _lock = self.lock()?;
        let existing = self.list()?;
        if config.name.is_empty() {
            loop {
                let n = names::generate();
                if !existing.iter().any(|c| c.config.name == n) {
                    config.name = n;
                    break;
                }
            }
        } else {
            names::validate(&config.name)?;
            if let Some(c) = existing.iter().find(|c| c.config.name == config.name) {
                return Err(ContainerError::NameInUse {
                    name: config.name.clone(),
                    id: c.config.id.clone(),
                });
            }
        }
        // Built in a temp dir and renamed into place, so a crash never leaves a half-made
        // container that `ps` would trip over.
        let tmp = self.dir.join(format!(".new-{}", config.id));
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let made = (|| -> Result<()> {
            for d in ["upper", "work", "run"] {
                let p = tmp.join(d);
                fs::create_dir(&p).map_err(io_err("creating", &p))?;
            }
            write_json(&tmp.join("config.json"), &config)?;
            write_state(
                &tmp,
                &State {
                    version: FORMAT_VERSION,
                    ..State::default()
                },
            )?;
            let dest = self.dir.join(&config.id);
            fs::rename(&tmp, &dest).map_err(io_err("creating", &dest))
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Container::load(&self.dir.join(&config.id))
    }

    /// Deletes a container's directory (the caller made sure nothing runs).
    pub fn remove_dir(&self, c: &Container) -> Result<()> {
        let _lock = self.lock()?;
        // Its cgroup first: a failure leaves the container there for another `rm`.
        if let Some(cg) = cgroups::Cgroup::host(&c.config.id) {
            cg.remove()?;
        }
        // Renamed away first so a crash mid-delete never leaves a half container.
        let trash = self.dir.join(format!(".rm-{}", c.config.id));
        fs::rename(&c.dir, &trash).map_err(io_err("removing", &c.dir))?;
        remove_tree(&trash)
    }

    /// Removes leftovers of interrupted creates and removes.
    pub fn clean_leftovers(&self) {
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n.starts_with(".new-") || n.starts_with(".rm-") {
                    let _ = remove_tree(&e.path());
                }
            }
        }
    }
}

/// Removes a directory tree, first detaching anything still mounted in it (a container's
/// `run/` may hold a leftover mount point if a monitor was killed) and never following a
/// symlink out of it.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    // A monitor killed while it had the network namespace bound (for pasta) leaves that
    // bind mount behind.
    let _ = nix::mount::umount2(&path.join("netns"), nix::mount::MntFlags::MNT_DETACH);
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// A new 64-hex-digit container ID.
pub fn new_id() -> Result<String> {
    crate::common::ids::new_id().map_err(io_err("reading random bytes for", "an id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_docker() {
        let p = PortBinding::parse("8080:80").expect("p");
        assert_eq!(
            (
                p.host_ip.as_str(),
                p.host_port,
                p.container_port,
                p.proto.as_str()
            ),
            ("", 8080, 80, "tcp")
        );
        assert_eq!(p.display(), "0.0.0.0:8080->80/tcp");
        let p = PortBinding::parse("0.0.0.0:8080:80").expect("p");
        assert_eq!(p.host_ip, "0.0.0.0", "an address given is kept: IPv4 only");
        let p = PortBinding::parse("127.0.0.1:9000:9001/tcp").expect("p");
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("127.0.0.1", 9000, 9001)
        );
        let p = PortBinding::parse("80").expect("p");
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = PortBinding::parse("[::1]:8080:80").expect("p");
        assert_eq!(p.host_ip, "::1");
        assert_eq!(p.display(), "[::1]:8080->80/tcp");
        let p = PortBinding::parse("5353:53/udp").expect("p");
        assert_eq!(
            (p.host_port, p.container_port, p.proto.as_str()),
            (5353, 53, "udp")
        );
        let r = PortBinding::parse_all("127.0.0.1:8000-8002:9000-9002").expect("range");
        assert_eq!(
            r.iter()
                .map(|p| (p.host_port, p.container_port))
                .collect::<Vec<_>>(),
            [(8000, 9000), (8001, 9001), (8002, 9002)]
        );
        let r = PortBinding::parse_all("7000-7001/udp").expect("range");
        assert_eq!(
            r.iter()
                .map(|p| (p.host_port, p.container_port))
                .collect::<Vec<_>>(),
            [(0, 7000), (0, 7001)]
        );
        for bad in [
            "0:80",
            "a:80",
            "8080:80/sctp",
            "1-2:80",
            "5-3:5-3",
            "x.y:1:2",
            "1:2:3:4",
            "70000:80",
        ] {
            assert!(PortBinding::parse_all(bad).is_err(), "{bad}");
        }
        assert!(PortBinding::parse("1-2:1-2").is_err());
    }

    #[test]
    fn restart_policies_follow_docker() {
        let no = RestartPolicy::parse("no").expect("no");
        assert!(!no.should_restart(1, 0, false));
        let always = RestartPolicy::parse("always").expect("always");
        assert!(always.should_restart(0, 5, false));
        assert!(!always.should_restart(0, 5, true));
        let of = RestartPolicy::parse("on-failure:2").expect("of");
        assert!(of.should_restart(1, 0, false));
        assert!(of.should_restart(1, 1, false));
        assert!(!of.should_restart(1, 2, false));
        assert!(!of.should_restart(0, 0, false));
        let unlimited = RestartPolicy::parse("on-failure").expect("of");
        assert!(unlimited.should_restart(3, 1000, false));
        assert!(RestartPolicy::parse("always:3").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }

    #[test]
    fn process_start_reads_own_stat() {
        let me = std::process::id() as i32;
        let start = process_start(me).expect("own start time");
        let fd = pidfd_checked(me, start).expect("pidfd");
        drop(fd);
        assert!(
            pidfd_checked(me, start + 1).is_none(),
            "a different start time is another process"
        );
    }

    #[test]
    fn create_find_and_remove() {
        let dir = tempfile::tempdir().expect("tmp");
        let cs = Containers::new(dir.path());
        let cfg = |name: &str| ContainerConfig {
            version: FORMAT_VERSION,
            id: new_id().expect("id"),
            name: name.into(),
            created: now(),
            image: "busybox".into(),
            image_id: String::new(),
            diff_ids: vec![],
            argv: vec!["sh".into()],
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
            env: vec![],
            working_dir: String::new(),
            user: String::new(),
            hostname: "h".into(),
            tty: false,
            open_stdin: false,
            stdin_once: false,
            network: Network::Private,
            ports: vec![],
            publish_all: false,
            mounts: vec![],
            restart: RestartPolicy::default(),
            stop_signal: "SIGTERM".into(),
            stop_timeout: None,
            auto_remove: false,
            labels: BTreeMap::new(),
            exposed_ports: vec![],
            init: false,
            resources: Default::default(),
            healthcheck: None,
            read_only: false,
            tmpfs: Vec::new(),
            extra_hosts: Vec::new(),
        };
        let a = cs.create(cfg("web")).expect("create");
        assert_eq!(a.state.status, Status::Created);
        let b = cs.create(cfg("")).expect("create generated");
        assert!(b.config.name.contains('_'), "{}", b.config.name);
        assert!(matches!(
            cs.create(cfg("web")),
            Err(ContainerError::NameInUse { .. })
        ));
        assert_eq!(cs.find("web").expect("by name").config.id, a.config.id);
        assert_eq!(cs.find("/web").expect("by /name").config.id, a.config.id);
        assert_eq!(
            cs.find(&a.config.id[..10]).expect("by prefix").config.id,
            a.config.id
        );
        assert!(matches!(cs.find("nope"), Err(ContainerError::NotFound(_))));
        assert_eq!(cs.list().expect("list").len(), 2);
        // A running state with no monitor holding the lock reads as dead.
        let mut st = a.state.clone();
        st.status = Status::Running;
        st.pid = 1;
        write_state(&a.dir, &st).expect("state");
        assert_eq!(cs.find("web").expect("find").state.status, Status::Dead);
        cs.remove_dir(&a).expect("rm");
        assert!(matches!(cs.find("web"), Err(ContainerError::NotFound(_))));
        assert_eq!(cs.list().expect("list").len(), 1);
    }
}
