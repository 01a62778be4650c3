//! Hostile tars against the extractor. Every test runs through `Sb::run`, which
//! asserts that nothing beside the extraction root changed (marker files keep
//! bytes, mode, inode, link count and ctime; nothing appears or vanishes).
//!
//! Cases follow containerd `pkg/archive/tar_test.go` (TestBreakouts), moby
//! `pkg/archive/archive_test.go` (TestUntarInvalid*), umoci
//! `oci/layer/tar_extract_test.go` and kiln's own review of hostile inputs. Where those
//! projects point absolute symlinks at `/etc`, these tests point them at the
//! sandbox's own `etc` beside the root, so a broken extractor damages the sandbox
//! (and fails) instead of the host.

use std::fs;
use std::io::{Read, Write};
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

fn ok(r: Result<ExtractStats, ArchiveError>) -> ExtractStats {
    match r {
        Ok(s) => s,
        Err(e) => panic!("extraction failed: {e}"),
    }
}

/// Puts `inside` at root/etc/passwd, like containerd's tests' lower layer.
fn lower_etc(sb: &Sb, content: &str) {
    fs::create_dir_all(sb.r("etc")).unwrap();
    fs::write(sb.r("etc/passwd"), content).unwrap();
}

// ---- containerd TestBreakouts ---------------------------------------------

/// ADD of a local tar into `/y/` where the image has `/y -> /host/dir` (absolute or
/// relative): the destination used to be joined onto the root's host path, so the tar
/// landed on the host. It is resolved inside the root now.
#[test]
fn extract_under_a_symlinked_destination_stays_in_the_root() {
    let sb = sandbox();
    symlink(sb.host("victim"), sb.r("y")).unwrap();
    symlink(
        format!("{}{}", "../".repeat(30), sb.host("victim")),
        sb.r("z"),
    )
    .unwrap();
    let t = tar(&[F("hello", "image"), F("sub/new", "new")]);
    for dest in ["y", "/y/", "z/deeper", "y/./x"] {
        ok(sb.confined(|| {
            crate::archive::extract_under(t.as_slice(), &sb.root, dest, &Default::default())
        }));
    }
    let inside = sb.host("victim");
    assert_eq!(sb.read(&format!("{inside}/hello")), b"image");
    assert_eq!(sb.read(&format!("{inside}/deeper/sub/new")), b"new");
    assert_eq!(sb.read(&format!("{inside}/x/hello")), b"image");
}

#[test]
fn containerd_symlink_absolute() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        S("localetc", &sb.host("etc")),
        F("/localetc/unbroken", "unbroken"),
    ]);
    ok(sb.run(&t));
    // The absolute target resolves inside the root.
    assert_eq!(
        sb.read(&format!("{}/unbroken", sb.host("etc"))),
        b"unbroken"
    );
}

#[test]
fn containerd_symlink_up_and_out() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        D("dummy"),
        S("localetc", "/dummy/../../etc"),
        F("/localetc/unbroken", "unbroken"),
    ]);
    ok(sb.run(&t));
    assert_eq!(sb.read("etc/unbroken"), b"unbroken");
}

#[test]
fn containerd_symlink_multiple_absolute() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        D("dummy"),
        S("/dummy/etc", &sb.host("etc")),
        S("localetc", "/dummy/etc"),
        F("/dummy/etc/unbroken", "unbroken"),
    ]);
    ok(sb.run(&t));
    assert_eq!(
        sb.read(&format!("{}/unbroken", sb.host("etc"))),
        b"unbroken"
    );
}

#[test]
fn containerd_symlink_multiple_relative() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        D("dummy"),
        S("/dummy/etc", &sb.host("etc")),
        S("localetc", "./dummy/etc"),
        F("/localetc/unbroken", "unbroken"),
    ]);
    ok(sb.run(&t));
    assert_eq!(
        sb.read(&format!("{}/unbroken", sb.host("etc"))),
        b"unbroken"
    );
}

#[test]
fn containerd_symlink_empty_file() {
    let sb = sandbox();
    // Would truncate the host's etc/passwd if the symlink were followed.
    let t = tar(&[
        D("etc"),
        F("etc/passwd", "notempty"),
        S("localetc", &sb.host("etc")),
        F("/localetc/passwd", ""),
    ]);
    ok(sb.run(&t));
    assert_eq!(sb.read("etc/passwd"), b"notempty");
    assert_eq!(sb.read(&format!("{}/passwd", sb.host("etc"))), b"");
}

#[test]
fn containerd_hardlink_relative() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        D("breakouts"),
        S("breakouts/d1", "../../etc"),
        L("breakouts/mypasswd", "/breakouts/d1/passwd"),
    ]);
    ok(sb.run(&t));
    assert!(sb.same_inode("breakouts/mypasswd", "etc/passwd"));
}

#[test]
fn containerd_hardlink_down_and_out() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        D("breakouts"),
        D("downandout"),
        S("breakouts/d1", "../downandout/../../etc"),
        L("breakouts/mypasswd", "/breakouts/d1/passwd"),
    ]);
    ok(sb.run(&t));
    assert!(sb.same_inode("breakouts/mypasswd", "etc/passwd"));
}

#[test]
fn containerd_hardlink_absolute() {
    let sb = sandbox();
    // localetc points at the host's etc by absolute path: inside the root that
    // path does not exist, so the link has no target.
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        S("localetc", &sb.host("etc")),
        L("localpasswd", "/localetc/passwd"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
    assert!(!sb.exists("localpasswd"));
}

#[test]
fn containerd_hardlink_relative_long() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        S("localetc", "../../../../../../../etc"),
        L("localpasswd", "/localetc/passwd"),
    ]);
    ok(sb.run(&t));
    assert!(sb.same_inode("localpasswd", "etc/passwd"));
}

#[test]
fn containerd_hardlink_relative_up_and_out() {
    let sb = sandbox();
    // `upandout` does not exist, so `upandout/..` does not resolve (as in the kernel).
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        S("localetc", "upandout/../../../etc"),
        L("localpasswd", "/localetc/passwd"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn containerd_hardlink_direct_relative() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        L("localpasswd", "../../../../../etc/passwd"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn containerd_hardlink_direct_absolute() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        L("localpasswd", "/etc/passwd"),
    ]);
    ok(sb.run(&t));
    assert!(sb.same_inode("localpasswd", "etc/passwd"));
    assert_eq!(sb.read("localpasswd"), b"inside");
}

#[test]
fn containerd_symlink_parent_directory() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        S("..", "/etc/"),
        L("localpasswd", "/etc/passwd"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::UnsafePath { .. });
}

#[test]
fn containerd_symlink_empty_filename() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        S("", "/etc/"),
        L("localpasswd", "/etc/passwd"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::RootTypeChange { .. });
}

#[test]
fn containerd_symlink_parent_relative() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        S("localetc/sub/..", "/etc/"),
        L("/localetc/localpasswd", "/etc/passwd"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::UnsafePath { .. });
}

#[test]
fn containerd_symlink_slash_ended() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        D("localetc/"),
        L("/localetc/localpasswd", "/etc/passwd"),
    ]);
    ok(sb.run(&t));
    assert!(sb.same_inode("localetc/localpasswd", "etc/passwd"));
}

#[test]
fn containerd_symlink_override_directory() {
    let sb = sandbox();
    lower_etc(&sb, "inside");
    fs::create_dir(sb.r("localetc")).unwrap();
    let t = tar(&[
        S("localetc", &sb.host("etc")),
        L("/localetc/localpasswd", "/etc/passwd"),
    ]);
    ok(sb.run(&t));
    assert!(sb.lmeta("localetc").file_type().is_symlink());
    assert!(sb.same_inode(&format!("{}/localpasswd", sb.host("etc")), "etc/passwd"));
}

#[test]
fn containerd_symlink_override_directory_relative() {
    let sb = sandbox();
    lower_etc(&sb, "inside");
    fs::create_dir(sb.r("localetc")).unwrap();
    let t = tar(&[
        S("localetc", "../../etc"),
        L("/localetc/localpasswd", "/etc/passwd"),
    ]);
    ok(sb.run(&t));
    assert!(sb.same_inode("etc/localpasswd", "etc/passwd"));
}

#[test]
fn containerd_directory_override_symlink() {
    let sb = sandbox();
    lower_etc(&sb, "inside");
    symlink(sb.host("etc"), sb.r("localetc")).unwrap();
    let t = tar(&[D("/localetc/"), L("/localetc/localpasswd", "/etc/passwd")]);
    ok(sb.run(&t));
    assert!(sb.lmeta("localetc").is_dir());
    assert!(sb.same_inode("localetc/localpasswd", "etc/passwd"));
}

#[test]
fn containerd_directory_override_symlink_and_hardlink() {
    let sb = sandbox();
    lower_etc(&sb, "inside");
    symlink("etc", sb.r("localetc")).unwrap();
    fs::hard_link(sb.r("etc/passwd"), sb.r("etc/localpasswd")).unwrap();
    let t = tar(&[D("/localetc/"), F("/localetc/localpasswd", "different")]);
    ok(sb.run(&t));
    assert!(!sb.same_inode("localetc/localpasswd", "etc/passwd"));
    assert_eq!(sb.read("etc/passwd"), b"inside");
    assert_eq!(sb.read("localetc/localpasswd"), b"different");
}

#[test]
fn containerd_whiteout_root_parent() {
    let sb = sandbox();
    lower_etc(&sb, "inside");
    assert_err!(
        sb.run(&tar(&[F(".wh...", "")])),
        ArchiveError::InvalidWhiteout { .. }
    );
    assert_eq!(sb.read("etc/passwd"), b"inside");
}

#[test]
fn containerd_whiteout_parent() {
    let sb = sandbox();
    lower_etc(&sb, "inside");
    assert_err!(
        sb.run(&tar(&[F("etc/.wh...", "")])),
        ArchiveError::InvalidWhiteout { .. }
    );
    assert_eq!(sb.read("etc/passwd"), b"inside");
}

#[test]
fn containerd_whiteout_root() {
    let sb = sandbox();
    lower_etc(&sb, "inside");
    assert_err!(
        sb.run(&tar(&[F(".wh..", "")])),
        ArchiveError::InvalidWhiteout { .. }
    );
    assert_eq!(sb.read("etc/passwd"), b"inside");
}

#[test]
fn containerd_whiteout_current_directory() {
    let sb = sandbox();
    lower_etc(&sb, "inside");
    assert_err!(
        sb.run(&tar(&[F("etc/.wh..", "")])),
        ArchiveError::InvalidWhiteout { .. }
    );
    assert_eq!(sb.read("etc/passwd"), b"inside");
}

#[test]
fn containerd_whiteout_symlink() {
    let sb = sandbox();
    lower_etc(&sb, "all users");
    symlink(sb.host("etc"), sb.r("localetc")).unwrap();
    ok(sb.run(&tar(&[F(".wh.localetc", "")])));
    assert!(!sb.exists("localetc"));
    assert_eq!(sb.read("etc/passwd"), b"all users");
}

#[test]
fn containerd_whiteout_symlink_path() {
    let sb = sandbox();
    lower_etc(&sb, "all users");
    fs::write(sb.r("etc/whitedout"), "ahhhh whiteout").unwrap();
    // To the host's etc by absolute path: confined, that path is missing: no-op.
    symlink(sb.host("etc"), sb.r("hostetc")).unwrap();
    // To the root's etc: the whiteout applies there.
    symlink("/etc", sb.r("localetc")).unwrap();
    ok(sb.run(&tar(&[
        F("hostetc/.wh.passwd", ""),
        F("localetc/.wh.whitedout", ""),
    ])));
    assert_eq!(sb.read("etc/passwd"), b"all users");
    assert!(!sb.exists("etc/whitedout"));
}

#[test]
fn containerd_whiteout_directory_name() {
    let sb = sandbox();
    lower_etc(&sb, "all users");
    ok(sb.run(&tar(&[F(".wh.etc/somefile", "non-empty")])));
    assert_eq!(sb.read("etc/passwd"), b"all users");
    assert_eq!(sb.read(".wh.etc/somefile"), b"non-empty");
}

#[test]
fn containerd_whiteout_dead_symlink_parent() {
    let sb = sandbox();
    lower_etc(&sb, "all users");
    symlink("/dne", sb.r("localetc")).unwrap();
    ok(sb.run(&tar(&[F("localetc/.wh.etc", "")])));
    assert_eq!(sb.read("etc/passwd"), b"all users");
}

#[test]
fn containerd_whiteout_relative_path() {
    let sb = sandbox();
    lower_etc(&sb, "all users");
    symlink("/dne", sb.r("localetc")).unwrap();
    assert_err!(
        sb.run(&tar(&[F("dne/../.wh.etc", "")])),
        ArchiveError::UnsafePath { .. }
    );
    assert_eq!(sb.read("etc/passwd"), b"all users");
}

#[test]
fn containerd_hardlink_symlink_before_create_target() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        S("localpasswd", &format!("{}/passwd", sb.host("etc"))),
        L("localpasswd-dup", "localpasswd"),
        F("/etc/passwd", "after"),
    ]);
    ok(sb.run(&t));
    // The hard link is to the symlink itself, not what it points to.
    assert!(sb.same_inode("localpasswd-dup", "localpasswd"));
    assert!(sb.lmeta("localpasswd-dup").file_type().is_symlink());
}

#[test]
fn containerd_hardlink_symlink_relative() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        S("passwdlink", "../../../../../etc/passwd"),
        L("localpasswd", "/passwdlink"),
    ]);
    ok(sb.run(&t));
    assert!(sb.same_inode("localpasswd", "passwdlink"));
    assert_eq!(
        fs::read_link(sb.r("localpasswd")).unwrap().to_str(),
        Some("../../../../../etc/passwd")
    );
}

#[test]
fn containerd_hardlink_symlink_absolute() {
    let sb = sandbox();
    let t = tar(&[
        D("etc"),
        F("/etc/passwd", "inside"),
        S("passwdlink", &format!("{}/passwd", sb.host("etc"))),
        L("localpasswd", "/passwdlink"),
    ]);
    ok(sb.run(&t));
    assert!(sb.same_inode("localpasswd", "passwdlink"));
}

#[test]
fn containerd_hardlink_symlink_chmod() {
    let sb = sandbox();
    let perm400 = sb.top.join("perm400");
    fs::write(&perm400, "...").unwrap();
    fs::set_permissions(&perm400, fs::Permissions::from_mode(0o400)).unwrap();
    let outside = sb.host("also-exists-outside-root");
    fs::write(&outside, "...").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o640)).unwrap();
    let mut sketchy = H::new("sketchylink", b'1');
    sketchy.link = outside.clone().into_bytes();
    sketchy.mode = 0o777;
    let t = tar(&[S(&outside, perm400.to_str().unwrap()), R(sketchy)]);
    ok(sb.run(&t));
    assert_eq!(fs::metadata(&perm400).unwrap().mode() & 0o7777, 0o400);
    // Both names were rebased into the root.
    assert!(sb.same_inode("sketchylink", &outside));
}

// ---- moby TestUntarInvalidFilenames / Hardlink / Symlink -------------------

#[test]
fn moby_filename_dotdot() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[F("../victim/dotdot", "x")])),
        ArchiveError::UnsafePath { .. }
    );
}

#[test]
fn moby_filename_slash_dotdot() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[F("/../victim/slash-dotdot", "x")])),
        ArchiveError::UnsafePath { .. }
    );
}

#[test]
fn moby_hardlink_dotdot() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[L("dotdot", "../victim/hello")])),
        ArchiveError::InvalidLinkTarget { .. }
    );
}

#[test]
fn moby_hardlink_slash_dotdot() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[L("slash-dotdot", "/../victim/hello")])),
        ArchiveError::InvalidLinkTarget { .. }
    );
}

#[test]
fn moby_hardlink_then_write() {
    let sb = sandbox();
    let t = tar(&[
        L("loophole-victim", "../victim"),
        F("loophole-victim/file", "x"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn moby_hardlink_then_symlink() {
    let sb = sandbox();
    let t = tar(&[
        L("loophole-victim", "../victim"),
        S("symlink", "loophole-victim/hello"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn moby_hardlink_then_hardlink() {
    let sb = sandbox();
    let t = tar(&[
        L("loophole-victim", "../victim"),
        L("hardlink", "loophole-victim/hello"),
    ]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn moby_hardlink_then_remove_victim() {
    let sb = sandbox();
    let t = tar(&[L("loophole-victim", "../victim"), F("loophole-victim", "x")]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn moby_symlink_dotdot() {
    let sb = sandbox();
    ok(sb.run(&tar(&[S("dotdot", "../victim/hello")])));
    // Stored verbatim: a symlink's target is data.
    assert_eq!(
        fs::read_link(sb.r("dotdot")).unwrap().to_str(),
        Some("../victim/hello")
    );
}

#[test]
fn moby_symlink_slash_dotdot() {
    let sb = sandbox();
    ok(sb.run(&tar(&[S("slash-dotdot", "/../victim/hello")])));
    assert_eq!(
        fs::read_link(sb.r("slash-dotdot")).unwrap().to_str(),
        Some("/../victim/hello")
    );
}

#[test]
fn moby_symlink_then_write() {
    let sb = sandbox();
    ok(sb.run(&tar(&[
        S("loophole-victim", "../victim"),
        F("loophole-victim/file", "x"),
    ])));
    assert_eq!(sb.read("victim/file"), b"x");
}

#[test]
fn moby_symlink_then_symlink() {
    let sb = sandbox();
    ok(sb.run(&tar(&[
        S("loophole-victim", "../victim"),
        S("symlink", "loophole-victim/hello"),
    ])));
    assert!(sb.lmeta("symlink").file_type().is_symlink());
}

#[test]
fn moby_symlink_then_hardlink() {
    let sb = sandbox();
    let t = tar(&[
        S("loophole-victim", "../victim"),
        L("hardlink", "loophole-victim/hello"),
    ]);
    // Resolves to root/victim/hello, which does not exist.
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn moby_symlink_then_remove_victim() {
    let sb = sandbox();
    ok(sb.run(&tar(&[
        S("loophole-victim", "../victim"),
        F("loophole-victim", "x"),
    ])));
    assert_eq!(sb.read("loophole-victim"), b"x");
}

#[test]
fn moby_symlink_nested_parent() {
    let sb = sandbox();
    let t = tar(&[
        S("dir/loophole", "../../victim"),
        F("dir/loophole/newdir/newfile", "x"),
    ]);
    ok(sb.run(&t));
    assert_eq!(sb.read("victim/newdir/newfile"), b"x");
}

// ---- umoci scoping ----------------------------------------------------------

#[test]
fn umoci_sanitise_garbage_prefix() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[F("/../file", "container content")])),
        ArchiveError::UnsafePath { .. }
    );
}

#[test]
fn umoci_sanitise_dotdot_prefix() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[F("../file", "container content")])),
        ArchiveError::UnsafePath { .. }
    );
}

/// umoci TestUnpackEntrySymlinkScoping: `link -> <prefix>` already in the root,
/// then `link/file` must land in root/file.
fn umoci_symlink_scoping(prefix: &str) {
    let sb = sandbox();
    symlink(prefix, sb.r("link")).unwrap();
    ok(sb.run(&tar(&[F("link/file", "container content")])));
    assert_eq!(sb.read("file"), b"container content");
}

#[test]
fn umoci_symlink_scoping_root_prefix() {
    umoci_symlink_scoping("/");
}

#[test]
fn umoci_symlink_scoping_garbage_prefix1() {
    umoci_symlink_scoping("/../");
}

#[test]
fn umoci_symlink_scoping_garbage_prefix2() {
    umoci_symlink_scoping("/../../../../../../../../../../../../../../../");
}

#[test]
fn umoci_symlink_scoping_garbage_prefix3() {
    umoci_symlink_scoping("/./.././.././.././.././.././.././.././.././../");
}

#[test]
fn umoci_symlink_scoping_dotdot_prefix() {
    umoci_symlink_scoping("..");
}

#[test]
fn umoci_root_as_symlink_cve_2021_29136() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[S("/", &sb.host("victim"))])),
        ArchiveError::RootTypeChange { .. }
    );
}

#[test]
fn umoci_dot_as_symlink_cve_2021_29136() {
    let sb = sandbox();
    let t = tar(&[S(".", &sb.host("victim")), F("./hello", "x")]);
    assert_err!(sb.run(&t), ArchiveError::RootTypeChange { .. });
}

#[test]
fn umoci_dot_as_file_cve_2021_29136() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[F("./", "x")])),
        ArchiveError::InvalidHeader { .. }
    );
    assert_err!(
        sb.run(&tar(&[F(".", "x")])),
        ArchiveError::RootTypeChange { .. }
    );
}

#[test]
fn umoci_dot_as_hardlink_cve_2021_29136() {
    let sb = sandbox();
    fs::write(sb.r("f"), "x").unwrap();
    assert_err!(
        sb.run(&tar(&[L(".", "f")])),
        ArchiveError::RootTypeChange { .. }
    );
}

// ---- RUSTSEC advisories and kiln's own hostile cases ----------------------------

/// RUSTSEC-2021-0080: tar-rs created `link/a/b` through `link -> ..`.
#[test]
fn rustsec_2021_0080_symlink_dotdot_then_dirs() {
    let sb = sandbox();
    let t = tar(&[S("link", ".."), D("link/a/b"), F("link/a/b/c", "x")]);
    ok(sb.run(&t));
    assert_eq!(sb.read("a/b/c"), b"x");
    assert!(!sb.top.join("a").exists());
}

/// RUSTSEC-2026-0067: a directory entry over a symlink chmodded the symlink's target.
#[test]
fn rustsec_2026_0067_dir_over_symlink_no_chmod() {
    let sb = sandbox();
    let mut dir = H::new("link", b'5');
    dir.mode = 0o777;
    let t = tar(&[S("link", &sb.host("markerdir")), R(dir.clone())]);
    ok(sb.run(&t));
    assert!(sb.lmeta("link").is_dir());
    assert_eq!(sb.lmeta("link").mode() & 0o7777, 0o777);
    // Relative target, and the symlink already in the root from a lower layer.
    let sb = sandbox();
    symlink("../markerdir", sb.r("link")).unwrap();
    let mut dir2 = dir;
    dir2.name = b"link/".to_vec();
    ok(sb.run(&tar(&[R(dir2)])));
    assert!(sb.lmeta("link").is_dir());
}

/// Same through a file entry: a file over a symlink replaces the symlink.
#[test]
fn file_over_symlink_replaces_it() {
    let sb = sandbox();
    symlink(sb.host("victim/hello"), sb.r("hello")).unwrap();
    let mut f = H::new("hello", b'0');
    f.data = b"mine".to_vec();
    f.mode = 0o777;
    ok(sb.run(&tar(&[R(f)])));
    assert_eq!(sb.read("hello"), b"mine");
}

#[test]
fn name_with_dotdot_in_middle() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[D("a"), F("a/../../x", "x")])),
        ArchiveError::UnsafePath { .. }
    );
}

#[test]
fn name_with_nul_via_pax() {
    let sb = sandbox();
    let mut h = H::new("plain", b'0');
    h.pax = vec![(b"path".to_vec(), b"ok\0../../victim/hello".to_vec())];
    assert_err!(sb.run(&tar(&[R(h)])), ArchiveError::UnsafePath { .. });
}

#[test]
fn hardlink_to_host_absolute_path() {
    let sb = sandbox();
    // /<host path of victim/hello> is rebased into the root, where it does not exist.
    let t = tar(&[L("stolen", &sb.host("victim/hello"))]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn hardlink_via_symlinked_parent_to_host() {
    let sb = sandbox();
    let t = tar(&[S("lnk", &sb.host("victim")), L("stolen", "lnk/hello")]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
    let sb = sandbox();
    let t = tar(&[S("lnk", "../victim"), L("stolen", "lnk/hello")]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn hardlink_to_directory_refused() {
    let sb = sandbox();
    let t = tar(&[D("d"), L("d2", "d")]);
    assert_err!(sb.run(&t), ArchiveError::InvalidLinkTarget { .. });
}

#[test]
fn whiteout_under_symlinked_parent_to_host() {
    let sb = sandbox();
    symlink("../victim", sb.r("lnk")).unwrap();
    symlink(sb.host("victim"), sb.r("abs")).unwrap();
    ok(sb.run(&tar(&[
        F("lnk/.wh.hello", ""),
        F("abs/.wh.hello", ""),
        F("abs/.wh..wh..opq", ""),
    ])));
}

#[test]
fn whiteout_of_symlink_to_host_dir_removes_only_link() {
    let sb = sandbox();
    symlink(sb.host("victim"), sb.r("v")).unwrap();
    ok(sb.run(&tar(&[F(".wh.v", "")])));
    assert!(!sb.exists("v"));
}

#[test]
fn opaque_through_symlink_to_host_is_confined() {
    let sb = sandbox();
    symlink("../../victim", sb.r("v")).unwrap();
    fs::create_dir(sb.r("victim")).unwrap();
    fs::write(sb.r("victim/lower"), "x").unwrap();
    ok(sb.run(&tar(&[F("v/.wh..wh..opq", "")])));
    // `v` resolves to root/victim, which is emptied; the host's victim is not.
    assert!(!sb.exists("victim/lower"));
}

#[test]
fn opaque_only_empties_its_dir_of_lower_content() {
    let sb = sandbox();
    fs::create_dir_all(sb.r("a/sub")).unwrap();
    fs::write(sb.r("a/x"), "lower").unwrap();
    fs::write(sb.r("a/sub/y"), "lower").unwrap();
    fs::create_dir(sb.r("b")).unwrap();
    fs::write(sb.r("b/z"), "lower").unwrap();
    // `-early` sorts before the marker; `sub` is listed by this layer too, but its
    // lower content is hidden all the same.
    let t = tar(&[
        D("a"),
        F("a/-early", "new"),
        D("a/sub"),
        F("a/.wh..wh..opq", ""),
        F("a/late", "new"),
    ]);
    let st = ok(sb.run(&t));
    assert_eq!(st.whiteouts, 1);
    assert_eq!(sb.read("a/-early"), b"new");
    assert_eq!(sb.read("a/late"), b"new");
    assert!(sb.lmeta("a/sub").is_dir());
    assert!(!sb.exists("a/x"));
    assert!(!sb.exists("a/sub/y"));
    assert_eq!(sb.read("b/z"), b"lower");
}

#[test]
fn whiteout_does_not_delete_same_layer_file() {
    let sb = sandbox();
    fs::write(sb.r("lowerfile"), "lower").unwrap();
    ok(sb.run(&tar(&[
        F("f", "new"),
        F(".wh.f", ""),
        F(".wh.lowerfile", ""),
    ])));
    assert_eq!(sb.read("f"), b"new");
    assert!(!sb.exists("lowerfile"));
}

#[test]
fn whiteouts_refused_when_disabled() {
    let sb = sandbox();
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Refuse,
        ..ExtractOptions::default()
    };
    assert_err!(
        sb.run_with(&tar(&[F(".wh.x", "")]), &opts),
        ArchiveError::WhiteoutNotAllowed { .. }
    );
}

fn device(name: &str, typeflag: u8, major: u64, minor: u64) -> H {
    let mut h = H::new(name, typeflag);
    h.major = major;
    h.minor = minor;
    h.mode = 0o666;
    h
}

#[test]
fn devices_skipped_by_default() {
    let sb = sandbox();
    let st = ok(sb.run(&tar(&[
        R(device("mem", b'3', 1, 1)),
        R(device("sda", b'4', 8, 0)),
    ])));
    assert_eq!(st.skipped_devices, 2);
    assert!(!sb.exists("mem"));
    assert!(!sb.exists("sda"));
}

#[test]
fn devices_created_inside_when_allowed() {
    if !crate::testutil::require(is_root(), "root (creating devices)") {
        return;
    }
    let sb = sandbox();
    let opts = ExtractOptions {
        allow_devices: true,
        ..ExtractOptions::default()
    };
    // A device named by a path through a symlink to the host lands inside.
    let t = tar(&[S("lnk", "../victim"), R(device("lnk/null", b'3', 1, 3))]);
    ok(sb.run_with(&t, &opts));
    let md = sb.lmeta("victim/null");
    assert_eq!(md.rdev(), libc::makedev(1, 3));
}

#[test]
fn device_bad_numbers_refused() {
    let sb = sandbox();
    let mut raw = tar(&[R(device("bad", b'3', 1, 1))]);
    // Garbage in the devmajor field.
    raw[329..337].copy_from_slice(b"9z9z9z9\0");
    raw[148..156].fill(b' ');
    let sum: u64 = raw[..512].iter().map(|&x| u64::from(x)).sum();
    raw[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    assert_err!(sb.run(&raw), ArchiveError::InvalidHeader { .. });
}

#[test]
fn setuid_file_kept_and_root_mode_restricts() {
    if !crate::testutil::require(is_root(), "root (setuid-root files)") {
        return;
    }
    let sb = sandbox();
    let mut f = H::new("bin/su", b'0');
    f.mode = 0o4755;
    f.data = b"#!".to_vec();
    let opts = ExtractOptions {
        root_mode: Some(0o700),
        ..ExtractOptions::default()
    };
    let mut dot = H::new("./", b'5');
    dot.mode = 0o755;
    ok(sb.run_with(&tar(&[R(dot), R(f)]), &opts));
    assert_eq!(sb.lmeta("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(fs::metadata(&sb.root).unwrap().mode() & 0o7777, 0o700);
}

// ---- parser confusion and limits ----------------------------------------------

/// TARmageddon (CVE-2026-33055): ustar size 0 with a PAX size lets a reader that
/// trusts the ustar field see the data as more headers.
#[test]
fn tarmageddon_pax_size_with_zero_ustar_size() {
    let sb = sandbox();
    let inner = tar(&[F("../victim/hello", "pwned")]);
    let mut h = H::new("innocent", b'0');
    h.data = inner[..inner.len() - 1024].to_vec();
    h.size_field = Some(0);
    h.pax = vec![(b"size".to_vec(), h.data.len().to_string().into_bytes())];
    assert_err!(sb.run(&tar(&[R(h)])), ArchiveError::SizeMismatch { .. });
}

#[test]
fn pax_size_disagrees_with_ustar_size() {
    let sb = sandbox();
    let mut h = H::new("f", b'0');
    h.data = vec![b'a'; 1024];
    h.pax = vec![(b"size".to_vec(), b"5".to_vec())];
    assert_err!(sb.run(&tar(&[R(h)])), ArchiveError::SizeMismatch { .. });
}

#[test]
fn header_only_type_with_data_refused() {
    let sb = sandbox();
    let mut h = H::new("d", b'5');
    h.data = b"smuggled".to_vec();
    assert_err!(sb.run(&tar(&[R(h)])), ArchiveError::InvalidHeader { .. });
}

#[test]
fn pax_header_over_limit() {
    let sb = sandbox();
    let mut h = H::new("f", b'0');
    h.pax = vec![(b"comment".to_vec(), vec![b'x'; (1 << 20) + 1])];
    assert_err!(
        sb.run(&tar(&[R(h)])),
        ArchiveError::LimitExceeded {
            limit: Limit::PaxHeaderSize,
            ..
        }
    );
}

#[test]
fn name_over_limit_via_pax() {
    let sb = sandbox();
    let mut h = H::new("f", b'0');
    h.pax = vec![(b"path".to_vec(), vec![b'a'; (64 << 10) + 1])];
    assert_err!(
        sb.run(&tar(&[R(h)])),
        ArchiveError::LimitExceeded {
            limit: Limit::NameLength,
            ..
        }
    );
}

#[test]
fn name_over_limit_via_gnu_longname() {
    let sb = sandbox();
    let mut long = H::new("././@LongLink", b'L');
    long.data = vec![b'a'; (64 << 10) + 1];
    assert_err!(
        sb.run(&tar(&[R(long), F("f", "")])),
        ArchiveError::LimitExceeded {
            limit: Limit::NameLength,
            ..
        }
    );
}

#[test]
fn gnu_longname_is_confined_too() {
    let sb = sandbox();
    let mut long = H::new("././@LongLink", b'L');
    long.data = b"../victim/hello\0".to_vec();
    assert_err!(
        sb.run(&tar(&[R(long), F("f", "x")])),
        ArchiveError::UnsafePath { .. }
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bomb_tar(size: usize) -> Vec<u8> {
    let mut h = H::new("zeros", b'0');
    h.data = vec![0u8; size];
    tar(&[R(h)])
}

#[test]
fn gzip_bomb_hits_total_size_limit() {
    let sb = sandbox();
    let opts = ExtractOptions {
        limits: Limits {
            max_total_size: 1 << 20,
            ..Limits::default()
        },
        ..ExtractOptions::default()
    };
    let r = sb.run_with(&gzip(&bomb_tar(8 << 20)), &opts);
    assert_err!(
        r,
        ArchiveError::LimitExceeded {
            limit: Limit::TotalSize,
            ..
        }
    );
}

#[test]
fn gzip_bomb_hits_ratio_limit() {
    let sb = sandbox();
    let opts = ExtractOptions {
        limits: Limits {
            ratio_check_after: 1 << 20,
            max_compression_ratio: 100,
            ..Limits::default()
        },
        ..ExtractOptions::default()
    };
    let r = sb.run_with(&gzip(&bomb_tar(8 << 20)), &opts);
    assert_err!(
        r,
        ArchiveError::LimitExceeded {
            limit: Limit::CompressionRatio,
            ..
        }
    );
}

#[test]
fn zstd_bomb_hits_ratio_limit() {
    let sb = sandbox();
    let z = zstd::encode_all(&bomb_tar(16 << 20)[..], 1).unwrap();
    let opts = ExtractOptions {
        limits: Limits {
            ratio_check_after: 1 << 20,
            ..Limits::default()
        },
        ..ExtractOptions::default()
    };
    assert_err!(
        sb.run_with(&z, &opts),
        ArchiveError::LimitExceeded {
            limit: Limit::CompressionRatio,
            ..
        }
    );
}

/// A reader that repeats `chunk` forever.
struct Forever(Vec<u8>, usize);

impl Read for Forever {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            buf[n] = self.0[self.1];
            self.1 = (self.1 + 1) % self.0.len();
            n += 1;
        }
        Ok(n)
    }
}

/// Empty gzip members decompress to nothing: an endless run of them after a
/// valid layer must hit a limit on the compressed side instead of spinning.
#[test]
fn endless_empty_gzip_members() {
    let sb = sandbox();
    let layer = gzip(&tar(&[F("a", "x")]));
    let stream = (&layer[..]).chain(Forever(gzip(b""), 0));
    let opts = ExtractOptions {
        limits: Limits {
            max_total_size: 256 << 10,
            max_trailing_bytes: 4 << 10,
            ..Limits::default()
        },
        ..ExtractOptions::default()
    };
    let before = listing(&sb.top, &sb.root);
    let r = extract(stream, &sb.root, &opts);
    assert_err!(
        r,
        ArchiveError::LimitExceeded {
            limit: Limit::TotalSize,
            ..
        }
    );
    assert_eq!(listing(&sb.top, &sb.root), before);
}

/// The same with zstd skippable frames.
#[test]
fn endless_zstd_skippable_frames() {
    let sb = sandbox();
    let layer = zstd::encode_all(&tar(&[F("a", "x")])[..], 1).unwrap();
    // Skippable frame: magic 0x184D2A50, 4-byte length, payload.
    let mut frame = vec![0x50, 0x2a, 0x4d, 0x18, 8, 0, 0, 0];
    frame.extend_from_slice(&[0u8; 8]);
    let stream = (&layer[..]).chain(Forever(frame, 0));
    let opts = ExtractOptions {
        limits: Limits {
            max_total_size: 4 << 20,
            ..Limits::default()
        },
        ..ExtractOptions::default()
    };
    let r = extract(stream, &sb.root, &opts);
    assert_err!(
        r,
        ArchiveError::LimitExceeded {
            limit: Limit::TotalSize,
            ..
        }
    );
}

#[test]
fn entry_count_limit() {
    let sb = sandbox();
    let opts = ExtractOptions {
        limits: Limits {
            max_entries: 3,
            ..Limits::default()
        },
        ..ExtractOptions::default()
    };
    let t = tar(&[F("a", ""), F("b", ""), F("c", ""), F("d", "")]);
    assert_err!(
        sb.run_with(&t, &opts),
        ArchiveError::LimitExceeded {
            limit: Limit::Entries,
            ..
        }
    );
}

/// 8 GiB of padding after the end of the archive: an error after reading the
/// trailing-data limit, not after reading 8 GiB.
#[test]
fn endless_padding_after_end_of_archive() {
    let sb = sandbox();
    let t = tar(&[F("a", "x")]);
    let stream = (&t[..]).chain(std::io::repeat(0).take(8 << 30));
    let before = listing(&sb.top, &sb.root);
    let start = std::time::Instant::now();
    let r = extract(stream, &sb.root, &ExtractOptions::default());
    assert_err!(
        r,
        ArchiveError::LimitExceeded {
            limit: Limit::TrailingData,
            ..
        }
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(listing(&sb.top, &sb.root), before);
}

#[test]
fn small_garbage_after_end_of_archive_ignored() {
    let sb = sandbox();
    let mut t = tar(&[F("a", "x")]);
    t.extend_from_slice(&[b'g'; 5000]);
    let st = ok(sb.run(&t));
    assert_eq!(st.stream_bytes, t.len() as u64);
    assert_eq!(sb.read("a"), b"x");
}

#[test]
fn lone_zero_block_followed_by_entry() {
    let sb = sandbox();
    let mut t = tar(&[F("a", "x")]);
    t.truncate(t.len() - 1024);
    t.extend_from_slice(&[0u8; 512]);
    t.extend_from_slice(&tar(&[F("hidden", "x")]));
    assert_err!(sb.run(&t), ArchiveError::InvalidHeader { .. });
}

#[test]
fn bad_checksum_refused() {
    let sb = sandbox();
    let mut t = tar(&[F("a", "x")]);
    t[0] = b'b';
    assert_err!(sb.run(&t), ArchiveError::InvalidHeader { .. });
}

#[test]
fn truncated_archive() {
    let sb = sandbox();
    let mut h = H::new("a", b'0');
    h.data = vec![1u8; 2000];
    let t = tar(&[R(h)]);
    assert_err!(sb.run(&t[..1200]), ArchiveError::Truncated { .. });
    assert_err!(sb.run(&t[..700]), ArchiveError::Truncated { .. });
}

#[test]
fn sparse_and_unknown_types_refused() {
    let sb = sandbox();
    assert_err!(
        sb.run(&tar(&[R(H::new("s", b'S'))])),
        ArchiveError::UnsupportedEntryType { .. }
    );
    assert_err!(
        sb.run(&tar(&[R(H::new("v", b'V'))])),
        ArchiveError::UnsupportedEntryType { .. }
    );
    let mut h = H::new("s", b'0');
    h.pax = vec![(b"GNU.sparse.major".to_vec(), b"1".to_vec())];
    assert_err!(sb.run(&tar(&[R(h)])), ArchiveError::InvalidHeader { .. });
}

#[test]
fn unsupported_compression_named() {
    let sb = sandbox();
    assert_err!(
        sb.run(b"BZh91AY&SY"),
        ArchiveError::UnsupportedCompression("bzip2")
    );
    assert_err!(
        sb.run(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
        ArchiveError::UnsupportedCompression("xz")
    );
}

#[test]
fn uid_out_of_range_refused_when_chowning() {
    if !crate::testutil::require(is_root(), "root (ownership is applied only as root)") {
        return;
    }
    let sb = sandbox();
    let mut h = H::new("f", b'0');
    h.pax = vec![(b"uid".to_vec(), b"4294967295".to_vec())];
    assert_err!(sb.run(&tar(&[R(h)])), ArchiveError::OutOfRange { .. });
}

/// The harness itself: with the root pointed at the sandbox's top, overwriting
/// `victim/hello` must be reported as a change outside the root.
#[test]
#[should_panic(expected = "changed the host outside the root")]
fn harness_detects_changes_outside_root() {
    let mut sb = sandbox();
    sb.root = sb.top.clone();
    let _ = sb.run(&tar(&[F("victim/hello", "pwned")]));
}

#[test]
fn symlink_loop_in_parent_path() {
    let sb = sandbox();
    let t = tar(&[S("a", "b"), S("b", "/a"), F("a/x", "x")]);
    assert_err!(sb.run(&t), ArchiveError::TooManySymlinks { .. });
}
