//! Containers end to end: a container's files — `cp` in and out (also against a container
//! that swaps symlinks), commit, diff and export.
//! Every test removes its containers (`rm -f`) when it ends, even when it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::containers::*;
use super::util::stderr;

#[test]
fn cp_in_and_out_of_running_and_stopped_containers() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "busybox:local",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo inside > /data/sub/f && ln -s /etc /data/etc-link && \
         chown 1000:1000 /data/sub/f && sleep 1000",
    ]);
    e.wait_for("box", 10, running);
    let host = e.dir().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let h = |p: &str| host.join(p);
    // Wait for the command's files.
    for _ in 0..100 {
        if e.run(&["exec", "box", "test", "-e", "/data/etc-link"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Out: a directory into an existing one keeps its name; `/.` copies its contents; a
    // file to a new name takes it; links stay links; owners are kept.
    e.ok(&["cp", "box:/data", &format!("{}/", host.display())]);
    assert_eq!(
        std::fs::read_to_string(h("data/sub/f")).unwrap(),
        "inside\n"
    );
    assert_eq!(
        std::fs::read_link(h("data/etc-link")).unwrap(),
        Path::new("/etc")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(h("data/sub/f")).unwrap().uid(), 1000);
    e.ok(&[
        "cp",
        "box:/data/sub/.",
        &h("contents").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(h("contents/f")).unwrap(),
        "inside\n"
    );
    e.ok(&[
        "cp",
        "box:/data/sub/f",
        &h("renamed.txt").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(h("renamed.txt")).unwrap(),
        "inside\n"
    );
    // `-` writes a tar stream.
    let o = e.run(&["cp", "box:/data/sub", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = tar::Archive::new(&o.stdout[..])
        .entries()
        .unwrap()
        .map(|en| {
            let p = en.unwrap().path().unwrap().display().to_string();
            p.trim_end_matches('/').to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["sub", "sub/f"]);

    // In: a file into a directory (root-owned without -a, its owner kept with -a), a
    // directory under a new name, a tar stream from stdin.
    std::fs::write(h("in.txt"), "from the host\n").unwrap();
    std::os::unix::fs::chown(h("in.txt"), Some(1234), Some(1234)).unwrap();
    e.ok(&["cp", &h("in.txt").display().to_string(), "box:/data/"]);
    assert_eq!(
        e.ok(&["exec", "box", "stat", "-c", "%u:%g %s", "/data/in.txt"]),
        "0:0 14\n"
    );
    e.ok(&[
        "cp",
        "-a",
        &h("in.txt").display().to_string(),
        "box:/data/kept.txt",
    ]);
    assert_eq!(
        e.ok(&["exec", "box", "stat", "-c", "%u:%g", "/data/kept.txt"]),
        "1234:1234\n"
    );
    e.ok(&["cp", &h("contents").display().to_string(), "box:/copied"]);
    assert_eq!(e.ok(&["exec", "box", "cat", "/copied/f"]), "inside\n");
    let mut tarball = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_size(6);
    hd.set_mode(0o644);
    hd.set_cksum();
    tarball
        .append_data(&mut hd, "streamed.txt", &b"piped\n"[..])
        .unwrap();
    let bytes = tarball.into_inner().unwrap();
    let mut child = e
        .command(&["cp", "-", "box:/data"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        e.ok(&["exec", "box", "cat", "/data/streamed.txt"]),
        "piped\n"
    );

    // A stopped container: its overlay is mounted privately for the copy, and what was
    // copied in is there when it starts again.
    e.ok(&["stop", "-t", "1", "box"]);
    std::fs::write(h("while-stopped"), "written while stopped\n").unwrap();
    e.ok(&[
        "cp",
        &h("while-stopped").display().to_string(),
        "box:/data/",
    ]);
    e.ok(&[
        "cp",
        "box:/data/in.txt",
        &h("back.txt").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(h("back.txt")).unwrap(),
        "from the host\n"
    );
    assert_eq!(
        mounts_mentioning(&e.root().display().to_string()),
        Vec::<String>::new()
    );
    e.ok(&["start", "box"]);
    e.wait_for("box", 10, running);
    assert_eq!(
        e.ok(&["exec", "box", "cat", "/data/while-stopped"]),
        "written while stopped\n"
    );

    // Clear errors, exit 1.
    for (args, want) in [
        (
            vec!["cp", "box:/missing", "/tmp/"],
            "could not find /missing in container box",
        ),
        (vec!["cp", "nobox:/x", "/tmp/"], "nobox"),
        (
            vec!["cp", "/etc/hostname", "box:/no/such/dir/"],
            "does not exist",
        ),
        (
            vec!["cp", "/etc/hostname", "/tmp/x"],
            "at least one container",
        ),
    ] {
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

/// SECURITY-CHECKLIST 21: a container swapping a path component between a directory and a
/// symlink (to `/` and to `/tmp`) while `cp` runs in both directions: nothing is ever read
/// from or written to the host outside the container.
#[test]
fn cp_stays_inside_a_container_that_swaps_symlinks() {
    let Some(e) = Env::new() else { return };
    let tag = format!("kiln-cp-race-{}", std::process::id());
    // A host-only secret the container must never hand out, and a host path it must never
    // get written.
    let secret = PathBuf::from(format!("/tmp/{tag}-secret"));
    std::fs::write(&secret, "host secret\n").unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(secret.clone());
    let planted = PathBuf::from(format!("/tmp/{tag}-planted"));
    let _rm2 = Rm(planted.clone());
    e.ok(&[
        "run",
        "-d",
        "--name",
        "swapper",
        "busybox:local",
        "sh",
        "-c",
        "mkdir -p /w; while true; do rm -rf /w/x; mkdir -p /w/x; \
         echo decoy > /w/x/decoy; rm -rf /w/x; ln -s /tmp /w/x; rm -f /w/x; ln -s / /w/x; done",
    ]);
    e.wait_for("swapper", 10, running);
    let src = e.dir().join(format!("{tag}-planted"));
    std::fs::write(&src, "planted\n").unwrap();
    let out = e.dir().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for i in 0..40 {
        let o = e.run(&[
            "cp",
            &format!("swapper:/w/x/{tag}-secret"),
            &out.join(format!("got{i}")).display().to_string(),
        ]);
        if o.status.success() {
            let got = std::fs::read_to_string(out.join(format!("got{i}"))).unwrap();
            assert_ne!(
                got, "host secret\n",
                "the host's file came out of the container"
            );
        }
        let _ = e.run(&["cp", &src.display().to_string(), "swapper:/w/x/"]);
        let _ = e.run(&["cp", &src.display().to_string(), "swapper:/w/x/tmp/"]);
        assert!(
            !planted.exists(),
            "a copy into the container wrote to the host's /tmp"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret\n");
}

#[test]
fn commit_and_diff_a_running_container() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "src",
        "-e",
        "STAGE=dev",
        "busybox:local",
        "sh",
        "-c",
        "echo made > /root/made && rm /etc/group && echo x >> /etc/passwd && touch /ready && sleep 1000",
    ]);
    e.wait_for("src", 10, running);
    for _ in 0..100 {
        if e.run(&["exec", "src", "test", "-e", "/ready"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let diff = e.ok(&["diff", "src"]);
    for line in [
        "A /root/made",
        "D /etc/group",
        "C /etc/passwd",
        "C /etc",
        "A /ready",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} in\n{diff}");
    }
    let id = e.ok(&[
        "commit",
        "-a",
        "kiln tests",
        "-m",
        "snapshot",
        "-c",
        "CMD [\"cat\", \"/root/made\"]",
        "-c",
        "LABEL committed=yes",
        "src",
        "snap:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    // The container keeps running, not left paused.
    let v = e.inspect("src");
    assert_eq!(v["State"]["Status"], "running", "{v:#}");
    // The image has the changes, the container's env and the -c changes.
    assert_eq!(e.ok(&["run", "--rm", "snap:1"]), "made\n");
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "snap:1",
            "sh",
            "-c",
            "echo $STAGE; test -e /etc/group || echo gone"
        ]),
        "dev\ngone\n"
    );
    let img: serde_json::Value =
        serde_json::from_str(&e.ok(&["image", "inspect", "snap:1"])).unwrap();
    assert_eq!(img[0]["Author"], "kiln tests");
    assert_eq!(img[0]["Comment"], "snapshot");
    assert_eq!(img[0]["Config"]["Labels"]["committed"], "yes");
    let base: serde_json::Value =
        serde_json::from_str(&e.ok(&["image", "inspect", "busybox:local"])).unwrap();
    let layers = img[0]["RootFS"]["Layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        base[0]["RootFS"]["Layers"].as_array().unwrap().len() + 1
    );
    let history = e.ok(&["history", "snap:1"]);
    assert!(history.contains("snapshot"), "{history}");
    let o = e.run(&["commit", "nosuch", "x:1"]);
    assert_eq!(o.status.code(), Some(1));
    // ps -s: what the container wrote, and with its image.
    let ps = e.ok(&["ps", "-s"]);
    assert!(ps.lines().next().unwrap().ends_with("SIZE"), "{ps}");
    assert!(ps.contains("B (virtual 2."), "{ps}");
}

#[test]
fn export_writes_the_container_filesystem_without_its_mounts() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run", "-d", "--name", "ex", "-v", "vol:/data", "busybox:local", "sh", "-c",
        "echo mine > /root/mine && echo in-volume > /data/v && rm /etc/group && touch /ready && sleep 1000",
    ]);
    e.wait_for("ex", 10, running);
    for _ in 0..100 {
        if e.run(&["exec", "ex", "test", "-e", "/ready"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let names = |bytes: &[u8]| -> Vec<String> {
        tar::Archive::new(bytes)
            .entries()
            .unwrap()
            .map(|en| {
                let p = en.unwrap().path().unwrap().display().to_string();
                p.trim_end_matches('/').to_string()
            })
            .collect()
    };
    let o = e.run(&["export", "ex"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let running_names = names(&o.stdout);
    for want in ["root/mine", "bin/busybox", "proc", "data"] {
        assert!(running_names.iter().any(|n| n == want), "{want}");
    }
    for absent in ["etc/group", "data/v", "proc/1"] {
        assert!(
            !running_names.iter().any(|n| n.starts_with(absent)),
            "{absent}"
        );
    }
    // Stopped: the same files, from its overlay; -o writes a file.
    e.ok(&["stop", "-t", "1", "ex"]);
    let out = e.dir().join("ex.tar");
    e.ok(&["export", "-o", &out.display().to_string(), "ex"]);
    let stopped = names(&std::fs::read(&out).unwrap());
    assert!(stopped.iter().any(|n| n == "root/mine"));
    assert!(!stopped.iter().any(|n| n == "etc/group"));
    assert_eq!(
        mounts_mentioning(&e.root().display().to_string()),
        Vec::<String>::new()
    );
}
