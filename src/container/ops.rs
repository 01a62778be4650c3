//! Container operations the CLI composes: create from an image (Docker's rules for command,
//! environment, user, volumes), stop, kill, remove, wait, and which images containers use.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroups::Cgroup;
use super::{
    monitor_alive, new_id, signals, Container, ContainerConfig, ContainerError, Containers,
    MountPoint, Network, PortBinding, RestartPolicy, Result, Status, FORMAT_VERSION,
};
use crate::image::spec::{ImageSpec, RunConfig};
use crate::image::Digest;
use crate::imageops::remove::{ContainerUse, ContainerUsers};
use crate::store::{GcRoots, ImageRecord, Store};

/// Docker's default for `stop -t`.
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;

/// What `kiln create` / `kiln run` were asked for.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The image (name, ID or ID prefix).
    pub image: String,
    /// `--platform`: which entry of a name holding an index of several platforms (`None`:
    /// the host's).
    pub platform: Option<crate::common::platform::Platform>,
    /// Arguments after the image: replace the image's CMD.
    pub command: Vec<String>,
    /// `--entrypoint` (empty string: none).
    pub entrypoint: Option<String>,
    /// `-e` / `--env-file` entries, in order (`K=V`, or `K` to take the host's value).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--name`.
    pub name: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
    /// Whether the CLI attaches (`run` without `-d`): stdin closes when it leaves.
    pub attach: bool,
    /// `--network`.
    pub network: Network,
    /// `-p`, parsed.
    pub ports: Vec<PortBinding>,
    /// `-P`: publish every port the image exposes on a port the kernel picks.
    pub publish_all: bool,
    /// `-v`, raw.
    pub volumes: Vec<String>,
    /// `--mount`, raw.
    pub mounts: Vec<String>,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--stop-timeout`.
    pub stop_timeout: Option<u32>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--label`.
    pub labels: Vec<String>,
    /// `--init`.
    pub init: bool,
    /// `--memory`, `--cpus`, …
    pub resources: super::cgroups::Resources,
    /// `--health-*`, `--no-healthcheck`.
    pub health: super::health::HealthFlags,
    /// `--read-only`.
    pub read_only: bool,
    /// `--tmpfs PATH[:OPTIONS]`.
    pub tmpfs: Vec<String>,
    /// `--add-host NAME:ADDRESS`.
    pub add_hosts: Vec<String>,
}

/// Parses `--tmpfs PATH[:size=…,mode=…,uid=…,gid=…,nr_inodes=…]` (Docker's default size
/// 64 MiB when none is given).
pub fn parse_tmpfs(spec: &str) -> Result<(String, String)> {
    use crate::executor::plan::{tmpfs_option, TmpfsOption};
    let (path, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let path = clean_dest(path, "--tmpfs")?;
    let mut data: Vec<String> = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let key = o.split_once('=').map_or(o, |(k, _)| k);
        match tmpfs_option(key) {
            TmpfsOption::Flag(_) => data.push(o.to_string()),
            TmpfsOption::Data if matches!(key, "size" | "mode" | "uid" | "gid" | "nr_inodes") => {
                data.push(o.to_string())
            }
            TmpfsOption::Default => {}
            TmpfsOption::Data => {
                return Err(ContainerError::Invalid(format!(
                    "invalid --tmpfs option {o:?} in {spec:?}: size, mode, uid, gid, nr_inodes, ro, rw, noexec, exec are supported"
                )))
            }
        }
    }
    if !data.iter().any(|d| d.starts_with("size=")) {
        data.push("size=65536k".into());
    }
    Ok((path, data.join(",")))
}

/// Parses `--add-host NAME:ADDRESS` (or `NAME=ADDRESS`).
pub fn parse_add_host(spec: &str) -> Result<(String, String)> {
    let (name, addr) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(|| {
            ContainerError::Invalid(format!(
                "invalid argument {spec:?} for --add-host: expected NAME:ADDRESS"
            ))
        })?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if addr.parse::<std::net::IpAddr>().is_err() {
        return Err(ContainerError::Invalid(format!(
            "invalid IP address in --add-host {spec:?}: {addr:?}"
        )));
    }
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(ContainerError::Invalid(format!(
            "invalid host name in --add-host {spec:?}"
        )));
    }
    Ok((name.to_string(), addr.to_string()))
}

/// Reads a Docker `--env-file`: `K=V` lines, `K` alone takes the host's value, `#` comments
/// and blank lines are skipped.
pub fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(super::io_err("reading env file", path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let key = l.split('=').next().unwrap_or_default();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ContainerError::Invalid(format!(
                "{}:{}: variable {key:?} contains whitespaces",
                path.display(),
                i + 1
            )));
        }
        out.push(l.to_string());
    }
    Ok(out)
}

/// The container's environment as Docker merges it: the `-e` entries first, in order (`K=V`
/// sets; `K` alone takes the host's value, or is dropped when the host has none), then the
/// image's variables that no entry set.
fn merge_env(image: &[String], entries: &[String]) -> Vec<String> {
    fn key(kv: &str) -> &str {
        kv.split_once('=').map_or(kv, |(k, _)| k)
    }
    let mut env: Vec<String> = Vec::new();
    for e in entries {
        let entry = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        match env.iter_mut().find(|kv| key(kv) == key(&entry)) {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    for kv in image {
        if !env.iter().any(|e| key(e) == key(kv)) {
            env.push(kv.clone());
        }
    }
    env
}

fn clean_dest(d: &str, what: &str) -> Result<String> {
    if !d.starts_with('/') {
        return Err(ContainerError::Invalid(format!(
            "invalid {what}: mount path must be absolute: {d:?}"
        )));
    }
    if d.split('/').any(|c| c == "..") {
        return Err(ContainerError::Invalid(format!(
            "invalid {what}: mount path must not contain '..': {d:?}"
        )));
    }
    if d.trim_end_matches('/').is_empty() {
        return Err(ContainerError::Invalid(format!(
            "invalid {what}: cannot mount over /"
        )));
    }
    // The container's /proc and /sys are the kernel's views, masked and read-only where
    // Docker's are; a mount over them (or inside /proc) would undo that, so runc and Docker
    // refuse it.
    let comps: Vec<&str> = d
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match comps.as_slice() {
        ["proc", ..] | ["sys"] => {
            return Err(ContainerError::Invalid(format!(
                "invalid {what}: {d:?} cannot be mounted because it is /sys or inside /proc"
            )));
        }
        _ => {}
    }
    Ok(d.to_string())
}

pub(crate) fn volume_dir(root: &Path, name: &str) -> Result<PathBuf> {
    super::names::validate(name).map_err(|_| {
        ContainerError::Invalid(format!(
            "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
        ))
    })?;
    let d = root.join("volumes").join(name).join("_data");
    fs::create_dir_all(&d).map_err(super::io_err("creating volume", &d))?;
    Ok(d)
}

/// Parses `-v SRC:DST[:ro|rw]`, `-v NAME:DST`, `-v DST` (an anonymous volume).
pub fn parse_volume(root: &Path, spec: &str) -> Result<MountPoint> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => {
            return Err(ContainerError::Invalid(format!(
                "invalid volume specification: {spec:?}"
            )))
        }
    };
    let mut rw = true;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => rw = false,
            "rw" => rw = true,
            "z" | "Z" | "private" | "rprivate" | "nocopy" => {}
            _ => {
                return Err(ContainerError::Invalid(format!(
                    "invalid mode {o:?} in volume specification {spec:?}"
                )))
            }
        }
    }
    let destination = clean_dest(dst, "volume specification")?;
    if src.starts_with('/') || src.starts_with('.') {
        // Docker creates a missing host directory for -v.
        let source = host_path(src)?;
        if !source.exists() {
            fs::create_dir_all(&source).map_err(super::io_err("creating", &source))?;
        }
        return Ok(MountPoint {
            kind: "bind".into(),
            name: String::new(),
            source,
            destination,
            rw,
        });
    }
    let name = if src.is_empty() {
        new_id()?
    } else {
        src.to_string()
    };
    Ok(MountPoint {
        kind: "volume".into(),
        source: volume_dir(root, &name)?,
        name,
        destination,
        rw,
    })
}

/// A bind source as the host path it names: a relative one (`./data`, `../x`, `.`) taken from
/// the current directory, as Docker's CLI does since 23.0, and made absolute lexically as
/// Go's `filepath.Abs` (`..` drops the name before it, symlinks are left to the mount). An
/// absolute one is kept as given.
/// Docker reads `data:/x` (no leading `.` or `/`) as a volume name, and so does kiln.
fn host_path(src: &str) -> Result<PathBuf> {
    let path = Path::new(src);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd =
        std::env::current_dir().map_err(super::io_err("reading the current directory for", src))?;
    let mut clean = PathBuf::from("/");
    for c in cwd.join(path).components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::Normal(n) => clean.push(n),
            _ => {}
        }
    }
    Ok(clean)
}

/// Parses `--mount type=bind|volume,source=…,target=…[,readonly]`.
pub fn parse_mount(root: &Path, spec: &str) -> Result<MountPoint> {
    let mut kind = "volume".to_string();
    let (mut src, mut dst, mut rw) = (String::new(), String::new(), true);
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.to_ascii_lowercase().as_str() {
            "type" => kind = v.to_string(),
            "source" | "src" => src = v.to_string(),
            "target" | "destination" | "dst" => dst = v.to_string(),
            "readonly" | "ro" => rw = !matches!(v, "" | "1" | "true"),
            "bind-propagation" | "consistency" | "volume-nocopy" => {}
            _ => {
                return Err(ContainerError::Invalid(format!(
                    "invalid field {k:?} in --mount {spec:?}"
                )))
            }
        }
    }
    if dst.is_empty() {
        return Err(ContainerError::Invalid(format!(
            "invalid --mount {spec:?}: target is required"
        )));
    }
    let destination = clean_dest(&dst, "--mount")?;
    match kind.as_str() {
        "bind" => {
            if !src.starts_with('/') && !src.starts_with('.') {
                return Err(ContainerError::Invalid(format!(
                    "invalid --mount {spec:?}: a bind source must be an absolute path, or relative starting with ."
                )));
            }
            let source = host_path(&src)?;
            if !source.exists() {
                return Err(ContainerError::Invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                )));
            }
            Ok(MountPoint {
                kind,
                name: String::new(),
                source,
                destination,
                rw,
            })
        }
        "volume" => {
            let name = if src.is_empty() { new_id()? } else { src };
            Ok(MountPoint {
                kind,
                source: volume_dir(root, &name)?,
                name,
                destination,
                rw,
            })
        }
        other => Err(ContainerError::Invalid(format!(
            "mount type {other:?} is not supported (bind and volume are)"
        ))),
    }
}

/// The host's name (`uname -n`), for a container on the host's network.
fn host_name() -> Result<String> {
    nix::unistd::gethostname()
        .map_err(|e| super::io_err("reading the host's name for", "--network host")(e.into()))?
        .into_string()
        .map_err(|_| ContainerError::Invalid("the host's name is not UTF-8".into()))
}

/// Creates a container from an image, as `docker create` does.
pub fn create(store: &Store, opts: &CreateOptions) -> Result<Container> {
    let root = store.root().to_path_buf();
    let (image, spec) = image_config(store, &opts.image, opts.platform.as_ref())?;
    let ic = &spec.config;
    let Command {
        entrypoint,
        cmd,
        argv,
    } = command_of(opts, ic)?;
    let id = new_id()?;
    let hostname = match (&opts.hostname, opts.network) {
        (Some(h), _) => h.clone(),
        // The host's network comes with the host's name, as in Docker.
        (None, Network::Host) => host_name()?,
        (None, _) => id[..12].to_string(),
    };
    let env = merge_env(&ic.env, &opts.env);
    let mounts = mounts_of(&root, opts)?;
    let stop_signal = opts
        .stop_signal
        .clone()
        .or_else(|| ic.stop_signal.clone())
        .unwrap_or_else(|| "SIGTERM".into());
    signals::parse(&stop_signal)?;
    let mut labels: BTreeMap<String, String> = ic.labels.clone().unwrap_or_default();
    for l in &opts.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    if opts.network == Network::Pasta && super::monitor::find_in_path("pasta").is_none() {
        return Err(ContainerError::Invalid(
            "--network pasta needs pasta (Debian package passt) in $PATH".into(),
        ));
    }
    let exposed: Vec<String> = ic
        .exposed_ports
        .as_ref()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let ports = published_ports(opts, &exposed)?;
    check_limits(opts)?;
    let config = ContainerConfig {
        version: FORMAT_VERSION,
        id,
        name: opts.name.clone().unwrap_or_default(),
        created: super::now(),
        image: opts.image.clone(),
        image_id: image.id.to_string(),
        diff_ids: image.diff_ids.iter().map(|d| d.to_string()).collect(),
        argv,
        entrypoint,
        cmd,
        env,
        working_dir: opts
            .workdir
            .clone()
            .unwrap_or_else(|| ic.working_dir.clone()),
        user: opts.user.clone().unwrap_or_else(|| ic.user.clone()),
        hostname,
        tty: opts.tty,
        open_stdin: opts.interactive,
        stdin_once: opts.interactive && opts.attach,
        network: opts.network,
        ports,
        publish_all: opts.publish_all,
        mounts,
        restart: opts.restart.clone(),
        stop_signal,
        stop_timeout: opts.stop_timeout,
        auto_remove: opts.auto_remove,
        labels,
        exposed_ports: exposed,
        init: opts.init,
        resources: opts.resources.clone(),
        healthcheck: super::health::effective(ic.healthcheck.as_ref(), &opts.health),
        read_only: opts.read_only,
        tmpfs: opts
            .tmpfs
            .iter()
            .map(|t| parse_tmpfs(t))
            .collect::<Result<_>>()?,
        extra_hosts: opts
            .add_hosts
            .iter()
            .map(|h| parse_add_host(h))
            .collect::<Result<_>>()?,
    };
    Containers::new(&root).create(config)
}

/// The image `reference` names in the store, and its config.
fn image_config(
    store: &Store,
    reference: &str,
    platform: Option<&crate::common::platform::Platform>,
) -> Result<(ImageRecord, ImageSpec)> {
    let image = store.resolve_platform(reference, platform).map_err(|_| {
        ContainerError::Invalid(format!("Unable to find image '{reference}' locally"))
    })?;
    let bytes = store.read_blob(&image.id, "image config", 16 << 20)?;
    let spec = ImageSpec::from_slice(&bytes).map_err(|source| ContainerError::BadImage {
        image: reference.to_string(),
        source,
    })?;
    Ok((image, spec))
}

/// What a container runs: entrypoint, command, and the two joined.
struct Command {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    argv: Vec<String>,
}

/// The container's command, as Docker combines flags and image: arguments replace CMD; a
/// new entrypoint drops the image's CMD.
fn command_of(opts: &CreateOptions, ic: &RunConfig) -> Result<Command> {
    let entrypoint: Option<Vec<String>> = match &opts.entrypoint {
        Some(e) if e.is_empty() => None,
        Some(e) => Some(vec![e.clone()]),
        None => ic.entrypoint.clone(),
    };
    let cmd: Option<Vec<String>> = if !opts.command.is_empty() {
        Some(opts.command.clone())
    } else if opts.entrypoint.is_some() {
        None
    } else {
        ic.cmd.clone()
    };
    let mut argv: Vec<String> = entrypoint.clone().unwrap_or_default();
    argv.extend(cmd.clone().unwrap_or_default());
    if argv.is_empty() {
        return Err(ContainerError::Invalid("No command specified".into()));
    }
    Ok(Command {
        entrypoint,
        cmd,
        argv,
    })
}

/// `-v` and `--mount`, each destination at most once.
fn mounts_of(root: &Path, opts: &CreateOptions) -> Result<Vec<MountPoint>> {
    let mut mounts = Vec::new();
    for v in &opts.volumes {
        mounts.push(parse_volume(root, v)?);
    }
    for m in &opts.mounts {
        mounts.push(parse_mount(root, m)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &mounts {
        if !seen.insert(m.destination.trim_end_matches('/').to_string()) {
            return Err(ContainerError::Invalid(format!(
                "Duplicate mount point: {}",
                m.destination
            )));
        }
    }
    Ok(mounts)
}

/// `-p` and `-P` bindings; none without a network of the container's own.
fn published_ports(opts: &CreateOptions, exposed: &[String]) -> Result<Vec<PortBinding>> {
    if !matches!(opts.network, Network::Private | Network::Pasta) {
        return Ok(Vec::new());
    }
    let mut ports = opts.ports.clone();
    if opts.publish_all {
        publish_all(&mut ports, exposed, &opts.image)?;
    }
    Ok(ports)
}

/// Resource limits this host can apply, and no `--rm` with a restart policy.
fn check_limits(opts: &CreateOptions) -> Result<()> {
    if opts.resources.any() {
        let h = super::cgroups::Hierarchy::usable()
            .map_err(|why| ContainerError::Invalid(format!("resource limits need {why}")))?;
        let online = h.online_cpus();
        let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ncpus = super::cgroups::parse_cpu_list(&online).map_or(ncpus, |l| l.len());
        opts.resources.validate(ncpus, &online)?;
    }
    if opts.auto_remove && opts.restart.name != "no" {
        return Err(ContainerError::Invalid(
            "Conflicting options: --restart and --rm".into(),
        ));
    }
    Ok(())
}

/// `-P`: adds a binding to a port the kernel picks for each port `image` exposes that
/// `ports` does not publish yet. An exposed port is read as `-p` reads one, so a protocol
/// `-p` refuses (`sctp`: kiln relays only tcp and udp) is refused here too, rather than
/// bound as tcp. An entry that is not a single port (a range, a malformed key) is left out.
fn publish_all(ports: &mut Vec<PortBinding>, exposed: &[String], image: &str) -> Result<()> {
    for e in exposed {
        let port = e.split_once('/').map_or(e.as_str(), |(port, _)| port);
        if port.parse::<u16>().is_err() {
            continue;
        }
        let bindings = PortBinding::parse_all(e).map_err(|err| {
            ContainerError::Invalid(format!(
                "-P: cannot publish port {e} that image {image} exposes: {err}"
            ))
        })?;
        for b in bindings {
            if !ports
                .iter()
                .any(|p| p.container_port == b.container_port && p.proto == b.proto)
            {
                ports.push(b);
            }
        }
    }
    Ok(())
}

/// Waits until the container's monitor has exited (its lock is free), at most `timeout`.
pub fn wait_monitor_gone(c: &Container, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while monitor_alive(&c.dir) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Marks the container as stopped by the user, so its restart policy leaves it alone.
fn request_stop(c: &Container) -> Result<()> {
    let p = c.dir.join("stop-requested");
    fs::write(&p, b"").map_err(super::io_err("writing", &p))
}

/// `kiln kill`: sends `signal` to the container's PID 1.
pub fn kill(c: &Container, signal: i32) -> Result<()> {
    if !c.is_running() {
        return Err(ContainerError::State(format!(
            "Cannot kill container: {}: container {} is not running",
            c.config.name, c.config.id
        )));
    }
    request_stop(c)?;
    if let Some(fd) = c.pidfd() {
        super::pidfd_signal(&fd, signal).map_err(ContainerError::Signal)?;
    }
    thaw_signalled(c);
    Ok(())
}

/// After a signal to a paused container: thawed, so it can act on it (as Docker does).
fn thaw_signalled(c: &Container) {
    if c.paused {
        if let Some(cg) = Cgroup::host(&c.config.id) {
            let _ = cg.thaw();
        }
    }
}

/// The cgroup of a running container, for `pause`, `stats`, `top`.
pub fn running_cgroup(c: &Container) -> Result<Cgroup> {
    if c.state.status != Status::Running {
        return Err(ContainerError::State(format!(
            "Container {} is not running",
            c.config.id
        )));
    }
    Cgroup::host(&c.config.id)
        .filter(Cgroup::exists)
        .ok_or_else(|| match super::cgroups::Hierarchy::usable() {
            Err(why) => ContainerError::State(format!(
                "container {} has no cgroup: kiln can make none here, as that needs {why}",
                c.config.name
            )),
            Ok(_) => ContainerError::State(format!(
                "container {} has no cgroup (started by an older kiln, or on a host without cgroups): restart it",
                c.config.name
            )),
        })
}

/// The `on_ready` of a command run in the container with id `id` (`exec`, a health check):
/// it joins the container's cgroup (its limits, `top`, `stats`) before it runs, if the
/// container has one.
pub fn cgroup_joiner(id: &str) -> impl FnMut(libc::pid_t) -> std::io::Result<()> {
    let cgroup = Cgroup::host(id).filter(Cgroup::exists);
    move |pid| match &cgroup {
        Some(cg) => cg.add(pid).map_err(std::io::Error::other),
        None => Ok(()),
    }
}

/// `kiln pause`: freezes every process of the container.
pub fn pause(c: &Container) -> Result<()> {
    let cg = running_cgroup(c)?;
    if c.paused {
        return Err(ContainerError::State(format!(
            "Container {} is already paused",
            c.config.id
        )));
    }
    cg.freeze()
}

/// `kiln unpause`.
pub fn unpause(c: &Container) -> Result<()> {
    if !c.paused {
        return Err(ContainerError::State(format!(
            "Container {} is not paused",
            c.config.id
        )));
    }
    running_cgroup(c)?.thaw()
}

/// `kiln stop`: the stop signal, then SIGKILL after `timeout` seconds; returns once the
/// monitor recorded the exit. A stopped container is not an error (Docker's behaviour).
pub fn stop(c: &Container, timeout: Option<u32>) -> Result<()> {
    if !c.is_running() {
        return Ok(());
    }
    request_stop(c)?;
    let timeout = timeout
        .or(c.config.stop_timeout)
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    if let Some(fd) = c.pidfd() {
        let sig = signals::parse(&c.config.stop_signal).unwrap_or(libc::SIGTERM);
        let _ = super::pidfd_signal(&fd, sig);
        thaw_signalled(c);
        if !super::pidfd_wait(&fd, Duration::from_secs(u64::from(timeout))) {
            let _ = super::pidfd_signal(&fd, libc::SIGKILL);
            super::pidfd_wait(&fd, Duration::from_secs(30));
        }
    }
    // The monitor records the exit (and, being told to stop, does not restart).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = Container::load(&c.dir)?;
        // Stopped once its monitor, told not to restart it, has finished and gone: a
        // `start` right after `stop` must not find the old monitor still winding down.
        if !now.is_running()
            && wait_monitor_gone(c, deadline.saturating_duration_since(Instant::now()))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ContainerError::Timeout(format!(
                "{} did not stop in time",
                c.config.name
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kiln rm [-f]`: refuses a running container without `force`; with it, kills it first.
pub fn remove(containers: &Containers, c: &Container, force: bool) -> Result<()> {
    if c.is_running() {
        if !force {
            return Err(ContainerError::State(format!(
                "cannot remove container \"/{}\": container is {}: stop the container before removing or force remove",
                c.config.name,
                c.state.status.as_str()
            )));
        }
        request_stop(c)?;
        if let Some(fd) = c.pidfd() {
            let _ = super::pidfd_signal(&fd, libc::SIGKILL);
            thaw_signalled(c);
            super::pidfd_wait(&fd, Duration::from_secs(30));
        }
    }
    if !wait_monitor_gone(c, Duration::from_secs(30)) {
        return Err(ContainerError::Timeout(format!(
            "{}: its monitor did not exit",
            c.config.name
        )));
    }
    // With --rm the monitor may have removed it already.
    if c.dir.exists() {
        containers.remove_dir(c)?;
    }
    Ok(())
}

/// `kiln wait`: blocks until the container is no longer running; returns its exit code.
pub fn wait(c: &Container) -> Result<i32> {
    loop {
        if !c.dir.exists() {
            return Ok(c.state.exit_code);
        }
        let now = match Container::load(&c.dir) {
            Ok(n) => n,
            // Removed (--rm) meanwhile.
            Err(_) if !c.dir.exists() => return Ok(0),
            Err(e) => return Err(e),
        };
        if !now.is_running() && (now.state.status != Status::Created || !monitor_alive(&c.dir)) {
            return Ok(now.state.exit_code);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The containers of a root, as the image commands need to know them.
#[derive(Debug, Clone)]
pub struct StoreContainers(pub Containers);

impl ContainerUsers for StoreContainers {
    fn containers_using(&self, image: &Digest) -> Vec<ContainerUse> {
        let id = image.to_string();
        self.0
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.config.image_id == id)
            .map(|c| ContainerUse {
                container: c.short_id().to_string(),
                running: c.is_running(),
            })
            .collect()
    }

    fn gc_roots(&self) -> GcRoots {
        // The build cache's layers stay until `kiln builder prune`, as BuildKit's do.
        let mut roots =
            match crate::store::Store::open(self.0.dir().parent().unwrap_or(self.0.dir())) {
                Ok(store) => crate::cache::CacheIndex::open(&store).gc_roots(),
                Err(_) => GcRoots::default(),
            };
        let own = self.container_roots();
        roots.blobs.extend(own.blobs);
        roots.snapshots.extend(own.snapshots);
        roots
    }
}

impl StoreContainers {
    /// The layers and snapshots containers need (their image may be gone after `rmi -f`).
    pub fn container_roots(&self) -> GcRoots {
        let mut roots = GcRoots::default();
        for c in self.0.list().unwrap_or_default() {
            if let Ok(ids) = c.diff_ids() {
                roots
                    .snapshots
                    .extend(crate::image::config::chain_ids(&ids));
                roots.blobs.extend(ids);
            }
        }
        roots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(host_ip: &str, host_port: u16, container_port: u16, proto: &str) -> PortBinding {
        PortBinding {
            host_ip: host_ip.into(),
            host_port,
            container_port,
            proto: proto.into(),
        }
    }

    // Docker lists the `-e` variables first, then the image's that they did not set.
    #[test]
    fn env_merges_as_docker_orders_it() {
        let image = [
            "PATH=/bin".to_string(),
            "A=image".to_string(),
            "B=2".to_string(),
        ];
        let entries = ["C=3", "A=user", "C=4", "KILN_SURELY_UNSET_VAR"].map(String::from);
        assert_eq!(
            merge_env(&image, &entries),
            ["C=4", "A=user", "PATH=/bin", "B=2"].map(String::from)
        );
        assert_eq!(merge_env(&image, &[]), image);
    }

    #[test]
    fn publish_all_adds_each_exposed_port_not_yet_published() {
        let mut ports = vec![binding("127.0.0.1", 8080, 80, "tcp")];
        let exposed = [
            "80/tcp",
            "443",
            "53/udp",
            "53/tcp",
            "8000-8001/tcp",
            "x/tcp",
        ];
        let exposed: Vec<String> = exposed.iter().map(|e| e.to_string()).collect();
        publish_all(&mut ports, &exposed, "web:1").unwrap();
        assert_eq!(
            ports,
            [
                binding("127.0.0.1", 8080, 80, "tcp"),
                binding("", 0, 443, "tcp"),
                binding("", 0, 53, "udp"),
                binding("", 0, 53, "tcp"),
            ]
        );
    }

    // -P turned an exposed 80/sctp into a binding ports::bind served as tcp.
    #[test]
    fn publish_all_refuses_sctp_rather_than_binding_it_as_tcp() {
        let mut ports = Vec::new();
        let err = publish_all(&mut ports, &["80/sctp".to_string()], "web:1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "-P: cannot publish port 80/sctp that image web:1 exposes: invalid port specification \"80/sctp\": the protocol must be tcp or udp"
        );
        assert!(PortBinding::parse("80/sctp").is_err(), "as -p 80/sctp");
    }

    // `-v ./rel:/b` was read as a volume named `./rel` (an invalid name); Docker 23+ binds
    // the directory, relative to the current one.
    #[test]
    fn relative_bind_sources_are_taken_from_the_current_directory() {
        // Directories that exist (the crate's), so nothing is made outside a temp dir.
        let d = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let name = cwd.file_name().unwrap().to_str().unwrap().to_string();
        let up = format!("../{name}/./src:/b");
        for (spec, want) in [
            ("./src:/b", cwd.join("src")),
            (".:/b:ro", cwd.clone()),
            (up.as_str(), cwd.join("src")),
        ] {
            let m = parse_volume(d.path(), spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!((m.kind.as_str(), &m.source), ("bind", &want), "{spec}");
            assert_eq!(m.destination, "/b");
        }
        let m = parse_volume(d.path(), "data:/b").unwrap();
        assert_eq!((m.kind.as_str(), m.name.as_str()), ("volume", "data"));
        let m = parse_mount(d.path(), "type=bind,source=.,target=/b").unwrap();
        assert_eq!(m.source, cwd);
        assert!(parse_mount(d.path(), "type=bind,source=data,target=/b").is_err());
    }

    // `-v x:/proc` was accepted: a volume over the container's /proc undoes its masked and
    // read-only paths (Docker and runc refuse it).
    #[test]
    fn mounts_over_proc_or_sys_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for spec in [
            "/tmp:/proc",
            "/tmp:/proc/sys",
            "/tmp://proc/",
            "/tmp:/./proc",
            "v:/sys/",
        ] {
            let err = parse_volume(d.path(), spec).unwrap_err().to_string();
            assert!(err.contains("cannot be mounted"), "{spec}: {err}");
        }
        let err = parse_mount(d.path(), "type=bind,source=/tmp,target=/proc").unwrap_err();
        assert!(err.to_string().contains("inside /proc"), "{err}");
        assert!(parse_tmpfs("/proc/x").is_err());
        assert!(parse_volume(d.path(), "/tmp:/sys/fs/cgroup:ro").is_ok());
        assert!(parse_volume(d.path(), "/tmp:/procfs").is_ok());
    }
}
