//! One image of an OCI image layout directory on the host (`kiln build --build-context
//! NAME=oci-layout://DIR[:TAG][@DIGEST]`) into the store, untagged.
//!
//! The layout is read as [`load`](super::load::load) reads an OCI archive, with all of its
//! checks: the chosen manifest and the blobs it names are streamed as an OCI archive whose
//! `index.json` lists that manifest alone, without names, so the layout's tags never
//! become the store's.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;

use super::error::{ImageOpsError, Result};
use super::load::{load, LoadLimits};
use super::pipe::produce_consume;
use crate::image::Digest;
use crate::store::{ImageRecord, Store};

/// Largest `index.json`, manifest or index read from the layout.
const MAX_DOCUMENT: u64 = 4 << 20;

/// Indexes nested deeper than this are refused (as `load` refuses them).
const MAX_DEPTH: usize = 4;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn bad(dir: &Path, reason: impl std::fmt::Display) -> ImageOpsError {
    ImageOpsError::InvalidArchive {
        reason: format!("OCI layout {}: {reason}", dir.display()),
    }
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageOpsError + 'a {
    move |source| ImageOpsError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Opens a regular file of the layout (a FIFO or a device would block or never end).
fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    let f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let meta = f.metadata().map_err(io_err("stat", path))?;
    if !meta.is_file() {
        return Err(ImageOpsError::Io {
            op: "read",
            path: path.display().to_string(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    Ok((f, meta.len()))
}

/// A JSON document of the layout, at most [`MAX_DOCUMENT`] bytes.
fn document(path: &Path) -> Result<Vec<u8>> {
    let (f, len) = open_regular(path)?;
    if len > MAX_DOCUMENT {
        return Err(ImageOpsError::InvalidArchive {
            reason: format!("{} is larger than {MAX_DOCUMENT} bytes", path.display()),
        });
    }
    let mut bytes = Vec::new();
    f.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    Ok(bytes)
}

fn blob_path(dir: &Path, d: &Digest) -> std::path::PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

fn parse(bytes: &[u8], what: &'static str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|source| ImageOpsError::Json { what, source })
}

fn digest_of(desc: &Value, dir: &Path) -> Result<Digest> {
    let d = desc["digest"]
        .as_str()
        .ok_or_else(|| bad(dir, "a descriptor has no digest"))?;
    Ok(Digest::parse(d)?)
}

/// The descriptor `index.json` gives the wanted image: by digest (or, for a manifest the
/// index does not list, one made from the blob), else by its `ref.name` tag; with neither
/// given, `latest`, or the one image of an index that lists one.
fn choose(dir: &Path, index: &Value, tag: Option<&str>, digest: Option<&Digest>) -> Result<Value> {
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| bad(dir, "index.json lists no manifests"))?;
    if let Some(want) = digest {
        if let Some(d) = manifests
            .iter()
            .find(|m| m["digest"].as_str() == Some(want.as_str()))
        {
            return Ok(d.clone());
        }
        let bytes = document(&blob_path(dir, want))?;
        let media_type = parse(&bytes, "image manifest")?["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_string();
        return Ok(serde_json::json!({
            "mediaType": media_type,
            "digest": want.as_str(),
            "size": bytes.len(),
        }));
    }
    let want = tag.unwrap_or("latest");
    let tagged = manifests
        .iter()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(want));
    match tagged {
        Some(m) => Ok(m.clone()),
        None if tag.is_none() && manifests.len() == 1 => Ok(manifests[0].clone()),
        None => Err(bad(dir, format!("index.json has no image tagged {want:?}"))),
    }
}

/// Every blob `desc` needs that the layout has: itself, and the manifests, configs and
/// layers below it.
fn reachable(dir: &Path, desc: &Value, depth: usize, out: &mut BTreeSet<Digest>) -> Result<()> {
    let d = digest_of(desc, dir)?;
    if !blob_path(dir, &d).exists() || !out.insert(d.clone()) {
        return Ok(());
    }
    let kind = desc["mediaType"].as_str().unwrap_or("");
    let is_index = kind.ends_with("image.index.v1+json") || kind.ends_with("manifest.list.v2+json");
    let is_manifest =
        kind.ends_with("image.manifest.v1+json") || kind.ends_with("distribution.manifest.v2+json");
    if !is_index && !is_manifest {
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(bad(dir, "indexes nested too deep"));
    }
    let doc = parse(&document(&blob_path(dir, &d))?, "image manifest")?;
    let children = doc["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&doc["config"]).filter(|c| c.is_object()))
        .chain(doc["layers"].as_array().into_iter().flatten());
    for child in children {
        reachable(dir, child, depth + 1, out)?;
    }
    Ok(())
}

/// Writes the OCI archive of one image of the layout: `oci-layout`, an `index.json`
/// listing `desc` alone, and the blobs.
fn write_archive(
    dir: &Path,
    desc: &Value,
    blobs: &BTreeSet<Digest>,
    w: &mut dyn Write,
) -> Result<()> {
    let mut tar = tar::Builder::new(w);
    let mut put = |name: &str, len: u64, data: &mut dyn Read| {
        let mut h = tar::Header::new_ustar();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data)
            .map_err(io_err("stream", Path::new(name)))
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    put("oci-layout", layout.len() as u64, &mut &layout[..])?;
    let mut entry = desc.clone();
    if let Some(o) = entry.as_object_mut() {
        o.remove("annotations");
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    }))
    .map_err(|source| ImageOpsError::Json {
        what: "index.json",
        source,
    })?;
    put("index.json", index.len() as u64, &mut &index[..])?;
    for d in blobs {
        let path = blob_path(dir, d);
        let (f, len) = open_regular(&path)?;
        // A file that grows while it is read is cut at the size it had: the digest check
        // in `load` then refuses it.
        put(&format!("blobs/sha256/{}", d.hex()), len, &mut f.take(len))?;
    }
    tar.into_inner()
        .and_then(|w| w.flush())
        .map_err(io_err("stream", dir))
}

/// Loads the image `tag` (default `latest`) or `digest` of the OCI image layout `dir` into
/// the store, untagged, and returns it.
pub fn load_layout(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    digest: Option<&Digest>,
) -> Result<ImageRecord> {
    let index = parse(&document(&dir.join("index.json"))?, "index.json")?;
    let desc = choose(dir, &index, tag, digest)?;
    let mut blobs = BTreeSet::new();
    reachable(dir, &desc, 0, &mut blobs)?;
    if blobs.is_empty() {
        return Err(bad(
            dir,
            format!("the blob of {} is missing", digest_of(&desc, dir)?),
        ));
    }
    let ((), mut loaded) = produce_consume(
        |w| write_archive(dir, &desc, &blobs, w),
        |r| load(store, r, &LoadLimits::default()),
    )?;
    match loaded.len() {
        1 => Ok(loaded.remove(0).image),
        n => Err(bad(
            dir,
            format!("the chosen entry holds {n} images, not one"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OCI layout of `image`'s first image, as `kiln save` writes it into a tar, unpacked.
    fn layout_of(store: &Store, name: &str, dir: &Path) {
        let rec = store.resolve(name).unwrap();
        let items = [crate::imageops::save::SaveItem {
            image: rec,
            tags: vec![crate::image::Reference::parse(name).unwrap()],
        }];
        let mut tar = Vec::new();
        crate::imageops::save::save_compressed(
            store,
            &items,
            &mut tar,
            crate::registry::Compression::None,
        )
        .unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        a.unpack(dir).unwrap();
    }

    #[test]
    fn loads_by_tag_or_digest_without_taking_the_layouts_names() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("a")).unwrap();
        let mut rootfs = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        rootfs.append_data(&mut h, "hello", &b"hi"[..]).unwrap();
        let rootfs = rootfs.into_inner().unwrap();
        crate::imageops::import::import_rootfs(
            &store,
            &rootfs[..],
            &crate::imageops::import::ImportOptions {
                tag: Some(crate::image::Reference::parse("kiln-test/layout:1").unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        let dir = d.path().join("layout");
        layout_of(&store, "kiln-test/layout:1", &dir);
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let manifest = Digest::parse(index["manifests"][0]["digest"].as_str().unwrap()).unwrap();
        let tag = index["manifests"][0]["annotations"][REF_NAME]
            .as_str()
            .map(str::to_string);

        let other = Store::open(d.path().join("b")).unwrap();
        let by_digest = load_layout(&other, &dir, None, Some(&manifest)).unwrap();
        assert!(
            by_digest.references.is_empty(),
            "the layout's names stay out"
        );
        let want = store.resolve("kiln-test/layout:1").unwrap();
        assert_eq!(by_digest.id, want.id);
        if let Some(tag) = tag {
            let by_tag = load_layout(&other, &dir, Some(&tag), None).unwrap();
            assert_eq!(by_tag.id, want.id);
        }
        let e = load_layout(&other, &dir, Some("nope"), None).unwrap_err();
        assert!(e.to_string().contains("no image tagged \"nope\""), "{e}");
        let missing = Digest::of_bytes(b"nothing");
        assert!(load_layout(&other, &dir, None, Some(&missing)).is_err());
    }
}
