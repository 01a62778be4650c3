//! Manifest lists assembled from images already in a registry (`kiln manifest create`,
//! `annotate`, `push`, `rm`), kept in a list store of their own under the store root.
//!
//! As Docker keeps `~/.docker/manifests`, kiln keeps `<root>/manifests/v1/<sha256 of the
//! list's name>.json`: one file per list, replaced atomically, holding each child's
//! reference, descriptor (with the platform read from its config, or annotated) and the
//! manifest's bytes, so a push can copy a child into the list's repository without
//! fetching it again. The images of the store are not involved.
//!
//! Pushing a list whose images live in another repository, and copying an index to another
//! registry (`kiln buildx imagetools create`), share one copier: [`copy_manifest`] (blobs
//! mounted within a registry, streamed between two) and [`copy_tagged`].

use std::io::Read;
use std::path::PathBuf;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::client::{Client, MAX_MANIFEST_SIZE};
use super::error::RegistryError;
use super::media;
use crate::common::atomic::{self, AtomicError};
use crate::image::config::{self, ConfigError};
use crate::image::{Digest, Reference};
use crate::store::{index, Store, StoreError};

/// Largest image config read for a child's platform.
const MAX_CONFIG_SIZE: u64 = 32 << 20;

/// Why a manifest-list operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestListError {
    /// No list of that name has been created.
    #[error("no such manifest: {0}")]
    NotFound(String),
    /// `create` of a list that exists, without `--amend` (Docker's words).
    #[error("refusing to amend an existing manifest list with no --amend flag")]
    Exists(String),
    /// A child given to `create` is itself a list.
    #[error("{0} is a manifest list")]
    IsList(String),
    /// `annotate` of an image the list does not hold.
    #[error("manifest for image {image} does not exist in {list}")]
    NotInList {
        /// The image.
        image: String,
        /// The list.
        list: String,
    },
    /// A child in another registry than the list.
    #[error(
        "cannot use source images from a different registry than the target image: {0} != {1}"
    )]
    OtherRegistry(String, String),
    /// A child without a platform cannot be pushed.
    #[error("manifest {0} must have an OS and Architecture to be pushed to a registry")]
    NoPlatform(String),
    /// A platform `annotate` was given that Go (and so Docker) does not know.
    #[error("manifest entry for image {image} has unsupported os/arch combination: {os}/{arch}")]
    BadPlatform {
        /// The image.
        image: String,
        /// The OS given.
        os: String,
        /// The architecture given.
        arch: String,
    },
    /// A list can only be pushed to a tag.
    #[error("cannot push a manifest list to a digest reference: {0}")]
    DigestTarget(String),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest or config that is not acceptable.
    #[error(transparent)]
    Document(#[from] ConfigError),
    /// The list file could not be read or written.
    #[error(transparent)]
    File(#[from] AtomicError),
    /// A list file that is not what kiln wrote.
    #[error("manifest list file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Results of manifest-list operations.
pub type Result<T, E = ManifestListError> = std::result::Result<T, E>;

/// A platform as an index descriptor gives it (the OCI field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPlatform {
    /// CPU architecture (`amd64`, `arm64`, `arm`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features (Windows).
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A descriptor of a child manifest in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildDescriptor {
    /// The manifest's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its digest.
    pub digest: Digest,
    /// Its annotations (an index another tool wrote may have them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// Its platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<ListPlatform>,
}

/// One image of a list being assembled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The image as given to `create`, normalised (`127.0.0.1:5000/app:amd64`).
    pub reference: String,
    /// Its descriptor in the list.
    pub descriptor: ChildDescriptor,
    /// The manifest's bytes, base64 (what the digest covers).
    pub raw: String,
}

impl ListEntry {
    /// The manifest's bytes.
    pub fn raw_bytes(&self) -> Result<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.raw)
            .map_err(|e| ManifestListError::Damaged {
                path: self.reference.clone(),
                reason: format!("manifest bytes: {e}"),
            })
    }

    /// The parsed reference of the image.
    pub fn parsed(&self) -> Result<Reference> {
        Ok(Reference::parse(&self.reference).map_err(RegistryError::from)?)
    }
}

/// A list being assembled: its name and its images, in the order added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestList {
    /// The list's name, normalised (`127.0.0.1:5000/app:1`).
    pub name: String,
    /// Its images.
    pub entries: Vec<ListEntry>,
}

/// The list store: `<root>/manifests/v1/`.
#[derive(Debug, Clone)]
pub struct ListStore {
    dir: PathBuf,
    tmp: PathBuf,
}

/// The list store's lock ([`ListStore::lock`]); released when dropped.
#[derive(Debug)]
pub struct ListLock {
    _guard: crate::store::LockGuard,
}

/// The name a list is kept under: the reference with a tag.
fn list_name(list: &Reference) -> String {
    list.clone().with_default_tag().to_string()
}

impl ListStore {
    /// The list store of `store`.
    pub fn new(store: &Store) -> ListStore {
        ListStore {
            dir: store.root().join("manifests").join("v1"),
            tmp: store.tmp_dir(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", Digest::of_bytes(name.as_bytes()).hex()))
    }

    /// An exclusive lock on the list store, held by a command from reading a list to
    /// writing it back, so two `--amend`s of one list both count. Released when dropped.
    pub fn lock(&self) -> Result<ListLock> {
        atomic::create_dir_all(&self.dir, 0o700)?;
        Ok(ListLock {
            // Beside the lists, not among them.
            _guard: crate::store::lock_exclusive(&self.dir.with_file_name("v1.lock"))?,
        })
    }

    /// The list named `list`, if one was created.
    pub fn get(&self, list: &Reference) -> Result<Option<ManifestList>> {
        let name = list_name(list);
        let path = self.path(&name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(AtomicError {
                    op: "read",
                    path,
                    source,
                }
                .into())
            }
        };
        let damaged = |reason: String| ManifestListError::Damaged {
            path: path.display().to_string(),
            reason,
        };
        let parsed: ManifestList =
            serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
        if parsed.name != name {
            return Err(damaged(format!("it names {}", parsed.name)));
        }
        Ok(Some(parsed))
    }

    /// The list named `list`, or [`ManifestListError::NotFound`].
    pub fn require(&self, list: &Reference) -> Result<ManifestList> {
        self.get(list)?
            .ok_or_else(|| ManifestListError::NotFound(list_name(list)))
    }

    /// Writes `list` (replacing the file atomically).
    pub fn save(&self, list: &ManifestList) -> Result<()> {
        atomic::create_dir_all(&self.dir, 0o700)?;
        let bytes = serde_json::to_vec(list).map_err(|e| ManifestListError::Damaged {
            path: list.name.clone(),
            reason: e.to_string(),
        })?;
        atomic::write_atomic(&self.tmp, &self.path(&list.name), &bytes, 0o600)?;
        Ok(())
    }

    /// Removes the list named `list`; [`ManifestListError::NotFound`] when there is none.
    pub fn remove(&self, list: &Reference) -> Result<()> {
        let name = list_name(list);
        let path = self.path(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(atomic::fsync_dir(&self.dir)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ManifestListError::NotFound(name))
            }
            Err(source) => Err(AtomicError {
                op: "remove",
                path,
                source,
            }
            .into()),
        }
    }
}

/// True for the media types of indexes and manifest lists.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == media::OCI_INDEX || media_type == media::DOCKER_LIST
}

/// The fields of a manifest a list needs.
#[derive(Deserialize)]
struct ManifestProbe {
    config: ConfigDescriptor,
    #[serde(default)]
    layers: Vec<LayerDescriptor>,
}

#[derive(Deserialize)]
struct ConfigDescriptor {
    digest: Digest,
    size: u64,
}

#[derive(Deserialize)]
struct LayerDescriptor {
    digest: Digest,
    size: u64,
    #[serde(default)]
    urls: Vec<String>,
}

fn probe_manifest(what: &str, bytes: &[u8]) -> Result<ManifestProbe> {
    serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::Invalid(format!("manifest of {what} is not an image manifest: {e}")).into()
    })
}

/// Fetches the image `reference` names and makes its list entry: its descriptor, with the
/// platform its config gives. An index is refused, as Docker refuses it.
pub fn fetch_entry(client: &Client, reference: &Reference) -> Result<ListEntry> {
    let shown = super::display(reference);
    let repo = reference.path();
    let m = client.fetch_manifest(repo, &reference.tag_or_digest())?;
    if is_index_type(&m.media_type) {
        return Err(ManifestListError::IsList(shown));
    }
    let probe = probe_manifest(&shown, &m.bytes)?;
    let config_bytes = client.fetch_blob_verified(
        repo,
        &probe.config.digest,
        probe.config.size.min(MAX_CONFIG_SIZE),
        "config",
    )?;
    let platform: ListPlatform = serde_json::from_slice(&config_bytes)
        .map_err(|e| RegistryError::Invalid(format!("config of {shown} has no platform: {e}")))?;
    let named = match reference.digest() {
        Some(_) => reference.clone(),
        None => reference.clone().with_default_tag(),
    };
    Ok(ListEntry {
        reference: named.to_string(),
        descriptor: ChildDescriptor {
            media_type: m.media_type,
            size: m.bytes.len() as u64,
            digest: m.digest,
            annotations: None,
            platform: Some(platform),
        },
        raw: base64::engine::general_purpose::STANDARD.encode(&m.bytes),
    })
}

/// Adds `entry` to `list`, replacing an entry of the same image (Docker's `--amend`).
pub fn add_entry(list: &mut ManifestList, entry: ListEntry) {
    match list
        .entries
        .iter_mut()
        .find(|e| e.reference == entry.reference)
    {
        Some(old) => *old = entry,
        None => list.entries.push(entry),
    }
}

/// Checks that every image of `list` is in the registry of `target`.
pub fn check_same_registry(target: &Reference, list: &ManifestList) -> Result<()> {
    for e in &list.entries {
        let r = e.parsed()?;
        if r.domain() != target.domain() {
            return Err(ManifestListError::OtherRegistry(
                r.domain().to_string(),
                target.domain().to_string(),
            ));
        }
    }
    Ok(())
}

/// Architectures Go knows for each OS (Docker validates `annotate` against Go's list).
const KNOWN_PLATFORMS: &[(&str, &[&str])] = &[
    (
        "linux",
        &[
            "386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le",
            "ppc64", "ppc64le", "riscv64", "s390x",
        ],
    ),
    ("windows", &["386", "amd64", "arm", "arm64"]),
    ("darwin", &["amd64", "arm64"]),
    ("freebsd", &["386", "amd64", "arm", "arm64", "riscv64"]),
];

/// What `annotate` changes.
#[derive(Debug, Clone, Default)]
pub struct Annotation {
    /// `--os`.
    pub os: Option<String>,
    /// `--arch`.
    pub arch: Option<String>,
    /// `--variant`.
    pub variant: Option<String>,
    /// `--os-version`.
    pub os_version: Option<String>,
    /// `--os-features`.
    pub os_features: Vec<String>,
}

/// Sets the platform fields `a` gives on the entry of `image` in `list`.
pub fn annotate(list: &mut ManifestList, image: &Reference, a: &Annotation) -> Result<()> {
    let wanted = match image.digest() {
        Some(_) => image.to_string(),
        None => image.clone().with_default_tag().to_string(),
    };
    let list_name = list.name.clone();
    let entry = list
        .entries
        .iter_mut()
        .find(|e| e.reference == wanted)
        .ok_or_else(|| ManifestListError::NotInList {
            image: super::display(image),
            list: list_name,
        })?;
    let p = entry
        .descriptor
        .platform
        .get_or_insert_with(Default::default);
    if let Some(os) = &a.os {
        p.os = os.clone();
    }
    if let Some(arch) = &a.arch {
        p.architecture = arch.clone();
    }
    if let Some(v) = &a.variant {
        p.variant = Some(v.clone()).filter(|v| !v.is_empty());
    }
    if let Some(v) = &a.os_version {
        p.os_version = Some(v.clone()).filter(|v| !v.is_empty());
    }
    if !a.os_features.is_empty() {
        p.os_features = a.os_features.clone();
    }
    let known = KNOWN_PLATFORMS
        .iter()
        .any(|(os, arches)| *os == p.os && arches.contains(&p.architecture.as_str()));
    if !known {
        return Err(ManifestListError::BadPlatform {
            image: super::display(image),
            os: p.os.clone(),
            arch: p.architecture.clone(),
        });
    }
    Ok(())
}

/// The index `list` makes, and its media type: an OCI index, or a Docker manifest list when
/// every child is a Docker manifest (Docker keeps Docker's types together). Compact JSON
/// with the fields in Docker's order (the structs fix it, so the bytes are reproducible).
pub fn index_document(list: &ManifestList) -> Result<(Vec<u8>, &'static str)> {
    let mut manifests = Vec::with_capacity(list.entries.len());
    for e in &list.entries {
        let ok = e
            .descriptor
            .platform
            .as_ref()
            .is_some_and(|p| !p.os.is_empty() && !p.architecture.is_empty());
        if !ok {
            return Err(ManifestListError::NoPlatform(e.reference.clone()));
        }
        manifests.push(e.descriptor.clone());
    }
    let docker = !manifests.is_empty()
        && manifests
            .iter()
            .all(|d| d.media_type == media::DOCKER_MANIFEST);
    let media_type = if docker {
        media::DOCKER_LIST
    } else {
        media::OCI_INDEX
    };
    #[derive(Serialize)]
    struct Index<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        manifests: &'a [ChildDescriptor],
    }
    let doc = Index {
        schema_version: 2,
        media_type,
        manifests: &manifests,
    };
    let bytes = serde_json::to_vec(&doc).map_err(|source| ConfigError::Encode {
        what: "index",
        source,
    })?;
    Ok((bytes, media_type))
}

/// A pushed list.
#[derive(Debug, Clone)]
pub struct PushedList {
    /// The index's digest.
    pub digest: Digest,
    /// Children copied into the list's repository from another one: (image, digest).
    pub copied: Vec<(String, Digest)>,
}

/// A repository of a registry, and the client that reaches it.
#[derive(Debug, Clone, Copy)]
pub struct Repo<'a> {
    /// A client of the registry.
    pub client: &'a Client,
    /// The repository's path (`library/busybox`).
    pub path: &'a str,
}

/// Makes `to` hold the blob `digest` (of `size` bytes) of `from`: present already, mounted
/// (same registry), or streamed through kiln (the registry checks the digest).
fn copy_blob(from: Repo<'_>, to: Repo<'_>, digest: &Digest, size: u64) -> Result<()> {
    if to.client.has_blob(to.path, digest)?.is_some() {
        return Ok(());
    }
    let same_registry = from.client.registry() == to.client.registry();
    if same_registry && to.client.mount_blob(to.path, digest, from.path)? {
        return Ok(());
    }
    let open = || -> std::io::Result<Box<dyn Read + Send>> {
        from.client
            .blob_reader(from.path, digest)
            .map_err(std::io::Error::other)
    };
    to.client.upload_blob(to.path, digest, size, &open)?;
    Ok(())
}

/// Copies the image manifest `raw` (of media type `media_type`) from `from` to `to`: its
/// blobs, then the manifest under its digest.
pub fn copy_manifest(from: Repo<'_>, to: Repo<'_>, raw: &[u8], media_type: &str) -> Result<Digest> {
    let digest = Digest::of_bytes(raw);
    if is_index_type(media_type) {
        return Err(RegistryError::Invalid(format!(
            "{digest} is an index inside an index, which kiln does not copy"
        ))
        .into());
    }
    let probe = probe_manifest(digest.as_str(), raw)?;
    copy_blob(from, to, &probe.config.digest, probe.config.size)?;
    // Foreign layers (with URLs) are not in the registry; the manifest points elsewhere.
    for l in probe.layers.iter().filter(|l| l.urls.is_empty()) {
        copy_blob(from, to, &l.digest, l.size)?;
    }
    to.client
        .put_manifest(to.path, digest.as_str(), raw, media_type)?;
    Ok(digest)
}

/// Copies the image of `entry` (in another repository of the registry) into `repo`.
fn copy_child(client: &Client, repo: &str, entry: &ListEntry) -> Result<()> {
    let source = entry.parsed()?;
    let raw = entry.raw_bytes()?;
    if raw.len() as u64 > MAX_MANIFEST_SIZE || Digest::of_bytes(&raw) != entry.descriptor.digest {
        return Err(ManifestListError::Damaged {
            path: entry.reference.clone(),
            reason: "the kept manifest does not match its digest".into(),
        });
    }
    let from = Repo {
        client,
        path: source.path(),
    };
    let to = Repo { client, path: repo };
    copy_manifest(from, to, &raw, &entry.descriptor.media_type)?;
    Ok(())
}

/// Copies what `source` names (an index with every image it lists, or one image) to the
/// tag `tag` of `to`, unchanged, so its digest stays; returns that digest. Images of the
/// index are copied before it, so the index is complete where it lands.
pub fn copy_tagged(from: Repo<'_>, source: &str, to: Repo<'_>, tag: &str) -> Result<Digest> {
    let m = from.client.fetch_manifest(from.path, source)?;
    if is_index_type(&m.media_type) {
        for child in index_children(&m.bytes)? {
            let c = from
                .client
                .fetch_manifest(from.path, child.digest.as_str())?;
            copy_manifest(from, to, &c.bytes, &c.media_type)?;
        }
    } else {
        copy_manifest(from, to, &m.bytes, &m.media_type)?;
    }
    Ok(to
        .client
        .put_manifest(to.path, tag, &m.bytes, &m.media_type)?)
}

/// Pushes `list` as `target` (a tag): children from other repositories of the registry are
/// copied in first (blobs mounted where the registry can), then the index. Returns its digest.
pub fn push_list(client: &Client, target: &Reference, list: &ManifestList) -> Result<PushedList> {
    if target.digest().is_some() {
        return Err(ManifestListError::DigestTarget(super::display(target)));
    }
    check_same_registry(target, list)?;
    let (bytes, media_type) = index_document(list)?;
    let repo = target.path();
    let mut copied = Vec::new();
    for e in &list.entries {
        if e.parsed()?.path() != repo {
            copy_child(client, repo, e)?;
            copied.push((e.reference.clone(), e.descriptor.digest.clone()));
        }
    }
    let digest = client.put_manifest(repo, &target.tag_or_digest(), &bytes, media_type)?;
    Ok(PushedList { digest, copied })
}

/// The manifest or index a tag of the store names: its bytes and media type.
pub fn stored_document(store: &Store, reference: &Reference) -> Result<Option<(Vec<u8>, String)>> {
    let name = match reference.digest() {
        Some(_) => reference.to_string(),
        None => reference.clone().with_default_tag().to_string(),
    };
    let idx = store.read_index()?;
    let Some(entry) = idx
        .manifests()
        .iter()
        .find(|e| index::ref_name(e) == Some(name.as_str()))
    else {
        return Ok(None);
    };
    let digest = config::descriptor_digest("index", "digest", entry)?;
    let bytes = store.read_blob(&digest, "manifest", MAX_MANIFEST_SIZE)?;
    Ok(Some((bytes, entry.media_type().to_string())))
}

/// The descriptors of an index's children, in order.
pub fn index_children(bytes: &[u8]) -> Result<Vec<ChildDescriptor>> {
    #[derive(Deserialize)]
    struct Children {
        manifests: Vec<ChildDescriptor>,
    }
    let c: Children = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Invalid(format!("not an index: {e}")))?;
    Ok(c.manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reference: &str, media_type: &str, arch: &str) -> ListEntry {
        let raw = format!("{{\"arch\":\"{arch}\"}}");
        ListEntry {
            reference: reference.into(),
            descriptor: ChildDescriptor {
                media_type: media_type.into(),
                size: raw.len() as u64,
                digest: Digest::of_bytes(raw.as_bytes()),
                annotations: None,
                platform: Some(ListPlatform {
                    architecture: arch.into(),
                    os: "linux".into(),
                    ..Default::default()
                }),
            },
            raw: base64::engine::general_purpose::STANDARD.encode(raw),
        }
    }

    #[test]
    fn the_index_type_follows_the_children() {
        let mut list = ManifestList {
            name: "127.0.0.1:5000/app:1".into(),
            entries: vec![
                entry("127.0.0.1:5000/app:a", media::DOCKER_MANIFEST, "amd64"),
                entry("127.0.0.1:5000/app:b", media::DOCKER_MANIFEST, "arm64"),
            ],
        };
        let (bytes, t) = index_document(&list).unwrap();
        assert_eq!(t, media::DOCKER_LIST);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["mediaType"], media::DOCKER_LIST);
        assert_eq!(v["manifests"][1]["platform"]["architecture"], "arm64");
        assert!(v["manifests"][0]["platform"].get("variant").is_none());
        list.entries[1].descriptor.media_type = media::OCI_MANIFEST.into();
        assert_eq!(index_document(&list).unwrap().1, media::OCI_INDEX);
    }

    #[test]
    fn amend_replaces_the_same_image_and_annotate_checks_the_platform() {
        let mut list = ManifestList {
            name: "127.0.0.1:5000/app:1".into(),
            entries: vec![entry("127.0.0.1:5000/app:a", media::OCI_MANIFEST, "amd64")],
        };
        add_entry(
            &mut list,
            entry("127.0.0.1:5000/app:a", media::OCI_MANIFEST, "arm64"),
        );
        assert_eq!(list.entries.len(), 1);
        let image = Reference::parse("127.0.0.1:5000/app:a").unwrap();
        let a = Annotation {
            arch: Some("arm".into()),
            variant: Some("v7".into()),
            ..Default::default()
        };
        annotate(&mut list, &image, &a).unwrap();
        let p = list.entries[0].descriptor.platform.clone().unwrap();
        assert_eq!(
            (p.architecture.as_str(), p.variant.as_deref()),
            ("arm", Some("v7"))
        );
        let bad = Annotation {
            arch: Some("z80".into()),
            ..Default::default()
        };
        let e = annotate(&mut list, &image, &bad).unwrap_err().to_string();
        assert!(
            e.contains("unsupported os/arch combination: linux/z80"),
            "{e}"
        );
        let other = Reference::parse("127.0.0.1:5000/app:zz").unwrap();
        let e = annotate(&mut list, &other, &a).unwrap_err().to_string();
        assert!(e.contains("does not exist in"), "{e}");
    }

    #[test]
    fn lists_are_kept_apart_from_images_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lists = ListStore::new(&store);
        let name = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert!(lists.get(&name).unwrap().is_none());
        let list = ManifestList {
            name: "127.0.0.1:5000/app:latest".into(),
            entries: vec![entry("127.0.0.1:5000/app:a", media::OCI_MANIFEST, "amd64")],
        };
        lists.save(&list).unwrap();
        assert_eq!(lists.require(&name).unwrap(), list);
        assert!(store.list_images().unwrap().is_empty());
        lists.remove(&name).unwrap();
        let e = lists.remove(&name).unwrap_err().to_string();
        assert_eq!(e, "no such manifest: 127.0.0.1:5000/app:latest");
    }

    #[test]
    fn children_from_another_registry_are_refused() {
        let list = ManifestList {
            name: "127.0.0.1:5000/app:latest".into(),
            entries: vec![entry("127.0.0.1:6000/app:a", media::OCI_MANIFEST, "amd64")],
        };
        let target = Reference::parse("127.0.0.1:5000/app").unwrap();
        let e = check_same_registry(&target, &list).unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:6000 != 127.0.0.1:5000"), "{e}");
    }
}
