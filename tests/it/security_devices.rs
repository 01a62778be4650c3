//! A device node made with mknod inside a sandbox never opens a host device (issue 15,
//! item 2): every mount kiln makes in a RUN step or a container is `nodev`, a RUN step
//! cannot make block devices at all (seccomp, as BuildKit's device cgroup refuses them), and
//! a container gets Docker's device cgroup where the host has the v1 `devices` controller.
//!
//! The probe only ever READS a few bytes of a host disk (to /dev/null), never writes one.

use std::fs;
use std::path::Path;

use crate::build_cmd::write;
use crate::containers::Env;
use crate::util::{stderr, stdout, TestStore};

/// A block device this host lets root open (so a refusal inside the sandbox is the
/// sandbox's doing): the first of `/proc/partitions` (the root disk on a VM), else loop0.
/// Opening one only reads nothing; the probe reads a few bytes and never writes.
fn host_block_device() -> (u32, u32) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let text = fs::read_to_string("/proc/partitions").unwrap_or_default();
    let names = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .chain(["loop0".to_string()]);
    for name in names {
        let path = Path::new("/dev").join(&name);
        let is_block = fs::metadata(&path).is_ok_and(|m| m.file_type().is_block_device());
        if is_block && fs::File::open(&path).is_ok() {
            let rdev = fs::metadata(&path).map(|m| m.rdev()).unwrap_or_default();
            return (libc::major(rdev), libc::minor(rdev));
        }
    }
    (7, 0)
}

/// For each directory argument: mknod a host block device and a `/dev/null` twin there, try
/// to open both, say what happened, remove them; then print the sandbox's mount table.
fn probe_script() -> String {
    let (major, minor) = host_block_device();
    format!(
        r#"for d in "$@"; do
  if mknod "$d/hd" b {major} {minor} 2>/dev/null; then echo "$d mknod-b made"; else echo "$d mknod-b refused"; fi
  if out=$(head -c 512 "$d/hd" 2>&1 >/dev/null); then echo "$d OPENED-hd"; else echo "$d hd-refused: $out"; fi
  if mknod "$d/null" c 1 3 2>/dev/null; then echo "$d mknod-c made"; else echo "$d mknod-c refused"; fi
  if out=$(head -c 1 "$d/null" 2>&1 >/dev/null); then echo "$d OPENED-null"; else echo "$d null-refused: $out"; fi
  rm -f "$d/hd" "$d/null"
done
echo MOUNTINFO
cat /proc/self/mountinfo
"#
    )
}

/// The mount points and options of a mountinfo dump: `(mount point, per-mount options,
/// fs type, root within the fs)`.
fn mounts(dump: &str) -> Vec<(String, Vec<String>, String, String)> {
    let after = dump.split("MOUNTINFO\n").nth(1).unwrap_or_default();
    after
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split_whitespace().collect();
            let fstype = right.split_whitespace().next()?.to_string();
            Some((
                f.get(4)?.to_string(),
                f.get(5)?.split(',').map(str::to_string).collect(),
                fstype,
                f.get(3)?.to_string(),
            ))
        })
        .collect()
}

/// Asserts nothing opened, each probed dir is its own `nodev` mount, and so is every other
/// mount of the sandbox but the host's device nodes bound in (`/dev/null`, …, and the
/// `/dev/null` masking `/proc` files) and the sandbox's own devpts.
fn check(what: &str, out: &str, dirs: &[&str]) {
    assert!(!out.contains("OPENED"), "{what}: a device opened:\n{out}");
    let table = mounts(out);
    assert!(!table.is_empty(), "{what}: no mount table:\n{out}");
    for d in dirs {
        assert!(
            out.contains(&format!("{d} hd-refused: ")),
            "{what}: {d} not probed:\n{out}"
        );
        let m = table
            .iter()
            .find(|m| m.0 == *d)
            .unwrap_or_else(|| panic!("{what}: {d} is not a mount:\n{out}"));
        assert!(m.1.iter().any(|o| o == "nodev"), "{what}: {d}: {m:?}");
    }
    for m in &table {
        let host_node = m.2 == "devtmpfs"
            && ["/null", "/zero", "/full", "/random", "/urandom", "/tty"].contains(&m.3.as_str());
        if host_node || m.2 == "devpts" {
            continue;
        }
        assert!(
            m.1.iter().any(|o| o == "nodev"),
            "{what}: a mount without nodev: {m:?}\n{out}"
        );
    }
}

/// A RUN step mknods a host disk on each kind of `RUN --mount` it can write (tmpfs, cache,
/// an rw bind of the context, an rw bind from a stage) and reads it.
/// Broke: those mounts were plain binds without `nodev`, and mknod of a block device was
/// allowed, so `head -c 16 /t/hd` printed the host's disk.
#[test]
fn run_mounts_cannot_open_a_host_block_device() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "probe.sh", &probe_script());
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local AS src\n\
         RUN mkdir /d\n\
         FROM busybox:local\n\
         RUN --mount=type=tmpfs,target=/t1 --mount=type=cache,target=/t2 \
             --mount=type=bind,target=/t3,rw --mount=type=bind,from=src,source=/d,target=/t4,rw \
             sh /t3/probe.sh /t1 /t2 /t3 /t4 > /probe.txt 2>&1\n",
    );
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "dev:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let files = s.unpack("dev:1");
    let out = fs::read_to_string(files.join("probe.txt")).expect("probe output");
    check("RUN", &out, &["/t1", "/t2", "/t3", "/t4"]);
    for d in ["/t1", "/t2", "/t3", "/t4"] {
        // As BuildKit's device cgroup: a block device cannot even be made.
        assert!(out.contains(&format!("{d} mknod-b refused")), "{out}");
        // /dev/null's numbers can be (Docker's list), but not opened outside /dev.
        assert!(out.contains(&format!("{d} mknod-c made")), "{out}");
        assert!(
            out.contains(&format!("{d} null-refused: ")) && out.contains("Permission denied"),
            "{out}"
        );
    }
    // Nothing was left in the persistent cache.
    let cache = s.root().join("cache/mounts-v1");
    for e in fs::read_dir(&cache).expect("cache dir").flatten() {
        if e.path().is_dir() {
            assert_eq!(fs::read_dir(e.path()).expect("cache").count(), 0);
        }
    }
}

/// `kiln run` with a host directory, a named volume, an anonymous volume and a tmpfs: the
/// container mknods a host disk on each and reads it.
/// Broke: volumes were plain binds without `nodev` and there was no device cgroup, so the
/// container read (and `dd` could write) the host's disk.
#[test]
fn container_volumes_cannot_open_a_host_block_device() {
    let Some(e) = Env::new() else { return };
    let host = tempfile::tempdir().expect("host dir");
    let bind = format!("{}:/e1", host.path().display());
    let script = probe_script();
    let args = [
        "run",
        "--rm",
        "-v",
        &bind,
        "-v",
        "devvol:/e2",
        "-v",
        "/e3",
        "--tmpfs",
        "/e4",
        "busybox:local",
        "sh",
        "-c",
        &script,
        "sh",
        "/e1",
        "/e2",
        "/e3",
        "/e4",
    ];
    let o = e.run(&args);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    check("run", &out, &["/e1", "/e2", "/e3", "/e4"]);
    for d in ["/e1", "/e2", "/e3", "/e4"] {
        // As docker run: the node can be made, not opened.
        assert!(out.contains(&format!("{d} mknod-b made")), "{out}");
    }
    assert_eq!(fs::read_dir(host.path()).expect("host dir").count(), 0);
}

/// The container's device cgroup is Docker's default list where the host has the v1
/// `devices` controller (this test's host does when `/sys/fs/cgroup/devices` exists).
/// Broke: containers had no device cgroup at all.
#[test]
fn container_gets_dockers_device_cgroup() {
    let Some(e) = Env::new() else { return };
    let devices = Path::new("/sys/fs/cgroup/devices");
    if !devices.join("devices.list").is_file() {
        println!("no v1 devices controller on this host: nodev and seccomp cover it");
        return;
    }
    let id = e
        .ok(&["run", "-d", "busybox:local", "sleep", "60"])
        .trim()
        .to_string();
    let list =
        fs::read_to_string(devices.join("kiln").join(&id).join("devices.list")).unwrap_or_default();
    let _ = e.run(&["rm", "-f", &id]);
    let mut got: Vec<&str> = list.lines().collect();
    got.sort_unstable();
    let mut want = vec![
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:8 rwm",
        "c 1:7 rwm",
        "c 5:0 rwm",
        "c 1:5 rwm",
        "c 1:9 rwm",
        "c 5:1 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    ];
    want.sort_unstable();
    assert_eq!(got, want, "{list}");
}
