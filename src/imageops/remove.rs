//! `kiln rmi` and `kiln image prune`: untagging and removing images with
//! Docker's rules, then garbage collection so only unshared layers go.
//!
//! The rules are those of Docker's `ImageService.ImageDelete`:
//!
//! * by name (`rmi busybox:1`): the name is removed; when it was the last
//!   tag of its repository, that repository's digest names go too; when no
//!   name is left, the image is deleted;
//! * by the name and manifest digest `--digests` shows (`rmi busybox@sha256:…`):
//!   the image's names in that repository go, and the image with them if
//!   no other name is left;
//! * by ID (`rmi 3f5a`): an image with at most one tag, all its names in one
//!   repository, is untagged and deleted; one with more names needs `-f`
//!   (`image is referenced in multiple repositories`);
//! * an image a container uses cannot be deleted: a running container's
//!   image never, a stopped container's only with `-f` by ID. Its last name
//!   is removed only with `-f`, and then the image stays, nameless, for its
//!   containers, running or stopped (Docker's containerd image store; the
//!   older graph-driver store deleted a stopped container's image there).
//!   [`ContainerUsers`] is the hook the runtime fills in.
//!
//! Removing an image only drops it from `index.json`; the garbage
//! collection that follows deletes the blobs and snapshots no remaining
//! image reaches, so a layer shared with another image stays.

use super::error::{ImageOpsError, Result};
use crate::image::{Digest, Reference};
use crate::store::{GcReport, ImageRecord, Store, StoreError};

/// A container using an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUse {
    /// The container's ID (short form is fine).
    pub container: String,
    /// True when it is running.
    pub running: bool,
}

/// Tells which containers use an image; the runtime implements it.
pub trait ContainerUsers {
    /// The containers created from the image with ID `image`.
    fn containers_using(&self, image: &Digest) -> Vec<ContainerUse>;

    /// Layers and snapshots containers still need (their image may be gone after
    /// `rmi -f`); garbage collection keeps them.
    fn gc_roots(&self) -> crate::store::GcRoots {
        crate::store::GcRoots::default()
    }
}

/// No containers: what kiln has until the runtime exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoContainers;

impl ContainerUsers for NoContainers {
    fn containers_using(&self, _image: &Digest) -> Vec<ContainerUse> {
        Vec::new()
    }
}

/// One line of Docker's removal output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    /// A name was removed (`busybox:latest`, `busybox@sha256:…`).
    Untagged(String),
    /// An image (its ID) or a layer (its chainID) was deleted.
    Deleted(Digest),
}

/// What `kiln rmi` did.
#[derive(Debug, Default)]
pub struct RemoveReport {
    /// Untagged and deleted, in order, with deleted layers after their image.
    pub events: Vec<RemoveEvent>,
    /// Names that could not be removed, with why.
    pub errors: Vec<(String, ImageOpsError)>,
    /// Garbage collection's result, when an image was deleted; an error
    /// here (the store busy with a build) only delays freeing space.
    pub gc: Option<std::result::Result<GcReport, StoreError>>,
}

/// True when the names are at most one tag, all in one repository (Docker's
/// `isSingleReference`); names other tools wrote count as repositories of
/// their own.
fn is_single_reference(image: &ImageRecord) -> bool {
    let tags = image.tags().count();
    let mut repos: Vec<Reference> = image.references.iter().map(|r| r.repository()).collect();
    repos.dedup();
    tags <= 1 && repos.len() + image.other_names.len() <= 1
}

/// How many names `image` keeps when `r` is removed (with the digest names
/// of its repository, if `r` is that repository's last tag).
fn names_left_after_untag(image: &ImageRecord, r: &Reference) -> usize {
    let repo = r.repository();
    let last_tag_of_repo =
        r.tag().is_some() && !image.tags().any(|t| t != r && t.repository() == repo);
    image
        .references
        .iter()
        .filter(|x| *x != r)
        .filter(|x| !(last_tag_of_repo && x.digest().is_some() && x.repository() == repo))
        .count()
        + image.other_names.len()
}

/// Refuses to delete an image containers use.
fn check_containers(image: &ImageRecord, force: bool, users: &dyn ContainerUsers) -> Result<()> {
    for u in users.containers_using(&image.id) {
        if u.running {
            return Err(ImageOpsError::Conflict {
                message: format!(
                    "unable to delete {} (cannot be forced) - image is being used by running container {}",
                    image.id.short(),
                    u.container
                ),
            });
        }
        if !force {
            return Err(ImageOpsError::Conflict {
                message: format!(
                    "unable to delete {} (must be forced) - image is being used by stopped container {}",
                    image.id.short(),
                    u.container
                ),
            });
        }
    }
    Ok(())
}

/// Drops the image and all its names from the index.
fn delete(store: &Store, image: &ImageRecord, events: &mut Vec<RemoveEvent>) -> Result<()> {
    store.remove_image(&image.manifest_digest)?;
    for r in &image.references {
        events.push(RemoveEvent::Untagged(r.familiar_string()));
    }
    for n in &image.other_names {
        events.push(RemoveEvent::Untagged(n.clone()));
    }
    events.push(RemoveEvent::Deleted(image.id.clone()));
    Ok(())
}

/// Removes one name or image; returns the events and the deleted image.
fn remove_one(
    store: &Store,
    name: &str,
    force: bool,
    users: &dyn ContainerUsers,
) -> Result<(Vec<RemoveEvent>, Option<ImageRecord>)> {
    if let Ok(crate::store::Stored::Index(ix)) = store.resolve_stored(name) {
        return remove_index(store, name, &ix);
    }
    let image = super::resolve(store, name)?;
    let mut events = Vec::new();
    let parsed = Reference::parse(name).ok();
    // `name@digest` as `--digests` shows it but not recorded: it stands for
    // the repository's names of this image, which all go.
    if let Some(r) = parsed
        .as_ref()
        .filter(|r| r.digest() == Some(&image.manifest_digest) && !image.references.contains(r))
    {
        let repo = r.repository();
        let names: Vec<Reference> = image
            .references
            .iter()
            .filter(|x| x.repository() == repo)
            .cloned()
            .collect();
        let left = image.references.len() - names.len() + image.other_names.len();
        if left == 0 {
            check_containers(&image, force, users)?;
        }
        for n in &names {
            store.untag(n)?;
            events.push(RemoveEvent::Untagged(n.familiar_string()));
        }
        events.push(RemoveEvent::Untagged(r.familiar_string()));
        let current = store.image(&image.manifest_digest)?;
        if !current.is_dangling() {
            return Ok((events, None));
        }
        delete(store, &current, &mut events)?;
        return Ok((events, Some(current)));
    }
    let by_reference = parsed.filter(|r| image.references.contains(r));
    if let Some(r) = by_reference {
        // Check containers before touching anything if this name is the last: without -f
        // the name stays (the image would be left nameless under a container); with -f only
        // the name goes, the image stays for its containers (running or stopped), nameless.
        let mut keep_image = false;
        if names_left_after_untag(&image, &r) == 0 {
            if let Some(u) = users.containers_using(&image.id).first() {
                if !force {
                    return Err(ImageOpsError::Conflict {
                        message: format!(
                            "unable to remove repository reference {name:?} (must force) - container {} is using its referenced image {}",
                            u.container,
                            image.id.short()
                        ),
                    });
                }
                keep_image = true;
            }
        }
        store.untag(&r)?;
        events.push(RemoveEvent::Untagged(r.familiar_string()));
        // The last tag of a repository takes the repository's digest names along.
        if r.tag().is_some() {
            let repo = r.repository();
            let current = store.image(&image.manifest_digest)?;
            if !current.tags().any(|t| t.repository() == repo) {
                for d in current
                    .references
                    .iter()
                    .filter(|x| x.digest().is_some() && x.repository() == repo)
                {
                    store.untag(d)?;
                    events.push(RemoveEvent::Untagged(d.familiar_string()));
                }
            }
        }
        let current = store.image(&image.manifest_digest)?;
        if keep_image || !current.is_dangling() {
            return Ok((events, None));
        }
        delete(store, &current, &mut events)?;
        return Ok((events, Some(current)));
    }
    if image.other_names.iter().any(|n| n == name) && !is_single_reference(&image) && !force {
        return Err(ImageOpsError::Conflict {
            message: format!(
                "unable to remove {name:?}: the image has other names; remove it by ID with -f"
            ),
        });
    }
    // By ID (or by a name another tool wrote).
    if !is_single_reference(&image) && !force {
        return Err(ImageOpsError::Conflict {
            message: format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                image.id.short()
            ),
        });
    }
    check_containers(&image, force, users)?;
    delete(store, &image, &mut events)?;
    Ok((events, Some(image)))
}

/// The chainIDs (top first) of `image`'s layers whose blobs `gc` deleted.
fn deleted_layers(image: &ImageRecord, gc: &GcReport) -> Vec<Digest> {
    let chains = image.chain_ids();
    let mut out: Vec<Digest> = image
        .diff_ids
        .iter()
        .zip(chains)
        .filter(|(d, _)| gc.blobs_removed.contains(d))
        .map(|(_, c)| c)
        .collect();
    out.reverse();
    out
}

/// Removes a name of an index of several platforms (by one of its names), or the index and
/// all its names (by digest). An index without names is dropped, its platforms' images with
/// it: the first of them is returned so that garbage collection runs (containers made from
/// them keep their layers, as after `rmi -f`).
fn remove_index(
    store: &Store,
    name: &str,
    ix: &crate::store::IndexRecord,
) -> Result<(Vec<RemoveEvent>, Option<ImageRecord>)> {
    let mut events = Vec::new();
    match Reference::parse(name)
        .ok()
        .filter(|r| ix.references.contains(r))
    {
        Some(r) => {
            store.untag(&r)?;
            events.push(RemoveEvent::Untagged(r.familiar_string()));
        }
        None => {
            for r in &ix.references {
                events.push(RemoveEvent::Untagged(r.familiar_string()));
            }
            store.remove_image(&ix.digest)?;
        }
    }
    if store.index_record(&ix.digest).is_ok() {
        return Ok((events, None));
    }
    events.push(RemoveEvent::Deleted(ix.digest.clone()));
    let first = ix.platforms().first().map(|(_, m)| m.clone());
    let image = first.map(|m| store.image_blobs(&m)).transpose()?;
    Ok((events, image))
}

/// `kiln rmi [-f] IMAGE...`: removes each name or image, then collects
/// garbage once. A name that fails does not stop the others; with `force`,
/// a missing image is not an error (as `docker rmi -f`).
pub fn remove_images(
    store: &Store,
    names: &[String],
    force: bool,
    users: &dyn ContainerUsers,
) -> RemoveReport {
    let mut report = RemoveReport::default();
    let mut groups: Vec<(Vec<RemoveEvent>, Option<ImageRecord>)> = Vec::new();
    for name in names {
        match remove_one(store, name, force, users) {
            Ok(g) => groups.push(g),
            Err(ImageOpsError::NoSuchImage { .. }) if force => {}
            Err(e) => report.errors.push((name.clone(), e)),
        }
    }
    if groups.iter().any(|(_, deleted)| deleted.is_some()) {
        report.gc = Some(store.gc_with_roots(&users.gc_roots()));
        if let Some(Ok(gc)) = &report.gc {
            super::size::Sizes::new(store).forget(&gc.blobs_removed);
        }
    }
    for (mut events, deleted) in groups {
        if let (Some(image), Some(Ok(gc))) = (&deleted, &report.gc) {
            events.extend(
                deleted_layers(image, gc)
                    .into_iter()
                    .map(RemoveEvent::Deleted),
            );
        }
        report.events.extend(events);
    }
    report
}

/// What `kiln image prune` did.
#[derive(Debug)]
pub struct PruneReport {
    /// Untagged and deleted, in order.
    pub events: Vec<RemoveEvent>,
    /// Garbage collection's result (bytes freed, or why it could not run).
    pub gc: std::result::Result<GcReport, StoreError>,
}

impl PruneReport {
    /// Bytes the garbage collection freed.
    pub fn reclaimed(&self) -> u64 {
        self.gc.as_ref().map_or(0, |g| g.bytes_freed)
    }
}

/// `kiln image prune [-a]`: removes dangling images (with `all`, every image and every
/// index of several platforms no container uses), then collects garbage.
pub fn prune_images(store: &Store, all: bool, users: &dyn ContainerUsers) -> Result<PruneReport> {
    prune_images_where(store, all, &|_| true, users)
}

/// [`prune_images`] limited to the images `selected` accepts (`--filter until=…`,
/// `label=…`).
pub fn prune_images_where(
    store: &Store,
    all: bool,
    selected: &dyn Fn(&ImageRecord) -> bool,
    users: &dyn ContainerUsers,
) -> Result<PruneReport> {
    let mut events = Vec::new();
    for image in store.list_images()? {
        if !(all || image.is_dangling()) || !selected(&image) {
            continue;
        }
        if !users.containers_using(&image.id).is_empty() {
            continue;
        }
        match delete(store, &image, &mut events) {
            // Removed meanwhile by another kiln: nothing to do.
            Err(ImageOpsError::Store(StoreError::ImageNotFound { .. })) => {}
            other => other?,
        }
    }
    if all {
        prune_indexes(store, selected, users, &mut events)?;
    }
    let gc = store.gc_with_roots(&users.gc_roots());
    if let Ok(gc) = &gc {
        super::size::Sizes::new(store).forget(&gc.blobs_removed);
    }
    Ok(PruneReport { events, gc })
}

/// `prune -a` of indexes of several platforms: each index whose entries no container uses
/// goes with all its names (an index is never dangling: one without names is dropped at
/// once). `selected` sees the entry an index shows as itself (the host's, else the first).
/// Its platforms' images go at the garbage collection that follows, unless something else
/// names them.
fn prune_indexes(
    store: &Store,
    selected: &dyn Fn(&ImageRecord) -> bool,
    users: &dyn ContainerUsers,
    events: &mut Vec<RemoveEvent>,
) -> Result<()> {
    for ix in store.list_indexes()? {
        let entries: Vec<ImageRecord> = ix
            .platforms()
            .iter()
            .filter_map(|(_, m)| store.image_blobs(m).ok())
            .collect();
        let shown = ix
            .shown_manifest()
            .and_then(|m| entries.iter().find(|e| e.manifest_digest == m));
        if !shown.is_some_and(selected) {
            continue;
        }
        if entries
            .iter()
            .any(|e| !users.containers_using(&e.id).is_empty())
        {
            continue;
        }
        match store.remove_image(&ix.digest) {
            // Removed meanwhile by another kiln: nothing to do.
            Err(StoreError::ImageNotFound { .. }) => continue,
            other => other?,
        };
        for r in &ix.references {
            events.push(RemoveEvent::Untagged(r.familiar_string()));
        }
        for n in &ix.other_names {
            events.push(RemoveEvent::Untagged(n.clone()));
        }
        events.push(RemoveEvent::Deleted(ix.digest.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{layer_tar, put_test_image, temp_store};

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    struct Using(Digest, bool);

    impl ContainerUsers for Using {
        fn containers_using(&self, image: &Digest) -> Vec<ContainerUse> {
            if *image == self.0 {
                vec![ContainerUse {
                    container: "c0ffee".into(),
                    running: self.1,
                }]
            } else {
                Vec::new()
            }
        }
    }

    #[test]
    fn untags_then_deletes_on_the_last_name() {
        let (_dir, store) = temp_store();
        let shared = layer_tar(&[("shared", b"s")]);
        let own = layer_tar(&[("own", b"o")]);
        let a = put_test_image(&store, &[&shared, &own], "a");
        let b = put_test_image(&store, &[&shared], "b");
        store.tag(&r("app:1"), &a.manifest_digest).unwrap();
        store.tag(&r("app:2"), &a.manifest_digest).unwrap();
        store.tag(&r("other:1"), &b.manifest_digest).unwrap();

        let rep = remove_images(&store, &names(&["app:1"]), false, &NoContainers);
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.events, vec![RemoveEvent::Untagged("app:1".into())]);
        assert!(rep.gc.is_none());

        let rep = remove_images(&store, &names(&["app:2"]), false, &NoContainers);
        let own_chain = a.chain_ids()[1].clone();
        assert_eq!(
            rep.events,
            vec![
                RemoveEvent::Untagged("app:2".into()),
                RemoveEvent::Deleted(a.id.clone()),
                RemoveEvent::Deleted(own_chain),
            ]
        );
        // The shared layer stays for the other image.
        assert!(store.has_blob(&b.layers()[0]));
        assert!(store.check().unwrap().is_empty());
        assert_eq!(store.list_images().unwrap().len(), 1);
    }

    #[test]
    fn by_id_needs_force_with_several_names() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        store.tag(&r("one:1"), &a.manifest_digest).unwrap();
        store.tag(&r("two:1"), &a.manifest_digest).unwrap();
        let id = a.id.short().to_owned();
        let rep = remove_images(&store, &names(&[&id]), false, &NoContainers);
        let (_, err) = &rep.errors[0];
        assert!(
            err.to_string()
                .contains("image is referenced in multiple repositories"),
            "{err}"
        );
        let rep = remove_images(&store, &names(&[&id]), true, &NoContainers);
        assert!(rep.errors.is_empty());
        assert_eq!(
            rep.events[..3],
            [
                RemoveEvent::Untagged("one:1".into()),
                RemoveEvent::Untagged("two:1".into()),
                RemoveEvent::Deleted(a.id.clone()),
            ]
        );
        assert!(store.list_images().unwrap().is_empty());
    }

    #[test]
    fn last_tag_takes_its_digest_names_along() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        store.tag(&r("app:1"), &a.manifest_digest).unwrap();
        let by_digest = r(&format!("app@{}", a.manifest_digest));
        store.tag(&by_digest, &a.manifest_digest).unwrap();
        // `app` means app:latest, which does not exist.
        let rep = remove_images(&store, &names(&["app"]), false, &NoContainers);
        assert!(rep.events.is_empty());
        assert!(matches!(
            rep.errors.first(),
            Some((_, ImageOpsError::NoSuchImage { name })) if name == "app:latest"
        ));
        let rep = remove_images(&store, &names(&["app:1"]), false, &NoContainers);
        assert_eq!(
            rep.events[..3],
            [
                RemoveEvent::Untagged("app:1".into()),
                RemoveEvent::Untagged(by_digest.familiar_string()),
                RemoveEvent::Deleted(a.id.clone()),
            ]
        );
    }

    #[test]
    fn the_shown_digest_name_removes_the_repository_names() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        store.tag(&r("app:1"), &a.manifest_digest).unwrap();
        store.tag(&r("app:2"), &a.manifest_digest).unwrap();
        store.tag(&r("other:1"), &a.manifest_digest).unwrap();
        let by_digest = format!("app@{}", a.manifest_digest);
        let rep = remove_images(&store, &names(&[&by_digest]), false, &NoContainers);
        assert_eq!(
            rep.events,
            vec![
                RemoveEvent::Untagged("app:1".into()),
                RemoveEvent::Untagged("app:2".into()),
                RemoveEvent::Untagged(by_digest.clone()),
            ]
        );
        let by_digest = format!("other@{}", a.manifest_digest);
        let rep = remove_images(&store, &names(&[&by_digest]), false, &NoContainers);
        assert_eq!(
            rep.events[1..3],
            [
                RemoveEvent::Untagged(by_digest),
                RemoveEvent::Deleted(a.id.clone())
            ]
        );
        assert!(store.list_images().unwrap().is_empty());
    }

    #[test]
    fn containers_block_removal() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        store.tag(&r("app:1"), &a.manifest_digest).unwrap();
        let stopped = Using(a.id.clone(), false);
        let running = Using(a.id.clone(), true);
        for users in [&stopped, &running] {
            let rep = remove_images(&store, &names(&["app:1"]), false, users);
            assert_eq!(
                rep.errors[0].1.to_string(),
                format!(
                    "conflict: unable to remove repository reference \"app:1\" (must force) - container c0ffee is using its referenced image {}",
                    a.id.short()
                )
            );
            // Nothing was untagged.
            assert_eq!(store.list_images().unwrap()[0].tags().count(), 1);
        }
        let rep = remove_images(&store, &names(&[a.id.as_str()]), true, &running);
        assert!(rep.errors[0].1.to_string().contains("cannot be forced"));
        let rep = remove_images(&store, &names(&[a.id.as_str()]), true, &stopped);
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert!(store.list_images().unwrap().is_empty());
    }

    // `rmi -f app:1` deleted the image of a stopped container and refused a running one's;
    // Docker untags it and keeps the image for the container, either way.
    #[test]
    fn force_untags_an_image_a_container_uses_and_keeps_it() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        for running in [false, true] {
            store.tag(&r("app:1"), &a.manifest_digest).unwrap();
            let users = Using(a.id.clone(), running);
            let rep = remove_images(&store, &names(&["app:1"]), true, &users);
            assert!(rep.errors.is_empty(), "{:?}", rep.errors);
            assert_eq!(rep.events, vec![RemoveEvent::Untagged("app:1".into())]);
            assert!(rep.gc.is_none());
            let left = store.list_images().unwrap();
            assert_eq!(left.len(), 1);
            assert!(left[0].is_dangling() && left[0].id == a.id);
        }
    }

    #[test]
    fn force_ignores_missing_images() {
        let (_dir, store) = temp_store();
        let rep = remove_images(&store, &names(&["nope"]), true, &NoContainers);
        assert!(rep.errors.is_empty() && rep.events.is_empty());
        let rep = remove_images(&store, &names(&["nope"]), false, &NoContainers);
        assert_eq!(rep.errors[0].1.to_string(), "no such image: nope:latest");
    }

    #[test]
    fn prune_removes_dangling_or_all() {
        let (_dir, store) = temp_store();
        let a = put_test_image(&store, &[b"a"], "a");
        let b = put_test_image(&store, &[b"bb"], "b");
        store.tag(&r("app:1"), &a.manifest_digest).unwrap();
        let rep = prune_images(&store, false, &NoContainers).unwrap();
        assert_eq!(rep.events, vec![RemoveEvent::Deleted(b.id.clone())]);
        assert!(rep.reclaimed() > 0);
        let kept = Using(a.id.clone(), false);
        let rep = prune_images(&store, true, &kept).unwrap();
        assert!(rep.events.is_empty());
        let rep = prune_images(&store, true, &NoContainers).unwrap();
        assert_eq!(
            rep.events,
            vec![
                RemoveEvent::Untagged("app:1".into()),
                RemoveEvent::Deleted(a.id.clone())
            ]
        );
        assert!(store.list_blobs().unwrap().is_empty());
    }

    /// Imports a one-file image for `platform` into `tag` (which then holds an index when
    /// it held another platform).
    fn import_into(store: &Store, tag: &str, platform: &str) -> ImageRecord {
        let opts = super::super::import::ImportOptions {
            platform: crate::common::platform::Platform::parse(platform).unwrap(),
            tag: Some(r(tag)),
            ..Default::default()
        };
        let tar = layer_tar(&[("f", platform.as_bytes())]);
        super::super::import::import_rootfs(store, &tar[..], &opts)
            .unwrap()
            .image
    }

    #[test]
    fn prune_all_removes_unused_indexes_and_their_images() {
        let (_dir, store) = temp_store();
        let amd = import_into(&store, "m:1", "linux/amd64");
        let arm = import_into(&store, "m:1", "linux/arm64");
        let ix = store.list_indexes().unwrap().remove(0);
        assert_eq!(ix.platforms().len(), 2);
        // Never dangling; kept while a container uses an entry.
        let rep = prune_images(&store, false, &NoContainers).unwrap();
        assert!(rep.events.is_empty(), "{:?}", rep.events);
        let rep = prune_images(&store, true, &Using(arm.id.clone(), false)).unwrap();
        assert!(rep.events.is_empty(), "{:?}", rep.events);
        assert!(store.has_blob(&arm.manifest_digest));
        let rep = prune_images(&store, true, &NoContainers).unwrap();
        assert_eq!(
            rep.events,
            vec![
                RemoveEvent::Untagged("m:1".into()),
                RemoveEvent::Deleted(ix.digest.clone())
            ]
        );
        assert!(store.list_indexes().unwrap().is_empty());
        for i in [&amd, &arm] {
            assert!(!store.has_blob(&i.manifest_digest) && !store.has_blob(&i.diff_ids[0]));
        }
        assert!(store.list_blobs().unwrap().is_empty());
    }
}
