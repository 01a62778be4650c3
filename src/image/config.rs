//! The OCI image documents (config, manifest, index): strict parsing, a
//! canonical JSON encoding, and the identities derived from them (image ID,
//! diffIDs, chainIDs, per-layer history).
//!
//! The types are oci-spec's; this module adds what kiln needs on top.
//! Parsing is strict, so a hostile registry or archive cannot have a
//! document read two ways: a manifest with a `manifests` key, an index with `layers`, a `mediaType`
//! that contradicts the document, or a repeated key is rejected, and every
//! digest is validated before anything uses it. Callers parse the bytes they
//! digested, never a re-encoding.

use oci_spec::image::{
    Descriptor, History, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType,
};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::digest::{Digest, DigestError};

/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer, the only kind kiln stores.
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// Why bytes are not an acceptable OCI config, manifest or index.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid JSON for the document, or a key appears twice.
    #[error("invalid image {what}: {source}")]
    Json {
        /// Which document (`config`, `manifest`, `index`).
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The document's own `mediaType` names another kind of document.
    #[error("invalid image {what}: mediaType is {found:?}, expected {expected:?}")]
    WrongMediaType {
        /// Which document.
        what: &'static str,
        /// The media type this document must have.
        expected: &'static str,
        /// The media type it has.
        found: String,
    },
    /// A document has keys of both a manifest and an index.
    #[error("invalid image {what}: it has a {key:?} key, which belongs to an image {other}")]
    AmbiguousDocument {
        /// Which document was expected.
        what: &'static str,
        /// The offending key.
        key: &'static str,
        /// The kind of document that key belongs to.
        other: &'static str,
    },
    /// `schemaVersion` is not 2.
    #[error("invalid image {what}: schemaVersion is {found}, expected 2")]
    SchemaVersion {
        /// Which document.
        what: &'static str,
        /// The version found.
        found: u32,
    },
    /// `rootfs.type` is not `layers`.
    #[error("invalid image config: rootfs.type is {found:?}, expected \"layers\"")]
    RootfsType {
        /// The type found.
        found: String,
    },
    /// A digest in the document is not a sha256 digest kiln accepts.
    #[error("invalid image {what}: {field}: {source}")]
    Digest {
        /// Which document.
        what: &'static str,
        /// Where in the document (`layers[2].digest`).
        field: String,
        /// Why the digest was rejected.
        #[source]
        source: DigestError,
    },
    /// The history does not have one non-empty entry per layer.
    #[error("invalid image config: history has {non_empty} entries that create a layer, but rootfs has {diff_ids} diffIDs")]
    HistoryMismatch {
        /// History entries without `empty_layer: true`.
        non_empty: usize,
        /// Number of diffIDs.
        diff_ids: usize,
    },
    /// Encoding a document as JSON failed.
    #[error("cannot encode image {what} as JSON: {source}")]
    Encode {
        /// Which document.
        what: &'static str,
        /// The encoder's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// The keys that tell a manifest and an index apart (a document with both is refused).
/// Deserialising into this also rejects a repeated `mediaType`, `manifests`,
/// `layers` or `config` key, which serde's derive refuses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
}

fn probe(what: &'static str, bytes: &[u8]) -> Result<Probe, ConfigError> {
    serde_json::from_slice(bytes).map_err(|source| ConfigError::Json { what, source })
}

fn check_media_type(
    what: &'static str,
    found: Option<&str>,
    expected: &'static str,
) -> Result<(), ConfigError> {
    match found {
        Some(found) if found != expected => Err(ConfigError::WrongMediaType {
            what,
            expected,
            found: found.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The digest of a descriptor, validated.
pub fn descriptor_digest(
    what: &'static str,
    field: impl Into<String>,
    descriptor: &Descriptor,
) -> Result<Digest, ConfigError> {
    Digest::try_from(descriptor.digest()).map_err(|source| ConfigError::Digest {
        what,
        field: field.into(),
        source,
    })
}

/// Parses an image manifest strictly; every digest in it is validated.
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, ConfigError> {
    const WHAT: &str = "manifest";
    let p = probe(WHAT, bytes)?;
    if p.manifests.is_some() {
        return Err(ConfigError::AmbiguousDocument {
            what: WHAT,
            key: "manifests",
            other: "index",
        });
    }
    check_media_type(WHAT, p.media_type.as_deref(), MEDIA_TYPE_MANIFEST)?;
    let m: ImageManifest =
        serde_json::from_slice(bytes).map_err(|source| ConfigError::Json { what: WHAT, source })?;
    if m.schema_version() != 2 {
        return Err(ConfigError::SchemaVersion {
            what: WHAT,
            found: m.schema_version(),
        });
    }
    descriptor_digest(WHAT, "config.digest", m.config())?;
    for (i, layer) in m.layers().iter().enumerate() {
        descriptor_digest(WHAT, format!("layers[{i}].digest"), layer)?;
    }
    Ok(m)
}

/// Parses an image index strictly; every digest in it is validated.
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex, ConfigError> {
    const WHAT: &str = "index";
    let p = probe(WHAT, bytes)?;
    for (key, present) in [
        ("layers", p.layers.is_some()),
        ("config", p.config.is_some()),
    ] {
        if present {
            return Err(ConfigError::AmbiguousDocument {
                what: WHAT,
                key,
                other: "manifest",
            });
        }
    }
    check_media_type(WHAT, p.media_type.as_deref(), MEDIA_TYPE_INDEX)?;
    let index: ImageIndex =
        serde_json::from_slice(bytes).map_err(|source| ConfigError::Json { what: WHAT, source })?;
    if index.schema_version() != 2 {
        return Err(ConfigError::SchemaVersion {
            what: WHAT,
            found: index.schema_version(),
        });
    }
    for (i, m) in index.manifests().iter().enumerate() {
        descriptor_digest(WHAT, format!("manifests[{i}].digest"), m)?;
    }
    Ok(index)
}

/// Parses an image config strictly; the diffIDs are validated.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, ConfigError> {
    let config: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|source| ConfigError::Json {
            what: "config",
            source,
        })?;
    if config.rootfs().typ() != "layers" {
        return Err(ConfigError::RootfsType {
            found: config.rootfs().typ().clone(),
        });
    }
    diff_ids(&config)?;
    Ok(config)
}

/// The image ID: the digest of the config's bytes, exactly as stored.
pub fn image_id(config_bytes: &[u8]) -> Digest {
    Digest::of_bytes(config_bytes)
}

/// The config's diffIDs (digests of the uncompressed layers), in order.
pub fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>, ConfigError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Digest::parse(s).map_err(|source| ConfigError::Digest {
                what: "config",
                field: format!("rootfs.diff_ids[{i}]"),
                source,
            })
        })
        .collect()
}

/// The chainID of a layer stacked on `parent` (the parent's chainID), as
/// the OCI image spec defines it: the diffID itself for the bottom layer,
/// otherwise `sha256(parent + " " + diff_id)` over the digest strings.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of_bytes(format!("{p} {diff_id}").as_bytes()),
    }
}

/// The chainIDs of every prefix of `diff_ids`: entry `i` identifies the
/// filesystem made by layers `0..=i`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_id(out.last(), d);
        out.push(next);
    }
    out
}

/// One history entry, with the diffID of the layer it created (none for
/// metadata-only steps such as `ENV`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerHistory {
    /// The entry as recorded in the config.
    pub history: History,
    /// The layer it created, if any.
    pub diff_id: Option<Digest>,
}

/// Pairs the config's history with its layers, as `docker history` does.
/// A config without history gets one synthetic entry per layer.
pub fn layer_history(config: &ImageConfiguration) -> Result<Vec<LayerHistory>, ConfigError> {
    let ids = diff_ids(config)?;
    let history = config.history().as_deref().unwrap_or_default();
    if history.is_empty() {
        return Ok(ids
            .into_iter()
            .map(|d| LayerHistory {
                history: History::default(),
                diff_id: Some(d),
            })
            .collect());
    }
    let non_empty = history
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .count();
    if non_empty != ids.len() {
        return Err(ConfigError::HistoryMismatch {
            non_empty,
            diff_ids: ids.len(),
        });
    }
    let mut ids = ids.into_iter();
    Ok(history
        .iter()
        .map(|h| LayerHistory {
            history: h.clone(),
            diff_id: if h.empty_layer().unwrap_or(false) {
                None
            } else {
                ids.next()
            },
        })
        .collect())
}

/// A descriptor of `size` bytes with `digest` and `media_type`.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(MediaType::from(media_type), size, digest.to_oci())
}

/// An OCI image manifest (mediaType set) for a config and its layers.
pub fn new_manifest(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .expect("every required manifest field is set above")
}

/// Sorts the keys of every JSON object in `value`, so the encoding does not
/// depend on `HashMap` iteration order or serde_json's map features.
fn sort_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            for v in map.values_mut() {
                sort_keys(v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// The canonical JSON encoding kiln writes: compact, object keys sorted at
/// every level. Two equal documents always encode to the same bytes, so
/// their digests agree across runs and machines.
pub fn canonical_json<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, ConfigError> {
    let mut v =
        serde_json::to_value(value).map_err(|source| ConfigError::Encode { what, source })?;
    sort_keys(&mut v);
    serde_json::to_vec(&v).map_err(|source| ConfigError::Encode { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hex_digest(c: char) -> Digest {
        Digest::from_sha256_hex(&c.to_string().repeat(64)).unwrap()
    }

    fn config_json(diff_ids: &[Digest], history: &str) -> Vec<u8> {
        let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
        format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}{history}}}"#,
            ids.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let (a, b, c) = (hex_digest('a'), hex_digest('b'), hex_digest('c'));
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        let ab = Digest::of_bytes(format!("{a} {b}").as_bytes());
        assert_eq!(ids[1], ab);
        assert_eq!(ids[2], Digest::of_bytes(format!("{ab} {c}").as_bytes()));
        assert_eq!(chain_id(Some(&ids[1]), &c), ids[2]);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn chain_id_matches_a_known_value() {
        // Fixed inputs and output, so a change to the encoding is noticed.
        let a = Digest::of_bytes(b"layer-a");
        let b = Digest::of_bytes(b"layer-b");
        let want = Digest::of_bytes(format!("sha256:{} sha256:{}", a.hex(), b.hex()).as_bytes());
        assert_eq!(chain_ids(&[a, b])[1], want);
    }

    #[test]
    fn parses_config_and_pairs_history() {
        let ids = [hex_digest('a'), hex_digest('b')];
        let history = r#","history":[{"created_by":"ADD rootfs"},{"created_by":"ENV A=1","empty_layer":true},{"created_by":"RUN x"}]"#;
        let bytes = config_json(&ids, history);
        let config = parse_config(&bytes).unwrap();
        assert_eq!(diff_ids(&config).unwrap(), ids);
        let h = layer_history(&config).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].diff_id.as_ref(), Some(&ids[0]));
        assert_eq!(h[1].diff_id, None);
        assert_eq!(h[2].diff_id.as_ref(), Some(&ids[1]));
        assert_eq!(image_id(&bytes), Digest::of_bytes(&bytes));

        let no_history = parse_config(&config_json(&ids, "")).unwrap();
        assert_eq!(layer_history(&no_history).unwrap().len(), 2);

        let bad = parse_config(&config_json(&ids, r#","history":[{"created_by":"x"}]"#)).unwrap();
        assert!(matches!(
            layer_history(&bad),
            Err(ConfigError::HistoryMismatch {
                non_empty: 1,
                diff_ids: 2
            })
        ));
    }

    #[test]
    fn rejects_bad_configs() {
        let bad_id = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:../../x"]}}"#;
        assert!(matches!(
            parse_config(bad_id),
            Err(ConfigError::Digest { .. })
        ));
        let bad_type =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"tar","diff_ids":[]}}"#;
        assert!(matches!(
            parse_config(bad_type),
            Err(ConfigError::RootfsType { .. })
        ));
        let dup = br#"{"architecture":"amd64","os":"linux","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert!(matches!(parse_config(dup), Err(ConfigError::Json { .. })));
    }

    fn manifest_json(extra: &str) -> String {
        let d = hex_digest('c');
        format!(
            r#"{{"schemaVersion":2,{extra}"config":{{"mediaType":"{MEDIA_TYPE_CONFIG}","digest":"{d}","size":2}},"layers":[]}}"#
        )
    }

    #[test]
    fn manifest_parsing_is_strict() {
        assert!(parse_manifest(manifest_json("").as_bytes()).is_ok());
        let typed = format!(r#""mediaType":"{MEDIA_TYPE_MANIFEST}","#);
        assert!(parse_manifest(manifest_json(&typed).as_bytes()).is_ok());

        let wrong = format!(r#""mediaType":"{MEDIA_TYPE_INDEX}","#);
        assert!(matches!(
            parse_manifest(manifest_json(&wrong).as_bytes()),
            Err(ConfigError::WrongMediaType { .. })
        ));
        assert!(matches!(
            parse_manifest(manifest_json(r#""manifests":[],"#).as_bytes()),
            Err(ConfigError::AmbiguousDocument {
                key: "manifests",
                ..
            })
        ));
        let dup =
            format!(r#""mediaType":"{MEDIA_TYPE_MANIFEST}","mediaType":"{MEDIA_TYPE_MANIFEST}","#);
        assert!(matches!(
            parse_manifest(manifest_json(&dup).as_bytes()),
            Err(ConfigError::Json { .. })
        ));
        let dup_layers = manifest_json(r#""layers":[],"#);
        assert!(matches!(
            parse_manifest(dup_layers.as_bytes()),
            Err(ConfigError::Json { .. })
        ));
        let v1 = manifest_json("").replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(matches!(
            parse_manifest(v1.as_bytes()),
            Err(ConfigError::SchemaVersion { found: 1, .. })
        ));
        let bad_digest = manifest_json("").replace(hex_digest('c').as_str(), "sha512:abcd");
        assert!(parse_manifest(bad_digest.as_bytes()).is_err());
    }

    #[test]
    fn index_parsing_is_strict() {
        let ok =
            format!(r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_INDEX}","manifests":[]}}"#);
        assert!(parse_index(ok.as_bytes()).is_ok());
        let both = r#"{"schemaVersion":2,"manifests":[],"layers":[]}"#;
        assert!(matches!(
            parse_index(both.as_bytes()),
            Err(ConfigError::AmbiguousDocument { key: "layers", .. })
        ));
        let wrong =
            format!(r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_MANIFEST}","manifests":[]}}"#);
        assert!(matches!(
            parse_index(wrong.as_bytes()),
            Err(ConfigError::WrongMediaType { .. })
        ));
    }

    #[test]
    fn canonical_json_is_sorted_and_stable() {
        let config = descriptor(MEDIA_TYPE_CONFIG, &hex_digest('c'), 2);
        let mut layer = descriptor(MEDIA_TYPE_LAYER, &hex_digest('a'), 10);
        let annotations: HashMap<String, String> = (0..20)
            .map(|i| (format!("k{i:02}"), i.to_string()))
            .collect();
        layer.set_annotations(Some(annotations));
        let m = new_manifest(config, vec![layer]);
        let a = canonical_json("manifest", &m).unwrap();
        let b = canonical_json("manifest", &m.clone()).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a.clone()).unwrap();
        assert!(text.starts_with(r#"{"config":"#), "{text}");
        let k00 = text.find("\"k00\"").unwrap();
        let k19 = text.find("\"k19\"").unwrap();
        assert!(k00 < k19);
        // The encoding parses back strictly.
        let back = parse_manifest(&a).unwrap();
        assert_eq!(back, m);
    }
}
