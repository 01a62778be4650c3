//! Files a `RUN --mount` takes from another stage or an image (`from=`): resolved inside
//! that stage's root, then copied out for the step, so the step can neither write into the
//! stage's snapshots nor reach anything outside them.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::cache::LayerRef;
use crate::store::Store;

use crate::rootfs::layers::{lower_dirs, scratch_dir};
use crate::rootfs::lookup;
use crate::rootfs::overlay::with_overlay;

/// Why a mount's files cannot be copied out for the step.
#[derive(Debug, thiserror::Error)]
pub enum MountSourceError {
    /// The stage's layers cannot be unpacked or mounted.
    #[error(transparent)]
    Layer(#[from] crate::rootfs::layers::FsError),
    /// The context tree cannot be copied.
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// The cache directory's temporary sibling cannot be made.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A cache's seed is not a directory in its stage.
    #[error("RUN --mount=type=cache source \"{0}\" is not a directory in its stage")]
    SeedNotDir(String),
    /// The source cannot be found or copied in the mounted stage (`/path: …`).
    #[error("{path}: {source}{}", if *.in_stage { " in the mounted stage" } else { "" })]
    Source {
        /// The source path, absolute.
        path: String,
        /// Whether the error came from resolving it in the stage.
        in_stage: bool,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The source resolves outside the mounted stage.
    #[error("{0}: resolves outside the mounted stage")]
    Outside(String),
    /// The stage's overlay was not mounted.
    #[error("the source stage was not mounted")]
    NotMounted,
    /// The stage's overlay cannot be mounted.
    #[error(transparent)]
    Overlay(io::Error),
    /// A scratch or cache directory cannot be made or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A copy to make once the step is known to run (a cache hit makes none).
pub(crate) enum Pending {
    /// `path` of the stage `layers` copied to `dst` (a bind's private copy).
    Copy {
        layers: Vec<LayerRef>,
        path: String,
        dst: PathBuf,
    },
    /// The listed context tree copied to `dst` (a context bind's copy).
    Context {
        tree: crate::context::ContextTree,
        dst: PathBuf,
    },
    /// A new cache directory `dir` seeded from `path` of the stage `layers`: filled in a
    /// temporary directory beside it, then renamed into place.
    Seed {
        layers: Vec<LayerRef>,
        path: String,
        dir: PathBuf,
    },
}

impl Pending {
    /// Make the copy.
    pub(crate) fn run(&self, store: &Store) -> Result<(), MountSourceError> {
        match self {
            Pending::Copy { layers, path, dst } => copy_out(store, layers, path, dst),
            Pending::Context { tree, dst } => Ok(tree.copy_to(dst)?),
            Pending::Seed { layers, path, dir } => {
                if dir.exists() {
                    return Ok(()); // seeded by an earlier step or a parallel stage
                }
                let parent = dir.parent().ok_or_else(|| MountSourceError::Io {
                    path: dir.clone(),
                    source: io::Error::other("a cache directory has no parent"),
                })?;
                let tmp = crate::store::fsutil::create_temp_dir(parent, "seed", 0o700)?;
                let tmp = crate::store::fsutil::TempPath::new(tmp);
                let inner = tmp.path().join("d");
                copy_out(store, layers, path, &inner)?;
                if !std::fs::symlink_metadata(&inner).is_ok_and(|m| m.is_dir()) {
                    return Err(MountSourceError::SeedNotDir(path.clone()));
                }
                match std::fs::rename(&inner, dir) {
                    Ok(()) => Ok(()),
                    Err(_) if dir.exists() => Ok(()),
                    Err(source) => Err(MountSourceError::Io {
                        path: dir.clone(),
                        source,
                    }),
                }
            }
        }
    }
}

/// Copy `path` (resolved inside the root of `layers`, every symlink followed as if that
/// root were `/`) to `dst`: a file, or a directory tree whose symlinks stay symlinks.
pub(crate) fn copy_out(
    store: &Store,
    layers: &[LayerRef],
    path: &str,
    dst: &Path,
) -> Result<(), MountSourceError> {
    let dirs = lower_dirs(store, layers)?;
    let scratch = scratch_dir(store)?;
    let upper = scratch.path().join("upper");
    std::fs::create_dir(&upper).map_err(|source| MountSourceError::Io {
        path: upper.clone(),
        source,
    })?;
    let view = scratch.path().join("view");
    let shown = format!("/{}", path.trim_start_matches('/'));
    with_overlay(
        &[],
        &upper,
        &view,
        &[dirs],
        |_, roots| -> Result<(), MountSourceError> {
            let root = roots.first().ok_or(MountSourceError::NotMounted)?;
            let source = |in_stage: bool| {
                let path = shown.clone();
                move |source| MountSourceError::Source {
                    path,
                    in_stage,
                    source,
                }
            };
            let fd = lookup::open_in_root(root, path, libc::O_PATH).map_err(source(true))?;
            let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(source(false))?;
            if !real.starts_with(root) {
                return Err(MountSourceError::Outside(shown.clone()));
            }
            copy_tree(&real, dst).map_err(source(false))
        },
    )
    .map_err(MountSourceError::Overlay)?
}

/// Copy a file or a directory tree (symlinks as symlinks, modes and owners kept).
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    use std::os::unix::fs::MetadataExt;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        std::fs::set_permissions(dst, meta.permissions())?;
    } else if meta.is_file() {
        std::fs::copy(src, dst)?;
    } else {
        return Ok(()); // devices, FIFOs and sockets are not copied
    }
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
}
