//! Registries: Debian's `docker-registry` on 127.0.0.1 (with and without
//! htpasswd auth), kiln pushing to it and pulling from it, checked with
//! `skopeo`; multi-arch indexes, tampered blobs, `FROM` of a registry image.
//! Without `docker-registry` (or `htpasswd`, `skopeo`) a test skips loudly, except in CI,
//! where it fails (`util::require`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::util::{find_tool, run_tool, stderr, stdout, Kiln};

/// A tool the tests need (at `path` if given, else on `PATH`), or `None` after printing why
/// (a failure in CI).
#[track_caller]
pub(crate) fn need(name: &str, path: Option<PathBuf>) -> Option<PathBuf> {
    let found = path.filter(|p| p.is_file()).or_else(|| find_tool(name));
    if found.is_none() {
        crate::util::require::missing(&format!("{name} (scripts/install-deps.sh installs it)"));
    }
    found
}

/// A `docker-registry` serving a temp dir on 127.0.0.1, killed when dropped.
pub(crate) struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry; with `auth`, user `kiln` / password `s3cret` via htpasswd.
    pub(crate) fn start(auth: bool) -> Option<Registry> {
        Registry::start_with(auth, None)
    }

    /// [`Registry::start`], serving HTTPS with `tls` (certificate, key) when given.
    fn start_with(auth: bool, tls: Option<(&Path, &Path)>) -> Option<Registry> {
        let bin = need(
            "docker-registry",
            Some(PathBuf::from("/usr/bin/docker-registry")),
        )?;
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if auth {
            let htpasswd = need("htpasswd", None)?;
            let line = run_tool(Command::new(htpasswd).args(["-Bbn", "kiln", "s3cret"]));
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, line.trim()).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let reg = Registry { child, dir, port };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(reg);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not start listening on 127.0.0.1:{port}");
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// PUTs `body` as the manifest `repo:reference` of type `media_type` (a document another
    /// tool wrote); the registry must take it.
    pub(crate) fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let (status, text) = http(self.port, "PUT", &path, media_type, body);
        assert_eq!(status, 201, "PUT {path}: {text}");
    }

    /// The file holding a blob in the registry's storage.
    pub(crate) fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// One plain HTTP/1.1 request to 127.0.0.1:`port`; the status and body.
fn http(port: u16, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

pub(crate) fn skopeo_inspect(skopeo: &Path, image: &str, raw: bool) -> String {
    let mut c = Command::new(skopeo);
    c.args(["inspect", "--tls-verify=false"]);
    if raw {
        c.arg("--raw");
    }
    run_tool(c.arg(format!("docker://{image}")))
}

/// The digest `kiln push` printed (`TAG: digest: sha256:… size: N`).
fn pushed_digest(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.contains(": digest: "))
        .unwrap_or_else(|| panic!("no digest line in {out}"));
    line.split(' ').nth(2).unwrap().to_string()
}

fn assert_store_clean(k: &Kiln) {
    let check = k.run(&["system", "check"]);
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    let tmp = k.root().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

#[test]
fn push_then_pull_into_an_empty_store_and_run() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let Some(skopeo) = need("skopeo", None) else {
        return;
    };
    let name = format!("{}/kiln/bb:1", reg.host());
    let k = Kiln::new();
    let id = k.import_busybox(&name, &[]);
    let out = k.ok(&["push", &name]);
    assert!(out.contains("Pushed"), "{out}");
    let digest = pushed_digest(&out);

    let info: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &name, false)).unwrap();
    assert_eq!(info["Digest"], digest.as_str());
    assert_eq!(info["Os"], "linux");
    let raw: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &name, true)).unwrap();
    assert_eq!(raw["config"]["digest"], id.as_str());
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // Pushing again sends nothing: the registry has every blob.
    let again = k.ok(&["push", &name]);
    assert!(again.contains("Layer already exists"), "{again}");
    assert!(!again.contains("Pushed"), "{again}");
    // Another repository of the same registry gets the layer by a mount.
    let other = format!("{}/kiln/other:2", reg.host());
    k.ok(&["tag", &name, &other]);
    let mounted = k.ok(&["image", "push", "--compression", "gzip", &other]);
    assert!(mounted.contains("Mounted from kiln/bb"), "{mounted}");

    // Removed locally, pulled back, it runs.
    k.ok(&["rmi", &name, &other]);
    let pulled = k.ok(&["pull", &name]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    assert_eq!(k.inspect(&name)["Id"], id.as_str());
    let run = k.ok(&["run", "--rm", &name, "echo", "hello from the registry"]);
    assert_eq!(run.trim(), "hello from the registry");
    let up = k.ok(&["pull", &name]);
    assert!(
        up.contains("Already exists") && up.contains("Image is up to date"),
        "{up}"
    );

    // A fresh store pulls by digest, and the digest names the image.
    let fresh = Kiln::new();
    let by_digest = format!("{}/kiln/bb@{digest}", reg.host());
    let q = fresh.ok(&["image", "pull", "-q", &by_digest]);
    assert_eq!(q.trim(), by_digest);
    assert_eq!(fresh.inspect(&by_digest)["Id"], id.as_str());
    assert_store_clean(&fresh);
    // Every tag with -a.
    let all = fresh.ok(&["pull", "-a", &format!("{}/kiln/bb", reg.host())]);
    assert!(all.contains("1: Pulling from kiln/bb"), "{all}");

    // A store that knows nothing of the registry uploads in chunks when told to.
    let chunked = format!("{}/kiln/chunked:1", reg.host());
    let fourth = Kiln::new();
    let fourth_id = fourth.import_busybox(&chunked, &[]);
    let o = fourth.run_env(
        &["push", &chunked],
        &[("KILN_REGISTRY_CHUNK_SIZE", "300000")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Pushed"), "{}", stdout(&o));
    fourth.ok(&["rmi", &chunked]);
    fourth.ok(&["pull", &chunked]);
    assert_eq!(fourth.inspect(&chunked)["Id"], fourth_id.as_str());

    // zstd layers are pushed as such and pulled back.
    let z = format!("{}/kiln/zstd:1", reg.host());
    k.ok(&["tag", &name, &z]);
    k.ok(&["push", "--compression", "zstd", &z]);
    let raw: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &z, true)).unwrap();
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let third = Kiln::new();
    third.ok(&["pull", &z]);
    assert_eq!(third.inspect(&z)["Id"], id.as_str());
}

#[test]
fn basic_auth_needs_login() {
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let cfg = config.path().display().to_string();
    let env = [("DOCKER_CONFIG", cfg.as_str())];
    let k = Kiln::new();
    let name = format!("{}/kiln/private:1", reg.host());
    k.import_busybox(&name, &[]);

    let o = k.run_env(&["push", &name], &env);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("unauthorized") && err.contains(&reg.host()) && err.contains("kiln/private"),
        "{err}"
    );

    let bad = k.run_stdin(
        &["login", "-u", "kiln", "--password-stdin", &reg.host()],
        b"wrong\n",
    );
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(!config.path().join("config.json").exists());

    let mut login = Command::new(env!("CARGO_BIN_EXE_kiln"));
    login
        .args(["login", "-u", "kiln", "--password-stdin", &reg.host()])
        .env("DOCKER_CONFIG", &cfg)
        .env("KILN_ROOT", k.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Login Succeeded"));
    let file = config.path().join("config.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["auths"][reg.host()]["auth"], "a2lsbjpzM2NyZXQ=");

    let o = k.run_env(&["push", &name], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh = Kiln::new();
    let o = fresh.run_env(&["pull", &name], &env);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = k.run_env(&["logout", &reg.host()], &env);
    assert!(
        stdout(&o).contains("Removing login credentials"),
        "{}",
        stdout(&o)
    );
    let other = Kiln::new();
    let o = other.run_env(&["pull", &name], &env);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    assert!(other.ok(&["images", "-q"]).trim().is_empty());

    // A credentials store (`credsStore`): login stores through the helper, pulls get from it.
    let helpers = tempfile::tempdir().unwrap();
    let script = helpers.path().join("docker-credential-kilntest");
    let saved = helpers.path().join("saved.json");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n get) read s; [ -f {f} ] && exec cat {f}; echo 'credentials not found in native keychain'; exit 1;;\n store) cat > {f};;\n erase) read s; rm -f {f};;\nesac\n",
            f = saved.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&file, r#"{"credsStore":"kilntest"}"#).unwrap();
    let path = format!(
        "{}:{}",
        helpers.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("DOCKER_CONFIG", cfg.as_str()), ("PATH", path.as_str())];
    let o = k.run_env(&["login", "-u", "kiln", "-p", "s3cret", &reg.host()], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let stored: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(stored["Secret"], "s3cret");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("s3cret") && !text.contains("czNjcmV0"),
        "{text}"
    );
    let helped = Kiln::new();
    let o = helped.run_env(&["pull", &name], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = k.run_env(&["logout", &reg.host()], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!saved.exists());
}

/// The architecture Go names the host's, and another one.
fn host_and_other_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "arm64"),
        "aarch64" => ("arm64", "amd64"),
        other => panic!("no test platform pair for {other}"),
    }
}

#[test]
fn an_index_resolves_to_the_host_platform() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let Some(skopeo) = need("skopeo", None) else {
        return;
    };
    let (host, other) = host_and_other_arch();
    let k = Kiln::new();
    let repo = format!("{}/kiln/multi", reg.host());
    let host_id = k.import_busybox(
        &format!("{repo}:host"),
        &["--platform", &format!("linux/{host}")],
    );
    let other_id = k.import_busybox(
        &format!("{repo}:other"),
        &["--platform", &format!("linux/{other}")],
    );
    assert_ne!(host_id, other_id);
    k.ok(&["push", &format!("{repo}:host")]);
    k.ok(&["push", &format!("{repo}:other")]);
    let entry = |tag: &str, arch: &str| {
        let raw = skopeo_inspect(&skopeo, &format!("{repo}:{tag}"), true);
        let digest = {
            use sha2::Digest as _;
            format!("sha256:{:x}", sha2::Sha256::digest(raw.as_bytes()))
        };
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": raw.len(),
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("other", other), entry("host", host)],
    });
    let (status, body) = http(
        reg.port,
        "PUT",
        "/v2/kiln/multi/manifests/latest",
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{body}");

    let fresh = Kiln::new();
    let out = fresh.ok(&["pull", &repo]);
    assert!(out.contains("Using default tag: latest"), "{out}");
    assert_eq!(
        fresh.inspect(&format!("{repo}:latest"))["Id"],
        host_id.as_str()
    );
    let out = fresh.ok(&[
        "pull",
        "--platform",
        &format!("linux/{other}"),
        &format!("{repo}:latest"),
    ]);
    assert!(out.contains("Digest: sha256:"), "{out}");
    // The tag now holds both platforms, as an index (tests/it/index_store.rs has more).
    let ids: Vec<Value> = fresh.inspect(&format!("{repo}:latest"))["Manifests"]
        .as_array()
        .expect("an index")
        .iter()
        .map(|m| m["Id"].clone())
        .collect();
    assert_eq!(ids, [host_id.as_str(), other_id.as_str()]);
    let err = fresh.fails(&["pull", "--platform", "linux/s390x", &repo]);
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains(&reg.host()),
        "{err}"
    );
    assert_store_clean(&fresh);
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_kept() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let Some(skopeo) = need("skopeo", None) else {
        return;
    };
    let k = Kiln::new();
    let name = format!("{}/kiln/tampered:1", reg.host());
    k.import_busybox(&name, &[]);
    k.ok(&["push", &name]);
    let raw: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &name, true)).unwrap();
    let layer = raw["layers"][0]["digest"].as_str().unwrap().to_string();
    let file = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    // Same size, one byte changed in the middle of the gzip stream.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let fresh = Kiln::new();
    let err = fresh.fails(&["pull", &name]);
    assert!(
        err.contains("does not match its digest")
            && err.contains(&layer)
            && err.contains(&name)
            && err.contains(&reg.host()),
        "{err}"
    );
    assert!(fresh.ok(&["images", "-q"]).trim().is_empty());
    assert_store_clean(&fresh);
    let blobs = fresh.root().join("oci/blobs/sha256");
    let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "blobs left in {}", blobs.display());

    // A truncated blob is a size mismatch.
    std::fs::write(&file, &bytes[..mid]).unwrap();
    let err = fresh.fails(&["pull", &name]);
    assert!(
        err.contains("bytes, its descriptor says") || err.contains("does not match"),
        "{err}"
    );
    assert_store_clean(&fresh);
}

#[test]
fn missing_unreachable_and_garbage_registries_are_clear_errors() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let k = Kiln::new();
    let err = k.fails(&["pull", &format!("{}/kiln/none:1", reg.host())]);
    assert!(
        err.contains("manifest unknown") && err.contains(&reg.host()) && err.contains("kiln/none"),
        "{err}"
    );
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = k.fails(&["pull", &format!("127.0.0.1:{closed}/kiln/x:1")]);
    assert!(
        err.contains("unreachable") && err.contains(&format!("127.0.0.1:{closed}")),
        "{err}"
    );

    // A "registry" answering every request with HTML.
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = garbage.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for s in garbage.incoming().take(1) {
            let mut s = s.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html>hello</html>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let err = k.fails(&["pull", &format!("127.0.0.1:{port}/kiln/x:1")]);
    server.join().unwrap();
    assert!(
        err.contains("invalid manifest") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert_store_clean(&k);
}

#[test]
fn from_a_registry_image_pulls_it_and_build_pushes() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let Some(skopeo) = need("skopeo", None) else {
        return;
    };
    let base = format!("{}/kiln/base:1", reg.host());
    let k = Kiln::new();
    k.import_busybox(&base, &[]);
    k.ok(&["push", &base]);

    let fresh = Kiln::new();
    let ctx = fresh.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo built > /built\nCOPY --from={base} /etc/passwd /copied\n"),
    )
    .unwrap();
    let ctx_s = ctx.display().to_string();
    let err = fresh.fails(&["build", "--pull", "never", &ctx_s]);
    assert!(err.contains("image not found in the local store"), "{err}");

    let app = format!("{}/kiln/app:1", reg.host());
    let o = fresh.run(&["build", "--progress", "plain", "-t", &app, "--push", &ctx_s]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains(&format!("pull {base}")), "{log}");
    assert_eq!(
        fresh.ok(&["run", "--rm", &app, "cat", "/built"]).trim(),
        "built"
    );
    let info: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &app, false)).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3, "{info}");

    // A rebuild finds the base in the store and every step cached.
    let o = fresh.run(&["build", "--progress", "plain", "-t", &app, &ctx_s]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(!log.contains("pull "), "{log}");
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");

    // --pull always asks the registry again; nothing changed, so every step is cached.
    let o = fresh.run(&[
        "build",
        "--progress",
        "plain",
        "--pull",
        "always",
        "-t",
        &app,
        &ctx_s,
    ]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains(&format!("pull {base}")), "{log}");
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");

    // --output type=registry with zstd, under another name.
    let z = format!("{}/kiln/app-zstd:1", reg.host());
    fresh.ok(&[
        "build",
        "-q",
        "--output",
        &format!("type=registry,name={z},compression=zstd"),
        &ctx_s,
    ]);
    let raw: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &z, true)).unwrap();
    assert_eq!(
        raw["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
}

#[test]
fn an_interrupted_pull_completes_when_run_again() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let Some(skopeo) = need("skopeo", None) else {
        return;
    };
    let k = Kiln::new();
    let base = format!("{}/kiln/resume-base:1", reg.host());
    k.import_busybox(&base, &[]);
    k.ok(&["push", &base]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo two > /two\n"),
    )
    .unwrap();
    let app = format!("{}/kiln/resume:1", reg.host());
    k.ok(&[
        "build",
        "-q",
        "-t",
        &app,
        "--push",
        &ctx.display().to_string(),
    ]);
    let raw: Value = serde_json::from_str(&skopeo_inspect(&skopeo, &app, true)).unwrap();
    let top = raw["layers"][1]["digest"].as_str().unwrap().to_string();
    // The registry loses the top layer mid-pull: the pull fails, the bottom layer is kept
    // (complete and verified), no image is recorded.
    let file = reg.blob_file(&top);
    let aside = file.with_extension("aside");
    std::fs::rename(&file, &aside).unwrap();
    let fresh = Kiln::new();
    let err = fresh.fails(&["pull", &app]);
    assert!(
        err.contains(&reg.host()) && err.contains("kiln/resume"),
        "{err}"
    );
    assert!(fresh.ok(&["images", "-q"]).trim().is_empty());
    assert_store_clean(&fresh);
    std::fs::rename(&aside, &file).unwrap();
    let out = fresh.ok(&["pull", &app]);
    assert!(
        out.contains("Already exists") && out.contains("Pull complete"),
        "{out}"
    );
    assert_eq!(
        fresh.ok(&["run", "--rm", &app, "cat", "/two"]).trim(),
        "two"
    );
}

/// Relays every connection to 127.0.0.1:`to` and counts them: an HTTP proxy for
/// plain-HTTP registries (Go's server takes absolute-form request targets).
struct Relay {
    port: u16,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c2, mut s2) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Relay { port, count, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn an_http_proxy_from_the_environment_is_used() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let relay = Relay::start(reg.port);
    let proxy = format!("http://127.0.0.1:{}", relay.port);
    // A name only the proxy can reach (it never resolves here).
    let name = "kiln-proxied.invalid:5000/kiln/p:1";
    let env = [
        ("HTTP_PROXY", proxy.as_str()),
        ("NO_PROXY", "localhost,example.com"),
        ("KILN_INSECURE_REGISTRIES", "kiln-proxied.invalid:5000"),
    ];
    let k = Kiln::new();
    let id = k.import_busybox(name, &[]);
    let o = k.run_env(&["push", name], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh = Kiln::new();
    let o = fresh.run_env(&["pull", name], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fresh.inspect(name)["Id"], id.as_str());
    assert!(relay.count.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // Listed in NO_PROXY: no proxy, and the name does not resolve.
    let o = fresh.run_env(
        &["pull", name],
        &[
            ("HTTP_PROXY", proxy.as_str()),
            ("NO_PROXY", ".invalid"),
            ("KILN_INSECURE_REGISTRIES", "kiln-proxied.invalid:5000"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unreachable"), "{}", stderr(&o));
}

/// A CA and a certificate it signed for 127.0.0.1, made with openssl in `dir`:
/// (ca.crt, server.crt, server.key).
fn test_ca(openssl: &Path, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    run_tool(
        Command::new(openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=kiln test CA", "-keyout"])
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt"))
            .stderr(Stdio::null()),
    );
    run_tool(
        Command::new(openssl)
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr"))
            .stderr(Stdio::null()),
    );
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run_tool(
        Command::new(openssl)
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .args(["-CAcreateserial", "-out"])
            .arg(p("server.crt"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .stderr(Stdio::null()),
    );
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

#[test]
fn https_registries_are_verified_against_their_ca() {
    let Some(openssl) = need("openssl", None) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(&openssl, certs.path());
    let Some(reg) = Registry::start_with(false, Some((&cert, &key))) else {
        return;
    };
    let name = format!("{}/kiln/tls:1", reg.host());
    let k = Kiln::new();
    let id = k.import_busybox(&name, &[]);

    // No CA for it: a loopback registry is spoken to over plain HTTP, which a TLS server refuses.
    let empty = certs.path().join("none.d");
    let e = empty.display().to_string();
    let o = k.run_env(&["push", &name], &[("KILN_CERTS_DIR", e.as_str())]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&reg.host()), "{}", stderr(&o));

    // The wrong CA: the certificate is refused.
    let (other_ca, _, _) = {
        let d = certs.path().join("other");
        std::fs::create_dir_all(&d).unwrap();
        test_ca(&openssl, &d)
    };
    let wrong = certs.path().join("wrong.d");
    std::fs::create_dir_all(wrong.join(reg.host())).unwrap();
    std::fs::copy(&other_ca, wrong.join(reg.host()).join("ca.crt")).unwrap();
    let w = wrong.display().to_string();
    let o = k.run_env(&["push", &name], &[("KILN_CERTS_DIR", w.as_str())]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("unreachable") && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    // Its CA in certs.d/<host>/: HTTPS, verified.
    let good = certs.path().join("certs.d");
    std::fs::create_dir_all(good.join(reg.host())).unwrap();
    std::fs::copy(&ca, good.join(reg.host()).join("ca.crt")).unwrap();
    let g = good.display().to_string();
    let env = [("KILN_CERTS_DIR", g.as_str())];
    let o = k.run_env(&["push", &name], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh = Kiln::new();
    let o = fresh.run_env(&["pull", &name], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fresh.inspect(&name)["Id"], id.as_str());
}
