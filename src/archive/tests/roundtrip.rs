//! Writer tests: writer → extractor round trips, byte-for-byte determinism, SOURCE_DATE_EPOCH clamping, whiteouts, hard links, xattrs, and readability by other tar readers.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::*;

const T0: i64 = 1_600_000_000;

fn set_xattr(p: &Path, k: &str, v: &[u8]) -> bool {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ck = CString::new(k).unwrap();
    // SAFETY: valid C strings and buffer.
    unsafe { libc::lsetxattr(cp.as_ptr(), ck.as_ptr(), v.as_ptr().cast(), v.len(), 0) == 0 }
}

/// A valid v2 `security.capability` granting CAP_NET_BIND_SERVICE (effective).
const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn set_mtime(p: &Path, secs: i64) {
    let ts = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Builds a tree with every entry type; `reverse` creates things in another order
/// (so inode numbers and directory order differ) with the same result.
fn build_tree(dir: &Path, reverse: bool) {
    type Step = Box<dyn Fn(&Path)>;
    let mut steps: Vec<Step> = vec![
        Box::new(|d| {
            fs::create_dir_all(d.join("a/b")).unwrap();
            fs::write(d.join("a/file"), "hello").unwrap();
            fs::write(d.join("a/b/secret"), "s").unwrap();
            fs::set_permissions(d.join("a/b/secret"), fs::Permissions::from_mode(0o600)).unwrap();
            fs::set_permissions(d.join("a/b"), fs::Permissions::from_mode(0o700)).unwrap();
        }),
        Box::new(|d| {
            fs::create_dir(d.join("sticky")).unwrap();
            fs::set_permissions(d.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
            fs::create_dir(d.join("empty")).unwrap();
            fs::set_permissions(d.join("empty"), fs::Permissions::from_mode(0o750)).unwrap();
        }),
        Box::new(|d| {
            fs::write(d.join("empty-file"), "").unwrap();
            let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
            fs::write(d.join("big"), big).unwrap();
            fs::write(d.join("setuid"), "#!").unwrap();
            fs::set_permissions(d.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
            fs::write(d.join("future"), "f").unwrap();
            fs::write(d.join("ünïcode"), "u").unwrap();
        }),
        Box::new(|d| {
            symlink("file", d.join("a-rel")).unwrap();
            symlink("/nonexistent/target", d.join("abs")).unwrap();
            symlink("x".repeat(150), d.join("longlink")).unwrap();
            nix::unistd::mkfifo(
                &d.join("fifo"),
                nix::sys::stat::Mode::from_bits_truncate(0o640),
            )
            .unwrap();
        }),
        Box::new(|d| {
            let long = d.join("long");
            fs::create_dir_all(&long).unwrap();
            fs::write(long.join("n".repeat(120)), "long").unwrap();
            let mut deep = d.join("deep");
            for _ in 0..6 {
                deep = deep.join("d".repeat(50));
            }
            fs::create_dir_all(&deep).unwrap();
            fs::write(deep.join("f"), "deep").unwrap();
        }),
    ];
    if reverse {
        steps.reverse();
    }
    for s in &steps {
        s(dir);
    }
    // Hard link after its target exists.
    fs::hard_link(dir.join("a/file"), dir.join("z-hard")).unwrap();
    if is_root() {
        nix::unistd::chown(&dir.join("a/file"), Some(1234.into()), Some(5678.into())).unwrap();
        fs::write(dir.join("bigid"), "").unwrap();
        nix::unistd::chown(
            &dir.join("bigid"),
            Some(3_000_000.into()),
            Some(3_000_001.into()),
        )
        .unwrap();
        // chown clears setuid.
        fs::set_permissions(dir.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
        assert!(set_xattr(
            &dir.join("setuid"),
            "security.capability",
            &CAP_NET_BIND
        ));
    }
    if user_xattrs_supported(dir) {
        assert!(set_xattr(&dir.join("a/file"), "user.kiln", b"v\0bin"));
    }
    // Fixed mtimes, children before parents.
    let mut all = Vec::new();
    collect(dir, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in all {
        set_mtime(&p, T0);
    }
    // Beyond the 11-digit octal field: needs a PAX mtime.
    set_mtime(&dir.join("future"), 9_000_000_000);
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            collect(&p, out);
        }
        out.push(p);
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Option<Vec<u8>>,
    link: Option<std::path::PathBuf>,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// First path (in sorted order) sharing this inode.
    inode_group: std::path::PathBuf,
}

/// What a tree holds, independent of inode numbers.
fn tree(dir: &Path) -> BTreeMap<std::path::PathBuf, Node> {
    let mut all = Vec::new();
    collect(dir, &mut all);
    all.sort();
    let mut groups: HashMap<u64, std::path::PathBuf> = HashMap::new();
    let mut out = BTreeMap::new();
    for p in all {
        let rel = p.strip_prefix(dir).unwrap().to_path_buf();
        let md = fs::symlink_metadata(&p).unwrap();
        let k = super::kind(md.file_type());
        let group = groups
            .entry(md.ino())
            .or_insert_with(|| rel.clone())
            .clone();
        out.insert(
            rel,
            Node {
                kind: k,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                content: (k == "file").then(|| fs::read(&p).unwrap()),
                link: (k == "symlink").then(|| fs::read_link(&p).unwrap()),
                mtime: md.mtime(),
                xattrs: super::super::writer::read_xattrs(&p).unwrap(),
                inode_group: group,
            },
        );
    }
    out
}

fn write(dir: &Path, opts: WriterOptions) -> (Vec<u8>, LayerDigest) {
    write_tree(dir, Vec::new(), opts).unwrap()
}

/// (typeflag, name field) of every header, PAX ones included.
pub(crate) fn headers(t: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= t.len() && t[off..off + 512].iter().any(|&b| b != 0) {
        let h = &t[off..off + 512];
        let name: Vec<u8> = h[..100].iter().copied().take_while(|&b| b != 0).collect();
        let size_s = String::from_utf8_lossy(&h[124..135])
            .trim_matches(char::from(0))
            .to_string();
        let size = u64::from_str_radix(size_s.trim(), 8).unwrap();
        out.push((h[156], name));
        off += 512 + size.div_ceil(512) as usize * 512;
    }
    out
}

#[test]
fn tree_round_trips_through_extract() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path(), false);
    let (bytes, digest) = write(src.path(), WriterOptions::default());
    let dst = tempfile::tempdir().unwrap();
    let st = extract(&bytes[..], dst.path(), &ExtractOptions::default()).unwrap();
    assert_eq!(st.stream_sha256, digest.sha256);
    assert_eq!(st.stream_bytes, digest.size);
    assert_eq!(st.compression, Compression::None);
    let (a, b) = (tree(src.path()), tree(dst.path()));
    for (p, n) in &a {
        assert_eq!(Some(n), b.get(p), "{}", p.display());
    }
    assert_eq!(a, b);
    // The hard link survived as one inode.
    assert_eq!(b[Path::new("z-hard")].inode_group, Path::new("a/file"));
}

#[test]
fn same_tree_gives_identical_bytes() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    build_tree(one.path(), false);
    build_tree(two.path(), true);
    let (a, da) = write(one.path(), WriterOptions::default());
    // Reading the files changed their atime; that must not matter.
    let (a2, _) = write(one.path(), WriterOptions::default());
    let (b, db) = write(two.path(), WriterOptions::default());
    assert_eq!(a, a2);
    assert!(
        a == b,
        "trees built in different orders give different tars"
    );
    assert_eq!(da, db);
    assert_eq!(da.diff_id().len(), 7 + 64);
    assert!(da.diff_id().starts_with("sha256:"));
}

#[test]
fn headers_are_minimal_and_anonymous() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/f"), "x").unwrap();
    symlink("f", src.path().join("d/l")).unwrap();
    let (bytes, _) = write(src.path(), WriterOptions::default());
    let hs = headers(&bytes);
    assert_eq!(
        hs,
        vec![
            (b'5', b"d/".to_vec()),
            (b'0', b"d/f".to_vec()),
            (b'2', b"d/l".to_vec())
        ],
        "no PAX headers for short names, sorted, parents first"
    );
    // Empty user and group names; no atime/ctime anywhere (ustar has none).
    for off in [0, 512, 1536] {
        assert!(bytes[off + 265..off + 329].iter().all(|&b| b == 0));
        assert_eq!(&bytes[off + 257..off + 263], b"ustar\0");
    }
    // Long names use the ustar prefix before resorting to PAX.
    let long = tempfile::tempdir().unwrap();
    build_tree(long.path(), false);
    let (bytes, _) = write(long.path(), WriterOptions::default());
    let pax = headers(&bytes).iter().filter(|h| h.0 == b'x').count();
    // deep file (>255), longlink target, future mtime; plus xattrs and big ids
    // when they were set up.
    assert!(pax >= 3, "{pax}");
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("old"), "o").unwrap();
    fs::write(src.path().join("new"), "n").unwrap();
    set_mtime(&src.path().join("old"), 1_000);
    set_mtime(&src.path().join("new"), T0);
    let sde = 1_500_000_000;
    let (bytes, _) = write(
        src.path(),
        WriterOptions {
            clamp_mtime: Some(sde),
        },
    );
    let (plain, _) = write(src.path(), WriterOptions::default());
    assert_ne!(bytes, plain);
    let dst = tempfile::tempdir().unwrap();
    extract(&bytes[..], dst.path(), &ExtractOptions::default()).unwrap();
    assert_eq!(fs::metadata(dst.path().join("old")).unwrap().mtime(), 1_000);
    assert_eq!(fs::metadata(dst.path().join("new")).unwrap().mtime(), sde);
}

#[test]
fn entry_list_with_whiteouts_applies_on_lower() {
    // Lower layer, extracted.
    let lower = tempfile::tempdir().unwrap();
    fs::create_dir_all(lower.path().join("etc/old")).unwrap();
    fs::write(lower.path().join("etc/old/x"), "x").unwrap();
    fs::write(lower.path().join("etc/keep"), "k").unwrap();
    fs::create_dir(lower.path().join("var")).unwrap();
    fs::write(lower.path().join("var/log"), "l").unwrap();
    fs::write(lower.path().join("gone"), "g").unwrap();
    let (lower_tar, _) = write(lower.path(), WriterOptions::default());
    let root = tempfile::tempdir().unwrap();
    extract(&lower_tar[..], root.path(), &ExtractOptions::default()).unwrap();

    // Upper: var is opaque with one new file; gone and etc/old are whited out.
    let up = tempfile::tempdir().unwrap();
    fs::create_dir(up.path().join("var")).unwrap();
    fs::write(up.path().join("var/new"), "n").unwrap();
    fs::create_dir(up.path().join("etc")).unwrap();
    let entries = vec![
        LayerEntry::Path {
            name: b"var/new".to_vec(),
            source: up.path().join("var/new"),
        },
        LayerEntry::Whiteout {
            name: b"gone".to_vec(),
        },
        LayerEntry::Opaque {
            dir: b"var".to_vec(),
        },
        LayerEntry::Path {
            name: b"var".to_vec(),
            source: up.path().join("var"),
        },
        LayerEntry::Whiteout {
            name: b"etc/old".to_vec(),
        },
        LayerEntry::Path {
            name: b"etc".to_vec(),
            source: up.path().join("etc"),
        },
    ];
    let mut w = LayerWriter::new(Vec::new(), WriterOptions::default());
    w.append_entries(entries).unwrap();
    let (upper_tar, _) = w.finish().unwrap();
    let names: Vec<Vec<u8>> = headers(&upper_tar).into_iter().map(|h| h.1).collect();
    let expect: Vec<&[u8]> = vec![
        b".wh.gone",
        b"etc/",
        b"etc/.wh.old",
        b"var/",
        b"var/.wh..wh..opq",
        b"var/new",
    ];
    assert_eq!(names, expect.iter().map(|n| n.to_vec()).collect::<Vec<_>>());

    let st = extract(&upper_tar[..], root.path(), &ExtractOptions::default()).unwrap();
    assert_eq!(st.whiteouts, 3);
    let r = root.path();
    assert!(!r.join("gone").exists());
    assert!(!r.join("etc/old").exists());
    assert_eq!(fs::read(r.join("etc/keep")).unwrap(), b"k");
    assert!(!r.join("var/log").exists());
    assert_eq!(fs::read(r.join("var/new")).unwrap(), b"n");
}

#[test]
fn entry_list_rejects_duplicates_and_bad_names() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("f"), "").unwrap();
    let p = |n: &[u8]| LayerEntry::Path {
        name: n.to_vec(),
        source: d.path().join("f"),
    };
    let mut w = LayerWriter::new(Vec::new(), WriterOptions::default());
    assert!(matches!(
        w.append_entries(vec![p(b"a"), p(b"a")]),
        Err(ArchiveError::InvalidLayerName { .. })
    ));
    let mut w = LayerWriter::new(Vec::new(), WriterOptions::default());
    assert!(matches!(
        w.append_path(b"../x", &d.path().join("f")),
        Err(ArchiveError::InvalidLayerName { .. })
    ));
    assert!(matches!(
        w.append_path(b"a/.wh.x", &d.path().join("f")),
        Err(ArchiveError::InvalidLayerName { .. })
    ));
    // A tree with a literal .wh. file cannot become a layer either.
    fs::write(d.path().join(".wh.f"), "").unwrap();
    assert!(matches!(
        write_tree(d.path(), Vec::new(), WriterOptions::default()),
        Err(ArchiveError::InvalidLayerName { .. })
    ));
}

#[test]
fn hardlinks_written_as_link_entries() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("a"), "same").unwrap();
    fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
    fs::hard_link(d.path().join("a"), d.path().join("c")).unwrap();
    let (bytes, _) = write(d.path(), WriterOptions::default());
    let hs = headers(&bytes);
    assert_eq!(
        hs.iter().map(|h| h.0).collect::<Vec<_>>(),
        vec![b'0', b'1', b'1']
    );
    let dst = tempfile::tempdir().unwrap();
    extract(&bytes[..], dst.path(), &ExtractOptions::default()).unwrap();
    let ino = |n: &str| fs::metadata(dst.path().join(n)).unwrap().ino();
    assert_eq!(ino("a"), ino("b"));
    assert_eq!(ino("a"), ino("c"));
    assert_eq!(fs::metadata(dst.path().join("a")).unwrap().nlink(), 3);
}

#[test]
fn xattrs_round_trip() {
    let d = tempfile::tempdir().unwrap();
    if !crate::testutil::require(
        user_xattrs_supported(d.path()),
        &format!("user.* xattrs on the filesystem of {}", d.path().display()),
    ) {
        return;
    }
    fs::write(d.path().join("f"), "x").unwrap();
    assert!(set_xattr(&d.path().join("f"), "user.a", b"1"));
    assert!(set_xattr(&d.path().join("f"), "user.b", &[0, 255, 10]));
    if is_root() {
        assert!(set_xattr(
            &d.path().join("f"),
            "security.capability",
            &CAP_NET_BIND
        ));
    }
    let (bytes, _) = write(d.path(), WriterOptions::default());
    let dst = tempfile::tempdir().unwrap();
    extract(&bytes[..], dst.path(), &ExtractOptions::default()).unwrap();
    let got = super::super::writer::read_xattrs(&dst.path().join("f")).unwrap();
    let mut want = vec![
        (b"user.a".to_vec(), b"1".to_vec()),
        (b"user.b".to_vec(), vec![0, 255, 10]),
    ];
    if is_root() {
        want.push((b"security.capability".to_vec(), CAP_NET_BIND.to_vec()));
        want.sort();
    }
    assert_eq!(got, want);
}

#[test]
fn compressed_layers_detected() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("f"), "payload").unwrap();
    let (bytes, digest) = write(d.path(), WriterOptions::default());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).unwrap();
    let gz = gz.finish().unwrap();
    let zs = zstd::encode_all(&bytes[..], 3).unwrap();
    for (data, c) in [(gz, Compression::Gzip), (zs, Compression::Zstd)] {
        let dst = tempfile::tempdir().unwrap();
        let st = extract(&data[..], dst.path(), &ExtractOptions::default()).unwrap();
        assert_eq!(st.compression, c);
        // The diffID is the digest of the uncompressed stream.
        assert_eq!(st.stream_sha256, digest.sha256);
        assert_eq!(fs::read(dst.path().join("f")).unwrap(), b"payload");
    }
}

#[test]
fn other_readers_agree_with_the_writer() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path(), false);
    let (bytes, _) = write(src.path(), WriterOptions::default());
    // The tar crate sees the same names, PAX included.
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&bytes[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        names.push(e.path_bytes().trim_ascii_end().to_vec());
    }
    let mut want: Vec<Vec<u8>> = tree(src.path())
        .into_iter()
        .map(|(p, n)| {
            let mut v = p.as_os_str().as_bytes().to_vec();
            if n.kind == "dir" {
                v.push(b'/');
            }
            v
        })
        .collect();
    names.sort();
    want.sort();
    assert_eq!(names, want);
    // GNU tar, where installed, lists it without complaint.
    match std::process::Command::new("tar")
        .arg("-tf")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child.stdin.take().unwrap().write_all(&bytes).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stderr.is_empty(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                out.stdout
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count(),
                want.len()
            );
        }
        Err(e) => crate::testutil::missing(&format!("GNU tar ({e})")),
    }
}

#[test]
fn rootfs_tar_with_dot_entries_extracts() {
    // `docker export`-style: "./" first, names prefixed with "./".
    let mut dot = H::new("./", b'5');
    dot.mode = 0o755;
    let mut bin = H::new("./bin/", b'5');
    bin.mode = 0o755;
    let mut sh = H::new("./bin/sh", b'0');
    sh.mode = 0o755;
    sh.data = b"#!".to_vec();
    let t = tar(&[E::R(dot), E::R(bin), E::R(sh), E::S("./bin/ash", "sh")]);
    let dst = tempfile::tempdir().unwrap();
    let opts = ExtractOptions {
        whiteouts: WhiteoutMode::Refuse,
        ..ExtractOptions::default()
    };
    let st = extract(&t[..], dst.path(), &opts).unwrap();
    assert_eq!(st.entries, 4);
    assert_eq!(st.file_bytes, 2);
    assert_eq!(fs::read(dst.path().join("bin/sh")).unwrap(), b"#!");
    assert_eq!(fs::metadata(dst.path()).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::metadata(dst.path().join("bin")).unwrap().mtime(),
        1_600_000_000
    );
}

#[test]
fn big_layers_hash_the_bytes_written() {
    // Several 1 MiB chunks plus a partial one: hashed on the writer's second thread.
    let d = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(3 << 20) + 777u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(d.path().join("big"), &big).unwrap();
    fs::write(d.path().join("small"), b"s").unwrap();
    let (tar, digest) = write_tree(d.path(), Vec::new(), WriterOptions::default()).unwrap();
    assert_eq!(digest.size, tar.len() as u64);
    assert_eq!(
        digest.sha256,
        <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&tar))
    );
    // A stream under one chunk is hashed inline, the same way.
    fs::remove_file(d.path().join("big")).unwrap();
    let (tar, digest) = write_tree(d.path(), Vec::new(), WriterOptions::default()).unwrap();
    assert_eq!(
        digest.sha256,
        <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&tar))
    );
    // The data survives the chunking.
    fs::write(d.path().join("big"), &big).unwrap();
    let (tar, _) = write_tree(d.path(), Vec::new(), WriterOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    extract(&tar[..], out.path(), &ExtractOptions::default()).unwrap();
    assert_eq!(fs::read(out.path().join("big")).unwrap(), big);
}
