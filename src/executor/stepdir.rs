//! Lays out a step's scratch dir on the host before the container exists: upper and work
//! dirs, the short-name layer links, the init layer of missing mount targets, and the
//! generated `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::error::ExecError;
use super::layers::{self, Found};
use super::{RwLayer, StepSpec};

/// overlayfs stacks at most this many lower layers (OVL_MAX_STACK); the init layer is one.
pub const MAX_LOWERS: usize = 499;

/// The host-side layout of one step.
#[derive(Debug, Clone)]
pub struct StepDir {
    /// `<scratch>/step-<id>`.
    pub dir: PathBuf,
    /// Upper dir.
    pub upper: PathBuf,
    /// Work dir.
    pub work: PathBuf,
    /// Dir of short-name symlinks (`i`, `0`… or `s`, `u`, `w`).
    pub links: PathBuf,
    /// The lowers' names relative to `links`, top-most first (`0`… or `s/<name>/fs`).
    pub lower_names: Vec<String>,
    /// The init layer.
    pub init: PathBuf,
    /// Overlay mount point.
    pub merged: PathBuf,
    /// Copied root (copy mode).
    pub rootfs: PathBuf,
    /// `(in-root path, host file)` for the generated `/etc` files.
    pub etc_files: Vec<(String, PathBuf)>,
    /// Extra binds: `(host path, in-root path, read-only)`.
    pub binds: Vec<(PathBuf, String, bool)>,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExecError + 'a {
    move |e| ExecError::io(what, path, e)
}

/// Turns an absolute in-image path into a clean relative one (`/a/./b/` → `a/b`), refusing
/// `..` (the image's paths come from the Dockerfile; the executor never needs to go up).
pub fn rel_path(abs: &str) -> Result<String, ExecError> {
    let p = Path::new(abs);
    if !p.is_absolute() {
        return Err(ExecError::InvalidSpec(format!(
            "{abs:?} is not an absolute path"
        )));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                return Err(ExecError::InvalidSpec(format!("{abs:?} contains '..'")))
            }
            Component::Prefix(_) => {}
        }
    }
    Ok(parts.join("/"))
}

/// Lexically cleans a WORKDIR the way Go's `filepath.Clean` does (`..` above `/` stays at `/`).
pub fn clean_workdir(w: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in w.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn make_dir(p: &Path, mode: u32) -> Result<(), ExecError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .map_err(io_err("creating", p))
}

/// Copies mode and owner of `from` (if it exists) onto `to`.
fn copy_owner_mode(from: Option<&Path>, to: &Path) -> Result<(), ExecError> {
    let Some(from) = from else { return Ok(()) };
    let Ok(m) = fs::symlink_metadata(from) else {
        return Ok(());
    };
    std::os::unix::fs::lchown(to, Some(m.uid()), Some(m.gid())).map_err(io_err("chown", to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777))
        .map_err(io_err("chmod", to))
}

/// The top-most layer holding `rel` as a directory.
fn dir_in_layers(layers: &[PathBuf], rel: &str) -> Option<PathBuf> {
    layers
        .iter()
        .map(|l| l.join(rel))
        .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
}

/// Makes `init/<rel>` and its parents, each with the mode and owner it has in the image.
fn init_dirs(layers: &[PathBuf], init: &Path, rel: &str) -> Result<(), ExecError> {
    let mut prefix = String::new();
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(comp);
        let p = init.join(&prefix);
        if fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        make_dir(&p, 0o755)?;
        copy_owner_mode(dir_in_layers(layers, &prefix).as_deref(), &p)?;
    }
    Ok(())
}

fn lookup(layers: &[PathBuf], rel: &str) -> Result<Found, ExecError> {
    layers::lookup(layers, rel).map_err(|e| ExecError::ImageFile {
        path: format!("/{rel}"),
        source: e,
    })
}

fn not_dir_error(rel: &str, at: usize, symlink: bool) -> ExecError {
    let path = format!(
        "/{}",
        rel.split('/').take(at + 1).collect::<Vec<_>>().join("/")
    );
    if symlink {
        ExecError::SymlinkMountTarget { path }
    } else {
        ExecError::BadMountTarget {
            path,
            expected: "directory",
        }
    }
}

/// Wants `rel` to exist as a directory (`dir`) or file in the merged view; adds a stub to the
/// init layer when the image lacks it. A symlinked file target is shadowed when
/// `shadow_symlink` (the generated `/etc` files, as Docker's init layer does); every other
/// symlink is refused.
fn want_target(
    layers: &[PathBuf],
    init: &Path,
    rel: &str,
    dir: bool,
    shadow_symlink: bool,
) -> Result<(), ExecError> {
    let path = format!("/{rel}");
    let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
    let found = lookup(layers, rel)?;
    let stub = match found {
        Found::Absent => true,
        Found::Dir if dir => false,
        Found::File if !dir => false,
        Found::Symlink if shadow_symlink && !dir => true,
        Found::Symlink => return Err(ExecError::SymlinkMountTarget { path }),
        Found::NotDir { at, symlink } => return Err(not_dir_error(rel, at, symlink)),
        _ => {
            return Err(ExecError::BadMountTarget {
                path,
                expected: if dir { "directory" } else { "regular file" },
            })
        }
    };
    if !stub {
        return Ok(());
    }
    init_dirs(layers, init, parent)?;
    let p = init.join(rel);
    if dir {
        make_dir(&p, 0o755)
    } else {
        fs::File::create(&p)
            .map(drop)
            .map_err(io_err("creating", &p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).map_err(io_err("chmod", &p))
    }
}

/// A new container id: 64 hex digits.
pub fn new_id() -> Result<String, ExecError> {
    crate::common::ids::new_id().map_err(ExecError::Spawn)
}

fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n"
    )
}

/// Creates the step's scratch layout for `spec`.
pub fn prepare(spec: &StepSpec, id: &str, hostname: &str) -> Result<StepDir, ExecError> {
    if spec.lowers.len() > MAX_LOWERS {
        return Err(ExecError::TooManyLayers(spec.lowers.len()));
    }
    let mut lowers = Vec::with_capacity(spec.lowers.len());
    for l in &spec.lowers {
        let abs = std::path::absolute(l).map_err(io_err("resolving lower dir", l))?;
        let m = fs::metadata(&abs).map_err(io_err("reading lower dir", &abs))?;
        if !m.is_dir() {
            return Err(ExecError::InvalidSpec(format!(
                "lower {} is not a directory",
                abs.display()
            )));
        }
        lowers.push(abs);
    }
    let scratch = std::path::absolute(&spec.scratch).map_err(io_err("resolving", &spec.scratch))?;
    fs::create_dir_all(&scratch).map_err(io_err("creating scratch dir", &scratch))?;
    let dir = scratch.join(format!("step-{}", &id[..id.len().min(16)]));
    // 0700: the copied or merged root may hold setuid binaries other host users must not
    // reach.
    make_dir(&dir, 0o700)?;
    let result = prepare_in(spec, lowers, dir.clone(), hostname);
    if result.is_err() {
        let _ = remove_step_dir(&dir);
    }
    result
}

/// The directory holding every lower when they are all store snapshots
/// (`<dir>/<hex name>/fs`) and their names `s/<name>/fs` fit the overlay options' page;
/// `None` otherwise (each lower then gets its own link).
fn snapshots_dir_of(lowers: &[PathBuf]) -> Option<&Path> {
    let mut dir = None;
    let mut len = 0;
    for l in lowers {
        if l.file_name()? != "fs" {
            return None;
        }
        let snap = l.parent()?;
        let name = snap.file_name()?.to_str()?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        len += "s/".len() + name.len() + "/fs:".len();
        let parent = snap.parent()?;
        if *dir.get_or_insert(parent) != parent {
            return None;
        }
    }
    // The other options take under 100 bytes of the 4096-byte page.
    dir.filter(|_| len <= 3800)
}

/// Links in `links` through which overlay options name `lowers` (top-most first), short
/// however long the store's path is. When every lower is a store snapshot, one link
/// `<prefix>s` to the snapshots directory names them all (`<prefix>s/<chainID>/fs`): a link
/// per layer costs a disk block for its long target. Otherwise each lower gets its own
/// link, `<prefix><i>`. Returns the names, relative to `links`.
pub(crate) fn link_lowers(
    links: &Path,
    prefix: &str,
    lowers: &[PathBuf],
) -> std::io::Result<Vec<String>> {
    match snapshots_dir_of(lowers) {
        Some(snapshots) => {
            std::os::unix::fs::symlink(snapshots, links.join(format!("{prefix}s")))?;
            Ok(lowers
                .iter()
                .filter_map(|l| l.parent()?.file_name()?.to_str())
                .map(|name| format!("{prefix}s/{name}/fs"))
                .collect())
        }
        None => lowers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let name = format!("{prefix}{i}");
                std::os::unix::fs::symlink(l, links.join(&name))?;
                Ok(name)
            })
            .collect(),
    }
}

fn prepare_in(
    spec: &StepSpec,
    lowers: Vec<PathBuf>,
    dir: PathBuf,
    hostname: &str,
) -> Result<StepDir, ExecError> {
    let top_root = lowers.first().map(PathBuf::as_path);
    let (upper, work) = match &spec.rw {
        RwLayer::InScratch => {
            let (u, w) = (dir.join("upper"), dir.join("work"));
            make_dir(&u, 0o755)?;
            make_dir(&w, 0o700)?;
            // The upper dir's root is the container's "/": give it the image's mode.
            copy_owner_mode(top_root, &u)?;
            (u, w)
        }
        RwLayer::Dirs { upper, work } => {
            let u = std::path::absolute(upper).map_err(io_err("resolving", upper))?;
            let w = std::path::absolute(work).map_err(io_err("resolving", work))?;
            fs::create_dir_all(&u).map_err(io_err("creating upper dir", &u))?;
            fs::create_dir_all(&w).map_err(io_err("creating work dir", &w))?;
            (u, w)
        }
    };

    let init = dir.join("init");
    make_dir(&init, 0o755)?;
    copy_owner_mode(top_root, &init)?;
    let mut view = vec![upper.clone()];
    view.extend(lowers.iter().cloned());
    let stubs = if spec.build_step { &upper } else { &init };
    for d in ["proc", "dev", "sys"] {
        want_target(&view, stubs, d, true, false)?;
    }
    let hosts = dir.join("hosts");
    let hostname_file = dir.join("hostname");
    let resolv = dir.join("resolv.conf");
    let mut hosts_text = hosts_file(hostname);
    for (name, addr) in &spec.extra_hosts {
        hosts_text.push_str(&format!("{addr}\t{name}\n"));
    }
    fs::write(&hosts, hosts_text).map_err(io_err("writing", &hosts))?;
    fs::write(&hostname_file, format!("{hostname}\n"))
        .map_err(io_err("writing", &hostname_file))?;
    // The host's resolver config, as Docker copies it (unreadable: an empty file).
    let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
    fs::write(&resolv, host_resolv).map_err(io_err("writing", &resolv))?;
    let mut etc_files = vec![
        ("etc/hosts".to_string(), hosts),
        ("etc/resolv.conf".to_string(), resolv),
    ];
    if !spec.build_step {
        etc_files.push(("etc/hostname".to_string(), hostname_file));
    }
    for (rel, _) in &etc_files {
        want_target(&view, &init, rel, false, true)?;
    }
    let mut binds = Vec::new();
    for b in &spec.binds {
        let rel = rel_path(&b.target)?;
        if rel.is_empty() {
            return Err(ExecError::InvalidSpec("cannot bind over /".into()));
        }
        let m = fs::metadata(&b.source).map_err(io_err("reading bind source", &b.source))?;
        want_target(&view, &init, &rel, m.is_dir(), false)?;
        binds.push((b.source.clone(), rel, b.readonly));
    }

    let links = dir.join("l");
    make_dir(&links, 0o700)?;
    let link = |name: &str, target: &Path| -> Result<(), ExecError> {
        let p = links.join(name);
        std::os::unix::fs::symlink(target, &p).map_err(io_err("linking", &p))
    };
    link("i", &init)?;
    let lower_names = link_lowers(&links, "", &lowers).map_err(io_err("linking", &links))?;
    link("u", &upper)?;
    link("w", &work)?;

    let merged = dir.join("merged");
    make_dir(&merged, 0o755)?;
    Ok(StepDir {
        lower_names,
        rootfs: dir.join("rootfs"),
        dir,
        upper,
        work,
        links,
        init,
        merged,
        etc_files,
        binds,
    })
}

/// Copies the layers into `step.rootfs` for the copy fallback; returns the lowers view.
pub fn copy_root(spec_lowers: &[PathBuf], step: &StepDir) -> Result<(), ExecError> {
    let mut layers = vec![step.init.clone()];
    for l in spec_lowers {
        layers.push(std::path::absolute(l).map_err(io_err("resolving lower dir", l))?);
    }
    make_dir(&step.rootfs, 0o755)?;
    copy_owner_mode(layers.get(1).map(PathBuf::as_path), &step.rootfs)?;
    super::copyroot::build_root(&layers, &step.rootfs)
        .map(drop)
        .map_err(io_err("copying layers", &step.rootfs))
}

/// Removes a step's scratch dir (after its upper dir has been committed, or on failure).
/// Symlinks inside are removed, never followed. A missing dir is fine.
pub fn remove_step_dir(path: &Path) -> Result<(), ExecError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ExecError::io("removing step dir", path, e)),
    }
}

/// Removes every `step-*` dir left in `scratch` by killed runs; returns how many. Call it only
/// when no step is running on this scratch dir (at startup, under the store's lock). Nothing
/// is ever mounted on these dirs in the host's mount namespace, so removal cannot hit a busy
/// mount.
pub fn clean_scratch(scratch: &Path) -> Result<usize, ExecError> {
    let entries = match fs::read_dir(scratch) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ExecError::io("reading scratch dir", scratch, e)),
    };
    let mut n = 0;
    for e in entries {
        let e = e.map_err(io_err("reading scratch dir", scratch))?;
        if e.file_name().to_string_lossy().starts_with("step-") {
            remove_step_dir(&e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_image_paths_are_cleaned_and_confined() {
        assert_eq!(rel_path("/etc/hosts").expect("ok"), "etc/hosts");
        assert_eq!(rel_path("/a/./b//c/").expect("ok"), "a/b/c");
        assert!(rel_path("relative").is_err());
        assert!(rel_path("/a/../../etc").is_err());
        assert_eq!(clean_workdir("/a/b/../c/."), "/a/c");
        assert_eq!(clean_workdir("/../../x"), "/x");
        assert_eq!(clean_workdir(""), "/");
    }

    #[test]
    fn init_layer_holds_only_missing_targets() {
        let t = tempfile::tempdir().expect("tempdir");
        let lower = t.path().join("lower");
        fs::create_dir_all(lower.join("proc")).expect("mkdir");
        fs::create_dir_all(lower.join("etc")).expect("mkdir");
        fs::write(lower.join("etc/hosts"), "x").expect("write");
        std::os::unix::fs::symlink("../run/resolv.conf", lower.join("etc/resolv.conf"))
            .expect("symlink");
        let mut spec = StepSpec::new(vec![lower], t.path().join("scratch"), vec!["true".into()]);
        spec.rw = RwLayer::InScratch;
        let step = prepare(&spec, &new_id().expect("id"), "host").expect("prepare");
        let init = &step.init;
        assert!(!init.join("proc").exists());
        assert!(init.join("dev").is_dir() && init.join("sys").is_dir());
        assert!(!init.join("etc/hosts").exists());
        assert!(init.join("etc/hostname").is_file());
        // A symlinked /etc/resolv.conf is shadowed by a plain file, never followed.
        assert!(init.join("etc/resolv.conf").is_file());
        assert_eq!(
            fs::read_link(step.links.join("0")).expect("link"),
            spec.lowers[0]
        );
        remove_step_dir(&step.dir).expect("cleanup");
    }

    #[test]
    fn store_snapshots_share_one_link() {
        let t = tempfile::tempdir().expect("tempdir");
        let snaps = t.path().join("snapshots");
        let (a, b) = (snaps.join("ab12/fs"), snaps.join("cd34/fs"));
        fs::create_dir_all(&a).expect("mkdir");
        fs::create_dir_all(&b).expect("mkdir");
        let mut spec = StepSpec::new(
            vec![a.clone(), b.clone()],
            t.path().join("scratch"),
            vec!["true".into()],
        );
        spec.rw = RwLayer::InScratch;
        let step = prepare(&spec, &new_id().expect("id"), "host").expect("prepare");
        assert_eq!(step.lower_names, ["s/ab12/fs", "s/cd34/fs"]);
        assert_eq!(fs::read_link(step.links.join("s")).expect("link"), snaps);
        assert!(step.links.join(&step.lower_names[1]).is_dir());
        assert!(fs::symlink_metadata(step.links.join("0")).is_err());
        remove_step_dir(&step.dir).expect("cleanup");
        // Anything else gets a link per lower.
        let other = t.path().join("elsewhere/ef56/fs");
        assert_eq!(snapshots_dir_of(&[a.clone(), other]), None);
        assert_eq!(snapshots_dir_of(&[t.path().join("lower")]), None);
        assert_eq!(snapshots_dir_of(&[snaps.join("not:hex/fs")]), None);
        let chain = snaps.join("a".repeat(64)).join("fs");
        assert_eq!(
            snapshots_dir_of(&vec![chain.clone(); 53]),
            Some(snaps.as_path())
        );
        assert_eq!(snapshots_dir_of(&vec![chain; 60]), None, "past one page");
    }

    #[test]
    fn symlinked_proc_in_the_image_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let lower = t.path().join("lower");
        fs::create_dir_all(&lower).expect("mkdir");
        std::os::unix::fs::symlink("/", lower.join("proc")).expect("symlink");
        let spec = StepSpec::new(vec![lower], t.path().join("scratch"), vec!["true".into()]);
        let err = prepare(&spec, &new_id().expect("id"), "h").expect_err("refused");
        assert!(
            matches!(&err, ExecError::SymlinkMountTarget { path } if path == "/proc"),
            "{err}"
        );
    }

    #[test]
    fn symlinked_etc_is_refused_for_the_etc_binds() {
        let t = tempfile::tempdir().expect("tempdir");
        let lower = t.path().join("lower");
        fs::create_dir_all(&lower).expect("mkdir");
        std::os::unix::fs::symlink("/host-etc", lower.join("etc")).expect("symlink");
        let spec = StepSpec::new(vec![lower], t.path().join("scratch"), vec!["true".into()]);
        let err = prepare(&spec, &new_id().expect("id"), "h").expect_err("refused");
        assert!(
            matches!(&err, ExecError::SymlinkMountTarget { path } if path == "/etc"),
            "{err}"
        );
    }
}
