//! `ADD` of a remote file: an `http://` or `https://` URL, fetched by kiln on the host
//! (never from inside a step) and streamed to a temporary file of the store while it is
//! hashed. The content digest, not the URL alone, goes into the step's cache key, so a
//! changed file misses and an unchanged one hits, as with BuildKit.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::image::Sha256Writer;

use crate::store::fsutil::{self, TempPath};

/// What kind of remote source an `ADD` source is, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteKind {
    /// A file over HTTP(S).
    Http,
    /// A git repository (`git@`, `git://`, `ssh://`, or an HTTP(S) URL ending in `.git`).
    Git,
}

/// Classifies an `ADD` source as BuildKit does: git transports and `.git` URLs are
/// repositories, other `http(s)://` URLs are files, anything else is a local path.
pub(crate) fn remote_kind(src: &str) -> Option<RemoteKind> {
    let lower = src.to_ascii_lowercase();
    if ["git@", "git://", "ssh://"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Some(RemoteKind::Git);
    }
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    let path = lower.split('#').next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    if path.trim_end_matches('/').ends_with(".git") {
        Some(RemoteKind::Git)
    } else {
        Some(RemoteKind::Http)
    }
}

/// A downloaded file, removed when dropped.
#[derive(Debug)]
pub(crate) struct Download {
    /// The temporary file holding the content.
    pub file: TempPath,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// The content's size in bytes.
    pub size: u64,
    /// The `Last-Modified` time the server gave, in seconds.
    pub mtime: Option<i64>,
}

/// The file name a download gets when the destination is a directory: the last segment of
/// the URL's path, percent-decoded (as Docker does). `None` when the path has no usable
/// last segment (`http://host/`, `.../..`).
pub(crate) fn url_file_name(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://")?.1;
    let no_fragment = after_scheme.split('#').next()?;
    let no_query = no_fragment.split('?').next()?;
    let path = no_query.split_once('/')?.1;
    let last = path.rsplit('/').next()?;
    let name = percent_decode(last)?;
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return None;
    }
    Some(name)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why a remote source (a URL, a git repository) cannot be used. Each message names the
/// source, as `ADD <url>: …`.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A `--checksum` that is not `sha256:<64 hex>`.
    #[error(transparent)]
    BadChecksum(#[from] crate::planner::ops::ChecksumError),
    /// A URL cannot be fetched.
    #[error("ADD {url}: {source}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: FetchError,
    },
    /// A git URL kiln refuses (an option, a helper transport, control characters).
    #[error("{0}: not a git repository URL kiln accepts")]
    GitUrl(String),
    /// A git reference kiln refuses.
    #[error("{src}: invalid git reference {reference:?}")]
    GitReference {
        /// The source as written.
        src: String,
        /// The reference.
        reference: String,
    },
    /// A subdirectory that leaves the repository.
    #[error("{src}: the subdirectory {subdir:?} leaves the repository")]
    GitSubdir {
        /// The source as written.
        src: String,
        /// The subdirectory.
        subdir: String,
    },
    /// A repository cannot be resolved or checked out.
    #[error("ADD {url}: {source}")]
    Git {
        /// The repository URL.
        url: String,
        /// Why.
        #[source]
        source: GitError,
    },
}

/// Why a URL cannot be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The proxy from the environment is invalid.
    #[error("proxy {proxy}: {source}")]
    Proxy {
        /// The proxy.
        proxy: String,
        /// Why.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server answered with an error status.
    #[error("HTTP {code} {text}")]
    Status {
        /// The status code.
        code: u16,
        /// Its text.
        text: String,
    },
    /// The connection failed.
    #[error(transparent)]
    Transport(Box<ureq::Transport>),
    /// The download's temporary file cannot be made.
    #[error(transparent)]
    TempFile(#[from] crate::store::StoreError),
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// The response broke off.
    #[error("reading the response: {0}")]
    Read(#[source] std::io::Error),
    /// The download cannot be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why git cannot resolve or check out a repository.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// No git on the host.
    #[error("git is not installed (kiln runs the host's git to fetch repositories)")]
    NotInstalled,
    /// git cannot be started.
    #[error("running git: {0}")]
    Spawn(#[source] std::io::Error),
    /// git failed: what it said.
    #[error("{0}")]
    Failed(String),
    /// The reference names nothing.
    #[error("no branch or tag {0:?} in the repository")]
    NoReference(String),
    /// The reference moved between its resolution and the fetch.
    #[error("{reference} moved while it was fetched ({resolved} resolved, {fetched} fetched)")]
    Moved {
        /// The reference.
        reference: String,
        /// The commit it resolved to.
        resolved: String,
        /// The commit fetched.
        fetched: String,
    },
    /// The checkout's directory cannot be made.
    #[error(transparent)]
    TempDir(#[from] crate::store::StoreError),
    /// The checkout cannot be finished (`.git` removed, times set).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Fetches `url` into a new temporary file under `tmp_dir`, hashing it as it streams.
/// Proxies come from the environment as for registries; redirects are followed.
pub(crate) fn fetch(
    url: &str,
    tmp_dir: &Path,
    cancel: Option<&AtomicBool>,
) -> Result<Download, RemoteError> {
    fetch_into(url, tmp_dir, cancel).map_err(|source| RemoteError::Fetch {
        url: url.to_string(),
        source,
    })
}

fn fetch_into(
    url: &str,
    tmp_dir: &Path,
    cancel: Option<&AtomicBool>,
) -> Result<Download, FetchError> {
    let host = url
        .split_once("://")
        .and_then(|(_, r)| r.split(['/', '?', '#']).next())
        .map(|h| h.rsplit_once('@').map_or(h, |(_, h)| h))
        .unwrap_or("");
    let mut agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .redirects(10)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
    let https = url.to_ascii_lowercase().starts_with("https://");
    if let Some(proxy) = crate::registry::client::proxy_for(host, https) {
        let p = ureq::Proxy::new(&proxy).map_err(|e| FetchError::Proxy {
            proxy: proxy.clone(),
            source: Box::new(e),
        })?;
        agent = agent.proxy(p);
    }
    let resp = match agent.build().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(FetchError::Status {
                code,
                text: r.status_text().to_string(),
            })
        }
        Err(ureq::Error::Transport(t)) => return Err(FetchError::Transport(Box::new(t))),
    };
    let mtime = resp
        .header("Last-Modified")
        .and_then(crate::common::time::parse_http_date);
    let (path, file) = fsutil::create_temp_file(tmp_dir, "add-url")?;
    let guard = TempPath::new(path);
    let mut out = Sha256Writer::new(std::io::BufWriter::new(file));
    let mut body = resp.into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(FetchError::Interrupted);
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FetchError::Read(e)),
        };
        let written = |source| FetchError::Write {
            path: guard.path().to_path_buf(),
            source,
        };
        out.write_all(&buf[..n]).map_err(written)?;
    }
    out.flush().map_err(|source| FetchError::Write {
        path: guard.path().to_path_buf(),
        source,
    })?;
    let (_, digest, size) = out.finish();
    Ok(Download {
        file: guard,
        digest: digest.to_string(),
        size,
        mtime,
    })
}

/// A git source of `ADD`: `URL[#REF[:SUBDIR]]`, as BuildKit writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GitSource {
    /// The repository URL, without the fragment.
    pub url: String,
    /// The branch, tag or commit (`HEAD` when not given).
    pub reference: String,
    /// The directory of the repository to add (`""`: all of it).
    pub subdir: String,
}

impl GitSource {
    /// Splits the fragment off; refuses what git could take for an option or a helper
    /// transport, and a subdirectory that leaves the checkout.
    pub(crate) fn parse(src: &str) -> Result<GitSource, RemoteError> {
        let (url, fragment) = src.split_once('#').unwrap_or((src, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        // `<transport>::<address>` asks git for a helper program (`ext::sh -c ...`).
        let helper = url
            .find("::")
            .is_some_and(|i| !url[..i].contains(['/', '@', '[']));
        if url.starts_with('-') || helper || url.chars().any(char::is_control) {
            return Err(RemoteError::GitUrl(src.to_string()));
        }
        if reference.starts_with('-')
            || reference.contains("..")
            || reference.contains(char::is_whitespace)
        {
            return Err(RemoteError::GitReference {
                src: src.to_string(),
                reference: reference.to_string(),
            });
        }
        let subdir = subdir.trim_matches('/');
        if subdir.split('/').any(|c| c == "..") {
            return Err(RemoteError::GitSubdir {
                src: src.to_string(),
                subdir: subdir.to_string(),
            });
        }
        Ok(GitSource {
            url: url.to_string(),
            reference: if reference.is_empty() {
                "HEAD".into()
            } else {
                reference.into()
            },
            subdir: subdir.to_string(),
        })
    }
}

/// `git` with a safe environment: no prompts, no system or global configuration, and only
/// the network transports (no `ext::`, no `file://` from a server's redirect).
fn git() -> std::process::Command {
    let mut c = std::process::Command::new("git");
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .env("GIT_ALLOW_PROTOCOL", "http:https:git:ssh")
        .stdin(std::process::Stdio::null());
    c
}

fn run_git(cmd: &mut std::process::Command) -> Result<String, GitError> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            GitError::NotInstalled
        } else {
            GitError::Spawn(e)
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        return Err(GitError::Failed(
            if err.is_empty() { "git failed" } else { err }.to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commit `src.reference` names in the remote repository (`git ls-remote`): what the
/// step's cache key holds, so an unchanged branch or tag needs no clone at all.
pub(crate) fn git_resolve(src: &GitSource) -> Result<String, RemoteError> {
    git_ls_remote(src).map_err(|source| RemoteError::Git {
        url: src.url.clone(),
        source,
    })
}

fn git_ls_remote(src: &GitSource) -> Result<String, GitError> {
    let r = &src.reference;
    if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(r.to_ascii_lowercase());
    }
    let out = run_git(git().args(["ls-remote", "--", &src.url, r]))?;
    // An annotated tag lists the tag object, then `^{}`, the commit it points to.
    let mut found = None;
    for line in out.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        let exact =
            name == r || name == format!("refs/heads/{r}") || name == format!("refs/tags/{r}");
        let peeled = name == format!("refs/tags/{r}^{{}}");
        if peeled || (exact && found.is_none()) {
            found = Some(sha.to_string());
        }
    }
    found.ok_or_else(|| GitError::NoReference(r.clone()))
}

/// Fetches `commit` (only it, no history) into a new directory under `tmp_dir` and checks
/// it out; `.git` removed unless `keep_git_dir`. Every file's mtime is the commit's time,
/// so the layer depends on the commit alone.
pub(crate) fn git_checkout(
    src: &GitSource,
    commit: &str,
    keep_git_dir: bool,
    tmp_dir: &Path,
) -> Result<TempPath, RemoteError> {
    git_fetch_commit(src, commit, keep_git_dir, tmp_dir).map_err(|source| RemoteError::Git {
        url: src.url.clone(),
        source,
    })
}

fn git_fetch_commit(
    src: &GitSource,
    commit: &str,
    keep_git_dir: bool,
    tmp_dir: &Path,
) -> Result<TempPath, GitError> {
    let dir = TempPath::new(fsutil::create_temp_dir(tmp_dir, "add-git", 0o700)?);
    let d = dir.path().to_path_buf();
    run_git(git().arg("init").arg("-q").arg(&d))?;
    let fetch = |refspec: &str| {
        run_git(git().arg("-C").arg(&d).args([
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "--",
            &src.url,
            refspec,
        ]))
    };
    // Servers that do not serve a bare commit id are asked for the name that resolved to it.
    if fetch(commit).is_err() {
        fetch(&src.reference)?;
    }
    let head = run_git(git().arg("-C").arg(&d).args(["rev-parse", "FETCH_HEAD"]))?;
    if head.trim() != commit {
        return Err(GitError::Moved {
            reference: src.reference.clone(),
            resolved: commit.to_string(),
            fetched: head.trim().to_string(),
        });
    }
    run_git(git().arg("-C").arg(&d).args([
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "-q",
        commit,
    ]))?;
    let time = run_git(
        git()
            .arg("-C")
            .arg(&d)
            .args(["log", "-1", "--format=%ct", commit]),
    )?;
    let time: i64 = time.trim().parse().unwrap_or(0);
    if !keep_git_dir {
        std::fs::remove_dir_all(d.join(".git"))?;
    }
    set_mtimes(&d, time)?;
    Ok(dir)
}

/// Sets the mtime of everything below `dir` (symlinks themselves, never their targets).
fn set_mtimes(dir: &Path, secs: i64) -> std::io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let ts = TimeSpec::new(secs, 0);
    let set = |p: &Path| {
        utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &ts,
            &ts,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)
    };
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            set_mtimes(&p, secs)?;
        }
        set(&p)?;
    }
    set(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::ops::parse_checksum;

    #[test]
    fn classifies_sources_as_buildkit_does() {
        assert_eq!(
            remote_kind("https://example.com/a.tar.gz"),
            Some(RemoteKind::Http)
        );
        assert_eq!(remote_kind("HTTP://example.com/x"), Some(RemoteKind::Http));
        assert_eq!(
            remote_kind("https://github.com/moby/buildkit.git#v0.10.1"),
            Some(RemoteKind::Git)
        );
        assert_eq!(
            remote_kind("git@github.com:user/repo.git"),
            Some(RemoteKind::Git)
        );
        assert_eq!(remote_kind("git://127.0.0.1/repo"), Some(RemoteKind::Git));
        assert_eq!(remote_kind("src/"), None);
        assert_eq!(remote_kind("http.txt"), None);
    }

    #[test]
    fn file_names_come_from_the_last_path_segment() {
        assert_eq!(
            url_file_name("https://h/dir/file.txt").as_deref(),
            Some("file.txt")
        );
        assert_eq!(
            url_file_name("https://h/dir/a%20b.txt?x=1#f").as_deref(),
            Some("a b.txt")
        );
        assert_eq!(url_file_name("http://h:8080/f").as_deref(), Some("f"));
        assert_eq!(url_file_name("https://h/"), None);
        assert_eq!(url_file_name("https://h"), None);
        assert_eq!(url_file_name("https://h/a/.."), None);
        assert_eq!(url_file_name("https://h/a/%2e%2e"), None);
        assert_eq!(url_file_name("https://h/a/x%2Fy"), None);
        assert_eq!(url_file_name("https://h/a/%zz"), None);
    }

    #[test]
    fn git_sources_split_ref_and_subdir_and_refuse_options() {
        let g = GitSource::parse("https://h/r.git#v1.2:docs/api").unwrap();
        assert_eq!(
            (g.url.as_str(), g.reference.as_str(), g.subdir.as_str()),
            ("https://h/r.git", "v1.2", "docs/api")
        );
        let g = GitSource::parse("git@h:team/r.git").unwrap();
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("HEAD", ""));
        assert!(GitSource::parse("-uhttps://h/r.git").is_err());
        assert!(GitSource::parse("ext::sh -c touch% /tmp/pwned").is_err());
        assert!(GitSource::parse("https://h/r.git#--upload-pack=x").is_err());
        assert!(matches!(
            GitSource::parse("https://h/r.git#main:../.."),
            Err(RemoteError::GitSubdir { .. })
        ));
        assert!(matches!(
            GitSource::parse("https://h/r.git#a..b"),
            Err(RemoteError::GitReference { .. })
        ));
    }

    #[test]
    fn checksums_are_sha256() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_checksum(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum(&format!("md5:{hex}")).is_err());
        assert!(parse_checksum(&format!("sha256:{}", "g".repeat(64))).is_err());
    }
}
