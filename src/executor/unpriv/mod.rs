//! Runs a step where neither namespaces nor mounts are allowed (`docker run` with Docker's
//! default seccomp profile and capabilities, a Kubernetes pod's default security context):
//! a chroot over a copied root, confined by capabilities and kiln's seccomp filter.
//!
//! # What a step gets
//!
//! * **Root**: a copy of the layers ([`super::copyroot::build_root`]) in the step's scratch
//!   dir (0700). A stat index (inode, generation, ctime) is taken before the step; afterwards
//!   what changed is written into the upper dir in overlay's format, deletions as whiteouts
//!   ([`super::copyroot::diff_into_upper_tracking`]). No file of the store is shared with
//!   the step: snapshots are copied, never linked.
//! * **Stand-ins for the mounts** ([`root`]): `/dev`, `/proc` and `/sys` are fresh
//!   directories (the image's own moved aside and put back after the step), `/dev` gets
//!   `null`, `zero`, `full`, `random`, `urandom` and `tty` made with `mknod` (kiln has
//!   `CAP_MKNOD` there), `/etc/hosts` and
//!   `/etc/resolv.conf` are written, and every `RUN --mount` (bind, cache, tmpfs, secret,
//!   ssh) becomes a copy of its source at its target. None of them reaches the layer: the
//!   diff skips `/dev`, `/proc` and `/sys`, those two files and every mount target.
//!   Writable mounts (caches) are copied back to their source after the step, under the
//!   lock the builder holds; then every stand-in is taken out again. `/proc` and missing
//!   `/dev` nodes come from the seccomp user-notification supervisor (`executor::notify`,
//!   started by [`spawn`]).
//! * **Reuse** ([`pool`]): a successful build step's root, stand-ins out, is kept for the
//!   next step whose lowers are this step's layer on the same chain, with the index the
//!   diff took. When kiln exits, the last parked roots are kept in the store ([`kept`]); a
//!   step with no parked root takes the kept one sharing the most layers with its own and
//!   has it moved onto its layers ([`super::rebase`]), copying only what differs. Only
//!   a step with neither gets a fresh copy.
//! * **Process** ([`spawn`]): `fork` (no namespace flags); in the child `chroot` into the
//!   copy, `PR_SET_NO_NEW_PRIVS`, drop every capability but CHOWN, DAC_OVERRIDE, FOWNER,
//!   FSETID, SETUID, SETGID, KILL and NET_BIND_SERVICE from all five sets, install
//!   [`super::seccomp::unprivileged_filter`] (no `chroot`, `ptrace`, `process_vm_*`,
//!   `mount`, `unshare`, `setns`, `bpf`, `perf_event_open`, `keyctl`, handles; no signal or
//!   scheduling call aimed at pid 1, every process, kiln or kiln's process group), switch to
//!   the step's user, enter the workdir, close every fd above 2, exec through the sealed
//!   trampoline. kiln itself is not dumpable in this mode ([`enable`]).
//! * **Network**: the host's (the container's) network: pasta needs a network namespace.
//!   `RUN --network=none` is a seccomp rule instead: only `AF_UNIX` sockets.
//! * **Processes**: the step is a session and process group of its own; when its first
//!   process exits the whole group is killed. A process that leaves the group (`setsid`)
//!   can outlive the step: there is no PID namespace to end it.

mod kept;
mod pool;
mod root;
mod spawn;

pub use pool::release as release_parked_roots;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::ExecError;
use super::stepdir::{self, StepDir};
use super::{copyroot, ExitStatus, NetworkMode, Snapshot, StepIo, StepOutcome, StepSpec};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The capabilities a step keeps (a root step; a non-root user gets none but the bounding
/// set): what Docker gives a container, minus what would open a way out of the chroot or into
/// another process (SYS_CHROOT, MKNOD, SETPCAP, SETFCAP, NET_RAW, AUDIT_WRITE).
/// (Bits: CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7,
/// NET_BIND_SERVICE 10.)
pub const STEP_CAPS: u64 =
    (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 10);

/// Switches this process's steps to the unprivileged mode, and makes kiln not dumpable
/// (`PR_SET_DUMPABLE 0`: no process of the same uid can ptrace it or open its `/proc`
/// files). Call it once, early, before any step.
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) };
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// [`super::run_step`] in the unprivileged mode.
pub(super) fn run_step(spec: &StepSpec, io: StepIo<'_>) -> Result<StepOutcome, ExecError> {
    let id = stepdir::new_id()?;
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let step = stepdir::prepare(spec, &id, &hostname)?;
    let result = run_prepared(spec, io, &id, &hostname, &step);
    // The copied root holds the step's secrets and mount copies: unless it was parked for
    // the next step (with them taken out), it goes in every case.
    let removed = match std::fs::symlink_metadata(&step.rootfs) {
        Ok(_) => stepdir::remove_step_dir(&step.rootfs),
        Err(_) => Ok(()),
    };
    if result.is_err() {
        let _ = stepdir::remove_step_dir(&step.dir);
    }
    let outcome = result?;
    removed?;
    Ok(outcome)
}

fn run_prepared(
    spec: &StepSpec,
    mut io: StepIo<'_>,
    id: &str,
    hostname: &str,
    step: &StepDir,
) -> Result<StepOutcome, ExecError> {
    let (key, carried) = reusable_root(spec, step)?;
    if carried.is_none() {
        let near = match (&key, beside(spec)?) {
            (Some(key), Some(beside)) => take_near(key, &step.rootfs, &beside),
            _ => false,
        };
        if near {
            set_root_owner(&step.rootfs, spec.lowers.first())?;
        } else {
            settle_fresh(build(step, spec)?);
        }
    }
    let standins = root::StandIns::place(&step.rootfs, step)?;
    let manifest = match carried {
        Some(mut index) => {
            standins.update_index(&step.rootfs, &mut index)?;
            index
        }
        None => copyroot::record(&step.rootfs)
            .map_err(|e| ExecError::io("reading copied root", &step.rootfs, e))?,
    };
    let root_fd = open_root(&step.rootfs)?;
    let since = pool::boot_ticks().saturating_sub(1);
    let status = spawn::run(spec, &mut io, hostname, &step.rootfs, root_fd.as_fd())?;
    drop(root_fd);
    standins.copy_back(&step.rootfs)?;
    let after = copyroot::diff_into_upper_tracking(&step.rootfs, &manifest, &step.upper, &|p| {
        standins.skips(p)
    })
    .map_err(|e| ExecError::io("diffing copied root", &step.rootfs, e))?;
    if let (Some(key), ExitStatus::Code(0)) = (key, status) {
        park(spec, step, (&standins, since), key, after)?;
    }
    Ok(StepOutcome {
        status,
        container_id: id.to_string(),
        upper: step.upper.clone(),
        work: step.work.clone(),
        step_dir: step.dir.clone(),
        snapshot: Snapshot::Copy,
    })
}

/// The key of the step's lowers when its root may be kept for the next step (a build step
/// whose upper dir starts empty), and the index of a parked root with that key, moved to
/// `step.rootfs`.
fn reusable_root(
    spec: &StepSpec,
    step: &StepDir,
) -> Result<(Option<pool::Key>, Option<copyroot::Manifest>), ExecError> {
    let empty = std::fs::read_dir(&step.upper).is_ok_and(|mut d| d.next().is_none());
    if !spec.build_step || !empty {
        return Ok((None, None));
    }
    let mut lowers = Vec::with_capacity(spec.lowers.len());
    for l in &spec.lowers {
        lowers.push(std::path::absolute(l).map_err(|e| ExecError::io("resolving", l, e))?);
    }
    let Ok(key) = pool::Key::of(&lowers) else {
        return Ok((None, None));
    };
    let carried = pool::take(&key, &step.rootfs);
    tracing::debug!(reused = carried.is_some(), "unprivileged step root");
    Ok((Some(key), carried))
}

/// After a step that succeeded: takes the stand-ins out and parks the root for the step
/// that will have this one's layer on top of `key` (or `key` itself, if it changed
/// nothing). A root still used by a process of the step, or whose stand-ins were not as
/// placed, is not kept.
fn park(
    spec: &StepSpec,
    step: &StepDir,
    (standins, since): (&root::StandIns, u64),
    key: pool::Key,
    mut index: copyroot::Manifest,
) -> Result<(), ExecError> {
    if pool::in_use(&step.rootfs, since) {
        tracing::debug!("not keeping the step's root: a process of the step is left");
        return Ok(());
    }
    if !standins.undo(&step.rootfs, &step.upper, &mut index)? {
        tracing::debug!("not keeping the step's root: its stand-ins were moved");
        return Ok(());
    }
    let changed = std::fs::read_dir(&step.upper).is_ok_and(|mut d| d.next().is_some());
    let next = if changed {
        key.with_top(&step.upper)
    } else {
        Ok(key)
    };
    let (Ok(next), Some(beside)) = (next, beside(spec)?) else {
        return Ok(());
    };
    if let Err(e) = pool::park(&step.rootfs, &beside, next, index) {
        tracing::debug!("not keeping the step's root: {e}");
    }
    Ok(())
}

/// Moves the parked or kept root that shares the most layers with `key` to `dest` and onto
/// `key`'s layers; `false` if there is none (`dest` does not exist then).
fn take_near(key: &pool::Key, dest: &Path, beside: &Path) -> bool {
    let kept = kept::best(key, beside);
    pool::take_nearest(key, dest, kept.as_ref().map(|k| k.0))
        || kept.is_some_and(|(_, c)| kept::take(c, key, dest))
}

/// After a fresh copy of `copied` entries: every entry has a recent ctime, so the index
/// would read each one's generation (an open and an ioctl); once the window has passed it
/// needs none.
fn settle_fresh(copied: usize) {
    if copied > GENERATIONS_UP_TO {
        std::thread::sleep(copyroot::RECENT + std::time::Duration::from_millis(5));
    }
}

/// A working root for kiln's own changes over a stack of layers (COPY, ADD, WORKDIR: the
/// view overlayfs gives them in the other modes). It is the root a step of this process
/// left parked for these layers, or one parked for others sharing layers with them, moved
/// onto them, or else a fresh copy. A root that was parked is parked again afterwards for
/// the next step: a RUN after a COPY then takes it instead of copying the whole image. It lives at the path given to
/// [`WorkRoot::obtain`], under the caller's scratch dir, until parked.
pub struct WorkRoot {
    path: PathBuf,
    key: Option<pool::Key>,
    index: copyroot::Manifest,
    beside: PathBuf,
    changed: bool,
    /// Taken from this process's roots. A fresh copy is not parked: the step after the
    /// change then takes a kept root (an earlier build's), which may hold much more of
    /// what it needs than a root of the layers below a COPY.
    parkable: bool,
}

impl WorkRoot {
    /// A root at `path` (which must not exist) showing `lowers` (top-most first); parked
    /// roots go under `beside` (the store's `tmp/`).
    pub fn obtain(lowers: &[PathBuf], path: &Path, beside: &Path) -> io::Result<WorkRoot> {
        let lowers = lowers
            .iter()
            .map(std::path::absolute)
            .collect::<io::Result<Vec<_>>>()?;
        let beside = std::path::absolute(beside)?;
        let key = pool::Key::of(&lowers).ok();
        let carried = key.as_ref().and_then(|k| pool::take(k, path));
        // Only roots of this process: a kept root (an earlier build's) is left for the steps.
        // Moved down onto a COPY's layers it would lose what the next step needs (after an
        // edit, `COPY . /app` + `RUN` rebases the kept root of the last build, which already
        // holds the unchanged files, onto the new COPY; a COPY written straight into its
        // layer needs no root but its layers below).
        let (index, fresh) = match carried {
            Some(index) => {
                tracing::debug!(root = "parked", "unprivileged working root for a change");
                (index, false)
            }
            None => {
                let near = key
                    .as_ref()
                    .is_some_and(|k| pool::take_nearest(k, path, None));
                if !near {
                    std::fs::create_dir(path)?;
                    settle_fresh(copyroot::build_root(&lowers, path)?);
                }
                set_root_owner(path, lowers.first()).map_err(io::Error::other)?;
                let how = if near { "moved" } else { "fresh" };
                tracing::debug!(root = how, "unprivileged working root for a change");
                (copyroot::record(path)?, !near)
            }
        };
        Ok(WorkRoot {
            path: path.to_path_buf(),
            key,
            index,
            beside,
            changed: false,
            parkable: !fresh,
        })
    }

    /// Where the root is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what changed in the root since it was obtained into `upper` (an empty
    /// directory), in overlay's format.
    pub fn diff_into(&mut self, upper: &Path) -> io::Result<()> {
        self.index =
            copyroot::diff_into_upper_tracking(&self.path, &self.index, upper, &|_| false)?;
        self.changed = std::fs::read_dir(upper)?.next().is_some();
        Ok(())
    }

    /// Parks the root for the step whose lowers are these layers with `upper` (the dir
    /// [`WorkRoot::diff_into`] wrote) committed on top, or these layers alone when nothing
    /// changed. `written_after`: more was written into `upper` since (a COPY written
    /// straight into its layer), which the root does not show: it is then parked only if
    /// it still shows the layers alone, and otherwise removed.
    pub fn park(self, upper: &Path, written_after: bool) {
        let key = match (self.key, self.changed, written_after) {
            _ if !self.parkable => Err(io::Error::other("a fresh copy is not kept")),
            (Some(k), false, _) => Ok(k),
            (Some(k), true, false) => k.with_top(upper),
            _ => Err(io::Error::other("the root does not show its layer")),
        };
        let parked = key.and_then(|k| pool::park(&self.path, &self.beside, k, self.index));
        if let Err(e) = parked {
            tracing::debug!("not keeping a working root: {e}");
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Where parked and kept roots go: beside the step's scratch dir (the store's `tmp/`).
fn beside(spec: &StepSpec) -> Result<Option<PathBuf>, ExecError> {
    spec.scratch
        .parent()
        .map(|b| std::path::absolute(b).map_err(|e| ExecError::io("resolving", b, e)))
        .transpose()
}

/// Up to how many entries a fresh copy's index reads every generation rather than wait
/// for [`copyroot::RECENT`] to pass (an open and an ioctl each, about 15 µs here).
const GENERATIONS_UP_TO: usize = 3000;

/// Copies the layers into `step.rootfs`: the step's stubs (the `/proc`, `/dev`, `/sys` an
/// image lacks, already in the upper dir, so in the layer), then the lowers. Mount targets
/// are the stand-ins' business ([`root::StandIns::place`]). Gives the number of entries
/// copied.
fn build(step: &StepDir, spec: &StepSpec) -> Result<usize, ExecError> {
    let mut layers: Vec<PathBuf> = vec![step.upper.clone()];
    for l in &spec.lowers {
        layers.push(std::path::absolute(l).map_err(|e| ExecError::io("resolving", l, e))?);
    }
    std::fs::create_dir(&step.rootfs)
        .map_err(|e| ExecError::io("creating root", &step.rootfs, e))?;
    let copied = copyroot::build_root(&layers, &step.rootfs)
        .map_err(|e| ExecError::io("copying layers", &step.rootfs, e))?;
    set_root_owner(&step.rootfs, spec.lowers.first())?;
    Ok(copied)
}

/// Gives the root dir `root` the owner and mode of the image's (its top layer's, `top`),
/// as overlay shows them.
fn set_root_owner(root: &Path, top: Option<&PathBuf>) -> Result<(), ExecError> {
    if let Some(top) = top {
        let m = std::fs::metadata(top).map_err(|e| ExecError::io("reading", top, e))?;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::os::unix::fs::chown(root, Some(m.uid()), Some(m.gid()))
            .and_then(|()| {
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            })
            .map_err(|e| ExecError::io("setting owner of", root, e))?;
    }
    Ok(())
}

fn open_root(root: &Path) -> Result<OwnedFd, ExecError> {
    std::fs::File::open(root)
        .map(OwnedFd::from)
        .map_err(|e| ExecError::io("opening copied root", root, e))
}

/// Whether a step in this mode may reach sockets of other address families than `AF_UNIX`.
pub(super) fn network_allowed(spec: &StepSpec) -> bool {
    spec.network != NetworkMode::None
}
