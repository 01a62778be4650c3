//! Why a build fails: one variant per thing that can fail, each keeping its cause and, when
//! the failure belongs to a Dockerfile line, where that line is.

use crate::planner::expand::ShellError;
use crate::planner::Location;
use crate::planner::{self, ops::RunFlagError, ops::TriggerError};

pub use super::copystep::WriteError;
pub use super::mountsrc::MountSourceError;
pub use super::remote::{FetchError, GitError, RemoteError};

use super::meta::MetaError;
use crate::rootfs::layers::FsError;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile cannot be parsed.
    #[error(transparent)]
    Parse(#[from] crate::planner::ParseError),
    /// The Dockerfile cannot be planned.
    #[error(transparent)]
    Plan(#[from] planner::PlanError),
    /// An ONBUILD trigger of the stage's base cannot run.
    #[error("{source}")]
    Trigger {
        /// What is wrong with it.
        #[source]
        source: Box<TriggerError>,
        /// The stage's FROM.
        location: Location,
    },
    /// A metadata instruction (ENV, LABEL, EXPOSE, …) cannot be applied.
    #[error("{source}")]
    Meta {
        /// What is wrong.
        #[source]
        source: MetaError,
        /// Where in the Dockerfile.
        location: Location,
    },
    /// A COPY or ADD failed.
    #[error("{source}")]
    Copy {
        /// What failed.
        #[source]
        source: Box<CopyError>,
        /// Where in the Dockerfile.
        location: Location,
    },
    /// A RUN step cannot be set up or started.
    #[error("{source}")]
    Run {
        /// What failed.
        #[source]
        source: RunError,
        /// Where in the Dockerfile.
        location: Location,
    },
    /// A `RUN --mount` cannot be prepared.
    #[error("{source}")]
    Mount {
        /// What failed.
        #[source]
        source: MountError,
        /// Where in the Dockerfile.
        location: Location,
    },
    /// A layer cannot be made, mounted or read.
    #[error("{source}")]
    Layer {
        /// What failed.
        #[source]
        source: FsError,
        /// Where in the Dockerfile.
        location: Location,
    },
    /// A `--from` (COPY, RUN --mount) names a stage or an image that cannot be used.
    #[error("{source}")]
    From {
        /// What is wrong.
        #[source]
        source: FromError,
        /// Where in the Dockerfile.
        location: Location,
    },
    /// The build context cannot be read.
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// A base image cannot be pulled from its registry.
    #[error("{}", pull_message(name, *missing, source))]
    Pull {
        /// The image, as written.
        name: String,
        /// It was pulled because the store lacked it (`--pull missing`).
        missing: bool,
        /// Why the pull failed.
        #[source]
        source: Box<crate::registry::RegistryError>,
        /// Where in the Dockerfile.
        location: Location,
    },
    /// A base image's configuration cannot be read.
    #[error("{name}: unreadable image config: {source}")]
    BaseConfig {
        /// The image.
        name: String,
        /// Why.
        #[source]
        source: serde_json::Error,
        /// Where in the Dockerfile.
        location: Location,
    },
    /// Ctrl-C: the build was cancelled between steps.
    #[error("build cancelled")]
    Cancelled {
        /// The step that did not start.
        location: Location,
    },
    /// Stages wait for each other (a cycle the planner would have refused).
    #[error("stages depend on each other in a cycle")]
    StageCycle {
        /// A stage of the cycle.
        location: Location,
    },
    /// A thread building a stage panicked.
    #[error("a build thread panicked")]
    Panicked,
    /// The image's manifest cannot be encoded.
    #[error("encoding the manifest: {0}")]
    Manifest(#[source] crate::image::config::ConfigError),
    /// A RUN command exited non-zero (or was killed).
    #[error("{message}")]
    RunFailed {
        /// BuildKit's wording, with the exit code.
        message: String,
        /// Where in the Dockerfile.
        location: Location,
        /// The exit code (128 + signal for a killed command), for callers that pass it on.
        code: i32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// `--cache-to` failed (the image itself is built and stored).
    #[error("exporting the build cache: {0}")]
    CacheExport(#[from] crate::cache::transfer::TransferError),
    /// A named context (`--build-context`) cannot be read.
    #[error("build context {name}: {source}")]
    NamedContext {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: Box<super::named::NamedContextError>,
        /// Where in the Dockerfile it is first used.
        location: Location,
    },
    /// A base image is not in the store.
    #[error("{name}: image not found in the local store (and --pull never)")]
    NoBaseImage {
        /// The image name.
        name: String,
        /// Where.
        location: Location,
    },
    /// The store's image of a base's name is for another platform than its stage.
    #[error("{name}: the local store's image is for {found}, not {wanted}; replace it with the {wanted} image (kiln pull --platform {wanted} {name}, or kiln image import --platform {wanted}), or build with --pull")]
    BasePlatform {
        /// The image name.
        name: String,
        /// The platform of the stored image.
        found: String,
        /// The platform of the stage.
        wanted: String,
        /// Where.
        location: Location,
    },
    /// A RUN step's platform is foreign, and this host has no usable emulator for it.
    #[error("{source}")]
    Emulation {
        /// Why the step's programs cannot run here.
        #[source]
        source: Box<crate::executor::binfmt::BinfmtError>,
        /// The step.
        location: Location,
    },
}

fn pull_message(name: &str, missing: bool, e: &crate::registry::RegistryError) -> String {
    if missing {
        format!("{name}: not in the local store, and {e}")
    } else {
        e.to_string()
    }
}

impl BuildError {
    /// Where in the Dockerfile the problem is, when it is there.
    pub fn location(&self) -> Option<Location> {
        match self {
            BuildError::Parse(e) => Some(e.location),
            BuildError::Plan(e) => e.location(),
            BuildError::Trigger { location, .. }
            | BuildError::Meta { location, .. }
            | BuildError::Copy { location, .. }
            | BuildError::Run { location, .. }
            | BuildError::Mount { location, .. }
            | BuildError::Layer { location, .. }
            | BuildError::From { location, .. }
            | BuildError::Pull { location, .. }
            | BuildError::BaseConfig { location, .. }
            | BuildError::Cancelled { location }
            | BuildError::StageCycle { location }
            | BuildError::RunFailed { location, .. }
            | BuildError::NamedContext { location, .. }
            | BuildError::NoBaseImage { location, .. }
            | BuildError::BasePlatform { location, .. }
            | BuildError::Emulation { location, .. } => Some(*location),
            _ => None,
        }
    }

    /// A step's error with its location: `at(location)` turns a step error into this.
    pub(crate) fn at<E: Into<StepFailure>>(location: Location) -> impl Fn(E) -> BuildError {
        move |e| e.into().at(location)
    }
}

/// A step-level failure before its location is attached (see [`BuildError::at`]).
pub(crate) enum StepFailure {
    Meta(MetaError),
    Copy(CopyError),
    Run(RunError),
    Mount(MountError),
    Layer(FsError),
    From(FromError),
}

impl StepFailure {
    fn at(self, location: Location) -> BuildError {
        match self {
            StepFailure::Meta(source) => BuildError::Meta { source, location },
            StepFailure::Copy(source) => BuildError::Copy {
                source: Box::new(source),
                location,
            },
            StepFailure::Run(source) => BuildError::Run { source, location },
            StepFailure::Mount(source) => BuildError::Mount { source, location },
            StepFailure::Layer(source) => BuildError::Layer { source, location },
            StepFailure::From(source) => BuildError::From { source, location },
        }
    }
}

macro_rules! step_failure {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for StepFailure {
            fn from(e: $t) -> Self {
                StepFailure::$v(e)
            }
        }
    )*};
}
step_failure!(MetaError => Meta, CopyError => Copy, RunError => Run, MountError => Mount,
    FsError => Layer, FromError => From);

/// What a `--from` cannot use.
#[derive(Debug, thiserror::Error)]
pub enum FromError {
    /// The value's variables cannot be expanded.
    #[error(transparent)]
    Expand(#[from] ShellError),
    /// A stage index out of range.
    #[error(transparent)]
    Plan(Box<planner::PlanError>),
    /// The stage is not built yet (a stage named only by an ONBUILD trigger).
    #[error("stage {0} is not built before it is used")]
    NotBuilt(String),
}

/// Why a COPY or ADD failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A word's variables cannot be expanded.
    #[error(transparent)]
    Expand(#[from] ShellError),
    /// COPY given a URL.
    #[error("{0}: COPY does not take URLs; use ADD to fetch a remote file")]
    UrlInCopy(String),
    /// `--checksum` with other than one URL.
    #[error("--checksum needs exactly one source, an http(s) URL")]
    ChecksumSources,
    /// A remote source (URL, git repository) failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A downloaded file's digest is not the `--checksum`.
    #[error("ADD {url}: checksum mismatch: expected {want}, got {got}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The `--checksum`.
        want: String,
        /// What was downloaded.
        got: String,
    },
    /// A bad `--chmod` or `--exclude`, or a destination that cannot take the sources.
    #[error(transparent)]
    Items(#[from] crate::rootfs::copy::CopyError),
    /// A context source cannot be selected.
    #[error(transparent)]
    Select(#[from] crate::context::select::SelectError),
    /// The context cannot be read or hashed.
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// A context file changed between its listing and its hashing.
    #[error("{0}: changed while it was read")]
    Changed(String),
    /// ADD of a URL among several sources to a destination that is not a directory.
    #[error(
        "When using ADD with more than one source file, the destination must be a directory and end with a /"
    )]
    AddDestNotDir,
    /// A URL with no file name, copied into a directory.
    #[error("{0}: cannot determine a file name from the URL; give the destination a file name")]
    UrlNoFileName(String),
    /// Writing into the image root (a source, the destination, an owner) failed.
    #[error(transparent)]
    Write(#[from] super::copystep::WriteError),
}

/// Why a RUN step cannot be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The command is empty.
    #[error("RUN needs a command")]
    NoCommand,
    /// `RUN --network=host` without the entitlement.
    #[error(
        "network.host is not allowed: RUN --network=host needs `kiln build --allow network.host`"
    )]
    NetworkHostNotAllowed,
    /// A `--mount` value of the step is invalid (once its variables are expanded).
    #[error("{0}")]
    MountSpec(#[source] RunFlagError),
    /// A mount's source copy cannot be made.
    #[error("RUN --mount: {0}")]
    MountSource(#[source] super::mountsrc::MountSourceError),
    /// The step's snapshot directory cannot be made.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A scratch directory of the step cannot be made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// No network namespace for the step.
    #[error("the step's network: {0}")]
    Network(#[source] crate::executor::pasta::PastaError),
    /// The sandbox cannot run the command.
    #[error(transparent)]
    Exec(#[from] crate::executor::ExecError),
}

/// Why a `RUN --mount` cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The value is invalid once its variables are expanded.
    #[error(transparent)]
    Spec(#[from] RunFlagError),
    /// A mount with no target and no default one.
    #[error("RUN --mount={0}: a target is required")]
    NoTarget(String),
    /// A bind source the context does not have.
    #[error("RUN --mount source \"{0}\": not found in the build context")]
    NotInContext(String),
    /// A bind source that is a symlink.
    #[error("RUN --mount source \"{0}\" is a symlink; refusing to follow it")]
    Symlink(String),
    /// The context changed while it was hashed.
    #[error("context changed")]
    ContextChanged,
    /// The context cannot be read or hashed.
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// A cache's `source=` goes through a symlink.
    #[error("RUN --mount cache source \"{0}\" goes through a symlink; refusing it")]
    CacheSymlink(String),
    /// A secret the build was not given.
    #[error("secret {0} not provided (use --secret id={0},src=FILE)")]
    NoSecret(String),
    /// An SSH agent the build was not given.
    #[error("no SSH agent forwarded for id {0} (use --ssh {0}[=SOCKET|KEY])")]
    NoSsh(String),
    /// A cache directory, lock or secret file cannot be made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A `sharing=locked` cache cannot be locked.
    #[error(transparent)]
    Lock(#[from] nix::Error),
}
