//! Resolves a `USER` spec (`name[:group]`, `uid[:gid]`) to ids, supplementary groups and
//! `HOME` through the image's own `/etc/passwd` and `/etc/group`, with runc's
//! `GetExecUser` semantics (what Docker uses).
//!
//! The files are read inside the container root with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`, so a symlinked `/etc/passwd` resolves inside the image, never to
//! the host's; they are opened `O_NONBLOCK` and must be regular files, so a FIFO cannot hang
//! the build.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};

use nix::errno::Errno;

use super::error::ExecError;
use super::kernel::openat2;

/// The identity a step runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
    /// Home directory (`/` when the user has no passwd entry).
    pub home: String,
}

/// Ids above this are refused, as runc does.
const MAX_ID: u64 = i32::MAX as u64;
/// Largest passwd/group file read.
const MAX_FILE: u64 = 16 << 20;

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Go's `strconv.Atoi` accepts a sign; a negative id is out of range either way.
fn parse_id(s: &str) -> Option<Result<u32, ()>> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if let Some(neg) = digits.strip_prefix('-') {
        return if !neg.is_empty() && neg.bytes().all(|b| b.is_ascii_digit()) {
            Some(Err(()))
        } else {
            None
        };
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(match digits.parse::<u64>() {
        Ok(n) if n <= MAX_ID => Ok(n as u32),
        _ => Err(()),
    })
}

fn field_id(s: &str) -> u32 {
    s.trim().parse::<u32>().unwrap_or(0)
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first().copied().unwrap_or(""),
            uid: f.get(2).map_or(0, |s| field_id(s)),
            gid: f.get(3).map_or(0, |s| field_id(s)),
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(GroupEntry {
            name: f.first().copied().unwrap_or(""),
            gid: f.get(2).map_or(0, |s| field_id(s)),
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves `spec` against the text of the image's passwd and group files (`None`: the file
/// does not exist).
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, ExecError> {
    let bad = |reason| ExecError::BadUser {
        spec: spec.to_string(),
        reason,
    };
    let mut parts = spec.split(':');
    let user_arg = parts.next().unwrap_or("").trim();
    let group_arg = parts.next().unwrap_or("").trim();

    let mut out = ExecUser {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        home: "/".into(),
    };
    let uid_arg = parse_id(user_arg);
    let gid_arg = parse_id(group_arg);

    let matched = passwd.and_then(|text| {
        passwd_entries(text).find(|u| {
            if user_arg.is_empty() {
                u.uid == 0
            } else if let Some(id) = uid_arg {
                id == Ok(u.uid)
            } else {
                u.name == user_arg
            }
        })
    });
    let mut matched_name: Option<String> = None;
    if let Some(u) = matched {
        matched_name = Some(u.name.to_string());
        out.uid = u.uid;
        out.gid = u.gid;
        out.home = u.home.to_string();
    } else if !user_arg.is_empty() {
        match uid_arg {
            None => return Err(ExecError::UnknownUser(user_arg.to_string())),
            Some(Err(())) => return Err(bad("user id out of range")),
            Some(Ok(uid)) => out.uid = uid,
        }
    }

    if !group_arg.is_empty() {
        let found = group.and_then(|text| {
            group_entries(text).find(|g| match gid_arg {
                Some(id) => id == Ok(g.gid),
                None => g.name == group_arg,
            })
        });
        match (found, gid_arg) {
            (Some(g), _) => out.gid = g.gid,
            (None, Some(Ok(gid))) => out.gid = gid,
            (None, Some(Err(()))) => return Err(bad("group id out of range")),
            (None, None) => return Err(ExecError::UnknownGroup(group_arg.to_string())),
        }
    } else if let (Some(name), Some(text)) = (&matched_name, group) {
        // Supplementary groups only in the implicit form, as runc.
        out.groups = group_entries(text)
            .filter(|g| g.members.iter().any(|m| m == name))
            .map(|g| g.gid)
            .collect();
    }
    // The primary group is a supplementary group too, as containerd and Docker do since
    // CVE-2023-25173 (otherwise a file's group permission can be bypassed by dropping it).
    if !out.groups.contains(&out.gid) {
        out.groups.insert(0, out.gid);
    }
    Ok(out)
}

/// Reads a file of the image, resolved inside `root` (`None` if it does not exist).
pub fn read_in_root(root: BorrowedFd<'_>, path: &str) -> Result<Option<String>, ExecError> {
    use std::os::fd::AsRawFd;
    let err = |source: std::io::Error| ExecError::ImageFile {
        path: format!("/{path}"),
        source,
    };
    let cpath = CString::new(path).map_err(|_| err(Errno::EINVAL.into()))?;
    let fd: RawFd = match openat2(
        root.as_raw_fd(),
        &cpath,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    // SAFETY: openat2 returned a fresh fd that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    let mut buf = Vec::new();
    (&mut file)
        .take(MAX_FILE)
        .read_to_end(&mut buf)
        .map_err(err)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        \n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root\n\
        app:x:1000:\n\
        extra:x:2000:app,other\n\
        more:x:2001:other,app\n\
        nogroup:x:65534:\n";

    fn r(spec: &str) -> Result<ExecUser, ExecError> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn user_specs_resolve_like_runc() {
        let cases: &[(&str, u32, u32, &[u32], &str)] = &[
            ("", 0, 0, &[0, 10], "/root"),
            ("root", 0, 0, &[0, 10], "/root"),
            ("app", 1000, 1000, &[1000, 2000, 2001], "/home/app"),
            ("1000", 1000, 1000, &[1000, 2000, 2001], "/home/app"),
            ("app:extra", 1000, 2000, &[2000], "/home/app"),
            ("app:2001", 1000, 2001, &[2001], "/home/app"),
            ("app:4242", 1000, 4242, &[4242], "/home/app"),
            // Numeric ids without entries are allowed; gid 0 and HOME=/ by default.
            ("1234", 1234, 0, &[0], "/"),
            ("1234:5678", 1234, 5678, &[5678], "/"),
            ("nobody", 65534, 65534, &[65534], "/nonexistent"),
        ];
        for (spec, uid, gid, groups, home) in cases {
            let u = r(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(
                (u.uid, u.gid, u.groups.as_slice(), u.home.as_str()),
                (*uid, *gid, *groups, *home),
                "{spec}"
            );
        }
    }

    #[test]
    fn unknown_names_fail_with_dockers_message() {
        let e = r("x").expect_err("unknown user");
        assert_eq!(
            e.to_string(),
            "unable to find user x: no matching entries in passwd file"
        );
        let e = r("app:nope").expect_err("unknown group");
        assert_eq!(
            e.to_string(),
            "unable to find group nope: no matching entries in group file"
        );
        // No passwd file at all: a name still cannot be resolved.
        let e = resolve("app", None, None).expect_err("no passwd");
        assert!(matches!(e, ExecError::UnknownUser(_)));
    }

    #[test]
    fn out_of_range_ids_are_refused() {
        assert!(matches!(r("4294967296"), Err(ExecError::BadUser { .. })));
        assert!(matches!(r("-1"), Err(ExecError::BadUser { .. })));
        assert!(matches!(r("app:-5"), Err(ExecError::BadUser { .. })));
    }

    #[test]
    fn missing_files_give_root_defaults() {
        let u = resolve("", None, None).expect("root");
        assert_eq!(
            u,
            ExecUser {
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/".into()
            }
        );
    }
}
