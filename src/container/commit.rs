//! `kiln commit` (a container's changes as a new image) and `kiln diff` (what they are).
//!
//! A container's changes are its overlay upper dir, so a commit costs what the container
//! changed: the upper dir becomes one layer through the same writer a RUN step's does
//! (overlay whiteouts become `.wh.` entries), on top of the image's layers. A running
//! container is paused (frozen) while its upper dir is read, as Docker does.

use std::path::PathBuf;

use oci_spec::image::{Descriptor, ImageManifest};
use serde_json::{Map, Value};

use super::{Container, ContainerError, Result};
use crate::image::config::{self, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER};
use crate::image::{Digest, Reference};
use crate::imageops::change::Changes;
use crate::store::{ImageRecord, Store};

/// `kiln commit` flags.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `-a`: the image's author.
    pub author: Option<String>,
    /// `-m`: the commit message (the history entry's comment).
    pub message: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config.
    pub changes: Changes,
    /// `-p` (default on): freeze a running container while reading its changes.
    pub pause: bool,
    /// The name to give the image.
    pub tag: Option<Reference>,
}

/// A failure of the layer code the runtime shares with the builder (listing the image's
/// layers, committing the upper dir).
fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ContainerError {
    ContainerError::Layers {
        what: "the container's layers",
        source: e.into(),
    }
}

/// Thaws a container this commit froze, however the commit ends.
struct Thaw<'a>(Option<&'a Container>);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            if let Ok(c) = Container::load(&c.dir) {
                let _ = super::ops::unpause(&c);
            }
        }
    }
}

/// Commits the container's changes as a new image.
pub fn commit(store: &Store, c: &Container, opts: &CommitOptions) -> Result<ImageRecord> {
    let (mut doc, base_manifest) = base_image(store, c)?;
    let _thaw = if opts.pause && c.is_running() && !c.paused && super::ops::pause(c).is_ok() {
        Thaw(Some(c))
    } else {
        Thaw(None)
    };
    let _lease = store.lease()?;
    let layer =
        crate::rootfs::layers::commit_dir(store, &c.dir.join("upper"), None).map_err(other)?;
    drop(_thaw);

    let obj = doc
        .as_object_mut()
        .ok_or(ContainerError::BadImageConfig("is not an object"))?;
    container_config(obj, c, &opts.changes)?;
    let now = super::now();
    obj.insert("created".into(), Value::from(now.clone()));
    if let Some(a) = &opts.author {
        obj.insert("author".into(), Value::from(a.clone()));
    }
    match &opts.message {
        Some(m) => obj.insert("comment".into(), Value::from(m.clone())),
        None => obj.remove("comment"),
    };
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(ids) => ids.push(Value::from(layer.diff_id.to_string())),
        None => return Err(ContainerError::BadImageConfig("has no rootfs.diff_ids")),
    }
    let mut entry = Map::new();
    entry.insert("created".into(), Value::from(now));
    entry.insert("created_by".into(), Value::from(c.config.argv.join(" ")));
    if let Some(a) = &opts.author {
        entry.insert("author".into(), Value::from(a.clone()));
    }
    if let Some(m) = &opts.message {
        entry.insert("comment".into(), Value::from(m.clone()));
    }
    add_history(obj, entry, base_manifest.layers().len())?;
    let mut layers = base_manifest.layers().to_vec();
    layers.push(config::descriptor(
        MEDIA_TYPE_LAYER,
        &layer.diff_id,
        layer.size,
    ));
    store_image(store, &doc, layers, opts.tag.as_ref())
}

/// The container's image: its config as JSON, and its manifest.
fn base_image(store: &Store, c: &Container) -> Result<(Value, ImageManifest)> {
    let gone = || ContainerError::ImageGone(c.config.image.clone());
    let image_id = Digest::parse(&c.config.image_id).map_err(|source| ContainerError::Digest {
        what: "the container's image ID",
        source,
    })?;
    let base = store
        .read_blob(&image_id, "image config", 16 << 20)
        .map_err(|_| gone())?;
    let doc: Value = serde_json::from_slice(&base).map_err(|source| ContainerError::Json {
        what: "the image config",
        source,
    })?;
    let base_manifest = store
        .list_images()?
        .into_iter()
        .find(|i| i.id == image_id)
        .map(|i| i.manifest)
        .ok_or_else(gone)?;
    Ok((doc, base_manifest))
}

/// The container's own settings in the config's `config`, as Docker's commit takes them,
/// then the `-c` changes.
fn container_config(obj: &mut Map<String, Value>, c: &Container, changes: &Changes) -> Result<()> {
    let cfg = &c.config;
    let inner = obj
        .entry("config")
        .or_insert_with(|| Value::Object(Map::new()));
    if !inner.is_object() {
        *inner = Value::Object(Map::new());
    }
    let Value::Object(inner) = inner else {
        return Err(ContainerError::BadImageConfig(
            "has a config that is not an object",
        ));
    };
    let list = |v: &Option<Vec<String>>| v.as_ref().map_or(Value::Null, |v| Value::from(v.clone()));
    inner.insert("Cmd".into(), list(&cfg.cmd));
    inner.insert("Entrypoint".into(), list(&cfg.entrypoint));
    inner.insert("Env".into(), Value::from(cfg.env.clone()));
    inner.insert("WorkingDir".into(), Value::from(cfg.working_dir.clone()));
    inner.insert("User".into(), Value::from(cfg.user.clone()));
    if !cfg.labels.is_empty() {
        inner.insert(
            "Labels".into(),
            serde_json::to_value(&cfg.labels).map_err(|source| ContainerError::Json {
                what: "the container's labels",
                source,
            })?,
        );
    }
    Ok(changes.apply(inner)?)
}

/// Appends the commit's history `entry`. A base image without history for its layers (an
/// imported one, say) gets blank entries for them, so history and layers still line up.
fn add_history(
    obj: &mut Map<String, Value>,
    entry: Map<String, Value>,
    base_layers: usize,
) -> Result<()> {
    let Value::Array(h) = obj
        .entry("history")
        .or_insert_with(|| Value::Array(Vec::new()))
    else {
        return Err(ContainerError::BadImageConfig(
            "has a history that is not a list",
        ));
    };
    let with_layers = h
        .iter()
        .filter(|e| e.get("empty_layer") != Some(&Value::Bool(true)))
        .count();
    if with_layers < base_layers {
        let blanks: Vec<Value> = (0..base_layers - with_layers)
            .map(|_| serde_json::json!({}))
            .collect();
        h.splice(0..0, blanks);
    }
    h.push(Value::Object(entry));
    Ok(())
}

/// Stores the config `doc` and a manifest of `layers` as an image, tagged `tag`.
fn store_image(
    store: &Store,
    doc: &Value,
    layers: Vec<Descriptor>,
    tag: Option<&Reference>,
) -> Result<ImageRecord> {
    let config_bytes = config::canonical_json("config", doc)?;
    let config_digest = config::image_id(&config_bytes);
    store.put_blob_bytes(&config_bytes, Some(&config_digest))?;
    let manifest = config::new_manifest(
        config::descriptor(MEDIA_TYPE_CONFIG, &config_digest, config_bytes.len() as u64),
        layers,
    );
    let manifest_bytes = config::canonical_json("manifest", &manifest)?;
    store.put_blob_bytes(&manifest_bytes, None)?;
    let tags: Vec<Reference> = tag.into_iter().cloned().collect();
    Ok(store.put_image_tagged(&config_bytes, &manifest_bytes, &tags)?)
}

/// `kiln diff`: `A` added, `C` changed, `D` deleted paths, as Docker lists them, read from
/// the upper dir and checked against the image's layers (which are never modified).
pub fn diff(store: &Store, c: &Container) -> Result<Vec<(char, String)>> {
    // Top-most first, as lookup wants them.
    let lowers: Vec<PathBuf> =
        crate::rootfs::layers::lower_dirs(store, &c.layers()?).map_err(other)?;
    let upper = c.dir.join("upper");
    let changes = crate::executor::changes::upper_changes(&upper)?;
    let mut out = Vec::new();
    for ch in changes {
        let rel = ch.path.to_string_lossy().into_owned();
        let kind = match ch.kind {
            crate::executor::changes::ChangeKind::Delete => 'D',
            _ if in_image(&lowers, &rel) => 'C',
            _ => 'A',
        };
        out.push((kind, format!("/{rel}")));
    }
    Ok(out)
}

fn in_image(lowers: &[PathBuf], rel: &str) -> bool {
    use crate::executor::layers::Found;
    !matches!(
        crate::executor::layers::lookup(lowers, rel),
        Ok(Found::Absent | Found::NotDir { .. }) | Err(_)
    )
}
