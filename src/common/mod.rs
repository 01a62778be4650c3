//! Shared vocabulary with no dependency on the rest of kiln: Go-style durations
//! ([`duration`]), points in time and the one calendar ([`time`]), image platforms
//! ([`platform`]), hex ([`hex`]), random ids and unique names ([`ids`]), crash-safe file
//! writes ([`atomic`]), symlink walks inside a root ([`symlinks`]), and the one pattern
//! matcher ([`glob`]).
//!
//! Every other module may use these; nothing here imports another kiln module.

pub mod atomic;
pub mod duration;
pub mod glob;
pub mod hex;
pub mod ids;
pub mod platform;
pub mod symlinks;
pub mod time;
