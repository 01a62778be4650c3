//! Docker image references: parsing and normalising names such as `busybox`,
//! `localhost:5000/app:1` or `name@sha256:…` exactly as Docker does.
//!
//! This follows `github.com/distribution/reference` (the package the Docker
//! CLI and daemon use): the grammar of `regexp.go`, `Parse`,
//! `ParseNormalizedNamed`, `ParseDockerRef`, `TagNameOnly` and the familiar
//! (short) form. The regular expressions are written out as small matching
//! functions; the tests pin the behaviour on Docker's own cases.
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] remote-name
//! domain           := host [':' port-number]
//! host             := domain-name | '[' ipv6 ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! remote-name      := path-component ['/' path-component]*
//! path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
//! separator        := /[._]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! ```

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Registry domain of Docker Hub, added to names without a domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// Old name of Docker Hub's domain, normalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";

/// Namespace of official images on Docker Hub (`busybox` → `library/busybox`).
const OFFICIAL_REPO_PREFIX: &str = "library/";

/// Tag used when a reference names no tag and no digest.
pub const DEFAULT_TAG: &str = "latest";

/// The one domain without `.` or `:` that is still a domain.
const LOCALHOST: &str = "localhost";

/// Longest repository path (`library/busybox`) Docker accepts.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Longest tag Docker accepts.
const TAG_MAX: usize = 128;

/// A parsed, normalised image reference: domain, repository path, and an
/// optional tag and digest.
///
/// `Display` gives the full form (`docker.io/library/busybox:latest`);
/// [`Reference::familiar_string`] gives the form users type (`busybox:latest`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host and port; empty only for the rare names Docker itself
    /// leaves without a domain (see `parses_docker_edge_cases`).
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not a valid image reference. Messages are Docker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The input does not match the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat {
        /// The rejected input.
        input: String,
    },
    /// The repository part has uppercase letters (`Busybox`).
    #[error("invalid reference format: repository name ({name}) must be lowercase")]
    NotLowercase {
        /// The repository part as Docker shows it (`library/Busybox`).
        name: String,
    },
    /// The input would parse if it were lowercase, in a place the
    /// normalisation step does not check (for example a domain-less name).
    #[error("repository name must be lowercase")]
    ContainsUppercase {
        /// The rejected input.
        input: String,
    },
    /// The input is empty.
    #[error("repository name must have at least one component")]
    Empty,
    /// The repository path is longer than 255 characters.
    #[error("repository name must not be more than 255 characters")]
    NameTooLong {
        /// The rejected input.
        input: String,
    },
    /// The input is 64 hex digits, which is an image ID, not a name.
    #[error("invalid repository name ({input}), cannot specify 64-byte hexadecimal strings")]
    IdentifierAsName {
        /// The rejected input.
        input: String,
    },
    /// A tag given on its own (not inside a reference) is invalid.
    #[error("invalid tag format")]
    InvalidTag {
        /// The rejected tag.
        tag: String,
    },
    /// The digest part is well-formed but not a digest kiln accepts.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

// ---------------------------------------------------------------------------
// The grammar, one small matcher per production of distribution's regexp.go.

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `path-component := [a-z0-9]+ (separator [a-z0-9]+)*`, `separator := [._]|__|[-]+`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && is_alnum_lower(b[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < b.len() {
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !run(&mut i) {
            return false;
        }
    }
    true
}

/// `remote-name := path-component ('/' path-component)*`.
fn is_remote_name(s: &str) -> bool {
    s.split('/').all(is_path_component)
}

/// `domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

/// `domain := (domain-name | '[' [a-fA-F0-9:]+ ']') (':' [0-9]+)?`.
fn is_domain(s: &str) -> bool {
    let (host_ok, rest) = if let Some(inner) = s.strip_prefix('[') {
        match inner.split_once(']') {
            Some((addr, rest)) => (
                !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                rest,
            ),
            None => return false,
        }
    } else {
        let (host, rest) = match s.find(':') {
            Some(i) => s.split_at(i),
            None => (s, ""),
        };
        (host.split('.').all(is_domain_component), rest)
    };
    if !host_ok {
        return false;
    }
    match rest.strip_prefix(':') {
        None => rest.is_empty(),
        Some(port) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `tag := [\w][\w.-]{0,127}` (Go's `\w` is ASCII `[0-9A-Za-z_]`).
fn is_tag(s: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = s.as_bytes();
    match b.first() {
        Some(&first) => {
            b.len() <= TAG_MAX
                && word(first)
                && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
        }
        None => false,
    }
}

/// `digest := [A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)* ':' [0-9a-fA-F]{32,}`.
fn is_digest_pattern(s: &str) -> bool {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return false;
    };
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(|x| x.is_ascii_alphanumeric())
    };
    algorithm.split(['-', '_', '+', '.']).all(component_ok)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `identifier := [a-f0-9]{64}`: an image ID, never a repository name.
pub fn is_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pieces of a reference matched by the grammar, before the digest is
/// validated.
struct Matched<'a> {
    domain: &'a str,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Matches the anchored reference grammar, choosing the same split into
/// domain, path, tag and digest as Go's leftmost-first regexp does.
fn match_reference(s: &str) -> Option<Matched<'_>> {
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        if !is_digest_pattern(d) {
            return None;
        }
    }
    // Neither a path component nor a tag may contain ':' and a domain always
    // ends at the first '/', so the tag separator is a ':' after the last '/'.
    let last_segment = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_segment..].find(':') {
        Some(i) => {
            let at = last_segment + i;
            (&name_tag[..at], Some(&name_tag[at + 1..]))
        }
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return None;
        }
    }
    // The optional domain group is greedy: it wins whenever the first
    // segment is a valid domain and the rest a valid path.
    if let Some((domain, path)) = name.split_once('/') {
        if is_domain(domain) && is_remote_name(path) {
            return Some(Matched {
                domain,
                path,
                tag,
                digest,
            });
        }
    }
    if is_remote_name(name) {
        return Some(Matched {
            domain: "",
            path: name,
            tag,
            digest,
        });
    }
    None
}

/// Docker's `splitDockerDomain`: decides whether the first segment is a
/// registry domain and adds `docker.io` and `library/` where Docker does.
fn split_docker_domain(name: &str) -> (String, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        // A single segment is always a Docker Hub official image, even
        // `localhost` or `localhost:5000` (which then has tag `5000`).
        return (
            DEFAULT_DOMAIN.to_owned(),
            format!("{OFFICIAL_REPO_PREFIX}{name}"),
        );
    };
    let (domain, remote) = if maybe_domain == LOCALHOST
        || maybe_domain.contains(['.', ':'])
        || maybe_domain.to_lowercase() != maybe_domain
    {
        if maybe_domain == LEGACY_DEFAULT_DOMAIN {
            (DEFAULT_DOMAIN, maybe_remote)
        } else {
            (maybe_domain, maybe_remote)
        }
    } else {
        (DEFAULT_DOMAIN, name)
    };
    let remote = if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{remote}")
    } else {
        remote.to_owned()
    };
    (domain.to_owned(), remote)
}

impl Reference {
    /// Docker's `Parse`: the reference exactly as written, without adding a
    /// default domain (`foo/bar` has domain `foo`). Used for names already
    /// in canonical form; most callers want [`Reference::parse`].
    pub fn parse_exact(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let Some(m) = match_reference(s) else {
            let lower = s.to_lowercase();
            if lower != s && match_reference(&lower).is_some() {
                return Err(ReferenceError::ContainsUppercase {
                    input: s.to_owned(),
                });
            }
            return Err(ReferenceError::InvalidFormat {
                input: s.to_owned(),
            });
        };
        if m.path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong {
                input: s.to_owned(),
            });
        }
        let digest = m.digest.map(Digest::parse).transpose()?;
        Ok(Reference {
            domain: m.domain.to_owned(),
            path: m.path.to_owned(),
            tag: m.tag.map(str::to_owned),
            digest,
        })
    }

    /// Docker's `ParseNormalizedNamed`: turns a familiar name into a fully
    /// qualified one (`busybox` → `docker.io/library/busybox`), keeping
    /// exactly the tag and digest given (none, either or both).
    pub fn parse_normalized_named(s: &str) -> Result<Reference, ReferenceError> {
        if is_identifier(s) {
            return Err(ReferenceError::IdentifierAsName {
                input: s.to_owned(),
            });
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder
            .split_once(':')
            .map_or(remainder.as_str(), |(r, _)| r);
        if remote.to_lowercase() != remote {
            return Err(ReferenceError::NotLowercase {
                name: remote.to_owned(),
            });
        }
        Reference::parse_exact(&format!("{domain}/{remainder}"))
    }

    /// Docker's `ParseDockerRef`, the meaning of an image reference on the
    /// command line: normalised, with `:latest` added when there is neither
    /// tag nor digest, and the tag dropped when both are given
    /// (`busybox:1@sha256:…` → `docker.io/library/busybox@sha256:…`).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let mut r = Reference::parse_normalized_named(s)?;
        if r.digest.is_some() {
            r.tag = None;
        } else if r.tag.is_none() {
            r.tag = Some(DEFAULT_TAG.to_owned());
        }
        Ok(r)
    }

    /// The registry domain (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full repository name (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// True when there is neither a tag nor a digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// The repository alone, without tag or digest (Docker's `TrimNamed`).
    pub fn repository(&self) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        }
    }

    /// The same repository with `tag` (keeping a digest if there is one).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_tag(tag) {
            return Err(ReferenceError::InvalidTag {
                tag: tag.to_owned(),
            });
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// The same repository and tag with `digest`.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// What the reference names in its repository, as a registry's manifest URL takes it:
    /// the digest, else the tag, else `latest`.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// Adds `:latest` if the reference names neither a tag nor a digest
    /// (Docker's `TagNameOnly`).
    pub fn with_default_tag(mut self) -> Reference {
        if self.is_name_only() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The name as Docker shows it: without `docker.io/`, and without
    /// `library/` for official images (`busybox`, `someone/app`,
    /// `localhost:5000/app`).
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// The familiar name with tag and digest (`busybox:latest`), Docker's
    /// `FamiliarString`.
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        s
    }
}

fn push_suffix(s: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(d.as_str());
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// Same as [`Reference::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

    /// (input, full form from ParseNormalizedNamed, familiar form)
    #[test]
    fn normalises_like_docker() {
        let at_d = format!("@{D}");
        let cases: Vec<(String, String, String)> = [
            ("busybox", "docker.io/library/busybox", "busybox"),
            (
                "busybox:latest",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            ("library/busybox", "docker.io/library/busybox", "busybox"),
            ("docker.io/busybox", "docker.io/library/busybox", "busybox"),
            (
                "docker.io/library/busybox",
                "docker.io/library/busybox",
                "busybox",
            ),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox",
                "busybox",
            ),
            (
                "index.docker.io/docker/docker",
                "docker.io/docker/docker",
                "docker/docker",
            ),
            (
                "docker.io/library/foo/bar",
                "docker.io/library/foo/bar",
                "library/foo/bar",
            ),
            (
                "dmcgowan/myapp",
                "docker.io/dmcgowan/myapp",
                "dmcgowan/myapp",
            ),
            ("other/library", "docker.io/other/library", "other/library"),
            ("test_com/foo", "docker.io/test_com/foo", "test_com/foo"),
            ("localhost/x", "localhost/x", "localhost/x"),
            (
                "localhost:5000/x:1",
                "localhost:5000/x:1",
                "localhost:5000/x:1",
            ),
            ("localhost", "docker.io/library/localhost", "localhost"),
            (
                "localhost:5000",
                "docker.io/library/localhost:5000",
                "localhost:5000",
            ),
            ("example.com/app", "example.com/app", "example.com/app"),
            (
                "example.com:8000/a/b:v1",
                "example.com:8000/a/b:v1",
                "example.com:8000/a/b:v1",
            ),
            (
                "127.0.0.1:5000/debian",
                "127.0.0.1:5000/debian",
                "127.0.0.1:5000/debian",
            ),
            (
                "192.168.0.1",
                "docker.io/library/192.168.0.1",
                "192.168.0.1",
            ),
            (
                "192.168.0.1:80",
                "docker.io/library/192.168.0.1:80",
                "192.168.0.1:80",
            ),
            (
                "[fc00::1]:5000/docker",
                "[fc00::1]:5000/docker",
                "[fc00::1]:5000/docker",
            ),
            (
                "xn--n3h.com:18080/foo",
                "xn--n3h.com:18080/foo",
                "xn--n3h.com:18080/foo",
            ),
            ("Docker/docker", "Docker/docker", "Docker/docker"),
            (
                "dock__er/docker",
                "docker.io/dock__er/docker",
                "dock__er/docker",
            ),
            (
                "docker---rules/docker",
                "docker.io/docker---rules/docker",
                "docker---rules/docker",
            ),
            (
                "busybox:Latest_1.x-y",
                "docker.io/library/busybox:Latest_1.x-y",
                "busybox:Latest_1.x-y",
            ),
            ("busybox:_x", "docker.io/library/busybox:_x", "busybox:_x"),
        ]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .chain([
            (
                format!("busybox{at_d}"),
                format!("docker.io/library/busybox{at_d}"),
                format!("busybox{at_d}"),
            ),
            (
                format!("busybox:latest{at_d}"),
                format!("docker.io/library/busybox:latest{at_d}"),
                format!("busybox:latest{at_d}"),
            ),
            (
                format!("localhost:5000/x{at_d}"),
                format!("localhost:5000/x{at_d}"),
                format!("localhost:5000/x{at_d}"),
            ),
        ])
        .collect();
        for (input, full, familiar) in cases {
            let r = Reference::parse_normalized_named(&input)
                .unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(r.to_string(), full, "full form of {input:?}");
            assert_eq!(r.familiar_string(), familiar, "familiar form of {input:?}");
            // The full form is a fixed point.
            let again = Reference::parse_normalized_named(&full).unwrap();
            assert_eq!(again, r, "re-parsing {full:?}");
        }
    }

    #[test]
    fn splits_domain_and_path() {
        let cases = [
            ("busybox", "docker.io", "library/busybox", None),
            ("test.com:8080/foo", "test.com:8080", "foo", None),
            ("test-com:8080/foo", "test-com:8080", "foo", None),
            ("localhost:5000/x:1", "localhost:5000", "x", Some("1")),
            ("Foo/bar", "Foo", "bar", None),
            (
                "docker.io/library/foo/bar:t",
                "docker.io",
                "library/foo/bar",
                Some("t"),
            ),
        ];
        for (input, domain, path, tag) in cases {
            let r = Reference::parse_normalized_named(input).unwrap();
            assert_eq!(
                (r.domain(), r.path(), r.tag()),
                (domain, path, tag),
                "{input}"
            );
        }
    }

    #[test]
    fn parse_adds_latest_and_drops_tag_beside_digest() {
        let cases = [
            (
                "busybox".to_string(),
                "docker.io/library/busybox:latest".to_string(),
            ),
            (
                "busybox:1".to_string(),
                "docker.io/library/busybox:1".to_string(),
            ),
            (
                format!("busybox@{D}"),
                format!("docker.io/library/busybox@{D}"),
            ),
            (
                format!("busybox:1@{D}"),
                format!("docker.io/library/busybox@{D}"),
            ),
        ];
        for (input, want) in cases {
            let r: Reference = input.parse().unwrap();
            assert_eq!(r.to_string(), want, "{input}");
        }
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.familiar_string(), "busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.name(), "docker.io/library/busybox");
    }

    #[test]
    fn rejects_like_docker() {
        let hex64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";
        let long_ns = format!("{}/docker", "a".repeat(256));
        let long_tag = format!("busybox:{}", "a".repeat(129));
        let cases: Vec<(&str, &str)> = vec![
            ("", "invalid reference format"),
            (
                "Busybox",
                "invalid reference format: repository name (library/Busybox) must be lowercase",
            ),
            (
                "docker/Docker",
                "invalid reference format: repository name (docker/Docker) must be lowercase",
            ),
            (
                "docker.io/docker/Docker:tag",
                "invalid reference format: repository name (docker/Docker) must be lowercase",
            ),
            (
                "https://github.com/docker/docker",
                "invalid reference format",
            ),
            ("-docker", "invalid reference format"),
            ("-docker/docker", "invalid reference format"),
            ("docker-/docker", "invalid reference format"),
            ("-docker.io/docker/docker", "invalid reference format"),
            ("docker///docker", "invalid reference format"),
            ("docker.io/docker///docker", "invalid reference format"),
            ("____/____", "invalid reference format"),
            ("_docker/_docker", "invalid reference format"),
            ("dock..er/docker", "invalid reference format"),
            ("dock_.er/docker", "invalid reference format"),
            ("dock-.er/docker", "invalid reference format"),
            ("docker/", "invalid reference format"),
            ("[fc00::1]", "invalid reference format"),
            ("[fc00::1]:5000", "invalid reference format"),
            ("fc00::1:5000/debian", "invalid reference format"),
            ("[fe80::1%eth0]:5000/debian", "invalid reference format"),
            ("busybox:", "invalid reference format"),
            ("busybox:-x", "invalid reference format"),
            ("busybox:a/b", "invalid reference format"),
            ("busybox@", "invalid reference format"),
            ("busybox@sha256:abc", "invalid reference format"),
            ("busybox@@sha256:abc", "invalid reference format"),
            ("foo bar", "invalid reference format"),
            ("busybox:1:2", "invalid reference format"),
            (&long_tag, "invalid reference format"),
            (
                &long_ns,
                "repository name must not be more than 255 characters",
            ),
            (hex64, "cannot specify 64-byte hexadecimal strings"),
        ];
        for (input, want) in cases {
            let err = Reference::parse_normalized_named(input)
                .map(|r| r.to_string())
                .expect_err(input);
            let msg = err.to_string();
            if want == "invalid reference format" {
                assert_eq!(msg, want, "{input:?}");
            } else {
                assert!(msg.contains(want), "{input:?}: {msg}");
            }
        }
    }

    #[test]
    fn validates_the_digest_part() {
        let upper = format!("busybox@sha256:{}", "A".repeat(64));
        let short = format!("busybox@sha256:{}", "a".repeat(40));
        let sha512 = format!("busybox@sha512:{}", "a".repeat(128));
        for input in [&upper, &short, &sha512] {
            let err = Reference::parse(input).unwrap_err();
            assert!(matches!(err, ReferenceError::Digest(_)), "{input}: {err:?}");
        }
    }

    #[test]
    fn parses_docker_edge_cases() {
        // A 64-hex name is fine once it has a domain.
        let r = Reference::parse_normalized_named(
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        )
        .unwrap();
        assert_eq!(r.domain(), "docker.io");
        // 63 hex digits are a name, not an ID.
        let r = Reference::parse_normalized_named(
            "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
        )
        .unwrap();
        assert_eq!(r.path().len(), 8 + 63);
        // A first segment with a '.' that is not a valid domain: Docker's
        // regexp falls back to a domain-less name.
        let r = Reference::parse_normalized_named("a_b.com/x").unwrap();
        assert_eq!((r.domain(), r.path()), ("", "a_b.com/x"));
        assert_eq!(r.to_string(), "a_b.com/x");
        // Uppercase in a place only Parse sees.
        let err = Reference::parse_exact("a_b.Com/x").unwrap_err();
        assert_eq!(err.to_string(), "repository name must be lowercase");
    }

    #[test]
    fn with_tag_and_repository() {
        let r = Reference::parse("busybox:1").unwrap();
        assert_eq!(r.repository().to_string(), "docker.io/library/busybox");
        assert_eq!(
            r.with_tag("2").unwrap().to_string(),
            "docker.io/library/busybox:2"
        );
        assert_eq!(
            r.with_tag("-x").unwrap_err().to_string(),
            "invalid tag format"
        );
        let d: Digest = D.parse().unwrap();
        assert_eq!(
            r.repository().with_digest(d).to_string(),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            Reference::parse_normalized_named("busybox")
                .unwrap()
                .with_default_tag()
                .to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = Reference::parse(&s);
        }

        #[test]
        fn normalised_form_is_a_fixed_point(
            ns in "[a-z0-9]{1,8}([._-][a-z0-9]{1,8})?",
            name in "[a-z0-9]{1,8}",
            tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}",
        ) {
            let input = format!("{ns}/{name}:{tag}");
            if let Ok(r) = Reference::parse(&input) {
                let again = Reference::parse(&r.to_string()).unwrap();
                proptest::prop_assert_eq!(&again, &r);
                let fam = Reference::parse(&r.familiar_string()).unwrap();
                proptest::prop_assert_eq!(fam, r);
            }
        }
    }
}
