//! `RUN --mount`: each typed mount turned into a bind for the executor, the part of the
//! step's key it decides, and the copies, locks and scratch files it needs while the step
//! runs.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::context::select::confine;
use crate::context::{self};
use crate::executor::BindMount;
use crate::planner::ops::{Mount, MountOp, MountType, Sharing};
use crate::planner::Location;

use super::copystep::FromRef;
use super::debugshell::MountView;
use super::error::MountError;
use super::mountsrc::Pending;
use super::{BuildError, Builder, StageResult};

/// What a `RUN --mount` turns into for one run: binds for the executor, what the cache key
/// needs, and the locks and scratch files to keep until the step is over.
#[derive(Default)]
pub(crate) struct MountSet {
    pub binds: Vec<BindMount>,
    pub key_parts: Vec<String>,
    /// `sharing=locked` caches, held until the step is over.
    pub locks: Vec<nix::fcntl::Flock<std::fs::File>>,
    /// The first ssh mount's target: the step's `SSH_AUTH_SOCK`.
    pub ssh_sock: Option<String>,
    /// Copies from other stages, made only when the step runs.
    pub pending: Vec<Pending>,
    /// Each mount as `kiln debug shell` makes it again (its record).
    pub views: Vec<MountView>,
}

/// One mount being prepared: its index among the step's mounts, its value as written, and
/// the typed mount.
struct Prepared<'a> {
    i: usize,
    raw: &'a str,
    m: Mount,
}

impl Builder<'_> {
    /// Prepare `RUN --mount` values: `bind` (from the context; read-only unless `rw`, writes
    /// discarded), `cache` (persistent per id under kiln's cache directory), `tmpfs` (an
    /// empty, discarded directory) and `secret` (from `--secret`, never in a layer, a key
    /// or the history).
    pub(crate) fn prepare_mounts(
        &self,
        cur: &StageResult,
        mounts: &[MountOp],
        scratch: &Path,
        stages: &BTreeMap<usize, StageResult>,
        location: Location,
    ) -> Result<MountSet, BuildError> {
        let at = BuildError::at::<MountError>(location);
        let mut set = MountSet::default();
        let expand = |s: &str| cur.state.expand(s).map_err(|e| e.to_string());
        for (i, op) in mounts.iter().enumerate() {
            let m = op.resolve(&expand).map_err(|e| at(e.into()))?;
            let p = Prepared {
                i,
                raw: op.raw(),
                m,
            };
            match p.m.kind {
                MountType::Bind if p.m.from.is_some() => {
                    self.bind_from(cur, &p, scratch, stages, location, &mut set)?
                }
                MountType::Bind => self.bind_context(cur, &p, scratch, &mut set).map_err(&at)?,
                MountType::Cache => self.cache_mount(cur, &p, stages, location, &mut set)?,
                MountType::Tmpfs => {
                    let target = target(cur, &p, None).map_err(&at)?;
                    let dir = scratch.join(format!("tmpfs-{i}"));
                    std::fs::create_dir_all(&dir).map_err(|e| at(e.into()))?;
                    set.key_parts.push(format!("tmpfs:{target}"));
                    set.views.push(MountView::Tmpfs {
                        target: target.clone(),
                    });
                    set.binds.push(BindMount {
                        source: dir,
                        target,
                        readonly: false,
                    });
                }
                MountType::Secret => self.secret_mount(cur, &p, scratch, &mut set).map_err(&at)?,
                MountType::Ssh => self.ssh_mount(cur, &p, &mut set).map_err(&at)?,
            }
        }
        Ok(set)
    }

    /// A bind from a stage or an image: the step gets a private copy of the source (resolved
    /// inside that root), so writes are discarded either way; the key names the mounted
    /// stage's key or the image's digest.
    fn bind_from(
        &self,
        cur: &StageResult,
        p: &Prepared<'_>,
        scratch: &Path,
        stages: &BTreeMap<usize, StageResult>,
        location: Location,
        set: &mut MountSet,
    ) -> Result<(), BuildError> {
        let m = &p.m;
        let target = target(cur, p, None).map_err(BuildError::at::<MountError>(location))?;
        let from = m.from.as_deref().unwrap_or_default();
        let (layers, ident) = self.mount_from(from, stages, location)?;
        let path = confine(m.source.as_deref().unwrap_or("/"));
        set.key_parts
            .push(format!("bind:{target}:from={ident}:{path}:{}", m.read_only));
        let dst = scratch.join(format!("bind-{}", p.i));
        set.views.push(MountView::From {
            target: target.clone(),
            readonly: m.read_only,
            layers: layers.clone(),
            path: path.clone(),
        });
        set.pending.push(Pending::Copy {
            layers,
            path,
            dst: dst.clone(),
        });
        set.binds.push(BindMount {
            source: dst,
            target,
            readonly: m.read_only,
        });
        Ok(())
    }

    /// A bind of a context directory or file.
    fn bind_context(
        &self,
        cur: &StageResult,
        p: &Prepared<'_>,
        scratch: &Path,
        set: &mut MountSet,
    ) -> Result<(), MountError> {
        let m = &p.m;
        let target = target(cur, p, None)?;
        let rel = confine(m.source.as_deref().unwrap_or("."));
        let mut guard = self.context()?;
        let (ctx, cache) = guard.as_mut().expect("scanned by context()");
        // A path under a symlink is never in the scan, and a symlink itself is refused: a
        // bind must not lead out of the context.
        match ctx.get(&rel).map(|e| e.kind) {
            None => return Err(MountError::NotInContext(rel)),
            Some(context::Kind::Symlink) => return Err(MountError::Symlink(rel)),
            Some(_) => {}
        }
        ctx.hash_contents(&[rel.as_str()], cache)?;
        let h = ctx.tree_hash(&rel).ok_or(MountError::ContextChanged)?;
        set.key_parts.push(format!(
            "bind:{target}:{rel}:{}:{}",
            context::hex(&h),
            m.read_only
        ));
        // The step gets a copy made from the files as listed (each opened below the context
        // root through no symlink, and checked to be the one hashed), so a directory swapped
        // for a symlink is an error, never a mount of its target. A bind of the real
        // directory would need its fd, and mount(2) refuses a source from kiln's mount
        // namespace once the step has its own (EINVAL); writes to an rw bind are thrown away
        // with the copy. Made only when the step runs (a cache hit makes none).
        let source = scratch.join(format!("bind-{}", p.i));
        set.pending.push(Pending::Context {
            tree: ctx.tree(&rel),
            dst: source.clone(),
        });
        drop(guard);
        set.views.push(MountView::Context {
            target: target.clone(),
            readonly: m.read_only,
            context: std::fs::canonicalize(&self.req.context_dir)
                .unwrap_or_else(|_| self.req.context_dir.clone()),
            path: rel,
        });
        set.binds.push(BindMount {
            source,
            target,
            readonly: m.read_only,
        });
        Ok(())
    }

    /// A cache: persistent per id (and per stage key or image digest when seeded `from=` one,
    /// as in BuildKit) under kiln's cache directory.
    fn cache_mount(
        &self,
        cur: &StageResult,
        p: &Prepared<'_>,
        stages: &BTreeMap<usize, StageResult>,
        location: Location,
        set: &mut MountSet,
    ) -> Result<(), BuildError> {
        let at = BuildError::at::<MountError>(location);
        let m = &p.m;
        let target = target(cur, p, None).map_err(&at)?;
        let id = m.id.clone().unwrap_or_else(|| target.clone());
        let base = self.store.root().join("cache").join("mounts-v1");
        let seed = match m.from.as_deref() {
            Some(f) => Some(self.mount_from(f, stages, location)?),
            None => None,
        };
        let ident = match &seed {
            Some((_, ident)) => format!("{id}\0from={ident}"),
            None => id.clone(),
        };
        let name = context::hex(&Sha256::digest(ident.as_bytes()).into());
        let dir = base.join(&name);
        let io = |e: std::io::Error| at(e.into());
        if let Some((layers, _)) = seed {
            std::fs::create_dir_all(&base).map_err(io)?;
            set.pending.push(Pending::Seed {
                layers,
                path: confine(m.source.as_deref().unwrap_or("/")),
                dir: dir.clone(),
            });
        } else if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(io)?;
            use std::os::unix::fs::PermissionsExt;
            let mode = m.mode.unwrap_or(0o755);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(io)?;
            let _ = std::os::unix::fs::chown(&dir, m.uid, m.gid);
        }
        let source = match m.source.as_ref().filter(|_| m.from.is_none()) {
            Some(sub) => cache_subdir(&dir, sub).map_err(&at)?,
            None => dir.clone(),
        };
        let lock_path = base.join(format!("{name}.lock"));
        set.views.push(MountView::Cache {
            target: target.clone(),
            readonly: m.read_only,
            dir: source.clone(),
            lock: (m.sharing == Some(Sharing::Locked)).then(|| lock_path.clone()),
        });
        if m.sharing == Some(Sharing::Locked) {
            let lock = std::fs::File::create(&lock_path).map_err(io)?;
            // Held (and released on drop) for as long as the step runs.
            let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| at(e.into()))?;
            set.locks.push(held);
        }
        set.key_parts
            .push(format!("cache:{target}:{ident}:{}", m.read_only));
        set.binds.push(BindMount {
            source,
            target,
            readonly: m.read_only,
        });
        Ok(())
    }

    /// A secret from `--secret`: a file in the step's scratch directory, never in a layer,
    /// the key or the history (only its id reaches the key).
    fn secret_mount(
        &self,
        cur: &StageResult,
        p: &Prepared<'_>,
        scratch: &Path,
        set: &mut MountSet,
    ) -> Result<(), MountError> {
        let m = &p.m;
        let id =
            m.id.clone()
                .or_else(|| {
                    m.target
                        .as_ref()
                        .and_then(|t| t.rsplit('/').next().map(str::to_string))
                })
                .unwrap_or_default();
        let Some(value) = self.req.secrets.get(&id) else {
            if m.required {
                return Err(MountError::NoSecret(id));
            }
            return Ok(());
        };
        let target = target(cur, p, Some(format!("/run/secrets/{id}")))?;
        let file = scratch.join(format!("secret-{}", p.i));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(m.mode.unwrap_or(0o400))
                .open(&file)?;
            f.write_all(value)?;
        }
        let _ = std::os::unix::fs::chown(&file, m.uid, m.gid);
        set.key_parts.push(format!("secret:{target}:{id}"));
        set.views.push(MountView::Secret {
            target: target.clone(),
            id: id.clone(),
            mode: m.mode.unwrap_or(0o400),
            uid: m.uid,
            gid: m.gid,
        });
        set.binds.push(BindMount {
            source: file,
            target,
            readonly: true,
        });
        Ok(())
    }

    /// An SSH agent's socket, bound into the step; only the id and the target reach the
    /// key, never the host path.
    fn ssh_mount(
        &self,
        cur: &StageResult,
        p: &Prepared<'_>,
        set: &mut MountSet,
    ) -> Result<(), MountError> {
        let m = &p.m;
        let id = m.id.clone().unwrap_or_else(|| "default".to_string());
        let Some(sock) = self.req.ssh.get(&id) else {
            if m.required {
                return Err(MountError::NoSsh(id));
            }
            return Ok(());
        };
        let n = set
            .key_parts
            .iter()
            .filter(|k| k.starts_with("ssh:"))
            .count();
        let target = target(cur, p, Some(format!("/run/buildkit/ssh_agent.{n}")))?;
        set.key_parts.push(format!("ssh:{target}:{id}"));
        set.views.push(MountView::Ssh {
            target: target.clone(),
            id: id.clone(),
        });
        set.ssh_sock.get_or_insert_with(|| target.clone());
        set.binds.push(BindMount {
            source: sock.clone(),
            target,
            readonly: false,
        });
        Ok(())
    }

    /// The layers of a mount's `from=` stage or image, and what names it in the step's key.
    fn mount_from(
        &self,
        from: &str,
        stages: &BTreeMap<usize, StageResult>,
        location: Location,
    ) -> Result<(Vec<crate::cache::LayerRef>, String), BuildError> {
        Ok(match self.resolve_from(from, stages, location)? {
            FromRef::Stage(i, key) => (stages[&i].state.layers.clone(), format!("stage:{key}")),
            FromRef::Image(layers, digest) => (layers, format!("image:{digest}")),
        })
    }
}

/// A mount's target, absolute (a relative one is below the WORKDIR), or `default`.
fn target(
    cur: &StageResult,
    p: &Prepared<'_>,
    default: Option<String>,
) -> Result<String, MountError> {
    let t =
        p.m.target
            .clone()
            .or(default)
            .ok_or_else(|| MountError::NoTarget(p.raw.to_string()))?;
    Ok(if t.starts_with('/') {
        t
    } else {
        let wd = &cur.state.spec.config.working_dir;
        super::meta::clean_abs(&format!("{}/{t}", if wd.is_empty() { "/" } else { wd }))
    })
}

/// `source=` of a cache picks a subdirectory of it: confined, and refused when any component
/// is a symlink (a step could plant one).
fn cache_subdir(dir: &Path, sub: &str) -> Result<std::path::PathBuf, MountError> {
    let sub = confine(sub);
    let mut p = dir.to_path_buf();
    for comp in sub.split('/').filter(|c| !c.is_empty()) {
        p.push(comp);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => return Err(MountError::CacheSymlink(sub)),
            Ok(_) => {}
            Err(_) => std::fs::create_dir(&p)?,
        }
    }
    Ok(p)
}
