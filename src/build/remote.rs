//! `ADD` of a remote file: an `http://` or `https://` URL, fetched by kiln on the host
//! (never from inside a step) and streamed to a temporary file of the store while it is
//! hashed. The content digest, not the URL alone, goes into the step's cache key, so a
//! changed file misses and an unchanged one hits, as with BuildKit.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

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

/// Parses `--checksum=sha256:<64 hex>` (the only algorithm BuildKit accepts for URLs).
pub(crate) fn parse_checksum(s: &str) -> Result<String, String> {
    match s.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()) => {
            Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
        }
        _ => Err(format!(
            "invalid --checksum={s}: expected sha256:<64 hexadecimal digits>"
        )),
    }
}

/// Fetches `url` into a new temporary file under `tmp_dir`, hashing it as it streams.
/// Proxies come from the environment as for registries; redirects are followed.
pub(crate) fn fetch(
    url: &str,
    tmp_dir: &Path,
    cancel: Option<&AtomicBool>,
) -> Result<Download, String> {
    let fail = |e: String| format!("ADD {url}: {e}");
    let host = url
        .split_once("://")
        .and_then(|(_, r)| r.split(['/', '?', '#']).next())
        .map(|h| h.rsplit_once('@').map_or(h, |(_, h)| h))
        .unwrap_or("");
    let host_only = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let mut agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .redirects(10)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
    let https = url.to_ascii_lowercase().starts_with("https://");
    if let Some(proxy) = crate::registry::client::proxy_for(host_only, https) {
        let p = ureq::Proxy::new(&proxy).map_err(|e| fail(format!("proxy {proxy}: {e}")))?;
        agent = agent.proxy(p);
    }
    let resp = match agent.build().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(fail(format!("HTTP {code} {}", r.status_text())))
        }
        Err(ureq::Error::Transport(t)) => return Err(fail(t.to_string())),
    };
    let mtime = resp
        .header("Last-Modified")
        .and_then(crate::imageops::time::parse_http_date);
    let (path, file) =
        fsutil::create_temp_file(tmp_dir, "add-url").map_err(|e| fail(e.to_string()))?;
    let guard = TempPath::new(path);
    let mut out = std::io::BufWriter::new(file);
    let mut body = resp.into_reader();
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(fail("interrupted".into()));
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("reading the response: {e}"))),
        };
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| fail(format!("writing {}: {e}", guard.path().display())))?;
        size += n as u64;
    }
    out.flush()
        .map_err(|e| fail(format!("writing {}: {e}", guard.path().display())))?;
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Download {
        file: guard,
        digest: format!("sha256:{hex}"),
        size,
        mtime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
