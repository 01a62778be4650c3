//! Regression tests for what a security review of kiln found: a Dockerfile that points an ADD
//! destination through a symlink at a host path, a store root open to other users, and the
//! smaller exposures (exit codes, leftovers).

use std::fs;
use std::path::Path;

use crate::build_cmd::write;
use crate::util::TestStore;

/// A one-file tar `payload/owned.txt`, built with the `tar` crate.
fn one_tar(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let data = b"pwned\n";
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "payload/owned.txt", &data[..])
        .unwrap();
    b.into_inner().unwrap();
}

/// ADD of a local tar joined its destination onto the merged root's host path and created
/// it with create_dir_all, so an image symlink `/y -> /host/dir` (or `../../..`) sent the
/// archive's files to the host.
#[test]
fn add_local_tar_through_a_symlinked_destination_stays_in_the_image() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let host = s.dir.path().join("host-target");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("keep"), "host file").unwrap();
    let host_abs = host.to_str().unwrap().to_string();
    let up = "../".repeat(40);
    let ctx = s.dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    one_tar(&ctx.join("one.tar"));
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM busybox:local\n\
             RUN ln -s {host_abs} /y && ln -s {up}{rel} /z && mkdir /d && ln -s {host_abs} /d/link\n\
             ADD one.tar /y/\n\
             ADD one.tar /z/sub/\n\
             ADD one.tar d/link/deeper/\n",
            rel = host_abs.trim_start_matches('/'),
        ),
    );
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "esc:add", "."],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Nothing new on the host.
    let mut names: Vec<_> = fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
    assert_eq!(fs::read_to_string(host.join("keep")).unwrap(), "host file");
    // Everything inside the image, at the path the symlink names in the image.
    let files = s.unpack("esc:add");
    let inside = files.join(host_abs.trim_start_matches('/'));
    for p in [
        "payload/owned.txt",
        "sub/payload/owned.txt",
        "deeper/payload/owned.txt",
    ] {
        assert_eq!(
            fs::read_to_string(inside.join(p)).unwrap(),
            "pwned\n",
            "{p}"
        );
    }
}

/// A COPY destination that is a symlink is written through, as BuildKit does; a link to
/// an absolute path that exists on the host (`/l -> /tmp/…/f`, `/ld -> /tmp/…`) must lead
/// to the image's own path of that name, never the host's.
#[test]
fn copy_through_a_destination_symlink_to_a_host_path_stays_in_the_image() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let host = s.dir.path().join("host-dest");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("f"), "host file").unwrap();
    let host_abs = host.to_str().unwrap().to_string();
    assert!(host_abs.starts_with('/'));
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "f.txt", "copied\n");
    write(&ctx, "dir/x", "x\n");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM busybox:local\n\
             RUN ln -s {host_abs}/f /l && ln -s {host_abs} /ld && ln -s ../../../../..{host_abs}/new /up\n\
             COPY f.txt /l\n\
             COPY f.txt /ld/\n\
             COPY dir /ld/sub\n\
             COPY f.txt /up\n"
        ),
    );
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "esc:dest", "."],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The host directory is as it was.
    let mut names: Vec<_> = fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    assert_eq!(fs::read_to_string(host.join("f")).unwrap(), "host file");
    // The image has the files at the paths the links name inside it, the links unchanged.
    let files = s.unpack("esc:dest");
    let inside = files.join(host_abs.trim_start_matches('/'));
    for p in ["f", "f.txt", "new"] {
        assert_eq!(
            fs::read_to_string(inside.join(p)).unwrap(),
            "copied\n",
            "{p}"
        );
    }
    assert_eq!(fs::read_to_string(inside.join("sub/x")).unwrap(), "x\n");
    for (l, t) in [("l", format!("{host_abs}/f")), ("ld", host_abs.clone())] {
        assert_eq!(fs::read_link(files.join(l)).unwrap(), Path::new(&t), "{l}");
    }
}

/// A store root made before kiln (0755, as `mkdir /var/lib/kiln` gives) stayed world-readable,
/// so another user could read step logs with echoed build args, volumes and blobs.
#[test]
fn a_world_readable_store_root_is_made_private_and_step_logs_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestStore::new();
    fs::create_dir(s.root()).unwrap();
    fs::set_permissions(s.root(), fs::Permissions::from_mode(0o755)).unwrap();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&s.root()), 0o700, "the first open tightens the root");
    fs::set_permissions(s.root(), fs::Permissions::from_mode(0o751)).unwrap();
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nARG TOKEN\nRUN echo \"token=$TOKEN\"\n",
    );
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "--progress=plain",
            "--build-arg",
            "TOKEN=s3cret",
            ".",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("had mode 0751, readable by other users; it is now 0700"),
        "{err}"
    );
    assert_eq!(mode(&s.root()), 0o700);
    let mut logs = 0;
    for build in fs::read_dir(s.root().join("logs")).unwrap() {
        let build = build.unwrap().path();
        assert_eq!(mode(&build), 0o700, "{}", build.display());
        for f in fs::read_dir(&build).unwrap() {
            let f = f.unwrap().path();
            assert_eq!(mode(&f), 0o600, "{}", f.display());
            logs += 1;
        }
    }
    assert!(logs > 0, "the RUN step wrote no log");
}

/// `kiln run` by a user who may not create namespaces exited 128 (the code of a signal) where
/// Docker gives 125 for a container the runtime could not create.
#[test]
fn run_that_cannot_create_the_container_exits_125() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !crate::util::require::require(
        nix::unistd::geteuid().is_root(),
        "root (to run kiln as another user)",
    ) {
        return;
    }
    let k = crate::util::Kiln::new();
    k.import_busybox("busybox:local", &[]);
    fs::set_permissions(k.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    let st = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(k.root())
        .status()
        .unwrap();
    assert!(st.success());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "--rm", "busybox:local", "true"])
        .env("KILN_ROOT", k.root())
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(125),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A killed `kiln save -o F` left `.F.kiln-PID.tmp` beside F for good; the next save removes
/// the temporaries of processes that are gone (and leaves a running save's alone).
#[test]
fn save_removes_what_a_killed_save_left_behind() {
    let k = crate::util::Kiln::new();
    k.import_busybox("busybox:local", &[]);
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = k.path(&format!(".out.tar.kiln-{dead_pid}.tmp"));
    let live = k.path(&format!(".out.tar.kiln-{}.tmp", std::process::id()));
    fs::write(&stale, "partial").unwrap();
    fs::write(&live, "in progress").unwrap();
    k.ok(&[
        "save",
        "-o",
        k.path("out.tar").to_str().unwrap(),
        "busybox:local",
    ]);
    assert!(!stale.exists(), "stale temporary left");
    assert!(live.exists(), "a live process's temporary was removed");
    assert!(k.path("out.tar").exists());
}
