//! `kiln cp`: files between a container and the host, as `docker cp` copies them.
//!
//! The container's side always runs on a thread whose root directory is the container's
//! root (`unshare(CLONE_FS)` + `chroot`): every path the container could have replaced with a
//! symlink — at any moment, even while the copy runs — resolves inside the container, by the
//! kernel, and nothing from the container is ever loaded or executed. A running container's
//! root is `/proc/<pid>/root` (its volumes included); a stopped one's is its overlay
//! (image layers + its own upper dir), mounted in a mount namespace only that copy sees. The
//! two sides exchange a tar stream through a pipe, and whatever comes in is unpacked by the
//! hardened extractor, never by following names.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::{Container, ContainerError, Containers, Result};
use crate::archive::{self, ExtractOptions, WhiteoutMode};
use crate::context::Kind;
use crate::rootfs::copy::{self, Item, ItemKind};

/// One side of `kiln cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host path, or `-` for a tar stream on stdin/stdout.
    Host(String),
    /// `CONTAINER:PATH`.
    Container(String, String),
}

impl Endpoint {
    /// Docker's rule: a path that starts with `/` or `.` is local; otherwise text before the
    /// first `:` names a container.
    pub fn parse(s: &str) -> Endpoint {
        if s.starts_with('/') || s.starts_with('.') || s == "-" {
            return Endpoint::Host(s.to_string());
        }
        match s.split_once(':') {
            Some((name, path)) if !name.is_empty() && !name.contains('/') => {
                Endpoint::Container(name.to_string(), path.to_string())
            }
            _ => Endpoint::Host(s.to_string()),
        }
    }
}

/// `kiln cp` flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpOptions {
    /// `-a`: keep the source's uid/gid when copying into a container (else root's).
    pub archive: bool,
    /// `-L`: follow a symlink named as the source.
    pub follow: bool,
}

/// What a copy's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SrcKind {
    File,
    Dir,
    /// A tar stream on stdin.
    Stream,
}

/// Where the copied tree lands: unpack into `root`, naming the source's top `top` (`None`:
/// the source directory's contents go straight into `root`).
#[derive(Debug)]
struct Landing {
    root: PathBuf,
    top: Option<String>,
}

/// Why a copy into or out of a container failed.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    /// The source is not in the container.
    #[error("could not find {} in container {container}", path.display())]
    NotInContainer {
        /// The source path.
        path: PathBuf,
        /// The container's name.
        container: String,
    },
    /// The source is not on the host.
    #[error("{}: no such file or directory", .0.display())]
    NoSource(PathBuf),
    /// `SRC/.` (a directory's contents) of something that is no directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Docker's destination rules refuse the destination.
    #[error("{}: {reason}", path.display())]
    Destination {
        /// The destination.
        path: PathBuf,
        /// Why it cannot take the source.
        reason: &'static str,
    },
    /// A destination refused inside the container.
    #[error("{source} (in container {container})")]
    InContainer {
        /// What is wrong.
        #[source]
        source: Box<CpError>,
        /// The container's name.
        container: String,
    },
    /// The directory the copy lands in does not exist.
    #[error("{}: no such directory", .0.display())]
    NoDirectory(PathBuf),
    /// The directory the copy lands in does not exist in the container.
    #[error("{}: no such directory in container {container}", path.display())]
    NoDirectoryInContainer {
        /// The directory.
        path: PathBuf,
        /// The container's name.
        container: String,
    },
    /// The source tree could not be read.
    #[error("{}: {source}", path.display())]
    ReadSource {
        /// The source.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The tar stream could not be unpacked at the destination.
    #[error("{}: {source}", path.display())]
    Unpack {
        /// The destination.
        path: PathBuf,
        /// Why.
        #[source]
        source: archive::ArchiveError,
    },
    /// The tar stream between the two sides could not be written or read.
    #[error("{0}")]
    Stream(#[source] io::Error),
    /// The tar stream on standard output could not be written.
    #[error("writing the archive: {0}")]
    WriteArchive(#[source] io::Error),
    /// The tar stream on standard input could not be read.
    #[error("reading the archive: {0}")]
    ReadArchive(#[source] io::Error),
    /// The container's side ended without saying what it found.
    #[error("the container side of the copy failed")]
    ContainerSide,
    /// A thread of the copy panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The container's filesystem could not be entered.
    #[error("{container}: {source}")]
    Enter {
        /// The container's name.
        container: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A running container's process went away before the copy began.
    #[error("{0}: its process is gone")]
    ProcessGone(String),
    /// A running container stopped while its root was being entered.
    #[error("{0}: the container stopped during the copy")]
    Stopped(String),
    /// A stopped container's filesystem could not be assembled.
    #[error("{0}")]
    Mount(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<CpError> for ContainerError {
    fn from(e: CpError) -> Self {
        ContainerError::Copy(e)
    }
}

type CpResult<T> = std::result::Result<T, CpError>;

/// `path` made absolute and lexically clean, and whether it asked for a directory's contents
/// (`dir/.`) or insisted on a directory (`dir/`).
fn clean(path: &str) -> (PathBuf, bool, bool) {
    let contents = path.ends_with("/.") || path == ".";
    let must_dir = path.ends_with('/') || contents;
    (
        PathBuf::from(crate::executor::clean_workdir(path)),
        contents,
        must_dir,
    )
}

/// The last component of a cleaned source path (empty for `/`): the name its copy gets.
fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Refuses `SRC/.` (a directory's contents) when `SRC` is no directory.
fn check_contents(path: &Path, contents: bool, kind: SrcKind) -> CpResult<()> {
    if contents && kind != SrcKind::Dir {
        return Err(CpError::NotADirectory(path.to_path_buf()));
    }
    Ok(())
}

/// Unpacks the tar stream `reader` into `root` (a whiteout in it is refused: it would delete
/// files), naming `dest` in errors. Returns the bytes of file contents written.
fn unpack(reader: io::PipeReader, root: &Path, dest: &Path) -> CpResult<u64> {
    let stats = archive::extract(
        io::BufReader::new(reader),
        root,
        &ExtractOptions {
            whiteouts: WhiteoutMode::Refuse,
            ..Default::default()
        },
    )
    .map_err(|source| CpError::Unpack {
        path: dest.to_path_buf(),
        source,
    })?;
    Ok(stats.file_bytes)
}

/// Docker's destination rules, shared by both directions. `dest` is the destination path
/// (absolute in its own filesystem), `exists` what is there now.
fn landing(
    src_kind: SrcKind,
    src_name: &str,
    src_contents: bool,
    dest: &Path,
    dest_must_dir: bool,
    exists: Option<bool>, // Some(is_dir)
) -> CpResult<Landing> {
    let refuse = |reason| {
        Err(CpError::Destination {
            path: dest.to_path_buf(),
            reason,
        })
    };
    match (src_kind, exists) {
        (SrcKind::Stream, Some(true)) => Ok(Landing {
            root: dest.to_path_buf(),
            top: None,
        }),
        (SrcKind::Stream, _) => refuse("the destination must be a directory"),
        (_, Some(true)) => Ok(Landing {
            root: dest.to_path_buf(),
            top: if src_contents {
                None
            } else {
                Some(src_name.to_string())
            },
        }),
        (SrcKind::Dir, Some(false)) => refuse("cannot copy a directory to a file"),
        (SrcKind::File, Some(false)) if dest_must_dir => refuse("not a directory"),
        (SrcKind::File, None) if dest_must_dir => {
            refuse("the destination directory does not exist")
        }
        (_, _) => {
            let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
                return refuse("not a valid destination");
            };
            Ok(Landing {
                root: parent.to_path_buf(),
                top: Some(name.to_string_lossy().into_owned()),
            })
        }
    }
}

/// Whether `p` exists and is a directory (following links, as `docker cp` does for the
/// destination), `None` when it does not exist.
fn probe(p: &Path) -> Option<bool> {
    fs::metadata(p).ok().map(|m| m.is_dir())
}

/// The tar items of the tree at `path` (in the current root), named under `top` (`None`:
/// the directory's own entry is left out and its children are named from its root).
fn items_of(
    path: &Path,
    top: Option<&str>,
    follow: bool,
    owner: Option<(u32, u32)>,
) -> io::Result<Vec<Item>> {
    let path = if follow {
        fs::canonicalize(path)?
    } else {
        path.to_path_buf()
    };
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => (path.clone(), String::new()),
    };
    let src = copy::tree_source(&dir, &name)?;
    let mut items = Vec::new();
    for e in src.entries {
        let under = e
            .rel
            .strip_prefix(&name)
            .unwrap_or(&e.rel)
            .trim_start_matches('/');
        let item_name = match (top, under.is_empty()) {
            (None, true) => continue,
            (None, false) => under.to_string(),
            (Some(t), true) => t.to_string(),
            (Some(t), false) => format!("{t}/{under}"),
        };
        let kind = match e.kind {
            Kind::File => ItemKind::File(e.host.clone()),
            Kind::Dir => ItemKind::Dir,
            Kind::Symlink => ItemKind::Symlink(e.link.clone().unwrap_or_default()),
            Kind::Other => {
                tracing::warn!(path = %e.host.display(), "skipping a special file");
                continue;
            }
        };
        let (uid, gid) = owner.unwrap_or((e.uid, e.gid));
        items.push(Item {
            name: item_name,
            kind,
            mode: e.mode,
            uid,
            gid,
            mtime: e.mtime,
        });
    }
    Ok(items)
}

fn src_kind_of(p: &Path, follow: bool) -> Option<SrcKind> {
    let m = if follow {
        fs::metadata(p)
    } else {
        fs::symlink_metadata(p)
    }
    .ok()?;
    Some(if m.is_dir() {
        SrcKind::Dir
    } else {
        SrcKind::File
    })
}

/// Runs `f` on a thread whose root is `root` (its own filesystem attributes).
fn chrooted<R: Send>(root: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<R> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(io::Error::from)?;
            nix::unistd::chroot(root).map_err(io::Error::from)?;
            std::env::set_current_dir("/")?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("the copy thread panicked"))?
    })
}

/// Runs `f` with the thread's root set to the container's filesystem.
fn in_container<R: Send>(
    cs: &Containers,
    c: &Container,
    f: impl FnOnce() -> R + Send,
) -> Result<R> {
    let err = |source: io::Error| CpError::Enter {
        container: c.config.name.clone(),
        source,
    };
    if c.is_running() {
        let pidfd = c
            .pidfd()
            .ok_or_else(|| CpError::ProcessGone(c.config.name.clone()))?;
        let root = PathBuf::from(format!("/proc/{}/root", c.state.pid));
        return chrooted(&root, || {
            // The PID cannot have been reused while the pidfd's process still runs, so the
            // root entered was that container's.
            if super::pidfd_signal(&pidfd, 0).is_err() {
                return None;
            }
            Some(f())
        })
        .map_err(err)?
        .ok_or_else(|| CpError::Stopped(c.config.name.clone()).into());
    }
    let store = crate::store::Store::open(cs.dir().parent().unwrap_or(cs.dir()))
        .map_err(|e| CpError::Mount(e.into()))?;
    let lowers = crate::rootfs::layers::lower_dirs(&store, &c.layers()?)
        .map_err(|e| CpError::Mount(e.into()))?;
    let scratch = crate::common::atomic::create_temp_dir(&c.dir, "cp", 0o700)
        .map_err(|e| CpError::Mount(e.into()))?;
    let scratch = crate::common::atomic::TempPath::new(scratch);
    let upper = c.dir.join("upper");
    let r =
        crate::rootfs::overlay::with_overlay(&lowers, &upper, scratch.path(), &[], |merged, _| {
            chrooted(merged, f)
        })
        .map_err(err)?
        .map_err(err)?;
    Ok(r)
}

/// `kiln cp CONTAINER:SRC DEST` (`DEST` `-`: a tar stream to `stdout`). Returns the bytes
/// copied (file contents).
pub fn copy_out(
    cs: &Containers,
    c: &Container,
    src: &str,
    dest: &str,
    opts: CpOptions,
    stdout: &mut (dyn Write + Send),
) -> Result<u64> {
    let (src_path, src_contents, _) = clean(src);
    let src_name = base_name(&src_path);
    let name = c.config.name.clone();
    let (reader, writer) = io::pipe().map_err(CpError::Stream)?;
    let (kind_tx, kind_rx) = mpsc::channel::<CpResult<SrcKind>>();
    let (top_tx, top_rx) = mpsc::channel::<Option<String>>();
    std::thread::scope(|s| {
        let inside = s.spawn(|| {
            in_container(cs, c, move || -> CpResult<()> {
                let Some(kind) = src_kind_of(&src_path, opts.follow) else {
                    let _ = kind_tx.send(Err(CpError::NotInContainer {
                        path: src_path.clone(),
                        container: name,
                    }));
                    return Ok(());
                };
                if let Err(e) = check_contents(&src_path, src_contents, kind) {
                    let _ = kind_tx.send(Err(e));
                    return Ok(());
                }
                let _ = kind_tx.send(Ok(kind));
                let Ok(top) = top_rx.recv() else {
                    return Ok(()); // the host side gave up
                };
                let items =
                    items_of(&src_path, top.as_deref(), opts.follow, None).map_err(|source| {
                        CpError::ReadSource {
                            path: src_path.clone(),
                            source,
                        }
                    })?;
                copy::write_tar(&items, writer).map_err(CpError::Stream)?;
                Ok(())
            })
        });
        let host = (|| -> Result<u64> {
            let kind = kind_rx.recv().map_err(|_| CpError::ContainerSide)??;
            if dest == "-" {
                let _ = top_tx.send(Some(src_name.clone()));
                let mut r = reader;
                return io::copy(&mut r, stdout).map_err(|e| CpError::WriteArchive(e).into());
            }
            let (dest_path, _, must_dir) = clean_host(dest);
            let land = landing(
                kind,
                &src_name,
                src_contents,
                &dest_path,
                must_dir,
                probe(&dest_path),
            )?;
            if !land.root.is_dir() {
                return Err(CpError::NoDirectory(land.root).into());
            }
            let _ = top_tx.send(land.top.clone());
            Ok(unpack(reader, &land.root, &dest_path)?)
        })();
        drop(top_tx);
        let inner = inside.join().map_err(|_| CpError::Panicked("copy"))?;
        // What went wrong on the host (the destination) explains a broken stream best.
        let (n, ()) = both(host, inner, false)?;
        Ok(n)
    })
}

/// `kiln export`: the container's filesystem (image layers and its changes) as a tar
/// stream, one filesystem only: the mounts of a running container (`/proc`, `/sys`, `/dev`,
/// volumes, the generated `/etc` files) appear as their mount points, never their contents.
pub fn export(cs: &Containers, c: &Container, out: &mut (dyn Write + Send)) -> Result<()> {
    let (reader, writer) = io::pipe().map_err(CpError::Stream)?;
    std::thread::scope(|s| {
        let inside = s.spawn(|| {
            in_container(cs, c, move || -> CpResult<()> {
                let items = one_filesystem(Path::new("/")).map_err(CpError::Stream)?;
                copy::write_tar(&items, writer).map_err(CpError::Stream)?;
                Ok(())
            })
        });
        let mut r = reader;
        let copied = io::copy(&mut r, out).map_err(|e| CpError::WriteArchive(e).into());
        drop(r);
        let inner = inside.join().map_err(|_| CpError::Panicked("export"))?;
        both(copied, inner, true).map(drop)
    })
}

/// The tree below `root` as tar items, not crossing into other filesystems (a directory
/// another filesystem is mounted on is listed, empty).
fn one_filesystem(root: &Path) -> io::Result<Vec<Item>> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::symlink_metadata(root)?.dev();
    let mut items = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((path, name)) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&path)?.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for e in entries {
            let Some(n) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel = if name.is_empty() {
                n
            } else {
                format!("{name}/{n}")
            };
            let p = e.path();
            let m = fs::symlink_metadata(&p)?;
            let ft = m.file_type();
            let same = m.dev() == dev;
            let kind = if ft.is_dir() {
                if same {
                    stack.push((p.clone(), rel.clone()));
                }
                ItemKind::Dir
            } else if !same {
                continue; // a file bind-mounted over the image's (/etc/hosts, say)
            } else if ft.is_file() {
                ItemKind::File(p.clone())
            } else if ft.is_symlink() {
                ItemKind::Symlink(fs::read_link(&p)?.to_string_lossy().into_owned())
            } else {
                continue; // devices, fifos and sockets are not exported
            };
            items.push(Item {
                name: rel,
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
            });
        }
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(items)
}

/// The outcome of a copy whose host side and container side ran at once: both results,
/// or the first failure, the container side's first when `container_first` (its error is
/// the cause; the other side then only saw a broken pipe).
fn both<H, C>(
    host: Result<H>,
    container: Result<CpResult<C>>,
    container_first: bool,
) -> Result<(H, C)> {
    let container = container.and_then(|r| r.map_err(ContainerError::from));
    match (host, container) {
        (Ok(h), Ok(c)) => Ok((h, c)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(h), Err(c)) => Err(if container_first { c } else { h }),
    }
}

/// A host path made absolute against the current directory, keeping Docker's trailing
/// `/` and `/.` meanings.
fn clean_host(p: &str) -> (PathBuf, bool, bool) {
    let abs = if p.starts_with('/') {
        p.to_string()
    } else {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        format!("{}/{p}", cwd.display())
    };
    clean(&abs)
}

/// `kiln cp SRC CONTAINER:DEST` (`SRC` `-`: a tar stream read from `stdin`). Returns the
/// bytes copied (file contents).
pub fn copy_in(
    cs: &Containers,
    c: &Container,
    src: &str,
    dest: &str,
    opts: CpOptions,
    stdin: &mut (dyn Read + Send),
) -> Result<u64> {
    let (src_path, src_contents, _) = if src == "-" {
        (PathBuf::new(), false, false)
    } else {
        clean_host(src)
    };
    let kind = if src == "-" {
        SrcKind::Stream
    } else {
        src_kind_of(&src_path, opts.follow).ok_or_else(|| CpError::NoSource(src_path.clone()))?
    };
    check_contents(&src_path, src_contents, kind)?;
    let src_name = base_name(&src_path);
    let (dest_path, _, must_dir) = clean(dest);
    let (reader, writer) = io::pipe().map_err(CpError::Stream)?;
    let (land_tx, land_rx) = mpsc::channel::<CpResult<Option<String>>>();
    let name = c.config.name.clone();
    std::thread::scope(|s| {
        let inside = s.spawn(|| {
            in_container(cs, c, move || -> CpResult<u64> {
                let land = match landing(
                    kind,
                    &src_name,
                    src_contents,
                    &dest_path,
                    must_dir,
                    probe(&dest_path),
                ) {
                    Ok(l) if l.root.is_dir() => l,
                    Ok(l) => {
                        return Err(CpError::NoDirectoryInContainer {
                            path: l.root,
                            container: name,
                        })
                    }
                    Err(e) => {
                        return Err(CpError::InContainer {
                            source: Box::new(e),
                            container: name,
                        })
                    }
                };
                if land_tx.send(Ok(land.top.clone())).is_err() {
                    return Ok(0);
                }
                unpack(reader, &land.root, &dest_path)
            })
        });
        let host = (|| -> Result<()> {
            let top = land_rx.recv().map_err(|_| CpError::ContainerSide)??;
            let mut w = writer;
            if kind == SrcKind::Stream {
                io::copy(stdin, &mut w).map_err(CpError::ReadArchive)?;
                return Ok(());
            }
            let owner = if opts.archive { None } else { Some((0, 0)) };
            let items =
                items_of(&src_path, top.as_deref(), opts.follow, owner).map_err(|source| {
                    CpError::ReadSource {
                        path: src_path.clone(),
                        source,
                    }
                })?;
            copy::write_tar(&items, w).map_err(CpError::Stream)?;
            Ok(())
        })();
        let inner = inside.join().map_err(|_| CpError::Panicked("copy"))?;
        let ((), n) = both(host, inner, true)?;
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_dockers_rule() {
        assert_eq!(
            Endpoint::parse("web:/etc/hosts"),
            Endpoint::Container("web".into(), "/etc/hosts".into())
        );
        assert_eq!(Endpoint::parse("./a:b"), Endpoint::Host("./a:b".into()));
        assert_eq!(
            Endpoint::parse("/tmp/x:y"),
            Endpoint::Host("/tmp/x:y".into())
        );
        assert_eq!(Endpoint::parse("-"), Endpoint::Host("-".into()));
        assert_eq!(
            Endpoint::parse("file.txt"),
            Endpoint::Host("file.txt".into())
        );
        assert_eq!(Endpoint::parse("dir/a:b"), Endpoint::Host("dir/a:b".into()));
    }

    #[test]
    fn destinations_follow_docker_cp() {
        let d = Path::new("/dst");
        // Into an existing directory: under the source's name, or its contents with `/.`.
        let l = landing(SrcKind::Dir, "src", false, d, false, Some(true)).unwrap();
        assert_eq!((l.root.as_path(), l.top.as_deref()), (d, Some("src")));
        let l = landing(SrcKind::Dir, "src", true, d, false, Some(true)).unwrap();
        assert_eq!(l.top, None);
        // A new name: the copy takes it.
        let l = landing(SrcKind::Dir, "src", false, d, false, None).unwrap();
        assert_eq!(
            (l.root.as_path(), l.top.as_deref()),
            (Path::new("/"), Some("dst"))
        );
        let l = landing(SrcKind::File, "f", false, d, false, Some(false)).unwrap();
        assert_eq!(l.top.as_deref(), Some("dst"));
        assert!(landing(SrcKind::Dir, "src", false, d, false, Some(false)).is_err());
        assert!(landing(SrcKind::File, "f", false, d, true, None).is_err());
        assert!(landing(SrcKind::Stream, "", false, d, false, None).is_err());
        assert_eq!(
            clean("/a/../../b/./c/."),
            (PathBuf::from("/b/c"), true, true)
        );
        assert_eq!(clean("x/"), (PathBuf::from("/x"), false, true));
    }

    #[test]
    fn copy_errors_are_typed_and_keep_their_words() {
        let d = Path::new("/dst");
        let e = landing(SrcKind::Dir, "src", false, d, false, Some(false)).unwrap_err();
        assert!(matches!(
            e,
            CpError::Destination {
                reason: "cannot copy a directory to a file",
                ..
            }
        ));
        assert_eq!(e.to_string(), "/dst: cannot copy a directory to a file");
        let e = check_contents(Path::new("/f"), true, SrcKind::File).unwrap_err();
        assert_eq!(e.to_string(), "/f: not a directory");
        // Refused inside the container: the cause stays reachable as the source.
        let e = CpError::InContainer {
            source: Box::new(e),
            container: "web".into(),
        };
        assert_eq!(e.to_string(), "/f: not a directory (in container web)");
        assert!(std::error::Error::source(&e).is_some());
        let e = ContainerError::from(e);
        assert!(matches!(
            e,
            ContainerError::Copy(CpError::InContainer { .. })
        ));
    }
}
