//! Image and layer sizes as Docker counts them: the bytes a layer's files take once unpacked.
//!
//! Docker's image size (`docker images`, `history`, `system df`, `image inspect`'s `Size`) is
//! the sum over its layers of what the storage driver measured after unpacking: overlay2
//! walks the layer's directory and adds the size of every entry that is not a directory,
//! counting a hard-linked inode once. That is a regular file's length and a symlink's target
//! length; directories, devices, FIFOs and whiteouts (0/0 character devices) add nothing.
//! kiln keeps each layer as an uncompressed tar, whose size adds a 512-byte header per entry
//! and padding to 512 bytes per file: for a busybox rootfs, 2.13MB against Docker's 1.98MB.
//! So a layer is read once, header by header, and its sum kept in
//! `<root>/layer-sizes-v1/<diffID hex>` (layers never change under their digest).

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use super::error::Result;
use super::tarscan::{self, Kind, ScanLimits};
use crate::image::Digest;
use crate::store::{ImageRecord, Store};

/// Where the sums are kept, under the store root; the version is the format's.
const SIZES_DIR: &str = "layer-sizes-v1";

/// Limits for reading a stored layer: the extractor's (`crate::archive::Limits`).
fn limits() -> ScanLimits {
    let l = crate::archive::Limits::default();
    ScanLimits {
        max_size: l.max_total_size,
        max_entries: l.max_entries,
        max_header_size: l.max_pax_header_size,
    }
}

/// What one tar entry adds to the unpacked size (see the module comment).
fn entry_size(kind: &Kind) -> u64 {
    match kind {
        Kind::File(n) => *n,
        Kind::Symlink(target) => target.len() as u64,
        Kind::Dir | Kind::Hardlink(_) | Kind::Other(_) => 0,
    }
}

/// The unpacked size of the layer tar `reader` holds.
pub fn tar_content_size(reader: impl std::io::Read) -> Result<u64> {
    let mut total = 0u64;
    tarscan::scan(reader, &limits(), |e, _| {
        total = total.saturating_add(entry_size(&e.kind));
        Ok(())
    })?;
    Ok(total)
}

/// Sizes of layers and images, each layer read at most once per store (its sum is kept on
/// disk) and once per value of this type.
#[derive(Debug)]
pub struct Sizes<'s> {
    store: &'s Store,
    known: HashMap<Digest, u64>,
}

impl<'s> Sizes<'s> {
    /// Sizes over `store`.
    pub fn new(store: &'s Store) -> Sizes<'s> {
        Sizes {
            store,
            known: HashMap::new(),
        }
    }

    fn kept_path(&self, diff_id: &Digest) -> PathBuf {
        self.store.root().join(SIZES_DIR).join(diff_id.hex())
    }

    /// The unpacked size of the layer `diff_id`. A layer kiln cannot read (missing, or
    /// refused by the tar parser) counts its blob's size, with a warning in the log, so a
    /// listing never fails on one layer.
    pub fn layer(&mut self, diff_id: &Digest) -> Result<u64> {
        if let Some(n) = self.known.get(diff_id) {
            return Ok(*n);
        }
        let path = self.kept_path(diff_id);
        let kept = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let n = match kept {
            Some(n) => n,
            None => {
                let counted = self
                    .store
                    .open_blob(diff_id)
                    .map_err(super::ImageOpsError::from)
                    .and_then(|f| tar_content_size(std::io::BufReader::new(f)));
                match counted {
                    Ok(n) => {
                        self.keep(&path, n);
                        n
                    }
                    Err(e) => {
                        tracing::warn!(layer = %diff_id, error = %e, "cannot count the layer's files; showing its tar size");
                        self.store.blob_size(diff_id)?
                    }
                }
            }
        };
        self.known.insert(diff_id.clone(), n);
        Ok(n)
    }

    /// Writes a layer's sum for the next command; failing only costs a recount.
    fn keep(&self, path: &std::path::Path, n: u64) {
        let Some(dir) = path.parent() else { return };
        let kept = crate::store::fsutil::create_dir_all(dir, 0o700).and_then(|()| {
            crate::store::fsutil::write_atomic(
                &self.store.tmp_dir(),
                path,
                format!("{n}\n").as_bytes(),
                0o600,
            )
        });
        if let Err(e) = kept {
            tracing::debug!(path = %path.display(), error = %e, "cannot keep a layer size");
        }
    }

    /// An image's size: its layers' unpacked sizes (its config is not counted, as Docker).
    pub fn image(&mut self, image: &ImageRecord) -> Result<u64> {
        let mut total = 0u64;
        for d in &image.diff_ids {
            total = total.saturating_add(self.layer(d)?);
        }
        Ok(total)
    }

    /// Forgets the kept sums of layers that are gone from the store.
    pub fn forget(&self, diff_ids: &[Digest]) {
        for d in diff_ids {
            let _ = fs::remove_file(self.kept_path(d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{put_test_image, temp_store};

    /// A tar with a file, a symlink, a hard link to the file, a directory and a whiteout.
    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1000);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/busybox", &[7u8; 1000][..])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "bin/sh", "busybox").unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "bin/ash", "bin/busybox").unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "etc/.wh.gone", std::io::empty())
            .unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_layer_counts_file_bytes_and_link_targets_as_docker() {
        let tar = sample();
        // 1000 bytes of file, 7 of symlink target; the hard link, the directory and the
        // whiteout add nothing. The tar itself is 512-byte blocks: far more.
        assert_eq!(tar_content_size(&tar[..]).unwrap(), 1007);
        assert!(tar.len() > 3000);
    }

    #[test]
    fn sizes_are_kept_per_layer_and_summed_per_image() {
        let (_dir, store) = temp_store();
        let tar = sample();
        let image = put_test_image(&store, &[&tar, &tar[..0]], "a");
        let mut sizes = Sizes::new(&store);
        let layer = &image.diff_ids[0];
        assert_eq!(sizes.layer(layer).unwrap(), 1007);
        let kept = store.root().join(SIZES_DIR).join(layer.hex());
        assert_eq!(fs::read_to_string(&kept).unwrap(), "1007\n");
        // The kept sum is what a later command reads.
        fs::write(&kept, "5\n").unwrap();
        let mut later = Sizes::new(&store);
        assert_eq!(later.layer(layer).unwrap(), 5);
        sizes.forget(std::slice::from_ref(layer));
        assert!(!kept.exists());
        let mut fresh = Sizes::new(&store);
        assert_eq!(fresh.image(&image).unwrap(), 1007);
    }
}
