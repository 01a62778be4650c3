//! COPY and ADD as Docker does them: which source lands where (directory contents, trailing
//! slashes, existing directories, globs, `--parents`, `--exclude`), with what owner and mode,
//! written as a tar stream that the hardened extractor then writes into the image root.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::context::ignore::IgnoreRules;
use crate::context::{name, Context, ContextFile, Kind};

/// One item to write into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Path inside the image, relative to `/`.
    pub name: String,
    /// What it is.
    pub kind: ItemKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds).
    pub mtime: i64,
}

/// The content of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// A regular file copied from a host path.
    File(PathBuf),
    /// A regular file of the build context, read only if it is still the file hashed.
    ContextFile(ContextFile),
    /// A FIFO (created empty, as BuildKit's copy does).
    Fifo,
    /// A regular file with inline content (a heredoc).
    Data(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink with this target.
    Symlink(String),
}

/// One selected source: where its tree sits on the host and how it is named.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its path relative to the source root (`""` for the root itself).
    pub rel: String,
    /// The entries at or below it: path relative to the source root, metadata, host path.
    pub entries: Vec<SourceEntry>,
}

impl Source {
    /// The same tree under another name: a source symlink that was followed keeps the
    /// link's name.
    pub fn renamed(mut self, rel: &str) -> Source {
        for e in &mut self.entries {
            let under = e
                .rel
                .strip_prefix(&self.rel)
                .unwrap_or(&e.rel)
                .trim_start_matches('/');
            e.rel = join(rel, under);
        }
        self.rel = rel.to_string();
        self
    }
}

/// One file or directory of a source tree.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// Path relative to the source root.
    pub rel: String,
    /// What it is.
    pub kind: Kind,
    /// `st_mode` permission bits.
    pub mode: u32,
    /// Owner in the source.
    pub uid: u32,
    /// Group in the source.
    pub gid: u32,
    /// mtime (seconds).
    pub mtime: i64,
    /// Symlink target.
    pub link: Option<String>,
    /// Where to read it.
    pub host: PathBuf,
    /// For a file of the build context: the file as listed, to open safely.
    pub context: Option<ContextFile>,
    /// A FIFO (`kind` is `Other`).
    pub fifo: bool,
}

/// The flags of one COPY/ADD.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown` resolved to numbers.
    pub chown: Option<(u32, u32)>,
    /// `--chmod` as permission bits.
    pub chmod: Option<u32>,
    /// `--parents`: keep each source's path below the context root.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// Keep the sources' owners (copies from a stage or image); context files become root's.
    pub keep_owner: bool,
}

/// A COPY that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// Several sources need a directory destination.
    #[error("When using COPY with more than one source file, the destination must be a directory and end with a /")]
    NeedDirDest,
    /// A bad `--exclude` pattern.
    #[error("invalid --exclude pattern: {0}")]
    BadExclude(String),
    /// `--chmod` is not octal.
    #[error("invalid --chmod value {0:?}: expected an octal mode such as 0755")]
    BadChmod(String),
}

/// Parse a `--chmod` value (octal only, as Docker's classic builder).
pub fn parse_chmod(s: &str) -> Result<u32, CopyError> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| CopyError::BadChmod(s.to_string()))
}

/// The entries of a context source, `.dockerignore` already applied by the context scan.
pub fn context_source(ctx: &Context, rel: &str) -> Source {
    let entries = ctx
        .subtree(rel)
        .map(|(k, e)| SourceEntry {
            rel: k.clone(),
            kind: e.kind,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime.0,
            link: e.link_target.clone(),
            host: ctx.host_key(k),
            context: ctx.file(k),
            fifo: e.is_fifo(),
        })
        .collect();
    Source {
        rel: rel.to_string(),
        entries,
    }
}

/// The entries of a source inside a directory tree (a stage's root), never following links.
pub fn tree_source(root: &Path, rel: &str) -> io::Result<Source> {
    let mut entries = Vec::new();
    let mut stack = vec![rel.to_string()];
    while let Some(p) = stack.pop() {
        let host = if p.is_empty() {
            root.to_path_buf()
        } else {
            root.join(name::to_os(&p))
        };
        let meta = fs::symlink_metadata(&host)?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        let link = if kind == Kind::Symlink {
            use std::os::unix::ffi::OsStrExt;
            Some(name::encode(fs::read_link(&host)?.as_os_str().as_bytes()).into_owned())
        } else {
            None
        };
        if kind == Kind::Dir {
            use std::os::unix::ffi::OsStrExt;
            let mut names: Vec<String> = fs::read_dir(&host)?
                .filter_map(|e| e.ok())
                .map(|e| name::encode(e.file_name().as_bytes()).into_owned())
                .collect();
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(if p.is_empty() { n } else { format!("{p}/{n}") });
            }
        }
        entries.push(SourceEntry {
            rel: p,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            link,
            host,
            context: None,
            fifo: std::os::unix::fs::FileTypeExt::is_fifo(&ft),
        });
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(Source {
        rel: rel.to_string(),
        entries,
    })
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Where each source lands. `dest` is absolute (WORKDIR already applied); `dest_is_dir`
/// tells whether a path exists as a directory in the image.
pub fn plan(
    sources: &[Source],
    dest: &str,
    dest_is_dir: &dyn Fn(&str) -> bool,
    opts: &CopyOptions,
) -> Result<Vec<Item>, CopyError> {
    let exclude = IgnoreRules::from_patterns(&opts.exclude).map_err(CopyError::BadExclude)?;
    let dest_rel = crate::build::meta::clean_abs(dest)
        .trim_start_matches('/')
        .to_string();
    let files = sources
        .iter()
        .filter(|s| s.entries.first().is_some_and(|e| e.kind != Kind::Dir))
        .count();
    let many = sources.len() > 1;
    let into_dir = dest.ends_with('/')
        || dest.ends_with("/.")
        || dest_rel.is_empty()
        || many
        || dest_is_dir(&dest_rel);
    if many && files > 0 && !(dest.ends_with('/') || dest_is_dir(&dest_rel)) {
        return Err(CopyError::NeedDirDest);
    }
    let mut items = Vec::new();
    for s in sources {
        let Some(top) = s.entries.first() else {
            continue;
        };
        // With --parents the source keeps its path below the context root.
        let target_base = if opts.parents {
            join(&dest_rel, &s.rel)
        } else if top.kind == Kind::Dir {
            dest_rel.clone()
        } else if into_dir {
            join(&dest_rel, base_name(&s.rel))
        } else {
            dest_rel.clone()
        };
        for e in &s.entries {
            let under = e
                .rel
                .strip_prefix(&s.rel)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(&e.rel);
            if !under.is_empty() && exclude.is_excluded(under) {
                continue;
            }
            // The destination directory itself keeps what it has when it exists already.
            if under.is_empty()
                && top.kind == Kind::Dir
                && !opts.parents
                && (target_base.is_empty() || dest_is_dir(&target_base))
            {
                continue;
            }
            let name = join(&target_base, under);
            if name.is_empty() {
                continue;
            }
            let kind = match (e.kind, &e.context) {
                (Kind::File, Some(f)) => ItemKind::ContextFile(f.clone()),
                (Kind::File, None) => ItemKind::File(e.host.clone()),
                (Kind::Dir, _) => ItemKind::Dir,
                (Kind::Symlink, _) => ItemKind::Symlink(e.link.clone().unwrap_or_default()),
                // A FIFO is copied as a FIFO, as BuildKit does (fsutil's copy makes one).
                (Kind::Other, _) if e.fifo => ItemKind::Fifo,
                // Sockets and devices are not copied.
                (Kind::Other, _) => continue,
            };
            let (uid, gid) = match opts.chown {
                Some(o) => o,
                None if opts.keep_owner => (e.uid, e.gid),
                None => (0, 0),
            };
            let mode = match (opts.chmod, &kind) {
                (Some(m), ItemKind::File(_) | ItemKind::ContextFile(_) | ItemKind::Dir) => m,
                (_, ItemKind::Symlink(_)) => 0o777,
                _ => e.mode,
            };
            items.push(Item {
                name,
                kind,
                mode,
                uid,
                gid,
                mtime: e.mtime,
            });
        }
    }
    Ok(items)
}

/// The directories above `items` that the image lacks (`exists` says what it has), as items
/// owned by `owner`, 0755, parents first: with `--chown`, Docker gives the directories a
/// COPY creates to that owner too (both builders), where the extractor would make them
/// root's.
pub fn missing_parents(
    items: &[Item],
    exists: &dyn Fn(&str) -> bool,
    owner: (u32, u32),
    mtime: i64,
) -> Vec<Item> {
    let listed: std::collections::BTreeSet<&str> = items.iter().map(|i| i.name.as_str()).collect();
    let mut missing = std::collections::BTreeSet::new();
    for it in items {
        let mut p = it.name.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if parent.is_empty() || listed.contains(parent) || missing.contains(parent) {
                break;
            }
            if exists(parent) {
                break;
            }
            missing.insert(parent.to_string());
            p = parent;
        }
    }
    // Sorted names put every directory before what is below it.
    missing
        .into_iter()
        .map(|name| Item {
            name,
            kind: ItemKind::Dir,
            mode: 0o755,
            uid: owner.0,
            gid: owner.1,
            mtime,
        })
        .collect()
}

/// Write the items as a tar stream (parents are created by the extractor, 0755 root).
/// Names and symlink targets are written as their raw bytes (see [`name`]); a target
/// verbatim, never normalised (`/` stays `/`).
pub fn write_tar<W: Write>(items: &[Item], out: W) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    for it in items {
        let mut h = tar::Header::new_gnu();
        h.set_mode(it.mode);
        h.set_uid(u64::from(it.uid));
        h.set_gid(u64::from(it.gid));
        h.set_mtime(it.mtime.max(0) as u64);
        let path = PathBuf::from(name::to_os(&it.name).into_owned());
        match &it.kind {
            ItemKind::File(p) => {
                let f = fs::File::open(p)?;
                append_file(&mut b, &mut h, &path, f)?;
            }
            ItemKind::ContextFile(cf) => {
                let f = cf.open().map_err(io::Error::other)?;
                append_file(&mut b, &mut h, &path, f)?;
            }
            ItemKind::Data(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, &path, d.as_slice())?;
            }
            ItemKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                let mut dir = path.into_os_string();
                dir.push("/");
                b.append_data(&mut h, dir, io::empty())?;
            }
            ItemKind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                b.append_data(&mut h, &path, io::empty())?;
            }
            ItemKind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                let target = name::decode(t);
                // The tar crate's `append_link` cleans the target (`/` became `//`).
                let slot = h.as_old().linkname.len();
                if target.len() > slot {
                    let mut long = tar::Header::new_gnu();
                    long.set_entry_type(tar::EntryType::GNULongLink);
                    if let Some(g) = long.as_gnu_mut() {
                        g.name[..13].copy_from_slice(b"././@LongLink");
                    }
                    long.set_mode(0o644);
                    long.set_size(target.len() as u64 + 1);
                    long.set_cksum();
                    b.append(&long, io::Read::chain(target.as_ref(), &[0u8][..]))?;
                    h.set_link_name_literal(&target[..slot])?;
                } else {
                    h.set_link_name_literal(&target)?;
                }
                b.append_data(&mut h, &path, io::empty())?;
            }
        }
    }
    b.into_inner()
}

/// Append an opened regular file as `path`.
fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    path: &Path,
    f: fs::File,
) -> io::Result<()> {
    let len = f.metadata()?.len();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(len);
    // A file that shrinks while being read would corrupt the stream; take exactly `len`
    // bytes and pad if it got shorter.
    let reader = io::Read::take(io::Read::chain(io::Read::take(f, len), io::repeat(0)), len);
    b.append_data(h, path, reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with(files: &[&str]) -> (tempfile::TempDir, Context) {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f.as_bytes()).unwrap();
        }
        let c = Context::scan(d.path(), &IgnoreRules::default()).unwrap();
        (d, c)
    }

    fn names(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn docker_destination_rules() {
        let (_d, c) = ctx_with(&["a.txt", "b.txt", "src/x.rs", "src/sub/y.rs"]);
        let none = |_: &str| false;
        let opts = CopyOptions::default();
        let one = [context_source(&c, "a.txt")];
        // File to a new name, into a directory by trailing slash, into an existing dir.
        assert_eq!(
            names(&plan(&one, "/app/renamed", &none, &opts).unwrap()),
            ["app/renamed"]
        );
        assert_eq!(
            names(&plan(&one, "/app/", &none, &opts).unwrap()),
            ["app/a.txt"]
        );
        let app_exists = |p: &str| p == "app";
        assert_eq!(
            names(&plan(&one, "/app", &app_exists, &opts).unwrap()),
            ["app/a.txt"]
        );
        // A directory source copies its contents; the new destination dir is created.
        let dir = [context_source(&c, "src")];
        assert_eq!(
            names(&plan(&dir, "/dst", &none, &opts).unwrap()),
            ["dst", "dst/sub", "dst/sub/y.rs", "dst/x.rs"]
        );
        assert_eq!(
            names(&plan(&dir, "/dst", &|p: &str| p == "dst", &opts).unwrap()),
            ["dst/sub", "dst/sub/y.rs", "dst/x.rs"]
        );
        // Several files need a directory destination.
        let two = [context_source(&c, "a.txt"), context_source(&c, "b.txt")];
        assert_eq!(
            plan(&two, "/app", &none, &opts),
            Err(CopyError::NeedDirDest)
        );
        assert_eq!(
            names(&plan(&two, "/app/", &none, &opts).unwrap()),
            ["app/a.txt", "app/b.txt"]
        );
        // --parents keeps the source path; --exclude drops matches below a source.
        let p = CopyOptions {
            parents: true,
            ..Default::default()
        };
        assert_eq!(
            names(&plan(&[context_source(&c, "src/x.rs")], "/out/", &none, &p).unwrap()),
            ["out/src/x.rs"]
        );
        let ex = CopyOptions {
            exclude: vec!["sub".into()],
            ..Default::default()
        };
        assert_eq!(
            names(&plan(&dir, "/d/", &none, &ex).unwrap()),
            ["d", "d/x.rs"]
        );
    }

    #[test]
    fn owners_and_modes() {
        let (_d, c) = ctx_with(&["f"]);
        let none = |_: &str| false;
        let src = [context_source(&c, "f")];
        let it = &plan(&src, "/f", &none, &CopyOptions::default()).unwrap()[0];
        assert_eq!((it.uid, it.gid), (0, 0), "context files become root's");
        let o = CopyOptions {
            chown: Some((10, 20)),
            chmod: Some(0o640),
            ..Default::default()
        };
        let it = &plan(&src, "/f", &none, &o).unwrap()[0];
        assert_eq!((it.uid, it.gid, it.mode), (10, 20, 0o640));
        assert_eq!(parse_chmod("755"), Ok(0o755));
        assert!(parse_chmod("u+x").is_err());
    }

    // Regression: `COPY --chown=app:app f /new/dir/f` left /new and /new/dir root's.
    #[test]
    fn missing_parents_get_the_copy_owner() {
        let item = |name: &str, kind| Item {
            name: name.to_string(),
            kind,
            mode: 0o644,
            uid: 7,
            gid: 8,
            mtime: 0,
        };
        let items = [
            item("new/dir/f", ItemKind::Data(Vec::new())),
            item("new/dir/g", ItemKind::Data(Vec::new())),
            item("etc/x/y", ItemKind::Data(Vec::new())),
            item("tree", ItemKind::Dir),
            item("tree/sub/z", ItemKind::Data(Vec::new())),
        ];
        let exists = |p: &str| p == "etc";
        let parents = missing_parents(&items, &exists, (7, 8), 0);
        assert_eq!(names(&parents), ["etc/x", "new", "new/dir", "tree/sub"]);
        assert!(parents
            .iter()
            .all(|p| (p.kind == ItemKind::Dir, p.mode, p.uid, p.gid) == (true, 0o755, 7, 8)));
    }

    #[test]
    fn a_followed_link_keeps_its_name() {
        let (_d, c) = ctx_with(&["dir/x"]);
        let s = context_source(&c, "dir").renamed("link");
        assert_eq!(s.rel, "link");
        let rels: Vec<&str> = s.entries.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, ["link", "link/x"]);
        let none = |_: &str| false;
        let items = plan(&[s], "/out/", &none, &CopyOptions::default()).unwrap();
        assert_eq!(names(&items), ["out", "out/x"]);
    }

    #[test]
    fn tar_stream_round_trips_through_the_extractor() {
        let (_d, c) = ctx_with(&["src/x.rs", "top.txt"]);
        let none = |_: &str| false;
        let items = plan(
            &[context_source(&c, "src"), context_source(&c, "top.txt")],
            "/app/",
            &none,
            &CopyOptions::default(),
        )
        .unwrap();
        let tar = write_tar(&items, Vec::new()).unwrap();
        let root = tempfile::tempdir().unwrap();
        crate::archive::extract(tar.as_slice(), root.path(), &Default::default()).unwrap();
        assert_eq!(fs::read(root.path().join("app/x.rs")).unwrap(), b"src/x.rs");
        assert_eq!(
            fs::read(root.path().join("app/top.txt")).unwrap(),
            b"top.txt"
        );
    }

    // Regression: `COPY rootlink/ /x/` with `rootlink -> /` made a link to `//`: the tar
    // crate's `append_link` cleans targets. Targets are written verbatim now, long ones
    // through a GNU long-link entry; and a FIFO is copied as a FIFO (BuildKit's behaviour)
    // where it used to be dropped.
    #[test]
    fn symlink_targets_are_verbatim_and_fifos_are_copied() {
        use std::os::unix::fs::{symlink, FileTypeExt};
        let d = tempfile::tempdir().unwrap();
        let long = format!("./{}/x//y/", "l".repeat(150));
        symlink("/", d.path().join("rootlink")).unwrap();
        symlink("./a//b/", d.path().join("odd")).unwrap();
        symlink(&long, d.path().join("long")).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        let c = Context::scan(d.path(), &IgnoreRules::default()).unwrap();
        let none = |_: &str| false;
        let srcs: Vec<Source> = ["rootlink", "odd", "long", "pipe"]
            .iter()
            .map(|p| context_source(&c, p))
            .collect();
        let items = plan(&srcs, "/x/", &none, &CopyOptions::default()).unwrap();
        let tar = write_tar(&items, Vec::new()).unwrap();
        let root = tempfile::tempdir().unwrap();
        crate::archive::extract(tar.as_slice(), root.path(), &Default::default()).unwrap();
        let target = |n: &str| fs::read_link(root.path().join("x").join(n)).unwrap();
        // As bytes: `Path` equality calls `//` and `/` the same.
        assert_eq!(target("rootlink").as_os_str(), "/");
        assert_eq!(target("odd").as_os_str(), "./a//b/");
        assert_eq!(target("long").as_os_str(), long.as_str());
        let pipe = fs::symlink_metadata(root.path().join("x/pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
        assert_eq!(pipe.mode() & 0o7777, 0o640);
    }

    // Regression: context files with names that are not UTF-8 were dropped.
    #[test]
    fn non_utf8_names_are_copied() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let raw = std::ffi::OsStr::from_bytes(b"n\xffame");
        fs::create_dir(d.path().join("dir")).unwrap();
        fs::write(d.path().join("dir").join(raw), b"bytes").unwrap();
        let c = Context::scan(d.path(), &IgnoreRules::default()).unwrap();
        let none = |_: &str| false;
        let items = plan(
            &[context_source(&c, "dir")],
            "/out/",
            &none,
            &CopyOptions::default(),
        )
        .unwrap();
        let tar = write_tar(&items, Vec::new()).unwrap();
        let root = tempfile::tempdir().unwrap();
        crate::archive::extract(tar.as_slice(), root.path(), &Default::default()).unwrap();
        assert_eq!(
            fs::read(root.path().join("out").join(raw)).unwrap(),
            b"bytes"
        );
    }
}
