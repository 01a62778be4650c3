//! Containers end to end: volumes and bind mounts, and the volume commands.
//! Every test removes its containers (`rm -f`) when it ends, even when it fails.

use std::path::PathBuf;

use super::containers::*;
use super::util::stderr;

#[test]
fn volumes_and_bind_mounts() {
    let Some(e) = Env::new() else { return };
    // A named volume outlives its container.
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "store1:/data",
        "busybox:local",
        "sh",
        "-c",
        "echo persisted > /data/f",
    ]);
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "-v",
            "store1:/data",
            "busybox:local",
            "cat",
            "/data/f"
        ])
        .trim(),
        "persisted"
    );
    assert!(e.root().join("volumes/store1/_data/f").is_file());

    // Bind mounts, read-only ones refusing writes.
    let host = e.dir().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from host").unwrap();
    let bind = format!("{}:/mnt", host.display());
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "-v",
            &bind,
            "busybox:local",
            "sh",
            "-c",
            "cat /mnt/in.txt; echo back > /mnt/out.txt"
        ]),
        "from host"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "back\n"
    );
    let ro = format!("{}:/mnt:ro", host.display());
    let o = e.run(&[
        "run",
        "--rm",
        "-v",
        &ro,
        "busybox:local",
        "sh",
        "-c",
        "echo x > /mnt/no.txt",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!host.join("no.txt").exists());
    let m = format!("type=bind,source={},target=/m,readonly", host.display());
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "--mount",
            &m,
            "busybox:local",
            "cat",
            "/m/in.txt"
        ]),
        "from host"
    );
    // A relative host path is not a volume name: since Docker 23 it is taken from the
    // current directory (made if missing, as any -v source), where it was refused before.
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "./rel:/x",
        "busybox:local",
        "touch",
        "/x/made",
    ]);
    assert!(e.dir().join("rel/made").exists());

    // inspect shows the mounts.
    e.ok(&[
        "create",
        "--name",
        "withvol",
        "-v",
        "store1:/data",
        "-v",
        &ro,
        "busybox:local",
    ]);
    let mounts = e.inspect("withvol")["Mounts"].clone();
    let mounts = mounts.as_array().expect("Mounts");
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(mounts.iter().any(|m| m["Type"] == "volume"
        && m["Name"] == "store1"
        && m["Destination"] == "/data"
        && m["RW"] == true));
    assert!(mounts
        .iter()
        .any(|m| m["Type"] == "bind" && m["Destination"] == "/mnt" && m["RW"] == false));
}

#[test]
fn volume_commands_create_list_inspect_remove_and_prune() {
    let Some(e) = Env::new() else { return };
    assert_eq!(e.ok(&["volume", "create", "data"]), "data\n");
    let ls = e.ok(&["volume", "ls"]);
    assert!(
        ls.starts_with("DRIVER    VOLUME NAME\n") && ls.contains("local     data\n"),
        "{ls}"
    );
    let v: serde_json::Value = serde_json::from_str(&e.ok(&["volume", "inspect", "data"])).unwrap();
    let mountpoint = PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    assert_eq!(v[0]["Driver"], "local");
    e.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "data:/data",
        "-v",
        "/anon",
        "busybox:local",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("f")).unwrap(),
        "kept\n"
    );
    // In use by a stopped container: refused, with the container named.
    let o = e.run(&["volume", "rm", "data"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("volume is in use"), "{}", stderr(&o));
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]),
        ""
    );
    e.ok(&["rm", "writer"]);
    let dangling = e.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.lines().count(), 2, "{dangling}");
    // prune: the anonymous one only; -a: the named one too.
    let pruned = e.ok(&["volume", "prune", "-f"]);
    assert!(
        pruned.contains("Deleted Volumes:") && !pruned.contains("data\n"),
        "{pruned}"
    );
    assert_eq!(e.ok(&["volume", "ls", "-q"]), "data\n");
    e.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(e.ok(&["volume", "ls", "-q"]), "");
    assert!(!mountpoint.exists());
    let o = e.run(&["volume", "rm", "data"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such volume"), "{}", stderr(&o));
    let o = e.run(&["volume", "create", "../escape"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!e.root().join("escape").exists());
}
