//! A shell inside one step of a build: the executor's sandbox as the build ran the step (its
//! environment, user, directory, network and mounts) over the step's recorded snapshot,
//! with a throwaway upper dir, so nothing the shell does reaches a layer or the cache.
//!
//! For a step that ended, the snapshot is the step's result. For a RUN whose command
//! failed, it is the layers below the step with the files the command left on top
//! ([`record`] keeps that upper dir, read-only from here on, until the next build ends).
//! Secrets and ssh agents are mounted only when the caller passes them (the user's
//! consent); their values are never recorded.

mod record;
mod recorder;

pub use record::{
    build_of_process, last_build, DebugRecord, EnvDiff, MountView, RecordedNetwork, StepStatus,
    StepView, RECORD_VERSION,
};
pub(crate) use recorder::{Recorder, RunView};

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::common::atomic::TempPath;
use crate::context::{Context, ContextError, IgnoreRules};
use crate::executor::{self, BindMount, ExecError, ExitStatus, StepIo, StepSpec};
use crate::rootfs::layers::FsError;
use crate::store::{Lease, Store, StoreError};

use super::mountsrc::{copy_out, MountSourceError};

/// Why a debug shell cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum DebugShellError {
    /// No build has ended in this store since it kept records.
    #[error("no build has been recorded in this store yet")]
    NoBuild,
    /// The record cannot be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The record is not one kiln wrote.
    #[error("{}: {reason}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The last build has no step with that number.
    #[error("the last build has no step #{0}")]
    NoStep(usize),
    /// The failed step's files were not kept, or are gone.
    #[error("the files step #{0} left are gone (they are kept until the next build ends)")]
    UpperGone(usize),
    /// The step's layers cannot be unpacked.
    #[error("step #{step}'s layers: {source}")]
    Layers {
        /// The step.
        step: usize,
        /// Why.
        #[source]
        source: FsError,
    },
    /// The store cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A `from=` mount's files cannot be copied out.
    #[error("mount at {target}: {source}")]
    MountSource {
        /// Where it goes.
        target: String,
        /// Why.
        #[source]
        source: MountSourceError,
    },
    /// A context mount's files cannot be read.
    #[error("mount at {target}: {source}")]
    Context {
        /// Where it goes.
        target: String,
        /// Why.
        #[source]
        source: ContextError,
    },
    /// A context mount's source is no longer in the context, or is a symlink now.
    #[error(
        "mount at {target}: {path:?} is not a file or directory of the build context any more"
    )]
    NotInContext {
        /// Where it goes.
        target: String,
        /// The path in the context.
        path: String,
    },
    /// A mount's directory or file cannot be made.
    #[error("mount at {target}: {}: {source}", path.display())]
    MountIo {
        /// Where it goes.
        target: String,
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox cannot run.
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// What the caller grants a shell beyond the step's record.
#[derive(Debug, Default)]
pub struct ShellOptions<'a> {
    /// Run this instead of the image's shell.
    pub command: Option<Vec<String>>,
    /// `--secret` values the user agreed to mount (`None`: secrets stay out).
    pub secrets: Option<&'a BTreeMap<String, Vec<u8>>>,
    /// `--ssh` agents the user agreed to mount (`None`: they stay out).
    pub ssh: Option<&'a BTreeMap<String, PathBuf>>,
    /// The build's `.dockerignore` rules, for context mounts (`None`: the context's own
    /// `.dockerignore`, read again).
    pub ignore: Option<&'a IgnoreRules>,
    /// The shell gets a terminal (`TERM` is set when the step has none).
    pub tty: bool,
    /// Set (by a signal handler) to kill the shell: a build's Ctrl-C flag.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// A step's sandbox, ready to run a shell; dropping it removes everything it made (the
/// throwaway upper dir, the mounts' copies) and releases the cache locks it holds.
pub struct Sandbox {
    spec: StepSpec,
    withheld: Vec<String>,
    // Dropped in this order: the locks, then the scratch files, then the lease.
    _locks: Vec<nix::fcntl::Flock<File>>,
    _scratch: TempPath,
    _lease: Lease,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("spec", &self.spec)
            .field("withheld", &self.withheld)
            .finish_non_exhaustive()
    }
}

/// The command a shell runs by default: the first word of the step's `SHELL` (`/bin/sh`).
pub fn default_shell(step: &StepView) -> Vec<String> {
    vec![step
        .shell
        .first()
        .cloned()
        .unwrap_or_else(|| "/bin/sh".to_string())]
}

impl Sandbox {
    /// Everything the shell needs: the snapshot's directories unpacked, the mounts made
    /// again (caches are the same directories; binds are fresh copies), the spec filled.
    pub fn prepare(
        store: &Store,
        record: &DebugRecord,
        step: &StepView,
        opts: &ShellOptions<'_>,
    ) -> Result<Sandbox, DebugShellError> {
        // No garbage collection removes the snapshots from under the shell.
        let lease = store.lease()?;
        let mut lowers = Vec::new();
        if matches!(step.status, StepStatus::Failed { .. }) {
            lowers.push(
                record
                    .kept_upper(step)
                    .ok_or(DebugShellError::UpperGone(step.id))?,
            );
        }
        lowers.extend(
            crate::rootfs::layers::lower_dirs(store, &step.layers).map_err(|source| {
                DebugShellError::Layers {
                    step: step.id,
                    source,
                }
            })?,
        );
        let scratch = crate::rootfs::layers::scratch_dir(store).map_err(|source| {
            DebugShellError::Layers {
                step: step.id,
                source,
            }
        })?;
        let made = make_mounts(store, step, scratch.path(), opts)?;
        let argv = opts.command.clone().unwrap_or_else(|| default_shell(step));
        let mut spec = StepSpec::new(lowers, scratch.path(), argv);
        spec.env = step.env.clone();
        if let Some(sock) = &made.ssh_sock {
            if !spec.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                spec.env.push(format!("SSH_AUTH_SOCK={sock}"));
            }
        }
        if opts.tty && !spec.env.iter().any(|e| e.starts_with("TERM=")) {
            spec.env.push("TERM=xterm".to_string());
        }
        spec.workdir = step.workdir.clone();
        spec.user = step.user.clone();
        spec.network = step.network.into();
        spec.extra_hosts = step.extra_hosts.clone();
        // As the build's RUN (see `runstep`): its hostname, no /etc/hostname, its devices.
        spec.hostname = Some("buildkitsandbox".to_string());
        spec.build_step = true;
        spec.binds = made.binds;
        spec.cancel = opts.cancel.clone();
        Ok(Sandbox {
            spec,
            withheld: made.withheld,
            _locks: made.locks,
            _scratch: scratch,
            _lease: lease,
        })
    }

    /// The mounts left out for want of consent or of a value (`secret s at /run/secrets/s`).
    pub fn withheld(&self) -> &[String] {
        &self.withheld
    }

    /// What the sandbox runs, and how (its lowers, mounts, environment).
    pub fn spec(&self) -> &StepSpec {
        &self.spec
    }

    /// Run the shell; returns how it ended.
    pub fn run(&self, io: StepIo<'_>) -> Result<ExitStatus, DebugShellError> {
        Ok(executor::run_step(&self.spec, io)?.status)
    }
}

/// The mounts as made for a shell.
#[derive(Default)]
struct Made {
    binds: Vec<BindMount>,
    locks: Vec<nix::fcntl::Flock<File>>,
    withheld: Vec<String>,
    ssh_sock: Option<String>,
}

/// Make each recorded mount again under `scratch`.
fn make_mounts(
    store: &Store,
    step: &StepView,
    scratch: &Path,
    opts: &ShellOptions<'_>,
) -> Result<Made, DebugShellError> {
    let mut made = Made::default();
    let mut scanned: BTreeMap<PathBuf, Context> = BTreeMap::new();
    for (i, m) in step.mounts.iter().enumerate() {
        let target = m.target().to_string();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            let target = target.clone();
            move |source| DebugShellError::MountIo {
                target,
                path,
                source,
            }
        };
        let bind = |source: PathBuf, readonly: bool| BindMount {
            source,
            target: target.clone(),
            readonly,
        };
        match m {
            MountView::Cache {
                readonly,
                dir,
                lock,
                ..
            } => {
                if let Some(lock) = lock {
                    let f = File::create(lock).map_err(io(lock))?;
                    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                        .map_err(|(_, e)| io(lock)(e.into()))?;
                    made.locks.push(held);
                }
                // A cache pruned since comes back empty, as the build would make it.
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                made.binds.push(bind(dir.clone(), *readonly));
            }
            MountView::Tmpfs { .. } => {
                let dir = scratch.join(format!("tmpfs-{i}"));
                std::fs::create_dir(&dir).map_err(io(&dir))?;
                made.binds.push(bind(dir, false));
            }
            MountView::From {
                readonly,
                layers,
                path,
                ..
            } => {
                let dst = scratch.join(format!("bind-{i}"));
                copy_out(store, layers, path, &dst).map_err(|source| {
                    DebugShellError::MountSource {
                        target: target.clone(),
                        source,
                    }
                })?;
                made.binds.push(bind(dst, *readonly));
            }
            MountView::Context {
                readonly,
                context,
                path,
                ..
            } => {
                let dst = scratch.join(format!("bind-{i}"));
                context_copy(&mut scanned, context, path, &target, &dst, opts.ignore)?;
                made.binds.push(bind(dst, *readonly));
            }
            MountView::Secret {
                id, mode, uid, gid, ..
            } => match opts.secrets.and_then(|s| s.get(id)) {
                Some(value) => {
                    let file = scratch.join(format!("secret-{i}"));
                    write_secret(&file, value, *mode, *uid, *gid).map_err(io(&file))?;
                    made.binds.push(bind(file, true));
                }
                None => made.withheld.push(format!("secret {id} at {target}")),
            },
            MountView::Ssh { id, .. } => match opts.ssh.and_then(|s| s.get(id)) {
                Some(sock) => {
                    made.ssh_sock.get_or_insert_with(|| target.clone());
                    made.binds.push(bind(sock.clone(), false));
                }
                None => made.withheld.push(format!("ssh agent {id} at {target}")),
            },
        }
    }
    Ok(made)
}

/// A context mount's private copy, made as the build makes it: from the files of the
/// context as scanned now (through no symlink), never a bind of the host directory.
fn context_copy(
    scanned: &mut BTreeMap<PathBuf, Context>,
    context: &Path,
    path: &str,
    target: &str,
    dst: &Path,
    ignore: Option<&IgnoreRules>,
) -> Result<(), DebugShellError> {
    let ctx_err = |source| DebugShellError::Context {
        target: target.to_string(),
        source,
    };
    if !scanned.contains_key(context) {
        let rules = match ignore {
            Some(r) => r.clone(),
            None => crate::context::files::load_ignore(context, None).map_err(ctx_err)?,
        };
        let ctx = Context::scan(context, &rules).map_err(ctx_err)?;
        scanned.insert(context.to_path_buf(), ctx);
    }
    let ctx = &scanned[context];
    match ctx.get(path).map(|e| e.kind) {
        None | Some(crate::context::Kind::Symlink) => Err(DebugShellError::NotInContext {
            target: target.to_string(),
            path: path.to_string(),
        }),
        Some(_) => ctx.tree(path).copy_to(dst).map_err(ctx_err),
    }
}

/// A secret's file, as the build writes it: created new, with its mode and owner.
fn write_secret(
    file: &Path,
    value: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(file)?;
    f.write_all(value)?;
    std::os::unix::fs::chown(file, uid, gid)
}
