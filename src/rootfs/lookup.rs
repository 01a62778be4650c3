//! Looking things up inside an image's root from the host: paths resolved with
//! `openat2(RESOLVE_IN_ROOT)` so a symlink in the image never leads out of it, and user and
//! group names read from the image's own `/etc/passwd` and `/etc/group`.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Open `path` (relative to the image root, leading `/` allowed) inside `root`, resolving
/// every symlink as if `root` were `/`.
pub fn open_in_root(root: &Path, path: &str, flags: i32) -> io::Result<OwnedFd> {
    let root_c = CString::new(root.as_os_str().as_bytes())?;
    // SAFETY: a plain open of a NUL-terminated path; the fd is owned below.
    let dirfd = unsafe {
        libc::open(
            root_c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dirfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dirfd` is a fresh descriptor nobody else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(dirfd) };
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let path_c = CString::new(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: openat2 with a valid dirfd, NUL-terminated path and a correctly sized struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path_c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `path` (relative to the image root, leading `/` allowed) with every symlink in it
/// followed inside `root`, the last component included, the way BuildKit resolves a COPY
/// destination (continuity's `RootPath`, see [`crate::common::symlinks::follow`]): a component that
/// does not exist ends the following (the rest is taken as written, so a dangling link leads
/// to where its target would be). The result is relative to the root and has no symlink in
/// it; every lookup is an `O_PATH` open confined by [`open_in_root`], so no host path is
/// ever looked at.
pub fn resolve_in_root(root: &Path, path: &str) -> io::Result<String> {
    use crate::common::symlinks::{follow, Node};
    use std::os::fd::AsRawFd;
    follow(
        path,
        |cand, _, _| {
            let fd = match open_in_root(root, cand, libc::O_PATH | libc::O_NOFOLLOW) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Node::Missing),
                Err(e) => return Err(e),
            };
            let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
            Ok(match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => Node::Dir,
                libc::S_IFLNK => {
                    let mut buf = vec![0u8; libc::PATH_MAX as usize];
                    // SAFETY: readlinkat of the O_PATH descriptor itself (empty path) into a
                    // buffer of the given length.
                    let n = unsafe {
                        libc::readlinkat(
                            fd.as_raw_fd(),
                            c"".as_ptr(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                        )
                    };
                    if n < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    buf.truncate(n as usize);
                    Node::Link(String::from_utf8(buf).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("/{cand} is a symlink to a path that is not UTF-8"),
                        )
                    })?)
                }
                _ => Node::Other,
            })
        },
        || io::Error::from_raw_os_error(libc::ELOOP),
        |cand| {
            io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("/{cand} is not a directory"),
            )
        },
    )
}

/// Whether `path` is a directory in the image (symlinks followed inside the root).
pub fn is_dir_in_root(root: &Path, path: &str) -> bool {
    open_in_root(root, path, libc::O_PATH | libc::O_DIRECTORY).is_ok()
}

/// Whether anything (a symlink included) is at `path` in the image.
pub fn exists_in_root(root: &Path, path: &str) -> bool {
    open_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW).is_ok()
}

fn read_in_root(root: &Path, path: &str, limit: u64) -> io::Result<String> {
    let fd = open_in_root(root, path, libc::O_RDONLY)?;
    let mut s = String::new();
    File::from(fd).take(limit).read_to_string(&mut s)?;
    Ok(s)
}

/// A `user[:group]` naming a user or group the image does not have (BuildKit's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// No passwd entry with this name (or one without numeric IDs).
    #[error("unable to find user {0}: no matching entries in passwd file")]
    User(String),
    /// No group entry with this name.
    #[error("unable to find group {0}: no matching entries in group file")]
    Group(String),
}

/// Resolve `user[:group]` (names or numbers) against the image's passwd and group files, as
/// COPY --chown does: a name must exist; a number needs no entry; without a group, a name
/// takes the user's primary group and a number the same number.
pub fn resolve_owner(root: &Path, spec: &str) -> Result<(u32, u32), OwnerError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(root, "/etc/passwd", 16 << 20).unwrap_or_default();
    let find_user = |name: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| (f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
        })
    };
    // A UID without a group is also the GID, whatever passwd says (Docker's reference: "a UID
    // without GID will use the same numeric UID as the GID"; both builders do so). A name
    // without a group takes the user's primary group, as BuildKit does.
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, Some(n)),
        Err(_) => match find_user(user) {
            Some((Some(u), g)) => (u, g),
            _ => return Err(OwnerError::User(user.to_string())),
        },
    };
    let gid = match group {
        None | Some("") => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read_in_root(root, "/etc/group", 16 << 20).unwrap_or_default();
                groups
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g)
                            .then(|| f[2].parse::<u32>().ok())
                            .flatten()
                    })
                    .ok_or_else(|| OwnerError::Group(g.to_string()))?
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("real/dir")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../", root.join("up")).unwrap();
        // A host directory the image must not see through its symlinks.
        fs::create_dir_all(d.path().join("hostonly")).unwrap();
        symlink("/hostonly", root.join("escape")).unwrap();
        assert!(is_dir_in_root(&root, "/abs/dir"));
        assert!(is_dir_in_root(&root, "up/real"));
        assert!(!is_dir_in_root(&root, "escape"));
        assert!(!is_dir_in_root(&root, "missing"));
    }

    // Regression (goldens copy-dest-symlink-written-through, copy-dest-symlink-dangling): a
    // symlink at a COPY destination was replaced; it is written through, inside the root.
    #[test]
    fn destinations_resolve_through_symlinks_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("real/dir")).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();
        symlink("/t", root.join("l")).unwrap();
        symlink("/nonexistent/t", root.join("dangling")).unwrap();
        symlink("real/dir", root.join("rel")).unwrap();
        symlink("../../../../real", root.join("up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        // A host directory the image has a same-named path for: never followed to the host.
        let host = d.path().join("hostdir");
        fs::create_dir_all(&host).unwrap();
        symlink(&host, root.join("escape")).unwrap();
        symlink("/real/dir/../../escape/x", root.join("escape2")).unwrap();
        let r = |p: &str| resolve_in_root(&root, p).unwrap();
        assert_eq!(r("/l"), "t");
        assert_eq!(r("/dangling"), "nonexistent/t");
        assert_eq!(r("rel/f"), "real/dir/f");
        assert_eq!(r("/up/dir"), "real/dir");
        assert_eq!(r("/missing/../tmp/x"), "tmp/x");
        assert_eq!(r("/"), "");
        let inside = host
            .strip_prefix("/")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(r("/escape/f"), format!("{inside}/f"));
        assert_eq!(r("escape2"), format!("{inside}/x"));
        assert!(resolve_in_root(&root, "/loop").is_err());
    }

    #[test]
    fn owners_from_the_image_files() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_owner(d.path(), "app"), Ok((1000, 1001)));
        assert_eq!(resolve_owner(d.path(), "app:staff"), Ok((1000, 50)));
        assert_eq!(resolve_owner(d.path(), "1000:7"), Ok((1000, 7)));
        assert_eq!(resolve_owner(d.path(), "4242"), Ok((4242, 4242)));
        // Regression: a UID without a group took its passwd entry's group (1001).
        assert_eq!(resolve_owner(d.path(), "1000"), Ok((1000, 1000)));
        assert_eq!(
            resolve_owner(d.path(), "nobody"),
            Err(OwnerError::User("nobody".into()))
        );
        assert_eq!(
            resolve_owner(d.path(), "app:nogroup"),
            Err(OwnerError::Group("nogroup".into()))
        );
        assert_eq!(
            resolve_owner(d.path(), "nobody").unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
    }
}
