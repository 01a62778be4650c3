//! Shared vocabulary with no dependency on the rest of kiln.
//!
//! Every other module may use these; nothing here imports another kiln module.

pub mod glob;
