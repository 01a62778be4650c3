//! Moves a copied root from one layer chain to another: the root holds what the layers
//! `from` (top-most first) show, as overlayfs would; afterwards it holds what `to` shows.
//!
//! Only the layers the two chains do not share are read. For every path one of them holds,
//! the entry each chain shows there (the top-most layer that has it, whiteouts and opaque
//! directories applied) is compared: the same entry of the same layer, or the same inode
//! (a COPY written straight into its layer links the files it did not change to the
//! previous build's snapshot), is already right in the root; anything else is removed and
//! copied from the layer `to` shows. So moving a root from `base + COPY(old) + RUN(old)` to
//! `base + COPY(new)` after one file of the context changed costs a walk of the two COPY
//! layers and the copy of that one file.
//!
//! Hard links between files of one layer are kept as separate files where only some of
//! them are copied again.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::copyroot::{apply_dir, copy_meta, copy_nondir, remove_any, Placed};
use super::layers::{is_opaque, is_whiteout};

/// The entry a chain shows at a path: the layer it comes from and its metadata.
struct Shown<'a> {
    layer: &'a Path,
    meta: fs::Metadata,
}

impl Shown<'_> {
    fn path(&self, rel: &Path) -> PathBuf {
        self.layer.join(rel)
    }

    /// Whether `other` (not a directory) is certainly the same content and metadata.
    fn same(&self, other: &Shown<'_>) -> bool {
        if self.layer == other.layer {
            return true;
        }
        let kind = |m: &fs::Metadata| m.mode() & libc::S_IFMT;
        !self.meta.is_dir()
            && kind(&self.meta) == kind(&other.meta)
            && self.meta.dev() == other.meta.dev()
            && self.meta.ino() == other.meta.ino()
    }
}

/// Makes `root`, which shows the layers `from`, show the layers `to` (both top-most
/// first). An error leaves the root in an unknown state: the caller drops it.
pub(super) fn rebase(root: &Path, from: &[PathBuf], to: &[PathBuf]) -> io::Result<()> {
    let from: Vec<&Path> = from.iter().map(PathBuf::as_path).collect();
    let to: Vec<&Path> = to.iter().map(PathBuf::as_path).collect();
    walk(root, Path::new(""), &from, &to)
}

/// The top-most entry at `rel` among `layers` (each of which has `rel`'s parent as a
/// directory), `None` if a whiteout hides it or no layer has it.
fn shown<'a>(layers: &[&'a Path], rel: &Path) -> io::Result<Option<Shown<'a>>> {
    for layer in layers {
        match fs::symlink_metadata(layer.join(rel)) {
            Ok(m) if is_whiteout(&m) => return Ok(None),
            Ok(meta) => return Ok(Some(Shown { layer, meta })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The layers whose entries make up the directory `rel` that `top` (a directory) shows:
/// from `top`'s layer down, each layer where `rel` is a directory, up to the first where it
/// is opaque, and none below a layer that hides it (a whiteout or another kind of entry).
fn dir_layers<'a>(layers: &[&'a Path], top: &Shown<'a>, rel: &Path) -> io::Result<Vec<&'a Path>> {
    let start = layers.iter().position(|l| *l == top.layer).unwrap_or(0);
    let mut out = Vec::new();
    for layer in &layers[start..] {
        let p = layer.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                out.push(*layer);
                if is_opaque(&p) {
                    break;
                }
            }
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Brings the directory `rel` of `root` from what `from` shows to what `to` shows, where
/// `from` and `to` are the layers that make up that directory in each chain.
fn walk(root: &Path, rel: &Path, from: &[&Path], to: &[&Path]) -> io::Result<()> {
    // Layers in both lists add the same entries to both views: only the others can differ.
    let mut names = BTreeSet::new();
    for layer in from.iter().chain(to) {
        if from.contains(layer) && to.contains(layer) {
            continue;
        }
        match fs::read_dir(layer.join(rel)) {
            Ok(d) => {
                for e in d {
                    names.insert(e?.file_name());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    for name in names {
        let child = rel.join(&name);
        let old = shown(from, &child)?;
        let new = shown(to, &child)?;
        sync(root, &child, (from, old), (to, new))?;
    }
    Ok(())
}

type Side<'s, 'a> = (&'s [&'a Path], Option<Shown<'a>>);

fn sync(
    root: &Path,
    rel: &Path,
    (from, old): Side<'_, '_>,
    (to, new): Side<'_, '_>,
) -> io::Result<()> {
    let dst = root.join(rel);
    let Some(new) = new else {
        return remove_any(&dst);
    };
    match old {
        // Even the same directory entry may sit over other layers in the two chains.
        Some(old) if old.meta.is_dir() && new.meta.is_dir() => {
            let (old_layers, new_layers) =
                (dir_layers(from, &old, rel)?, dir_layers(to, &new, rel)?);
            walk(root, rel, &old_layers, &new_layers)?;
            // After the children, which change the directory's times.
            copy_meta(&new.path(rel), &dst, &new.meta)
        }
        Some(old) if old.same(&new) => Ok(()),
        _ => {
            remove_any(&dst)?;
            if new.meta.is_dir() {
                fs::create_dir(&dst)?;
                let layers = dir_layers(to, &new, rel)?;
                for layer in layers.iter().rev() {
                    apply_dir(layer, root, rel, &mut Placed::new(false))?;
                }
                copy_meta(&new.path(rel), &dst, &new.meta)
            } else {
                copy_nondir(&new.path(rel), &dst, &new.meta, &mut HashMap::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::copyroot::build_root;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Every entry of a tree: kind, mode, owner, mtime and content or link target.
    fn tree(root: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        fn go(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, String)>) {
            let mut names: Vec<_> = fs::read_dir(root.join(rel))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                let r = rel.join(&n);
                let p = root.join(&r);
                let m = fs::symlink_metadata(&p).unwrap();
                let what = if m.is_dir() {
                    go(root, &r, out);
                    "dir".to_string()
                } else if m.file_type().is_symlink() {
                    format!("link {}", fs::read_link(&p).unwrap().display())
                } else if m.is_file() {
                    format!("file {:?}", fs::read(&p).unwrap())
                } else {
                    format!("node {}", m.rdev())
                };
                let desc = format!(
                    "{what} {:o} {}:{} {}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.mtime()
                );
                out.push((r, desc));
            }
        }
        go(root, Path::new(""), &mut out);
        out.sort();
        out
    }

    fn whiteout(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) }, 0);
    }

    fn opaque(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C strings.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(r, 0);
    }

    fn file(p: &Path, body: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }

    /// A few layers with every kind of change: new, changed, deleted files, replaced and
    /// opaque directories, symlinks, a file replaced by a directory and back, modes, and
    /// files linked from a sibling layer (as a COPY written straight into its layer does).
    fn layers(d: &Path) -> HashMap<&'static str, PathBuf> {
        let mut m = HashMap::new();
        for n in ["base", "copy1", "copy2", "run1", "run2", "other"] {
            let p = d.join(n);
            fs::create_dir_all(&p).unwrap();
            m.insert(n, p);
        }
        let base = &m["base"];
        file(&base.join("bin/sh"), "shell");
        file(&base.join("etc/os"), "base-os");
        file(&base.join("etc/keep"), "keep");
        file(&base.join("var/lib/a"), "a");
        file(&base.join("var/lib/b"), "b");
        file(&base.join("swap"), "file-then-dir");
        symlink("bin/sh", base.join("sh")).unwrap();
        let c1 = &m["copy1"];
        for i in 0..20 {
            file(&c1.join(format!("app/d{}/f{i}", i % 3)), &format!("v1-{i}"));
        }
        file(&c1.join("app/only-old"), "old");
        let c2 = &m["copy2"];
        for i in 0..20 {
            let p = c2.join(format!("app/d{}/f{i}", i % 3));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            if i == 7 {
                fs::write(&p, "v2-changed").unwrap();
            } else {
                fs::hard_link(c1.join(format!("app/d{}/f{i}", i % 3)), &p).unwrap();
            }
        }
        file(&c2.join("app/only-new"), "new");
        fs::set_permissions(c2.join("app/d1"), fs::Permissions::from_mode(0o700)).unwrap();
        let r1 = &m["run1"];
        file(&r1.join("count"), "20");
        fs::create_dir_all(r1.join("etc")).unwrap();
        whiteout(&r1.join("etc/os"));
        fs::create_dir_all(r1.join("var/lib")).unwrap();
        opaque(&r1.join("var/lib"));
        file(&r1.join("var/lib/c"), "c");
        fs::create_dir_all(r1.join("swap/inside")).unwrap();
        fs::create_dir_all(r1.join("app")).unwrap();
        whiteout(&r1.join("app/d2"));
        symlink("/etc/keep", r1.join("sh")).unwrap();
        let r2 = &m["run2"];
        file(&r2.join("etc/os"), "run2-os");
        file(&r2.join("app/d0/f0"), "run2");
        let o = &m["other"];
        file(&o.join("swap"), "a file again");
        whiteout(&o.join("bin"));
        m
    }

    #[test]
    fn a_rebased_root_equals_a_fresh_copy_for_every_pair_of_chains() {
        let d = tempfile::tempdir().unwrap();
        let l = layers(d.path());
        let chain = |names: &[&str]| names.iter().map(|n| l[n].clone()).collect::<Vec<_>>();
        let chains = [
            chain(&["base"]),
            chain(&["copy1", "base"]),
            chain(&["copy2", "base"]),
            chain(&["run1", "copy1", "base"]),
            chain(&["run2", "run1", "copy1", "base"]),
            chain(&["run2", "copy2", "base"]),
            chain(&["other", "run1", "copy2", "base"]),
            chain(&["other", "base"]),
        ];
        for (i, from) in chains.iter().enumerate() {
            for (j, to) in chains.iter().enumerate() {
                let root = d.path().join(format!("root-{i}-{j}"));
                fs::create_dir(&root).unwrap();
                build_root(from, &root).unwrap();
                rebase(&root, from, to).unwrap();
                let fresh = d.path().join(format!("fresh-{i}-{j}"));
                fs::create_dir(&fresh).unwrap();
                build_root(to, &fresh).unwrap();
                assert_eq!(tree(&root), tree(&fresh), "from chain {i} to chain {j}");
                fs::remove_dir_all(&root).unwrap();
                fs::remove_dir_all(&fresh).unwrap();
            }
        }
    }

    // The source of a COPY --from in the unprivileged mode: a view whose files are the
    // layers' own must show what a copy shows, and leave the layers as they were.
    #[test]
    fn a_linked_view_equals_a_copy_and_leaves_the_layers_alone() {
        let d = tempfile::tempdir().unwrap();
        let l = layers(d.path());
        let mut names: Vec<&str> = l.keys().copied().collect();
        names.sort();
        let before: Vec<_> = names.iter().map(|n| tree(&l[n])).collect();
        let chain = |names: &[&str]| names.iter().map(|n| l[n].clone()).collect::<Vec<_>>();
        for (i, c) in [
            chain(&["run2", "run1", "copy1", "base"]),
            chain(&["other", "run1", "copy2", "base"]),
        ]
        .iter()
        .enumerate()
        {
            let (linked, copied) = (d.path().join(format!("linked{i}")), d.path().join("copied"));
            fs::create_dir(&linked).unwrap();
            fs::create_dir(&copied).unwrap();
            crate::executor::copyroot::link_root(c, &linked).unwrap();
            build_root(c, &copied).unwrap();
            assert_eq!(tree(&linked), tree(&copied), "chain {i}");
            fs::remove_dir_all(&copied).unwrap();
        }
        // It did link: the view's file is the top layer's inode.
        let (view, layer) = (d.path().join("linked0/etc/os"), l["run2"].join("etc/os"));
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&view), ino(&layer));
        let after: Vec<_> = names.iter().map(|n| tree(&l[n])).collect();
        assert_eq!(before, after, "a layer changed");
    }

    #[test]
    fn files_a_sibling_layer_links_are_not_copied_again() {
        let d = tempfile::tempdir().unwrap();
        let l = layers(d.path());
        let from = vec![l["run1"].clone(), l["copy1"].clone(), l["base"].clone()];
        let to = vec![l["copy2"].clone(), l["base"].clone()];
        let root = d.path().join("root");
        fs::create_dir(&root).unwrap();
        build_root(&from, &root).unwrap();
        let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
        let kept = ino(&root.join("app/d0/f3"));
        let changed = ino(&root.join("app/d1/f7"));
        // Held open, the replaced file's inode cannot be freed and its number reused.
        let _old = fs::File::open(root.join("app/d1/f7")).unwrap();
        rebase(&root, &from, &to).unwrap();
        assert_eq!(
            ino(&root.join("app/d0/f3")),
            kept,
            "an unchanged file was copied"
        );
        assert_ne!(ino(&root.join("app/d1/f7")), changed);
        assert_eq!(fs::read(root.join("app/d1/f7")).unwrap(), b"v2-changed");
        assert!(!root.join("count").exists());
    }
}
