//! One registry over the OCI distribution API: authentication (anonymous,
//! Basic, and the `WWW-Authenticate: Bearer` token flow Docker Hub uses),
//! manifests, blobs and uploads. Every manifest is checked against its
//! digest here; blob streams are checked by their readers (see [`super::pull`]).
//!
//! Credentials are sent only to the registry's own host: a redirect (a blob
//! served from a CDN) or an upload `Location` on another host gets none.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::credentials::{config_dir, Credentials, DockerConfig};
use super::error::{RegistryError, Result};
use super::media;
use crate::image::Digest;

/// Largest manifest or index kiln accepts from a registry (Docker's limit).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Largest token response kiln reads.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// How a client reaches registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP, besides the
    /// loopback ones (`localhost`, `127.0.0.0/8`, `::1`), which always are.
    pub insecure_registries: Vec<String>,
    /// Where Docker's `config.json` is (default: `$DOCKER_CONFIG`, else `~/.docker`).
    pub config_dir: Option<PathBuf>,
    /// Uploads larger than this go in chunks of this size (`PATCH`); 0 uploads
    /// every blob in one request.
    pub chunk_size: u64,
    /// Layers transferred at once.
    pub parallel: usize,
    /// Set by Ctrl-C: transfers stop and nothing partial is kept.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            config_dir: None,
            chunk_size: 64 << 20,
            parallel: 3,
            cancel: None,
        }
    }
}

impl ClientOptions {
    /// Defaults plus the environment: `KILN_INSECURE_REGISTRIES` (comma
    /// separated hosts) and `KILN_REGISTRY_CHUNK_SIZE` (bytes).
    pub fn from_env() -> ClientOptions {
        let mut o = ClientOptions::default();
        if let Ok(v) = std::env::var("KILN_INSECURE_REGISTRIES") {
            o.insecure_registries.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
        if let Some(n) = std::env::var("KILN_REGISTRY_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            o.chunk_size = n;
        }
        o
    }

    /// True when Ctrl-C asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }

    fn plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.insecure_registries.iter().any(|h| h == host)
    }
}

/// True for `localhost`, `127.x.y.z` and `::1`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where per-registry CA certificates are looked for, as Docker does:
/// `$KILN_CERTS_DIR`, else `/etc/docker/certs.d`.
pub fn certs_dir() -> PathBuf {
    std::env::var_os("KILN_CERTS_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/docker/certs.d"))
}

/// The CA certificates in `<certs_dir>/<host>/*.crt` (PEM), which a registry
/// with a private CA is verified against, besides the public roots. A
/// registry with such a directory is spoken to over HTTPS even on loopback.
fn registry_roots(host: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    // A host name never holds a path separator; refuse to look up anything else.
    if host.contains('/') || host.starts_with('.') {
        return Vec::new();
    }
    let dir = certs_dir().join(host);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        match rustls_pki_types::CertificateDer::pem_file_iter(&f) {
            Ok(certs) => out.extend(certs.filter_map(|c| c.ok())),
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "ignoring an unreadable CA file")
            }
        }
    }
    out
}

/// A TLS configuration trusting the public roots and `extra`.
fn tls_config(
    extra: Vec<rustls_pki_types::CertificateDer<'static>>,
) -> std::result::Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for c in extra {
        roots.add(c)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The proxy for `host` from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (or
/// their lowercase forms), unless `NO_PROXY` lists it (a host, a domain
/// suffix, or `*`). Loopback registries never go through a proxy.
pub fn proxy_for(host: &str, https: bool) -> Option<String> {
    if is_loopback(host) {
        return None;
    }
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let proxy = if https {
        var(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
    } else {
        var(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
    }?;
    let no_proxy = var(&["NO_PROXY", "no_proxy"]).unwrap_or_default();
    (!no_proxy_matches(&no_proxy, host)).then_some(proxy)
}

/// True when a `NO_PROXY` list covers `host` (`host[:port]`).
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(h, p)| !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
        .to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        let e = entry.trim_start_matches('*').trim_start_matches('.');
        entry == "*"
            || (!e.is_empty() && (entry == host || name == e || name.ends_with(&format!(".{e}"))))
    })
}

/// A fetched manifest or index: its bytes (what the digest covers), media
/// type and digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The bytes as the registry sent them.
    pub bytes: Vec<u8>,
    /// Media type, from `Content-Type` or the document's `mediaType`.
    pub media_type: String,
    /// The sha256 of `bytes`.
    pub digest: Digest,
}

/// What the registry's challenge asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scheme {
    Unknown,
    Basic,
    Bearer { realm: String, service: String },
}

/// A request body.
pub enum Body<'a> {
    /// None.
    Empty,
    /// Bytes in memory (can be re-sent after an authentication challenge).
    Bytes(&'a [u8]),
    /// A stream of this many bytes (sent once).
    Reader(Box<dyn Read + Send + 'a>, u64),
}

/// A response of status 2xx or 3xx, or the error status with its response.
type Outcome = std::result::Result<ureq::Response, (u16, ureq::Response)>;

/// A client of one registry.
pub struct Client {
    registry: String,
    base: String,
    host: String,
    agent: ureq::Agent,
    creds: Option<Credentials>,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<String, String>>,
    opts: ClientOptions,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.base)
    }
}

/// A `pull` scope for `repo`.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// A `pull,push` scope for `repo`.
pub fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Client {
    /// A client for `registry` (a reference's domain: `docker.io`,
    /// `127.0.0.1:5000`), with the credentials Docker's config has for it.
    pub fn new(registry: &str, opts: &ClientOptions) -> Result<Client> {
        let dir = opts.config_dir.clone().unwrap_or_else(config_dir);
        let creds = DockerConfig::load(&dir)?.credentials(registry)?;
        Ok(Client::with_credentials(registry, opts, creds))
    }

    /// A client for `registry` with the given credentials (or anonymous).
    pub fn with_credentials(
        registry: &str,
        opts: &ClientOptions,
        creds: Option<Credentials>,
    ) -> Client {
        let host = super::api_host(registry).to_string();
        let extra_roots = registry_roots(&host);
        let scheme =
            if extra_roots.is_empty() && (opts.plain_http(&host) || opts.plain_http(registry)) {
                "http"
            } else {
                "https"
            };
        let mut agent = ureq::AgentBuilder::new();
        if !extra_roots.is_empty() {
            match tls_config(extra_roots) {
                Ok(c) => agent = agent.tls_config(c),
                Err(e) => {
                    tracing::warn!(%host, error = %e, "cannot use the registry's CA certificates")
                }
            }
        }
        if let Some(proxy) = proxy_for(&host, scheme == "https") {
            match ureq::Proxy::new(&proxy) {
                Ok(p) => agent = agent.proxy(p),
                Err(e) => tracing::warn!(%proxy, error = %e, "ignoring an unusable proxy setting"),
            }
        }
        let agent = agent
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .redirects(8)
            // Never forward credentials on a redirect (blobs are often served from a CDN).
            .redirect_auth_headers(ureq::RedirectAuthHeaders::Never)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            registry: registry.to_string(),
            base: format!("{scheme}://{host}"),
            host,
            agent,
            creds,
            scheme: Mutex::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
            opts: opts.clone(),
        }
    }

    /// The registry's name (as in references).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// True when `url` is on the registry's own host (credentials may go there).
    fn same_host(&self, url: &str) -> bool {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or("");
        let host = rest.split(['/', '?']).next().unwrap_or("");
        host == self.host
    }

    fn transport(&self, e: ureq::Transport) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.registry.clone(),
            source: Box::new(e),
        }
    }

    /// The `Authorization` header for `scopes`, fetching a token when the
    /// registry is known to want one.
    fn auth_header(&self, scopes: &[String]) -> Result<Option<String>> {
        let scheme = self.lock_scheme().clone();
        match scheme {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self.creds.as_ref().map(Credentials::basic_header)),
            Scheme::Bearer { realm, service } => {
                let key = scopes.join(" ");
                if let Some(t) = self.lock_tokens().get(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let token = self.fetch_token(&realm, &service, scopes)?;
                self.lock_tokens().insert(key, token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    fn lock_scheme(&self) -> std::sync::MutexGuard<'_, Scheme> {
        self.scheme.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token flow: `GET realm?service=…&scope=…`, with Basic credentials
    /// when there are any.
    fn fetch_token(&self, realm: &str, service: &str, scopes: &[String]) -> Result<String> {
        let realm_ok = realm.starts_with("https://")
            || (realm.starts_with("http://") && self.base.starts_with("http://"));
        if !realm_ok {
            return Err(RegistryError::BadResponse {
                registry: self.registry.clone(),
                reason: format!("token realm {realm:?} is not an https URL"),
            });
        }
        let mut req = self.agent.get(realm);
        if !service.is_empty() {
            req = req.query("service", service);
        }
        for s in scopes {
            req = req.query("scope", s);
        }
        if let Some(c) = &self.creds {
            req = req.set("Authorization", &c.basic_header());
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(401, r)) => {
                return Err(RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    detail: detail_of(r),
                })
            }
            Err(ureq::Error::Status(403, r)) => {
                return Err(RegistryError::Denied {
                    registry: self.registry.clone(),
                    detail: detail_of(r),
                })
            }
            Err(ureq::Error::Status(status, r)) => {
                return Err(RegistryError::BadResponse {
                    registry: self.registry.clone(),
                    reason: format!("token server {realm} answered {status}{}", detail_of(r)),
                })
            }
            Err(ureq::Error::Transport(t)) => return Err(self.transport(t)),
        };
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_TOKEN_RESPONSE)
            .read_to_end(&mut bytes)
            .map_err(|source| RegistryError::ReadFailed {
                registry: self.registry.clone(),
                context: "reading the token response".to_string(),
                source,
            })?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadResponse {
                registry: self.registry.clone(),
                reason: format!("token response from {realm} is not JSON: {e}"),
            })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| RegistryError::BadResponse {
                registry: self.registry.clone(),
                reason: format!("token response from {realm} has no token"),
            })
    }

    /// Learns the scheme from a 401's `WWW-Authenticate`; false when there
    /// is nothing new to try.
    fn learn(&self, resp: &ureq::Response, scopes: &[String]) -> Result<bool> {
        let Some(header) = resp.header("www-authenticate") else {
            return Ok(false);
        };
        let challenge = parse_challenge(header).ok_or_else(|| RegistryError::BadResponse {
            registry: self.registry.clone(),
            reason: format!("cannot parse WWW-Authenticate {header:?}"),
        })?;
        let new = match challenge.scheme.as_str() {
            "basic" => Scheme::Basic,
            "bearer" => Scheme::Bearer {
                realm: challenge.param("realm").unwrap_or_default().to_string(),
                service: challenge.param("service").unwrap_or_default().to_string(),
            },
            other => {
                return Err(RegistryError::BadResponse {
                    registry: self.registry.clone(),
                    reason: format!("unsupported authentication scheme {other:?}"),
                })
            }
        };
        let mut current = self.lock_scheme();
        let changed = *current != new;
        if new == Scheme::Basic && self.creds.is_none() {
            *current = new;
            return Ok(false);
        }
        *current = new;
        drop(current);
        // A cached token that was refused (expired, or for a smaller scope) is dropped.
        let had = self.lock_tokens().remove(&scopes.join(" ")).is_some();
        Ok(changed || had)
    }

    /// Sends one request with authentication: on a 401 the challenge is
    /// answered and the request sent again (once; a stream body is not
    /// re-sent).
    pub fn send(
        &self,
        method: &'static str,
        path: &str,
        scopes: &[String],
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Outcome> {
        let url = self.url(path);
        let mut body = Some(body);
        for attempt in 0..2 {
            if self.opts.cancelled() {
                return Err(RegistryError::Interrupted);
            }
            let mut req = self.agent.request(method, &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let mut sent_auth = false;
            if self.same_host(&url) {
                if let Some(a) = self.auth_header(scopes)? {
                    req = req.set("Authorization", &a);
                    sent_auth = true;
                }
            }
            let this = match body.take() {
                Some(Body::Reader(r, len)) => {
                    req = req.set("Content-Length", &len.to_string());
                    req.send(r)
                }
                Some(Body::Bytes(b)) => {
                    body = Some(Body::Bytes(b));
                    req.send_bytes(b)
                }
                Some(Body::Empty) | None => {
                    body = Some(Body::Empty);
                    req.call()
                }
            };
            match this {
                Ok(r) => return Ok(Ok(r)),
                Err(ureq::Error::Status(401, r)) if attempt == 0 && body.is_some() => {
                    // Parallel requests (a push's blob checks) may all be sent before the
                    // first 401 is learned: one sent without credentials is retried when the
                    // scheme, as known after this 401 was learned (by this request or by
                    // another in between), now gives credentials. Asked before `learn`, a
                    // parallel request learning the same challenge in between made both see
                    // "nothing new" and this one gave up.
                    let learned = self.learn(&r, scopes)?;
                    let can_authenticate_now = !sent_auth
                        && self.same_host(&url)
                        && match *self.lock_scheme() {
                            Scheme::Unknown => false,
                            Scheme::Basic => self.creds.is_some(),
                            Scheme::Bearer { .. } => true,
                        };
                    if !learned && !can_authenticate_now {
                        return Ok(Err((401, r)));
                    }
                }
                Err(ureq::Error::Status(s, r)) => return Ok(Err((s, r))),
                Err(ureq::Error::Transport(t)) => return Err(self.transport(t)),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// The error for a failed status (401 and 403 worded for users).
    pub fn status_error(
        &self,
        status: u16,
        resp: ureq::Response,
        method: &'static str,
        path: &str,
    ) -> RegistryError {
        let detail = detail_of(resp);
        match status {
            401 => RegistryError::Unauthorized {
                registry: self.registry.clone(),
                detail,
            },
            403 => RegistryError::Denied {
                registry: self.registry.clone(),
                detail,
            },
            _ => RegistryError::Status {
                registry: self.registry.clone(),
                status,
                method,
                path: path.split('?').next().unwrap_or(path).to_string(),
                detail,
            },
        }
    }

    /// `GET /v2/`: checks the registry answers and the credentials are
    /// accepted (what `kiln login` does before saving them).
    pub fn ping(&self) -> Result<()> {
        match self.send("GET", "/v2/", &[], &[], Body::Empty)? {
            Ok(_) => Ok(()),
            Err((s, r)) => Err(self.status_error(s, r, "GET", "/v2/")),
        }
    }

    /// Fetches a manifest or index by tag or digest and checks it: against
    /// the digest when `reference` is one, else against the registry's
    /// `Docker-Content-Digest` when it sends one.
    pub fn fetch_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = match self.send(
            "GET",
            &path,
            &[pull_scope(repo)],
            &[("Accept", media::ACCEPT_MANIFESTS)],
            Body::Empty,
        )? {
            Ok(r) => r,
            Err((404, _)) => {
                return Err(RegistryError::ManifestNotFound {
                    registry: self.registry.clone(),
                    repository: repo.to_string(),
                    reference: reference.to_string(),
                })
            }
            Err((s, r)) => return Err(self.status_error(s, r, "GET", &path)),
        };
        let content_type = resp
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string());
        let header_digest = resp.header("docker-content-digest").map(str::to_string);
        let bytes = self.read_limited(resp.into_reader(), MAX_MANIFEST_SIZE, "manifest")?;
        let digest = Digest::of_bytes(&bytes);
        let expected = match Digest::parse(reference) {
            Ok(d) => Some(d),
            Err(_) if reference.contains(':') => {
                return Err(RegistryError::Invalid(format!(
                    "{reference} is not a sha256 digest"
                )))
            }
            Err(_) => header_digest
                .as_deref()
                .filter(|h| h.starts_with("sha256:"))
                .map(|h| {
                    Digest::parse(h).map_err(|_| RegistryError::BadResponse {
                        registry: self.registry.clone(),
                        reason: format!("Docker-Content-Digest {h:?} is not a digest"),
                    })
                })
                .transpose()?,
        };
        if let Some(want) = expected {
            if want != digest {
                return Err(RegistryError::DigestMismatch {
                    registry: self.registry.clone(),
                    what: format!("manifest {repo}:{reference}"),
                    expected: want,
                    actual: digest,
                });
            }
        }
        let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            });
        let media_type = match (declared, content_type) {
            (Some(d), _) => d,
            (None, Some(c)) if c != "application/json" && !c.is_empty() => c,
            // OCI documents may omit mediaType; the shape decides.
            _ => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadResponse {
                        registry: self.registry.clone(),
                        reason: format!("manifest {repo}:{reference} is not JSON: {e}"),
                    })?;
                if v.get("manifests").is_some() {
                    media::OCI_INDEX.to_string()
                } else {
                    media::OCI_MANIFEST.to_string()
                }
            }
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn read_limited(&self, r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        r.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| RegistryError::ReadFailed {
                registry: self.registry.clone(),
                context: format!("reading a {what}"),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(RegistryError::BadResponse {
                registry: self.registry.clone(),
                reason: format!("a {what} is larger than {limit} bytes"),
            });
        }
        Ok(bytes)
    }

    /// Opens a blob for reading (following redirects). The caller verifies
    /// what it reads: use [`Client::fetch_blob_verified`] for small blobs.
    pub fn blob_reader(&self, repo: &str, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        match self.send("GET", &path, &[pull_scope(repo)], &[], Body::Empty)? {
            Ok(r) => Ok(Box::new(r.into_reader())),
            Err((404, _)) => Err(RegistryError::BlobNotFound {
                registry: self.registry.clone(),
                repository: repo.to_string(),
                digest: digest.clone(),
            }),
            Err((s, r)) => Err(self.status_error(s, r, "GET", &path)),
        }
    }

    /// Fetches a small blob (a config) into memory, checked against its
    /// digest and size.
    pub fn fetch_blob_verified(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let r = self.blob_reader(repo, digest)?;
        let bytes = self.read_limited(r, size, what)?;
        if bytes.len() as u64 != size {
            return Err(RegistryError::SizeMismatch {
                registry: self.registry.clone(),
                what: what.to_string(),
                digest: digest.clone(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of_bytes(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                what: what.to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// `HEAD` a blob: its size when the repository has it.
    pub fn has_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        match self.send("HEAD", &path, &[push_scope(repo)], &[], Body::Empty)? {
            Ok(r) => Ok(Some(
                r.header("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
            )),
            Err((404, _)) => Ok(None),
            Err((s, r)) => Err(self.status_error(s, r, "HEAD", &path)),
        }
    }

    /// Asks the registry to mount `digest` from repository `from` into
    /// `repo`; true when it did.
    pub fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let scopes = [push_scope(repo), pull_scope(from)];
        match self.send("POST", &path, &scopes, &[], Body::Empty)? {
            Ok(r) if r.status() == 201 => Ok(true),
            Ok(r) => {
                // 202: the registry started an ordinary upload instead; cancel it.
                if let Some(loc) = r.header("location").map(str::to_string) {
                    let _ = self.send("DELETE", &self.location(&loc), &scopes, &[], Body::Empty);
                }
                Ok(false)
            }
            Err((401 | 403 | 404, _)) => Ok(false),
            Err((s, r)) => Err(self.status_error(s, r, "POST", &path)),
        }
    }

    /// An upload `Location`, made absolute.
    fn location(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            format!("{}/{loc}", self.base)
        }
    }

    fn upload_location(&self, r: &ureq::Response, what: &str) -> Result<String> {
        r.header("location")
            .map(|l| self.location(l))
            .ok_or_else(|| RegistryError::BadResponse {
                registry: self.registry.clone(),
                reason: format!("{what} answered without a Location"),
            })
    }

    /// Uploads a blob of `size` bytes: in one `PUT`, or in `PATCH` chunks
    /// of [`ClientOptions::chunk_size`] when it is larger. `open` gives a
    /// reader from the start of the blob.
    pub fn upload_blob<'b>(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        open: &(dyn Fn() -> std::io::Result<Box<dyn Read + Send + 'b>> + 'b),
    ) -> Result<()> {
        let scopes = [push_scope(repo)];
        let start = format!("/v2/{repo}/blobs/uploads/");
        let mut loc = match self.send("POST", &start, &scopes, &[], Body::Empty)? {
            Ok(r) => self.upload_location(&r, "starting an upload")?,
            Err((s, r)) => return Err(self.status_error(s, r, "POST", &start)),
        };
        let local = |e: std::io::Error| RegistryError::Io {
            op: "read",
            path: format!("blob {digest}"),
            source: e,
        };
        let chunk = self.opts.chunk_size;
        let mut reader = open().map_err(local)?;
        if chunk > 0 && size > chunk {
            let mut offset = 0u64;
            while offset < size {
                let n = chunk.min(size - offset);
                let part = (&mut reader).take(n);
                let range = format!("{}-{}", offset, offset + n - 1);
                let len = n.to_string();
                let headers = [
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", range.as_str()),
                    ("Content-Length", len.as_str()),
                ];
                match self.send(
                    "PATCH",
                    &loc,
                    &scopes,
                    &headers,
                    Body::Reader(Box::new(part), n),
                )? {
                    Ok(r) => loc = self.upload_location(&r, "a chunk upload")?,
                    Err((s, r)) => return Err(self.status_error(s, r, "PATCH", &loc)),
                }
                offset += n;
            }
            reader = Box::new(std::io::empty());
        }
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={digest}");
        let remaining = if chunk > 0 && size > chunk { 0 } else { size };
        match self.send(
            "PUT",
            &put,
            &scopes,
            &[("Content-Type", "application/octet-stream")],
            Body::Reader(Box::new(reader.take(remaining)), remaining),
        )? {
            Ok(_) => Ok(()),
            Err((400, r)) => {
                let detail = detail_of(r);
                Err(RegistryError::BadResponse {
                    registry: self.registry.clone(),
                    reason: format!("the registry refused blob {digest}{detail}"),
                })
            }
            Err((s, r)) => Err(self.status_error(s, r, "PUT", &put)),
        }
    }

    /// Puts a manifest (or index) under a tag or its digest; returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let digest = Digest::of_bytes(bytes);
        match self.send(
            "PUT",
            &path,
            &[push_scope(repo)],
            &[("Content-Type", media_type)],
            Body::Bytes(bytes),
        )? {
            Ok(r) => {
                if let Some(h) = r.header("docker-content-digest") {
                    if h.starts_with("sha256:") && h != digest.as_str() {
                        return Err(RegistryError::BadResponse {
                            registry: self.registry.clone(),
                            reason: format!("stored manifest as {h}, but its digest is {digest}"),
                        });
                    }
                }
                Ok(digest)
            }
            Err((s, r)) => Err(self.status_error(s, r, "PUT", &path)),
        }
    }

    /// Every tag of a repository (`GET /v2/<repo>/tags/list`, following pages).
    pub fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut path = format!("/v2/{repo}/tags/list?n=1000");
        for _ in 0..100 {
            let resp = match self.send("GET", &path, &[pull_scope(repo)], &[], Body::Empty)? {
                Ok(r) => r,
                Err((404, _)) => {
                    return Err(RegistryError::ManifestNotFound {
                        registry: self.registry.clone(),
                        repository: repo.to_string(),
                        reference: "(any tag)".into(),
                    })
                }
                Err((s, r)) => return Err(self.status_error(s, r, "GET", &path)),
            };
            let next = resp.header("link").and_then(next_link);
            let bytes = self.read_limited(resp.into_reader(), 16 << 20, "tag list")?;
            #[derive(serde::Deserialize)]
            struct Tags {
                tags: Option<Vec<String>>,
            }
            let t: Tags =
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadResponse {
                    registry: self.registry.clone(),
                    reason: format!("tag list of {repo} is not JSON: {e}"),
                })?;
            out.extend(t.tags.unwrap_or_default());
            match next {
                Some(n) => path = n,
                None => break,
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// `<url>; rel="next"` → the URL.
fn next_link(header: &str) -> Option<String> {
    let (url, rest) = header.split_once(';')?;
    rest.contains("next").then(|| {
        url.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    })
}

/// `: <message>` from a distribution error body (`{"errors":[{"code","message"}]}`),
/// or empty.
fn detail_of(resp: ureq::Response) -> String {
    let mut bytes = Vec::new();
    let _ = resp.into_reader().take(64 << 10).read_to_end(&mut bytes);
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<E>,
    }
    match serde_json::from_slice::<Errors>(&bytes) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|e| {
                    let m = e.message.clone().unwrap_or_default();
                    match &e.code {
                        Some(c) if !m.is_empty() => format!("{} ({m})", c.to_lowercase()),
                        Some(c) => c.to_lowercase(),
                        None => m,
                    }
                })
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercase).
    pub scheme: String,
    /// `key="value"` parameters, keys lowercase.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Bearer realm="…",service="…",scope="repository:a:pull,push"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = rest[start..i].trim().to_ascii_lowercase();
        i += 1;
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i] as char);
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            i += 1;
        } else {
            let start = i.min(b.len());
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            value = rest[start..i].trim().to_string();
        }
        if key.is_empty() {
            return None;
        }
        params.push((key, value));
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(
            c.param("scope"),
            Some("repository:library/busybox:pull,push")
        );
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn no_proxy_lists_are_matched() {
        let list = "localhost, .corp.example,registry.lan:5000,other.io";
        for h in [
            "a.corp.example",
            "corp.example",
            "registry.lan:5000",
            "other.io:443",
        ] {
            assert!(no_proxy_matches(list, h), "{h}");
        }
        for h in ["docker.io", "evilcorp.example", "registry.lan.evil:5000"] {
            assert!(!no_proxy_matches(list, h), "{h}");
        }
        assert!(no_proxy_matches("*", "docker.io"));
        assert!(!no_proxy_matches("", "docker.io"));
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "example.com:443",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    /// Answers requests on 127.0.0.1: `/v2/…` wants a Bearer token that
    /// `/token` hands out for the right Basic credentials; records the
    /// requests it saw.
    fn token_server() -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let realm = format!("http://{addr}/token");
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for stream in listener.incoming().take(3) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("Authorization: ") {
                        auth = v.trim().to_string();
                    }
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                seen.push(format!("{path} {auth}"));
                let (status, headers, body) = if path.starts_with("/token") {
                    if auth
                        == (Credentials {
                            username: "u".into(),
                            secret: "p".into(),
                        })
                        .basic_header()
                    {
                        ("200 OK", String::new(), r#"{"token":"t0k"}"#.to_string())
                    } else {
                        ("401 Unauthorized", String::new(), String::new())
                    }
                } else if auth == "Bearer t0k" {
                    ("200 OK", String::new(), "{}".to_string())
                } else {
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:a/b:pull\"\r\n"),
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_string(),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            seen
        });
        (addr, handle)
    }

    // A push's parallel blob checks were all sent before the first 401 was learned: the
    // ones answered after another had learned Basic gave up with "unauthorized".
    #[test]
    fn a_request_sent_before_another_learned_the_scheme_is_retried_with_credentials() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let creds = Credentials {
            username: "u".into(),
            secret: "p".into(),
        };
        let header = creds.basic_header();
        let c = Client::with_credentials(&addr, &ClientOptions::default(), Some(creds));
        let seen = std::thread::scope(|scope| {
            let server = scope.spawn(|| {
                let mut seen = Vec::new();
                for stream in listener.incoming().take(2) {
                    let mut stream = stream.unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut auth = String::new();
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("Authorization: ") {
                            auth = v.trim().to_string();
                        }
                    }
                    seen.push(auth.clone());
                    let reply = if auth.is_empty() {
                        // Meanwhile a parallel request learned the scheme.
                        *c.lock_scheme() = Scheme::Basic;
                        "401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\""
                    } else {
                        "200 OK"
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {reply}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
                seen
            });
            let out = c
                .send("HEAD", "/v2/a/blobs/x", &[], &[], Body::Empty)
                .unwrap()
                .map(|r| r.status())
                .map_err(|e| e.0);
            // Without the retry the server still waits for a second request: end it.
            let _ = std::net::TcpStream::connect(&addr);
            (out, server.join().unwrap())
        });
        assert_eq!(seen, (Ok(200), vec![String::new(), header]));
    }

    /// Reads one request's head from `stream`; returns its `Authorization` value ("" if none).
    fn read_auth(stream: &std::net::TcpStream) -> String {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut auth = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                return auth;
            }
            if let Some(v) = h.strip_prefix("Authorization: ") {
                auth = v.trim().to_string();
            }
        }
    }

    // CI saw a push fail with "unauthorized" though it had credentials: two parallel blob
    // checks got their 401s together, and one learned Basic between the other's "learned
    // meanwhile?" check and its own `learn`, so that one saw nothing new and gave up. Here
    // every round's requests get their 401s at once, so the two learn together.
    #[test]
    fn parallel_requests_answered_401_together_all_retry_with_credentials() {
        const N: usize = 8;
        let creds = Credentials {
            username: "u".into(),
            secret: "p".into(),
        };
        let header = creds.basic_header();
        for _round in 0..20 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let c = Client::with_credentials(&addr, &ClientOptions::default(), Some(creds.clone()));
            let statuses = std::thread::scope(|scope| {
                let header = header.clone();
                scope.spawn(move || {
                    let (mut waiting, mut answered) = (Vec::new(), 0);
                    for stream in listener.incoming() {
                        let mut stream = stream.unwrap();
                        let auth = read_auth(&stream);
                        if auth.is_empty() {
                            waiting.push(stream);
                            if waiting.len() == N {
                                for mut s in waiting.drain(..) {
                                    let _ = write!(
                                        s,
                                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                    );
                                }
                            }
                            continue;
                        }
                        let status = if auth == header { "200 OK" } else { "403 Forbidden" };
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        answered += 1;
                        if answered == N {
                            return;
                        }
                    }
                });
                let clients: Vec<_> = (0..N)
                    .map(|i| {
                        let c = &c;
                        scope.spawn(move || {
                            let path = format!("/v2/a/blobs/{i}");
                            c.send("HEAD", &path, &[], &[], Body::Empty)
                                .unwrap()
                                .map(|r| r.status())
                                .map_err(|e| e.0)
                        })
                    })
                    .collect();
                let statuses: Vec<_> = clients.into_iter().map(|h| h.join().unwrap()).collect();
                // A request that gave up leaves the server waiting for its retry: end it.
                for _ in 0..N {
                    let _ = std::net::TcpStream::connect(&addr)
                        .and_then(|mut s| write!(s, "GET / HTTP/1.1\r\nAuthorization: x\r\n\r\n"));
                }
                statuses
            });
            assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
        }
    }

    #[test]
    fn answers_a_bearer_challenge_with_a_token() {
        let (addr, server) = token_server();
        let creds = Credentials {
            username: "u".into(),
            secret: "p".into(),
        };
        let c = Client::with_credentials(&addr, &ClientOptions::default(), Some(creds));
        c.ping().unwrap();
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], "/v2/ ");
        assert!(seen[1].starts_with("/token?service=test"), "{seen:?}");
        assert!(seen[1].ends_with("Basic dTpw"), "{seen:?}");
        assert_eq!(seen[2], "/v2/ Bearer t0k");
    }

    // The transport error was flattened into a string (`reason`): a caller could neither
    // walk to the cause nor match the kind of failure.
    #[test]
    fn a_closed_port_is_unreachable_with_the_transport_error_as_source() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let c = Client::with_credentials(&addr, &ClientOptions::default(), None);
        let err = c.ping().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("registry {addr} is unreachable: ")),
            "{msg}"
        );
        let mut inner = &err;
        while let RegistryError::Image { source, .. } = inner {
            inner = source;
        }
        let RegistryError::Unreachable { source, .. } = inner else {
            panic!("not Unreachable: {err:?}");
        };
        assert!(msg.ends_with(&source.to_string()), "{msg}");
        assert!(std::error::Error::source(inner).is_some());
    }

    #[test]
    fn a_refused_token_is_a_clear_401() {
        let (addr, server) = token_server();
        let creds = Credentials {
            username: "u".into(),
            secret: "wrong".into(),
        };
        let c = Client::with_credentials(&addr, &ClientOptions::default(), Some(creds));
        let err = c.ping().unwrap_err().to_string();
        assert!(err.contains("unauthorized"), "{err}");
        assert!(err.contains(&addr), "{err}");
        // Unblock the server's third accept.
        let _ = std::net::TcpStream::connect(&addr);
        server.join().unwrap();
    }
}
