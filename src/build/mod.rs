//! `kiln build`: runs a plan's stages, step by step, against the store and the cache.

pub mod meta;
pub mod state;
