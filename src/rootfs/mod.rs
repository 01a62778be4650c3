//! The filesystem primitives the builder and the runtime share: overlay views of a stack of
//! snapshots ([`overlay`]), unpacking layers into snapshots and committing a directory as a
//! layer ([`layers`]), copying items into an image root ([`copy`]), and looking paths and
//! users up inside a root without leaving it ([`lookup`]).
//!
//! `build` (Dockerfile steps) and `container` (`kiln cp`, `commit`, running containers) both
//! sit on this module; it imports neither.

pub mod copy;
pub mod layers;
pub mod lookup;
pub mod overlay;
