//! `type=registry`: a cache pushed to (and pulled from) an OCI distribution registry as one
//! artifact manifest under a tag, with the same format as the `type=local` layout (see the
//! parent module), so any registry that stores OCI image manifests stores it.
//!
//! Export: every blob the repository lacks (`HEAD` first) is uploaded, the manifest is put
//! last, under the tag. Import: the manifest is fetched by tag (checked against the
//! registry's `Docker-Content-Digest`, or against the digest when the reference is one), the
//! config and records blobs when the cache is loaded, and a layer only when a step hits; the
//! importer verifies every byte against its digest and size. Credentials are Docker's (as
//! `kiln login` stores them), and `KILN_INSECURE_REGISTRIES` applies as for pulls and pushes.

use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{BlobDesc, CacheSink, CacheSource, OpenBlob, TransferError};
use crate::image::Reference;
use crate::registry::{Client, ClientOptions, RegistryError};

/// A cache under a tag (or digest, for reading) of a registry repository.
pub struct RegistryCache {
    client: Client,
    repo: String,
    /// The tag, or the manifest's digest.
    reference: String,
    /// `registry HOST/REPO:TAG`, for messages.
    name: String,
}

impl std::fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl RegistryCache {
    /// The cache at `reference` (`host/repo:tag`; `latest` when no tag is given). `flag`
    /// names the option in errors; `for_write` refuses a digest reference (a push needs a
    /// tag). No request is made here: the reference is parsed and credentials loaded.
    pub fn new(
        flag: &str,
        reference: &str,
        for_write: bool,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<RegistryCache, TransferError> {
        let bad = |why: String| {
            TransferError::Invalid(format!("{flag} type=registry,ref={reference}: {why}"))
        };
        let parsed = Reference::parse_normalized_named(reference).map_err(|source| {
            TransferError::Reference {
                context: format!("{flag} type=registry,ref={reference}"),
                source: Box::new(source),
            }
        })?;
        if for_write && parsed.digest().is_some() {
            return Err(bad("a cache is pushed under a tag, not a digest".into()));
        }
        let parsed = parsed.with_default_tag();
        let tag_or_digest = parsed.tag_or_digest();
        let mut opts = ClientOptions::from_env();
        opts.cancel = cancel.cloned();
        let client =
            Client::new(parsed.domain(), &opts).map_err(|source| TransferError::Registry {
                context: format!("{flag} type=registry,ref={reference}"),
                source: Box::new(source),
            })?;
        Ok(RegistryCache {
            client,
            repo: parsed.path().to_string(),
            reference: tag_or_digest,
            name: format!("registry {}", parsed.familiar_string()),
        })
    }

    fn err(&self, source: RegistryError) -> TransferError {
        TransferError::Registry {
            context: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// `registry/repository`, as the store's distribution records name where a blob is.
    fn here(&self) -> String {
        format!("{}/{}", self.client.registry(), self.repo)
    }

    fn cancelled(&self) -> Result<(), TransferError> {
        if self.client.options().cancelled() {
            return Err(self.err(RegistryError::Interrupted));
        }
        Ok(())
    }
}

impl CacheSink for RegistryCache {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn has_blob(&self, blob: &BlobDesc) -> Result<bool, TransferError> {
        self.cancelled()?;
        let size = self
            .client
            .has_blob(&self.repo, &blob.digest)
            .map_err(|e| self.err(e))?;
        // A registry that does not say the size has the blob all the same (it is
        // content-addressed); one that says another size does not have this one.
        Ok(size.is_some_and(|s| s == blob.size || s == 0))
    }

    fn put_blob(&self, blob: &BlobDesc, open: &OpenBlob<'_>) -> Result<(), TransferError> {
        self.cancelled()?;
        self.client
            .upload_blob(&self.repo, &blob.digest, blob.size, open)
            .map_err(|e| self.err(e))
    }

    fn put_manifest(&self, manifest: &[u8], desc: &BlobDesc) -> Result<(), TransferError> {
        self.cancelled()?;
        let digest = self
            .client
            .put_manifest(&self.repo, &self.reference, manifest, &desc.media_type)
            .map_err(|e| self.err(e))?;
        if digest != desc.digest {
            return Err(TransferError::Invalid(format!(
                "{}: the manifest was stored as {digest}, expected {}",
                self.name, desc.digest
            )));
        }
        Ok(())
    }

    fn mount_blob(&self, blob: &BlobDesc, sources: &[String]) -> Result<bool, TransferError> {
        let prefix = format!("{}/", self.client.registry());
        for from in sources.iter().filter_map(|s| s.strip_prefix(&prefix)) {
            self.cancelled()?;
            if from != self.repo
                && self
                    .client
                    .mount_blob(&self.repo, &blob.digest, from)
                    .map_err(|e| self.err(e))?
            {
                tracing::debug!(blob = %blob.digest, from, cache = %self.name, "mounted a layer");
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn blob_source(&self) -> Option<String> {
        Some(self.here())
    }

    fn parallel(&self) -> usize {
        self.client.options().parallel
    }
}

impl CacheSource for RegistryCache {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn manifest(&self) -> Result<(Vec<u8>, Option<BlobDesc>), TransferError> {
        self.cancelled()?;
        // The client checks the bytes against the digest asked for, or the registry's
        // Docker-Content-Digest for a tag.
        let m = self
            .client
            .fetch_manifest(&self.repo, &self.reference)
            .map_err(|e| self.err(e))?;
        let desc = BlobDesc {
            size: m.bytes.len() as u64,
            digest: m.digest,
            media_type: m.media_type,
        };
        Ok((m.bytes, Some(desc)))
    }

    fn open_blob(&self, blob: &BlobDesc) -> Result<Box<dyn Read + Send>, TransferError> {
        self.cancelled()?;
        self.client
            .blob_reader(&self.repo, &blob.digest)
            .map_err(|e| self.err(e))
    }

    fn blob_source(&self) -> Option<String> {
        Some(self.here())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked_without_a_request() {
        let c = RegistryCache::new("--cache-to", "127.0.0.1:1/cache", true, None).unwrap();
        assert_eq!(c.reference, "latest");
        assert_eq!(c.repo, "cache");
        assert_eq!(CacheSink::describe(&c), "registry 127.0.0.1:1/cache:latest");
        let d = format!("127.0.0.1:1/cache@sha256:{}", "a".repeat(64));
        let e = RegistryCache::new("--cache-to", &d, true, None).unwrap_err();
        assert!(e.to_string().contains("not a digest"), "{e}");
        let c = RegistryCache::new("--cache-from", &d, false, None).unwrap();
        assert!(c.reference.starts_with("sha256:"));
        let e = RegistryCache::new("--cache-from", "Not A Ref", false, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("--cache-from type=registry,ref=Not A Ref"),
            "{e}"
        );
    }
}
