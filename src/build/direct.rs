//! COPY straight into a new layer, without an overlay mount.
//!
//! A COPY that only adds paths no layer below has (`COPY . /app` into a fresh directory, the
//! common big copy) needs nothing from the overlay: its items are written directly into the
//! new snapshot directory, with the directories above them copied up as overlayfs would
//! (mode, owner and xattrs of the merged view). A file whose content (the context's hash)
//! and metadata match a file of an earlier COPY's snapshot is hard-linked from that snapshot
//! instead of written again: snapshots never change once committed. The layer is then
//! committed from that directory like any other step's upper dir, so the blob is the one the
//! overlay path makes, and a hard-linked file is indistinguishable from a copied one (each
//! inode is used once per layer, and its owner, mode and times are the item's).
//!
//! Anything else (a path that exists below, a whiteout, a missing parent, a symlinked parent,
//! a reserved `.wh.` name, a duplicate name) takes the overlay path, which handles it.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, futimens, mkdirat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::archive::open_dir;
use crate::context::Hash;
use crate::rootfs::copy::{Item, ItemKind};
use crate::rootfs::layers::INDEX_FILE;

/// Above this many links an inode is copied instead (ext4 allows 65,000).
const MAX_LINKS: u64 = 60_000;

/// What a context file was when it was hashed: a copy made from it is indexed only if it
/// still is (an edit during the build must not index old content under the new file).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hashed {
    /// Content hash.
    pub hash: Hash,
    /// Size.
    pub size: u64,
    /// mtime (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// ctime (seconds, nanoseconds).
    pub ctime: (i64, i64),
    /// Inode.
    pub ino: u64,
}

/// One indexed file of a snapshot: its content hash. Its size, mode, owner and mtime are
/// the file's own, checked on the file itself before it is linked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    name: String,
    hash: String,
}

/// The files of an earlier COPY's snapshot that can be hard-linked.
pub(crate) struct LinkSource {
    fs: OwnedFd,
    files: HashMap<String, String>,
}

impl LinkSource {
    /// The index of the snapshot in `dir` (the directory holding `fs/`), if it has one.
    pub(crate) fn open(dir: &Path) -> Option<LinkSource> {
        let bytes = std::fs::read(dir.join(INDEX_FILE)).ok()?;
        let list: Vec<IndexEntry> = serde_json::from_slice(&bytes).ok()?;
        let fs = File::open(dir.join("fs")).ok()?;
        Some(LinkSource {
            fs: fs.into(),
            files: list.into_iter().map(|e| (e.name, e.hash)).collect(),
        })
    }

    /// An fd (`O_PATH`) of the file to link for `item`, if this snapshot has one with the
    /// same content, size, mode, owner and mtime.
    fn find(&self, item: &Item, hashed: &Hashed) -> Option<(OwnedFd, (u64, u64))> {
        if *self.files.get(&item.name)? != crate::context::hex(&hashed.hash) {
            return None;
        }
        let fd = open_beneath(&self.fs, &item.name, libc::O_PATH | libc::O_NOFOLLOW).ok()?;
        let st = fstat(&fd).ok()?;
        let mtime = item.mtime.max(0);
        let is_file = st.st_mode & libc::S_IFMT == libc::S_IFREG;
        let same = is_file
            && st.st_size as u64 == hashed.size
            && st.st_mode & 0o7777 == item.mode
            && (st.st_uid, st.st_gid) == (item.uid, item.gid)
            && st.st_mtime == mtime
            && st.st_mtime_nsec == 0
            && (st.st_nlink as u64) < MAX_LINKS;
        same.then_some((fd, (st.st_dev, st.st_ino)))
    }
}

/// Opens `name` (a relative path) below the directory `dir`, through no symlink and no
/// mount point.
fn open_beneath(dir: &OwnedFd, name: &str, flags: i32) -> io::Result<OwnedFd> {
    let name = CString::new(name)?;
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_XDEV;
    let fd = crate::executor::kernel::openat2(dir.as_raw_fd(), &name, flags, resolve)?;
    // SAFETY: openat2 returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A directory above the items that exists below: created in the new layer as overlayfs's
/// copy-up would.
#[derive(Debug)]
struct Ancestor {
    name: String,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A COPY that can be written straight into the new layer.
#[derive(Debug)]
pub(crate) struct DirectWrite {
    ancestors: Vec<Ancestor>,
    items: Vec<Item>,
}

/// Whether nothing is at `path` (relative) under `dir`: the lookup failed because a
/// component is missing or not a directory. Anything else (a whiteout, a loop) counts as
/// something.
fn absent(dir: &Path, path: &str) -> bool {
    matches!(
        std::fs::symlink_metadata(dir.join(path)).map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENOENT | libc::ENOTDIR))
    )
}

/// The direct plan for `items` over the merged root `merged` of the layers `lowers`, or
/// `None` when the COPY must go through the overlay.
pub(crate) fn plan(items: &[Item], merged: &Path, lowers: &[PathBuf]) -> Option<DirectWrite> {
    if items.is_empty() || !nix::unistd::geteuid().is_root() {
        return None;
    }
    let mut items: Vec<&Item> = items.iter().collect();
    items.sort_by(|a, b| a.name.split('/').cmp(b.name.split('/')));
    let mut kinds: HashMap<&str, bool> = HashMap::with_capacity(items.len());
    for it in &items {
        let ok_name = it
            .name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(".wh."))
            && !it.name.as_bytes().contains(&0);
        let ok_kind = match &it.kind {
            ItemKind::Symlink(t) => !t.is_empty() && !t.as_bytes().contains(&0),
            // FIFOs go through the extractor.
            ItemKind::Fifo => false,
            _ => true,
        };
        if !ok_name || !ok_kind || kinds.insert(&it.name, it.kind == ItemKind::Dir).is_some() {
            return None;
        }
    }
    // Directories above the items: an item directory, or a real directory in the image
    // (checked component by component, so a symlink is never gone through).
    let mut existing: HashMap<String, bool> = HashMap::new();
    let mut ancestors = Vec::new();
    for it in &items {
        let mut parent_is_item = false;
        let mut at = 0;
        while let Some(i) = it.name[at..].find('/') {
            let p = &it.name[..at + i];
            at += i + 1;
            match kinds.get(p) {
                Some(true) => {
                    parent_is_item = true;
                    continue;
                }
                Some(false) => return None,
                None => parent_is_item = false,
            }
            if let Some(ok) = existing.get(p) {
                if !ok {
                    return None;
                }
                continue;
            }
            let md = std::fs::symlink_metadata(merged.join(p)).ok();
            let ok = md.as_ref().is_some_and(|m| m.file_type().is_dir());
            existing.insert(p.to_string(), ok);
            let md = md.filter(|_| ok)?;
            let xattrs = crate::archive::read_xattrs(&merged.join(p)).ok()?;
            ancestors.push(Ancestor {
                name: p.to_string(),
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                xattrs,
            });
        }
        // An item directly below an existing directory must be new in every layer (a
        // whiteout or an opaque directory below would need the overlay's handling).
        let new_everywhere =
            || absent(merged, &it.name) && lowers.iter().all(|l| absent(l, &it.name));
        if !parent_is_item && !new_everywhere() {
            return None;
        }
    }
    Some(DirectWrite {
        ancestors,
        items: items.into_iter().cloned().collect(),
    })
}

/// The open directories from the layer root down to the current item's parent.
struct DirStack {
    dirs: Vec<(String, OwnedFd)>,
}

impl DirStack {
    /// The parent directory of `name`, opening it below the ones already open.
    fn parent(&mut self, name: &str) -> io::Result<&OwnedFd> {
        let parts: Vec<&str> = name.split('/').collect();
        let parents = &parts[..parts.len() - 1];
        let mut keep = 1;
        while keep < self.dirs.len()
            && keep <= parents.len()
            && self.dirs[keep].0 == parents[keep - 1]
        {
            keep += 1;
        }
        self.dirs.truncate(keep);
        for p in &parents[self.dirs.len() - 1..] {
            let top = &self.dirs.last().expect("the root is never left").1;
            let fd = open_dir(top.as_fd(), p.as_bytes())?;
            self.dirs.push((p.to_string(), fd));
        }
        Ok(&self.dirs.last().expect("the root is never left").1)
    }
}

fn base(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Creates the directory `name` (the layer path `full`) in `parent` with this mode and
/// owner; its mtime is set once its children are in.
fn make_dir(parent: &OwnedFd, full: &str, mode: u32, uid: u32, gid: u32) -> io::Result<OwnedFd> {
    let n = base(full);
    mkdirat(parent, n, Mode::from_bits_truncate(0o700)).map_err(|e| ctx("create", full, e))?;
    let fd = open_dir(parent.as_fd(), n.as_bytes())?;
    fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    fchmod(&fd, Mode::from_bits_truncate(mode))?;
    Ok(fd)
}

/// Copies exactly `len` bytes of `src` into `dst` (in the kernel where it can), padding
/// with zeros if the source got shorter meanwhile, as the tar path does.
fn copy_data(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both fds are open; null offsets use and advance the file positions.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) if done == 0 => {
                    let mut r = io::Read::take(src, len);
                    let mut w = dst;
                    done = io::copy(&mut r, &mut w)?;
                    break;
                }
                _ => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    if done < len {
        dst.set_len(len)?;
    }
    Ok(())
}

/// Writes `plan` into the empty directory `upper` (not mounted anywhere). `hashed` gives
/// the context files' content hashes by host path; `links`, an earlier snapshot to
/// hard-link unchanged files from. Returns the index of the files written, for
/// [`INDEX_FILE`].
///
/// Directories first, then the files on every core, then the directories' mtimes (which
/// creating their children changed).
pub(crate) fn write(
    plan: &DirectWrite,
    upper: &Path,
    hashed: &HashMap<PathBuf, Hashed>,
    links: Option<&LinkSource>,
) -> io::Result<Vec<u8>> {
    let root: OwnedFd = File::open(upper)?.into();
    let new_stack = || -> io::Result<DirStack> {
        Ok(DirStack {
            dirs: vec![(String::new(), root.try_clone()?)],
        })
    };
    let mut stack = new_stack()?;
    for a in &plan.ancestors {
        let fd = make_dir(stack.parent(&a.name)?, &a.name, a.mode, a.uid, a.gid)?;
        for (k, v) in &a.xattrs {
            set_xattr(&fd, k, v).map_err(|e| ctx("set xattrs of", &a.name, e))?;
        }
    }
    let (dirs, others): (Vec<&Item>, Vec<&Item>) =
        plan.items.iter().partition(|it| it.kind == ItemKind::Dir);
    for it in &dirs {
        make_dir(stack.parent(&it.name)?, &it.name, it.mode, it.uid, it.gid)?;
    }
    drop(stack);
    let used = std::sync::Mutex::new(HashSet::new());
    let chunks: Vec<Vec<IndexEntry>> = {
        use rayon::prelude::*;
        others
            .par_chunks(256)
            .map(|chunk| -> io::Result<Vec<IndexEntry>> {
                let mut stack = new_stack()?;
                let mut index = Vec::new();
                for it in chunk {
                    let p = stack.parent(&it.name)?;
                    if let Some(e) = write_item(it, p, hashed, links, &used)? {
                        index.push(e);
                    }
                }
                Ok(index)
            })
            .collect::<io::Result<_>>()?
    };
    for it in &dirs {
        let fd = open_beneath(&root, &it.name, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| ctx("open", &it.name, e))?;
        let ts = TimeSpec::new(it.mtime.max(0), 0);
        futimens(&fd, &ts, &ts).map_err(|e| ctx("set times of", &it.name, e))?;
    }
    let index: Vec<IndexEntry> = chunks.into_iter().flatten().collect();
    serde_json::to_vec(&index).map_err(io::Error::other)
}

fn ctx(what: &str, name: &str, e: impl Into<io::Error>) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what} /{name}: {e}"))
}

/// Writes one file or symlink (directories are made first) into its open parent
/// directory; an indexed file's entry.
fn write_item(
    it: &Item,
    p: &OwnedFd,
    hashed: &HashMap<PathBuf, Hashed>,
    links: Option<&LinkSource>,
    used: &std::sync::Mutex<HashSet<(u64, u64)>>,
) -> io::Result<Option<IndexEntry>> {
    let n = base(&it.name);
    let ts = TimeSpec::new(it.mtime.max(0), 0);
    match &it.kind {
        ItemKind::Dir | ItemKind::Fifo => {
            unreachable!("directories are made before the files; FIFOs are never planned")
        }
        ItemKind::Symlink(target) => {
            symlinkat(target.as_str(), p, n).map_err(|e| ctx("create", &it.name, e))?;
            fchownat(
                p,
                n,
                Some(Uid::from_raw(it.uid)),
                Some(Gid::from_raw(it.gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            nix::sys::stat::utimensat(p, n, &ts, &ts, UtimensatFlags::NoFollowSymlink)?;
            Ok(None)
        }
        ItemKind::Data(data) => {
            let f = create_file(p, n).map_err(|e| ctx("create", &it.name, e))?;
            (&f).write_all(data)?;
            finish_file(&f, it, &ts)?;
            Ok(None)
        }
        ItemKind::File(_) | ItemKind::ContextFile(_) => {
            let (host, opened) = match &it.kind {
                ItemKind::ContextFile(cf) => (cf.host(), Some(cf)),
                ItemKind::File(host) => (host.as_path(), None),
                _ => unreachable!("matched above"),
            };
            let h = hashed.get(host);
            if let (Some(l), Some(h)) = (links, h) {
                if let Some((src, ino)) = l.find(it, h) {
                    // Each inode once per layer: a second name would be a tar hard link.
                    let fresh = used.lock().unwrap_or_else(|p| p.into_inner()).insert(ino);
                    if fresh && link(&src, p, n).is_ok() {
                        return Ok(Some(entry(it, h)));
                    }
                }
            }
            // A context file is opened below the context root and checked to be the one
            // hashed; a file kiln made (a download) by its path.
            let src = match opened {
                Some(cf) => cf.open().map_err(io::Error::other)?,
                None => File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(host)
                    .map_err(|e| ctx("read", &host.display().to_string(), e))?,
            };
            let len = src.metadata()?.len();
            let f = create_file(p, n).map_err(|e| ctx("create", &it.name, e))?;
            copy_data(&src, &f, len).map_err(|e| ctx("copy", &it.name, e))?;
            finish_file(&f, it, &ts)?;
            // Indexed only if the source is still what was hashed.
            let now = src.metadata()?;
            Ok(h.filter(|h| {
                h.size == len
                    && now.len() == len
                    && now.ino() == h.ino
                    && (now.mtime(), now.mtime_nsec()) == h.mtime
                    && (now.ctime(), now.ctime_nsec()) == h.ctime
            })
            .map(|h| entry(it, h)))
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;

fn entry(it: &Item, h: &Hashed) -> IndexEntry {
    IndexEntry {
        name: it.name.clone(),
        hash: crate::context::hex(&h.hash),
    }
}

fn create_file(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(File::from(fd))
}

/// Owner, then mode (chown clears setuid bits), then times, as the extractor does.
fn finish_file(f: &File, it: &Item, ts: &TimeSpec) -> io::Result<()> {
    fchown(
        f.as_fd(),
        Some(Uid::from_raw(it.uid)),
        Some(Gid::from_raw(it.gid)),
    )?;
    fchmod(f.as_fd(), Mode::from_bits_truncate(it.mode))?;
    futimens(f.as_fd(), ts, ts)?;
    Ok(())
}

/// Hard-links the file `src` (an `O_PATH` fd) as `name` in `dir`.
fn link(src: &OwnedFd, dir: &OwnedFd, name: &str) -> io::Result<()> {
    let cname = CString::new(name)?;
    let empty: &CStr = c"";
    // SAFETY: valid fds and C strings.
    let r = unsafe {
        libc::linkat(
            src.as_raw_fd(),
            empty.as_ptr(),
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last().into())
    }
}

fn set_xattr(fd: &OwnedFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = CString::new(name)?;
    // SAFETY: a valid fd, C string and buffer.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{self, ExtractOptions, WhiteoutMode, WriterOptions};
    use crate::context::ignore::IgnoreRules;
    use crate::context::Context;
    use crate::rootfs::copy::{self, CopyOptions};
    use sha2::{Digest as _, Sha256};
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn context() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src/deep/er")).unwrap();
        fs::create_dir_all(r.join("private")).unwrap();
        fs::write(r.join("a.txt"), "alpha").unwrap();
        fs::write(r.join("empty"), "").unwrap();
        fs::write(r.join("src/main.rs"), "fn main() {}").unwrap();
        fs::write(r.join("src/deep/er/x.bin"), vec![7u8; 100_000]).unwrap();
        fs::write(r.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::write(r.join("suid"), "s").unwrap();
        fs::write(r.join("private/key"), "k").unwrap();
        fs::set_permissions(r.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(r.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(r.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(r.join("private/key"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("../a.txt", r.join("src/rel")).unwrap();
        symlink("/etc/passwd", r.join("abs")).unwrap();
        d
    }

    fn items(ctx_dir: &Path, chown: Option<(u32, u32)>) -> Vec<Item> {
        let c = Context::scan(ctx_dir, &IgnoreRules::default()).unwrap();
        let opts = CopyOptions {
            chown,
            ..Default::default()
        };
        let mut items = copy::plan(
            &[copy::context_source(&c, "")],
            "/app",
            &|_| copy::Existing::Nothing,
            &opts,
        )
        .unwrap();
        items.push(Item {
            name: "app/heredoc".into(),
            kind: ItemKind::Data(b"inline\n".to_vec()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        });
        items
    }

    fn hashed(items: &[Item]) -> HashMap<PathBuf, Hashed> {
        let mut m = HashMap::new();
        for it in items {
            let p = match &it.kind {
                ItemKind::File(p) => p,
                ItemKind::ContextFile(cf) => &cf.host().to_path_buf(),
                _ => continue,
            };
            {
                let md = fs::symlink_metadata(p).unwrap();
                m.insert(
                    p.clone(),
                    Hashed {
                        hash: Sha256::digest(fs::read(p).unwrap()).into(),
                        size: md.len(),
                        mtime: (md.mtime(), md.mtime_nsec()),
                        ctime: (md.ctime(), md.ctime_nsec()),
                        ino: md.ino(),
                    },
                );
            }
        }
        m
    }

    fn layer(dir: &Path) -> Vec<u8> {
        archive::write_upper(dir, Vec::new(), WriterOptions::default())
            .unwrap()
            .0
    }

    /// What the overlay path does: the items as a tar, through the extractor.
    fn extracted(items: &[Item]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let tar = copy::write_tar(items, Vec::new()).unwrap();
        let opts = ExtractOptions {
            whiteouts: WhiteoutMode::Refuse,
            ..Default::default()
        };
        archive::extract(tar.as_slice(), d.path(), &opts).unwrap();
        d
    }

    fn is_root() -> bool {
        crate::testutil::require(nix::unistd::geteuid().is_root(), "root (writing owners)")
    }

    #[test]
    fn the_layer_is_the_one_the_extractor_makes() {
        if !is_root() {
            return;
        }
        let ctx = context();
        let empty = tempfile::tempdir().unwrap();
        for chown in [None, Some((1000, 1000))] {
            let items = items(ctx.path(), chown);
            let plan = plan(&items, empty.path(), &[]).expect("a new directory goes direct");
            let up = tempfile::tempdir().unwrap();
            write(&plan, up.path(), &hashed(&items), None).unwrap();
            let want = extracted(&items);
            assert_eq!(layer(up.path()), layer(want.path()), "chown {chown:?}");
            let m = fs::metadata(up.path().join("app/suid")).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
        }
    }

    #[test]
    fn unchanged_files_are_linked_from_the_last_snapshot() {
        if !is_root() {
            return;
        }
        let ctx = context();
        let empty = tempfile::tempdir().unwrap();
        let snaps = tempfile::tempdir().unwrap();
        let first = snaps.path().join("1");
        fs::create_dir_all(first.join("fs")).unwrap();
        let items1 = items(ctx.path(), None);
        let p1 = plan(&items1, empty.path(), &[]).unwrap();
        let index = write(&p1, &first.join("fs"), &hashed(&items1), None).unwrap();
        fs::write(first.join(INDEX_FILE), index).unwrap();

        // One file edited (same size), and a snapshot file whose mode no longer matches.
        fs::write(ctx.path().join("a.txt"), "ALPHA").unwrap();
        fs::set_permissions(
            first.join("fs/app/run.sh"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let items2 = items(ctx.path(), None);
        let p2 = plan(&items2, empty.path(), &[]).unwrap();
        let second = snaps.path().join("2");
        fs::create_dir_all(second.join("fs")).unwrap();
        let links = LinkSource::open(&first).expect("an index");
        write(&p2, &second.join("fs"), &hashed(&items2), Some(&links)).unwrap();

        let ino = |dir: &Path, f: &str| {
            fs::symlink_metadata(dir.join("fs/app").join(f))
                .unwrap()
                .ino()
        };
        assert_eq!(ino(&first, "src/main.rs"), ino(&second, "src/main.rs"));
        assert_eq!(
            ino(&first, "src/deep/er/x.bin"),
            ino(&second, "src/deep/er/x.bin")
        );
        assert_ne!(ino(&first, "a.txt"), ino(&second, "a.txt"), "edited");
        assert_ne!(
            ino(&first, "run.sh"),
            ino(&second, "run.sh"),
            "mode differs"
        );
        assert_eq!(fs::read(second.join("fs/app/a.txt")).unwrap(), b"ALPHA");
        // The layer is the one a fresh copy makes: no tar hard links, the items' metadata.
        assert_eq!(layer(&second.join("fs")), layer(extracted(&items2).path()));

        // A tampered index (wrong hash) links nothing.
        let mut list: Vec<IndexEntry> =
            serde_json::from_slice(&fs::read(first.join(INDEX_FILE)).unwrap()).unwrap();
        for e in &mut list {
            e.hash = "00".repeat(32);
        }
        fs::write(first.join(INDEX_FILE), serde_json::to_vec(&list).unwrap()).unwrap();
        let third = snaps.path().join("3");
        fs::create_dir_all(third.join("fs")).unwrap();
        let links = LinkSource::open(&first).unwrap();
        write(&p2, &third.join("fs"), &hashed(&items2), Some(&links)).unwrap();
        assert_ne!(ino(&first, "src/main.rs"), ino(&third, "src/main.rs"));
    }

    #[test]
    fn what_needs_the_overlay_is_left_to_it() {
        if !is_root() {
            return;
        }
        let ctx = context();
        let items = items(ctx.path(), None);
        let merged = tempfile::tempdir().unwrap();
        let lower = tempfile::tempdir().unwrap();
        assert!(plan(&items, merged.path(), &[lower.path().to_path_buf()]).is_some());
        // Something below at the destination (even only in a lower layer: a whiteout).
        fs::write(lower.path().join("app"), "").unwrap();
        assert!(plan(&items, merged.path(), &[lower.path().to_path_buf()]).is_none());
        fs::create_dir(merged.path().join("app")).unwrap();
        assert!(plan(&items, merged.path(), &[]).is_none());
        // A symlinked parent is never gone through.
        let merged = tempfile::tempdir().unwrap();
        symlink("/tmp", merged.path().join("usr")).unwrap();
        let one = |name: &str| Item {
            name: name.into(),
            kind: ItemKind::Data(Vec::new()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        assert!(plan(&[one("usr/x")], merged.path(), &[]).is_none());
        // A missing parent, a reserved name, a duplicate.
        assert!(plan(&[one("nodir/x")], merged.path(), &[]).is_none());
        assert!(plan(&[one(".wh.x")], merged.path(), &[]).is_none());
        assert!(plan(&[one("x"), one("x")], merged.path(), &[]).is_none());
        // An existing directory above is copied up with its mode, owner and xattrs.
        fs::create_dir(merged.path().join("opt")).unwrap();
        fs::set_permissions(merged.path().join("opt"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(merged.path().join("opt"), Some(7), Some(8)).unwrap();
        let p = plan(&[one("opt/x")], merged.path(), &[]).expect("direct");
        let up = tempfile::tempdir().unwrap();
        write(&p, up.path(), &HashMap::new(), None).unwrap();
        let m = fs::metadata(up.path().join("opt")).unwrap();
        assert_eq!(
            (m.permissions().mode() & 0o7777, m.uid(), m.gid()),
            (0o750, 7, 8)
        );
        assert!(up.path().join("opt/x").is_file());
    }
}
