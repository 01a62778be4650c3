//! Blobs: content-addressed files under `oci/blobs/sha256/`, written by
//! streaming through a hash into `tmp/` and renamed into place only once
//! their digest (and size, when known) checks out.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::error::{io_err, Result, StoreError};
use super::{fsutil, Store};
use crate::image::{Digest, Sha256Writer};

/// Blobs are immutable: published read-only.
const BLOB_MODE: u32 = 0o444;

impl Store {
    /// The path a blob has (or would have) in the store. Safe to build from
    /// any [`Digest`]: it can only hold 64 hex digits.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// True if the blob is in the store.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// The size of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(io_err("stat", path)(e)),
        }
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(io_err("open", path)(e)),
        }
    }

    /// Reads a small blob (a manifest or config) into memory, refusing one
    /// larger than `limit` and verifying its digest, so a corrupted file is
    /// never parsed as if it were the document.
    pub fn read_blob(&self, digest: &Digest, what: &'static str, limit: u64) -> Result<Vec<u8>> {
        let file = self.open_blob(digest)?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", self.blob_path(digest)))?;
        if bytes.len() as u64 > limit {
            return Err(StoreError::BlobTooLarge {
                digest: digest.clone(),
                what,
                size: self.blob_size(digest)?,
                limit,
            });
        }
        let actual = Digest::of_bytes(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Stores everything `reader` yields and returns its digest.
    ///
    /// The bytes stream into a temp file in `<root>/tmp` while being
    /// hashed; when `expected` is given and the content does not match,
    /// the temp file is removed and nothing is stored. Otherwise the file
    /// is fsynced and renamed into `blobs/sha256/`. Storing a blob that is
    /// already present is a no-op; with `expected` given, `reader` is then
    /// not read at all.
    pub fn put_blob<R: Read>(&self, reader: R, expected: Option<&Digest>) -> Result<Digest> {
        let _gc = self.gc_shared()?;
        if let Some(d) = expected {
            if self.has_blob(d) {
                return Ok(d.clone());
            }
        }
        self.stream_blob(reader, expected, None)
    }

    /// Stores a blob whose digest and size are announced (a layer from a
    /// registry): reads at most `size + 1` bytes, so an endless or
    /// over-long stream is cut off and rejected, as is a short one.
    pub fn put_blob_sized<R: Read>(&self, reader: R, expected: &Digest, size: u64) -> Result<()> {
        let _gc = self.gc_shared()?;
        if self.has_blob(expected) {
            let found = self.blob_size(expected)?;
            if found != size {
                return Err(StoreError::SizeMismatch {
                    digest: expected.clone(),
                    expected: size,
                    actual: found,
                });
            }
            return Ok(());
        }
        self.stream_blob(
            reader.take(size.saturating_add(1)),
            Some(expected),
            Some(size),
        )
        .map(|_| ())
    }

    /// Adopts a file written into the store's `tmp/` (same filesystem) as the blob
    /// `digest`, by rename instead of a copy: for layers kiln writes itself, hashing every
    /// byte as it writes them (a multi-gigabyte layer is then written once, not twice). The
    /// size is checked; the file is removed in every case that does not keep it.
    pub fn adopt_blob(&self, path: &std::path::Path, digest: &Digest, size: u64) -> Result<()> {
        let _gc = self.gc_shared()?;
        let guard = fsutil::TempPath::new(path.to_path_buf());
        if self.has_blob(digest) {
            return Ok(());
        }
        let file = fs::File::open(path).map_err(io_err("open", path))?;
        let actual = file.metadata().map_err(io_err("stat", path))?.len();
        if actual != size {
            return Err(StoreError::SizeMismatch {
                digest: digest.clone(),
                expected: size,
                actual,
            });
        }
        file.set_permissions(fs::Permissions::from_mode(BLOB_MODE))
            .map_err(io_err("chmod", path))?;
        file.sync_all().map_err(io_err("fsync", path))?;
        drop(file);
        fsutil::rename_durable(path, &self.blob_path(digest))?;
        guard.disarm();
        Ok(())
    }

    /// Stores `bytes` and returns their digest. The digest is known before anything is
    /// written, so bytes already stored (an unchanged rebuild's config and manifest) cost no
    /// temp file and no fsync.
    pub fn put_blob_bytes(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if let Some(want) = expected {
            if *want != digest {
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let _gc = self.gc_shared()?;
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        self.stream_blob(bytes, Some(&digest), Some(bytes.len() as u64))
    }

    /// The common path of the `put_blob*` functions; the caller holds the
    /// shared GC lock.
    fn stream_blob<R: Read>(
        &self,
        mut reader: R,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest> {
        let (tmp, file) = fsutil::create_temp_file(&self.tmp_dir(), "blob")?;
        let guard = fsutil::TempPath::new(tmp.clone());
        let mut writer = Sha256Writer::new(BufWriter::new(file));
        io::copy(&mut reader, &mut writer).map_err(io_err("write blob", &tmp))?;
        let (buffered, digest, written) = writer.finish();
        if let Some(want) = size {
            if written != want {
                return Err(StoreError::SizeMismatch {
                    digest: expected.cloned().unwrap_or(digest),
                    expected: want,
                    actual: written,
                });
            }
        }
        if let Some(want) = expected {
            if *want != digest {
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let mut file = buffered
            .into_inner()
            .map_err(|e| io_err("write blob", &tmp)(e.into_error()))?;
        file.flush().map_err(io_err("write blob", &tmp))?;
        file.set_permissions(fs::Permissions::from_mode(BLOB_MODE))
            .map_err(io_err("chmod", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(file);
        let dest = self.blob_path(&digest);
        if dest.is_file() {
            // Another writer got there first; the content is the same.
            drop(guard);
            return Ok(digest);
        }
        fsutil::rename_durable(&tmp, &dest)?;
        guard.disarm();
        tracing::debug!(%digest, size = written, "stored blob");
        Ok(digest)
    }

    /// Every blob in the store, by digest; files whose names are not
    /// digests are skipped.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_sha256_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use std::path::Path;
    use std::sync::Arc;

    fn dir_is_empty(p: &Path) -> bool {
        fs::read_dir(p).unwrap().next().is_none()
    }

    #[test]
    fn put_and_read_back() {
        let (_dir, store) = temp_store();
        let d = store.put_blob_bytes(b"hello", None).unwrap();
        assert_eq!(d, Digest::of_bytes(b"hello"));
        assert!(store.has_blob(&d));
        assert_eq!(store.blob_size(&d).unwrap(), 5);
        let mut s = String::new();
        store.open_blob(&d).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert_eq!(store.read_blob(&d, "test", 5).unwrap(), b"hello");
        assert_eq!(
            store.blob_path(&d),
            store.root().join("oci/blobs/sha256").join(d.hex())
        );
        let mode = fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert!(dir_is_empty(&store.tmp_dir()));
        assert_eq!(store.list_blobs().unwrap(), vec![d]);
    }

    #[test]
    fn put_is_idempotent() {
        let (_dir, store) = temp_store();
        let a = store.put_blob_bytes(b"same", None).unwrap();
        let b = store.put_blob_bytes(b"same", None).unwrap();
        let c = store.put_blob_bytes(b"same", Some(&a)).unwrap();
        assert_eq!((&a, &b), (&c, &c));
        assert_eq!(store.list_blobs().unwrap().len(), 1);
        assert!(dir_is_empty(&store.tmp_dir()));
    }

    #[test]
    fn mismatched_content_is_rejected_and_leaves_nothing() {
        let (_dir, store) = temp_store();
        let claimed = Digest::of_bytes(b"what the registry promised");
        let err = store
            .put_blob_bytes(b"what it sent", Some(&claimed))
            .unwrap_err();
        match err {
            StoreError::DigestMismatch { expected, actual } => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Digest::of_bytes(b"what it sent"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!store.has_blob(&claimed));
        assert!(dir_is_empty(&store.blobs_dir()));
        assert!(dir_is_empty(&store.tmp_dir()));
    }

    #[test]
    fn sized_put_rejects_wrong_sizes_and_endless_streams() {
        let (_dir, store) = temp_store();
        let content = b"0123456789";
        let d = Digest::of_bytes(content);
        // Correct prefix plus trailing bytes: refused, nothing committed.
        let err = store
            .put_blob_sized(&b"0123456789EXTRA"[..], &d, 10)
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SizeMismatch {
                    expected: 10,
                    actual: 11,
                    ..
                }
            ),
            "{err:?}"
        );
        // Short stream.
        let err = store.put_blob_sized(&b"01234"[..], &d, 10).unwrap_err();
        assert!(
            matches!(err, StoreError::SizeMismatch { actual: 5, .. }),
            "{err:?}"
        );
        // An endless stream is cut off after size + 1 bytes.
        let err = store.put_blob_sized(io::repeat(b'x'), &d, 10).unwrap_err();
        assert!(
            matches!(err, StoreError::SizeMismatch { actual: 11, .. }),
            "{err:?}"
        );
        // Right size, wrong bytes.
        let err = store
            .put_blob_sized(&b"abcdefghij"[..], &d, 10)
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err:?}");
        assert!(dir_is_empty(&store.blobs_dir()));
        assert!(dir_is_empty(&store.tmp_dir()));
        store.put_blob_sized(&content[..], &d, 10).unwrap();
        assert!(store.has_blob(&d));
        // Present, but announced with another size.
        assert!(store.put_blob_sized(&content[..], &d, 9).is_err());
    }

    #[test]
    fn read_blob_verifies_content_and_size_limit() {
        let (_dir, store) = temp_store();
        let d = store.put_blob_bytes(b"{\"a\":1}", None).unwrap();
        assert!(matches!(
            store.read_blob(&d, "config", 3),
            Err(StoreError::BlobTooLarge {
                size: 7,
                limit: 3,
                ..
            })
        ));
        // Corrupt the stored file behind the store's back.
        let path = store.blob_path(&d);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"{\"a\":2}").unwrap();
        assert!(matches!(
            store.read_blob(&d, "config", 100),
            Err(StoreError::DigestMismatch { .. })
        ));
        let missing = Digest::of_bytes(b"missing");
        assert!(matches!(
            store.open_blob(&missing),
            Err(StoreError::BlobNotFound { .. })
        ));
        assert!(matches!(
            store.blob_size(&missing),
            Err(StoreError::BlobNotFound { .. })
        ));
    }

    #[test]
    fn concurrent_writers_of_one_blob_agree() {
        let (_dir, store) = temp_store();
        let store = Arc::new(store);
        let content: Arc<Vec<u8>> =
            Arc::new((0..200_000u32).flat_map(|i| i.to_le_bytes()).collect());
        let want = Digest::of_bytes(&content);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                let content = Arc::clone(&content);
                let want = want.clone();
                std::thread::spawn(move || {
                    // Half announce the digest, half do not.
                    let expected = (i % 2 == 0).then_some(&want);
                    // Small reads so the writes interleave.
                    let reader = io::BufReader::with_capacity(4096, &content[..]);
                    store.put_blob(reader, expected).unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), want);
        }
        assert_eq!(store.list_blobs().unwrap(), vec![want.clone()]);
        assert_eq!(store.read_blob(&want, "test", 1 << 20).unwrap(), *content);
        assert!(dir_is_empty(&store.tmp_dir()));
    }
}
