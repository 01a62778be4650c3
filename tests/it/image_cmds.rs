//! The image commands as users run them: import, images, inspect, history,
//! tag, rmi, prune, save, load and system check, each against a private store.

use std::fs;
use std::io::Write;

use serde_json::Value;

use crate::util::{busybox_rootfs, stderr, stdout, Kiln};

/// The cells of a table line: columns are padded with at least 3 spaces,
/// and no cell here holds two spaces in a row.
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Docker's human sizes: `2.12MB`, `512kB`, `0B`.
fn is_human_size(s: &str) -> bool {
    let num = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[num.len()..];
    !num.is_empty() && num.parse::<f64>().is_ok() && ["B", "kB", "MB", "GB"].contains(&unit)
}

#[test]
fn import_then_list_inspect_and_history() {
    let k = Kiln::new();
    let id = k.import_busybox(
        "it/bb:1",
        &["-c", "CMD [\"sh\"]", "-c", "ENV A=1", "-c", "LABEL x=y"],
    );

    // Docker's default columns.
    let out = k.ok(&["images"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        cells(lines[0]),
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    );
    assert!(
        lines[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{out}"
    );
    let row = cells(lines[1]);
    assert_eq!(row[..3], ["it/bb", "1", &id[7..19]], "{out}");
    assert!(row[3].ends_with("ago"), "{out}");
    assert!(is_human_size(&row[4]), "{out}");
    // `image ls` and `image list` are the same command.
    assert_eq!(k.ok(&["image", "ls"]), out);
    assert_eq!(k.ok(&["image", "list"]), out);

    assert_eq!(k.ok(&["images", "-q"]), format!("{}\n", &id[7..19]));
    assert_eq!(k.ok(&["images", "-q", "--no-trunc"]), format!("{id}\n"));
    assert_eq!(
        k.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]),
        format!("it/bb:1 {}\n", &id[7..19])
    );
    assert_eq!(
        k.ok(&["images", "--format", "table {{.Repository}}\\t{{.Tag}}"]),
        "REPOSITORY   TAG\nit/bb        1\n"
    );
    let json: Value = serde_json::from_str(k.ok(&["images", "--format", "json"]).trim()).unwrap();
    assert_eq!(json["Repository"], "it/bb");
    assert_eq!(json["Tag"], "1");
    assert_eq!(json["Containers"], "N/A");
    assert!(json["CreatedAt"].as_str().unwrap().ends_with("+0000 UTC"));

    let doc = k.inspect("it/bb:1");
    assert_eq!(doc["Id"], id.as_str());
    assert_eq!(doc["RepoTags"], serde_json::json!(["it/bb:1"]));
    assert_eq!(doc["Comment"], "Imported from -");
    assert_eq!(doc["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(doc["Config"]["Env"], serde_json::json!(["A=1"]));
    assert_eq!(doc["Config"]["Labels"], serde_json::json!({"x": "y"}));
    assert_eq!(doc["Config"]["Entrypoint"], Value::Null);
    assert_eq!(doc["Os"], "linux");
    assert!(doc["Architecture"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(doc["RootFS"]["Type"], "layers");
    assert_eq!(doc["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(doc["Size"].as_u64().unwrap() > 1_000_000);
    // The manifest digest, as `--digests` shows it.
    let repo_digest = doc["RepoDigests"][0].as_str().unwrap().to_owned();
    let manifest = repo_digest.strip_prefix("it/bb@").unwrap();
    let out = k.ok(&["images", "--digests"]);
    assert_eq!(
        cells(out.lines().next().unwrap()),
        ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
    );
    assert_eq!(cells(out.lines().nth(1).unwrap())[2], manifest);

    // By ID prefix, with a template, and a missing image.
    assert_eq!(
        k.ok(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{json .Config.Cmd}}",
            &id[7..15]
        ]),
        format!("{id} [\"sh\"]\n")
    );
    let o = k.run(&["image", "inspect", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "[]\n");
    assert_eq!(stderr(&o), "Error: no such image: nope:latest\n");

    let out = k.ok(&["history", "it/bb:1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        cells(lines[0]),
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    );
    let row = cells(lines[1]);
    assert_eq!(row[0], &id[7..19]);
    assert_eq!(row.last().unwrap(), "Imported from -");
    assert_eq!(
        k.ok(&["image", "history", "-q", "it/bb:1"]),
        format!("{}\n", &id[7..19])
    );
    let h: Value = serde_json::from_str(
        k.ok(&[
            "history",
            "--no-trunc",
            "--human=false",
            "--format",
            "{{json .}}",
            "it/bb:1",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(h["ID"], id.as_str());
    assert!(h["Size"].as_str().unwrap().parse::<u64>().unwrap() > 1_000_000);
    assert!(h["CreatedSince"].as_str().unwrap().ends_with('Z'));
    assert_eq!(k.ok(&["system", "check"]).lines().count(), 1);
}

#[test]
fn import_is_deterministic_and_reads_compressed_stdin() {
    let k = Kiln::new();
    let tar = fs::read(busybox_rootfs(&k.path(""))).unwrap();
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let a = k.run_env(
        &[
            "import",
            busybox_rootfs(&k.path("")).to_str().unwrap(),
            "it/a:1",
        ],
        &epoch,
    );
    assert!(a.status.success(), "{}", stderr(&a));
    // The same rootfs gzip-compressed on stdin: the same layer and, with the
    // same SOURCE_DATE_EPOCH, the same image.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let dir = k.path("");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(["import", "-", "it/b:1"])
        .current_dir(&dir)
        .env("KILN_ROOT", k.root())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    let b = child.wait_with_output().unwrap();
    assert!(b.status.success());
    assert_eq!(stdout(&a), stdout(&b));
    let doc = k.inspect("it/a:1");
    assert_eq!(doc["Created"], "2023-11-14T22:13:20Z");
    // One image with two tags, one layer and one snapshot.
    assert_eq!(k.ok(&["images", "-q"]).lines().count(), 2);
    let snapshots = fs::read_dir(k.root().join("snapshots")).unwrap().count();
    assert_eq!(snapshots, 1);
    let layer = doc["RootFS"]["Layers"][0].as_str().unwrap();
    let snap = k.root().join("snapshots").join(&layer[7..]).join("fs");
    assert!(snap.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(snap.join("bin/sh")).unwrap(),
        std::path::PathBuf::from("busybox")
    );
}

#[test]
fn import_refuses_bad_input() {
    let k = Kiln::new();
    let err = k.fails(&["import", "missing.tar"]);
    assert!(err.starts_with("Error: open missing.tar:"), "{err}");
    let err = k.fails(&["import", "https://example.com/rootfs.tar"]);
    assert!(err.contains("not supported"), "{err}");
    let tar = busybox_rootfs(&k.path(""));
    let tar = tar.to_str().unwrap();
    let err = k.fails(&["import", "-c", "RUN true", tar]);
    assert!(err.contains("RUN is not a valid change command"), "{err}");
    let err = k.fails(&["import", tar, &format!("it/x@sha256:{}", "a".repeat(64))]);
    assert!(err.contains("digest"), "{err}");
    // A whiteout has nothing to delete in a rootfs.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    b.append_data(&mut h, "etc/.wh.passwd", std::io::empty())
        .unwrap();
    fs::write(k.path("wh.tar"), b.into_inner().unwrap()).unwrap();
    let err = k.fails(&["import", "wh.tar"]);
    assert!(err.contains("whiteout"), "{err}");
    // Nothing half-imported stays behind.
    assert_eq!(k.ok(&["images", "-q"]), "");
    assert_eq!(fs::read_dir(k.root().join("snapshots")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(k.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn filters_and_order() {
    let k = Kiln::new();
    let tar = busybox_rootfs(&k.path(""));
    let tar = tar.to_str().unwrap();
    let import = |epoch: &str, args: &[&str]| -> String {
        let mut all = vec!["import"];
        all.extend_from_slice(args);
        all.insert(1, tar);
        // `import FILE [REPO]`: the file goes before the name.
        let o = k.run_env(&all, &[("SOURCE_DATE_EPOCH", epoch)]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim()[7..19].to_owned()
    };
    let old = import("1000", &["it/old:1", "-c", "LABEL tier=old"]);
    let mid = import("2000", &["it/mid:1", "-c", "LABEL tier=mid"]);
    let new = import("3000", &[]);
    let q = |filters: &[&str]| -> Vec<String> {
        let mut args = vec!["images", "-q"];
        args.extend_from_slice(filters);
        k.ok(&args).lines().map(str::to_owned).collect()
    };
    let (old, mid, new) = (old.as_str(), mid.as_str(), new.as_str());
    assert_eq!(q(&[]), [new, mid, old], "newest first");
    assert_eq!(q(&["--filter", "dangling=true"]), [new]);
    assert_eq!(q(&["-f", "dangling=false"]), [mid, old]);
    assert_eq!(q(&["--filter", "before=it/mid:1"]), [old]);
    assert_eq!(q(&["--filter", &format!("since={old}")]), [new, mid]);
    assert_eq!(q(&["--filter", "label=tier"]), [mid, old]);
    assert_eq!(q(&["--filter", "label=tier=old"]), [old]);
    assert_eq!(q(&["--filter", "reference=it/m*"]), [mid]);
    assert_eq!(
        q(&["--filter", "reference=it/*:1", "--filter", "label=tier=mid"]),
        [mid]
    );
    assert_eq!(q(&["it/old"]), [old]);
    assert!(q(&["it/old:2"]).is_empty());
    let out = k.ok(&["images", "--filter", "dangling=true"]);
    assert_eq!(
        cells(out.lines().nth(1).unwrap())[..3],
        ["<none>", "<none>", new]
    );
    let err = k.fails(&["images", "--filter", "bogus=1"]);
    assert_eq!(err, "Error: invalid filter 'bogus=1': unknown filter\n");
    let err = k.fails(&["images", "--filter", "dangling=maybe"]);
    assert!(err.contains("invalid filter 'dangling=maybe'"), "{err}");
    let err = k.fails(&["images", "--filter", "reference=["]);
    assert!(err.contains("syntax error in pattern"), "{err}");
    let err = k.fails(&["images", "--filter", "before=nope"]);
    assert_eq!(err, "Error: no such image: nope:latest\n");
}

#[test]
fn tag_rmi_and_shared_layers() {
    let k = Kiln::new();
    let a = k.import_busybox("it/a:1", &["-c", "CMD [\"sh\"]"]);
    let b = k.import_busybox("it/b:1", &["-m", "second"]);
    assert_ne!(a, b);
    // Both images share the busybox layer.
    assert_eq!(k.inspect("it/a:1")["RootFS"], k.inspect("it/b:1")["RootFS"]);

    assert_eq!(k.ok(&["tag", "it/a:1", "it/a:2"]), "");
    assert_eq!(k.ok(&["image", "tag", &a[7..17], "it/other"]), "");
    assert_eq!(k.inspect("it/other:latest")["Id"], a.as_str());
    let err = k.fails(&["tag", "it/a:1", &format!("it/a@sha256:{}", "b".repeat(64))]);
    assert_eq!(
        err,
        "Error: refusing to create a tag with a digest reference\n"
    );
    let err = k.fails(&["tag", "nope", "it/x:1"]);
    assert_eq!(err, "Error: no such image: nope:latest\n");

    assert_eq!(k.ok(&["rmi", "it/a:2"]), "Untagged: it/a:2\n");
    let err = k.fails(&["rmi", &a[7..19]]);
    assert_eq!(
        err,
        format!(
            "Error: conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories\n",
            &a[7..19]
        )
    );
    // Forced: all names go, the image goes, the shared layer stays.
    let out = k.ok(&["image", "rm", "-f", &a[7..19]]);
    assert_eq!(
        out,
        format!("Untagged: it/a:1\nUntagged: it/other:latest\nDeleted: {a}\n")
    );
    assert!(k.ok(&["system", "check"]).contains("consistent"));
    let layer = k.inspect("it/b:1")["RootFS"]["Layers"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(k
        .root()
        .join("oci/blobs/sha256")
        .join(&layer[7..])
        .is_file());

    let o = k.run(&["rmi", "nope", "it/b:1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "Error: no such image: nope:latest\n");
    // The last image takes its layer and snapshot along.
    assert_eq!(
        stdout(&o),
        format!("Untagged: it/b:1\nDeleted: {b}\nDeleted: {layer}\n")
    );
    assert_eq!(k.run(&["rmi", "-f", "nope"]).status.code(), Some(0));
    assert_eq!(
        fs::read_dir(k.root().join("oci/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(fs::read_dir(k.root().join("snapshots")).unwrap().count(), 0);
}

#[test]
fn prune_dangling_then_all() {
    let k = Kiln::new();
    let kept = k.import_busybox("it/kept:1", &[]);
    let d1 = k.import_busybox("", &["-m", "one"]);
    let d2 = k.import_busybox("", &["-m", "two"]);
    // Without -f it asks; anything but y keeps everything.
    let o = k.run_stdin(&["image", "prune"], b"n\n");
    assert!(o.status.success());
    assert!(stderr(&o).contains("WARNING! This will remove all dangling images."));
    assert_eq!(k.ok(&["images", "-q"]).lines().count(), 3);

    let out = k.ok(&["image", "prune", "-f"]);
    let mut deleted: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("deleted: "))
        .collect();
    deleted.sort();
    let mut want = vec![d1.as_str(), d2.as_str()];
    want.sort();
    assert_eq!(deleted, want, "{out}");
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    let total = out.lines().last().unwrap();
    let size = total.strip_prefix("Total reclaimed space: ").unwrap();
    assert!(is_human_size(size) && size != "0B", "{out}");
    assert_eq!(
        k.ok(&["image", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );

    let o = k.run_stdin(&["image", "prune", "-a"], b"y\n");
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!(
            "Deleted Images:\nuntagged: it/kept:1\ndeleted: {kept}\n\nTotal reclaimed space: "
        )),
        "{out}"
    );
    assert!(out.trim_end().ends_with("MB"), "{out}");
    assert_eq!(k.ok(&["images"]).lines().count(), 1);
    assert_eq!(
        fs::read_dir(k.root().join("oci/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn save_and_load_round_trip() {
    let k = Kiln::new();
    let id = k.import_busybox("it/bb:1", &["-c", "ENTRYPOINT [\"/bin/sh\"]"]);
    k.ok(&["tag", "it/bb:1", "localhost:5000/it/bb:2"]);
    let untagged = k.import_busybox("", &["-m", "untagged"]);
    let archive = k.path("bb.tar");
    assert_eq!(
        k.ok(&[
            "save",
            "-o",
            archive.to_str().unwrap(),
            "it/bb:1",
            "localhost:5000/it/bb:2"
        ]),
        ""
    );
    // Saving to a pipe gives the same bytes: the archive is deterministic.
    let piped = k.run(&["image", "save", "it/bb:1", "localhost:5000/it/bb:2"]);
    assert!(piped.status.success());
    assert_eq!(piped.stdout, fs::read(&archive).unwrap());

    // Both formats in one tar.
    let names: Vec<String> = tar::Archive::new(fs::File::open(&archive).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for want in ["manifest.json", "index.json", "oci-layout", "blobs/sha256/"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }

    let k2 = Kiln::new();
    let out = k2.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        out,
        "Loaded image: it/bb:1\nLoaded image: localhost:5000/it/bb:2\n"
    );
    assert_eq!(k2.inspect("it/bb:1")["Id"], id.as_str());
    assert_eq!(
        k2.inspect("localhost:5000/it/bb:2")["Config"]["Entrypoint"],
        serde_json::json!(["/bin/sh"])
    );
    assert!(k2.ok(&["system", "check"]).contains("consistent"));

    // By ID: no name; from standard input, gzip-compressed as a whole.
    let by_id = k.run(&["save", &untagged[7..19]]);
    assert!(by_id.status.success());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&by_id.stdout).unwrap();
    let o = k2.run_stdin(&["image", "load", "-q"], &gz.finish().unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("Loaded image ID: {untagged}\n"));

    // Loading again moves nothing and repeats the names.
    let out = k2.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        out,
        "Loaded image: it/bb:1\nLoaded image: localhost:5000/it/bb:2\n"
    );
    // A tag moved from another image is reported as Docker does.
    k2.ok(&["tag", &untagged, "it/bb:1"]);
    let out = k2.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        out.starts_with(&format!(
            "The image it/bb:1 already exists, renaming the old one with ID {untagged} to empty string\n"
        )),
        "{out}"
    );

    // A bare repository name saves all its tags.
    let all = k.run(&["save", "it/bb"]);
    assert!(all.status.success());
    let k3 = Kiln::new();
    let o = k3.run_stdin(&["load"], &all.stdout);
    assert_eq!(stdout(&o), "Loaded image: it/bb:1\n");

    let err = k.fails(&["save", "-o", archive.to_str().unwrap(), "nope"]);
    assert_eq!(err, "Error: no such image: nope:latest\n");
    // The failed save left the earlier file alone.
    assert_eq!(piped.stdout, fs::read(&archive).unwrap());
}

#[test]
fn load_refuses_broken_archives() {
    let k = Kiln::new();
    k.import_busybox("it/bb:1", &[]);
    let good = k.run(&["save", "it/bb:1"]).stdout;
    let k2 = Kiln::new();

    // Truncated.
    let o = k2.run_stdin(&["load"], &good[..good.len() / 2]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("Error: invalid image archive:"),
        "{}",
        stderr(&o)
    );

    // Not an archive at all.
    let o = k2.run_stdin(&["load"], b"hello, this is not a tar archive at all................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad checksum"), "{}", stderr(&o));

    // A layer whose content is not its config's diffID.
    let mut src = tar::Archive::new(&good[..]);
    let mut b = tar::Builder::new(Vec::new());
    let mut layer_name = String::new();
    let manifest: Value = {
        let mut a = tar::Archive::new(&good[..]);
        let mut m = None;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("manifest.json") {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                m = Some(serde_json::from_str(&s).unwrap());
            }
        }
        m.unwrap()
    };
    layer_name.push_str(manifest[0]["Layers"][0].as_str().unwrap());
    for e in src.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if path == layer_name.trim_end_matches('/') {
            // Same size, one byte changed inside a file's data.
            let at = data.len() / 2;
            data[at] ^= 0xff;
        }
        let mut h = e.header().clone();
        b.append_data(&mut h, &path, &data[..]).unwrap();
    }
    let tampered = b.into_inner().unwrap();
    let o = k2.run_stdin(&["load"], &tampered);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not match its digest"),
        "{}",
        stderr(&o)
    );
    assert_eq!(k2.ok(&["images", "-q"]), "");
    assert!(k2.ok(&["system", "check"]).contains("consistent"));
}

#[test]
fn system_check_reports_corruption() {
    let k = Kiln::new();
    let id = k.import_busybox("it/bb:1", &[]);
    assert!(k.ok(&["system", "check"]).contains("consistent"));
    let config = k.root().join("oci/blobs/sha256").join(&id[7..]);
    let mut perms = fs::metadata(&config).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(&config, perms).unwrap();
    fs::write(&config, b"{}").unwrap();
    let o = k.run(&["system", "check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("is corrupt"), "{}", stdout(&o));
    assert!(
        stderr(&o).starts_with("Error: 1 problem found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn version_and_info_describe_kiln_and_the_store() {
    let k = Kiln::new();
    assert_eq!(
        k.ok(&["version", "--format", "{{.Client.Version}}"]),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );
    let before: serde_json::Value =
        serde_json::from_str(&k.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(before["Images"], 0);
    assert_eq!(before["Containers"], 0);
    k.import_busybox("busybox:local", &[]);
    let after: serde_json::Value =
        serde_json::from_str(&k.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(after["Images"], 1);
    assert_eq!(after["Driver"], "overlay");
    assert!(after["NCPU"].as_u64().unwrap() >= 1);
    let text = k.ok(&["info"]);
    assert!(
        text.contains("Images: 1\n") && text.contains("Storage Driver: overlay"),
        "{text}"
    );
}

#[test]
fn image_prune_filters_by_age_and_label() {
    let k = Kiln::new();
    k.import_busybox("keep:1", &["--change", "LABEL keep=yes"]);
    k.import_busybox("drop:1", &["--change", "LABEL tier=tmp"]);
    let names = |k: &Kiln| k.ok(&["images", "--format", "{{.Repository}}"]);
    // Nothing was created before 2000.
    k.ok(&[
        "image",
        "prune",
        "-a",
        "-f",
        "--filter",
        "until=2000-01-01T00:00:00Z",
    ]);
    assert_eq!(names(&k).lines().count(), 2);
    // label!=keep: only the unlabelled one goes.
    let out = k.ok(&["image", "prune", "-a", "-f", "--filter", "label!=keep"]);
    assert!(out.contains("untagged: drop:1"), "{out}");
    assert_eq!(names(&k), "keep\n");
    // until=<duration>: images older than that.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    k.ok(&[
        "image",
        "prune",
        "-a",
        "-f",
        "--filter",
        "until=1s",
        "--filter",
        "label=keep=yes",
    ]);
    assert_eq!(names(&k), "");
    let o = k.run(&["image", "prune", "-f", "--filter", "colour=red"]);
    assert_eq!(o.status.code(), Some(1));
}

/// Library warnings went nowhere (no tracing subscriber was installed): an imported tar's
/// device node was skipped without a word. They are printed on standard error now, and
/// `KILN_LOG` chooses what is shown.
#[test]
fn library_warnings_reach_standard_error() {
    let k = crate::util::Kiln::new();
    let tar = k.path("dev.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar).unwrap());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_size(0);
    h.set_cksum();
    b.append_data(&mut h, "dev/null2", std::io::empty())
        .unwrap();
    b.into_inner().unwrap();
    let tar = tar.to_str().unwrap();
    let o = k.run(&["image", "import", tar, "dev:1"]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    let err = crate::util::stderr(&o);
    assert!(
        err.contains("WARN") && err.contains("skipping device node path=dev/null2"),
        "{err}"
    );
    let quiet = k.run_env(&["image", "import", tar, "dev:2"], &[("KILN_LOG", "off")]);
    assert!(quiet.status.success());
    assert_eq!(crate::util::stderr(&quiet), "");
}
