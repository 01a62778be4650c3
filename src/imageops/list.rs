//! Which images `kiln images` shows and under which names: Docker's
//! filters (`dangling`, `before`, `since`, `label`, `reference`) and order.

use std::collections::BTreeMap;

use super::error::{ImageOpsError, Result};
use super::glob::path_match;
use crate::common::time::Timestamp;
use crate::image::Reference;
use crate::store::{ImageRecord, Store};

/// What Docker shows for a missing repository, tag or digest.
pub const NONE: &str = "<none>";

/// Parsed `--filter` values; every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct ImageFilters {
    dangling: Option<bool>,
    before: Option<Timestamp>,
    since: Option<Timestamp>,
    labels: Vec<(String, Option<String>)>,
    references: Vec<String>,
}

/// Docker's boolean filter values.
fn parse_bool(filter: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ImageOpsError::Filter {
            filter: filter.to_owned(),
            reason: "expected true or false".to_owned(),
        }),
    }
}

impl ImageFilters {
    /// Parses `key=value` filters. `before=`/`since=` name an image, which
    /// is looked up now; unknown keys are an error, as in Docker.
    pub fn parse(store: &Store, specs: &[String]) -> Result<ImageFilters> {
        let mut f = ImageFilters::default();
        for spec in specs {
            let bad = |reason: &str| ImageOpsError::Filter {
                filter: spec.clone(),
                reason: reason.to_owned(),
            };
            let Some((key, value)) = spec.split_once('=') else {
                return Err(bad("expected name=value"));
            };
            match key.to_ascii_lowercase().as_str() {
                "dangling" => f.dangling = Some(parse_bool(spec, value)?),
                "before" | "since" => {
                    let image = super::resolve(store, value)?;
                    let created = created_of(&image).ok_or_else(|| {
                        bad("that image has no valid creation time to compare with")
                    })?;
                    if key.eq_ignore_ascii_case("before") {
                        f.before = Some(created);
                    } else {
                        f.since = Some(created);
                    }
                }
                "label" => {
                    let (k, v) = match value.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (value.to_owned(), None),
                    };
                    f.labels.push((k, v));
                }
                "reference" => f.add_reference(value)?,
                _ => return Err(bad("unknown filter")),
            }
        }
        Ok(f)
    }

    /// Adds a `reference=` glob (what `kiln images REPOSITORY[:TAG]` adds too).
    pub fn add_reference(&mut self, pattern: &str) -> Result<()> {
        path_match(pattern, "").map_err(|source| ImageOpsError::ReferencePattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        self.references.push(pattern.to_owned());
        Ok(())
    }

    /// True when a `reference` filter is given.
    pub fn has_reference(&self) -> bool {
        !self.references.is_empty()
    }

    /// Docker's `FamiliarMatch`: the pattern against `name:tag` (or
    /// `name@digest`), then against the name alone.
    fn reference_matches(&self, r: &Reference) -> bool {
        self.references.iter().any(|p| {
            path_match(p, &r.familiar_string()).unwrap_or(false)
                || path_match(p, &r.familiar_name()).unwrap_or(false)
        })
    }

    fn other_name_matches(&self, name: &str) -> bool {
        self.references
            .iter()
            .any(|p| path_match(p, name).unwrap_or(false))
    }

    /// The image as listed, or `None` when a filter excludes it.
    pub fn apply(&self, image: &ImageRecord) -> Option<ImageSummary> {
        let created = created_of(image);
        if let Some(d) = self.dangling {
            if image.is_dangling() != d {
                return None;
            }
        }
        if let Some(b) = self.before {
            if created.is_none_or(|c| c >= b) {
                return None;
            }
        }
        if let Some(s) = self.since {
            if created.is_none_or(|c| c <= s) {
                return None;
            }
        }
        let labels = labels_of(image);
        if !self
            .labels
            .iter()
            .all(|(k, v)| has_label(&labels, k, v.as_deref()))
        {
            return None;
        }
        let mut references = image.references.clone();
        let mut other_names = image.other_names.clone();
        if self.has_reference() {
            references.retain(|r| self.reference_matches(r));
            other_names.retain(|n| self.other_name_matches(n));
            if references.is_empty() && other_names.is_empty() {
                return None;
            }
        }
        Some(ImageSummary {
            image: image.clone(),
            created,
            references,
            other_names,
            index: None,
        })
    }
}

/// The image's `created` time, if its config has a valid one.
pub fn created_of(image: &ImageRecord) -> Option<Timestamp> {
    image
        .config
        .created()
        .as_deref()
        .and_then(|c| Timestamp::parse_rfc3339(c).ok())
}

/// Whether `labels` has `key`, with `value` when one is given (Docker's `label=` filter).
pub fn has_label(labels: &BTreeMap<String, String>, key: &str, value: Option<&str>) -> bool {
    match (labels.get(key), value) {
        (None, _) => false,
        (Some(have), Some(want)) => have == want,
        (Some(_), None) => true,
    }
}

/// The image's labels.
pub fn labels_of(image: &ImageRecord) -> BTreeMap<String, String> {
    image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Docker's `RepoDigests` as kiln has them: the manifest digest under each
/// repository the image is named in (`busybox@sha256:…`).
pub fn repo_digests(image: &ImageRecord) -> Vec<String> {
    let mut out: Vec<String> = image
        .references
        .iter()
        .map(|r| format!("{}@{}", r.familiar_name(), image.manifest_digest))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Docker's `RepoTags`: the tags, in their familiar form.
pub fn repo_tags(image: &ImageRecord) -> Vec<String> {
    image.tags().map(Reference::familiar_string).collect()
}

/// One image as `kiln images` lists it.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The image.
    pub image: ImageRecord,
    /// Its creation time, if valid.
    pub created: Option<Timestamp>,
    /// Its names that the filters let through.
    pub references: Vec<Reference>,
    /// Names other tools wrote, that the filters let through.
    pub other_names: Vec<String>,
    /// When the names hold an index of several platforms: its digest (`image` is then the
    /// host's entry, else the first, with the index's names).
    pub index: Option<crate::image::Digest>,
}

impl ImageSummary {
    /// What `IMAGE ID` shows: the image ID, or an index's digest (as Docker's containerd
    /// image store shows a multi-platform image).
    pub fn id(&self) -> &crate::image::Digest {
        self.index.as_ref().unwrap_or(&self.image.id)
    }

    /// The manifest's digest, or the index's.
    pub fn digest(&self) -> &crate::image::Digest {
        self.index.as_ref().unwrap_or(&self.image.manifest_digest)
    }
}

impl ImageSummary {
    /// The (repository, tag) rows Docker shows for it: one per tag, one
    /// `name <none>` per repository named only by digest, and
    /// `<none> <none>` for a dangling image.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = Vec::new();
        for r in &self.references {
            if let Some(t) = r.tag() {
                rows.push((r.familiar_name(), t.to_owned()));
            }
        }
        for r in &self.references {
            let name = r.familiar_name();
            if r.tag().is_none() && !rows.iter().any(|(n, _)| *n == name) {
                rows.push((name, NONE.to_owned()));
            }
        }
        for n in &self.other_names {
            match Reference::parse_normalized_named(n) {
                Ok(r) if r.tag().is_some() => {
                    rows.push((r.familiar_name(), r.tag().unwrap_or(NONE).to_owned()))
                }
                _ => rows.push((n.clone(), NONE.to_owned())),
            }
        }
        if rows.is_empty() {
            rows.push((NONE.to_owned(), NONE.to_owned()));
        }
        rows
    }
}

/// The images `filters` let through, newest first (Docker's order).
pub fn list(store: &Store, filters: &ImageFilters) -> Result<Vec<ImageSummary>> {
    let mut out: Vec<ImageSummary> = store
        .list_images()?
        .iter()
        .filter_map(|i| filters.apply(i))
        .collect();
    // An index of several platforms is one line per name, as Docker lists a manifest list.
    for ix in store.list_indexes()? {
        let Some(m) = ix.shown_manifest() else {
            continue;
        };
        let mut image = store.image_blobs(&m)?;
        image.references = ix.references.clone();
        image.other_names = ix.other_names.clone();
        if let Some(mut s) = filters.apply(&image) {
            s.index = Some(ix.digest.clone());
            out.push(s);
        }
    }
    out.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| a.image.id.cmp(&b.image.id))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{put_test_image, temp_store};

    fn f(store: &Store, specs: &[&str]) -> Result<ImageFilters> {
        ImageFilters::parse(
            store,
            &specs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    fn names(store: &Store, specs: &[&str]) -> Vec<Vec<(String, String)>> {
        list(store, &f(store, specs).unwrap())
            .unwrap()
            .iter()
            .map(ImageSummary::rows)
            .collect()
    }

    fn row(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn filters_by_dangling_reference_and_label() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        let b = put_test_image(&store, &[b"b"], "b");
        put_test_image(&store, &[b"c"], "c");
        for (name, img) in [
            ("busybox:1", &a),
            ("busybox:2", &a),
            ("localhost:5000/app:v1", &b),
        ] {
            store
                .tag(&Reference::parse(name).unwrap(), &img.manifest_digest)
                .unwrap();
        }
        let all = names(&store, &[]);
        assert_eq!(all.len(), 3);
        assert_eq!(
            names(&store, &["dangling=true"]),
            vec![vec![row(NONE, NONE)]]
        );
        assert_eq!(names(&store, &["dangling=false"]).len(), 2);
        assert_eq!(
            names(&store, &["reference=busybox"]),
            vec![vec![row("busybox", "1"), row("busybox", "2")]]
        );
        assert_eq!(
            names(&store, &["reference=busy*:2"]),
            vec![vec![row("busybox", "2")]]
        );
        assert_eq!(
            names(&store, &["reference=localhost:5000/*"]),
            vec![vec![row("localhost:5000/app", "v1")]]
        );
        assert!(names(&store, &["reference=nothing"]).is_empty());
        assert_eq!(names(&store, &["label=t=b"]).len(), 1);
        assert_eq!(names(&store, &["label=t"]).len(), 3);
        assert!(names(&store, &["label=t=zzz"]).is_empty());
        for bad in [
            "dangling=maybe",
            "bogus=1",
            "nokey",
            "reference=[",
            "before=nope",
        ] {
            assert!(f(&store, &[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_only_names_show_as_none_tags() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        let r = Reference::parse(&format!("busybox@{}", a.manifest_digest)).unwrap();
        store.tag(&r, &a.manifest_digest).unwrap();
        assert_eq!(names(&store, &[]), vec![vec![row("busybox", NONE)]]);
        assert_eq!(
            repo_digests(&store.image(&a.manifest_digest).unwrap()),
            vec![format!("busybox@{}", a.manifest_digest)]
        );
    }
}
