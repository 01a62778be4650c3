//! Tests of the archive module: hostile tars against the extractor, round trips and determinism of the writer, and overlay snapshots and upper dirs.

mod hostile;
mod overlay;
mod roundtrip;
mod upper;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::writer::pax_record;
use super::*;

// ---------------------------------------------------------------------------
// Hand-built tars: the `tar` crate refuses most of what these tests need.

/// One raw entry.
#[derive(Clone, Debug)]
pub(crate) struct H {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: Vec<u8>,
    /// Size written in the ustar field; `None` means `data.len()`.
    pub size_field: Option<u64>,
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    pub major: u64,
    pub minor: u64,
}

impl H {
    pub fn new(name: &str, typeflag: u8) -> H {
        H {
            name: name.as_bytes().to_vec(),
            typeflag,
            link: Vec::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            data: Vec::new(),
            size_field: None,
            pax: Vec::new(),
            major: 0,
            minor: 0,
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let d = field.len() - 1;
    let s = format!("{v:0d$o}");
    field[..d].copy_from_slice(&s.as_bytes()[s.len() - d..]);
}

/// A ustar header block with a valid checksum; names longer than the field are cut.
pub(crate) fn block(
    name: &[u8],
    typeflag: u8,
    link: &[u8],
    mode: u32,
    size: u64,
    h: &H,
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    octal(&mut b[100..108], u64::from(mode));
    octal(&mut b[108..116], h.uid);
    octal(&mut b[116..124], h.gid);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], h.mtime);
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], h.major);
    octal(&mut b[337..345], h.minor);
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

/// Appends an entry (with its PAX header, if any) to `out`.
pub(crate) fn push(out: &mut Vec<u8>, h: &H) {
    if !h.pax.is_empty() {
        let body: Vec<u8> = h.pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        out.extend_from_slice(&block(
            b"PaxHeaders.0/x",
            b'x',
            b"",
            0o644,
            body.len() as u64,
            h,
        ));
        out.extend_from_slice(&body);
        pad(out);
    }
    let size = h.size_field.unwrap_or(h.data.len() as u64);
    out.extend_from_slice(&block(&h.name, h.typeflag, &h.link, h.mode, size, h));
    out.extend_from_slice(&h.data);
    pad(out);
}

/// Short forms of entries.
pub(crate) enum E<'a> {
    /// File with content.
    F(&'a str, &'a str),
    /// Directory.
    D(&'a str),
    /// Symlink name → target.
    S(&'a str, &'a str),
    /// Hard link name → target.
    L(&'a str, &'a str),
    /// Anything.
    R(H),
}

pub(crate) fn tar(es: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in es {
        let h = match e {
            E::F(n, c) => {
                let mut h = H::new(n, b'0');
                h.data = c.as_bytes().to_vec();
                h
            }
            E::D(n) => {
                let mut h = H::new(n, b'5');
                h.mode = 0o755;
                h
            }
            E::S(n, t) => {
                let mut h = H::new(n, b'2');
                h.link = t.as_bytes().to_vec();
                h.mode = 0o777;
                h
            }
            E::L(n, t) => {
                let mut h = H::new(n, b'1');
                h.link = t.as_bytes().to_vec();
                h
            }
            E::R(h) => h.clone(),
        };
        push(&mut out, &h);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

// ---------------------------------------------------------------------------
// A sandbox: a temp dir holding the extraction root and, beside it, host files
// that no extraction may touch.

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snap {
    kind: &'static str,
    mode: u32,
    ino: u64,
    nlink: u64,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

fn kind(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "other"
    }
}

/// Everything under `top` except `skip`: type, mode, inode, link count, owner,
/// size, mtime, ctime (which any chmod, chown, link or write changes), content.
pub(crate) fn listing(top: &Path, skip: &Path) -> BTreeMap<PathBuf, Snap> {
    let mut out = BTreeMap::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let k = kind(md.file_type());
        if k == "dir" {
            for e in fs::read_dir(&p).unwrap() {
                let c = e.unwrap().path();
                if c != skip {
                    stack.push(c);
                }
            }
        }
        out.insert(
            p.clone(),
            Snap {
                kind: k,
                mode: md.mode(),
                ino: md.ino(),
                nlink: md.nlink(),
                uid: md.uid(),
                gid: md.gid(),
                size: md.len(),
                mtime: (md.mtime(), md.mtime_nsec()),
                ctime: (md.ctime(), md.ctime_nsec()),
                content: (k == "file").then(|| fs::read(&p).unwrap()),
                link: (k == "symlink").then(|| fs::read_link(&p).unwrap()),
            },
        );
    }
    out
}

pub(crate) struct Sb {
    _t: tempfile::TempDir,
    /// The temp dir.
    pub top: PathBuf,
    /// The extraction root, `top/root`.
    pub root: PathBuf,
}

/// A sandbox with host markers: `top/etc/passwd`, `top/victim/hello`, `top/file`,
/// `top/markerdir`, each with a distinctive mode.
pub(crate) fn sandbox() -> Sb {
    let t = tempfile::tempdir().unwrap();
    let top = t.path().to_path_buf();
    let root = top.join("root");
    fs::create_dir(&root).unwrap();
    let mk_dir = |p: &Path, mode| {
        fs::create_dir(p).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    };
    let mk_file = |p: &Path, c: &str, mode| {
        fs::write(p, c).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    };
    mk_dir(&top.join("etc"), 0o751);
    mk_file(&top.join("etc/passwd"), "host passwd", 0o640);
    mk_dir(&top.join("victim"), 0o750);
    mk_file(&top.join("victim/hello"), "host hello", 0o640);
    mk_file(&top.join("file"), "host content", 0o600);
    mk_dir(&top.join("markerdir"), 0o710);
    Sb { _t: t, top, root }
}

impl Sb {
    /// Absolute host path of something beside the root, as a string for link targets.
    pub fn host(&self, rel: &str) -> String {
        self.top.join(rel).to_str().unwrap().to_string()
    }

    /// Path inside the root.
    pub fn r(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Extracts `tar` with `opts`, asserting that nothing outside the root changed:
    /// markers keep bytes, mode and inode, and nothing appeared or vanished.
    pub fn run_with(
        &self,
        tar: &[u8],
        opts: &ExtractOptions,
    ) -> Result<ExtractStats, ArchiveError> {
        self.confined(|| extract(tar, &self.root, opts))
    }

    /// Runs `f`, asserting that nothing outside the root changed: markers keep bytes, mode
    /// and inode, and nothing appeared or vanished.
    pub fn confined(
        &self,
        f: impl FnOnce() -> Result<ExtractStats, ArchiveError>,
    ) -> Result<ExtractStats, ArchiveError> {
        let before = listing(&self.top, &self.root);
        for marker in [
            "etc",
            "etc/passwd",
            "victim",
            "victim/hello",
            "file",
            "markerdir",
        ] {
            assert!(
                before.contains_key(&self.top.join(marker)),
                "marker {marker} missing"
            );
        }
        let r = f();
        let after = listing(&self.top, &self.root);
        if before != after {
            for (p, s) in &after {
                if before.get(p) != Some(s) {
                    eprintln!(
                        "changed or new outside the root: {} {:?} (was {:?})",
                        p.display(),
                        s,
                        before.get(p)
                    );
                }
            }
            for p in before.keys() {
                if !after.contains_key(p) {
                    eprintln!("vanished outside the root: {}", p.display());
                }
            }
            panic!("extraction changed the host outside the root (result: {r:?})");
        }
        r
    }

    pub fn run(&self, tar: &[u8]) -> Result<ExtractStats, ArchiveError> {
        self.run_with(tar, &ExtractOptions::default())
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.r(rel)).unwrap()
    }

    pub fn lmeta(&self, rel: &str) -> fs::Metadata {
        fs::symlink_metadata(self.r(rel)).unwrap()
    }

    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.r(rel)).is_ok()
    }

    pub fn same_inode(&self, a: &str, b: &str) -> bool {
        self.lmeta(a).ino() == self.lmeta(b).ino()
    }
}

/// Whether the filesystem at `dir` takes `user.*` xattrs.
pub(crate) fn user_xattrs_supported(dir: &Path) -> bool {
    let p = dir.join(".xattr-probe");
    fs::write(&p, b"").unwrap();
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            c"user.probe".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    fs::remove_file(&p).unwrap();
    r == 0
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---------------------------------------------------------------------------
// Overlay helpers: xattrs, a comparable view of a tree, and mounts that never
// leave a private mount namespace.

/// Sets xattr `k` on `p` without following a symlink; whether it worked.
pub(crate) fn set_xattr_nofollow(p: &Path, k: &str, v: &[u8]) -> bool {
    let cp = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ck = std::ffi::CString::new(k).unwrap();
    // SAFETY: valid C strings and buffer.
    unsafe { libc::lsetxattr(cp.as_ptr(), ck.as_ptr(), v.as_ptr().cast(), v.len(), 0) == 0 }
}

/// Xattr `k` of `p` (not following a symlink), if set.
pub(crate) fn get_xattr_nofollow(p: &Path, k: &str) -> Option<Vec<u8>> {
    let cp = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ck = std::ffi::CString::new(k).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings; buf is writable for its length.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), ck.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Whether `p` is an overlay whiteout, a 0/0 character device.
pub(crate) fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// Whether `p` is marked opaque for a root-mounted overlay.
pub(crate) fn is_opaque(p: &Path) -> bool {
    get_xattr_nofollow(p, "trusted.overlay.opaque").as_deref() == Some(b"y")
}

/// What a tree looks like to a process, for comparing a merged overlay view with
/// an extracted tree: type, mode, owner, content, link target, device number of
/// everything below `top` (not `top` itself). Times are left out: copy-up and
/// extraction set them differently by design.
pub(crate) fn tree_view(top: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let k = kind(md.file_type());
            let mut v = format!("{k} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid());
            match k {
                "dir" => stack.push(p.clone()),
                "file" => v += &format!(" {:?}", String::from_utf8_lossy(&fs::read(&p).unwrap())),
                "symlink" => v = format!("symlink -> {}", fs::read_link(&p).unwrap().display()),
                "char" | "block" => v += &format!(" dev {:x}", md.rdev()),
                _ => {}
            }
            out.insert(p.strip_prefix(top).unwrap().to_path_buf(), v);
        }
    }
    out
}

/// Whether the kernel has overlayfs.
pub(crate) fn overlay_supported() -> bool {
    fs::read_to_string("/proc/filesystems")
        .is_ok_and(|s| s.lines().any(|l| l.ends_with("\toverlay")))
}

/// Whether a test that mounts overlays can run; prints why not.
pub(crate) fn can_mount_overlay() -> bool {
    crate::testutil::root() && crate::testutil::require(overlay_supported(), "overlayfs")
}

/// Runs `f` on a thread of its own in a private mount namespace: its mounts are
/// invisible to the host and to other tests, and vanish with the thread even if
/// an unmount was missed. Panics in `f` propagate.
pub(crate) fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            // CLONE_NEWNS implies CLONE_FS, which a thread may unshare alone.
            unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
            // The copied mounts stay peers of the host's shared ones until made
            // private; a mount below them would otherwise propagate to the host.
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make mounts private");
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// An overlay mount, unmounted when dropped (also while a failing test unwinds).
pub(crate) struct Mounted(PathBuf);

impl Mounted {
    /// Mounts overlayfs on `target` with `options` (`lowerdir=...` and so on).
    pub fn overlay(target: &Path, options: &str) -> Mounted {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options),
        )
        .unwrap_or_else(|e| panic!("mount overlay -o {options} on {}: {e}", target.display()));
        Mounted(target.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        use nix::mount::{umount2, MntFlags};
        if let Err(e) = umount2(&self.0, MntFlags::empty()) {
            eprintln!("unmount {}: {e}; detaching", self.0.display());
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}
