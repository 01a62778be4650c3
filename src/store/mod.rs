//! The content-addressed store under `--root`: an OCI image layout plus
//! kiln's snapshots, with crash-safe writes and locking between processes.
//!
//! ```text
//! <root>/kiln-store-version    "1\n": format of everything below; a newer number is refused
//! <root>/lock                  flock: serialises index.json updates
//! <root>/gc.lock               flock: writers shared, garbage collection exclusive
//! <root>/oci/oci-layout        {"imageLayoutVersion":"1.0.0"}
//! <root>/oci/index.json        one entry per tag, plus one per untagged image
//! <root>/oci/blobs/sha256/<hex>  configs, manifests, uncompressed layer tars (read-only files)
//! <root>/snapshots/<chainid-hex>/fs/             an unpacked layer (overlay lower dir)
//! <root>/snapshots/<chainid-hex>/snapshot.json   {"version":1,"chainId":…,"diffId":…,"parent":…}
//! <root>/tmp/                  work in progress; emptied by garbage collection
//! ```
//!
//! `<root>/oci` is a plain OCI image layout that other tools read directly:
//! `skopeo inspect oci:<root>/oci:docker.io/library/busybox:latest`, or
//! `umoci unpack --image <root>/oci:docker.io/library/busybox:latest dir`.
//! How tags and untagged images are recorded is described in [`index`].
//!
//! `snapshots/` and `tmp/` are mode 0700: unpacked layers may hold setuid
//! binaries, which other users of the host must not reach.

mod blobs;
mod error;
pub(crate) mod fsutil;
mod gc;
mod images;
pub mod index;
mod indexes;
mod lock;
mod snapshots;

#[cfg(test)]
mod interop_tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use error::{Result, StoreError};
pub use gc::{GcReport, GcRoots, Problem};
pub use images::ImageRecord;
pub use indexes::{index_bytes, platform_descriptor, IndexRecord, Stored};
pub use lock::Lease;
pub(crate) use lock::{lock_exclusive, LockGuard};
pub use snapshots::{Snapshot, SnapshotReservation};

use error::io_err;

/// The store format this kiln reads and writes.
pub const STORE_FORMAT_VERSION: u32 = 1;

/// Name of the file holding the store format version.
pub const VERSION_FILE: &str = "kiln-store-version";

/// The OCI image layout version kiln writes and reads.
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

/// Where the version file's content is quoted in errors, at most this long.
const MAX_QUOTED_VERSION: usize = 32;

/// A handle on a store root. Cheap to clone; holds no open files or locks.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// The root's mode when [`Store::open`] found it open to other users and tightened it.
    tightened_from: Option<u32>,
}

/// Makes the store root 0700 when group or others have any access to it: build logs (echoed
/// build args), container upper dirs, volumes, cache mounts and blobs are below it. A root
/// this user may not chmod is refused rather than used as it is.
fn tighten_root(root: &Path) -> Result<Option<u32>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(root).map_err(io_err("stat", root))?;
    let mode = md.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    let me = nix::unistd::geteuid();
    if !me.is_root() && md.uid() != me.as_raw() {
        return Err(StoreError::OpenRoot {
            path: root.to_path_buf(),
            mode,
            uid: md.uid(),
        });
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod 0700", root))?;
    Ok(Some(mode))
}

impl Store {
    /// Opens the store at `root`, creating it if needed.
    ///
    /// Refuses a store whose `kiln-store-version` is newer than
    /// [`STORE_FORMAT_VERSION`] before touching anything in it.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref();
        let root = std::path::absolute(root).map_err(io_err("resolve", root))?;
        fsutil::create_dir_all(&root, 0o700)?;
        let tightened_from = tighten_root(&root)?;
        let store = Store {
            root,
            tightened_from,
        };
        // Refuse a newer format before creating or locking anything.
        store.read_version()?;
        let _lock = store.lock_index()?;
        // Another process may have initialised the store while we waited.
        let existing = store.read_version()?;
        store.init_layout()?;
        if existing.is_none() {
            fsutil::write_atomic(
                &store.tmp_dir(),
                &store.root.join(VERSION_FILE),
                format!("{STORE_FORMAT_VERSION}\n").as_bytes(),
                0o644,
            )?;
        }
        Ok(store)
    }

    /// The mode the store root had when this open found it readable or searchable by other
    /// users (a `/var/lib/kiln` made by hand or by a package, 0755) and tightened it to 0700.
    /// The caller tells the user.
    pub fn tightened_from(&self) -> Option<u32> {
        self.tightened_from
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI image layout directory (`<root>/oci`), what `skopeo` and
    /// `umoci` are pointed at.
    pub fn oci_dir(&self) -> PathBuf {
        self.root.join("oci")
    }

    /// `<root>/oci/index.json`.
    pub fn index_path(&self) -> PathBuf {
        self.oci_dir().join("index.json")
    }

    /// `<root>/oci/blobs/sha256`.
    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.oci_dir().join("blobs").join("sha256")
    }

    /// `<root>/tmp`, where every write is staged. Garbage collection
    /// empties it, so anything working there must hold a [`Lease`] (or a
    /// [`SnapshotReservation`]) for as long as its files are needed.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `<root>/snapshots`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Keeps garbage collection away until dropped; see [`Lease`].
    pub fn lease(&self) -> Result<Lease> {
        Ok(Lease {
            _guard: self.gc_shared()?,
        })
    }

    pub(crate) fn lock_index(&self) -> Result<LockGuard> {
        lock::lock_exclusive(&self.root.join("lock"))
    }

    pub(crate) fn gc_shared(&self) -> Result<LockGuard> {
        lock::lock_shared(&self.root.join("gc.lock"))
    }

    pub(crate) fn try_gc_exclusive(&self) -> Result<Option<LockGuard>> {
        lock::try_lock_exclusive(&self.root.join("gc.lock"))
    }

    /// Reads `kiln-store-version`: `None` for a new store, an error for a
    /// newer or unreadable version.
    fn read_version(&self) -> Result<Option<u32>> {
        let path = self.root.join(VERSION_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(StoreError::BadFormatVersion {
                    path,
                    content: "(not UTF-8)".to_owned(),
                })
            }
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let bad = || StoreError::BadFormatVersion {
            path: path.clone(),
            content: text.chars().take(MAX_QUOTED_VERSION).collect(),
        };
        let found: u64 = text.trim().parse().map_err(|_| bad())?;
        if found > u64::from(STORE_FORMAT_VERSION) {
            return Err(StoreError::NewerFormat {
                root: self.root.clone(),
                found,
                supported: STORE_FORMAT_VERSION,
            });
        }
        if found == 0 {
            return Err(bad());
        }
        // found is 1..=STORE_FORMAT_VERSION here, so it fits.
        Ok(Some(found as u32))
    }

    /// Creates whatever part of the layout is missing. Called with the
    /// index lock held.
    fn init_layout(&self) -> Result<()> {
        fsutil::create_dir_all(&self.tmp_dir(), 0o700)?;
        fsutil::create_dir_all(&self.snapshots_dir(), 0o700)?;
        fsutil::create_dir_all(&self.blobs_dir(), 0o755)?;
        let layout = self.oci_dir().join("oci-layout");
        if !layout.exists() {
            let body = format!(r#"{{"imageLayoutVersion":"{OCI_LAYOUT_VERSION}"}}"#);
            fsutil::write_atomic(&self.tmp_dir(), &layout, body.as_bytes(), 0o644)?;
        }
        if !self.index_path().exists() {
            self.write_index(&index::empty_index())?;
        }
        self.check_layout()
    }

    /// Checks the `oci-layout` version of an initialised store.
    fn check_layout(&self) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            image_layout_version: String,
        }
        let path = self.oci_dir().join("oci-layout");
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        let layout: Layout =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptMetadata {
                path: path.clone(),
                reason: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        if layout.image_layout_version != OCI_LAYOUT_VERSION {
            return Err(StoreError::LayoutVersion {
                path,
                found: layout.image_layout_version,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builders for tiny images used by the store tests.

    use super::*;
    use crate::image::config::{self, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER};
    use crate::image::Digest;

    /// A store in a fresh temp dir (kept alive by the returned guard).
    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("root")).unwrap();
        (dir, store)
    }

    /// An uncompressed layer tar holding `files` (path, content).
    pub(crate) fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *content).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Config and manifest bytes for an image made of `layers` (already in
    /// the store); `label` makes otherwise identical images differ.
    pub(crate) fn image_bytes(store: &Store, layers: &[Digest], label: &str) -> (Vec<u8>, Vec<u8>) {
        let sized: Vec<(Digest, u64)> = layers
            .iter()
            .map(|d| (d.clone(), store.blob_size(d).unwrap()))
            .collect();
        image_bytes_sized(&sized, label)
    }

    /// Config and manifest bytes for an image made of layers with the given
    /// digests and sizes.
    pub(crate) fn image_bytes_sized(layers: &[(Digest, u64)], label: &str) -> (Vec<u8>, Vec<u8>) {
        let ids: Vec<String> = layers.iter().map(|(d, _)| format!("\"{d}\"")).collect();
        let history: Vec<String> = layers
            .iter()
            .map(|_| r#"{"created_by":"test layer"}"#.to_owned())
            .collect();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"t":"{label}"}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}},"history":[{}]}}"#,
            ids.join(","),
            history.join(",")
        )
        .into_bytes();
        let layer_descs = layers
            .iter()
            .map(|(d, size)| config::descriptor(MEDIA_TYPE_LAYER, d, *size))
            .collect();
        let manifest = config::new_manifest(
            config::descriptor(
                MEDIA_TYPE_CONFIG,
                &Digest::of_bytes(&config),
                config.len() as u64,
            ),
            layer_descs,
        );
        let manifest = config::canonical_json("manifest", &manifest).unwrap();
        (config, manifest)
    }

    /// Puts a one-layer-per-entry image into the store and returns it.
    pub(crate) fn put_test_image(store: &Store, layers: &[&[u8]], label: &str) -> ImageRecord {
        let digests: Vec<Digest> = layers
            .iter()
            .map(|l| store.put_blob_bytes(l, None).unwrap())
            .collect();
        let (config, manifest) = image_bytes(store, &digests, label);
        store.put_image(&config, &manifest).unwrap()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn adopt_blob_checks_size_and_moves_the_file() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let bytes = b"layer written by kiln";
        let digest = crate::image::Digest::of_bytes(bytes);
        let tmp = store.tmp_dir().join("adopt-test");
        std::fs::write(&tmp, bytes).unwrap();
        let err = store.adopt_blob(&tmp, &digest, 3).unwrap_err();
        assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
        assert!(
            !tmp.exists() && !store.has_blob(&digest),
            "nothing half-stored"
        );
        std::fs::write(&tmp, bytes).unwrap();
        store.adopt_blob(&tmp, &digest, bytes.len() as u64).unwrap();
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), bytes);
    }
    use super::test_support::temp_store;
    use super::*;

    #[test]
    fn open_creates_a_valid_oci_layout() {
        let (_dir, store) = temp_store();
        let root = store.root();
        assert_eq!(fs::read_to_string(root.join(VERSION_FILE)).unwrap(), "1\n");
        assert_eq!(
            fs::read_to_string(root.join("oci/oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index = oci_spec::image::ImageIndex::from_file(store.index_path()).unwrap();
        assert!(index.manifests().is_empty());
        assert!(root.join("oci/blobs/sha256").is_dir());
        use std::os::unix::fs::PermissionsExt;
        for d in ["tmp", "snapshots"] {
            let mode = fs::metadata(root.join(d)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
        // Opening again is harmless.
        Store::open(root).unwrap();
    }

    #[test]
    fn refuses_a_newer_store_format_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(VERSION_FILE), "2\n").unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NewerFormat {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("format version 2"), "{msg}");
        // Nothing was created next to the version file.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(VERSION_FILE)]);
    }

    #[test]
    fn refuses_a_garbled_version_file() {
        for content in ["", "one", "0", "-1", "1.5"] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(VERSION_FILE), content).unwrap();
            let err = Store::open(dir.path()).unwrap_err();
            assert!(
                matches!(err, StoreError::BadFormatVersion { .. }),
                "{content:?}: {err:?}"
            );
        }
    }

    #[test]
    fn refuses_an_unknown_oci_layout_version() {
        let (_dir, store) = temp_store();
        fs::write(
            store.oci_dir().join("oci-layout"),
            r#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        let err = Store::open(store.root()).unwrap_err();
        assert!(matches!(err, StoreError::LayoutVersion { .. }), "{err:?}");
    }
}
