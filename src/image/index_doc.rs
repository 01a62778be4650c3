//! An image index as JSON: the form in which kiln points an index's entries at other
//! manifests of the same images (a registry's index kept in the store, a stored index pushed
//! or exported) without losing any other field of the index or of its entries.
//!
//! oci-spec's types cannot carry them all: its `Platform` reads and writes `os_version` and
//! `os_features` instead of the spec's `os.version` and `os.features` (oci-spec-rs pull
//! request 163, open), so an entry parsed into a `Descriptor` loses both.

use oci_spec::image::Descriptor;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::{self, ConfigError, MEDIA_TYPE_INDEX};
use super::digest::Digest;

/// One entry of an index (an element of `manifests`), every field as written.
pub type Entry = Map<String, Value>;

/// An index's entries and its other top-level fields, as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexDoc {
    /// The entries, in order.
    pub entries: Vec<Entry>,
    /// Every top-level field but `manifests`.
    pub other: Map<String, Value>,
}

#[derive(Deserialize)]
struct Doc {
    manifests: Vec<Entry>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// The fields of an entry that describe the manifest's bytes (where they are and what they
/// hold), which a manifest of other bytes cannot keep: `urls` and `data` are the old bytes',
/// and `artifactType` was read from the old manifest.
const BYTES_FIELDS: [&str; 3] = ["urls", "data", "artifactType"];

impl IndexDoc {
    /// Reads an index's entries and fields. The caller has checked the document (a registry's
    /// index parser, [`config::parse_index`]); this only needs `manifests` to be a list of
    /// objects.
    pub fn parse(bytes: &[u8]) -> Result<IndexDoc, ConfigError> {
        let d: Doc = serde_json::from_slice(bytes).map_err(|source| ConfigError::Json {
            what: "index",
            source,
        })?;
        Ok(IndexDoc {
            entries: d.manifests,
            other: d.other,
        })
    }

    /// The digest entry `i` names, validated.
    pub fn digest(&self, i: usize) -> Result<Digest, ConfigError> {
        let text = self
            .entries
            .get(i)
            .and_then(|e| e.get("digest"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Digest::parse(text).map_err(|source| ConfigError::Digest {
            what: "index",
            field: format!("manifests[{i}].digest"),
            source,
        })
    }

    /// This index as an OCI index naming `entries` instead, in kiln's canonical JSON: the
    /// other top-level fields kept but `subject` (a manifest of the index's registry, which
    /// kiln neither keeps nor pushes).
    pub fn with_entries(&self, entries: Vec<Entry>) -> Result<Vec<u8>, ConfigError> {
        let mut doc = self.other.clone();
        doc.remove("subject");
        doc.insert("schemaVersion".into(), 2.into());
        doc.insert("mediaType".into(), MEDIA_TYPE_INDEX.into());
        doc.insert(
            "manifests".into(),
            Value::Array(entries.into_iter().map(Value::Object).collect()),
        );
        config::canonical_json("index", &doc)
    }
}

/// `entry` pointed at `manifest`, another manifest of the same image: its mediaType, digest
/// and size; the fields about the old manifest's bytes ([`BYTES_FIELDS`]) dropped; every
/// other field (the whole platform, the annotations) kept.
pub fn repoint(entry: &Entry, manifest: &Descriptor) -> Entry {
    let mut e = entry.clone();
    for f in BYTES_FIELDS {
        e.remove(f);
    }
    e.insert("mediaType".into(), manifest.media_type().to_string().into());
    e.insert("digest".into(), manifest.digest().to_string().into());
    e.insert("size".into(), manifest.size().into());
    e
}

/// A descriptor kiln made, as an entry.
pub fn entry_of(d: &Descriptor) -> Result<Entry, ConfigError> {
    serde_json::to_value(d)
        .and_then(serde_json::from_value)
        .map_err(|source| ConfigError::Encode {
            what: "index",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// A Windows entry as registries serve it: os.version and os.features, annotations,
    /// and the fields that describe the old bytes.
    fn windows_index() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
            "annotations":{{"org.opencontainers.image.source":"https://example.com/app"}},
            "subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":3}},
            "manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D}","size":7,
              "urls":["https://example.com/m"],"data":"e30=","artifactType":"application/x-old",
              "annotations":{{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}},
              "platform":{{"architecture":"amd64","os":"windows","os.version":"10.0.20348.2340","os.features":["win32k"],"variant":"v3"}}}}]}}"#
        )
    }

    #[test]
    fn a_repointed_entry_keeps_every_field_but_the_old_bytes() {
        let doc = IndexDoc::parse(windows_index().as_bytes()).unwrap();
        assert_eq!(doc.digest(0).unwrap().to_string(), D);
        let local = Digest::of_bytes(b"local");
        let m = config::descriptor(config::MEDIA_TYPE_MANIFEST, &local, 5);
        let entry = repoint(&doc.entries[0], &m);
        let bytes = doc.with_entries(vec![entry]).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        let want: Value = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "annotations": {"org.opencontainers.image.source": "https://example.com/app"},
            "manifests": [{
                "mediaType": config::MEDIA_TYPE_MANIFEST,
                "digest": local.to_string(),
                "size": 5,
                "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
                "platform": {
                    "architecture": "amd64",
                    "os": "windows",
                    "os.version": "10.0.20348.2340",
                    "os.features": ["win32k"],
                    "variant": "v3"
                }
            }]
        });
        assert_eq!(back, want);
        // What kiln stores must still be an index the store accepts.
        let parsed = config::parse_index(&bytes).unwrap();
        assert_eq!(parsed.manifests()[0].size(), 5);
        assert!(IndexDoc::parse(b"{\"manifests\":[1]}").is_err());
        assert!(doc.digest(1).is_err());
    }

    #[test]
    fn an_index_of_kilns_own_entries_encodes_as_before() {
        // Indexes kiln built (and the digests they have) do not change with this form.
        let d = config::descriptor(config::MEDIA_TYPE_MANIFEST, &Digest::of_bytes(b"m"), 9);
        let mut index = oci_spec::image::ImageIndex::default();
        index.set_media_type(Some(oci_spec::image::MediaType::from(MEDIA_TYPE_INDEX)));
        index.set_manifests(vec![d.clone()]);
        let typed = config::canonical_json("index", &index).unwrap();
        let doc = IndexDoc::default();
        assert_eq!(
            doc.with_entries(vec![entry_of(&d).unwrap()]).unwrap(),
            typed
        );
    }
}
