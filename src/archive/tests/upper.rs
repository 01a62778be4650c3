//! Committing overlay upper dirs (`upper_entries`, `write_upper`): hand-built uppers with every kind of whiteout, determinism, refusals, and a real overlay mount whose changes are committed and re-applied.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt};

use nix::sys::stat::{mknod, Mode, SFlag};

use super::roundtrip::headers;
use super::*;

fn needs_root() -> bool {
    crate::testutil::require(is_root(), "root")
}

fn whiteout_at(p: &Path) {
    mknod(p, SFlag::S_IFCHR, Mode::empty(), libc::makedev(0, 0)).unwrap();
}

fn set(p: &Path, k: &str, v: &[u8]) {
    assert!(
        set_xattr_nofollow(p, k, v),
        "setxattr {k} on {}",
        p.display()
    );
}

/// An upper dir as overlayfs leaves it, with both whiteout kinds and both
/// xattr namespaces. Creation order is reversed when `reverse`, so directory
/// order differs between two builds.
fn build_upper(up: &Path, reverse: bool) {
    let mut steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| fs::write(up.join("new"), "n").unwrap()),
        Box::new(|| whiteout_at(&up.join("gone"))),
        Box::new(|| {
            fs::create_dir(up.join("d")).unwrap();
            whiteout_at(&up.join("d/gone2"));
            fs::write(up.join("d/kept"), "k").unwrap();
            // Bookkeeping overlayfs sets on copied-up dirs: never in the layer.
            set(&up.join("d"), "trusted.overlay.impure", b"y");
        }),
        Box::new(|| {
            fs::create_dir(up.join("o")).unwrap();
            fs::write(up.join("o/new"), "o").unwrap();
            set(&up.join("o"), "trusted.overlay.opaque", b"y");
        }),
        Box::new(|| {
            // Linux 6.7 xattr whiteout; a non-empty file with the xattr is a file.
            fs::write(up.join("xw"), "").unwrap();
            set(&up.join("xw"), "trusted.overlay.whiteout", b"");
            fs::write(up.join("notxw"), "abc").unwrap();
            set(&up.join("notxw"), "trusted.overlay.whiteout", b"");
        }),
        Box::new(|| {
            // "x" only flags xattr whiteouts inside: not opaque.
            fs::create_dir(up.join("x")).unwrap();
            set(&up.join("x"), "trusted.overlay.opaque", b"x");
        }),
        Box::new(|| symlink("gone", up.join("l")).unwrap()),
    ];
    if user_xattrs_supported(up) {
        steps.push(Box::new(|| {
            fs::create_dir(up.join("u")).unwrap();
            set(&up.join("u"), "user.overlay.opaque", b"y");
        }));
    }
    if reverse {
        steps.reverse();
    }
    for s in steps {
        s();
    }
}

fn describe(e: &LayerEntry) -> String {
    match e {
        LayerEntry::Path { name, .. } => format!("path {}", String::from_utf8_lossy(name)),
        LayerEntry::Whiteout { name } => format!("whiteout {}", String::from_utf8_lossy(name)),
        LayerEntry::Opaque { dir } => format!("opaque {}", String::from_utf8_lossy(dir)),
    }
}

#[test]
fn hand_built_upper_lists_and_writes_oci_whiteouts() {
    if !needs_root() {
        return;
    }
    let up = tempfile::tempdir().unwrap();
    build_upper(up.path(), false);
    let user = up.path().join("u").exists();
    let mut got: Vec<String> = upper_entries(up.path())
        .unwrap()
        .iter()
        .map(describe)
        .collect();
    got.sort();
    let mut want = vec![
        "path d",
        "path d/kept",
        "path l",
        "path new",
        "path notxw",
        "path o",
        "path o/new",
        "path x",
        "opaque o",
        "whiteout d/gone2",
        "whiteout gone",
        "whiteout xw",
    ];
    if user {
        want.extend(["path u", "opaque u"]);
    }
    let mut want: Vec<String> = want.into_iter().map(String::from).collect();
    want.sort();
    assert_eq!(got, want);

    let (bytes, digest) = write_upper(up.path(), Vec::new(), WriterOptions::default()).unwrap();
    assert_eq!(digest.size, bytes.len() as u64);
    // The one-walk writer gives exactly what listing and sorting the entries gives.
    let mut w = LayerWriter::new(Vec::new(), WriterOptions::default());
    w.append_entries(upper_entries(up.path()).unwrap()).unwrap();
    assert_eq!(w.finish().unwrap().0, bytes);
    let hs: Vec<(char, String)> = headers(&bytes)
        .into_iter()
        .map(|(t, n)| (char::from(t), String::from_utf8(n).unwrap()))
        .collect();
    let mut want: Vec<(char, &str)> = vec![
        ('0', ".wh.gone"),
        ('0', ".wh.xw"),
        ('5', "d/"),
        ('0', "d/.wh.gone2"),
        ('0', "d/kept"),
        ('2', "l"),
        ('0', "new"),
        ('0', "notxw"),
        ('5', "o/"),
        ('0', "o/.wh..wh..opq"),
        ('0', "o/new"),
    ];
    if user {
        want.extend([('5', "u/"), ('0', "u/.wh..wh..opq")]);
    }
    want.push(('5', "x/"));
    let want: Vec<(char, String)> = want.into_iter().map(|(t, n)| (t, n.to_string())).collect();
    // Sorted, parents first, opaque markers first in their directory; no device
    // entries and no PAX headers (the only xattrs were overlay's own).
    assert_eq!(hs, want);
    assert!(
        !bytes.windows(8).any(|w| w == b"overlay."),
        "overlay xattrs leaked into the layer"
    );
}

#[test]
fn write_upper_is_deterministic() {
    if !needs_root() {
        return;
    }
    let opts = WriterOptions {
        clamp_mtime: Some(1_000_000),
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build_upper(a.path(), false);
    build_upper(b.path(), true);
    let (ta, da) = write_upper(a.path(), Vec::new(), opts).unwrap();
    let (ta2, da2) = write_upper(a.path(), Vec::new(), opts).unwrap();
    let (tb, db) = write_upper(b.path(), Vec::new(), opts).unwrap();
    assert_eq!(ta, ta2);
    assert_eq!(da, da2);
    assert_eq!(ta, tb, "same upper built in another order");
    assert_eq!(da.diff_id(), db.diff_id());
}

#[test]
fn redirect_and_metacopy_refused() {
    if !needs_root() {
        return;
    }
    for (kind, key) in [
        ("dir", "trusted.overlay.redirect"),
        ("file", "trusted.overlay.metacopy"),
        ("dir", "user.overlay.redirect"),
    ] {
        let up = tempfile::tempdir().unwrap();
        let p = up.path().join("renamed");
        if kind == "dir" {
            fs::create_dir(&p).unwrap();
        } else {
            fs::write(&p, "").unwrap();
        }
        if !set_xattr_nofollow(&p, key, b"/old") {
            crate::testutil::missing(&format!("{key} xattrs on the temp filesystem"));
            continue;
        }
        let r = upper_entries(up.path());
        assert!(
            matches!(r, Err(ArchiveError::UnsupportedOverlayUpper { .. })),
            "{key}: {r:?}"
        );
    }
}

#[test]
fn writer_refuses_whiteout_device_as_a_path() {
    if !needs_root() {
        return;
    }
    let up = tempfile::tempdir().unwrap();
    whiteout_at(&up.path().join("w"));
    let mut w = LayerWriter::new(Vec::new(), WriterOptions::default());
    let r = w.append_path(b"w", &up.path().join("w"));
    assert!(
        matches!(r, Err(ArchiveError::InvalidLayerName { .. })),
        "{r:?}"
    );
    let r = write_tree(up.path(), Vec::new(), WriterOptions::default());
    assert!(matches!(r, Err(ArchiveError::InvalidLayerName { .. })));
}

#[test]
fn upper_entries_never_follow_symlinks() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), "s").unwrap();
    let up = t.path().join("upper");
    fs::create_dir(&up).unwrap();
    symlink(&outside, up.join("s")).unwrap();
    let es = upper_entries(&up).unwrap();
    assert_eq!(es.iter().map(describe).collect::<Vec<_>>(), ["path s"]);
    let (bytes, _) = write_upper(&up, Vec::new(), WriterOptions::default()).unwrap();
    assert_eq!(headers(&bytes), vec![(b'2', b"s".to_vec())]);
}

#[test]
fn upper_with_reserved_name_refused() {
    // A step that made a file named `.wh.x` cannot be committed: every
    // extractor would read it as a whiteout.
    let up = tempfile::tempdir().unwrap();
    fs::write(up.path().join(".wh.x"), "").unwrap();
    let r = write_upper(up.path(), Vec::new(), WriterOptions::default());
    assert!(
        matches!(r, Err(ArchiveError::InvalidLayerName { .. })),
        "{r:?}"
    );
}

#[test]
fn committed_overlay_changes_reapply_to_the_merged_view() {
    if !can_mount_overlay() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = |n: &str| {
        let p = t.path().join(n);
        fs::create_dir(&p).unwrap();
        p
    };
    let (lower, upper, work, merged) = (dir("lower"), dir("upper"), dir("work"), dir("merged"));
    fs::write(lower.join("keep"), "k").unwrap();
    fs::create_dir(lower.join("a")).unwrap();
    fs::write(lower.join("a/x"), "x").unwrap();
    fs::write(lower.join("a/y"), "y").unwrap();
    fs::create_dir_all(lower.join("d/old")).unwrap();
    fs::write(lower.join("d/old/deep"), "deep").unwrap();
    fs::write(lower.join("d/f"), "f").unwrap();
    fs::create_dir(lower.join("e")).unwrap();
    fs::write(lower.join("e/1"), "1").unwrap();
    fs::write(lower.join("gone"), "g").unwrap();

    let view = in_private_mount_ns(|| {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let m = Mounted::overlay(&merged, &opts);
        let at = |p: &str| merged.join(p);
        fs::remove_file(at("a/x")).unwrap();
        fs::remove_file(at("gone")).unwrap();
        // A directory made where a lower one was deleted comes out opaque.
        fs::remove_dir_all(at("d")).unwrap();
        fs::create_dir(at("d")).unwrap();
        fs::write(at("d/new"), "new").unwrap();
        fs::remove_file(at("e/1")).unwrap();
        fs::remove_dir(at("e")).unwrap();
        fs::create_dir(at("e")).unwrap();
        // Copy-up of a changed file, new files and links.
        fs::OpenOptions::new()
            .append(true)
            .open(at("keep"))
            .unwrap()
            .write_all(b"2")
            .unwrap();
        fs::write(at("n"), "n").unwrap();
        symlink("a/y", at("s")).unwrap();
        fs::hard_link(at("n"), at("n2")).unwrap();
        let view = tree_view(&merged);
        drop(m);
        view
    });
    assert!(!view.contains_key(Path::new("a/x")) && !view.contains_key(Path::new("d/f")));
    // The test exercises what it means to.
    assert!(is_whiteout(&upper.join("a/x")) && is_whiteout(&upper.join("gone")));
    assert!(is_opaque(&upper.join("d")) && is_opaque(&upper.join("e")));

    let (layer, digest) = write_upper(&upper, Vec::new(), WriterOptions::default()).unwrap();
    let names: Vec<Vec<u8>> = headers(&layer).into_iter().map(|h| h.1).collect();
    for n in [
        &b".wh.gone"[..],
        b"a/.wh.x",
        b"d/.wh..wh..opq",
        b"e/.wh..wh..opq",
    ] {
        assert!(
            names.iter().any(|x| x == n),
            "{} missing",
            String::from_utf8_lossy(n)
        );
    }

    // A copy of the lower dir, with the layer applied on top.
    let applied = dir("applied");
    let (base, _) = write_tree(&lower, Vec::new(), WriterOptions::default()).unwrap();
    extract(&base[..], &applied, &ExtractOptions::default()).unwrap();
    let st = extract(&layer[..], &applied, &ExtractOptions::default()).unwrap();
    assert_eq!(st.stream_sha256, digest.sha256);
    assert_eq!(
        tree_view(&applied),
        view,
        "applied layer differs from the merged view"
    );

    // And as snapshots: each layer extracted in overlay format, stacked.
    let (s1, s2, m2) = (dir("s1"), dir("s2"), dir("m2"));
    let overlay = ExtractOptions {
        whiteouts: WhiteoutMode::Overlay,
        ..ExtractOptions::default()
    };
    extract(&base[..], &s1, &overlay).unwrap();
    extract(&layer[..], &s2, &overlay).unwrap();
    let stacked = in_private_mount_ns(|| {
        let opts = format!("lowerdir={}:{}", s2.display(), s1.display());
        let _m = Mounted::overlay(&m2, &opts);
        tree_view(&m2)
    });
    assert_eq!(
        stacked, view,
        "stacked snapshots differ from the merged view"
    );
    assert_eq!(fs::metadata(upper.join("n")).unwrap().nlink(), 2);
}

// The walk keeps only the first levels' directories open: deeper ones are looked up by
// path, with the same result.
#[test]
fn deep_uppers_are_written_whole() {
    let up = tempfile::tempdir().unwrap();
    let mut dir = up.path().to_path_buf();
    for i in 0..100 {
        dir.push(format!("d{i}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("f"), format!("{i}")).unwrap();
    }
    symlink("f", dir.join("l")).unwrap();
    let (bytes, _) = write_upper(up.path(), Vec::new(), WriterOptions::default()).unwrap();
    let mut w = LayerWriter::new(Vec::new(), WriterOptions::default());
    w.append_entries(upper_entries(up.path()).unwrap()).unwrap();
    assert_eq!(w.finish().unwrap().0, bytes);
    let out = tempfile::tempdir().unwrap();
    extract(&bytes[..], out.path(), &ExtractOptions::default()).unwrap();
    let deepest = out.path().join(dir.strip_prefix(up.path()).unwrap());
    assert_eq!(fs::read_to_string(deepest.join("f")).unwrap(), "99");
    assert_eq!(fs::read_link(deepest.join("l")).unwrap(), Path::new("f"));
}

/// What overlayfs copied up but the step did not change is left out, as BuildKit's differ
/// does: `RUN ln /bin/busybox /x` re-added /bin/busybox (as the file, with /x a hard link to
/// it); an opaque marker over nothing below was written; a symlink in the base is never
/// followed to compare.
#[test]
fn write_upper_over_leaves_out_unchanged_copy_ups() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let (base, up) = (t.path().join("base"), t.path().join("upper"));
    for d in [&base, &up] {
        fs::create_dir_all(d.join("bin")).unwrap();
    }
    let same_times = |from: &Path, to: &Path| {
        let m = fs::metadata(from).unwrap().modified().unwrap();
        fs::File::options()
            .write(true)
            .open(to)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(m))
            .unwrap();
    };
    fs::write(base.join("bin/busybox"), "busybox binary").unwrap();
    fs::copy(base.join("bin/busybox"), up.join("bin/busybox")).unwrap();
    same_times(&base.join("bin/busybox"), &up.join("bin/busybox"));
    fs::hard_link(up.join("bin/busybox"), up.join("x")).unwrap();
    // Same bytes, another mode: changed.
    fs::write(base.join("chmodded"), "c").unwrap();
    fs::write(up.join("chmodded"), "c").unwrap();
    same_times(&base.join("chmodded"), &up.join("chmodded"));
    fs::set_permissions(up.join("chmodded"), fs::Permissions::from_mode(0o600)).unwrap();
    // Opaque over nothing, and over something.
    fs::create_dir(up.join("o")).unwrap();
    fs::create_dir_all(base.join("p/old")).unwrap();
    fs::create_dir(up.join("p")).unwrap();
    if is_root() {
        set(&up.join("o"), "trusted.overlay.opaque", b"y");
        set(&up.join("p"), "trusted.overlay.opaque", b"y");
    }
    // The base's `lnk` is a symlink to a directory holding an equal file: never followed.
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("f"), "f").unwrap();
    symlink(&outside, base.join("lnk")).unwrap();
    fs::create_dir(up.join("lnk")).unwrap();
    fs::write(up.join("lnk/f"), "f").unwrap();
    same_times(&outside.join("f"), &up.join("lnk/f"));

    let (bytes, _) =
        crate::archive::write_upper_over(&up, Some(&base), Vec::new(), WriterOptions::default())
            .unwrap();
    let names: Vec<(u8, String)> = headers(&bytes)
        .into_iter()
        .map(|(t, n)| (t, String::from_utf8(n).unwrap()))
        .collect();
    let has = |n: &str| names.iter().any(|(_, x)| x == n);
    assert!(!has("bin/busybox"), "{names:?}");
    assert!(names.contains(&(b'0', "x".to_string())), "{names:?}");
    assert!(has("chmodded") && has("lnk/f"), "{names:?}");
    if is_root() {
        assert!(!has("o/.wh..wh..opq"), "{names:?}");
        assert!(has("p/.wh..wh..opq"), "{names:?}");
    }
    // Without a base everything is written, as before.
    let (all, _) = write_upper(&up, Vec::new(), WriterOptions::default()).unwrap();
    let all: Vec<Vec<u8>> = headers(&all).into_iter().map(|(_, n)| n).collect();
    assert!(all.contains(&b"bin/busybox".to_vec()));
}
