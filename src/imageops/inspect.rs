//! Docker's views of one image: the `image inspect` document and the
//! `image history` rows.

use serde::Serialize;
use serde_json::Value;

use super::error::Result;
use super::list::{repo_digests, repo_tags};
use crate::common::time::Timestamp;
use crate::image::config;
use crate::image::Digest;
use crate::store::{ImageRecord, IndexRecord, Store};

/// What Docker shows for a time it does not know (Go's zero `time.Time`).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `Config` (and `ContainerConfig`) of `docker image inspect`: the fields of
/// an image config's `config` object in Docker's order. The fields Docker
/// always prints are `""`, `false` or `null` when the image has none; the
/// ones it leaves out when empty are left out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    /// `Hostname`.
    pub hostname: String,
    /// `Domainname`.
    pub domainname: String,
    /// `User`.
    pub user: String,
    /// `AttachStdin`.
    pub attach_stdin: bool,
    /// `AttachStdout`.
    pub attach_stdout: bool,
    /// `AttachStderr`.
    pub attach_stderr: bool,
    /// `ExposedPorts` (`{"80/tcp": {}}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<Value>,
    /// `Tty`.
    pub tty: bool,
    /// `OpenStdin`.
    pub open_stdin: bool,
    /// `StdinOnce`.
    pub stdin_once: bool,
    /// `Env` (`["PATH=…"]`).
    pub env: Value,
    /// `Cmd`.
    pub cmd: Value,
    /// `Healthcheck`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Value>,
    /// `ArgsEscaped` (Windows images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<Value>,
    /// `Image`: the image a classic Docker build started the step from
    /// (`""` for others).
    pub image: String,
    /// `Volumes` (`{"/data": {}}`).
    pub volumes: Value,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `Entrypoint`.
    pub entrypoint: Value,
    /// `OnBuild` triggers.
    pub on_build: Value,
    /// `Labels`.
    pub labels: Value,
    /// `StopSignal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Value>,
    /// `StopTimeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<Value>,
    /// `Shell`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<Value>,
}

impl InspectConfig {
    /// Docker's view of a config's `config` (or `container_config`) object;
    /// `Null` gives the all-empty one Docker shows for an image without it.
    pub fn from_json(c: &Value) -> InspectConfig {
        let flag = |key: &str| c.get(key).and_then(Value::as_bool).unwrap_or(false);
        InspectConfig {
            hostname: string_at(c, "Hostname"),
            domainname: string_at(c, "Domainname"),
            user: string_at(c, "User"),
            attach_stdin: flag("AttachStdin"),
            attach_stdout: flag("AttachStdout"),
            attach_stderr: flag("AttachStderr"),
            exposed_ports: non_empty(c, "ExposedPorts"),
            tty: flag("Tty"),
            open_stdin: flag("OpenStdin"),
            stdin_once: flag("StdinOnce"),
            env: or_null(c, "Env"),
            cmd: or_null(c, "Cmd"),
            healthcheck: non_empty(c, "Healthcheck"),
            args_escaped: non_empty(c, "ArgsEscaped"),
            image: string_at(c, "Image"),
            volumes: or_null(c, "Volumes"),
            working_dir: string_at(c, "WorkingDir"),
            entrypoint: or_null(c, "Entrypoint"),
            on_build: or_null(c, "OnBuild"),
            labels: or_null(c, "Labels"),
            stop_signal: non_empty(c, "StopSignal"),
            stop_timeout: non_empty(c, "StopTimeout"),
            shell: non_empty(c, "Shell"),
        }
    }
}

/// `RootFS` of `docker image inspect`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectRootFs {
    /// Always `layers`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The diffIDs.
    pub layers: Vec<String>,
}

/// `Metadata` of `docker image inspect`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectMetadata {
    /// When the image was last tagged; kiln does not record it.
    pub last_tag_time: String,
}

/// `GraphDriver` of `docker image inspect` and `docker container inspect`:
/// where the storage driver keeps the files.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    /// The driver's own keys: `LowerDir` (below the top, `:`-separated,
    /// top first; only when there is a layer below), `MergedDir`,
    /// `UpperDir`, `WorkDir`.
    pub data: GraphDriverData,
    /// The driver: kiln stacks its snapshots with overlayfs.
    pub name: String,
}

/// `GraphDriver.Data`, as Docker's overlay2 driver fills it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriverData {
    /// The directories below the top one, top first, joined by `:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_dir: Option<String>,
    /// Where the stack is mounted (`""` when it is not).
    pub merged_dir: String,
    /// The top directory.
    pub upper_dir: String,
    /// overlayfs's work directory (`""` when there is none).
    pub work_dir: String,
}

impl GraphDriver {
    /// The storage kiln uses for an image's layers: its unpacked snapshots,
    /// the top one as `UpperDir` and the others as `LowerDir`.
    pub fn of_image(store: &Store, image: &ImageRecord) -> GraphDriver {
        let mut dirs = snapshot_dirs(image, store);
        let upper = dirs.pop().unwrap_or_default();
        dirs.reverse();
        GraphDriver {
            data: GraphDriverData {
                lower_dir: (!dirs.is_empty()).then(|| dirs.join(":")),
                merged_dir: String::new(),
                upper_dir: upper,
                work_dir: String::new(),
            },
            name: DRIVER.to_owned(),
        }
    }
}

/// The storage driver name `inspect` shows: kiln stacks layers with overlayfs.
pub const DRIVER: &str = "overlay";

/// The snapshot directory of each layer of `image`, bottom first: where its
/// files are unpacked, or will be when a container first runs from it.
fn snapshot_dirs(image: &ImageRecord, store: &Store) -> Vec<String> {
    image
        .chain_ids()
        .iter()
        .map(|chain| store.snapshot_path(chain).display().to_string())
        .collect()
}

/// The document `docker image inspect` prints for one image, field for
/// field in Docker's order. Keys Docker 20.10 prints and later versions
/// dropped (`Container`, `ContainerConfig`, `VirtualSize`) are kept: scripts
/// written for either read them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    /// The image ID (`sha256:…`).
    pub id: String,
    /// Tags (`busybox:latest`).
    pub repo_tags: Vec<String>,
    /// Names by manifest digest (`busybox@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Docker's parent image; always empty in kiln.
    pub parent: String,
    /// The config's `comment`.
    pub comment: String,
    /// The config's `created`, as written.
    pub created: String,
    /// The config's `container`: the container a classic Docker build
    /// committed (`""` for other images).
    pub container: String,
    /// The config's `container_config`, all empty when it has none.
    pub container_config: InspectConfig,
    /// The config's `docker_version`, if another tool wrote one.
    pub docker_version: String,
    /// The config's `author`.
    pub author: String,
    /// The run configuration.
    pub config: InspectConfig,
    /// CPU architecture.
    pub architecture: String,
    /// CPU variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Operating system.
    pub os: String,
    /// OS version (Windows images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Bytes of the config and layers.
    pub size: u64,
    /// The same as `Size` (Docker's old name for it).
    pub virtual_size: u64,
    /// Where the layers are unpacked.
    pub graph_driver: GraphDriver,
    /// The layers.
    #[serde(rename = "RootFS")]
    pub root_fs: InspectRootFs,
    /// Bookkeeping.
    pub metadata: InspectMetadata,
    /// For a name holding an index of several platforms: the index's descriptor (the rest
    /// of the document describes the host's entry, else the first, as Docker shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descriptor: Option<Value>,
    /// For an index: each platform's entry (`Platform`, manifest `Digest`, image `Id`,
    /// `Size` of its files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Vec<Value>>,
}

fn string_at(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// A value Docker shows as `null` when missing.
fn or_null(v: &Value, key: &str) -> Value {
    v.get(key).cloned().unwrap_or(Value::Null)
}

/// A value Docker leaves out when missing or empty.
fn non_empty(v: &Value, key: &str) -> Option<Value> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(Value::Bool(false)) => None,
        Some(x) => Some(x.clone()),
    }
}

/// Builds the inspect document of `image`.
pub fn inspect(store: &Store, image: &ImageRecord) -> Result<ImageInspect> {
    let raw = super::config_json(store, image)?;
    let null = Value::Null;
    let size = super::size::Sizes::new(store).image(image)?;
    Ok(ImageInspect {
        id: image.id.to_string(),
        repo_tags: repo_tags(image),
        repo_digests: repo_digests(image),
        parent: String::new(),
        comment: string_at(&raw, "comment"),
        created: raw
            .get("created")
            .and_then(Value::as_str)
            .unwrap_or(ZERO_TIME)
            .to_owned(),
        container: string_at(&raw, "container"),
        container_config: InspectConfig::from_json(raw.get("container_config").unwrap_or(&null)),
        docker_version: string_at(&raw, "docker_version"),
        author: string_at(&raw, "author"),
        config: InspectConfig::from_json(raw.get("config").unwrap_or(&null)),
        architecture: image.config.architecture().to_string(),
        variant: image.config.variant().clone(),
        os: image.config.os().to_string(),
        os_version: image.config.os_version().clone(),
        size,
        virtual_size: size,
        graph_driver: GraphDriver::of_image(store, image),
        root_fs: InspectRootFs {
            kind: "layers".to_owned(),
            layers: image.diff_ids.iter().map(Digest::to_string).collect(),
        },
        metadata: InspectMetadata {
            last_tag_time: ZERO_TIME.to_owned(),
        },
        descriptor: None,
        manifests: None,
    })
}

/// `image inspect` of a name that holds an index of several platforms: the host's entry
/// (else the first) as [`inspect`] shows an image, under the index's digest and names, with
/// the index's `Descriptor` and every platform's entry in `Manifests`.
pub fn inspect_index(store: &Store, index: &IndexRecord) -> Result<ImageInspect> {
    let platforms = index.platforms();
    let shown = index
        .shown_manifest()
        .ok_or_else(|| crate::store::StoreError::InvalidIndex {
            index: index.digest.clone(),
            reason: "it names no platform".to_owned(),
        })?;
    let mut image = store.image_blobs(&shown)?;
    image.references = index.references.clone();
    let mut doc = inspect(store, &image)?;
    doc.id = index.digest.to_string();
    let mut digests: Vec<String> = index
        .references
        .iter()
        .map(|r| format!("{}@{}", r.familiar_name(), index.digest))
        .collect();
    digests.sort();
    digests.dedup();
    doc.repo_digests = digests;
    doc.descriptor = Some(serde_json::json!({
        "mediaType": config::MEDIA_TYPE_INDEX,
        "digest": index.digest.to_string(),
        "size": index.size,
    }));
    let mut sizes = super::size::Sizes::new(store);
    let mut manifests = Vec::new();
    for (p, m) in &platforms {
        let entry = store.image_blobs(m)?;
        let mut platform = serde_json::json!({"os": p.os, "architecture": p.architecture});
        if let Some(v) = &p.variant {
            platform["variant"] = v.clone().into();
        }
        manifests.push(serde_json::json!({
            "Platform": platform,
            "Digest": m.to_string(),
            "Id": entry.id.to_string(),
            "Size": sizes.image(&entry)?,
        }));
    }
    doc.manifests = Some(manifests);
    Ok(doc)
}

/// One row of `docker history`, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The image ID for the top row; `None` (`<missing>`) for the others,
    /// which have no image of their own.
    pub id: Option<Digest>,
    /// When the step ran.
    pub created: Option<Timestamp>,
    /// The step (`/bin/sh -c #(nop) CMD ["sh"]`).
    pub created_by: String,
    /// Bytes of the layer it made (0 for metadata-only steps).
    pub size: u64,
    /// The comment.
    pub comment: String,
    /// True for a step that made no layer.
    pub empty_layer: bool,
    /// The image's tags, on the top row.
    pub tags: Vec<String>,
}

/// The history of `image`, newest first, with layer sizes.
pub fn history(store: &Store, image: &ImageRecord) -> Result<Vec<HistoryEntry>> {
    let entries = config::layer_history(&image.config)?;
    let mut out = Vec::with_capacity(entries.len());
    let mut sizes = super::size::Sizes::new(store);
    for e in entries.into_iter().rev() {
        let size = match &e.diff_id {
            Some(d) => sizes.layer(d)?,
            None => 0,
        };
        out.push(HistoryEntry {
            id: None,
            created: e
                .history
                .created()
                .as_deref()
                .and_then(|c| Timestamp::parse_rfc3339(c).ok()),
            created_by: e.history.created_by().clone().unwrap_or_default(),
            size,
            comment: e.history.comment().clone().unwrap_or_default(),
            empty_layer: e.diff_id.is_none(),
            tags: Vec::new(),
        });
    }
    if let Some(top) = out.first_mut() {
        top.id = Some(image.id.clone());
        top.tags = repo_tags(image);
    }
    Ok(out)
}
