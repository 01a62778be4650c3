//! Registry credentials as Docker keeps them: `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`) with `auths` entries (base64
//! `user:password` in `auth`), a `credsStore` for every registry and
//! `credHelpers` per registry, both run as `docker-credential-<name>`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::error::{io_err, RegistryError, Result};

/// A user name and a secret (password or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (`<token>` for an identity token, as Docker writes it).
    pub username: String,
    /// Password or token.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in a log.
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The directory of Docker's client configuration: `$DOCKER_CONFIG`, else
/// `$HOME/.docker`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker")
}

/// The key Docker uses in `auths` for a registry (Docker Hub's historical URL
/// for `docker.io`).
pub fn auth_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".into()
        }
        other => other.to_string(),
    }
}

/// `https://host/v1/` → `host`: how `auths` keys written by other tools are compared.
fn normalize_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    match k.split('/').next().unwrap_or(k) {
        // Docker Hub's names, as different tools write them.
        "docker.io" | "registry-1.docker.io" => "index.docker.io",
        host => host,
    }
}

/// Docker's client config file, as read.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// Reads `<dir>/config.json`; a missing file is an empty config.
    pub fn load(dir: &Path) -> Result<DockerConfig> {
        let path = dir.join("config.json");
        let doc = match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(RegistryError::Credentials(format!(
                        "{} is not a JSON object",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(RegistryError::Credentials(format!(
                        "{} is not valid JSON: {e}",
                        path.display()
                    )))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(io_err("read", path.display())(e)),
        };
        Ok(DockerConfig { path, doc })
    }

    /// The file this config is read from and written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn helper_for(&self, registry: &str) -> Option<String> {
        let helpers = self.doc.get("credHelpers").and_then(Value::as_object);
        if let Some(h) = helpers.and_then(|h| {
            h.iter()
                .find(|(k, _)| normalize_key(k) == normalize_key(&auth_key(registry)))
                .and_then(|(_, v)| v.as_str())
        }) {
            return Some(h.to_string());
        }
        self.doc
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    fn auth_entry(&self, registry: &str) -> Option<&Map<String, Value>> {
        let key = auth_key(registry);
        let auths = self.doc.get("auths")?.as_object()?;
        auths
            .get(&key)
            .or_else(|| {
                auths
                    .iter()
                    .find(|(k, _)| normalize_key(k) == normalize_key(&key))
                    .map(|(_, v)| v)
            })?
            .as_object()
    }

    /// The credentials for `registry` (a host such as `docker.io` or
    /// `127.0.0.1:5000`), if any are configured.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(entry) = self.auth_entry(registry) {
            if let Some(c) = entry_credentials(entry, &self.path)? {
                return Ok(Some(c));
            }
        }
        match self.helper_for(registry) {
            Some(helper) => helper_get(&helper, &auth_key(registry)),
            None => Ok(None),
        }
    }

    /// Stores credentials for `registry`: through the credentials store or
    /// helper when one is configured, else base64 in `auths`. The file is
    /// replaced atomically, mode 0600.
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> Result<()> {
        let key = auth_key(registry);
        let helper = self_helper(&self.doc, registry);
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let Some(auths) = auths.as_object_mut() else {
            return Ok(());
        };
        match helper {
            Some(helper) => {
                helper_store(&helper, &key, creds)?;
                // Docker leaves an empty entry so `auths` lists the registry.
                auths.insert(key, Value::Object(Map::new()));
            }
            None => {
                let raw = format!("{}:{}", creds.username, creds.secret);
                let mut entry = Map::new();
                entry.insert(
                    "auth".into(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
                );
                auths.insert(key, Value::Object(entry));
            }
        }
        self.save()
    }

    /// Removes the credentials of `registry`; false when there were none.
    pub fn remove(&mut self, registry: &str) -> Result<bool> {
        let key = auth_key(registry);
        let mut found = false;
        if let Some(helper) = self_helper(&self.doc, registry) {
            found |= helper_erase(&helper, &key)?;
        }
        if let Some(auths) = self.doc.get_mut("auths").and_then(Value::as_object_mut) {
            let keys: Vec<String> = auths
                .keys()
                .filter(|k| normalize_key(k) == normalize_key(&key))
                .cloned()
                .collect();
            for k in keys {
                auths.remove(&k);
                found = true;
            }
        }
        if found {
            self.save()?;
        }
        Ok(found)
    }

    fn save(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir.display()))?;
        let mut bytes =
            serde_json::to_vec_pretty(&Value::Object(self.doc.clone())).map_err(|e| {
                RegistryError::CredentialsFailed {
                    context: format!("encoding {}", self.path.display()),
                    source: Box::new(e),
                }
            })?;
        bytes.push(b'\n');
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let guard = crate::store::fsutil::TempPath::new(tmp.clone());
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", tmp.display()))?;
            f.write_all(&bytes)
                .map_err(io_err("write", tmp.display()))?;
            f.sync_all().map_err(io_err("fsync", tmp.display()))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err("replace", self.path.display()))?;
        guard.disarm();
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn self_helper(doc: &Map<String, Value>, registry: &str) -> Option<String> {
    DockerConfig {
        path: PathBuf::new(),
        doc: doc.clone(),
    }
    .helper_for(registry)
}

fn entry_credentials(entry: &Map<String, Value>, path: &Path) -> Result<Option<Credentials>> {
    if let Some(auth) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let bad = || {
            RegistryError::Credentials(format!(
                "{}: an `auth` entry is not base64 of user:password",
                path.display()
            ))
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (u, p) = raw.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            username: u.to_string(),
            secret: p.to_string(),
        }));
    }
    if let Some(t) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Ok(Some(Credentials {
            username: "<token>".into(),
            secret: t.to_string(),
        }));
    }
    match (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
            username: u.to_string(),
            secret: p.to_string(),
        })),
        _ => Ok(None),
    }
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<(bool, Vec<u8>)> {
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(RegistryError::Credentials(format!(
            "invalid credential helper name {helper:?}"
        )));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RegistryError::CredentialsFailed {
            context: format!("cannot run {program}"),
            source: Box::new(e),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::CredentialsFailed {
            context: format!("{program} {action}"),
            source: Box::new(e),
        })?;
    let mut text = out.stdout;
    if !out.status.success() {
        text.extend_from_slice(&out.stderr);
    }
    Ok((out.status.success(), text))
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let (ok, out) = run_helper(helper, "get", server.as_bytes())?;
    if !ok {
        let msg = String::from_utf8_lossy(&out);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(RegistryError::Credentials(format!(
            "docker-credential-{helper} get {server}: {}",
            msg.trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out).map_err(|e| {
        RegistryError::Credentials(format!(
            "docker-credential-{helper} get: invalid output: {e}"
        ))
    })?;
    let username = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: username.to_string(),
        secret: secret.to_string(),
    }))
}

fn helper_store(helper: &str, server: &str, creds: &Credentials) -> Result<()> {
    let input = serde_json::json!({
        "ServerURL": server,
        "Username": creds.username,
        "Secret": creds.secret,
    });
    let (ok, out) = run_helper(helper, "store", input.to_string().as_bytes())?;
    if !ok {
        return Err(RegistryError::Credentials(format!(
            "docker-credential-{helper} store: {}",
            String::from_utf8_lossy(&out).trim()
        )));
    }
    Ok(())
}

fn helper_erase(helper: &str, server: &str) -> Result<bool> {
    let (ok, out) = run_helper(helper, "erase", server.as_bytes())?;
    if !ok {
        let msg = String::from_utf8_lossy(&out);
        if msg.contains("not found") {
            return Ok(false);
        }
        return Err(RegistryError::Credentials(format!(
            "docker-credential-{helper} erase: {}",
            msg.trim()
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auths_and_writes_them_back_private() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"docker.io":{"auth":"dTpw"},"http://reg.example:5000/v2/":{"username":"a","password":"b"}},"other":1}"#,
        )
        .unwrap();
        let mut c = DockerConfig::load(dir.path()).unwrap();
        let hub = c.credentials("docker.io").unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.secret.as_str()), ("u", "p"));
        let r = c.credentials("reg.example:5000").unwrap().unwrap();
        assert_eq!(r.username, "a");
        assert!(c.credentials("other.example").unwrap().is_none());
        c.store(
            "127.0.0.1:5000",
            &Credentials {
                username: "x".into(),
                secret: "y:z".into(),
            },
        )
        .unwrap();
        let path = dir.path().join("config.json");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = DockerConfig::load(dir.path()).unwrap();
        let got = again.credentials("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(got.secret, "y:z");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"other\": 1"), "{text}");
        let mut again = again;
        assert!(again.remove("127.0.0.1:5000").unwrap());
        assert!(!again.remove("127.0.0.1:5000").unwrap());
        assert!(DockerConfig::load(dir.path())
            .unwrap()
            .credentials("127.0.0.1:5000")
            .unwrap()
            .is_none());
    }

    #[test]
    fn refuses_bad_helper_names_and_garbage() {
        assert!(run_helper("../../bin/sh", "get", b"").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "[1]").unwrap();
        assert!(DockerConfig::load(dir.path()).is_err());
    }
}
