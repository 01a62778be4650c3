//! kiln: a Dockerfile build engine with a content-addressed layer cache.
#![warn(missing_docs)]

pub mod archive;
pub mod build;
pub mod cache;
pub mod common;
pub mod container;
pub mod context;
pub mod executor;
pub mod image;
pub mod imageops;
pub mod parser;
pub mod planner;
pub mod registry;
pub mod rootfs;
pub mod store;
#[cfg(test)]
pub(crate) mod testutil;
