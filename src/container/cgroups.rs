//! Resource limits, freezing and accounting through cgroups (`docker run --memory`,
//! `--cpus`, `pause`, `stats`, `top`).
//!
//! Every container gets its own cgroup, `kiln/<id>`: on a v1 host under each controller's
//! hierarchy (`/sys/fs/cgroup/memory/kiln/<id>`, `…/cpu/kiln/<id>`, …), on a v2 host in the
//! unified hierarchy (`/sys/fs/cgroup/kiln/<id>`). The monitor creates it and writes the
//! limits before the container's PID 1 runs, and places that process in it before its
//! command is exec'd; it lives until the container is removed, so the monitor's restarts
//! (restart policies) reuse it. On v1 the `devices` controller gets Docker's default
//! allow-list ([`device_rules`]): any node can be made, only null, zero, tty… opened. (v2
//! would need a BPF device program; there, as for build steps, `nodev` on every mount of the
//! container keeps a node it makes from opening.) The two layouts are the seam: [`Hierarchy`] is a directory
//! tree, and the unit tests give it a fake one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{ContainerError, Result};

/// Where cgroup file systems are mounted.
pub const HOST_ROOT: &str = "/sys/fs/cgroup";

/// The v1 controllers a container joins (each one that is mounted).
const V1_CONTROLLERS: [&str; 8] = [
    "memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio", "devices",
];
/// The v2 controllers kiln enables for its containers (each one the host has).
const V2_CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];
/// The CFS period `--cpus` uses, as Docker (100 ms).
const CFS_PERIOD_US: i64 = 100_000;

/// What `--memory`, `--cpus` and friends asked for; 0 (or empty) means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// `--memory`, bytes.
    pub memory: i64,
    /// `--memory-swap`, bytes of memory plus swap; -1: unlimited swap.
    pub memory_swap: i64,
    /// `--cpus` in billionths of a CPU.
    pub nano_cpus: i64,
    /// `--cpu-shares`, the relative weight (v1 scale, 1024 is the default).
    pub cpu_shares: i64,
    /// `--pids-limit`; 0 or negative: unlimited.
    pub pids_limit: i64,
    /// `--cpuset-cpus`, a CPU list such as `0-2,4`.
    pub cpuset_cpus: String,
}

impl Resources {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        *self != Resources::default()
    }

    /// Docker's checks of the values together (`--memory-swap` needs `--memory`, …).
    /// `online` is the list of CPUs the host has (`cpuset.cpus` of the root).
    pub fn validate(&self, ncpus: usize, online: &str) -> Result<()> {
        let bad = |m: String| Err(ContainerError::Invalid(m));
        if self.memory != 0 && self.memory < 6 * 1024 * 1024 {
            return bad("Minimum memory limit allowed is 6MB".into());
        }
        if self.memory_swap > 0 && self.memory == 0 {
            return bad(
                "You should always set the Memory limit when using Memoryswap limit, see usage"
                    .into(),
            );
        }
        if self.memory_swap > 0 && self.memory_swap < self.memory {
            return bad(
                "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
            );
        }
        if self.nano_cpus < 0 || self.nano_cpus > ncpus as i64 * 1_000_000_000 {
            return bad(format!(
                "Range of CPUs is from 0.01 to {ncpus}.00, as there are only {ncpus} CPUs available"
            ));
        }
        if self.nano_cpus != 0 && self.nano_cpus < 10_000_000 {
            return bad(format!(
                "Range of CPUs is from 0.01 to {ncpus}.00, as there are only {ncpus} CPUs available"
            ));
        }
        if self.cpu_shares < 0 {
            return bad(format!("invalid CPU shares: {}", self.cpu_shares));
        }
        if !self.cpuset_cpus.is_empty() {
            let wanted = parse_cpu_list(&self.cpuset_cpus).ok_or_else(|| {
                ContainerError::Invalid(format!(
                    "Invalid value {} for cpuset cpus",
                    self.cpuset_cpus
                ))
            })?;
            let have = parse_cpu_list(online).unwrap_or_default();
            if wanted.iter().any(|c| !have.contains(c)) {
                return bad(format!(
                    "Requested CPUs are not available - requested {}, available: {}",
                    self.cpuset_cpus,
                    online.trim()
                ));
            }
        }
        Ok(())
    }
}

/// Parses a size as Docker's `RAMInBytes`: a number with an optional binary unit
/// (`b`, `k`, `m`, `g`, `t`, `p`, optionally followed by `b`): `64m`, `1g`, `512kb`.
pub fn parse_bytes(s: &str) -> Option<i64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: i64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return None,
    };
    let v = n * mult as f64;
    (v.is_finite() && v >= 0.0 && v < i64::MAX as f64).then_some(v as i64)
}

/// Parses `--cpus` (a decimal number of CPUs) into billionths of a CPU.
pub fn parse_cpus(s: &str) -> Option<i64> {
    let n: f64 = s.trim().parse().ok()?;
    (0.0..1e9).contains(&n).then(|| (n * 1e9).round() as i64)
}

/// Parses a CPU list (`0-2,4`) into the CPU numbers, or `None` if it is not one.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// A mounted cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: one hierarchy per controller, `<root>/<controller>/…`.
    V1 {
        /// Where the controllers are mounted (`/sys/fs/cgroup`).
        root: PathBuf,
        /// The controllers of [`V1_CONTROLLERS`] that are mounted.
        controllers: Vec<&'static str>,
    },
    /// cgroup v2: the unified hierarchy mounted at `root`.
    V2 {
        /// Its mount point (`/sys/fs/cgroup`).
        root: PathBuf,
    },
}

impl Hierarchy {
    /// The layout under `root`: v2 when it is a unified hierarchy itself, else v1 when any
    /// controller is mounted below it. (A hybrid host's `unified/` has no controllers.)
    pub fn detect(root: &Path) -> Option<Hierarchy> {
        if root.join("cgroup.controllers").is_file() {
            return Some(Hierarchy::V2 {
                root: root.to_path_buf(),
            });
        }
        let controllers: Vec<&'static str> = V1_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| root.join(c).join("cgroup.procs").is_file())
            .collect();
        (!controllers.is_empty()).then(|| Hierarchy::V1 {
            root: root.to_path_buf(),
            controllers,
        })
    }

    /// The layout kiln makes its containers' cgroups in: the host's, or in rootless mode the
    /// subtree delegated to the user (none if there is none).
    pub fn host() -> Option<Hierarchy> {
        Hierarchy::usable().ok()
    }

    /// As [`Hierarchy::host`], or why there is none: `Err` finishes the sentence "resource
    /// limits need …".
    pub fn usable() -> std::result::Result<Hierarchy, String> {
        // Detected once per process: it is the host's mount layout, which does not change
        // under a running kiln, and `Container::load` asks on every call (polling loops).
        static HOST: OnceLock<std::result::Result<Hierarchy, String>> = OnceLock::new();
        HOST.get_or_init(|| {
            let root = Path::new(HOST_ROOT);
            if crate::executor::isolation::entered() {
                let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                return delegated(root, unified_path(&own).unwrap_or("/"), &|p| {
                    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
                })
                .map_err(|why| {
                    format!("a cgroup v2 subtree delegated to the user in rootless mode: {why}")
                });
            }
            Hierarchy::detect(root)
                .ok_or_else(|| format!("cgroups, and none are mounted at {HOST_ROOT}"))
        })
        .clone()
    }

    /// Whether `--memory-swap` can be enforced (v1 needs swap accounting: `memsw` files).
    pub fn swap_limit_supported(&self) -> bool {
        match self {
            Hierarchy::V1 { root, .. } => root
                .join("memory")
                .join("memory.memsw.limit_in_bytes")
                .exists(),
            Hierarchy::V2 { .. } => true,
        }
    }

    /// The CPUs the host has, as the root cpuset lists them.
    pub fn online_cpus(&self) -> String {
        let p = match self {
            Hierarchy::V1 { root, .. } => root.join("cpuset").join("cpuset.cpus"),
            Hierarchy::V2 { root } => root.join("cpuset.cpus.effective"),
        };
        fs::read_to_string(p)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| fs::read_to_string("/sys/devices/system/cpu/online").ok())
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

/// The process's path in the unified (v2) hierarchy, from `/proc/self/cgroup` text (the
/// `0::/path` line).
pub fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Where a rootless kiln may make cgroups, given the cgroup mount point `mount`, its own v2
/// cgroup `own` and a test for "may write": the topmost cgroup on the way from the mount's
/// root down to `own` whose directory, `cgroup.procs` and `cgroup.subtree_control` it may
/// write (systemd's `user@UID.service` with `Delegate=yes`), as a v2 layout rooted there.
/// `Err` says what is missing.
pub fn delegated(
    mount: &Path,
    own: &str,
    writable: &dyn Fn(&Path) -> bool,
) -> std::result::Result<Hierarchy, String> {
    let unified = if mount.join("cgroup.controllers").is_file() {
        mount.to_path_buf()
    } else {
        // A hybrid host's v2 hierarchy holds only the controllers no v1 hierarchy took.
        let hybrid = mount.join("unified");
        return Err(match read(&hybrid.join("cgroup.controllers")) {
            Some(c) => format!(
                "this host has cgroup v1 (the cgroup v2 hierarchy at {} has {})",
                hybrid.display(),
                match c.trim() {
                    "" => "no controllers".to_string(),
                    c => format!("only the controllers {c}"),
                }
            ),
            None => format!(
                "this host has cgroup v1 (no cgroup v2 hierarchy at {})",
                mount.display()
            ),
        });
    };
    let mut dir = unified.clone();
    let mut candidates = Vec::new();
    for part in Path::new(own).components().skip(1) {
        dir.push(part);
        candidates.push(dir.clone());
    }
    let delegated = candidates.into_iter().find(|d| {
        writable(d)
            && writable(&d.join("cgroup.procs"))
            && writable(&d.join("cgroup.subtree_control"))
    });
    match delegated {
        Some(root) => Ok(Hierarchy::V2 { root }),
        None => Err(format!(
            "{} and its parents are not writable by the user (not delegated; with systemd, \
             a login session's user@UID.service with Delegate=yes is)",
            unified.join(own.trim_start_matches('/')).display()
        )),
    }
}

/// Docker's default device cgroup rules, as `devices.allow` lines: make any character or
/// block node (`m`), read, write and make [`crate::executor::DEFAULT_DEVICES`].
pub fn device_rules() -> Vec<String> {
    let mut v = vec!["c *:* m".to_string(), "b *:* m".to_string()];
    for (major, minor) in crate::executor::DEFAULT_DEVICES {
        let minor = minor.map_or_else(|| "*".to_string(), |m| m.to_string());
        v.push(format!("c {major}:{minor} rwm"));
    }
    v
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    /// `kiln/<id>`.
    rel: PathBuf,
}

fn cg_err(what: &str, path: &Path, e: io::Error) -> ContainerError {
    ContainerError::Cgroup {
        what: what.to_string(),
        path: path.to_path_buf(),
        source: e,
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| cg_err(&format!("writing {value:?} to"), path, e))
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` lines: memory.stat, cpu.stat, …).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Usage figures of a cgroup, as `kiln stats` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, minus inactive file cache (as Docker counts it), bytes.
    pub memory: u64,
    /// The memory limit; `None`: unlimited.
    pub memory_limit: Option<u64>,
    /// Processes (and threads) in it.
    pub pids: u64,
    /// Bytes read from and written to block devices.
    pub block_read: u64,
    /// See `block_read`.
    pub block_write: u64,
}

impl Cgroup {
    /// The cgroup of container `id` (64 hex digits) in `hierarchy`.
    pub fn new(hierarchy: Hierarchy, id: &str) -> Result<Cgroup> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ContainerError::Invalid(format!(
                "not a container ID: {id:?}"
            )));
        }
        Ok(Cgroup {
            hierarchy,
            rel: Path::new("kiln").join(id),
        })
    }

    /// The cgroup of container `id` on this host, if the host has cgroups.
    pub fn host(id: &str) -> Option<Cgroup> {
        Cgroup::new(Hierarchy::host()?, id).ok()
    }

    /// The container's directory under each controller (one for v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1 { root, controllers } => controllers
                .iter()
                .map(|c| root.join(c).join(&self.rel))
                .collect(),
            Hierarchy::V2 { root } => vec![root.join(&self.rel)],
        }
    }

    /// The directory holding `controller`'s files, if that controller is there.
    fn dir_of(&self, controller: &str) -> Option<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1 { root, controllers } => controllers
                .contains(&controller)
                .then(|| root.join(controller).join(&self.rel)),
            Hierarchy::V2 { root } => Some(root.join(&self.rel)),
        }
    }

    /// Whether the cgroup exists.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    /// Creates the cgroup (or finds it from an earlier start) and writes the limits; a
    /// frozen one is thawed, so a restarted container does not start paused.
    pub fn create(&self, r: &Resources) -> Result<()> {
        match &self.hierarchy {
            Hierarchy::V1 { root, controllers } => {
                for c in controllers {
                    let top = root.join(c);
                    let dir = top.join(&self.rel);
                    fs::create_dir_all(&dir).map_err(|e| cg_err("creating", &dir, e))?;
                    if *c == "cpuset" {
                        // A new cpuset is empty, and takes no process until it has CPUs and
                        // memory nodes: inherit them, level by level.
                        let mut parent = top.clone();
                        for part in self.rel.components() {
                            let child = parent.join(part);
                            for f in ["cpuset.cpus", "cpuset.mems"] {
                                let cur = read(&child.join(f)).unwrap_or_default();
                                if cur.trim().is_empty() {
                                    let v = read(&parent.join(f)).unwrap_or_default();
                                    write(&child.join(f), v.trim())?;
                                }
                            }
                            parent = child;
                        }
                    }
                }
                self.apply_v1(r)?;
            }
            Hierarchy::V2 { root } => {
                let available = read(&root.join("cgroup.controllers")).unwrap_or_default();
                let enable: Vec<String> = V2_CONTROLLERS
                    .iter()
                    .filter(|c| available.split_whitespace().any(|a| a == **c))
                    .map(|c| format!("+{c}"))
                    .collect();
                let kiln = root.join("kiln");
                fs::create_dir_all(&kiln).map_err(|e| cg_err("creating", &kiln, e))?;
                for d in [root.as_path(), kiln.as_path()] {
                    let f = d.join("cgroup.subtree_control");
                    if !enable.is_empty() && write(&f, &enable.join(" ")).is_err() {
                        // One the kernel refuses (say cpu, with realtime tasks about) must
                        // not keep the others off; a limit that needs it fails below.
                        for c in &enable {
                            let _ = write(&f, c);
                        }
                    }
                }
                let dir = root.join(&self.rel);
                fs::create_dir_all(&dir).map_err(|e| cg_err("creating", &dir, e))?;
                self.apply_v2(r)?;
            }
        }
        self.thaw()
    }

    fn apply_v1(&self, r: &Resources) -> Result<()> {
        if let Some(d) = self.dir_of("devices") {
            // Deny everything, then allow Docker's list (a v1 child can only narrow).
            write(&d.join("devices.deny"), "a")?;
            for rule in device_rules() {
                write(&d.join("devices.allow"), &rule)?;
            }
        }
        if let Some(d) = self.dir_of("memory") {
            if r.memory > 0 {
                write(&d.join("memory.limit_in_bytes"), &r.memory.to_string())?;
                // Docker: swap defaults to as much as the memory (memory+swap = twice it).
                let memsw = match r.memory_swap {
                    0 => r.memory * 2,
                    v => v,
                };
                let f = d.join("memory.memsw.limit_in_bytes");
                if f.exists() {
                    write(&f, &memsw.to_string())?;
                }
            }
        }
        if let Some(d) = self.dir_of("cpu") {
            if r.nano_cpus > 0 {
                write(&d.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                let quota = r.nano_cpus * CFS_PERIOD_US / 1_000_000_000;
                write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
            if r.cpu_shares > 0 {
                write(&d.join("cpu.shares"), &r.cpu_shares.to_string())?;
            }
        }
        if let Some(d) = self.dir_of("cpuset") {
            if !r.cpuset_cpus.is_empty() {
                write(&d.join("cpuset.cpus"), &r.cpuset_cpus)?;
            }
        }
        if let Some(d) = self.dir_of("pids") {
            if r.pids_limit > 0 {
                write(&d.join("pids.max"), &r.pids_limit.to_string())?;
            }
        }
        self.check_v1(r)
    }

    /// A limit asked for whose controller the host lacks is an error, not a silent no-op.
    fn check_v1(&self, r: &Resources) -> Result<()> {
        let need = [
            ("memory", r.memory > 0),
            ("cpu", r.nano_cpus > 0 || r.cpu_shares > 0),
            ("cpuset", !r.cpuset_cpus.is_empty()),
            ("pids", r.pids_limit > 0),
        ];
        for (c, wanted) in need {
            if wanted && self.dir_of(c).is_none() {
                return Err(ContainerError::Other(format!(
                    "cgroup: the {c} controller is not mounted under {HOST_ROOT}"
                )));
            }
        }
        Ok(())
    }

    fn apply_v2(&self, r: &Resources) -> Result<()> {
        let Hierarchy::V2 { root } = &self.hierarchy else {
            return Ok(());
        };
        let d = root.join(&self.rel);
        let need = |file: &str| -> Result<PathBuf> {
            let p = d.join(file);
            if p.exists() {
                Ok(p)
            } else {
                Err(ContainerError::Other(format!(
                    "cgroup: {} is missing (is its controller enabled in {}?)",
                    p.display(),
                    root.join("cgroup.subtree_control").display()
                )))
            }
        };
        if r.memory > 0 {
            write(&need("memory.max")?, &r.memory.to_string())?;
            let swap = match r.memory_swap {
                -1 => "max".to_string(),
                0 => r.memory.to_string(),
                v => (v - r.memory).to_string(),
            };
            let f = d.join("memory.swap.max");
            if f.exists() {
                write(&f, &swap)?;
            }
        }
        if r.nano_cpus > 0 {
            let quota = r.nano_cpus * CFS_PERIOD_US / 1_000_000_000;
            write(&need("cpu.max")?, &format!("{quota} {CFS_PERIOD_US}"))?;
        }
        if r.cpu_shares > 0 {
            // runc's conversion of v1 shares [2, 262144] to v2 weight [1, 10000].
            let shares = r.cpu_shares.clamp(2, 262_144);
            let weight = 1 + ((shares - 2) * 9999) / 262_142;
            write(&need("cpu.weight")?, &weight.to_string())?;
        }
        if !r.cpuset_cpus.is_empty() {
            write(&need("cpuset.cpus")?, &r.cpuset_cpus)?;
        }
        if r.pids_limit > 0 {
            write(&need("pids.max")?, &r.pids_limit.to_string())?;
        }
        Ok(())
    }

    /// Moves process `pid` (and its threads) into the cgroup.
    pub fn add(&self, pid: libc::pid_t) -> Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup.
    pub fn procs(&self) -> Vec<libc::pid_t> {
        let d = self
            .dir_of("pids")
            .or_else(|| self.dirs().into_iter().next());
        let mut pids: Vec<libc::pid_t> = d
            .and_then(|d| read(&d.join("cgroup.procs")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// How many times the kernel's OOM killer has killed a process in the cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match &self.hierarchy {
            Hierarchy::V1 { .. } => ("memory.oom_control", "oom_kill"),
            Hierarchy::V2 { .. } => ("memory.events", "oom_kill"),
        };
        self.dir_of("memory")
            .and_then(|d| read(&d.join(file)))
            .and_then(|t| keyed(&t, key))
            .unwrap_or(0)
    }

    fn freezer_file(&self) -> Option<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1 { .. } => self.dir_of("freezer").map(|d| d.join("freezer.state")),
            Hierarchy::V2 { root } => Some(root.join(&self.rel).join("cgroup.freeze")),
        }
    }

    /// Whether the cgroup is frozen (or freezing).
    pub fn is_frozen(&self) -> bool {
        let Some(f) = self.freezer_file() else {
            return false;
        };
        matches!(
            read(&f).as_deref().map(str::trim),
            Some("FROZEN") | Some("FREEZING") | Some("1")
        )
    }

    /// Freezes every process in the cgroup (`docker pause`); returns once they are.
    pub fn freeze(&self) -> Result<()> {
        let f = self.freezer_file().ok_or_else(|| {
            ContainerError::Other("cgroup: the freezer controller is not mounted".into())
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        match &self.hierarchy {
            Hierarchy::V1 { .. } => loop {
                write(&f, "FROZEN")?;
                if read(&f).is_some_and(|s| s.trim() == "FROZEN") {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = self.thaw();
                    return Err(ContainerError::Other(format!(
                        "cgroup: {} did not reach FROZEN",
                        f.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            },
            Hierarchy::V2 { root } => {
                write(&f, "1")?;
                let events = root.join(&self.rel).join("cgroup.events");
                loop {
                    if read(&events).and_then(|t| keyed(&t, "frozen")) == Some(1) {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        let _ = self.thaw();
                        return Err(ContainerError::Other(format!(
                            "cgroup: {} never said frozen",
                            events.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Thaws the cgroup (`docker unpause`); a cgroup that is not frozen is left alone.
    pub fn thaw(&self) -> Result<()> {
        let Some(f) = self.freezer_file() else {
            return Ok(());
        };
        if !f.exists() || !self.is_frozen() {
            return Ok(());
        }
        match &self.hierarchy {
            Hierarchy::V1 { .. } => write(&f, "THAWED"),
            Hierarchy::V2 { .. } => write(&f, "0"),
        }
    }

    /// Usage figures.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        let v2 = matches!(self.hierarchy, Hierarchy::V2 { .. });
        if v2 {
            let d = self.dirs().remove(0);
            u.cpu_ns = read(&d.join("cpu.stat"))
                .and_then(|t| keyed(&t, "usage_usec"))
                .unwrap_or(0)
                * 1000;
            let inactive = read(&d.join("memory.stat"))
                .and_then(|t| keyed(&t, "inactive_file"))
                .unwrap_or(0);
            u.memory = read_u64(&d.join("memory.current"))
                .unwrap_or(0)
                .saturating_sub(inactive);
            u.memory_limit = read_u64(&d.join("memory.max"));
            u.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
            for l in read(&d.join("io.stat")).unwrap_or_default().lines() {
                for field in l.split_whitespace().skip(1) {
                    match field.split_once('=') {
                        Some(("rbytes", v)) => u.block_read += v.parse::<u64>().unwrap_or(0),
                        Some(("wbytes", v)) => u.block_write += v.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            return u;
        }
        if let Some(d) = self.dir_of("cpuacct") {
            u.cpu_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
        }
        if let Some(d) = self.dir_of("memory") {
            let inactive = read(&d.join("memory.stat"))
                .and_then(|t| keyed(&t, "total_inactive_file"))
                .unwrap_or(0);
            u.memory = read_u64(&d.join("memory.usage_in_bytes"))
                .unwrap_or(0)
                .saturating_sub(inactive);
            // v1 says "unlimited" with a huge number (a page-rounded i64::MAX).
            u.memory_limit = read_u64(&d.join("memory.limit_in_bytes")).filter(|&l| l < 1 << 62);
        }
        if let Some(d) = self.dir_of("pids") {
            u.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        }
        if let Some(d) = self.dir_of("blkio") {
            for f in [
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ] {
                let Some(t) = read(&d.join(f)) else { continue };
                for l in t.lines() {
                    let parts: Vec<&str> = l.split_whitespace().collect();
                    if let [_, op, n] = parts.as_slice() {
                        let n: u64 = n.parse().unwrap_or(0);
                        match *op {
                            "Read" => u.block_read += n,
                            "Write" => u.block_write += n,
                            _ => {}
                        }
                    }
                }
                break;
            }
        }
        u
    }

    /// Removes the cgroup: thaws it, kills what is left in it and removes its directories.
    pub fn remove(&self) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let _ = self.thaw();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for pid in self.procs() {
                // SAFETY: kill with integer arguments; these are the container's processes.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let mut busy = None;
            for d in self.dirs() {
                match fs::remove_dir(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => busy = Some((d, e)),
                }
            }
            match busy {
                None => return Ok(()),
                Some((d, e)) if Instant::now() > deadline => {
                    return Err(cg_err("removing", &d, e));
                }
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1(root: &Path) {
        for c in V1_CONTROLLERS {
            fs::create_dir_all(root.join(c)).expect("mkdir");
            fs::write(root.join(c).join("cgroup.procs"), "").expect("write");
        }
        fs::write(root.join("cpuset/cpuset.cpus"), "0-3\n").expect("write");
        fs::write(root.join("cpuset/cpuset.mems"), "0\n").expect("write");
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sizes_and_cpus_parse_like_docker() {
        assert_eq!(parse_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("512kb"), Some(512 << 10));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("64x"), None);
        assert_eq!(parse_bytes("-1m"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_cpus("1.5"), Some(1_500_000_000));
        assert_eq!(parse_cpus("0.01"), Some(10_000_000));
        assert_eq!(parse_cpus("abc"), None);
        assert_eq!(parse_cpu_list("0-2,4"), Some(vec![0, 1, 2, 4]));
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn validation_follows_docker() {
        let ok = Resources {
            memory: 64 << 20,
            memory_swap: 128 << 20,
            nano_cpus: 500_000_000,
            cpuset_cpus: "0-1".into(),
            ..Default::default()
        };
        ok.validate(2, "0-1").expect("valid");
        // Unlimited swap alone is allowed (Docker checks only a positive --memory-swap).
        Resources {
            memory_swap: -1,
            ..Default::default()
        }
        .validate(2, "0-1")
        .expect("valid");
        let err = |r: Resources| r.validate(2, "0-1").expect_err("invalid").to_string();
        assert!(err(Resources {
            memory: 1 << 20,
            ..Default::default()
        })
        .contains("Minimum memory limit allowed is 6MB"));
        assert!(err(Resources {
            memory_swap: 1 << 30,
            ..Default::default()
        })
        .contains("always set the Memory limit"));
        assert!(err(Resources {
            memory: 64 << 20,
            memory_swap: 32 << 20,
            ..Default::default()
        })
        .contains("larger than memory limit"));
        assert!(err(Resources {
            nano_cpus: 3_000_000_000,
            ..Default::default()
        })
        .contains("Range of CPUs is from 0.01 to 2.00"));
        assert!(err(Resources {
            cpuset_cpus: "0,5".into(),
            ..Default::default()
        })
        .contains("Requested CPUs are not available - requested 0,5, available: 0-1"));
        assert!(err(Resources {
            cpuset_cpus: "x".into(),
            ..Default::default()
        })
        .contains("Invalid value x for cpuset cpus"));
    }

    #[test]
    fn v1_layout_gets_limits_in_each_controller() {
        let t = tempfile::tempdir().expect("tempdir");
        fake_v1(t.path());
        // The hybrid host's unified/ hierarchy (no controllers) is not mistaken for v2.
        fs::create_dir_all(t.path().join("unified")).expect("mkdir");
        let h = Hierarchy::detect(t.path()).expect("detected");
        assert!(matches!(h, Hierarchy::V1 { .. }));
        assert_eq!(h.online_cpus(), "0-3");
        let cg = Cgroup::new(h, ID).expect("cgroup");
        // The kernel creates a cgroup's files with its directory; a fake must write them.
        let d = |c: &str| t.path().join(c).join("kiln").join(ID);
        fs::create_dir_all(d("memory")).expect("mkdir");
        fs::write(d("memory").join("memory.memsw.limit_in_bytes"), "").expect("write");
        fs::create_dir_all(d("freezer")).expect("mkdir");
        fs::write(d("freezer").join("freezer.state"), "THAWED\n").expect("write");
        let r = Resources {
            memory: 64 << 20,
            nano_cpus: 1_500_000_000,
            cpu_shares: 512,
            pids_limit: 10,
            cpuset_cpus: "1".into(),
            ..Default::default()
        };
        cg.create(&r).expect("create");
        let rd = |c: &str, f: &str| fs::read_to_string(d(c).join(f)).expect("read");
        assert_eq!(
            rd("memory", "memory.limit_in_bytes"),
            (64 << 20).to_string()
        );
        assert_eq!(
            rd("memory", "memory.memsw.limit_in_bytes"),
            (128 << 20).to_string()
        );
        assert_eq!(rd("cpu", "cpu.cfs_quota_us"), "150000");
        assert_eq!(rd("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(rd("cpu", "cpu.shares"), "512");
        assert_eq!(rd("pids", "pids.max"), "10");
        assert_eq!(rd("cpuset", "cpuset.cpus"), "1");
        assert_eq!(rd("cpuset", "cpuset.mems"), "0");
        // Docker's device list: everything denied, then (the fake file keeps the last write)
        // its allow rules. Broke: containers had no device cgroup.
        assert_eq!(rd("devices", "devices.deny"), "a");
        assert_eq!(rd("devices", "devices.allow"), "c 10:200 rwm");
        assert_eq!(device_rules().len(), 12);
        assert!(device_rules().contains(&"c 136:* rwm".to_string()));
        assert_eq!(
            fs::read_to_string(t.path().join("cpuset/kiln/cpuset.cpus")).expect("read"),
            "0-3"
        );
        cg.add(42).expect("add");
        assert_eq!(rd("freezer", "cgroup.procs"), "42");
        fs::write(d("pids").join("cgroup.procs"), "42\n7\n").expect("write");
        assert_eq!(cg.procs(), vec![7, 42]);
        fs::write(
            d("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("write");
        assert_eq!(cg.oom_kills(), 2);
        assert!(!cg.is_frozen());
        fs::write(d("freezer").join("freezer.state"), "FROZEN\n").expect("write");
        assert!(cg.is_frozen());
        cg.thaw().expect("thaw");
        assert_eq!(rd("freezer", "freezer.state"), "THAWED");
    }

    #[test]
    fn v2_layout_enables_controllers_and_converts_values() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("w");
        let h = Hierarchy::detect(root).expect("detected");
        assert_eq!(
            h,
            Hierarchy::V2 {
                root: root.to_path_buf()
            }
        );
        let cg = Cgroup::new(h, ID).expect("cgroup");
        let d = root.join("kiln").join(ID);
        fs::create_dir_all(&d).expect("mkdir");
        for f in [
            "memory.max",
            "memory.swap.max",
            "cpu.max",
            "cpu.weight",
            "pids.max",
            "cpuset.cpus",
        ] {
            fs::write(d.join(f), "").expect("write");
        }
        let r = Resources {
            memory: 64 << 20,
            memory_swap: 96 << 20,
            nano_cpus: 500_000_000,
            cpu_shares: 1024,
            pids_limit: 10,
            ..Default::default()
        };
        cg.create(&r).expect("create");
        let rd = |f: &str| fs::read_to_string(d.join(f)).expect("read");
        assert_eq!(
            rd("../../cgroup.subtree_control"),
            "+cpu +cpuset +io +memory +pids"
        );
        assert_eq!(
            rd("../cgroup.subtree_control"),
            "+cpu +cpuset +io +memory +pids"
        );
        assert_eq!(rd("memory.max"), (64 << 20).to_string());
        assert_eq!(rd("memory.swap.max"), (32 << 20).to_string());
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(rd("cpu.weight"), "39");
        assert_eq!(rd("pids.max"), "10");
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("w");
        assert_eq!(cg.oom_kills(), 1);
        fs::write(d.join("cgroup.freeze"), "1\n").expect("w");
        assert!(cg.is_frozen());
        cg.thaw().expect("thaw");
        assert_eq!(rd("cgroup.freeze"), "0");
        fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").expect("w");
        fs::write(d.join("memory.current"), "10000\n").expect("w");
        fs::write(d.join("memory.stat"), "anon 5000\ninactive_file 4000\n").expect("w");
        fs::write(d.join("memory.max"), "max\n").expect("w");
        fs::write(d.join("pids.current"), "3\n").expect("w");
        fs::write(
            d.join("io.stat"),
            "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n",
        )
        .expect("w");
        assert_eq!(
            cg.usage(),
            Usage {
                cpu_ns: 1_500_000,
                memory: 6000,
                memory_limit: None,
                pids: 3,
                block_read: 100,
                block_write: 20,
            }
        );
    }

    #[test]
    fn rootless_limits_go_to_the_topmost_delegated_cgroup() {
        let t = tempfile::tempdir().expect("tempdir");
        let user = t
            .path()
            .join("user.slice/user-1000.slice/user@1000.service");
        fs::create_dir_all(user.join("app.slice/kiln.scope")).expect("mkdir");
        fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").expect("write");
        let own = "/user.slice/user-1000.slice/user@1000.service/app.slice/kiln.scope";
        let delegated_to = user.clone();
        let writable = move |p: &Path| p.starts_with(&delegated_to);
        match delegated(t.path(), own, &writable) {
            Ok(Hierarchy::V2 { root }) => assert_eq!(root, user),
            other => panic!("{other:?}"),
        }
        let e = delegated(t.path(), own, &|_| false).expect_err("nothing writable");
        assert!(e.contains("not writable by the user"), "{e}");
        assert!(e.contains("kiln.scope"), "{e}");
        // A hybrid host (this one's layout): v1 controllers, an empty v2 hierarchy.
        let h = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(h.path().join("unified")).expect("mkdir");
        fs::write(h.path().join("unified/cgroup.controllers"), "").expect("write");
        let e = delegated(h.path(), "/", &|_| true).expect_err("v1");
        assert!(e.starts_with("this host has cgroup v1"), "{e}");
        assert_eq!(unified_path("1:cpu:/\n0::/a/b\n"), Some("/a/b"));
    }

    #[test]
    fn ids_cannot_leave_the_kiln_cgroup() {
        let h = Hierarchy::V2 {
            root: PathBuf::from("/nonexistent"),
        };
        assert!(Cgroup::new(h.clone(), "../../x").is_err());
        assert!(Cgroup::new(h, "").is_err());
    }
}
