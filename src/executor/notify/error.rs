//! The supervisor's error type: why a filter could not be built or a supervisor started.

use std::io;

/// Why the seccomp supervisor could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The architecture has no syscall table here.
    #[error("seccomp user notification is not supported on this architecture")]
    UnsupportedArch,
    /// A kernel call of the parent failed (`what` says which).
    #[error("{what}: {source}")]
    Sys {
        /// What the supervisor was doing, e.g. "receiving the listener fd".
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The step sent no listener fd over the socket (it exited or sent something else).
    #[error("the step sent no seccomp listener fd")]
    NoListener,
}

impl NotifyError {
    pub(super) fn sys(what: &'static str, source: impl Into<io::Error>) -> NotifyError {
        NotifyError::Sys {
            what,
            source: source.into(),
        }
    }
}
