//! OCI image vocabulary shared by the store, the builder and the runtime:
//! digests, image references, and the config/manifest/index documents.

pub mod compression;
pub mod config;
pub mod digest;
pub mod index_doc;
pub mod reference;
pub mod spec;

pub use config::ConfigError;
pub use digest::{Digest, DigestError, Sha256Writer};
pub use reference::{Reference, ReferenceError};
