//! The executor's error type: every reason a step could not be run or observed.

use std::io;
use std::path::PathBuf;

/// Why a step could not be run. A step that ran and exited non-zero is not an error: see
/// [`super::StepOutcome::status`].
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The step description itself is unusable (empty argv, NUL bytes, relative paths, …).
    #[error("invalid step: {0}")]
    InvalidSpec(String),
    /// A host-side file operation of the executor failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the executor was doing, e.g. "creating scratch dir".
        what: &'static str,
        /// The host path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Creating the container process (clone, pipes, pidfd) failed.
    #[error("cannot start the step's container: {0}")]
    Spawn(#[source] io::Error),
    /// A kernel call inside the new container failed while its root was being set up.
    #[error("setting up the container failed at {stage}: {source}")]
    Setup {
        /// The setup operation, e.g. "mount proc on /proc".
        stage: String,
        /// The errno the kernel returned.
        #[source]
        source: io::Error,
    },
    /// A path where the executor must mount something is a symlink in the image
    /// (CVE-2019-19921, CVE-2025-31133: a symlink there would redirect the mount).
    #[error("image path {path} is a symlink; refusing to mount over it")]
    SymlinkMountTarget {
        /// The path inside the image.
        path: String,
    },
    /// A path where the executor must mount something has the wrong type in the image.
    #[error("image path {path} is not a {expected}; cannot mount over it")]
    BadMountTarget {
        /// The path inside the image.
        path: String,
        /// "directory" or "regular file".
        expected: &'static str,
    },
    /// `USER name` where the image's `/etc/passwd` has no such name (Docker's wording).
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// `USER x:group` where the image's `/etc/group` has no such name (Docker's wording).
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// A user or group id out of range, or a user spec that cannot be parsed.
    #[error("invalid user {spec:?}: {reason}")]
    BadUser {
        /// The `USER` value.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading a file of the image (e.g. `/etc/passwd`) inside the container root failed.
    #[error("reading {path} in the image: {source}")]
    ImageFile {
        /// The path inside the image.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The working directory cannot be created or entered inside the root.
    #[error("working directory {path}: {source}")]
    Workdir {
        /// The `WORKDIR` value.
        path: String,
        /// The underlying error (ELOOP for magic links such as `/proc/self/fd/N`).
        #[source]
        source: io::Error,
    },
    /// The command is not in `$PATH` inside the image (Docker's wording).
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    CommandNotFound(String),
    /// The command exists but cannot be executed.
    #[error("exec {cmd:?}: {source}")]
    Exec {
        /// `argv[0]`.
        cmd: String,
        /// The errno of the exec attempt.
        #[source]
        source: io::Error,
    },
    /// More lower dirs than overlayfs can stack.
    #[error("too many lower layers: {0} (overlayfs stacks at most 500)")]
    TooManyLayers(usize),
    /// The step was cancelled through [`super::StepSpec::cancel`]; its processes are gone.
    #[error("step interrupted")]
    Interrupted,
    /// The platform lacks something the executor needs.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

impl ExecError {
    /// Wraps a host-side I/O error with what was being done and where.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ExecError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
