//! The build's small input files, the Dockerfile and `.dockerignore`: read only when they
//! are regular files, with a size limit, and never blocking on a FIFO.
//!
//! Limits: a Dockerfile may hold up to [`DOCKERFILE_LIMIT`] bytes (10 MiB; BuildKit's
//! frontend gets the Dockerfile in one gRPC message, 16 MiB at most) and an ignore file up to
//! [`IGNORE_LIMIT`] (1 MiB: every pattern is matched against every context path, so a larger
//! one would make the scan crawl long before it mattered). A symlink named `/dev/zero` or a
//! FIFO is an error at once, as Docker's "token too long" is.

use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::{ContextError, IgnoreRules};

/// The largest Dockerfile kiln reads, in bytes.
pub const DOCKERFILE_LIMIT: u64 = 10 << 20;

/// The largest `.dockerignore` kiln reads, in bytes.
pub const IGNORE_LIMIT: u64 = 1 << 20;

fn refused(path: &Path, reason: impl Into<String>) -> ContextError {
    ContextError::Refused {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(path: &Path, e: impl Into<std::io::Error>) -> ContextError {
    refused(path, e.into().to_string())
}

fn size_text(limit: u64) -> String {
    if limit >= 1 << 20 {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{limit} bytes")
    }
}

/// Read at most `limit` bytes of `r`; more is an error naming `what` and `path`.
fn read_bounded(
    r: impl Read,
    limit: u64,
    path: &Path,
    what: &str,
) -> Result<Vec<u8>, ContextError> {
    let mut buf = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io(path, e))?;
    if buf.len() as u64 > limit {
        return Err(refused(
            path,
            format!("{what} is larger than kiln's limit of {}", size_text(limit)),
        ));
    }
    Ok(buf)
}

/// Check an open file is a regular file (`what` names it in the error).
fn regular(fd: &OwnedFd, path: &Path, what: &str) -> Result<(), ContextError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| io(path, e))?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => return Ok(()),
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        libc::S_IFSOCK => "a socket",
        _ => "not a regular file",
    };
    Err(refused(
        path,
        format!("{what} must be a regular file, found {kind}"),
    ))
}

/// Read the Dockerfile at `path` (`-`: standard input), bounded. The user named it, so a
/// symlink is followed; what it leads to must be a regular file.
pub fn read_dockerfile(path: &Path) -> Result<Vec<u8>, ContextError> {
    if path == Path::new("-") {
        return read_bounded(
            std::io::stdin().lock(),
            DOCKERFILE_LIMIT,
            Path::new("<stdin>"),
            "the Dockerfile",
        );
    }
    // O_NONBLOCK: opening a FIFO with no writer must not hang before the type check.
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(path, e))?;
    regular(&fd, path, "the Dockerfile")?;
    read_bounded(
        std::fs::File::from(fd),
        DOCKERFILE_LIMIT,
        path,
        "the Dockerfile",
    )
}

/// The `.dockerignore` rules of a build: `<Dockerfile>.dockerignore` next to the Dockerfile
/// wins over `<context>/.dockerignore`, as in Docker. A missing file is no rules; an ignore
/// file that exists but cannot be used (unreadable, a directory, a FIFO, too large, a
/// symlink leading out of its directory) is an error naming it, never skipped.
pub fn load_ignore(context: &Path, dockerfile: Option<&Path>) -> Result<IgnoreRules, ContextError> {
    let mut candidates: Vec<(PathBuf, std::ffi::OsString)> = Vec::new();
    if let Some(df) = dockerfile {
        if let Some(base) = df.file_name() {
            let mut name = base.to_owned();
            name.push(".dockerignore");
            let dir = match df.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            candidates.push((dir, name));
        }
    }
    candidates.push((context.to_path_buf(), ".dockerignore".into()));
    for (dir, name) in candidates {
        if let Some(bytes) = read_ignore_file(&dir, &name)? {
            let shown = dir.join(&name);
            return Ok(IgnoreRules::parse_bytes(
                &shown.display().to_string(),
                &bytes,
            )?);
        }
    }
    Ok(IgnoreRules::default())
}

/// The bytes of the ignore file `name` in `dir`, `None` when there is none. A symlink is
/// followed only while it stays inside `dir`.
pub fn read_ignore_file(dir: &Path, name: &OsStr) -> Result<Option<Vec<u8>>, ContextError> {
    let path = dir.join(name);
    let dirfd = match nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // No context directory: the scan says so, with its own message.
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(io(dir, e)),
    };
    let cname = CString::new(name.as_bytes()).map_err(|_| refused(&path, "bad file name"))?;
    match nix::sys::stat::fstatat(
        &dirfd,
        cname.as_c_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(_) => {}
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(io(&path, e)),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let opened = match nix::fcntl::openat2(&dirfd, cname.as_c_str(), how) {
        // No openat2 (kernel before 5.6, seccomp): a symlink cannot be checked, so refused.
        Err(Errno::ENOSYS) => nix::fcntl::openat(
            &dirfd,
            cname.as_c_str(),
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ),
        r => r,
    };
    let fd = match opened {
        Ok(fd) => fd,
        Err(Errno::EXDEV) => {
            return Err(refused(
                &path,
                "a symlink leading out of its directory; kiln follows an ignore file's symlink only inside it",
            ))
        }
        Err(Errno::ELOOP) => return Err(refused(&path, "a symlink kiln cannot follow")),
        Err(Errno::ENOENT) => return Err(refused(&path, "a symlink to a missing file")),
        Err(e) => return Err(io(&path, e)),
    };
    regular(&fd, &path, "an ignore file")?;
    read_bounded(
        std::fs::File::from(fd),
        IGNORE_LIMIT,
        &path,
        "the ignore file",
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn ignore_err(dir: &Path) -> String {
        load_ignore(dir, None).unwrap_err().to_string()
    }

    // Regression: a .dockerignore with one byte that is not UTF-8 was skipped as a whole,
    // so the secret.key it excludes went into the image.
    #[test]
    fn non_utf8_ignore_file_is_honoured_byte_for_byte() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(".dockerignore"), b"secret.key\nbad\xff.txt\n").unwrap();
        let rules = load_ignore(d.path(), None).unwrap();
        assert!(rules.is_excluded("secret.key"));
        assert!(rules.is_excluded(&crate::context::name::encode(b"bad\xff.txt")));
        assert!(!rules.is_excluded("bad.txt"));
    }

    // Regression: an unreadable, directory, FIFO or escaping-symlink .dockerignore was
    // silently skipped (read_to_string failed, the next candidate or no rules were used).
    #[test]
    fn unusable_ignore_files_are_errors_naming_them() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join(".dockerignore")).unwrap();
        let e = ignore_err(d.path());
        assert!(
            e.contains(".dockerignore") && e.contains("directory"),
            "{e}"
        );

        let d = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &d.path().join(".dockerignore"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = ignore_err(d.path());
        assert!(e.contains("FIFO"), "{e}");

        let d = tempfile::tempdir().unwrap();
        symlink("/dev/zero", d.path().join(".dockerignore")).unwrap();
        let e = ignore_err(d.path());
        assert!(e.contains(".dockerignore") && e.contains("out of"), "{e}");

        let d = tempfile::tempdir().unwrap();
        symlink("missing", d.path().join(".dockerignore")).unwrap();
        let e = ignore_err(d.path());
        assert!(e.contains("missing file"), "{e}");

        // Inside the context, a symlink is followed.
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("conf")).unwrap();
        fs::write(d.path().join("conf/ignore"), "secret.key\n").unwrap();
        symlink("conf/ignore", d.path().join(".dockerignore")).unwrap();
        assert!(load_ignore(d.path(), None)
            .unwrap()
            .is_excluded("secret.key"));

        // Unreadable (only meaningful without CAP_DAC_OVERRIDE).
        if !nix::unistd::geteuid().is_root() {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join(".dockerignore");
            fs::write(&p, "x").unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
            assert!(ignore_err(d.path()).contains(".dockerignore"));
        }
    }

    // Regression: a Dockerfile or ignore file symlinked to /dev/zero was read without
    // bound (10 GB of memory in 30 s); a FIFO blocked the build forever.
    #[test]
    fn dockerfile_and_ignore_reads_are_bounded_and_never_block() {
        let d = tempfile::tempdir().unwrap();
        let df = d.path().join("Dockerfile");
        symlink("/dev/zero", &df).unwrap();
        let e = read_dockerfile(&df).unwrap_err().to_string();
        assert!(e.contains("device") && e.contains("Dockerfile"), "{e}");

        let fifo = d.path().join("Dockerfile.fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        let e = read_dockerfile(&fifo).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");

        let big = d.path().join("Dockerfile.big");
        let f = fs::File::create(&big).unwrap();
        f.set_len(DOCKERFILE_LIMIT + 1).unwrap();
        let e = read_dockerfile(&big).unwrap_err().to_string();
        assert!(e.contains("limit of 10 MiB"), "{e}");

        let f = fs::File::create(d.path().join(".dockerignore")).unwrap();
        f.set_len(IGNORE_LIMIT + 1).unwrap();
        let e = ignore_err(d.path());
        assert!(e.contains("limit of 1 MiB"), "{e}");

        fs::write(df.with_file_name("ok"), "FROM scratch\n").unwrap();
        assert_eq!(
            read_dockerfile(&d.path().join("ok")).unwrap(),
            b"FROM scratch\n"
        );
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(".dockerignore"), "a\n").unwrap();
        fs::write(d.path().join("build.Dockerfile.dockerignore"), "b\n").unwrap();
        let df = d.path().join("build.Dockerfile");
        let rules = load_ignore(d.path(), Some(&df)).unwrap();
        assert!(rules.is_excluded("b") && !rules.is_excluded("a"));
    }
}
