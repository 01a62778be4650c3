//! Shared helpers for the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

    /// Store a busybox image (from the host's static busybox) as `name`. `None` (after
    /// printing why) when the host lacks busybox or root.
    pub fn busybox(&self, name: &str) -> Option<()> {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: building with RUN steps needs root");
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
            println!("skipped: no static busybox on this host (apt-get install busybox-static)");
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
