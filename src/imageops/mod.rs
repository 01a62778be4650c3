//! What the `kiln image` commands do to the store, as library calls the CLI (and tests) make.
//!
//! Each submodule has one job:
//!
//! * [`import`]: a rootfs tarball becomes a one-layer image and its snapshot
//!   (`kiln image import`), with [`change`] applying `--change` instructions;
//! * [`save`] and [`load`]: image archives out of and into the store, in the
//!   formats `docker save`, `podman save` and `skopeo` write; [`layout`]: one image
//!   of an OCI image layout directory into the store (`build --build-context
//!   NAME=oci-layout://…`), through `load`'s checks;
//! * [`list`]: which images `kiln images` shows, with Docker's filters;
//! * [`inspect`]: Docker's `image inspect` document and `image history` rows;
//! * [`remove`]: `kiln rmi` and `kiln image prune`;
//! * [`size`]: image and layer sizes as Docker counts them (the unpacked files);
//! * [`platform`]: which platform a stored image is for, and whether it suits one asked for.
//!
//! This module sits above the store and the image vocabulary (`crate::image`),
//! which know nothing of it: the store keeps images, these functions decide
//! what the commands do with them. Nothing here prints; results come back as
//! values for the CLI to render.

pub mod change;
mod error;
pub mod glob;
pub mod import;
pub mod inspect;
pub mod layout;
pub mod list;
pub mod load;
mod pipe;
pub mod platform;
pub mod remove;
pub mod save;
pub mod size;
mod tarscan;

pub use error::{ImageOpsError, Result};

use crate::image::Reference;
use crate::store::{ImageRecord, Store, StoreError};

/// Largest image config read into memory (as the store allows).
pub const MAX_CONFIG_SIZE: u64 = 32 << 20;

/// Largest image manifest or index read into memory (Docker's registry client limit).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Finds an image as `docker rmi`, `docker save` and `docker run` do (see
/// [`Store::resolve`]), reporting a missing image under the name Docker
/// shows: a reference gets its default tag (`no such image: busybox:latest`).
pub fn resolve(store: &Store, name: &str) -> Result<ImageRecord> {
    store.resolve(name).map_err(|e| match e {
        StoreError::ImageNotFound { .. } => ImageOpsError::NoSuchImage {
            name: display_name(name),
        },
        other => other.into(),
    })
}

/// The name Docker shows for what a user typed: a valid reference in its
/// familiar form with the default tag added (`busybox` → `busybox:latest`),
/// anything else as typed.
pub fn display_name(name: &str) -> String {
    match Reference::parse(name) {
        Ok(r) => r.familiar_string(),
        Err(_) => name.to_owned(),
    }
}

/// The config blob of an image, exactly as stored (its digest is the image ID).
pub fn config_bytes(store: &Store, image: &ImageRecord) -> Result<Vec<u8>> {
    Ok(store.read_blob(&image.id, "config", MAX_CONFIG_SIZE)?)
}

/// The config of an image as a JSON value, keeping the fields oci-spec does
/// not model (`Healthcheck`, `OnBuild`, `comment`, …).
pub fn config_json(store: &Store, image: &ImageRecord) -> Result<serde_json::Value> {
    let bytes = config_bytes(store, image)?;
    serde_json::from_slice(&bytes).map_err(|source| ImageOpsError::Json {
        what: "image config",
        source,
    })
}
