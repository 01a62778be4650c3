//! Runs one build step's command in a fresh container over an overlay snapshot of its
//! parent's layers, and reports what it changed.
//!
//! # Process model
//!
//! No runc and no re-exec of kiln. [`run_step`] prepares everything in the parent — the mount
//! plan, C strings, argv/envp arrays, the seccomp program, pipes — then makes one raw
//! `clone(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC [| CLONE_NEWNET] |
//! CLONE_PIDFD)` (`CLONE_NEWNET` unless [`NetworkMode::Host`] or a pooled namespace to join,
//! [`StepSpec::netns`]). The child is PID 1 of the new PID namespace and becomes the step's
//! command:
//! **the command itself is PID 1**, as with BuildKit's RUN and `docker run` without
//! `--init`. When it exits the kernel kills everything else in the namespace, so no process
//! of a step outlives it.
//!
//! Between clone and exec the child runs only async-signal-safe code ([`setup`], through the
//! [`kernel::Kernel`] seam): the parent may be multithreaded (rayon, the test harness), and a
//! lock another thread held at clone time (malloc's) stays locked in the child forever.
//!
//! 1. close the parent's pipe ends, `PR_SET_PDEATHSIG(SIGKILL)`, `setsid`, reset signals,
//!    wire stdio;
//! 2. join the pooled network namespace if given (`setns`, first: a sysfs mounted later
//!    shows the devices of the mounter's network namespace), apply the mount plan
//!    ([`plan`]): make mounts private, mount the overlay, then `/proc`,
//!    `/dev` (tmpfs with host device nodes bound in, devpts, shm, mqueue), `/sys`, masks,
//!    read-only paths, `/etc/hosts|hostname|resolv.conf`, extra binds — every target opened
//!    with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and mounted through its fd;
//!    `pivot_root`, detach the old root, set the hostname, bring `lo` up;
//! 3. report "ready" and wait. The parent now reads `/etc/passwd` and `/etc/group` and creates
//!    a missing WORKDIR through `/proc/<pid>/root` with `RESOLVE_IN_ROOT` (allocation is fine
//!    in the parent), connects a new network namespace to [`pasta`] ([`NetworkMode::Sandbox`]
//!    without a pooled one),
//!    and sends uid, gid, groups and HOME in a fixed-size record;
//! 4. drop the bounding set to Docker's 14 capabilities, install the seccomp filter
//!    ([`seccomp`]), `setgroups`/`setresgid`/`setresuid`, `capset`, re-arm the death signal,
//!    enter the workdir (`RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so `WORKDIR
//!    /proc/self/fd/N` fails, CVE-2024-21626 shape), look the command up in `$PATH`, mark
//!    every fd above 2 close-on-exec;
//! 5. `execveat` the sealed exec trampoline ([`trampoline`]), which execs the command.
//!
//! # CVE-2019-5736
//!
//! Until it execs, the child's `/proc/self/exe` is the host's kiln binary. The child never
//! execs a path from the image itself: it execs the trampoline from a sealed memfd, and only
//! the trampoline execs the command. A `#!/proc/self/exe` script, a `RUN ["/proc/self/exe"]`
//! or a `PT_INTERP` naming it therefore reaches the immutable memfd, never kiln's binary. See
//! [`trampoline`] for the details.
//!
//! # Root filesystem
//!
//! The root is an overlay: `lowerdir=i:0:1:…` (the init layer, then the given lowers,
//! top-most first), `upperdir`, `workdir`, mounted `nodev` inside the child's private mount
//! namespace only — nothing is ever mounted in the host's namespace, and the overlay goes
//! away with the namespace's last process. Layers are named by one-character symlinks in the
//! step's scratch dir and the child `chdir`s there first, so the mount options stay under the
//! 4096-byte page limit with up to overlayfs's 500 layers.
//!
//! The *init layer* (Docker's idea) is a small directory on top of the lowers holding only
//! the mount targets the image lacks (`/proc`, `/dev`, `/sys`, `/etc/hosts`, …), so creating
//! them never writes to the upper dir. Mount targets that are symlinks in the image are
//! refused (CVE-2019-19921); a symlinked `/etc/hosts`, `/etc/hostname` or
//! `/etc/resolv.conf` is shadowed by a plain file in the init layer instead, as Docker does.
//! Those three files are bound from files generated in the scratch dir: a step writing them
//! in place writes the scratch copy, which is discarded — like Docker, such edits never reach
//! the layer; replacing them (`mv`) fails with EBUSY.
//!
//! If the overlay cannot be mounted (say, the store is itself on overlayfs) the executor warns
//! once and falls back to a copied root ([`copyroot`]), writing the step's changes into the
//! upper dir in overlay's format afterwards; [`upper_changes`] reads both the same way.
//!
//! # Cleanup
//!
//! The child dies with kiln (`PR_SET_PDEATHSIG`, re-armed after the uid change; it fires when
//! the *thread* that called [`run_step`] exits, and that thread blocks until the step is
//! over). On error, cancellation ([`StepSpec::cancel`]) or a kiln panic, a guard SIGKILLs the
//! namespace's PID 1 through its pidfd and reaps it. Mounts exist only in the step's mount
//! namespace. Every step gets a new uniquely named scratch dir, so a stale one from a killed
//! kiln never blocks a run; [`remove_step_dir`] and [`clean_scratch`] remove them.
//!
//! # Terminals and exec
//!
//! With [`StepIo::console`] the command gets a terminal as runc gives one: after the
//! container's devpts is mounted, the parent opens its `ptmx` through `/proc/<pid>/root`
//! (resolved inside the root), takes the peer with `TIOCGPTPEER`, and passes the slave over
//! the handshake socket (`SCM_RIGHTS`); the child makes it fds 0–2 and its controlling
//! terminal. The command sees `/dev/pts/0`; the caller gets the master. [`exec_in`] runs a
//! command inside a running container by joining its namespaces (PID through the calling
//! thread's `pid_for_children`, the rest in the child) with the same security defaults.
//!
//! # Devices
//!
//! A step has no device cgroup (containers get Docker's, see `container::cgroups`, where the
//! host has the v1 controller), so a node it mknods must not open: every mount it gets is
//! `nodev` — the root, `/dev`, `/dev/shm`, `--tmpfs`, and every bind (volumes, `RUN --mount`
//! dirs, `/etc/hosts`…) is remounted `nodev` keeping its source mount's flags — except the
//! host's own `/dev/null`, `/dev/zero`… bound in, and devpts. On top of that, a build step
//! cannot even make a block device or a character device outside Docker's list
//! ([`seccomp`], [`StepSpec::mknod_any`]).
//!
//! Not covered (yet): cgroups for steps (no resource limits), user namespaces,
//! AppArmor/SELinux labels, and a `setuid` PID 1 loses the parent-death signal (the kernel
//! clears it on exec of set-id binaries).

pub mod binfmt;
pub mod changes;
pub mod copyroot;
mod error;
pub mod init;
pub mod isolation;
pub mod kernel;
pub mod layers;
pub mod notify;
pub mod pasta;
pub mod plan;
mod rebase;
pub mod rlimit;
mod run;
pub mod seccomp;
pub mod setup;
mod stepdir;
pub mod trampoline;
pub mod unpriv;
pub mod user;

#[cfg(test)]
mod tests;

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use changes::{upper_changes, Change, ChangeKind};
pub use error::ExecError;
pub use kernel::{Kernel, RealKernel};
pub use run::{exec_in, run_step};
pub(crate) use stepdir::link_lowers;
pub use stepdir::{clean_scratch, clean_workdir, remove_step_dir};

/// Docker's default `PATH`, used when the step's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's 14 default capabilities as a bit mask: CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
/// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE,
/// SETFCAP.
pub const DEFAULT_CAPS: u64 = 0x0000_0000_a804_25fb;

/// Docker's default device cgroup allow-list (runc's), besides making any node (`m`): the
/// character devices a container may open, `(major, minor)`, `None` for every minor —
/// null, zero, full, random, urandom, tty, console, ptmx, the pts, tun.
pub const DEFAULT_DEVICES: &[(u32, Option<u32>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
    (10, Some(200)),
];

/// The network a step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A new network namespace of its own, with outbound TCP/UDP through [`pasta`] and DNS
    /// through pasta's forwarder, and no route to the host's loopback (as Docker's builder,
    /// whose steps get "connection refused" from a service on the host's 127.0.0.1). Fails
    /// the step if pasta is not installed.
    #[default]
    Sandbox,
    /// The host's network namespace: everything the host reaches, its loopback included.
    Host,
    /// A new network namespace with only `lo`, up.
    None,
}

/// How the root filesystem is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// Overlayfs, falling back to a copy if it cannot be mounted.
    #[default]
    Auto,
    /// Always copy (slow; for filesystems overlayfs cannot use, and for tests).
    Copy,
}

/// How the root was actually made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshot {
    /// An overlay mount.
    Overlay,
    /// A copied root, diffed into the upper dir after the step.
    Copy,
}

/// Where the step's writes go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RwLayer {
    /// `upper/` and `work/` inside the step's scratch dir.
    #[default]
    InScratch,
    /// Given dirs on the same filesystem (overlay's requirement).
    Dirs {
        /// The upper dir: receives the step's changes.
        upper: PathBuf,
        /// Overlay's work dir.
        work: PathBuf,
    },
}

/// An extra bind mount into the step's root (for `RUN --mount` later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path (file or directory).
    pub source: PathBuf,
    /// Absolute path inside the image.
    pub target: String,
    /// Mount read-only.
    pub readonly: bool,
}

/// Everything that defines one step's run.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Read-only lower dirs (image layer snapshots), top-most first.
    pub lowers: Vec<PathBuf>,
    /// Where the step's writes go.
    pub rw: RwLayer,
    /// A directory the executor may use; each step makes a `step-<id>` dir inside it.
    pub scratch: PathBuf,
    /// The command; the caller composes the SHELL form (`["/bin/sh", "-c", "…"]`).
    pub argv: Vec<String>,
    /// Environment, `KEY=value`. `PATH`, `HOSTNAME` and `HOME` are added when missing.
    pub env: Vec<String>,
    /// Working directory inside the image; created if missing.
    pub workdir: String,
    /// `USER`: `name[:group]` or `uid[:gid]`; empty for root.
    pub user: String,
    /// Hostname; `None`: the first 12 characters of the container id.
    pub hostname: Option<String>,
    /// Network.
    pub network: NetworkMode,
    /// With [`NetworkMode::Sandbox`]: a network namespace already connected (an open
    /// `/proc/<pid>/ns/net`, as a [`pasta::NetPool`] lends), which the step joins instead of
    /// getting a new one and a pasta of its own. The caller must not let another step join
    /// it before this one's processes are gone ([`run_step`] returns after that).
    pub netns: Option<Arc<std::os::fd::OwnedFd>>,
    /// Extra bind mounts.
    pub binds: Vec<BindMount>,
    /// Root filesystem strategy.
    pub rootfs: RootfsMode,
    /// Set to `true` (from a signal handler, another thread) to kill the step.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Run the command under kiln's minimal init (`docker run --init`), see [`init`].
    pub init: bool,
    /// `--read-only`: the root filesystem is mounted read-only (mounts on it stay as they are).
    pub readonly_root: bool,
    /// `--tmpfs`: `(absolute path inside, mount options)` for tmpfs mounts.
    pub tmpfs: Vec<(String, String)>,
    /// `--add-host`: `(name, address)` lines added to `/etc/hosts`.
    pub extra_hosts: Vec<(String, String)>,
    /// Let the command mknod any device node, as `docker run` does (its device cgroup,
    /// where there is one, and `nodev` on every mount refuse opening them). Off (a build
    /// step, as BuildKit's RUN): mknod of a block device or of a character device outside
    /// [`DEFAULT_DEVICES`] fails with EPERM.
    pub mknod_any: bool,
    /// A build step, as BuildKit's RUN: no generated `/etc/hostname` and no `HOSTNAME`
    /// variable (Docker's containers have both), and the `/proc`, `/dev` and `/sys` mount
    /// points an image lacks are made in the step's layer (where runc makes them for
    /// BuildKit) rather than in the hidden init layer.
    pub build_step: bool,
    /// Bytes of `/dev/shm` (`--shm-size`); `None`: Docker's 64 MiB.
    pub shm_size: Option<u64>,
    /// Resource limits set on the process before its command starts (`--ulimit`); each
    /// at most kiln's own hard limit ([`rlimit::Ulimit::check`]).
    pub ulimits: Vec<rlimit::Ulimit>,
}

impl StepSpec {
    /// A spec with Docker's defaults: root, `/`, a network namespace of its own
    /// ([`NetworkMode::Sandbox`]), no extra env.
    pub fn new(lowers: Vec<PathBuf>, scratch: impl Into<PathBuf>, argv: Vec<String>) -> Self {
        StepSpec {
            lowers,
            rw: RwLayer::InScratch,
            scratch: scratch.into(),
            argv,
            env: Vec::new(),
            workdir: "/".into(),
            user: String::new(),
            hostname: None,
            network: NetworkMode::default(),
            netns: None,
            binds: Vec::new(),
            rootfs: RootfsMode::Auto,
            cancel: None,
            init: false,
            readonly_root: false,
            tmpfs: Vec::new(),
            extra_hosts: Vec::new(),
            mknod_any: false,
            build_step: false,
            shm_size: None,
            ulimits: Vec::new(),
        }
    }
}

/// Where the step's standard input comes from.
#[derive(Debug, Default)]
pub enum Input<'a> {
    /// `/dev/null` (Docker's RUN).
    #[default]
    Null,
    /// kiln's own stdin.
    Inherit,
    /// An open file or pipe.
    Fd(BorrowedFd<'a>),
}

/// Where one of the step's output streams goes.
#[derive(Default)]
pub enum Output<'a> {
    /// Discarded.
    #[default]
    Null,
    /// kiln's own stdout/stderr.
    Inherit,
    /// An open file or pipe.
    Fd(BorrowedFd<'a>),
    /// Streamed to a callback, one line at a time (without the newline; very long lines
    /// arrive in 64 KiB pieces).
    Lines(&'a mut dyn FnMut(&[u8])),
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Null => f.write_str("Null"),
            Output::Inherit => f.write_str("Inherit"),
            Output::Fd(fd) => write!(f, "Fd({fd:?})"),
            Output::Lines(_) => f.write_str("Lines(..)"),
        }
    }
}

/// See [`StepIo::on_start`].
pub type OnStart<'a> = dyn FnMut(libc::pid_t, BorrowedFd<'_>) + 'a;

/// The step's standard streams.
#[derive(Default)]
pub struct StepIo<'a> {
    /// Standard input.
    pub stdin: Input<'a>,
    /// Standard output.
    pub stdout: Output<'a>,
    /// Standard error.
    pub stderr: Output<'a>,
    /// Called once the command has been exec'd (its lookup and exec succeeded), with its PID
    /// (in kiln's namespace) and a pidfd for it (valid during the call; `dup` it to keep it).
    pub on_start: Option<&'a mut OnStart<'a>>,
    /// Called with the container's PID once its namespaces and root are set up, before the
    /// command runs (to configure its network, or place it in a cgroup, say). An error
    /// kills the container: the command never runs.
    pub on_ready: Option<&'a mut dyn FnMut(libc::pid_t) -> std::io::Result<()>>,
    /// Give the command a terminal (`docker run -t`): a pty from the container's own
    /// `/dev/pts` becomes its stdin, stdout, stderr and controlling terminal; the master end
    /// is handed to this callback before the command gets the terminal, so what the callback
    /// does to it (a window size) is in place when the command starts (the other streams are
    /// ignored).
    pub console: Option<&'a mut OnConsole<'a>>,
}

/// See [`StepIo::console`].
pub type OnConsole<'a> = dyn FnMut(std::os::fd::OwnedFd) + 'a;

impl std::fmt::Debug for StepIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepIo")
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("on_start", &self.on_start.is_some())
            .field("console", &self.console.is_some())
            .field("on_ready", &self.on_ready.is_some())
            .finish()
    }
}

/// How the step's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

/// The result of a step that ran.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// How the command ended.
    pub status: ExitStatus,
    /// The container's id (64 hex digits); the hostname defaults to its first 12.
    pub container_id: String,
    /// The upper dir holding the step's changes (read it with [`upper_changes`]).
    pub upper: PathBuf,
    /// Overlay's work dir.
    pub work: PathBuf,
    /// The step's scratch dir; remove it with [`remove_step_dir`] once the upper dir has been
    /// committed.
    pub step_dir: PathBuf,
    /// How the root was made.
    pub snapshot: Snapshot,
}
