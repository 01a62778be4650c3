//! Overlay-format extraction (`WhiteoutMode::Overlay`): whiteouts as 0/0 devices and opaque xattrs, the hostile whiteout cases confined as in Apply mode, and snapshots mounted with overlayfs for real.
//!
//! Hostile cases run through `Sb::run_with`, which asserts that nothing beside
//! the root changed (an xattr set on a host marker changes its ctime, which the
//! harness compares); `no_opaque_outside` checks the xattr itself as well.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

use super::E::{D, F, L, R, S};
use super::*;

macro_rules! assert_err {
    ($r:expr, $pat:pat) => {{
        let r = $r;
        assert!(
            matches!(r, Err($pat)),
            "expected {}, got {:?}",
            stringify!($pat),
            r
        );
    }};
}

fn overlay() -> ExtractOptions {
    ExtractOptions {
        whiteouts: WhiteoutMode::Overlay,
        ..ExtractOptions::default()
    }
}

fn ok(r: Result<ExtractStats, ArchiveError>) -> ExtractStats {
    match r {
        Ok(s) => s,
        Err(e) => panic!("extraction failed: {e}"),
    }
}

/// Whiteouts are devices and opaque markers `trusted.*` xattrs: both need root.
fn needs_root() -> bool {
    crate::testutil::require(is_root(), "root")
}

/// No host marker beside the root (nor the sandbox itself) was made opaque.
fn no_opaque_outside(sb: &Sb) {
    for m in ["", "etc", "victim", "markerdir", "file"] {
        let p = sb.top.join(m);
        assert!(
            get_xattr_nofollow(&p, "trusted.overlay.opaque").is_none(),
            "{} made opaque",
            p.display()
        );
    }
}

/// Path inside the root of a host path that a symlink named absolutely: it
/// resolves there, never on the host.
fn rebased(sb: &Sb, host_rel: &str, rest: &str) -> PathBuf {
    sb.r(&format!("{}/{rest}", sb.host(host_rel)))
}

// ---- the format ------------------------------------------------------------

#[test]
fn whiteout_becomes_0_0_char_device_owned_as_entry_says() {
    if !needs_root() {
        return;
    }
    let sb = sandbox();
    let mut gone = H::new(".wh.gone", b'0');
    gone.uid = 1000;
    gone.gid = 1001;
    let t = tar(&[D("a"), F("a/keep", "k"), R(gone), F("a/.wh.x", "")]);
    let st = ok(sb.run_with(&t, &overlay()));
    assert_eq!(st.whiteouts, 2);
    assert!(!st.opaque_root);
    for p in ["gone", "a/x"] {
        assert!(is_whiteout(&sb.r(p)), "{p} is not a whiteout");
    }
    let md = sb.lmeta("gone");
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    assert_eq!(md.mode() & 0o7777, 0, "mode 0, as overlayfs makes them");
    assert_eq!(sb.read("a/keep"), b"k");
    assert!(!sb.exists(".wh.gone") && !sb.exists("a/.wh.x"));
}

#[test]
fn opaque_marker_becomes_xattr_on_its_directory() {
    if !needs_root() {
        return;
    }
    let sb = sandbox();
    let t = tar(&[
        D("b"),
        F("b/.wh..wh..opq", ""),
        F("b/z", "z"),
        // No entry for the directory itself: created as a parent would be.
        F("missing/.wh..wh..opq", ""),
    ]);
    let st = ok(sb.run_with(&t, &overlay()));
    assert_eq!(st.whiteouts, 2);
    assert!(!st.opaque_root);
    assert!(is_opaque(&sb.r("b")));
    assert_eq!(sb.read("b/z"), b"z");
    assert!(sb.lmeta("missing").is_dir());
    assert_eq!(sb.lmeta("missing").mode() & 0o7777, 0o755);
    assert!(is_opaque(&sb.r("missing")));
    assert!(!sb.exists("b/.wh..wh..opq"));
    assert!(!is_opaque(&sb.root));
}

#[test]
fn opaque_root_is_reported() {
    if !needs_root() {
        return;
    }
    // Overlayfs ignores the opaque xattr on a lower dir's root (checked for real
    // in `mounted_snapshots_show_the_applied_tree`), so the caller must know.
    for t in [
        tar(&[F(".wh..wh..opq", "")]),
        tar(&[S("up", "/"), F("up/.wh..wh..opq", "")]),
    ] {
        let sb = sandbox();
        let st = ok(sb.run_with(&t, &overlay()));
        assert!(st.opaque_root);
        assert!(is_opaque(&sb.root));
        no_opaque_outside(&sb);
    }
    let sb = sandbox();
    fs::write(sb.r("lower"), "l").unwrap();
    let st = ok(sb.run(&tar(&[F("./.wh..wh..opq", "")])));
    assert!(st.opaque_root, "reported in Apply mode too");
    assert!(!sb.exists("lower"));
}

#[test]
fn whiteout_parent_is_created() {
    if !needs_root() {
        return;
    }
    let sb = sandbox();
    ok(sb.run_with(&tar(&[F("etc/.wh.passwd", "")]), &overlay()));
    assert_eq!(sb.lmeta("etc").mode() & 0o7777, 0o755);
    assert!(is_whiteout(&sb.r("etc/passwd")));
}

#[test]
fn whiteout_of_same_layer_path_ignored() {
    if !needs_root() {
        return;
    }
    let sb = sandbox();
    let st = ok(sb.run_with(&tar(&[F("f", "new"), F(".wh.f", "")]), &overlay()));
    assert_eq!(st.whiteouts, 0);
    assert_eq!(sb.read("f"), b"new");
}

#[test]
fn directory_replacing_non_directory_is_opaque() {
    if !needs_root() {
        return;
    }
    // Applied, `.wh.d` and file `e` would have deleted lower directories d and e
    // before the layer's own d and e were made: their lower content stays hidden.
    let sb = sandbox();
    let t = tar(&[
        F(".wh.d", ""),
        D("d"),
        F("d/n", "n"),
        F("e", "file"),
        D("e"),
        D("plain"),
    ]);
    ok(sb.run_with(&t, &overlay()));
    assert!(sb.lmeta("d").is_dir() && is_opaque(&sb.r("d")));
    assert_eq!(sb.read("d/n"), b"n");
    assert!(sb.lmeta("e").is_dir() && is_opaque(&sb.r("e")));
    assert!(!is_opaque(&sb.r("plain")));
}

#[test]
fn hardlink_to_whiteout_refused() {
    if !needs_root() {
        return;
    }
    let sb = sandbox();
    assert_err!(
        sb.run_with(&tar(&[F(".wh.x", ""), L("y", "x")]), &overlay()),
        ArchiveError::InvalidLinkTarget { .. }
    );
    assert!(!sb.exists("y"));
}

#[test]
fn overlay_xattrs_in_archive_never_set() {
    if !needs_root() {
        return;
    }
    // A layer must not redirect, hide or metacopy other layers' files through its
    // snapshot; in Apply mode such xattrs are meaningless host state.
    for mode in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
        let sb = sandbox();
        let mut d = H::new("d/", b'5');
        d.mode = 0o755;
        d.pax = vec![
            (
                b"SCHILY.xattr.trusted.overlay.opaque".to_vec(),
                b"y".to_vec(),
            ),
            (
                b"SCHILY.xattr.trusted.overlay.redirect".to_vec(),
                b"/etc".to_vec(),
            ),
            (b"SCHILY.xattr.user.overlay.opaque".to_vec(), b"y".to_vec()),
        ];
        let mut f = H::new("f", b'0');
        f.pax = vec![(
            b"SCHILY.xattr.trusted.overlay.whiteout".to_vec(),
            b"".to_vec(),
        )];
        let opts = ExtractOptions {
            whiteouts: mode,
            ..ExtractOptions::default()
        };
        ok(sb.run_with(&tar(&[R(d), R(f)]), &opts));
        for (p, k) in [
            ("d", "trusted.overlay.opaque"),
            ("d", "trusted.overlay.redirect"),
            ("d", "user.overlay.opaque"),
            ("f", "trusted.overlay.whiteout"),
        ] {
            assert!(
                get_xattr_nofollow(&sb.r(p), k).is_none(),
                "{mode:?}: {p} {k}"
            );
        }
    }
}

#[test]
fn refuse_mode_refuses_opaque_markers() {
    let sb = sandbox();
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Refuse,
        ..ExtractOptions::default()
    };
    assert_err!(
        sb.run_with(&tar(&[D("d"), F("d/.wh..wh..opq", "")]), &opts),
        ArchiveError::WhiteoutNotAllowed { .. }
    );
}

#[test]
fn unprivileged_opaque_marker_is_a_clear_error() {
    if !needs_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("snap");
    fs::create_dir(&root).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    let nogroup = nix::unistd::Gid::from_raw(65534);
    nix::unistd::chown(&root, Some(nobody), Some(nogroup)).unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let opaque = tar(&[D("d"), F("d/.wh..wh..opq", "")]);
    let whiteout = tar(&[F(".wh.x", "")]);
    // The raw setresuid changes this thread's credentials only (glibc's wrapper
    // would change every thread's), and they end with it.
    let (opaque_r, whiteout_r) = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscall with integer arguments.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(r, 0, "setresuid");
            (
                extract(&opaque[..], &root, &overlay()),
                extract(&whiteout[..], &root, &overlay()),
            )
        })
        .join()
        .unwrap()
    });
    match opaque_r {
        Err(e @ ArchiveError::OverlayNeedsPrivilege { what, .. }) => {
            assert_eq!(what, "opaque directory");
            assert!(e.to_string().contains("without root"), "{e}");
        }
        r => panic!("expected OverlayNeedsPrivilege, got {r:?}"),
    }
    // Linux 5.8+ lets anyone make a whiteout device; older kernels refuse clearly.
    match whiteout_r {
        Ok(_) => assert!(is_whiteout(&root.join("x"))),
        Err(ArchiveError::OverlayNeedsPrivilege { what, .. }) => assert_eq!(what, "whiteout"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

// ---- hostile whiteouts in Overlay mode ---------------------------------------

#[test]
fn hostile_invalid_whiteout_names() {
    // Refused before anything is resolved or created, so no root needed.
    for name in [
        ".wh..",
        ".wh...",
        "etc/.wh..",
        "etc/.wh...",
        ".wh.",
        "etc/.wh.",
    ] {
        let sb = sandbox();
        assert_err!(
            sb.run_with(&tar(&[F(name, "")]), &overlay()),
            ArchiveError::InvalidWhiteout { .. }
        );
        assert!(!sb.exists("etc"), "{name}: nothing created");
    }
}

#[test]
fn hostile_whiteout_relative_path() {
    let sb = sandbox();
    let t = tar(&[S("localetc", "/dne"), F("dne/../.wh.etc", "")]);
    assert_err!(sb.run_with(&t, &overlay()), ArchiveError::UnsafePath { .. });
}

#[test]
fn hostile_whiteout_under_symlink_loop() {
    let sb = sandbox();
    let t = tar(&[S("a", "b"), S("b", "a"), F("a/.wh.x", "")]);
    assert_err!(
        sb.run_with(&t, &overlay()),
        ArchiveError::TooManySymlinks { .. }
    );
}

#[test]
fn hostile_whiteout_under_file() {
    let sb = sandbox();
    let t = tar(&[F("f", "x"), F("f/.wh.y", "")]);
    assert_err!(
        sb.run_with(&t, &overlay()),
        ArchiveError::NotADirectory { .. }
    );
}

#[test]
fn hostile_whiteout_through_absolute_symlink() {
    if !needs_root() {
        return;
    }
    // containerd TestBreakouts "whiteout symlink path", in one layer.
    let sb = sandbox();
    let t = tar(&[
        S("hostetc", &sb.host("etc")),
        F("hostetc/.wh.passwd", ""),
        D("etc"),
        F("etc/whitedout", "same layer"),
        S("localetc", "/etc"),
        F("localetc/.wh.other", ""),
    ]);
    ok(sb.run_with(&t, &overlay()));
    assert!(is_whiteout(&rebased(&sb, "etc", "passwd")));
    assert!(is_whiteout(&sb.r("etc/other")));
    assert_eq!(sb.read("etc/whitedout"), b"same layer");
    assert!(sb.lmeta("hostetc").file_type().is_symlink());
}

#[test]
fn hostile_whiteout_under_symlinked_parent_to_host() {
    if !needs_root() {
        return;
    }
    let sb = sandbox();
    let t = tar(&[
        S("lnk", "../victim"),
        S("abs", &sb.host("victim")),
        F("lnk/.wh.hello", ""),
        F("abs/.wh.hello", ""),
        F("abs/.wh..wh..opq", ""),
    ]);
    ok(sb.run_with(&t, &overlay()));
    assert!(is_whiteout(&sb.r("victim/hello")));
    assert!(is_whiteout(&rebased(&sb, "victim", "hello")));
    assert!(is_opaque(&sb.r(&sb.host("victim"))));
    no_opaque_outside(&sb);
}

#[test]
fn hostile_whiteout_dead_symlink_parent() {
    if !needs_root() {
        return;
    }
    let sb = sandbox();
    let t = tar(&[S("localetc", "/dne"), F("localetc/.wh.etc", "")]);
    ok(sb.run_with(&t, &overlay()));
    assert!(is_whiteout(&sb.r("dne/etc")));
}

#[test]
fn hostile_whiteout_replaces_symlink_without_following() {
    if !needs_root() {
        return;
    }
    // Symlinks left in the root (which should be empty) are replaced, never
    // written through: neither host dir nor host file is touched.
    let sb = sandbox();
    symlink(sb.host("victim"), sb.r("v")).unwrap();
    symlink(sb.host("file"), sb.r("f")).unwrap();
    symlink("../victim/hello", sb.r("rel")).unwrap();
    let st = ok(sb.run_with(
        &tar(&[F(".wh.v", ""), F(".wh.f", ""), F(".wh.rel", "")]),
        &overlay(),
    ));
    assert_eq!(st.whiteouts, 3);
    for p in ["v", "f", "rel"] {
        assert!(is_whiteout(&sb.r(p)), "{p}");
    }
}

#[test]
fn hostile_opaque_through_symlink_is_confined() {
    if !needs_root() {
        return;
    }
    let sb = sandbox();
    let t = tar(&[S("v", "../../victim"), F("v/.wh..wh..opq", "")]);
    let st = ok(sb.run_with(&t, &overlay()));
    assert!(!st.opaque_root);
    assert!(sb.lmeta("victim").is_dir());
    assert!(is_opaque(&sb.r("victim")));
    no_opaque_outside(&sb);
}

#[test]
fn hostile_opaque_through_symlink_to_host_file() {
    if !needs_root() {
        return;
    }
    // Absolute, to the host's file: rebased, that path is missing and is created
    // as a directory inside the root.
    let sb = sandbox();
    let t = tar(&[S("v", &sb.host("file")), F("v/.wh..wh..opq", "")]);
    ok(sb.run_with(&t, &overlay()));
    assert!(is_opaque(&sb.r(&sb.host("file"))));
    no_opaque_outside(&sb);
}

// ---- round trips -------------------------------------------------------------

/// A layer like a build step's commit: `a/x` deleted, `b` replaced by a
/// directory holding only `z`.
fn whiteout_layer() -> Vec<u8> {
    let up = tempfile::tempdir().unwrap();
    fs::create_dir(up.path().join("a")).unwrap();
    fs::create_dir(up.path().join("b")).unwrap();
    fs::write(up.path().join("b/z"), "z").unwrap();
    let p = |n: &str| LayerEntry::Path {
        name: n.as_bytes().to_vec(),
        source: up.path().join(n),
    };
    let entries = vec![
        p("b/z"),
        LayerEntry::Whiteout {
            name: b"a/x".to_vec(),
        },
        LayerEntry::Opaque { dir: b"b".to_vec() },
        p("a"),
        p("b"),
    ];
    let mut w = LayerWriter::new(Vec::new(), WriterOptions::default());
    w.append_entries(entries).unwrap();
    w.finish().unwrap().0
}

/// The layer below it: `a/x`, `b/y`, `keep`.
fn base_layer() -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("a")).unwrap();
    fs::write(src.path().join("a/x"), "x").unwrap();
    fs::create_dir(src.path().join("b")).unwrap();
    fs::write(src.path().join("b/y"), "y").unwrap();
    fs::write(src.path().join("keep"), "k").unwrap();
    write_tree(src.path(), Vec::new(), WriterOptions::default())
        .unwrap()
        .0
}

#[test]
fn entry_list_layer_extracts_to_overlay_format() {
    if !needs_root() {
        return;
    }
    let snap = tempfile::tempdir().unwrap();
    let st = extract(&whiteout_layer()[..], snap.path(), &overlay()).unwrap();
    assert_eq!(st.whiteouts, 2);
    let s = snap.path();
    let md = fs::symlink_metadata(s.join("a/x")).unwrap();
    assert!(is_whiteout(&s.join("a/x")));
    assert_eq!((md.uid(), md.gid(), md.rdev()), (0, 0, 0));
    assert!(is_opaque(&s.join("b")));
    assert!(!is_opaque(&s.join("a")));
    assert_eq!(fs::read(s.join("b/z")).unwrap(), b"z");
    let names: Vec<PathBuf> = tree_view(s).into_keys().collect();
    assert_eq!(
        names,
        ["a", "a/x", "b", "b/z"].map(PathBuf::from),
        "no .wh. names in a snapshot"
    );
}

#[test]
fn mounted_snapshots_show_the_applied_tree() {
    if !can_mount_overlay() {
        return;
    }
    let base = base_layer();
    let top = whiteout_layer();
    let t = tempfile::tempdir().unwrap();
    let dir = |n: &str| {
        let p = t.path().join(n);
        fs::create_dir(&p).unwrap();
        p
    };
    let (l1, l2, merged, applied) = (dir("l1"), dir("l2"), dir("merged"), dir("applied"));
    extract(&base[..], &l1, &overlay()).unwrap();
    extract(&top[..], &l2, &overlay()).unwrap();
    // The reference: both layers applied into one tree.
    extract(&base[..], &applied, &ExtractOptions::default()).unwrap();
    extract(&top[..], &applied, &ExtractOptions::default()).unwrap();
    let want = tree_view(&applied);

    // A layer whose root is opaque, to see overlayfs ignore that on a lower root.
    let l3 = dir("l3");
    let st = extract(
        &tar(&[F(".wh..wh..opq", ""), F("new", "n")])[..],
        &l3,
        &overlay(),
    )
    .unwrap();
    assert!(st.opaque_root && is_opaque(&l3));

    let (seen, root_opaque_view) = in_private_mount_ns(|| {
        let lower = format!("lowerdir={}:{}", l2.display(), l1.display());
        let m = Mounted::overlay(&merged, &lower);
        let seen = tree_view(&merged);
        drop(m);
        let lower = format!("lowerdir={}:{}", l3.display(), l1.display());
        let m = Mounted::overlay(&merged, &lower);
        let root_opaque_view = tree_view(&merged);
        drop(m);
        (seen, root_opaque_view)
    });
    assert!(!seen.contains_key(Path::new("a/x")), "a/x whited out");
    assert!(!seen.contains_key(Path::new("b/y")), "b opaque");
    assert!(seen.contains_key(Path::new("b/z")));
    assert!(seen.contains_key(Path::new("keep")));
    assert_eq!(
        seen, want,
        "merged overlay view differs from the applied tree"
    );
    assert!(
        root_opaque_view.contains_key(Path::new("keep")),
        "overlayfs now honours an opaque lower root: ExtractStats::opaque_root's advice is outdated"
    );
    assert!(tree_view(&merged).is_empty(), "unmounted");
}
