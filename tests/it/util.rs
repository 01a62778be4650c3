//! Shared helpers for the integration tests: running the binary, a private
//! store per test, a busybox rootfs, and finding the interop tools.
//!
//! A test whose requirement (root, busybox, a tool, a daemon) is missing reports it through
//! [`require`]: a failure under CI, a loud skip elsewhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Test requirements, shared with the library's unit tests (`kiln::testutil` under `cfg(test)`):
/// [`require::missing`], [`require::require`], [`require::root`], [`require::tool`].
#[path = "../../src/testutil.rs"]
#[allow(dead_code)]
pub mod require;
pub use require::find_tool;

/// The BuildKit conformance corpus shipped in testdata.
pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/conformance/buildkit")
}

/// Run the kiln binary with `args`, with a private store root.
pub fn kiln(args: &[&str]) -> Output {
    kiln_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// Run the kiln binary in `dir`.
pub fn kiln_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env(
            "KILN_ROOT",
            std::env::temp_dir().join("kiln-test-root-unused"),
        )
        .output()
        .expect("running kiln")
}

/// A private kiln store for one test, removed with it.
pub struct TestStore {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
}

impl TestStore {
    /// A fresh, empty store.
    pub fn new() -> TestStore {
        TestStore {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The store root (`--root`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Run kiln with this store, in `cwd`, with `stdin` bytes if given.
    pub fn kiln(&self, cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(cwd)
            .env("KILN_ROOT", self.root())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kiln");
        if let Some(bytes) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(bytes)
                .expect("write stdin");
        }
        child.wait_with_output().expect("kiln output")
    }

    /// Store a busybox image (from the host's static busybox) as `name`. `None` when the host
    /// lacks busybox or root (reported through [`require`]: a failure under CI).
    pub fn busybox(&self, name: &str) -> Option<()> {
        if !require::require(nix::unistd::geteuid().is_root(), "root (RUN steps)") {
            return None;
        }
        let tar = self.dir.path().join("busybox-rootfs.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-rootfs.sh");
        let st = Command::new("bash")
            .arg(script)
            .arg(&tar)
            .status()
            .expect("bash");
        if !st.success() {
            require::missing("a static busybox (apt-get install busybox-static)");
            return None;
        }
        import_rootfs(&self.root(), &tar, name);
        Some(())
    }

    /// Store a Debian 12 minbase image (`debootstrap --variant=minbase bookworm`, made once
    /// per machine by `scripts/debian-rootfs.sh`, apt pointed at the mirror over HTTP) as
    /// `name`. `None` when the host lacks root or debootstrap (reported through [`require`]:
    /// a failure under CI).
    pub fn debian(&self, name: &str) -> Option<()> {
        if !require::require(nix::unistd::geteuid().is_root(), "root (RUN steps)") {
            return None;
        }
        let tar = self.dir.path().join("debian-rootfs.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-rootfs.sh");
        let st = Command::new("bash")
            .arg(script)
            .arg(&tar)
            .status()
            .expect("bash");
        if !st.success() {
            require::missing(
                "a Debian minbase root (apt-get install debootstrap; mirror over HTTP)",
            );
            return None;
        }
        import_rootfs(&self.root(), &tar, name);
        Some(())
    }

    /// The files of an image, unpacked into a fresh directory.
    pub fn unpack(&self, name: &str) -> PathBuf {
        let store = kiln::store::Store::open(self.root()).expect("store");
        let rec = store.resolve(name).expect("image");
        let out = tempfile::tempdir_in(self.dir.path())
            .expect("tempdir")
            .keep();
        for d in &rec.diff_ids {
            let f = store.open_blob(d).expect("blob");
            kiln::archive::extract(std::io::BufReader::new(f), &out, &Default::default())
                .expect("extract");
        }
        out
    }

    /// The image configuration document of an image.
    pub fn config(&self, name: &str) -> kiln::image::spec::ImageSpec {
        let store = kiln::store::Store::open(self.root()).expect("store");
        let rec = store.resolve(name).expect("image");
        let bytes = store.read_blob(&rec.id, "config", 1 << 20).expect("config");
        kiln::image::spec::ImageSpec::from_slice(&bytes).expect("config json")
    }
}

/// A one-layer image from a rootfs tarball, through the library (as `docker import`).
fn import_rootfs(root: &Path, tar: &Path, name: &str) {
    use kiln::image::config::{
        canonical_json, descriptor, new_manifest, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER,
    };
    use kiln::image::{Digest, Reference};
    let store = kiln::store::Store::open(root).expect("store");
    let bytes = std::fs::read(tar).expect("rootfs tar");
    let diff_id = Digest::of_bytes(&bytes);
    let _lease = store.lease().expect("lease");
    store.put_blob_bytes(&bytes, Some(&diff_id)).expect("layer");
    let mut spec = kiln::image::spec::ImageSpec::scratch();
    spec.rootfs.diff_ids = vec![diff_id.to_string()];
    spec.config.env = vec![format!("PATH={}", kiln::build::state::DEFAULT_PATH)];
    spec.config.cmd = Some(vec!["sh".into()]);
    let config = spec.to_bytes();
    let cd = Digest::of_bytes(&config);
    store.put_blob_bytes(&config, Some(&cd)).expect("config");
    let manifest = new_manifest(
        descriptor(MEDIA_TYPE_CONFIG, &cd, config.len() as u64),
        vec![descriptor(MEDIA_TYPE_LAYER, &diff_id, bytes.len() as u64)],
    );
    let mb = canonical_json("manifest", &manifest).expect("manifest");
    store.put_blob_bytes(&mb, None).expect("manifest blob");
    store
        .put_image_tagged(&config, &mb, &[Reference::parse(name).expect("name")])
        .expect("image");
}

impl TestStore {
    /// The rootfs tarball `busybox` imported (written by `scripts/busybox-rootfs.sh`), so
    /// another builder can start from the very same bytes.
    pub fn busybox_tar(&self) -> PathBuf {
        self.dir.path().join("busybox-rootfs.tar")
    }
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A kiln with its own store in a temporary directory, removed afterwards.
pub struct Kiln {
    dir: tempfile::TempDir,
}

impl Kiln {
    /// A fresh, empty store.
    pub fn new() -> Kiln {
        Kiln {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The store root (`KILN_ROOT`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The OCI layout inside the store, as skopeo and umoci address it.
    pub fn layout(&self) -> String {
        let l = self.root().join("oci").display().to_string();
        assert!(!l.contains(':'), "OCI tools cannot address {l}");
        l
    }

    /// A scratch path next to the store.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("KILN_ROOT", self.root())
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    /// Runs kiln with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running kiln")
    }

    /// Runs kiln with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("running kiln")
    }

    /// Runs kiln with `input` on standard input.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kiln");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            // kiln may stop reading early on an error; that is not the test's failure.
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("waiting for kiln");
        let _ = writer.join();
        out
    }

    /// Runs kiln, asserts success, returns standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed ({}):\n{}{}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs kiln, asserts exit code 1, returns standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "kiln {args:?} should fail:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
        stderr(&o)
    }

    /// Imports the busybox rootfs (built on first use) under `name` (may be
    /// empty for an untagged image) with extra flags; returns the image ID.
    pub fn import_busybox(&self, name: &str, flags: &[&str]) -> String {
        let tar = busybox_rootfs(self.dir.path());
        let mut args = vec!["image", "import"];
        args.extend_from_slice(flags);
        let tar = tar.display().to_string();
        args.push(&tar);
        if !name.is_empty() {
            args.push(name);
        }
        let id = self.ok(&args).trim().to_owned();
        assert!(is_image_id(&id), "{id}");
        id
    }

    /// `kiln image inspect` of one image, parsed.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["image", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v[0].clone()
    }
}

/// True for `sha256:` and 64 lowercase hex digits.
/// `os/arch[/variant]` of an index entry's platform object (`{"os", "architecture",
/// "variant"}`).
pub fn platform_string(p: &serde_json::Value) -> String {
    let mut s = format!(
        "{}/{}",
        p["os"].as_str().unwrap(),
        p["architecture"].as_str().unwrap()
    );
    if let Some(v) = p["variant"].as_str() {
        s = format!("{s}/{v}");
    }
    s
}

pub fn is_image_id(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The host's static busybox (Debian `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes `dir/busybox-rootfs.tar` (once) and returns its path: the host's
/// static busybox as `/bin/busybox`, a symlink per applet of `busybox
/// --list`, and a minimal `/etc/passwd` and `/etc/group`. Panics if the
/// host has no busybox: the tests need it (CI installs busybox-static).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let path = dir.join("busybox-rootfs.tar");
    if path.exists() {
        return path;
    }
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("the tests need /bin/busybox (Debian package busybox-static)");
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    let binary = std::fs::read(BUSYBOX).expect("reading /bin/busybox");
    let mtime = 1_700_000_000;
    let mut b = tar::Builder::new(Vec::new());
    let dir_entry = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    dir_entry(&mut b, "bin/", 0o755);
    file(&mut b, "bin/busybox", 0o755, &binary);
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_mtime(mtime);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    dir_entry(&mut b, "etc/", 0o755);
    file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    file(&mut b, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n");
    dir_entry(&mut b, "root/", 0o700);
    dir_entry(&mut b, "tmp/", 0o1777);
    let bytes = b.into_inner().unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs a tool, asserting success; returns standard output.
pub fn run_tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A name no other test (or test run) uses, for images put into docker or podman.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "kiln-it/{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
